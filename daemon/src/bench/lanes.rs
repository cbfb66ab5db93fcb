//! What one busy office feels (issue 15): round trips and small web
//! fetches while it downloads at its ceiling, its download while it also
//! uploads, and how much of its ceiling it gets with 1, 4 and 16 flows.
//! Measured in the lab with real iperf3 flows, ping and fetches, under the
//! shapings of [`SHAPINGS`], named by the policy lines they add to
//! `[gateway]`: "before" (no lanes, a 1,000-packet FIFO: how jatah shaped
//! until lanes came), lanes without `boost_new_connections`, and the
//! defaults. The lab test (tests/lanes.rs) runs a short version and judges
//! it loosely; the bench (`cargo bench --bench shaping`) runs it all, in
//! rounds, and writes its table.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{ChildGuard, median, wait_bounded};
use crate::lab::{INET_ADDR, Lab, LabOpd, LabSpec};
use crate::policy::Direction;

/// The office: guaranteed 5 Mbit/s, ceiling 10 Mbit/s, both ways, alone
/// behind a 100/100 Mbit/s uplink.
pub const GUARANTEE_BPS: f64 = 5e6;
pub const CEILING_BPS: f64 = 10e6;

/// A lab with the one office [`GUARANTEE_BPS`]/[`CEILING_BPS`].
pub fn spec(prefix: &str) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        download: "100M".into(),
        upload: "100M".into(),
        nat: true,
        mtu: 1500,
        opds: vec![LabOpd::new(
            "dinsos",
            "Dinas Sosial",
            ("5M", "10M"),
            ("5M", "10M"),
        )],
    }
}

/// A shaping to compare: a name and the `[gateway]` lines that make it.
#[derive(Debug, Clone, Copy)]
pub struct Shaping {
    pub name: &'static str,
    pub lines: &'static str,
}

/// How jatah shaped before lanes: the OPD's class a leaf with a FIFO of
/// `leaf_limit` (1,000) packets.
pub const BEFORE: Shaping = Shaping {
    name: "before (no lanes, 1000-packet FIFO)",
    lines: "interactive = false\nqueue_target = \"off\"\n",
};
/// Lanes, each new connection's data in the bulk lane from its first
/// byte (as before `boost_new_connections`).
pub const LANES_NO_BOOST: Shaping = Shaping {
    name: "lanes, boost_new_connections = false",
    lines: "boost_new_connections = false\n",
};
/// The defaults: lanes, each new connection's first 32 KiB in the
/// interactive lane, and the bulk lane's leaf as the kernel has it (here a
/// 1,000-packet FIFO).
pub const LANES: Shaping = Shaping {
    name: "lanes (defaults)",
    lines: "",
};
/// The shapings the benchmark compares, in the order it runs them.
pub const SHAPINGS: [Shaping; 3] = [BEFORE, LANES_NO_BOOST, LANES];

/// What was measured under one shaping.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Ping round trips to the Internet side with nothing else running, ms.
    pub idle_ms: Vec<f64>,
    /// The same while 8 download flows hold the ceiling (a lost ping
    /// counts as 1,000 ms).
    pub busy_ms: Vec<f64>,
    /// Pings lost while busy.
    pub busy_lost: usize,
    /// A 20 KB fetch on a new connection from the Internet side while the
    /// 8 flows run, ms (one every 0.5 s; a failed one as 5,000 ms).
    pub fetch_ms: Vec<f64>,
    /// The office's class, per second, while it downloads and uploads at
    /// once (4 flows each way), bits per second: download, upload.
    pub both: [Vec<f64>; 2],
    /// Share of the ceiling the class carried with 1, 4 and 16 download
    /// flows (empty in the short version).
    pub utilisation: Vec<(u32, f64)>,
}

impl Figures {
    /// Median and 95th percentile of the round trips added by the load, ms.
    pub fn added_ms(&self) -> (f64, f64) {
        let idle = median(&self.idle_ms);
        let added: Vec<f64> = self.busy_ms.iter().map(|r| (r - idle).max(0.0)).collect();
        (median(&added), percentile(&added, 0.95))
    }

    /// Mean and lowest second of `dir` while both ways were busy, bit/s.
    pub fn both_ways(&self, dir: Direction) -> (f64, f64) {
        let v = &self.both[dir.index()];
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        (mean, v.iter().copied().fold(f64::INFINITY, f64::min))
    }
}

