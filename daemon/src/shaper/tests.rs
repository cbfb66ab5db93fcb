//! Shaper tests against the real kernel: each builds a veth pair between two
//! fresh network namespaces, drives the shaper from inside the first, and
//! checks the result with iproute2's `tc` (used here only as the witness).

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use super::tc::TC_H_ROOT;
use super::tree::plan;
use super::*;
use crate::lab::netns::{NetNs, require_root};

const DEV: &str = "v0";
const LOCAL: &str = "10.77.0.1";
const PEER: &str = "10.77.0.2";
/// Ethernet + IPv4 + UDP headers: what a UDP payload costs on the qdisc.
const UDP_OVERHEAD: u64 = 14 + 20 + 8;

/// A veth pair: `v0` in the shaper's namespace (the test thread lives
/// there), `v1` in a peer namespace.
struct Lab {
    ns: NetNs,
    _peer: NetNs,
    ifindex: u32,
    shaper: Shaper,
}

impl Lab {
    fn new() -> Lab {
        require_root();
        let ns = NetNs::create("jt-shp").unwrap();
        let peer = NetNs::create("jt-shpp").unwrap();
        for n in [&ns, &peer] {
            // IPv6 neighbour discovery and MLD would add packets to the
            // default class while the tests count bytes.
            n.run(
                "sysctl",
                [
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )
            .unwrap();
        }
        ns.ip([
            "link",
            "add",
            DEV,
            "type",
            "veth",
            "peer",
            "name",
            "v1",
            "netns",
            peer.name(),
        ])
        .unwrap();
        ns.ip(["addr", "add", &format!("{LOCAL}/24"), "dev", DEV])
            .unwrap();
        peer.ip(["addr", "add", &format!("{PEER}/24"), "dev", "v1"])
            .unwrap();
        ns.ip(["link", "set", DEV, "up"]).unwrap();
        peer.ip(["link", "set", "v1", "up"]).unwrap();
        // A permanent neighbour: no ARP exchange among the counted packets.
        let mac = peer.run("cat", ["/sys/class/net/v1/address"]).unwrap();
        let mac = String::from_utf8(mac.stdout).unwrap();
        ns.ip([
            "neigh",
            "replace",
            PEER,
            "lladdr",
            mac.trim(),
            "dev",
            DEV,
            "nud",
            "permanent",
        ])
        .unwrap();
        let ifindex = ns.ifindex(DEV).unwrap();
        ns.enter_current_thread().unwrap();
        let shaper = Shaper::new().unwrap();
        Lab {
            ns,
            _peer: peer,
            ifindex,
            shaper,
        }
    }

    /// `tc -n NS ARGS`, which must succeed.
    fn tc(&self, args: &[&str]) -> String {
        let out = Command::new("tc")
            .args(["-n", self.ns.name()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn classes(&self) -> BTreeMap<String, TcClass> {
        parse_classes(&self.tc(&["-s", "class", "show", "dev", DEV]))
    }

    fn qdiscs(&self) -> Vec<TcQdisc> {
        parse_qdiscs(&self.tc(&["-s", "qdisc", "show", "dev", DEV]))
    }

    /// Sends `count` UDP datagrams of `payload` bytes to the peer with
    /// `skb->priority = 1:minor`, as jatah's classifier would set it,
    /// back to back (a flood) or `pace` apart.
    fn send_udp(&self, minor: u16, count: usize, payload: usize, pace: Option<Duration>) {
        let sock = UdpSocket::bind((LOCAL, 0)).unwrap();
        let prio = jatah_common::htb_priority(u32::from(minor)) as libc::c_int;
        let rc =
            crate::sys::set_socket_option(sock.as_fd(), libc::SOL_SOCKET, libc::SO_PRIORITY, &prio);
        assert!(rc.is_ok(), "SO_PRIORITY: {rc:?}");
        let buf = vec![0x5a; payload];
        for _ in 0..count {
            // A packet the leaf drops still counts as sent (UDP hides the
            // qdisc's verdict unless IP_RECVERR is set).
            sock.send_to(&buf, (PEER, 9)).unwrap();
            if let Some(pace) = pace {
                std::thread::sleep(pace);
            }
        }
    }

    /// Waits until every class has drained its queue.
    fn wait_idle(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = self.shaper.class_stats(self.ifindex).unwrap();
            if stats.iter().all(|s| s.qlen == 0 && s.backlog_bytes == 0) {
                return;
            }
            assert!(Instant::now() < deadline, "queues never drained: {stats:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A class as `tc -s class show` prints it.
#[derive(Debug, Default, Clone, PartialEq)]
struct TcClass {
    parent: String,
    leaf: Option<String>,
    rate: String,
    ceil: String,
    burst: String,
    cburst: String,
    bytes: u64,
    packets: u64,
    dropped: u64,
    overlimits: u64,
}

/// Parses e.g.
/// `class htb 1:11 parent 1:1 leaf 11: prio 0 rate 64Kbit ceil 1500Kbit burst 1608b cburst 1599b`
/// ` Sent 28400 bytes 200 pkt (dropped 0, overlimits 0 requeues 0)`.
fn parse_classes(out: &str) -> BTreeMap<String, TcClass> {
    let mut map = BTreeMap::new();
    let mut current = None;
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.first().copied() {
            Some("class") => {
                let mut c = TcClass::default();
                let mut i = 3;
                while i < t.len() {
                    if t[i] == "root" {
                        c.parent = "root".into();
                        i += 1;
                        continue;
                    }
                    let v = t.get(i + 1).copied().unwrap_or_default().to_string();
                    match t[i] {
                        "parent" => c.parent = v,
                        "leaf" => c.leaf = Some(v),
                        "rate" => c.rate = v,
                        "ceil" => c.ceil = v,
                        "burst" => c.burst = v,
                        "cburst" => c.cburst = v,
                        _ => {}
                    }
                    i += 2;
                }
                current = Some(t[2].to_string());
                map.insert(t[2].to_string(), c);
            }
            Some("Sent") => {
                let c = map.get_mut(current.as_ref().unwrap()).unwrap();
                let num = |s: &str| {
                    s.trim_matches(|ch: char| !ch.is_ascii_digit())
                        .parse()
                        .unwrap()
                };
                c.bytes = num(t[1]);
                c.packets = num(t[3]);
                c.dropped = num(t[6]);
                c.overlimits = num(t[8]);
            }
            _ => {}
        }
    }
    map
}

/// A qdisc as `tc -s qdisc show` prints it.
#[derive(Debug, Clone, PartialEq)]
struct TcQdisc {
    kind: String,
    handle: String,
    /// "root" or the parent class.
    parent: String,
    /// The parameters after the parent (e.g. "limit 5p").
    params: String,
    bytes: u64,
}

/// Parses e.g. `qdisc pfifo 11: parent 1:11 limit 5p` and its Sent line.
fn parse_qdiscs(out: &str) -> Vec<TcQdisc> {
    let mut list: Vec<TcQdisc> = Vec::new();
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.first().copied() {
            Some("qdisc") => {
                let (parent, rest) = if t[3] == "root" {
                    ("root".to_string(), &t[4..])
                } else {
                    (t[4].to_string(), &t[5..])
                };
                list.push(TcQdisc {
                    kind: t[1].into(),
                    handle: t[2].into(),
                    parent,
                    params: rest.join(" "),
                    bytes: 0,
                });
            }
            Some("Sent") => list.last_mut().unwrap().bytes = t[1].parse().unwrap(),
            _ => {}
        }
    }
    list
}

/// A class right under the root class.
fn spec(minor: u16, rate_bps: u64, ceil_bps: u64) -> ClassSpec {
    child(minor, ROOT_CLASS, rate_bps, ceil_bps)
}

/// A class under `parent`.
fn child(minor: u16, parent: u16, rate_bps: u64, ceil_bps: u64) -> ClassSpec {
    ClassSpec {
        minor,
        parent,
        rate_bps,
        ceil_bps,
        prio: 0,
        burst_bytes: 0,
        leaf: None,
    }
}

/// A 300 Mbit/s gateway with the default class at 10M/300M.
fn tree(classes: &[ClassSpec], leaf_limit: u32) -> HtbTree {
    HtbTree {
        capacity_bps: 300_000_000,
        default_class: spec(2, 10_000_000, 300_000_000),
        classes: classes.to_vec(),
        leaf: LeafQdisc::Pfifo,
        leaf_limit,
    }
}

fn keys(map: &BTreeMap<String, TcClass>) -> Vec<&str> {
    map.keys().map(String::as_str).collect()
}

#[test]
fn apply_installs_the_expected_tree() {
    let mut lab = Lab::new();
    let before = lab.qdiscs();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(
        (before[0].kind.as_str(), before[0].parent.as_str()),
        ("noqueue", "root")
    );

    let t = tree(
        &[
            spec(17, 20_000_000, 100_000_000),
            spec(18, 64_000, 1_500_000),
            spec(19, 1_500_000, 3_000_000),
        ],
        100,
    );
    let report = lab.shaper.apply(lab.ifindex, &t).unwrap();
    assert_eq!(
        report,
        ApplyReport {
            root_installed: true,
            created: 5,
            leaves_attached: 4,
            ..Default::default()
        }
    );

    let classes = lab.classes();
    assert_eq!(keys(&classes), ["1:1", "1:11", "1:12", "1:13", "1:2"]);
    let c = |id: &str| {
        let c = &classes[id];
        (
            c.parent.as_str(),
            c.leaf.as_deref(),
            c.rate.as_str(),
            c.ceil.as_str(),
        )
    };
    assert_eq!(c("1:1"), ("root", None, "300Mbit", "300Mbit"));
    assert_eq!(c("1:2"), ("1:1", Some("2:"), "10Mbit", "300Mbit"));
    assert_eq!(c("1:11"), ("1:1", Some("11:"), "20Mbit", "100Mbit"));
    assert_eq!(c("1:12"), ("1:1", Some("12:"), "64Kbit", "1500Kbit"));
    assert_eq!(c("1:13"), ("1:1", Some("13:"), "1500Kbit", "3Mbit"));
    // Bursts are rate/1000 + 1600 bytes: 8 + 1600 and 2500 + 1600 (which
    // tc rounds to KiB when it is within 16 bytes of a multiple).
    assert_eq!(classes["1:12"].burst, "1608b");
    assert_eq!(classes["1:11"].burst, "4Kb");

    let qdiscs = lab.qdiscs();
    let shown: Vec<(&str, &str, &str, &str)> = qdiscs
        .iter()
        .map(|q| {
            (
                q.kind.as_str(),
                q.handle.as_str(),
                q.parent.as_str(),
                q.params.as_str(),
            )
        })
        .collect();
    assert_eq!(shown.len(), 5, "{shown:?}");
    assert_eq!((shown[0].0, shown[0].1, shown[0].2), ("htb", "1:", "root"));
    assert!(shown[0].3.contains("default 0x2"), "{shown:?}");
    for (handle, parent) in [
        ("2:", "1:2"),
        ("11:", "1:11"),
        ("12:", "1:12"),
        ("13:", "1:13"),
    ] {
        assert!(
            shown.contains(&("pfifo", handle, parent, "limit 100p")),
            "no pfifo {handle} under {parent}: {shown:?}"
        );
    }

    // The same tree again changes nothing.
    let again = lab.shaper.apply(lab.ifindex, &t).unwrap();
    assert!(again.is_noop(), "{again}");
    assert_eq!(again.unchanged, 5);
    assert_eq!(lab.classes(), classes);
}

#[test]
fn reapply_changes_classes_in_place_and_keeps_their_counters() {
    let mut lab = Lab::new();
    let first = tree(
        &[
            spec(17, 10_000_000, 20_000_000),
            spec(18, 10_000_000, 20_000_000),
            spec(19, 10_000_000, 20_000_000),
        ],
        1000,
    );
    lab.shaper.apply(lab.ifindex, &first).unwrap();
    // A 1000-packet queue holds each burst: nothing is dropped.
    lab.send_udp(17, 200, 100, None);
    lab.send_udp(18, 150, 100, None);
    lab.send_udp(19, 100, 200, None);
    lab.wait_idle();
    let before = lab.classes();
    assert_eq!(before["1:11"].bytes, 200 * (100 + UDP_OVERHEAD));
    assert_eq!(before["1:11"].packets, 200);
    assert_eq!(before["1:13"].bytes, 100 * (200 + UDP_OVERHEAD));
    let htb_bytes = lab.qdiscs()[0].bytes;
    assert!(htb_bytes >= 200 * 142 + 150 * 142 + 100 * 242);

    // 1:11 changes rate, 1:12 goes, 1:13 stays as it is, 1:14 is new.
    let second = tree(
        &[
            spec(17, 5_000_000, 15_000_000),
            spec(19, 10_000_000, 20_000_000),
            spec(20, 1_000_000, 2_000_000),
        ],
        1000,
    );
    let report = lab.shaper.apply(lab.ifindex, &second).unwrap();
    assert_eq!(
        report,
        ApplyReport {
            root_installed: false,
            created: 1,
            changed: 1,
            unchanged: 3,
            deleted: 1,
            leaves_attached: 1,
            leaves_changed: 0,
        }
    );

    let after = lab.classes();
    assert_eq!(keys(&after), ["1:1", "1:11", "1:13", "1:14", "1:2"]);
    let changed = &after["1:11"];
    assert_eq!(
        (changed.rate.as_str(), changed.ceil.as_str()),
        ("5Mbit", "15Mbit")
    );
    assert_eq!(
        changed.bytes, before["1:11"].bytes,
        "counters of a changed class survive"
    );
    assert_eq!(changed.packets, 200);
    assert_eq!(changed.leaf.as_deref(), Some("11:"));
    assert_eq!(
        after["1:13"], before["1:13"],
        "an untouched class stays as it was"
    );
    assert_eq!(after["1:2"], before["1:2"]);
    assert_eq!(
        (
            after["1:14"].rate.as_str(),
            after["1:14"].leaf.as_deref(),
            after["1:14"].bytes
        ),
        ("1Mbit", Some("14:"), 0)
    );
    let qdiscs = lab.qdiscs();
    assert!(!qdiscs.iter().any(|q| q.handle == "12:"), "{qdiscs:?}");
    assert!(
        qdiscs
            .iter()
            .any(|q| q.handle == "14:" && q.parent == "1:14")
    );
    // The root qdisc was not recreated: its counter kept counting.
    assert_eq!(qdiscs[0].handle, "1:");
    assert!(qdiscs[0].bytes >= htb_bytes);

    // The changed class still shapes and counts.
    lab.send_udp(17, 50, 100, None);
    lab.wait_idle();
    assert_eq!(
        lab.classes()["1:11"].bytes,
        before["1:11"].bytes + 50 * (100 + UDP_OVERHEAD)
    );
}

#[test]
fn class_stats_agree_with_tc_and_count_drops() {
    let mut lab = Lab::new();
    assert!(matches!(
        lab.shaper.class_stats(lab.ifindex),
        Err(ShaperError::NotInstalled { .. })
    ));
    let t = tree(
        &[spec(17, 64_000, 64_000), spec(18, 10_000_000, 10_000_000)],
        5,
    );
    lab.shaper.apply(lab.ifindex, &t).unwrap();
    // A flood into a 64 kbit/s class with a 5-packet queue.
    lab.send_udp(17, 200, 1000, None);
    // Paced well below 10 Mbit/s: never more than one packet queued.
    lab.send_udp(18, 50, 100, Some(Duration::from_millis(1)));
    lab.wait_idle();

    let stats = lab.shaper.class_stats(lab.ifindex).unwrap();
    let tc = lab.classes();
    let minors: Vec<u16> = stats.iter().map(|s| s.minor).collect();
    assert_eq!(minors, [1, 2, 17, 18]);
    for s in &stats {
        let c = &tc[&format!("1:{:x}", s.minor)];
        assert_eq!(
            (s.bytes, s.packets, s.drops, s.overlimits),
            (c.bytes, c.packets, c.dropped, c.overlimits),
            "class 1:{:x}",
            s.minor
        );
    }
    let tiny = stats.iter().find(|s| s.minor == 17).unwrap();
    assert_eq!(tiny.packets + tiny.drops, 200, "{tiny:?}");
    assert!(
        tiny.drops >= 150,
        "the flood must overflow the leaf: {tiny:?}"
    );
    assert_eq!(tiny.bytes, tiny.packets * (1000 + UDP_OVERHEAD));
    assert!(tiny.overlimits > 0, "{tiny:?}");
    let fast = stats.iter().find(|s| s.minor == 18).unwrap();
    assert_eq!(
        (fast.bytes, fast.packets, fast.drops),
        (50 * (100 + UDP_OVERHEAD), 50, 0)
    );
    // The root class carries both.
    let root = stats.iter().find(|s| s.minor == 1).unwrap();
    assert!(root.bytes >= tiny.bytes + fast.bytes, "{root:?}");
}

#[test]
fn remove_restores_the_default_and_leaves_foreign_roots_alone() {
    let mut lab = Lab::new();
    let pristine = lab.tc(&["qdisc", "show", "dev", DEV]);
    assert!(pristine.starts_with("qdisc noqueue 0: root"), "{pristine}");
    assert!(!lab.shaper.remove(lab.ifindex).unwrap());

    lab.shaper
        .apply(lab.ifindex, &tree(&[spec(17, 1_000_000, 2_000_000)], 10))
        .unwrap();
    assert!(lab.shaper.remove(lab.ifindex).unwrap());
    assert_eq!(lab.tc(&["qdisc", "show", "dev", DEV]), pristine);
    assert_eq!(lab.tc(&["class", "show", "dev", DEV]), "");
    assert!(!lab.shaper.remove(lab.ifindex).unwrap());

    // Someone else's root, even with jatah's handle, is not jatah's.
    lab.tc(&[
        "qdisc", "add", "dev", DEV, "root", "handle", "1:", "tbf", "rate", "1mbit", "burst", "10k",
        "latency", "50ms",
    ]);
    assert!(!lab.shaper.remove(lab.ifindex).unwrap());
    let foreign = lab.tc(&["qdisc", "show", "dev", DEV]);
    assert!(foreign.starts_with("qdisc tbf 1: root"), "{foreign}");
    assert!(matches!(
        lab.shaper.class_stats(lab.ifindex),
        Err(ShaperError::NotInstalled { .. })
    ));
}

#[test]
fn apply_takes_over_foreign_setups() {
    let mut lab = Lab::new();
    let t = tree(&[spec(17, 1_000_000, 2_000_000)], 10);
    let expect_ours = |lab: &Lab| {
        let qdiscs = lab.qdiscs();
        let summary: Vec<(&str, &str, &str)> = qdiscs
            .iter()
            .map(|q| (q.kind.as_str(), q.handle.as_str(), q.parent.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("htb", "1:", "root"),
                ("pfifo", "2:", "1:2"),
                ("pfifo", "11:", "1:11")
            ]
        );
        assert_eq!(keys(&lab.classes()), ["1:1", "1:11", "1:2"]);
    };

    // A tbf holding jatah's handle 1: (replace would fail: other kind).
    lab.tc(&[
        "qdisc", "add", "dev", DEV, "root", "handle", "1:", "tbf", "rate", "1mbit", "burst", "10k",
        "latency", "50ms",
    ]);
    let report = lab.shaper.apply(lab.ifindex, &t).unwrap();
    assert!(report.root_installed);
    expect_ours(&lab);

    // A root under another handle.
    lab.tc(&["qdisc", "del", "dev", DEV, "root"]);
    lab.tc(&[
        "qdisc", "add", "dev", DEV, "root", "handle", "5:", "htb", "default", "2",
    ]);
    let report = lab.shaper.apply(lab.ifindex, &t).unwrap();
    assert!(report.root_installed);
    expect_ours(&lab);

    // An htb 1: with another default class cannot be changed in place.
    lab.tc(&["qdisc", "del", "dev", DEV, "root"]);
    lab.tc(&[
        "qdisc", "add", "dev", DEV, "root", "handle", "1:", "htb", "default", "3",
    ]);
    let report = lab.shaper.apply(lab.ifindex, &t).unwrap();
    assert!(report.root_installed);
    expect_ours(&lab);

    // An htb 1: with jatah's default but a different shape: 1:5 at the
    // top, 1:11 under it. Both are in the wrong place; children go first.
    lab.tc(&["qdisc", "del", "dev", DEV, "root"]);
    lab.tc(&[
        "qdisc", "add", "dev", DEV, "root", "handle", "1:", "htb", "default", "2",
    ]);
    lab.tc(&[
        "class", "add", "dev", DEV, "parent", "1:", "classid", "1:5", "htb", "rate", "5mbit",
    ]);
    lab.tc(&[
        "class", "add", "dev", DEV, "parent", "1:5", "classid", "1:11", "htb", "rate", "1mbit",
    ]);
    let report = lab.shaper.apply(lab.ifindex, &t).unwrap();
    assert!(!report.root_installed);
    assert_eq!((report.deleted, report.created), (2, 3), "{report}");
    expect_ours(&lab);
}

#[test]
fn apply_works_on_an_interface_that_was_never_up() {
    // Until an interface first comes up its root is the built-in noop
    // qdisc, which the kernel does not even report.
    let mut lab = Lab::new();
    lab.ns
        .ip(["link", "add", "v2", "type", "veth", "peer", "name", "v3"])
        .unwrap();
    let ifindex = lab.ns.ifindex("v2").unwrap();
    assert_eq!(lab.tc(&["qdisc", "show", "dev", "v2"]), "");
    let report = lab
        .shaper
        .apply(ifindex, &tree(&[spec(17, 1_000_000, 2_000_000)], 10))
        .unwrap();
    assert!(report.root_installed);
    lab.ns.ip(["link", "set", "v2", "up"]).unwrap();
    let shown = lab.tc(&["qdisc", "show", "dev", "v2"]);
    assert!(shown.starts_with("qdisc htb 1: root"), "{shown}");
    assert_eq!(lab.shaper.class_stats(ifindex).unwrap().len(), 3);
}

#[test]
fn leaves_are_changed_in_place_or_replaced() {
    let mut lab = Lab::new();
    let classes = [
        spec(17, 1_000_000, 2_000_000),
        spec(18, 1_000_000, 2_000_000),
        spec(19, 1_000_000, 2_000_000),
    ];
    lab.shaper.apply(lab.ifindex, &tree(&classes, 100)).unwrap();

    // A new limit is set on the existing leaves.
    let report = lab.shaper.apply(lab.ifindex, &tree(&classes, 50)).unwrap();
    assert_eq!(
        report,
        ApplyReport {
            unchanged: 5,
            leaves_changed: 4,
            ..Default::default()
        }
    );
    let limits: Vec<String> = lab.qdiscs()[1..].iter().map(|q| q.params.clone()).collect();
    assert_eq!(limits, ["limit 50p"; 4]);

    // Foreign leaves: 1:12 gets a bfifo under jatah's handle 12:, and
    // 1:11 a bfifo under 13: (the handle 1:13's leaf should have).
    lab.tc(&[
        "qdisc", "del", "dev", DEV, "parent", "1:12", "handle", "12:",
    ]);
    lab.tc(&[
        "qdisc", "add", "dev", DEV, "parent", "1:12", "handle", "12:", "bfifo",
    ]);
    lab.tc(&[
        "qdisc", "del", "dev", DEV, "parent", "1:13", "handle", "13:",
    ]);
    lab.tc(&[
        "qdisc", "replace", "dev", DEV, "parent", "1:11", "handle", "13:", "bfifo",
    ]);
    let report = lab.shaper.apply(lab.ifindex, &tree(&classes, 50)).unwrap();
    assert_eq!(
        (report.leaves_attached, report.unchanged),
        (3, 5),
        "{report}"
    );
    let leaves: Vec<(String, String, String)> = lab.qdiscs()[1..]
        .iter()
        .map(|q| (q.kind.clone(), q.handle.clone(), q.parent.clone()))
        .collect();
    let mut leaves = leaves;
    leaves.sort();
    let expected: Vec<(String, String, String)> = [
        ("11:", "1:11"),
        ("12:", "1:12"),
        ("13:", "1:13"),
        ("2:", "1:2"),
    ]
    .iter()
    .map(|(h, p)| ("pfifo".to_string(), h.to_string(), p.to_string()))
    .collect();
    assert_eq!(leaves, expected);
}

#[test]
fn rates_beyond_32_bits_use_the_64_bit_attributes() {
    let mut lab = Lab::new();
    let t = HtbTree {
        capacity_bps: 100_000_000_000,
        default_class: spec(2, 1_000_000_000, 100_000_000_000),
        classes: vec![spec(17, 40_000_000_000, 100_000_000_000)],
        leaf: LeafQdisc::Pfifo,
        leaf_limit: 1000,
    };
    lab.shaper.apply(lab.ifindex, &t).unwrap();
    let classes = lab.classes();
    assert_eq!(
        (classes["1:1"].rate.as_str(), classes["1:1"].ceil.as_str()),
        ("100Gbit", "100Gbit")
    );
    assert_eq!(
        (classes["1:11"].rate.as_str(), classes["1:11"].ceil.as_str()),
        ("40Gbit", "100Gbit")
    );
    assert!(lab.shaper.apply(lab.ifindex, &t).unwrap().is_noop());
}

#[test]
fn errors_name_the_interface_operation_and_kernel_reason() {
    let mut lab = Lab::new();
    let t = tree(&[spec(17, 1_000_000, 2_000_000)], 10);

    let err = lab.shaper.apply(999_999, &t).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
    let text = err.to_string();
    assert!(text.contains("ifindex 999999"), "{text}");
    assert!(text.contains("read the root qdisc"), "{text}");
    assert!(text.contains("No such device"), "{text}");
    assert_eq!(
        lab.shaper.remove(999_999).unwrap_err().errno(),
        Some(libc::ENODEV)
    );
    assert_eq!(
        lab.shaper.class_stats(999_999).unwrap_err().errno(),
        Some(libc::ENODEV)
    );

    // An invalid tree is refused before anything is touched.
    let dup = tree(&[spec(17, 1_000_000, 2_000_000), spec(17, 1, 2)], 10);
    let err = lab.shaper.apply(lab.ifindex, &dup).unwrap_err();
    assert!(matches!(err, ShaperError::InvalidTree { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "invalid HTB tree for ifindex {}: class 1:11 (minor 17) is given twice",
            lab.ifindex
        )
    );
    let low = tree(&[spec(18, 2_000_000, 1_000_000)], 10);
    let err = lab.shaper.apply(lab.ifindex, &low).unwrap_err();
    assert!(
        err.to_string()
            .contains("ceiling 1000000 bit/s is below its rate"),
        "{err}"
    );
    let root_minor = tree(&[spec(1, 1_000_000, 1_000_000)], 10);
    assert!(matches!(
        lab.shaper.apply(lab.ifindex, &root_minor),
        Err(ShaperError::InvalidTree { .. })
    ));
    // So is a leaf kind this kernel lacks.
    let fq_codel = HtbTree {
        leaf: LeafQdisc::FqCodel,
        ..t.clone()
    };
    let err = lab.shaper.apply(lab.ifindex, &fq_codel).unwrap_err();
    assert!(matches!(err, ShaperError::InvalidTree { .. }), "{err}");
    assert!(err.to_string().contains("no fq_codel qdisc"), "{err}");
    assert!(
        lab.tc(&["qdisc", "show", "dev", DEV])
            .starts_with("qdisc noqueue")
    );

    // The kernel's extended ack is carried along: HTB refuses to delete
    // a class that has children.
    lab.shaper.apply(lab.ifindex, &t).unwrap();
    let err = lab.shaper.delete_class(lab.ifindex, 1).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
    assert_eq!(err.kernel_message(), Some("HTB class in use"));
    assert_eq!(
        err.to_string(),
        format!(
            "delete class 1:1 on ifindex {} failed: Device or resource busy (os error 16); \
             kernel says: HTB class in use",
            lab.ifindex
        )
    );
}

#[test]
fn resolve_leaf_falls_back_to_pfifo_without_touching_the_interface() {
    let mut lab = Lab::new();
    let pristine = lab.tc(&["qdisc", "show", "dev", DEV]);
    // The probe can answer yes (the kinds this kernel has) ...
    for kind in ["pfifo", "htb", "tbf"] {
        assert!(lab.shaper.probe_kind(lab.ifindex, kind).unwrap(), "{kind}");
    }
    // ... and no.
    assert!(!lab.shaper.probe_kind(lab.ifindex, "no_such_qdisc").unwrap());
    assert_eq!(lab.tc(&["qdisc", "show", "dev", DEV]), pristine);

    lab.shaper
        .apply(lab.ifindex, &tree(&[spec(17, 1_000_000, 2_000_000)], 10))
        .unwrap();
    let installed = (
        lab.tc(&["qdisc", "show", "dev", DEV]),
        lab.tc(&["class", "show", "dev", DEV]),
    );
    let auto = [LeafQdisc::FqCodel, LeafQdisc::Cake, LeafQdisc::Pfifo];
    assert_eq!(
        lab.shaper.resolve_leaf(lab.ifindex, &auto),
        LeafQdisc::Pfifo
    );
    assert_eq!(
        lab.shaper
            .resolve_leaf(lab.ifindex, &[LeafQdisc::FqCodel, LeafQdisc::Cake]),
        LeafQdisc::Pfifo
    );
    assert_eq!(lab.shaper.resolve_leaf(lab.ifindex, &[]), LeafQdisc::Pfifo);
    // Answers are cached (TOOLCHAIN.md: this kernel has neither).
    assert_eq!(lab.shaper.leaf_support, [None, Some(false), Some(false), None]);
    assert!(
        !lab.shaper
            .supports_leaf(lab.ifindex, LeafQdisc::Cake)
            .unwrap()
    );
    assert!(
        lab.shaper
            .supports_leaf(lab.ifindex, LeafQdisc::Pfifo)
            .unwrap()
    );
    assert_eq!(
        (
            lab.tc(&["qdisc", "show", "dev", DEV]),
            lab.tc(&["class", "show", "dev", DEV]),
        ),
        installed
    );
}

#[test]
fn tree_validation_and_names() {
    assert_eq!(leaf_handle(0x11), 0x0011_0000);
    assert_eq!(class_id(0x11), 0x0001_0011);
    assert_eq!(ClassName(17).to_string(), "class 1:11 (minor 17)");
    assert_eq!(ClassName(2).to_string(), "class 1:2");
    assert_eq!(Handle(0x8001_0002).to_string(), "8001:2");
    assert_eq!(
        Op::AttachLeaf(17, LeafQdisc::Pfifo).to_string(),
        "attach pfifo leaf qdisc 11: to class 1:11 (minor 17)"
    );
    assert_eq!(LeafQdisc::from_kind("fq_codel"), Some(LeafQdisc::FqCodel));
    assert_eq!(LeafQdisc::from_kind("sfq"), None);

    let highest_opd = jatah_common::opd_class_minor(jatah_common::MAX_OPDS - 1) as u16;
    let t = tree(&[spec(highest_opd, 8, 8), spec(17, 1000, 1000)], 1);
    let want = plan(1, &t).unwrap();
    let order: Vec<u16> = want.iter().map(|w| w.minor).collect();
    assert_eq!(order, [1, 2, 17, highest_opd]);
    assert_eq!(want[0].parent, TC_H_ROOT);
    assert!(want[1..].iter().all(|w| w.parent == class_id(1)));

    let over = tree(&[spec(MAX_CLASS_MINOR + 1, 1000, 1000)], 1);
    assert!(plan(1, &over).is_err());
    let zero = tree(&[spec(17, 0, 1000)], 1);
    assert!(
        plan(1, &zero)
            .unwrap_err()
            .to_string()
            .contains("below the 1 byte/s")
    );
    assert!(plan(1, &tree(&[], 0)).is_err());
}

#[test]
fn a_thousand_opds_span_multipart_dumps() {
    let mut lab = Lab::new();
    let classes: Vec<ClassSpec> = (0..1000u16)
        .map(|slot| spec(slot + 16, 64_000 + u64::from(slot) * 8, 10_000_000))
        .collect();
    let report = lab.shaper.apply(lab.ifindex, &tree(&classes, 50)).unwrap();
    assert_eq!((report.created, report.leaves_attached), (1002, 1001));
    // 1002 classes do not fit in one dump datagram.
    let stats = lab.shaper.class_stats(lab.ifindex).unwrap();
    assert_eq!(stats.len(), 1002);
    assert_eq!(lab.classes().len(), 1002);
    assert_eq!(lab.qdiscs().len(), 1 + 1001);
    let again = lab.shaper.apply(lab.ifindex, &tree(&classes, 50)).unwrap();
    assert!(again.is_noop(), "{again}");
    assert_eq!(again.unchanged, 1002);
    // Every other OPD leaves.
    let half: Vec<ClassSpec> = classes.iter().copied().step_by(2).collect();
    let report = lab.shaper.apply(lab.ifindex, &tree(&half, 50)).unwrap();
    assert_eq!((report.deleted, report.unchanged), (500, 502), "{report}");
    assert_eq!(lab.shaper.class_stats(lab.ifindex).unwrap().len(), 502);
}

/// A group class's minor, as gateway.rs chooses them (0x6000 and up).
const GROUP: u16 = 0x6000;
const OTHER_GROUP: u16 = 0x6001;

#[test]
fn lanes_get_their_priority_and_their_own_leaves() {
    let mut lab = Lab::new();
    let (opd, interactive, bulk) = (17u16, 0xc001u16, 0x8001u16);
    let lanes = |bulk_leaf: Leaf| {
        tree(
            &[
                spec(opd, 10_000_000, 20_000_000),
                ClassSpec {
                    prio: 0,
                    leaf: Some(Leaf {
                        kind: LeafQdisc::Pfifo,
                        limit: 64,
                    }),
                    burst_bytes: 65_536,
                    ..child(interactive, opd, 500_000, 20_000_000)
                },
                ClassSpec {
                    prio: 1,
                    leaf: Some(bulk_leaf),
                    ..child(bulk, opd, 9_500_000, 20_000_000)
                },
            ],
            1000,
        )
    };
    let bfifo = |limit| Leaf {
        kind: LeafQdisc::Bfifo,
        limit,
    };
    let t = lanes(bfifo(65_536));
    lab.shaper.apply(lab.ifindex, &t).unwrap();
    let out = lab.tc(&["class", "show", "dev", DEV]);
    assert!(out.contains("class htb 1:c001 parent 1:11 leaf c001: prio 0"), "{out}");
    assert!(out.contains("class htb 1:8001 parent 1:11 leaf 8001: prio 1"), "{out}");
    // The interactive lane's burst as asked; the bulk's one tick of its
    // rate and an MTU (9,500,000 / 8 / 1000 + 1600 = 2,787 bytes, less
    // the rounding to whole ticks).
    let classes = lab.classes();
    assert_eq!(classes["1:c001"].burst, "64Kb");
    assert_eq!(classes["1:8001"].burst, "2785b");
    let qdiscs = lab.qdiscs();
    let leaf = |h: &str| qdiscs.iter().find(|q| q.handle == h).unwrap();
    assert_eq!(
        (leaf("8001:").kind.as_str(), leaf("8001:").params.as_str()),
        ("bfifo", "limit 64Kb")
    );
    assert_eq!(
        (leaf("c001:").kind.as_str(), leaf("c001:").params.as_str()),
        ("pfifo", "limit 64p")
    );
    assert!(!qdiscs.iter().any(|q| q.handle == "11:"), "the OPD class is inner");
    assert!(lab.shaper.apply(lab.ifindex, &t).unwrap().is_noop());

    // A byte limit changes in place; a flood beyond it is dropped in the
    // bulk lane, and both lanes' traffic is the OPD's.
    let small = lanes(bfifo(3_000));
    let r = lab.shaper.apply(lab.ifindex, &small).unwrap();
    assert_eq!((r.leaves_changed, r.changed, r.created), (1, 0, 0), "{r}");
    lab.send_udp(bulk, 200, 1000, None);
    lab.send_udp(interactive, 20, 100, None);
    lab.wait_idle();
    let stats = lab.shaper.class_stats(lab.ifindex).unwrap();
    let of = |m: u16| *stats.iter().find(|s| s.minor == m).unwrap();
    assert!(of(bulk).drops > 0, "{:?}", of(bulk));
    assert_eq!(of(interactive).drops, 0);
    assert_eq!(of(interactive).packets, 20);
    assert_eq!(of(opd).packets, of(bulk).packets + of(interactive).packets);

    // Lanes off: the OPD class is a leaf again.
    let plain = tree(&[spec(opd, 10_000_000, 20_000_000)], 1000);
    let r = lab.shaper.apply(lab.ifindex, &plain).unwrap();
    assert_eq!((r.deleted, r.leaves_attached), (2, 1), "{r}");
    let qdiscs = lab.qdiscs();
    assert!(qdiscs.iter().any(|q| q.handle == "11:" && q.kind == "pfifo"), "{qdiscs:?}");
}

#[test]
fn nested_classes_are_created_parents_first_and_inner_classes_get_no_leaf() {
    let mut lab = Lab::new();
    // The children are listed before their parent: apply orders them.
    let t = tree(
        &[
            child(17, GROUP, 5_000_000, 20_000_000),
            child(18, GROUP, 5_000_000, 20_000_000),
            spec(19, 10_000_000, 50_000_000),
            spec(GROUP, 10_000_000, 20_000_000),
        ],
        100,
    );
    let report = lab.shaper.apply(lab.ifindex, &t).unwrap();
    assert_eq!(
        report,
        ApplyReport {
            root_installed: true,
            created: 6,
            leaves_attached: 4,
            ..Default::default()
        }
    );
    let classes = lab.classes();
    assert_eq!(
        keys(&classes),
        ["1:1", "1:11", "1:12", "1:13", "1:2", "1:6000"]
    );
    let c = |id: &str| {
        let c = &classes[id];
        (
            c.parent.as_str(),
            c.leaf.as_deref(),
            c.rate.as_str(),
            c.ceil.as_str(),
        )
    };
    assert_eq!(c("1:6000"), ("1:1", None, "10Mbit", "20Mbit"));
    assert_eq!(c("1:11"), ("1:6000", Some("11:"), "5Mbit", "20Mbit"));
    assert_eq!(c("1:12"), ("1:6000", Some("12:"), "5Mbit", "20Mbit"));
    assert_eq!(c("1:13"), ("1:1", Some("13:"), "10Mbit", "50Mbit"));
    let qdiscs = lab.qdiscs();
    assert!(
        !qdiscs
            .iter()
            .any(|q| q.parent == "1:6000" || q.handle == "6000:"),
        "an inner class has no leaf qdisc: {qdiscs:?}"
    );
    assert_eq!(qdiscs.len(), 5, "{qdiscs:?}");

    // Traffic of the members passes through the group's class.
    lab.send_udp(17, 100, 100, None);
    lab.send_udp(18, 50, 100, None);
    lab.wait_idle();
    let classes = lab.classes();
    assert_eq!(classes["1:6000"].bytes, 150 * (100 + UDP_OVERHEAD));

    let again = lab.shaper.apply(lab.ifindex, &t).unwrap();
    assert!(again.is_noop(), "{again}");
    assert_eq!(again.unchanged, 6);
    assert_eq!(lab.classes(), classes);
}

#[test]
fn a_group_changes_in_place_and_only_moved_classes_are_recreated() {
    let mut lab = Lab::new();
    let first = tree(
        &[
            spec(GROUP, 10_000_000, 20_000_000),
            child(17, GROUP, 4_000_000, 20_000_000),
            child(18, GROUP, 4_000_000, 20_000_000),
            spec(19, 10_000_000, 50_000_000),
        ],
        1000,
    );
    lab.shaper.apply(lab.ifindex, &first).unwrap();
    lab.send_udp(17, 200, 100, None);
    lab.send_udp(18, 150, 100, None);
    lab.send_udp(19, 100, 200, None);
    lab.wait_idle();
    let before = lab.classes();
    assert_eq!(before["1:12"].packets, 150);

    // The group's rates change, 1:12 leaves it for the root class; 1:11
    // and 1:13 stay as they are.
    let second = tree(
        &[
            spec(GROUP, 12_000_000, 25_000_000),
            child(17, GROUP, 4_000_000, 20_000_000),
            spec(18, 4_000_000, 20_000_000),
            spec(19, 10_000_000, 50_000_000),
        ],
        1000,
    );
    let report = lab.shaper.apply(lab.ifindex, &second).unwrap();
    assert_eq!(
        report,
        ApplyReport {
            root_installed: false,
            created: 1,
            changed: 1,
            unchanged: 4,
            deleted: 1,
            leaves_attached: 1,
            leaves_changed: 0,
        }
    );
    let after = lab.classes();
    let group = &after["1:6000"];
    assert_eq!(
        (group.rate.as_str(), group.ceil.as_str()),
        ("12Mbit", "25Mbit")
    );
    assert_eq!(
        (group.bytes, group.packets),
        (before["1:6000"].bytes, before["1:6000"].packets),
        "a group changed in place keeps its counters"
    );
    assert_eq!(
        after["1:11"], before["1:11"],
        "a member that stays is untouched"
    );
    assert_eq!(
        after["1:13"], before["1:13"],
        "a class outside the group too"
    );
    assert_eq!(after["1:2"], before["1:2"]);
    let moved = &after["1:12"];
    assert_eq!(
        (moved.parent.as_str(), moved.leaf.as_deref(), moved.packets),
        ("1:1", Some("12:"), 0),
        "the moved class is created anew under its new parent"
    );

    // A new group takes 1:13 in; the old group is dissolved (1:11 goes
    // to the root class), leaving it empty: it becomes a leaf.
    let third = tree(
        &[
            spec(GROUP, 12_000_000, 25_000_000),
            spec(17, 4_000_000, 20_000_000),
            spec(18, 4_000_000, 20_000_000),
            spec(OTHER_GROUP, 10_000_000, 50_000_000),
            child(19, OTHER_GROUP, 10_000_000, 50_000_000),
        ],
        1000,
    );
    let report = lab.shaper.apply(lab.ifindex, &third).unwrap();
    // Deleted: 1:11 and 1:13, created: 1:6001 and both again. The emptied
    // group is changed: as a leaf its quantum counts, and HTB kept the one
    // from before its rate changed (an inner class ignores the quantum).
    assert_eq!(
        (
            report.deleted,
            report.created,
            report.unchanged,
            report.changed,
            report.leaves_attached
        ),
        (2, 3, 3, 1, 3),
        "{report}"
    );
    let classes = lab.classes();
    assert_eq!(classes["1:13"].parent, "1:6001");
    assert_eq!(classes["1:11"].parent, "1:1");
    assert_eq!(classes["1:12"], after["1:12"], "1:12 did not move again");
    assert_eq!(classes["1:6001"].leaf, None);
    assert_eq!(
        classes["1:6000"].leaf.as_deref(),
        Some("6000:"),
        "an empty group is a leaf and gets a leaf qdisc"
    );
    assert!(lab.shaper.apply(lab.ifindex, &third).unwrap().is_noop());

    // Back to a flat tree: the groups go, their members move up.
    let flat = tree(
        &[
            spec(17, 4_000_000, 20_000_000),
            spec(18, 4_000_000, 20_000_000),
            spec(19, 10_000_000, 50_000_000),
        ],
        1000,
    );
    let report = lab.shaper.apply(lab.ifindex, &flat).unwrap();
    assert_eq!((report.deleted, report.created), (3, 1), "{report}");
    assert_eq!(keys(&lab.classes()), ["1:1", "1:11", "1:12", "1:13", "1:2"]);
}

#[test]
fn nesting_is_validated_before_anything_is_touched() {
    let err = |classes: &[ClassSpec]| plan(1, &tree(classes, 10)).unwrap_err().to_string();
    assert!(
        err(&[child(17, 0x6000, 1000, 1000)])
            .contains("class 1:11 (minor 17): its parent class 1:6000 (minor 24576) is neither"),
        "{}",
        err(&[child(17, 0x6000, 1000, 1000)])
    );
    assert!(err(&[child(17, 2, 1000, 1000)]).contains("the default class cannot be a parent"));
    let cycle = err(&[child(17, 18, 1000, 1000), child(18, 17, 1000, 1000)]);
    assert!(cycle.contains("or form a cycle"), "{cycle}");
    // Seven levels below the root class is HTB's limit.
    let chain = |n: u16| -> Vec<ClassSpec> {
        (0..n)
            .map(|i| {
                child(
                    100 + i,
                    if i == 0 { ROOT_CLASS } else { 99 + i },
                    1000,
                    1000,
                )
            })
            .collect()
    };
    assert!(plan(1, &tree(&chain(7), 10)).is_ok());
    assert!(err(&chain(8)).contains("deeper than HTB's 7 levels"));
    let mut t = tree(&[], 10);
    t.default_class.parent = 17;
    assert!(
        plan(1, &t)
            .unwrap_err()
            .to_string()
            .contains("must sit right under the root class")
    );

    // Parents first, by depth, then minor; only childless classes get leaves.
    let t = tree(
        &[
            child(17, 0x6000, 1000, 1000),
            spec(0x6000, 1000, 1000),
            spec(18, 1000, 1000),
            spec(0x6001, 1000, 1000),
        ],
        10,
    );
    let want = plan(1, &t).unwrap();
    let order: Vec<(u16, bool)> = want.iter().map(|w| (w.minor, w.leaf.is_some())).collect();
    assert_eq!(
        order,
        [
            (1, false),
            (2, true),
            (18, true),
            (0x6000, false),
            (0x6001, true),
            (17, true)
        ]
    );
    assert_eq!(want[5].parent, class_id(0x6000));
}

/// One bits-to-bytes rule: an odd rate gives the HTB class the gateway
/// builds the same byte rate the policy reports (rounded up, never less).
#[test]
fn odd_rates_convert_to_the_same_bytes_in_policy_and_htb_class() {
    use crate::policy::Direction;
    let source = "[gateway]\nwan = \"eth0\"\nlan = [\"eth1\"]\n\
                  download = \"100M\"\nupload = \"50M\"\n\n\
                  [[opd]]\nid = \"a\"\nname = \"a\"\nsubnets = [\"10.20.1.0/24\"]\n\
                  download = { guaranteed = \"10000001\", ceiling = \"20000001\" }\n\
                  upload = { guaranteed = \"5M\", ceiling = \"10M\" }\n";
    let policy = crate::policy::parse(source, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    let allocation = policy.opds[0].allocation(Direction::Download);
    assert_eq!(allocation.guaranteed.bits_per_second(), 10_000_001);
    assert_eq!(allocation.guaranteed.bytes_per_second(), 1_250_001);

    let slots = BTreeMap::from([("a".to_string(), 0)]);
    let tree =
        crate::gateway::tree_for_slots(&policy, &slots, Direction::Download, LeafQdisc::Pfifo);
    let want = plan(1, &tree).unwrap();
    let minor = jatah_common::opd_class_minor(0) as u16;
    let class = want.iter().find(|w| w.minor == minor).unwrap();
    assert_eq!(class.params.rate, allocation.guaranteed.bytes_per_second());
    assert_eq!(class.params.ceil, allocation.ceiling.bytes_per_second());
    assert_eq!(class.params.ceil, 2_500_001);
}
