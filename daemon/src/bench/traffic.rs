//! Real traffic through the lab gateway, download (Internet to OPD):
//!
//! - the forwarding rate with jatah, with the same HTB tree classified by
//!   a linear list of u32 filters (one `match ip dst` per OPD, as
//!   wondershaper/FireQoS-style scripts generate), and with no shaping;
//! - TCP throughput in the same three set-ups;
//! - shaping accuracy: what TCP achieves against an OPD's ceiling;
//! - TCP with jatah's programs attached against the same HTB tree with
//!   them detached.
//!
//! One OPD namespace sends and receives; the other OPDs of a policy exist
//! only in the policy (and in the u32 list). Every process started here is
//! killed on the way out, the u32 filters are deleted by their guard, and
//! the lab removes its namespaces (and everything in them) when dropped.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use jatah_common::{DOWNLOAD, opd_class_minor};
use serde_json::Value;

use super::{ChildGuard, Progress, lab_spec, median, wait_bounded};
use crate::datapath::{PinnedCounters, pin_dir};
use crate::lab::netns::{NetNs, run_checked};
use crate::lab::{Lab, LabOpd, tc_class_name, tc_root_handle};
use crate::policy::Direction;
use crate::shaper::Shaper;

/// The OPD whose traffic is measured: the lab's OPD 0 (10.20.1.0/24).
pub const MEASURED_OPD: &str = "measured";
/// Its subnet, the last one in [`comparison_opds`].
pub const MEASURED_SUBNET: &str = "10.20.1.0/24";
/// The gateway interface where download is shaped.
pub const LAN: &str = "lan0";

/// How long jatah runs before a measurement starts: its first second
/// (opening the history store, first probes and samples) is not its
/// steady state.
const SETTLE: Duration = Duration::from_secs(2);

/// How the gateway shapes download during one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shaping {
    /// jatah running: its TCX classifier sets `skb->priority`.
    Jatah,
    /// jatah's HTB tree, jatah detached, one u32 filter per OPD in policy
    /// order: the measured subnet is matched last.
    U32Last,
    /// The same filters with the measured subnet moved to the front.
    U32First,
    /// No HTB, no classifier: the interface's default qdisc.
    None,
}

impl Shaping {
    /// Every set-up, in the order a round runs them.
    pub const ALL: [Shaping; 4] = [
        Shaping::Jatah,
        Shaping::U32Last,
        Shaping::U32First,
        Shaping::None,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Shaping::Jatah => "jatah",
            Shaping::U32Last => "u32, subnet last",
            Shaping::U32First => "u32, subnet first",
            Shaping::None => "no shaping",
        }
    }
}

/// The OPDs of a comparison policy with `n` subnets, in policy order:
/// (id, subnet). `n - 1` OPDs that exist only on paper (10.100.0.0/24
/// upward), then the measured one.
pub fn comparison_opds(n: usize) -> Vec<(String, String)> {
    let mut opds: Vec<(String, String)> = (0..n.saturating_sub(1))
        .map(|i| {
            (
                format!("opd-{i}"),
                format!("10.{}.{}.0/24", 100 + i / 256, i % 256),
            )
        })
        .collect();
    opds.push((MEASURED_OPD.into(), MEASURED_SUBNET.into()));
    opds
}

/// The policy of [`comparison_opds`]`(n)` under a 40 Gbit/s uplink: the
/// measured OPD's ceiling is the whole uplink (far above what 64-byte
/// packets reach here), the others 1M..100M.
pub fn comparison_policy(n: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "# Generated for the comparison benchmark.\n[gateway]\nwan = \"wan0\"\n\
         lan = [\"lan0\"]\ndownload = \"40G\"\nupload = \"40G\"\n",
    );
    for (id, subnet) in comparison_opds(n) {
        let (g, c) = if id == MEASURED_OPD {
            ("1G", "40G")
        } else {
            ("1M", "100M")
        };
        let _ = write!(
            s,
            "\n[[opd]]\nid = \"{id}\"\nname = \"{id}\"\nsubnets = [\"{subnet}\"]\n\
             download = {{ guaranteed = \"{g}\", ceiling = \"{c}\" }}\n\
             upload = {{ guaranteed = \"{g}\", ceiling = \"{c}\" }}\n"
        );
    }
    s
}

