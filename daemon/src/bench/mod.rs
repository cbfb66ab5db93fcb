//! Measuring code shared by the benchmarks (`cargo bench`) and the smoke
//! test that proves the comparison command still runs
//! (tests/bench_smoke.rs). Benchmarks print numbers; nothing here judges
//! a timing as a failure. An error means a measurement could not be made
//! (or would not measure what it claims, e.g. traffic that did not reach
//! the class it was meant for).
//!
//! - [`classifier`]: the classifier's cost per packet (BPF_PROG_TEST_RUN).
//! - [`traffic`]: forwarding and shaping with real traffic in the lab:
//!   jatah against the same HTB tree classified by linear u32 filters, and
//!   against no shaping at all.
//! - [`control`]: policy apply time, `/metrics` scrape time, memory.
//! - [`wrk`]: HTTP load on the lab's jatah and what wrk reports.
//! - [`capacity`]: the capacity-drop sweep (issue 14): uplink limits,
//!   losses and false positives against one or more jatah binaries.
//! - [`compare`]: the comparison command that runs all of it and writes
//!   its tables into BENCHMARKS.md.

pub mod adapt;
pub mod capacity;
pub mod classifier;
pub mod compare;
pub mod control;
pub mod lanes;
pub mod report;
pub mod traffic;
pub mod wrk;

use std::process::Child;
use std::time::{Duration, Instant};

use crate::lab::{LabOpd, LabSpec};

/// A lab whose only OPD namespace is `opd`, behind a 40 Gbit/s uplink
/// (above what veth carries here): every benchmark lab. The other OPDs a
/// benchmark needs exist only in the policy it writes.
pub fn lab_spec(prefix: &str, opd: LabOpd) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        download: "40G".into(),
        upload: "40G".into(),
        nat: true,
        mtu: 1500,
        opds: vec![opd],
    }
}

/// The value of the unlabelled sample `name` in a /metrics text.
pub fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse::<f64>()
            .ok()
    })
}

/// The median of `values` (the upper one of the two middle values for an
/// even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A child process that is killed (and reaped) when the guard drops, so an
/// error or a panic half-way through a measurement leaves no traffic
/// generator running.
#[derive(Debug)]
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        ChildGuard(Some(child))
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.0.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Hands the child over (e.g. to wait for its output).
    pub fn take(mut self) -> Child {
        self.0.take().expect("child taken twice")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child` to exit, at most `limit`; kills it after that.
pub fn wait_bounded(child: ChildGuard, limit: Duration) -> anyhow::Result<std::process::Output> {
    let mut child = child.take();
    let deadline = Instant::now() + limit;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("a benchmark process did not finish within {limit:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child.wait_with_output()?)
}

/// Progress lines on stdout, each with the time since the run began, so
/// whoever started a long run can see it is alive.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            start: Instant::now(),
        }
    }
}

impl Progress {
    pub fn say(&self, line: impl AsRef<str>) {
        let s = self.start.elapsed().as_secs();
        println!("[{:>2}:{:02}] {}", s / 60, s % 60, line.as_ref());
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Resident memory of a process, KiB (`VmRSS` in /proc).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time (user and system, every thread) the process has used, in
/// seconds (USER_HZ ticks of /proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat: no command"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("/proc/{pid}/stat: short"))?
            .parse::<f64>()?
            / 100.0)
    };
    // utime and stime: fields 14 and 15, counted from the state (field 3).
    Ok(tick(11)? + tick(12)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }
}
