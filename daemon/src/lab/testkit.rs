//! What only tests and benchmarks do with a lab: break it (links, routers,
//! the uplink, the gateway's interfaces), measure it (iperf3 results, HTB
//! classes, a real Prometheus) and read jatah's view of it. Built with the
//! `testkit` feature only, so `jatah lab` and the shipped binary carry none
//! of it; the items are re-exported from [`crate::lab`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use jatah_common::{HTB_MAJOR, htb_class_id, opd_class_minor};

use super::{GW_LISTEN, GW_STATUS_PORT, GW_WAN_ADDR, LAB_ADMIN_TOKEN, Lab};
use super::netns::NetNs;
use crate::cli::client;
use crate::datapath::PinnedCounters;
use crate::lab::netns::run_checked;
use crate::policy::Direction;
use crate::shaper::{ClassStats, Shaper};

/// Where the lab's Prometheus listens inside the gateway namespace.
pub const PROMETHEUS_LISTEN: &str = "127.0.0.1:9090";

/// The nftables table [`Lab::wan_loss`] puts in the ISP namespace.
pub(super) const LOSS_TABLE: &str = "jatah_lab_wan_loss";

/// A policy for the lab's gateway naming `n` OPDs (10.100.0.0/24 upward),
/// each guaranteed 1M with a 100M ceiling, under a 40G uplink: for
/// benchmarks that need many OPDs but no namespace per OPD.
pub fn generated_policy(n: usize) -> String {
    let mut s = String::from(
        "# Generated for benchmarks.\n[gateway]\nwan = \"wan0\"\nlan = [\"lan0\"]\n\
         download = \"40G\"\nupload = \"40G\"\n",
    );
    for i in 0..n {
        let _ = write!(
            s,
            "\n[[opd]]\nid = \"opd-{i}\"\nname = \"OPD {i}\"\nsubnets = [\"10.{}.{}.0/24\"]\n\
             download = {{ guaranteed = \"1M\", ceiling = \"100M\" }}\n\
             upload = {{ guaranteed = \"1M\", ceiling = \"100M\" }}\n",
            100 + i / 256,
            i % 256
        );
    }
    s
}

/// The status page as a browser outside (the Internet namespace) opens it,
/// with a path after the port such as `/status#token=...`.
pub fn status_url_outside(path: &str) -> String {
    format!("http://{GW_WAN_ADDR}:{GW_STATUS_PORT}{path}")
}

/// What iperf3 measured at the receiving side.
#[derive(Debug, Clone, Copy)]
pub struct IperfResult {
    pub bits_per_second: f64,
    /// Payload bytes received.
    pub bytes: u64,
}

/// Percent-encodes a query parameter value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What a UDP iperf3 run saw at the receiver: (packets, lost packets).
pub fn wait_iperf_udp(child: Child) -> Result<(u64, u64)> {
    let out = child.wait_with_output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 output is not JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {err}");
    }
    let sum = &v["end"]["sum"];
    Ok((
        sum["packets"].as_u64().unwrap_or(0),
        sum["lost_packets"].as_u64().unwrap_or(u64::MAX),
    ))
}

/// Waits for an iperf3 client started by [`Lab::spawn_iperf`].
pub fn wait_iperf(child: Child) -> Result<IperfResult> {
    let out = child.wait_with_output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 output is not JSON: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {err}");
    }
    let recv = &v["end"]["sum_received"];
    Ok(IperfResult {
        bits_per_second: recv["bits_per_second"].as_f64().unwrap_or(0.0),
        bytes: recv["bytes"].as_u64().unwrap_or(0),
    })
}

/// How tc names HTB class `1:minor` of jatah's tree (hexadecimal, as in
/// `tc class show`): minor 0x31 is `1:31`.
pub fn tc_class_name(minor: u16) -> String {
    let id = htb_class_id(minor.into());
    format!("{:x}:{:x}", id >> 16, id & 0xffff)
}

/// The root handle of jatah's HTB trees as tc writes it (`1:`).
pub fn tc_root_handle() -> String {
    format!("{HTB_MAJOR:x}:")
}

