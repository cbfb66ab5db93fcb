//! An uplink that delivers less than its contract, as three offices feel
//! it (issue 15): contract 100 Mbit/s, guarantees 50/30/20 Mbit/s, 2, 8
//! and 16 download flows, the Internet side limited to 40 Mbit/s behind a
//! 100 ms queue. Without adapting, the offices share the ISP's queue by
//! their number of flows; adapting, by their guarantees. Measured in the
//! lab with real iperf3 flows; the lab test (tests/adapt.rs) judges a
//! short run loosely, the bench (`cargo bench --bench shaping`) reports.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::lanes::ping;
use super::{ChildGuard, gauge, median};
use crate::lab::{LAB_ADMIN_TOKEN, Lab, LabOpd, LabSpec};
use crate::policy::Direction;

/// The offices: guarantees and download flows.
pub const OFFICES: [(&str, u64, u32); 3] = [
    ("dinkes", 50_000_000, 2),
    ("disdik", 30_000_000, 8),
    ("bappeda", 20_000_000, 16),
];
/// What the ISP delivers while limited.
pub const ISP_BPS: u64 = 40_000_000;

/// The lab: contract 100/100 Mbit/s, every office's ceiling the contract.
pub fn spec(prefix: &str) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        download: "100M".into(),
        upload: "100M".into(),
        nat: true,
        mtu: 1500,
        opds: OFFICES
            .iter()
            .map(|(id, g, _)| {
                LabOpd::new(
                    id,
                    id,
                    (&format!("{}M", g / 1_000_000), "100M"),
                    ("5M", "100M"),
                )
            })
            .collect(),
    }
}

/// Builds the lab and starts `jatah` with `adapt` on or off.
pub fn start(prefix: &str, jatah: &Path, adapt: bool) -> Result<Lab> {
    let mut lab = Lab::build(spec(prefix))?;
    let text =
        lab.spec
            .policy_toml()
            .replacen("[gateway]\n", &format!("[gateway]\nadapt = {adapt}\n"), 1);
    lab.write_policy(&text)?;
    lab.start_daemon(jatah)?;
    Ok(lab)
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Each office's download while limited, after `settle`, bit/s (its
    /// HTB class, mean over the window).
    pub limited_bps: Vec<f64>,
    /// Ping round trips from the first office while limited, less the
    /// idle median, ms: median and 95th percentile.
    pub added_ms: (f64, f64),
    /// Seconds from the limit until the effective capacity metric first
    /// fell below the contract (None: it never did).
    pub adapted_after_s: Option<f64>,
    /// Seconds from lifting the limit until the effective capacity was
    /// back at the contract (None: not within the wait).
    pub back_after_s: Option<f64>,
    /// What the admin status overview said about scaled guarantees while
    /// adapted (`capacity_scaled`), and the gateway's sentence then.
    pub overview_scaled: serde_json::Value,
    pub gateway_sentence: String,
    /// The gateway's diagnosis when the limit ends.
    pub gateway_state: String,
}

impl Figures {
    /// Each office's download as a share of its guarantee-proportional
    /// part of what the ISP delivers.
    pub fn shares(&self) -> Vec<f64> {
        let total: u64 = OFFICES.iter().map(|o| o.1).sum();
        self.limited_bps
            .iter()
            .zip(OFFICES)
            .map(|(bps, (_, g, _))| bps / (ISP_BPS as f64 * g as f64 / total as f64))
            .collect()
    }
}

/// Runs the scenario in a lab jatah already runs in: demand, the limit
/// for `limited` (measuring the last `window` of it), the limit lifted
/// and up to `recover` to get the contract back.
pub fn run(lab: &Lab, limited: Duration, window: Duration, recover: Duration) -> Result<Figures> {
    let total = (limited + recover).as_secs() as u32 + 30;
    let _flows: Vec<ChildGuard> = OFFICES
        .iter()
        .enumerate()
        .map(|(i, (_, _, n))| {
            lab.spawn_iperf_args(
                i,
                Direction::Download,
                total,
                0,
                &["-P", &n.to_string()],
                false,
            )
            .map(ChildGuard::new)
        })
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_secs(5));
    let idle = ping(lab, 0, 10)?.0;
    let idle = median(&idle);
    let mut f = Figures::default();
    lab.queue_uplink("40mbit", "100ms")?;
    let limited_at = Instant::now();
    let measure_from = limited_at + limited.saturating_sub(window);
    while Instant::now() < measure_from {
        if f.adapted_after_s.is_none() && effective(lab)? < 100_000_000 {
            f.adapted_after_s = Some(limited_at.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let minors: Vec<u16> = OFFICES
        .iter()
        .map(|(id, _, _)| lab.class_minor(id))
        .collect::<Result<_>>()?;
    let read = || -> Result<Vec<u64>> {
        let stats = lab.class_stats("lan0")?;
        Ok(minors
            .iter()
            .map(|m| stats.iter().find(|c| c.minor == *m).map_or(0, |c| c.bytes))
            .collect())
    };
    let (t0, b0) = (Instant::now(), read()?);
    let pings = ping(
        lab,
        0,
        (window.as_secs() * 10).saturating_sub(10).max(10) as usize,
    )?
    .0;
    let (t1, b1) = (Instant::now(), read()?);
    let dt = (t1 - t0).as_secs_f64();
    let (status, body) = lab.http_get_as("/api/v1/status/overview", Some(LAB_ADMIN_TOKEN))?;
    if status == 200 {
        let v: serde_json::Value = serde_json::from_str(&body)?;
        f.overview_scaled = v["capacity_scaled"].clone();
        f.gateway_sentence = v["gateway_sentence_en"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    f.limited_bps = b0
        .iter()
        .zip(&b1)
        .map(|(a, b)| b.saturating_sub(*a) as f64 * 8.0 / dt)
        .collect();
    let added: Vec<f64> = pings.iter().map(|p| (p - idle).max(0.0)).collect();
    f.added_ms = (median(&added), super::lanes::percentile(&added, 0.95));
    if f.adapted_after_s.is_none() && effective(lab)? < 100_000_000 {
        f.adapted_after_s = Some(limited_at.elapsed().as_secs_f64());
    }
    let (status, body) = lab.http_get_as("/api/v1/gateway", Some(LAB_ADMIN_TOKEN))?;
    if status == 200 {
        let v: serde_json::Value = serde_json::from_str(&body)?;
        f.gateway_state = v["diagnosis"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    lab.restore_uplink()?;
    let lifted = Instant::now();
    while lifted.elapsed() < recover {
        if effective(lab)? >= 100_000_000 {
            f.back_after_s = Some(lifted.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(f)
}

/// The download effective capacity jatah exports, bit/s.
fn effective(lab: &Lab) -> Result<u64> {
    let (status, text) = lab.http_get("/metrics")?;
    if status != 200 {
        bail!("/metrics: {status}");
    }
    gauge(
        &text,
        "jatah_gateway_download_effective_capacity_bytes_per_second",
    )
    .map(|b| (b * 8.0) as u64)
    .context("no jatah_gateway_download_effective_capacity_bytes_per_second in /metrics")
}
