//! The control plane as OPDs grow: how long a policy takes to apply (cold,
//! and a reload changing one OPD), how long a `/metrics` scrape takes, and
//! how much memory the daemon holds.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, ensure};

use super::{lab_spec, median, rss_kib};
use crate::datapath::Datapath;
use crate::gateway;
use crate::lab::netns::BpffsMount;
use crate::lab::{Lab, LabOpd, generated_policy};
use crate::policy::Rate;
use crate::shaper::Shaper;

/// The one OPD with a namespace in a control-plane lab: `opd-0` of
/// [`generated_policy`], for measurements that need a gateway's
/// interfaces but name their OPDs in a generated policy.
pub fn generated_opd() -> LabOpd {
    LabOpd::new("opd-0", "OPD 0", ("1M", "100M"), ("1M", "100M"))
}

/// Policy apply times at one size, milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct ApplyTimes {
    pub opds: usize,
    /// Median of a cold apply: empty maps, no HTB trees.
    pub cold_ms: f64,
    /// Median of a reload that changes one OPD's download ceiling.
    pub one_change_ms: f64,
}

/// Applies [`generated_policy`]`(n)` in `lab`'s gateway namespace (maps and
/// both HTB trees, as the daemon does, without the daemon) for each size,
/// `rounds` times: cold on a fresh bpffs with the trees removed, then one
/// OPD's ceiling changed. No daemon may be running in `lab`.
pub fn apply_times(lab: &Lab, sizes: &[usize], rounds: usize) -> Result<Vec<ApplyTimes>> {
    let sizes = sizes.to_vec();
    lab.in_gateway(move || {
        let mut out = Vec::new();
        for n in sizes {
            let policy = crate::policy::parse(&generated_policy(n), "generated.toml")
                .map_err(|e| anyhow!("{e}"))?;
            let ifaces = gateway::resolve_interfaces(&policy, "generated.toml")?;
            let (mut cold, mut one) = (Vec::new(), Vec::new());
            for r in 0..rounds.max(1) {
                let bpffs = BpffsMount::new("jt-bapply")?;
                let mut dp = Datapath::load_pinned(bpffs.path())?;
                let mut shaper = Shaper::new()?;
                for iface in [&ifaces.lan_device, &ifaces.wan] {
                    shaper.remove(iface.ifindex)?;
                }
                let t = Instant::now();
                gateway::apply(&policy, &ifaces, &mut dp, &mut shaper)?;
                cold.push(t.elapsed().as_secs_f64() * 1e3);
                let mut changed = policy.clone();
                changed.opds[n / 2].download.ceiling =
                    Rate(if r % 2 == 0 { 90_000_000 } else { 80_000_000 });
                let t = Instant::now();
                gateway::apply(&changed, &ifaces, &mut dp, &mut shaper)?;
                one.push(t.elapsed().as_secs_f64() * 1e3);
                for iface in [&ifaces.lan_device, &ifaces.wan] {
                    shaper.remove(iface.ifindex)?;
                }
            }
            out.push(ApplyTimes {
                opds: n,
                cold_ms: median(&cold),
                one_change_ms: median(&one),
            });
        }
        Ok(out)
    })
}

/// Builds a lab and starts jatah in it with [`generated_policy`]`(n)`.
/// Returns the lab and how long jatah took to become ready (seconds).
pub fn lab_with_daemon(prefix: &str, n: usize, jatah: &Path) -> Result<(Lab, f64)> {
    let mut lab = Lab::build(lab_spec(prefix, generated_opd()))?;
    lab.write_policy(&generated_policy(n))?;
    let started = Instant::now();
    lab.start_daemon(jatah)
        .with_context(|| format!("starting jatah with {n} OPDs"))?;
    Ok((lab, started.elapsed().as_secs_f64()))
}

/// `/metrics` scraped from inside the gateway namespace.
#[derive(Debug, Clone, Copy)]
pub struct Scrape {
    /// Median wall time of one scrape, ms.
    pub median_ms: f64,
    pub body_bytes: usize,
    /// Sample lines in the body.
    pub series: usize,
    /// The daemon's CPU time per scrape, ms (all its threads, averaged
    /// over the scrapes: steadier than wall time on a busy machine).
    pub cpu_ms: f64,
}

/// Scrapes the lab's jatah `scrapes` times.
pub fn scrape(lab: &Lab, scrapes: usize) -> Result<Scrape> {
    let pid = lab
        .daemon_pid()
        .ok_or_else(|| anyhow!("jatah is not running"))?;
    let cpu0 = super::cpu_seconds(pid)?;
    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..scrapes.max(1) {
        let t = Instant::now();
        let (status, b) = lab.http_get("/metrics")?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(status == 200, "/metrics answered {status}");
        body = b;
    }
    let cpu_ms = (super::cpu_seconds(pid)? - cpu0) * 1e3 / scrapes.max(1) as f64;
    Ok(Scrape {
        median_ms: median(&times),
        cpu_ms,
        body_bytes: body.len(),
        series: body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
    })
}

/// `scrapes` scrapes of `/metrics` asking for gzip, as Prometheus does,
/// from inside the gateway namespace: the median time (request to the
/// last compressed byte), the compressed size and, decompressed, the
/// series.
pub fn scrape_gzip(lab: &Lab, scrapes: usize) -> Result<Scrape> {
    use std::io::Read;
    let pid = lab
        .daemon_pid()
        .ok_or_else(|| anyhow!("jatah is not running"))?;
    let cpu0 = super::cpu_seconds(pid)?;
    let mut times = Vec::new();
    let mut body = Vec::new();
    for _ in 0..scrapes.max(1) {
        let t = Instant::now();
        let (status, b) = lab.in_gateway(|| {
            crate::cli::client::request_bytes(
                "GET",
                &format!("http://{}/metrics", crate::lab::GW_LISTEN),
                &[("Accept-Encoding", "gzip")],
                None,
                crate::cli::client::REQUEST_TIMEOUT,
            )
        })?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(status == 200, "/metrics answered {status}");
        body = b;
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .context("/metrics: not a gzip body")?;
    let cpu_ms = (super::cpu_seconds(pid)? - cpu0) * 1e3 / scrapes.max(1) as f64;
    Ok(Scrape {
        median_ms: median(&times),
        cpu_ms,
        body_bytes: body.len(),
        series: text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
    })
}

/// What one daemon run with `n` OPDs showed.
#[derive(Debug, Clone, Copy)]
pub struct DaemonFigures {
    pub opds: usize,
    /// From start until `/healthz` answered 200, seconds.
    pub ready_s: f64,
    pub scrape: Scrape,
    /// VmRSS right after start, KiB.
    pub rss_start_kib: u64,
    /// VmRSS after the scrapes, KiB.
    pub rss_kib: u64,
}

/// Starts jatah with `n` generated OPDs, scrapes it `scrapes` times and
/// reads its memory before and after.
pub fn daemon_figures(
    prefix: &str,
    n: usize,
    scrapes: usize,
    jatah: &Path,
) -> Result<DaemonFigures> {
    let (lab, ready_s) = lab_with_daemon(prefix, n, jatah)?;
    let pid = lab
        .daemon_pid()
        .ok_or_else(|| anyhow!("jatah is not running"))?;
    let rss_start_kib = rss_kib(pid)?;
    let scrape = scrape(&lab, scrapes)?;
    Ok(DaemonFigures {
        opds: n,
        ready_s,
        scrape,
        rss_start_kib,
        rss_kib: rss_kib(pid)?,
    })
}