/// The measured OPD, the only OPD namespace of a traffic lab, with the
/// given download (guaranteed, ceiling).
pub fn measured_opd(download: (&str, &str)) -> LabOpd {
    LabOpd::new(MEASURED_OPD, "measured OPD", download, ("1G", "40G"))
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

/// Removes the HTB trees from both gateway interfaces (their default qdisc
/// comes back: no shaping at all).
pub fn remove_trees(lab: &Lab) -> Result<()> {
    let ifindexes = [lab.gw.ifindex(LAN)?, lab.gw.ifindex("wan0")?];
    lab.in_gateway(move || {
        let mut shaper = Shaper::new()?;
        for ifindex in ifindexes {
            shaper.remove(ifindex)?;
        }
        Ok(())
    })
}

/// u32 filters on the HTB root of a gateway interface, one `match ip dst`
/// per subnet in the given order, installed with `tc -batch`; deleted when
/// the guard drops.
pub struct U32Filters<'a> {
    ns: &'a NetNs,
    dev: String,
    /// Wall time of `tc -batch` (one tc process for all filters; a script
    /// running one tc per filter takes longer).
    pub install: Duration,
}

impl<'a> U32Filters<'a> {
    /// Installs `rules` (subnet, class minor) in order; `scratch` is a
    /// directory for the batch file.
    pub fn install(
        ns: &'a NetNs,
        dev: &str,
        rules: &[(String, u16)],
        scratch: &Path,
    ) -> Result<U32Filters<'a>> {
        use std::fmt::Write as _;
        let mut batch = String::new();
        let root = tc_root_handle();
        for (subnet, minor) in rules {
            // Class ids are hexadecimal to tc: class 1:31 is minor 0x31.
            let _ = writeln!(
                batch,
                "filter add dev {dev} parent {root} protocol ip prio 1 u32 match ip dst {subnet} flowid {}",
                tc_class_name(*minor)
            );
        }
        let file: PathBuf = scratch.join("u32.batch");
        std::fs::write(&file, batch)?;
        let mut guard = U32Filters {
            ns,
            dev: dev.into(),
            install: Duration::ZERO,
        };
        // `tc -n` enters the namespace itself, without the remounts of
        // `ip netns exec`, so the time is tc's own.
        let t = Instant::now();
        run_checked(
            std::process::Command::new("tc")
                .args(["-n", ns.name(), "-batch"])
                .arg(&file),
        )?;
        guard.install = t.elapsed();
        let installed = guard.count()?;
        ensure!(
            installed == rules.len(),
            "{installed} u32 filters on {dev}, {} wanted",
            rules.len()
        );
        Ok(guard)
    }

    /// Filters with a class (`flowid`) on the interface's HTB root.
    pub fn count(&self) -> Result<usize> {
        let out = run_checked(std::process::Command::new("tc").args([
            "-n",
            self.ns.name(),
            "filter",
            "show",
            "dev",
            &self.dev,
            "parent",
            &tc_root_handle(),
        ]))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("flowid"))
            .count())
    }
}

impl Drop for U32Filters<'_> {
    fn drop(&mut self) {
        let _ = run_checked(std::process::Command::new("tc").args([
            "-n",
            self.ns.name(),
            "filter",
            "del",
            "dev",
            &self.dev,
            "parent",
            &tc_root_handle(),
            "protocol",
            "ip",
            "prio",
            "1",
        ]));
    }
}

/// Packets an interface in `ns` has received.
pub fn rx_packets(ns: &NetNs, dev: &str) -> Result<u64> {
    let out = ns.ip(["-s", "-j", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .ok_or_else(|| anyhow!("no rx packet count for {dev} in `ip -s -j link`"))
}

/// Samples [`rx_packets`] and the moment it was read (the middle of the
/// `ip` call).
fn rx_sample(ns: &NetNs, dev: &str) -> Result<(u64, Instant)> {
    let before = Instant::now();
    let packets = rx_packets(ns, dev)?;
    Ok((packets, before + before.elapsed() / 2))
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
    /// iperf3 `args` followed by the CPU pinning, if any.
    fn with_affinity<'a>(&self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        if self.pin_cpus {
            all.extend(["-A", "1,0"]);
        }
        all
    }
}

