//! The capacity-drop scenarios' impairments (issue 14), for tests and
//! benchmarks only: the uplink limited or lossy in either direction, one
//! OPD's LAN losing packets, and a far server behind its own slow path
//! while the rest of the Internet is fine. This kernel has no netem, so a
//! lower rate is a `tbf` (a small burst and a short latency polices, a
//! longer latency is a queue) and random loss is an nftables rule with
//! `numgen random`.
//!
//! Where each one acts:
//! - download limit: the root tbf of the Internet side's `wan0` (towards
//!   the ISP and the gateway); upload limit: the root tbf of the ISP
//!   bridge's `up0` (towards the Internet). Neither touches the gateway,
//!   where jatah's own qdiscs live.
//! - WAN loss: the ISP bridge drops what arrives from the Internet on its
//!   `up0` (download); the Internet side drops what it receives on its
//!   `wan0` (upload). Both on the wire: a drop in a sender's own output
//!   path is not loss to its TCP.
//! - LAN loss: netdev ingress hooks on OPD `i`'s `eth0` (what the gateway
//!   sends it) and on its switch port `p(i)` (what it sends), so the loss
//!   is on the wire both ways, as a bad cable's.

use std::process::{Child, Stdio};

use anyhow::{Result, bail};

use super::netns::NetNs;
use super::testkit::{LOSS_TABLE, delete_table, list_table, uplink_qdisc};
use super::{Lab, iperf_port};
use crate::policy::Direction;

/// The far server's address: a host on the Internet side's other network,
/// reached through the Internet namespace (which routes to it).
pub const FAR_ADDR: &str = "203.0.113.1";
/// The Internet side's address on the far server's network.
const FAR_ROUTER: &str = "203.0.113.254";

/// nftables tables the impairments put in the lab's namespaces (so they go
/// with them).
const WAN_LOSS_UP_TABLE: &str = "jatah_lab_wan_loss_up";
const LAN_LOSS_TABLE: &str = "jatah_lab_lan_loss";

/// The bytes of the loss chain's last rule, the bare counter after the
/// drop: `counter packets P bytes B`, alone or after an interface match.
fn passed_bytes(listing: &str) -> Option<u64> {
    let rule = listing
        .lines()
        .map(str::trim)
        .rfind(|l| l.contains("counter packets") && !l.contains("drop"))?;
    let mut words = rule.split_whitespace();
    words.find(|w| *w == "bytes")?;
    words.next()?.parse().ok()
}

fn check_percent(percent: u32) -> Result<()> {
    if percent > 100 {
        bail!("loss of {percent} % is not a percentage");
    }
    Ok(())
}

impl Lab {
    /// Where the uplink limit of `dir` sits: (namespace, interface).
    fn limit_point(&self, dir: Direction) -> (&NetNs, &'static str) {
        match dir {
            Direction::Download => (&self.inet, "wan0"),
            Direction::Upload => (&self.isp, "up0"),
        }
    }

    /// Limits the uplink in `dir` with `tc qdisc replace ... root tbf rate
    /// RATE burst BURST latency LATENCY` (see [`Lab::limit_uplink`], the
    /// download case).
    pub fn limit_uplink_toward(
        &self,
        dir: Direction,
        rate: &str,
        burst: &str,
        latency: &str,
    ) -> Result<()> {
        let (ns, dev) = self.limit_point(dir);
        ns.run(
            "tc",
            [
                "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", burst,
                "latency", latency,
            ],
        )?;
        Ok(())
    }

    /// An ISP policing `dir` to `rate` (16 kB burst, 5 ms queue).
    pub fn police_uplink_toward(&self, dir: Direction, rate: &str) -> Result<()> {
        self.limit_uplink_toward(dir, rate, "16kb", "5ms")
    }

    /// A congested ISP: `dir` limited to `rate` behind a queue of
    /// `latency` (32 kB burst).
    pub fn queue_uplink_toward(&self, dir: Direction, rate: &str, latency: &str) -> Result<()> {
        self.limit_uplink_toward(dir, rate, "32kb", latency)
    }