/// The minor of a class id tc prints (`1:11` is 0x11), if the class is in
/// jatah's tree.
fn htb_minor(id: &str) -> Option<u16> {
    let (major, minor) = id.split_once(':')?;
    if u32::from_str_radix(major, 16).ok()? != HTB_MAJOR {
        return None;
    }
    u16::from_str_radix(minor, 16).ok()
}

impl Lab {
    /// Deletes the gateway's WAN interface (its peer on the ISP's bridge
    /// goes with it).
    pub fn delete_wan(&self) -> Result<()> {
        self.gw.ip(["link", "del", "wan0"])?;
        Ok(())
    }

    /// Deletes the gateway's LAN interface (its peer on the switch goes
    /// with it), as a network reconfiguration or an unplugged NIC does.
    pub fn delete_lan(&self) -> Result<()> {
        self.gw.ip(["link", "del", "lan0"])?;
        Ok(())
    }

    /// Replaces the lab's policy file (e.g. with a generated one naming many
    /// more OPDs than the lab has namespaces); takes effect at the next start.
    pub fn write_policy(&self, text: &str) -> Result<()> {
        std::fs::write(&self.policy_path, text)?;
        Ok(())
    }

    /// The pid of the daemon started by [`Lab::start_daemon`].
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// Whether the daemon started by [`start_daemon`] is still running.
    pub fn daemon_running(&mut self) -> bool {
        matches!(self.daemon.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Asks jatah to reload its policy file now (as the lab's admin):
    /// (status, body).
    pub fn reload_now(&self) -> Result<(u16, String)> {
        self.in_gateway(|| {
            client::post(
                GW_LISTEN.parse()?,
                "/api/v1/policy/reload",
                Some(LAB_ADMIN_TOKEN),
                "",
            )
        })
    }

    /// HTB class statistics on a gateway interface (`lan0` or `wan0`).
    pub fn class_stats(&self, ifname: &str) -> Result<Vec<ClassStats>> {
        let ifindex = self.gw.ifindex(ifname)?;
        self.in_gateway(move || Ok(Shaper::new()?.class_stats(ifindex)?))
    }

    /// The HTB class minor of an OPD, from jatah's pinned slot owners.
    pub fn class_minor(&self, id: &str) -> Result<u16> {
        let slots = PinnedCounters::open(self.bpffs()?)?.slots()?;
        let slot = slots
            .get(id)
            .ok_or_else(|| anyhow!("OPD {id} has no slot"))?;
        Ok(opd_class_minor(*slot) as u16)
    }

    /// Steady demand below the OPD's ceiling: one flow paced at `bitrate`
    /// (e.g. "2M"), on its own server so bulk transfers can run beside it.
    pub fn spawn_iperf_paced(
        &self,
        i: usize,
        dir: Direction,
        seconds: u32,
        bitrate: &str,
    ) -> Result<Child> {
        self.spawn_iperf_args(i, dir, seconds, 1, &["-b", bitrate], false)
    }

    /// UDP at a fixed `bitrate` (iperf3 counts every lost datagram).
    pub fn spawn_iperf_udp(
        &self,
        i: usize,
        dir: Direction,
        seconds: u32,
        bitrate: &str,
    ) -> Result<Child> {
        self.spawn_iperf_args(
            i,
            dir,
            seconds,
            1,
            &["-u", "-b", bitrate, "-l", "1200"],
            true,
        )
    }

    /// `tc class show` on a gateway interface: (minor, rate, ceil) as tc
    /// prints them, e.g. (17, "10Mbit", "20Mbit").
    pub fn tc_classes(&self, ifname: &str) -> Result<Vec<(u16, String, String)>> {
        let out = self.gw.run("tc", ["class", "show", "dev", ifname])?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut classes = Vec::new();
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let field = |name: &str| {
                w.iter()
                    .position(|x| *x == name)
                    .and_then(|i| w.get(i + 1))
                    .map(|s| s.to_string())
            };
            if let (Some(id), Some(rate), Some(ceil)) = (w.get(2), field("rate"), field("ceil"))
                && let Some(minor) = htb_minor(id)
            {
                classes.push((minor, rate, ceil));
            }
        }
        Ok(classes)
    }

    /// Limits what the Internet side sends towards the gateway (an ISP
    /// delivering less than contracted): a tbf on its WAN link,
    /// `tc qdisc replace dev wan0 root tbf rate RATE burst BURST latency
    /// LATENCY` in the Internet namespace. A small burst and a 5 ms latency
    /// is policing ([`Lab::police_uplink`]); a longer latency is the queue
    /// of a congested ISP ([`Lab::queue_uplink`]). Keep the burst at least
    /// two MTUs and at least RATE/HZ, or tbf cannot send at RATE.
    pub fn limit_uplink(&self, rate: &str, burst: &str, latency: &str) -> Result<()> {
        self.inet.run(
            "tc",
            [
                "qdisc", "replace", "dev", "wan0", "root", "tbf", "rate", rate, "burst", burst,
                "latency", latency,
            ],
        )?;
        Ok(())
    }

    /// An ISP policing the download to `rate`: [`Lab::limit_uplink`] with
    /// a 16 kB burst and a 5 ms queue (about 15 packets at 12 Mbit/s), so
    /// round trips hardly grow and the excess is dropped.
    pub fn police_uplink(&self, rate: &str) -> Result<()> {
        self.limit_uplink(rate, "16kb", "5ms")
    }

    /// A congested ISP: the download limited to `rate` behind a queue of
    /// `latency` ("50ms", "100ms", "300ms"), 32 kB burst.
    pub fn queue_uplink(&self, rate: &str, latency: &str) -> Result<()> {
        self.limit_uplink(rate, "32kb", latency)
    }

    /// Removes the uplink limit.
    pub fn restore_uplink(&self) -> Result<()> {
        self.inet
            .run("tc", ["qdisc", "del", "dev", "wan0", "root"])?;
        Ok(())
    }

    /// Bytes the uplink limit (the tbf on the Internet side's `wan0`) has
    /// sent towards the gateway since it was set, Ethernet frames as tc
    /// counts them; None while no limit is set. Two readings give what the
    /// limit truly delivered over the time between them.
    pub fn uplink_sent_bytes(&self) -> Result<Option<u64>> {
        Ok(uplink_qdisc(self.inet.name(), "wan0")?.map(|q| q.sent_bytes))
    }

    /// Random loss on the uplink, download: the ISP's line drops `percent`
    /// % of what comes from the Internet (an nftables netdev ingress rule,
    /// `numgen random mod 100 < percent drop`, on the ISP bridge's `up0`).
    /// The packets are already on the wire, so senders see real loss: a
    /// drop in a sender's own output path would be reported back to its
    /// TCP as local congestion and sent again at once, unseen. With
    /// `spare_icmp` only TCP is dropped, as an ISP whose routers answer
    /// pings while the data path loses packets. Replaces any loss set
    /// before; the table lives in the lab's ISP namespace, so it goes with
    /// the lab.
    pub fn wan_loss(&self, percent: u32, spare_icmp: bool) -> Result<()> {
        if percent > 100 {
            bail!("loss of {percent} % is not a percentage");
        }
        self.clear_wan_loss()?;
        let only_tcp = if spare_icmp { "ip protocol tcp " } else { "" };
        let rules = format!(
            "table netdev {LOSS_TABLE} {{\n chain ingress {{\n  type filter hook ingress device \"up0\" priority 0; policy accept;\n  \
             {only_tcp}numgen random mod 100 < {percent} counter drop\n  counter\n }}\n}}\n"
        );
        let path = self.dir().join("wan-loss.nft");
        std::fs::write(&path, rules)?;
        self.isp.run("nft", ["-f", &path.display().to_string()])?;
        Ok(())
    }

    /// Removes the loss [`Lab::wan_loss`] set (nothing to do if none).
    pub fn clear_wan_loss(&self) -> Result<()> {
        delete_table(&self.isp, "netdev", LOSS_TABLE)
    }

    /// Switches OPD `i`'s router off while its link stays up: its address
    /// disappears, nothing answers or sends.
    pub fn router_off(&self, i: usize) -> Result<()> {
        self.opds[i].ip(["addr", "flush", "dev", "eth0"])?;
        Ok(())
    }

    /// Runs iperf3 for `seconds` and returns what the receiver measured.
    pub fn iperf(
        &self,
        i: usize,
        dir: Direction,
        seconds: u32,
        streams: u32,
    ) -> Result<IperfResult> {
        wait_iperf(self.spawn_iperf(i, dir, seconds, streams)?)
    }

    /// Starts a real Prometheus (Debian's package) in the gateway namespace,
    /// scraping jatah every second, with optional rule files; waits until it
    /// is ready (at most 30 s). It stops with the lab.
    pub fn start_prometheus(&self, rule_files: &[PathBuf]) -> Result<()> {
        let dir = self.dir.join("prometheus");
        std::fs::create_dir_all(dir.join("data"))?;
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n  - job_name: jatah\n    static_configs:\n      - targets: ['{GW_LISTEN}']\n\
             \x20       labels:\n          gateway: lab\n",
            if rules.is_empty() {
                "  []\n".to_string()
            } else {
                rules.concat()
            }
        );
        std::fs::write(dir.join("prometheus.yml"), config)?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        self.gw
            .command("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS_LISTEN}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus (apt-get install prometheus)")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready =
                self.in_gateway(|| client::get(PROMETHEUS_LISTEN.parse()?, "/-/ready", None));
            if matches!(ready, Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "prometheus not ready after 30 s:\n{}",
                    std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Evaluates a PromQL expression now; returns the `data.result` array.
    pub fn prom_query(&self, expr: &str) -> Result<Vec<serde_json::Value>> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let (status, body) =
            self.in_gateway(move || client::get(PROMETHEUS_LISTEN.parse()?, &path, None))?;
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("prometheus: {body}"))?;
        if status != 200 || v["status"] != "success" {
            bail!("query {expr:?} failed: HTTP {status}: {body}");
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Sets OPD `i`'s link (its switch port) down or up: a pulled cable.
    pub fn set_opd_link(&self, i: usize, up: bool) -> Result<()> {
        self.sw.ip([
            "link",
            "set",
            &format!("p{i}"),
            if up { "up" } else { "down" },
        ])?;
        Ok(())
    }
}

/// Statistics of the uplink limit (the root tbf on the Internet side's
/// `wan0`), as `tc -s -j qdisc show` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UplinkQdisc {
    pub(super) sent_bytes: u64,
    dropped_packets: u64,
    backlog_bytes: u64,
}

/// nftables table `family name` in `ns` as `nft list` prints it, None if
/// it does not exist.
pub(super) fn list_table(ns: &NetNs, family: &str, name: &str) -> Result<Option<String>> {
    let out = ns
        .command("nft")
        .args(["list", "table", family, name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Deletes nftables table `family name` in `ns` if it exists.
pub(super) fn delete_table(ns: &NetNs, family: &str, name: &str) -> Result<()> {
    if list_table(ns, family, name)?.is_some() {
        ns.run("nft", ["delete", "table", family, name])?;
    }
    Ok(())
}

/// The root tbf's statistics on `dev` in namespace `ns` (the uplink
/// limit: `wan0` of the Internet side for the download, `up0` of the ISP
/// for the upload); None when the root qdisc is not a tbf (no limit set).
pub(super) fn uplink_qdisc(ns: &str, dev: &str) -> Result<Option<UplinkQdisc>> {
    let out = run_checked(std::process::Command::new("ip").args([
        "netns", "exec", ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev,
    ]))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("tc output: {}", String::from_utf8_lossy(&out.stdout)))?;
    let root = v
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| q["kind"] == "tbf" && (q["root"] == true || q["parent"].is_null()));
    Ok(root.map(|q| UplinkQdisc {
        sent_bytes: q["bytes"].as_u64().unwrap_or(0),
        dropped_packets: q["drops"].as_u64().unwrap_or(0),
        backlog_bytes: q["backlog"].as_u64().unwrap_or(0),
    }))
}

/// Bytes the Internet side's `wan0` has transmitted towards the gateway
/// (the wire, limit or not); None if the link is gone.
fn inet_wan_tx_bytes(inet: &str) -> Option<u64> {
    let out = run_checked(
        std::process::Command::new("ip")
            .args(["-n", inet, "-s", "-j", "link", "show", "dev", "wan0"]),
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["stats64"]["tx"]["bytes"].as_u64()
}

/// HTB drops per class handle ("1:11") on a gateway interface, from
/// `tc -s class show` (whose HTB classes this tc prints as text even with
/// `-j`): a "class htb 1:11 ..." line, then " Sent ... (dropped N, ...".
fn htb_drops(gw: &str, ifname: &str) -> BTreeMap<String, u64> {
    let Ok(out) = run_checked(std::process::Command::new("ip").args([
        "netns", "exec", gw, "tc", "-s", "class", "show", "dev", ifname,
    ])) else {
        return BTreeMap::new();
    };
    let mut drops = BTreeMap::new();
    let mut class = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"class") {
            class = words.get(2).map(|h| h.to_string());
        } else if let (Some(handle), Some(at)) = (&class, line.find("(dropped ")) {
            let n = line[at + "(dropped ".len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok());
            if let Some(n) = n {
                drops.insert(handle.clone(), n);
            }
            class = None;
        }
    }
    drops
}

/// At most this many rows per trace (an hour): the recorder's loop is
/// bounded even if nobody stops it.
const TRACE_MAX_ROWS: u64 = 3600;

/// Records, once a second, what jatah reports (per-OPD 1-s rates, states,
/// the gateway's verdict) next to what the uplink truly delivered (the tbf's
/// and the wire's byte counters), as CSV with a header line: for
/// calibrating the diagnosis against real traffic. Stops (and joins its
/// thread) on Drop or [`TraceRecorder::finish`].
pub struct TraceRecorder {
    stop: Arc<AtomicBool>,
    phase: Arc<Mutex<String>>,
    thread: Option<JoinHandle<Result<u64>>>,
}

impl TraceRecorder {
    /// Sets the `phase` column from the next row on (e.g. "limited: tbf
    /// rate 12mbit burst 16kb latency 5ms"); commas become semicolons.
    pub fn phase(&self, phase: &str) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase.replace(',', ";");
    }

    /// Stops recording; the number of rows written.
    pub fn finish(mut self) -> Result<u64> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the trace recorder panicked"))?,
            None => Ok(0),
        }
    }
}

