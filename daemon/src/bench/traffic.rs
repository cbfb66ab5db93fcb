//! Real traffic through the lab gateway, download (Internet to OPD): TCP
//! with jatah's programs attached against the same HTB tree with them
//! detached.
//!
//! Every process started here is killed on the way out, and the lab
//! removes its namespaces (and everything in them) when dropped.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;

use super::{ChildGuard, Progress, median, wait_bounded};
use crate::datapath::pin_dir;
use crate::lab::{Lab, LabOpd, LabSpec};
use crate::policy::Direction;

/// The OPD whose traffic is measured: the lab's OPD 0 (10.20.1.0/24).
pub const MEASURED_OPD: &str = "measured";

/// A lab whose only OPD namespace is the measured OPD.
pub fn lab_spec(prefix: &str, download: (&str, &str)) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        download: "40G".into(),
        upload: "40G".into(),
        nat: true,
        mtu: 1500,
        opds: vec![LabOpd::new(
            MEASURED_OPD,
            "measured OPD",
            download,
            ("1G", "40G"),
        )],
    }
}

/// Stops jatah and removes its link pins, which detaches its programs;
/// the HTB trees and the pinned maps stay.
pub fn detach_jatah(lab: &mut Lab) -> Result<()> {
    lab.stop_daemon()?;
    let links = pin_dir(lab.bpffs()?).join("links");
    for e in std::fs::read_dir(&links).with_context(|| format!("reading {}", links.display()))? {
        let path = e?.path();
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// iperf3's JSON report, or its error.
pub fn iperf_json(out: &Output) -> Result<Value> {
    let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 output is not JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {err}");
    }
    Ok(v)
}

/// How the traffic runs are made.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    /// Seconds measured per run.
    pub seconds: u32,
    /// Pin the receiving client to CPU 1 and the sending server to CPU 0
    /// (iperf3 `-A 1,0`): the gateway forwards in the sender's softirq, so
    /// every run has the same CPU layout.
    pub pin_cpus: bool,
}

impl RunSettings {
    fn affinity(&self, cmd: &mut std::process::Command) {
        if self.pin_cpus {
            cmd.args(["-A", "1,0"]);
        }
    }
}

/// Download TCP with `streams` parallel flows; iperf3's received payload
/// rate (bits/s) over `seconds`, after `omit` seconds left out (slow start).
pub fn tcp_bps(lab: &Lab, i: usize, streams: u32, omit: u32, run: &RunSettings) -> Result<f64> {
    let out = wait_bounded(
        spawn_tcp(lab, i, streams, omit, run)?,
        Duration::from_secs(u64::from(run.seconds + omit) + 30),
    )?;
    tcp_result(&out)
}

fn spawn_tcp(
    lab: &Lab,
    i: usize,
    streams: u32,
    omit: u32,
    run: &RunSettings,
) -> Result<ChildGuard> {
    let mut cmd = lab.iperf_command(i, Direction::Download, run.seconds, 0);
    cmd.args(["-P", &streams.to_string(), "-O", &omit.to_string()]);
    run.affinity(&mut cmd);
    Ok(ChildGuard::new(
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?,
    ))
}

fn tcp_result(out: &Output) -> Result<f64> {
    let v = iperf_json(out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 reported no received rate"))?;
    ensure!(bps > 0.0, "iperf3 received nothing");
    Ok(bps)
}

/// TCP download with jatah's programs attached and detached over the same
/// HTB tree, one OPD with a 40 Gbit/s ceiling: (attached, detached) median
/// bits/s and the median of the per-round ratios attached/detached.
pub fn attached_vs_detached(
    jatah: &Path,
    rounds: usize,
    run: &RunSettings,
    progress: &Progress,
) -> Result<(f64, f64, f64)> {
    let mut lab = Lab::build(lab_spec("jt-bfwd", ("1G", "40G")))?;
    let (mut attached, mut detached, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds.max(1) {
        lab.start_daemon(jatah)?;
        let a = tcp_bps(&lab, 0, 1, 0, run)?;
        detach_jatah(&mut lab)?;
        let d = tcp_bps(&lab, 0, 1, 0, run)?;
        progress.say(format!(
            "  round {}: attached {:.2} Gbit/s, detached {:.2} Gbit/s",
            r + 1,
            a / 1e9,
            d / 1e9
        ));
        attached.push(a);
        detached.push(d);
        ratios.push(a / d);
    }
    Ok((median(&attached), median(&detached), median(&ratios)))
}