    /// Removes the limit of `dir` (nothing to do if none is set).
    pub fn restore_uplink_toward(&self, dir: Direction) -> Result<()> {
        let (ns, dev) = self.limit_point(dir);
        if uplink_qdisc(ns.name(), dev)?.is_some() {
            ns.run("tc", ["qdisc", "del", "dev", dev, "root"])?;
        }
        Ok(())
    }

    /// Bytes the limit of `dir` has sent since it was set (Ethernet frames
    /// as tc counts them); None while no limit is set.
    pub fn uplink_sent_bytes_toward(&self, dir: Direction) -> Result<Option<u64>> {
        let (ns, dev) = self.limit_point(dir);
        Ok(uplink_qdisc(ns.name(), dev)?.map(|q| q.sent_bytes))
    }

    /// Random loss of `percent` % on the uplink in `dir` (download: see
    /// [`Lab::wan_loss`]; upload: the Internet side drops what arrives on
    /// its `wan0`). With `spare_icmp` only TCP is dropped. Replaces the
    /// loss set before in that direction.
    pub fn wan_loss_toward(&self, dir: Direction, percent: u32, spare_icmp: bool) -> Result<()> {
        if dir == Direction::Download {
            return self.wan_loss(percent, spare_icmp);
        }
        check_percent(percent)?;
        delete_table(&self.inet, "inet", WAN_LOSS_UP_TABLE)?;
        let only_tcp = if spare_icmp { "meta l4proto tcp " } else { "" };
        let rules = format!(
            "table inet {WAN_LOSS_UP_TABLE} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  \
             iifname \"wan0\" {only_tcp}numgen random mod 100 < {percent} counter drop\n  \
             iifname \"wan0\" counter\n }}\n}}\n"
        );
        let path = self.dir().join("wan-loss-up.nft");
        std::fs::write(&path, rules)?;
        self.inet.run("nft", ["-f", &path.display().to_string()])?;
        Ok(())
    }

    /// Bytes the WAN loss of `dir` let through since it was set (what the
    /// lossy uplink delivered; the rule after the drop counts them), None
    /// while no loss is set in that direction.
    pub fn wan_loss_passed_bytes(&self, dir: Direction) -> Result<Option<u64>> {
        let (ns, family, table) = match dir {
            Direction::Download => (&self.isp, "netdev", LOSS_TABLE),
            Direction::Upload => (&self.inet, "inet", WAN_LOSS_UP_TABLE),
        };
        Ok(list_table(ns, family, table)?.and_then(|l| passed_bytes(&l)))
    }

    /// Removes the WAN loss of both directions.
    pub fn clear_wan_loss_both(&self) -> Result<()> {
        self.clear_wan_loss()?;
        delete_table(&self.inet, "inet", WAN_LOSS_UP_TABLE)
    }

    /// OPD `i`'s LAN loses `percent` % of the packets each way (a bad cable
    /// or connector): netdev ingress rules on its `eth0` and on its switch
    /// port. Replaces the loss set before on that LAN.
    pub fn lan_loss(&self, i: usize, percent: u32) -> Result<()> {
        check_percent(percent)?;
        self.clear_lan_loss(i)?;
        let port = format!("p{i}");
        for (ns, dev, file) in [
            (&self.opds[i], "eth0", format!("lan-loss-{i}-in.nft")),
            (&self.sw, port.as_str(), format!("lan-loss-{i}-out.nft")),
        ] {
            let rules = format!(
                "table netdev {LAN_LOSS_TABLE} {{\n chain ingress {{\n  type filter hook ingress device \"{dev}\" priority 0; policy accept;\n  \
                 numgen random mod 100 < {percent} counter drop\n }}\n}}\n"
            );
            let path = self.dir().join(file);
            std::fs::write(&path, rules)?;
            ns.run("nft", ["-f", &path.display().to_string()])?;
        }
        Ok(())
    }