impl Drop for TraceRecorder {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

/// What the recorder needs of the lab, owned so its thread can hold it.
struct TraceSource {
    gw: String,
    inet: String,
    /// (id, what load the scenario puts on it, its download HTB class "1:xx").
    opds: Vec<(String, String, Option<String>)>,
}

impl Lab {
    /// Starts recording a trace to `path` (see [`TraceRecorder`]).
    /// `demand[i]` describes the load OPD `i` runs (e.g. "iperf3 -R -P 4"),
    /// written in its `*_demand` column.
    pub fn record_trace(&self, path: &Path, demand: &[&str]) -> Result<TraceRecorder> {
        let slots = PinnedCounters::open(self.bpffs()?)?.slots()?;
        let source = TraceSource {
            gw: self.gw.name().to_string(),
            inet: self.inet.name().to_string(),
            opds: self
                .spec
                .opds
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    let class = slots
                        .get(&o.id)
                        .map(|s| tc_class_name(opd_class_minor(*s) as u16));
                    let what = demand.get(i).copied().unwrap_or("none");
                    (o.id.clone(), what.replace(',', ";"), class)
                })
                .collect(),
        };
        let mut file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        writeln!(file, "{}", source.header())?;
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(Mutex::new("start".to_string()));
        let (stop2, phase2) = (stop.clone(), phase.clone());
        let thread = std::thread::spawn(move || -> Result<u64> {
            super::enter_netns(&format!("/run/netns/{}", source.gw))?;
            source.record(&mut file, &stop2, &phase2)
        });
        Ok(TraceRecorder {
            stop,
            phase,
            thread: Some(thread),
        })
    }
}