/// Download UDP with 64-byte payloads as fast as iperf3 sends them (`-u
/// -l 64 -b 0`); returns the packets per second the OPD's interface
/// received over a window of `seconds` inside the run. Counted at the
/// interface, not by iperf3, so the receiving process (which cannot keep
/// up with small packets) does not limit what is measured.
pub fn udp_pps(lab: &Lab, i: usize, run: &RunSettings) -> Result<f64> {
    let child = ChildGuard::new(lab.spawn_iperf_args(
        i,
        Direction::Download,
        run.seconds + 1,
        0,
        &run.with_affinity(&["-u", "-l", "64", "-b", "0"]),
        true,
    )?);
    std::thread::sleep(Duration::from_millis(500));
    let (p0, t0) = rx_sample(&lab.opds[i], "eth0")?;
    std::thread::sleep(Duration::from_secs(run.seconds.into()));
    let (p1, t1) = rx_sample(&lab.opds[i], "eth0")?;
    let out = wait_bounded(child, Duration::from_secs(u64::from(run.seconds) + 30))?;
    iperf_json(&out)?;
    let pps = p1.saturating_sub(p0) as f64 / (t1 - t0).as_secs_f64();
    ensure!(pps > 0.0, "no UDP packet reached the OPD");
    Ok(pps)
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
    let (streams, omit) = (streams.to_string(), omit.to_string());
    Ok(ChildGuard::new(lab.spawn_iperf_args(
        i,
        Direction::Download,
        run.seconds,
        0,
        &run.with_affinity(&["-P", &streams, "-O", &omit]),
        true,
    )?))
}