    /// Removes the loss [`Lab::lan_loss`] set on OPD `i`'s LAN.
    pub fn clear_lan_loss(&self, i: usize) -> Result<()> {
        delete_table(&self.opds[i], "netdev", LAN_LOSS_TABLE)?;
        delete_table(&self.sw, "netdev", LAN_LOSS_TABLE)
    }

    /// Builds the far server once: a namespace at [`FAR_ADDR`] behind the
    /// Internet side (which routes to it), every OPD's bulk iperf3 servers
    /// on it, and its path slowed both ways by a tbf of `rate` with a
    /// `latency` queue. The rest of the Internet stays as fast as before.
    /// Called again, it only sets the new rate and latency.
    pub fn start_far_server(&mut self, rate: &str, latency: &str) -> Result<()> {
        if self.far.is_none() {
            let far = NetNs::create(&format!("{}-far", self.spec.prefix))?;
            let inet = &self.inet;
            inet.ip([
                "link", "add", "far0", "type", "veth", "peer", "name", "eth0", "netns",
                far.name(),
            ])?;
            inet.ip(["addr", "add", &format!("{FAR_ROUTER}/24"), "dev", "far0"])?;
            inet.ip(["link", "set", "far0", "up"])?;
            inet.run("sysctl", ["-qw", "net.ipv4.ip_forward=1"])?;
            far.ip(["addr", "add", &format!("{FAR_ADDR}/24"), "dev", "eth0"])?;
            far.ip(["link", "set", "eth0", "up"])?;
            far.ip(["route", "add", "default", "via", FAR_ROUTER])?;
            for i in 0..self.opds.len() {
                for dir in Direction::all() {
                    let port = iperf_port(i, dir, 0).to_string();
                    far.spawn_quiet("iperf3", ["-s", "-p", &port, "-B", FAR_ADDR])?;
                }
            }
            self.far = Some(far);
        }
        let far = self.far.as_ref().expect("made above");
        for (ns, dev) in [(&self.inet, "far0"), (far, "eth0")] {
            ns.run(
                "tc",
                [
                    "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "32kb",
                    "latency", latency,
                ],
            )?;
        }
        Ok(())
    }

    /// A bulk iperf3 transfer from OPD `i` with the far server (started by
    /// [`Lab::start_far_server`]), `args` added; its JSON report and errors
    /// are piped (`wait_iperf` reads them).
    pub fn spawn_iperf_far(
        &self,
        i: usize,
        dir: Direction,
        seconds: u32,
        args: &[&str],
    ) -> Result<Child> {
        if self.far.is_none() {
            bail!("the far server has not been started");
        }
        Ok(self
            .iperf_command_to(FAR_ADDR, i, dir, seconds, 0)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }
}

#[cfg(test)]
mod tests {
    use super::passed_bytes;

    #[test]
    fn the_pass_counter_is_the_rule_after_the_drop() {
        let down = "table netdev jatah_lab_wan_loss {\n\tchain ingress {\n\t\ttype filter hook ingress device \"up0\" priority filter; policy accept;\n\t\tnumgen random mod 100 < 3 counter packets 31 bytes 46810 drop\n\t\tcounter packets 1002 bytes 1513020\n\t}\n}\n";
        assert_eq!(passed_bytes(down), Some(1_513_020));
        let up = "table inet jatah_lab_wan_loss_up {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tiifname \"wan0\" numgen random mod 100 < 1 counter packets 5 bytes 7240 drop\n\t\tiifname \"wan0\" counter packets 498 bytes 721104\n\t}\n}\n";
        assert_eq!(passed_bytes(up), Some(721_104));
        // A table from before the pass counter: nothing to read.
        let old = "table netdev t {\n\tchain ingress {\n\t\tnumgen random mod 100 < 3 counter packets 31 bytes 46810 drop\n\t}\n}\n";
        assert_eq!(passed_bytes(old), None);
    }
}
