//! What only tests and benchmarks do with a lab: break it (links, routers,
//! the uplink, the gateway's interfaces), measure it (iperf3 results, HTB
//! classes, a real Prometheus) and read jatah's view of it. Built with the
//! `testkit` feature only, so `jatah lab` and the shipped binary carry none
//! of it; the items are re-exported from [`crate::lab`].

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use jatah_common::{HTB_MAJOR, htb_class_id, opd_class_minor};

use super::{GW_LISTEN, GW_STATUS_PORT, GW_WAN_ADDR, LAB_ADMIN_TOKEN, Lab};
use crate::cli::client;
use crate::datapath::PinnedCounters;
use crate::lab::netns::run_checked;
use crate::policy::Direction;
use crate::shaper::{ClassStats, Shaper};

/// Where the lab's Prometheus listens inside the gateway namespace.
pub const PROMETHEUS_LISTEN: &str = "127.0.0.1:9090";

/// The nftables table [`Lab::wan_loss`] puts in the Internet namespace.
const LOSS_TABLE: &str = "jatah_lab_wan_loss";

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
    /// Deletes the gateway's WAN interface (its peer in the Internet
    /// namespace goes with it).
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
        Ok(uplink_qdisc(self.inet.name())?.map(|q| q.sent_bytes))
    }

    /// Random loss on the uplink: the Internet side drops `percent` % of
    /// what it sends towards the gateway (nftables, `numgen random mod 100
    /// < percent drop` on output to `wan0`: the iperf3 servers and the
    /// probed "ISP router" live there). With `spare_icmp` only TCP is
    /// dropped, as an ISP whose routers answer pings while the data path
    /// loses packets. Replaces any loss set before; the table lives in the
    /// lab's Internet namespace, so it goes with the lab.
    pub fn wan_loss(&self, percent: u32, spare_icmp: bool) -> Result<()> {
        if percent > 100 {
            bail!("loss of {percent} % is not a percentage");
        }
        self.clear_wan_loss()?;
        let only_tcp = if spare_icmp { "meta l4proto tcp " } else { "" };
        let rules = format!(
            "table inet {LOSS_TABLE} {{\n chain output {{\n  type filter hook output priority 0; policy accept;\n  \
             oifname \"wan0\" {only_tcp}numgen random mod 100 < {percent} counter drop\n }}\n}}\n"
        );
        let path = self.dir().join("wan-loss.nft");
        std::fs::write(&path, rules)?;
        self.inet.run("nft", ["-f", &path.display().to_string()])?;
        Ok(())
    }

    /// Removes the loss [`Lab::wan_loss`] set (nothing to do if none).
    pub fn clear_wan_loss(&self) -> Result<()> {
        let out = self
            .inet
            .command("nft")
            .args(["list", "table", "inet", LOSS_TABLE])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if out.success() {
            self.inet
                .run("nft", ["delete", "table", "inet", LOSS_TABLE])?;
        }
        Ok(())
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
struct UplinkQdisc {
    sent_bytes: u64,
}

/// The root tbf's statistics on `wan0` in namespace `inet`; None when the
/// root qdisc is not a tbf (no limit set).
fn uplink_qdisc(inet: &str) -> Result<Option<UplinkQdisc>> {
    let out = run_checked(std::process::Command::new("ip").args([
        "netns", "exec", inet, "tc", "-s", "-j", "qdisc", "show", "dev", "wan0",
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
    }))
}