fn tcp_result(out: &Output) -> Result<f64> {
    let v = iperf_json(out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 reported no received rate"))?;
    ensure!(bps > 0.0, "iperf3 received nothing");
    Ok(bps)
}

/// The HTB class of an OPD (from jatah's pinned slot owners).
pub fn class_minors(lab: &Lab) -> Result<std::collections::BTreeMap<String, u16>> {
    minors_by(lab, opd_class_minor)
}

/// The leaf a u32 filter must name for an OPD's traffic: its bulk lane
/// (its own class is an inner class with lanes on, and HTB sends packets
/// pointed at an inner class to the default class).
pub fn bulk_lane_minors(lab: &Lab) -> Result<std::collections::BTreeMap<String, u16>> {
    minors_by(lab, jatah_common::bulk_lane_minor)
}

fn minors_by(lab: &Lab, minor: fn(u32) -> u32) -> Result<std::collections::BTreeMap<String, u16>> {
    Ok(PinnedCounters::open(lab.bpffs()?)?
        .slots()?
        .into_iter()
        .map(|(id, slot)| (id, minor(slot) as u16))
        .collect())
}

/// (packets of class `minor`, drops of all classes) on the LAN tree.
fn class_packets_and_drops(lab: &Lab, minor: u16) -> Result<(u64, u64)> {
    let stats = lab.class_stats(LAN)?;
    let packets = stats
        .iter()
        .find(|c| c.minor == minor)
        .map(|c| c.packets)
        .ok_or_else(|| anyhow!("no class {} on {LAN}", tc_class_name(minor)))?;
    Ok((packets, stats.iter().map(|c| c.drops).sum()))
}

/// Download packets jatah's classifier counted for the measured OPD.
fn jatah_packets(lab: &Lab) -> Result<u64> {
    Ok(lab
        .counters()?
        .get(MEASURED_OPD)
        .map_or(0, |c| c.packets[DOWNLOAD]))
}

/// A UDP run under an HTB tree, checked: the measured OPD's class carried
/// the traffic (it was classified, not left to the default class), and
/// jatah's classifier saw it only when it was meant to.
/// Returns (packets/s, packets the tree dropped).
fn checked_udp(lab: &Lab, minor: u16, shaping: Shaping, run: &RunSettings) -> Result<(f64, u64)> {
    let (c0, d0) = class_packets_and_drops(lab, minor)?;
    let j0 = jatah_packets(lab)?;
    let pps = udp_pps(lab, 0, run)?;
    let (c1, d1) = class_packets_and_drops(lab, minor)?;
    let j1 = jatah_packets(lab)?;
    let expected = pps * f64::from(run.seconds) * 0.9;
    ensure!(
        (c1 - c0) as f64 >= expected,
        "{}: the measured OPD's class {} carried {} packets, the OPD received {:.0}: \
         the traffic was not classified into it",
        shaping.label(),
        tc_class_name(minor),
        c1 - c0,
        pps * f64::from(run.seconds)
    );
    if shaping == Shaping::Jatah {
        ensure!(j1 > j0, "jatah's classifier counted none of the traffic");
    } else {
        ensure!(
            j1 == j0,
            "{}: jatah's classifier still counts packets (not detached)",
            shaping.label()
        );
    }
    Ok((pps, d1 - d0))
}

/// The forwarding comparison at one policy size.
#[derive(Debug, Clone)]
pub struct Forwarding {
    pub subnets: usize,
    /// Median packets/s the OPD received, by [`Shaping`] (its `ALL` order).
    pub udp_pps: [f64; 4],
    /// Median of the per-round ratios jatah / each set-up.
    pub udp_jatah_over: [f64; 4],
    /// Median TCP payload bits/s, by [`Shaping`]; NaN where not measured
    /// (u32 with the subnet first: one position is enough for TCP).
    pub tcp_bps: [f64; 4],
    pub tcp_jatah_over: [f64; 4],
    /// Median wall time of installing the u32 filters with `tc -batch`, ms.
    pub u32_install_ms: f64,
    /// Packets the HTB trees dropped during all UDP runs (0 means the
    /// shaper never limited the traffic: the runs compare classification).
    pub htb_drops: u64,
}

/// Runs the comparison at `n` subnets in a fresh lab: every round runs
/// jatah, u32 (subnet last), u32 (subnet first) and no shaping one after
/// another, UDP and then TCP for each (not TCP for u32 first).
pub fn forwarding(
    jatah: &Path,
    n: usize,
    rounds: usize,
    run: &RunSettings,
    progress: &Progress,
) -> Result<Forwarding> {
    let mut lab = Lab::build(lab_spec("jt-bcmp", measured_opd(("1G", "40G"))))?;
    lab.write_policy(&comparison_policy(n))?;
    let opds = comparison_opds(n);
    let mut udp: [Vec<f64>; 4] = Default::default();
    let mut tcp: [Vec<f64>; 4] = Default::default();
    let (mut udp_ratio, mut tcp_ratio): ([Vec<f64>; 4], [Vec<f64>; 4]) = Default::default();
    let mut installs = Vec::new();
    let mut drops = 0u64;
    let tcp_run = |lab: &Lab| tcp_bps(lab, 0, 1, 1, run);
    for r in 0..rounds.max(1) {
        let mut pps = [f64::NAN; 4];
        let mut bps = [f64::NAN; 4];

        lab.start_daemon(jatah)?;
        // Measure jatah running, not jatah starting.
        std::thread::sleep(SETTLE);
        let minors = class_minors(&lab)?;
        let minor = minors[MEASURED_OPD];
        let (p, d) = checked_udp(&lab, minor, Shaping::Jatah, run)?;
        (pps[0], bps[0]) = (p, tcp_run(&lab)?);
        drops += d;

        let lanes = bulk_lane_minors(&lab)?;
        detach_jatah(&mut lab)?;
        let mut rules: Vec<(String, u16)> = opds
            .iter()
            .map(|(id, subnet)| {
                lanes
                    .get(id)
                    .map(|&m| (subnet.clone(), m))
                    .ok_or_else(|| anyhow!("OPD {id} has no class"))
            })
            .collect::<Result<_>>()?;
        {
            let filters = U32Filters::install(&lab.gw, LAN, &rules, lab.dir())?;
            installs.push(filters.install.as_secs_f64() * 1e3);
            let (p, d) = checked_udp(&lab, minor, Shaping::U32Last, run)?;
            (pps[1], bps[1]) = (p, tcp_run(&lab)?);
            drops += d;
        }
        rules.rotate_right(1);
        {
            let _filters = U32Filters::install(&lab.gw, LAN, &rules, lab.dir())?;
            let (p, d) = checked_udp(&lab, minor, Shaping::U32First, run)?;
            pps[2] = p;
            drops += d;
        }

        remove_trees(&lab)?;
        let j0 = jatah_packets(&lab)?;
        pps[3] = udp_pps(&lab, 0, run)?;
        bps[3] = tcp_run(&lab)?;
        ensure!(
            jatah_packets(&lab)? == j0,
            "no shaping: jatah's classifier still counts packets (not detached)"
        );

        for k in 0..4 {
            udp[k].push(pps[k]);
            udp_ratio[k].push(pps[0] / pps[k]);
            if !bps[k].is_nan() {
                tcp[k].push(bps[k]);
                tcp_ratio[k].push(bps[0] / bps[k]);
            }
        }
        progress.say(format!(
            "  {n} subnets, round {}/{}: UDP kpps jatah {:.0}, u32 last {:.0}, u32 first {:.0}, \
             none {:.0}; TCP Gbit/s jatah {:.2}, u32 last {:.2}, none {:.2}",
            r + 1,
            rounds.max(1),
            pps[0] / 1e3,
            pps[1] / 1e3,
            pps[2] / 1e3,
            pps[3] / 1e3,
            bps[0] / 1e9,
            bps[1] / 1e9,
            bps[3] / 1e9,
        ));
    }
    Ok(Forwarding {
        subnets: n,
        udp_pps: udp.each_ref().map(|v| median(v)),
        udp_jatah_over: udp_ratio.each_ref().map(|v| median(v)),
        tcp_bps: tcp.each_ref().map(|v| median(v)),
        tcp_jatah_over: tcp_ratio.each_ref().map(|v| median(v)),
        u32_install_ms: median(&installs),
        htb_drops: drops,
    })
}

/// What TCP achieved against one ceiling.
#[derive(Debug, Clone, Copy)]
pub struct Accuracy {
    pub ceiling_bps: u64,
    pub flows: u32,
    /// Median payload rate iperf3 received, bits/s.
    pub payload_bps: f64,
    /// Median rate the OPD's HTB class delivered, bits/s of Ethernet
    /// frames as HTB counts them (what the ceiling limits).
    pub wire_bps: f64,
}

impl Accuracy {
    pub fn payload_ratio(&self) -> f64 {
        self.payload_bps / self.ceiling_bps as f64
    }

    pub fn wire_ratio(&self) -> f64 {
        self.wire_bps / self.ceiling_bps as f64
    }
}

/// Shaping accuracy: for every ceiling (set by a policy reload, guaranteed
/// half of it) and number of parallel TCP flows, download for `omit` +
/// `run.seconds` seconds; iperf3 reports the payload rate after `omit`,
/// and the OPD's HTB class counters, read at the start and end of a
/// window inside the measured part, give the rate HTB delivered.
pub fn accuracy(
    jatah: &Path,
    ceilings: &[u64],
    flows: &[u32],
    rounds: usize,
    omit: u32,
    run: &RunSettings,
    progress: &Progress,
) -> Result<Vec<Accuracy>> {
    let mut lab = Lab::build(lab_spec("jt-bacc", measured_opd(("5M", "10M"))))?;
    lab.start_daemon(jatah)?;
    let minor = class_minors(&lab)?[MEASURED_OPD];
    let cells: Vec<(u64, u32)> = ceilings
        .iter()
        .flat_map(|&c| flows.iter().map(move |&f| (c, f)))
        .collect();
    let mut payload: Vec<Vec<f64>> = vec![Vec::new(); cells.len()];
    let mut wire: Vec<Vec<f64>> = vec![Vec::new(); cells.len()];
    let window = Duration::from_secs_f64((f64::from(run.seconds) - 1.0).max(0.5));
    for r in 0..rounds.max(1) {
        for (k, &(ceiling, streams)) in cells.iter().enumerate() {
            if k == 0 || cells[k - 1].0 != ceiling {
                set_ceiling(&mut lab, ceiling)?;
            }
            let child = spawn_tcp(&lab, 0, streams, omit, run)?;
            std::thread::sleep(Duration::from_secs(omit.into()) + Duration::from_millis(500));
            let (b0, t0) = class_bytes(&lab, minor)?;
            std::thread::sleep(window);
            let (b1, t1) = class_bytes(&lab, minor)?;
            let out = wait_bounded(
                child,
                Duration::from_secs(u64::from(run.seconds + omit) + 30),
            )?;
            let p = tcp_result(&out)?;
            let w = (b1 - b0) as f64 * 8.0 / (t1 - t0).as_secs_f64();
            payload[k].push(p);
            wire[k].push(w);
            progress.say(format!(
                "  round {}/{}: ceiling {}, {streams} flow(s): payload {:.3}, HTB {:.3} of the ceiling",
                r + 1,
                rounds.max(1),
                rate_label(ceiling),
                p / ceiling as f64,
                w / ceiling as f64
            ));
        }
    }
    Ok(cells
        .iter()
        .enumerate()
        .map(|(k, &(ceiling_bps, flows))| Accuracy {
            ceiling_bps,
            flows,
            payload_bps: median(&payload[k]),
            wire_bps: median(&wire[k]),
        })
        .collect())
}

/// "10M", "1G": a ceiling as a policy writes it.
pub fn rate_label(bps: u64) -> String {
    if bps >= 1_000_000_000 && bps.is_multiple_of(1_000_000_000) {
        format!("{}G", bps / 1_000_000_000)
    } else if bps >= 1_000_000 && bps.is_multiple_of(1_000_000) {
        format!("{}M", bps / 1_000_000)
    } else {
        format!("{}k", bps / 1_000)
    }
}

/// Reloads the lab's policy with the measured OPD's download ceiling at
/// `bps` (guaranteed half of it).
fn set_ceiling(lab: &mut Lab, bps: u64) -> Result<()> {
    let mut spec = lab.spec.clone();
    spec.opds[0].download = (rate_label(bps / 2), rate_label(bps));
    lab.write_policy(&spec.policy_toml())?;
    let (status, body) = lab.reload_now()?;
    ensure!(
        status == 200,
        "reload to a {bps} bit/s ceiling: {status} {body}"
    );
    Ok(())
}

/// Bytes HTB delivered through class `minor` on the LAN tree, and when.
fn class_bytes(lab: &Lab, minor: u16) -> Result<(u64, Instant)> {
    let before = Instant::now();
    let bytes = lab
        .class_stats(LAN)?
        .iter()
        .find(|c| c.minor == minor)
        .map(|c| c.bytes)
        .ok_or_else(|| anyhow!("no class {} on {LAN}", tc_class_name(minor)))?;
    Ok((bytes, before + before.elapsed() / 2))
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
    let mut lab = Lab::build(lab_spec("jt-bfwd", measured_opd(("1G", "40G"))))?;
    let (mut attached, mut detached, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds.max(1) {
        lab.start_daemon(jatah)?;
        std::thread::sleep(SETTLE);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_measured_subnet_comes_last_and_the_policy_is_valid() {
        let opds = comparison_opds(1_000);
        assert_eq!(opds.len(), 1_000);
        assert_eq!(opds[0], ("opd-0".into(), "10.100.0.0/24".into()));
        assert_eq!(opds[998].1, "10.103.230.0/24");
        assert_eq!(
            opds.last().unwrap(),
            &(MEASURED_OPD.into(), MEASURED_SUBNET.into())
        );
        let p = crate::policy::parse(&comparison_policy(1_000), "c.toml").unwrap();
        assert_eq!(p.opds.len(), 1_000);
        assert_eq!(p.opds[999].id, MEASURED_OPD);
        assert_eq!(
            comparison_opds(1),
            [(MEASURED_OPD.into(), MEASURED_SUBNET.into())]
        );
    }

    #[test]
    fn rate_labels_read_as_policy_rates() {
        assert_eq!(rate_label(10_000_000), "10M");
        assert_eq!(rate_label(5_000_000), "5M");
        assert_eq!(rate_label(1_000_000_000), "1G");
        assert_eq!(rate_label(500_000_000), "500M");
        assert_eq!(rate_label(1_500_000_000), "1500M");
    }
}