/// One row's cumulative counters, to turn the next row's into rates.
#[derive(Default)]
struct Previous {
    at: Option<Instant>,
    unclassified: [Option<u64>; 2],
    tbf_sent: Option<u64>,
    wire: Option<u64>,
}

impl TraceSource {
    fn header(&self) -> String {
        let mut h = String::from(
            "t_s,utc,phase,gateway_state,gateway_reason,gateway_download_delivered_bps,\
             opds_sum_download_bps_1s,opds_sum_upload_bps_1s,\
             unclassified_download_bps_since_prev_row,unclassified_upload_bps_since_prev_row,\
             tbf_sent_bytes_total,tbf_sent_bps_since_prev_row,tbf_dropped_packets_total,tbf_backlog_bytes,\
             inet_wan0_tx_bytes_total,inet_wan0_tx_bps_since_prev_row",
        );
        for (id, _, _) in &self.opds {
            let _ = write!(
                h,
                ",{id}_demand,{id}_state,{id}_download_bps_1s,{id}_upload_bps_1s,\
                 {id}_download_ceiling_bps,{id}_download_packets_total,{id}_download_htb_drops_total"
            );
        }
        h
    }

    /// Writes a row every second until `stop` (or [`TRACE_MAX_ROWS`]).
    fn record(
        &self,
        file: &mut std::fs::File,
        stop: &AtomicBool,
        phase: &Mutex<String>,
    ) -> Result<u64> {
        let start = Instant::now();
        let mut prev = Previous::default();
        for k in 0..TRACE_MAX_ROWS {
            let due = start + Duration::from_secs(k);
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(k);
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
            }
            let phase = phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let row = self.row(start, &phase, &mut prev);
            writeln!(file, "{row}")?;
            file.flush()?;
        }
        Ok(TRACE_MAX_ROWS)
    }

    fn row(&self, start: Instant, phase: &str, prev: &mut Previous) -> String {
        let api = |path: &str| -> serde_json::Value {
            match client::get(
                GW_LISTEN.parse().expect("address"),
                path,
                Some(LAB_ADMIN_TOKEN),
            ) {
                Ok((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
                _ => serde_json::Value::Null,
            }
        };
        let g = api("/api/v1/gateway");
        let opds = api("/api/v1/opds");
        let tbf = uplink_qdisc(&self.inet, "wan0").ok().flatten();
        let wire = inet_wan_tx_bytes(&self.inet);
        let drops = htb_drops(&self.gw, "lan0");
        let now = Instant::now();
        let dt = prev.at.map(|p| (now - p).as_secs_f64());
        let rate = |cur: Option<u64>, old: Option<u64>| -> String {
            match (cur, old, dt) {
                (Some(c), Some(o), Some(dt)) if c >= o && dt > 0.0 => {
                    format!("{:.0}", (c - o) as f64 * 8.0 / dt)
                }
                _ => String::new(),
            }
        };
        let num = |v: &serde_json::Value| v.as_u64().map(|n| n.to_string()).unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").replace(',', ";");
        let unclassified = [
            g["download"]["unclassified_bytes_total"].as_u64(),
            g["upload"]["unclassified_bytes_total"].as_u64(),
        ];
        let tbf_sent = tbf.map(|q| q.sent_bytes);
        let mut row = format!(
            "{:.3},{},{phase},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            (now - start).as_secs_f64(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            text(&g["diagnosis"]["state"]),
            text(&g["diagnosis"]["evidence"]["reason"]),
            num(&g["diagnosis"]["evidence"]["download_delivered_bps"]),
            num(&g["download"]["rate"]["last_1s_bps"]),
            num(&g["upload"]["rate"]["last_1s_bps"]),
            rate(unclassified[0], prev.unclassified[0]),
            rate(unclassified[1], prev.unclassified[1]),
            tbf_sent.map(|b| b.to_string()).unwrap_or_default(),
            rate(tbf_sent, prev.tbf_sent),
            tbf.map(|q| q.dropped_packets.to_string())
                .unwrap_or_default(),
            tbf.map(|q| q.backlog_bytes.to_string()).unwrap_or_default(),
            wire.map(|b| b.to_string()).unwrap_or_default(),
            rate(wire, prev.wire),
        );
        let list = opds["opds"].as_array().cloned().unwrap_or_default();
        for (id, demand, class) in &self.opds {
            let o = list
                .iter()
                .find(|o| o["id"] == id.as_str())
                .cloned()
                .unwrap_or_default();
            let d = class.as_ref().and_then(|c| drops.get(c));
            let _ = write!(
                row,
                ",{demand},{},{},{},{},{},{}",
                text(&o["state"]),
                num(&o["download"]["rate"]["last_1s_bps"]),
                num(&o["upload"]["rate"]["last_1s_bps"]),
                num(&o["download"]["ceiling_bps"]),
                num(&o["download"]["packets_total"]),
                d.map(u64::to_string).unwrap_or_default(),
            );
        }
        *prev = Previous {
            at: Some(now),
            unclassified,
            tbf_sent,
            wire,
        };
        row
    }
}