/// The `p` quantile (nearest rank) of `values`; NaN for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// Puts `shaping` in force in a running lab: rewrites the policy with its
/// lines and reloads.
pub fn apply(lab: &Lab, shaping: Shaping) -> Result<()> {
    let text =
        lab.spec
            .policy_toml()
            .replacen("[gateway]\n", &format!("[gateway]\n{}", shaping.lines), 1);
    lab.write_policy(&text)?;
    let (status, body) = lab.reload_now()?;
    if status != 200 {
        bail!("reloading for {}: {status} {body}", shaping.name);
    }
    // Let queues of the previous phase drain.
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

/// Measures the office under whatever shaping is in force; `full` adds the
/// utilisation at 1, 4 and 16 flows.
pub fn measure(lab: &Lab, full: bool) -> Result<Figures> {
    let mut f = Figures {
        idle_ms: ping(lab, 0, 10)?.0,
        ..Figures::default()
    };
    // 8 download flows at the ceiling; pings, and small fetches, once
    // they are going.
    let server = WebServer::start(lab)?;
    let flows = ChildGuard::new(lab.spawn_iperf(0, Direction::Download, 14, 8)?);
    std::thread::sleep(Duration::from_secs(3));
    let fetches = {
        let ns = format!("/run/netns/{}", lab.opds[0].name());
        std::thread::spawn(move || -> Result<Vec<f64>> {
            crate::lab::enter_netns(&ns)?;
            Ok((0..16)
                .map(|_| {
                    let t = Instant::now();
                    let ms =
                        fetch(FETCH_BYTES).map_or(5_000.0, |()| t.elapsed().as_secs_f64() * 1e3);
                    std::thread::sleep(Duration::from_millis(500).saturating_sub(t.elapsed()));
                    ms
                })
                .collect())
        })
    };
    let (busy, lost) = ping(lab, 0, 80)?;
    f.busy_ms = busy;
    f.busy_lost = lost;
    f.fetch_ms = fetches
        .join()
        .map_err(|_| anyhow::anyhow!("the fetching thread panicked"))??;
    drop(flows);
    drop(server);
    std::thread::sleep(Duration::from_secs(1));

    // Both ways at once: the class's bytes each second.
    let down = ChildGuard::new(lab.spawn_iperf(0, Direction::Download, 16, 4)?);
    let up = ChildGuard::new(lab.spawn_iperf(0, Direction::Upload, 16, 4)?);
    std::thread::sleep(Duration::from_secs(4));
    f.both = per_second(lab, 10)?;
    drop((down, up));
    std::thread::sleep(Duration::from_secs(1));

    if full {
        for n in [1, 4, 16] {
            let flows = ChildGuard::new(lab.spawn_iperf(0, Direction::Download, 10, n)?);
            std::thread::sleep(Duration::from_secs(3));
            let rates = per_second(lab, 6)?;
            drop(flows);
            let mean = rates[0].iter().sum::<f64>() / rates[0].len() as f64;
            f.utilisation.push((n, mean / CEILING_BPS));
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(f)
}

/// The size of the small web object fetched while the office is busy.
const FETCH_BYTES: usize = 20_000;
/// Where the Internet side serves it.
const WEB_PORT: u16 = 8020;

/// A tiny web server on the Internet side: every connection gets
/// `FETCH_BYTES` after its request line. Stops when dropped.
struct WebServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebServer {
    fn start(lab: &Lab) -> Result<WebServer> {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let ns = format!("/run/netns/{}", lab.inet.name());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let listener = crate::lab::enter_netns(&ns)
                .and_then(|()| Ok(std::net::TcpListener::bind((INET_ADDR, WEB_PORT))?));
            let listener = match listener {
                Ok(l) => {
                    let _ = l.set_nonblocking(true);
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let body = vec![b'j'; FETCH_BYTES];
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 512];
                        let _ = c.read(&mut buf);
                        let _ = c.write_all(&body);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .context("the web server did not start")??;
        Ok(WebServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One fetch of `bytes` from the web server (this thread is in an
/// office's namespace): connect, ask, read them all; at most 5 s.
fn fetch(bytes: usize) -> Result<()> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from((INET_ADDR.parse::<std::net::Ipv4Addr>()?, WEB_PORT));
    let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(b"GET /object HTTP/1.0\r\n\r\n")?;
    let mut got = 0;
    let mut buf = [0u8; 16384];
    while got < bytes {
        let n = c.read(&mut buf)?;
        if n == 0 {
            bail!("closed after {got} bytes");
        }
        got += n;
    }
    Ok(())
}

/// `count` pings from office `i` to the Internet side, 100 ms apart:
/// round trips in ms (lost ones as 1,000 ms) and how many were lost.
pub(super) fn ping(lab: &Lab, i: usize, count: usize) -> Result<(Vec<f64>, usize)> {
    let child = lab.opds[i]
        .command("ping")
        .args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.1",
            "-W",
            "1",
            INET_ADDR,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting ping")?;
    let out = wait_bounded(
        ChildGuard::new(child),
        Duration::from_millis(100 * count as u64 + 5_000),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    if times.is_empty() {
        bail!("no ping came back: {text}");
    }
    let lost = count.saturating_sub(times.len());
    times.extend(std::iter::repeat_n(1000.0, lost));
    Ok((times, lost))
}

/// The office's class bytes each second for `seconds` seconds, as bit/s:
/// download (on `lan0`), upload (on `wan0`).
fn per_second(lab: &Lab, seconds: usize) -> Result<[Vec<f64>; 2]> {
    let minor = lab.class_minor("dinsos")?;
    let read = |iface: &str| -> Result<u64> {
        Ok(lab
            .class_stats(iface)?
            .iter()
            .find(|c| c.minor == minor)
            .map(|c| c.bytes)
            .unwrap_or(0))
    };
    let mut out = [Vec::new(), Vec::new()];
    let mut before = (Instant::now(), read("lan0")?, read("wan0")?);
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        let now = (Instant::now(), read("lan0")?, read("wan0")?);
        let dt = now.0.duration_since(before.0).as_secs_f64();
        out[0].push(now.1.saturating_sub(before.1) as f64 * 8.0 / dt);
        out[1].push(now.2.saturating_sub(before.2) as f64 * 8.0 / dt);
        before = now;
    }
    Ok(out)
}

/// Builds the lab and starts `jatah` in it.
pub fn start(prefix: &str, jatah: &Path) -> Result<Lab> {
    let mut lab = Lab::build(spec(prefix))?;
    lab.start_daemon(jatah)?;
    Ok(lab)
}
