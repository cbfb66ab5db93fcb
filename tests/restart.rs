//! The gateway keeps shaping and counting when jatah stops, crashes or
//! restarts, and `jatah down` removes exactly what jatah created.

mod support;

use std::time::Duration;

use jatah::lab::netns::require_root;
use jatah::lab::{Lab, wait_iperf};
use jatah::policy::Direction;
use jatah_common::DOWNLOAD;
use support::fixtures::dinsos_and_bpbd_lab;
use support::{jatah, one_lab_at_a_time};

fn lab(prefix: &str) -> Lab {
    require_root();
    let mut lab = Lab::build(dinsos_and_bpbd_lab(prefix, true)).unwrap();
    lab.start_daemon(jatah()).unwrap();
    lab
}

fn mbit(bps: f64) -> f64 {
    bps / 1e6
}

#[test]
fn killed_with_sigkill_the_kernel_keeps_shaping_and_the_next_start_adopts_everything() {
    let _one = one_lab_at_a_time();
    let mut lab = lab("jt-rskill");
    let slots_before = jatah::datapath::PinnedCounters::open(lab.bpffs().unwrap())
        .unwrap()
        .slots()
        .unwrap();
    let iperf = lab.spawn_iperf(0, Direction::Download, 8, 1).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let pid = lab.daemon_pid().unwrap();
    // SAFETY: killing our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!lab.daemon_running());
    let counted_at_kill = lab.counters().unwrap()["dinsos"].bytes[DOWNLOAD];
    let r = wait_iperf(iperf).unwrap();
    let counted_after = lab.counters().unwrap()["dinsos"].bytes[DOWNLOAD];
    eprintln!(
        "jatah killed mid-run: iperf3 {:.2} Mbit/s; counter {counted_at_kill} -> {counted_after}",
        mbit(r.bits_per_second)
    );
    assert!(
        mbit(r.bits_per_second) <= 10.3,
        "still held to the 10M ceiling"
    );
    assert!(
        counted_after > counted_at_kill + 4_000_000,
        "the kernel kept counting"
    );

    // The next start adopts slots and counters: nothing resets.
    lab.start_daemon(jatah()).unwrap();
    let pins = jatah::datapath::PinnedCounters::open(lab.bpffs().unwrap()).unwrap();
    assert_eq!(pins.slots().unwrap(), slots_before, "same slots");
    assert!(pins.by_opd().unwrap()["dinsos"].bytes[DOWNLOAD] >= counted_after);
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("jatah_opd_download_bytes_total{opd=\"dinsos\"}"))
        .unwrap();
    let value: f64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert!(
        value >= counted_after as f64,
        "Prometheus sees no reset: {line}"
    );
    assert!(
        lab.daemon_log().contains("adopted OPD slots"),
        "the start says it adopted: {}",
        lab.daemon_log()
    );
    // And it still shapes.
    let r = lab.iperf(0, Direction::Download, 3, 1).unwrap();
    assert!(mbit(r.bits_per_second) <= 10.3);
}

#[test]
fn a_normal_stop_leaves_the_allocations_in_force() {
    let _one = one_lab_at_a_time();
    let mut lab = lab("jt-rsstop");
    lab.stop_daemon().unwrap();
    assert!(lab.daemon_log().contains("the data path stays in force"));
    let r = lab.iperf(0, Direction::Download, 4, 1).unwrap();
    eprintln!("after a normal stop: {:.2} Mbit/s", mbit(r.bits_per_second));
    assert!(
        mbit(r.bits_per_second) <= 10.3,
        "still shaped after jatah stopped"
    );
}

#[test]
fn a_restart_under_traffic_loses_no_packet_and_keeps_the_class_counters() {
    let _one = one_lab_at_a_time();
    let mut lab = lab("jt-rsudp");
    let class_bytes = |lab: &Lab| {
        let minor = lab.class_minor("bpbd").unwrap();
        lab.class_stats("lan0")
            .unwrap()
            .into_iter()
            .find(|c| c.minor == minor)
            .map(|c| c.bytes)
            .unwrap()
    };
    // Steady UDP both ways through bpbd's classes (50M ceilings), 1200-byte
    // datagrams: iperf3 counts every one that does not arrive.
    let down = lab
        .spawn_iperf_udp(1, Direction::Download, 10, "8M")
        .unwrap();
    let up = lab.spawn_iperf_udp(1, Direction::Upload, 10, "8M").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let before = class_bytes(&lab);
    lab.stop_daemon().unwrap();
    lab.start_daemon(jatah()).unwrap();
    let after = class_bytes(&lab);
    let (down_packets, down_lost) = jatah::lab::wait_iperf_udp(down).unwrap();
    let (up_packets, up_lost) = jatah::lab::wait_iperf_udp(up).unwrap();
    eprintln!(
        "restart mid-stream: download {down_lost}/{down_packets} lost, upload {up_lost}/{up_packets} lost; \
         HTB class bytes {before} -> {after}"
    );
    assert!(down_packets > 5_000 && up_packets > 5_000);
    assert_eq!((down_lost, up_lost), (0, 0), "no datagram lost");
    assert!(
        after > before,
        "the class lived through the restart: its counters went on"
    );
    assert!(lab.daemon_log().contains("adopted OPD slots"));
}

fn tc(lab: &Lab, args: &[&str]) -> String {
    String::from_utf8_lossy(&lab.gw.run("tc", args).unwrap().stdout).into_owned()
}

#[test]
fn down_removes_what_jatah_created_and_nothing_else() {
    let _one = one_lab_at_a_time();
    let mut lab = lab("jt-rsdown");
    // Something of someone else's: a qdisc on the WAN side's ingress.
    lab.gw
        .run("tc", ["qdisc", "add", "dev", "wan0", "ingress"])
        .unwrap();
    let nft_before = lab.gw.run("nft", ["list", "ruleset"]).unwrap().stdout;
    assert!(tc(&lab, &["qdisc", "show", "dev", "lan0"]).contains("htb 1:"));
    let bpffs = lab.bpffs().unwrap().to_path_buf();
    // While jatah runs, down refuses and removes nothing.
    let down = |lab: &Lab| {
        lab.gw
            .command(jatah())
            .args(["down", "--policy"])
            .arg(&lab.policy_path)
            .arg("--bpffs")
            .arg(&bpffs)
            .arg("--run-dir")
            .arg(lab.dir().join("run"))
            .output()
            .unwrap()
    };
    let refused = down(&lab);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("a jatah is running"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(tc(&lab, &["qdisc", "show", "dev", "lan0"]).contains("htb 1:"));
    lab.stop_daemon().unwrap();
    let out = down(&lab);
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    for dev in ["lan0", "wan0"] {
        let q = tc(&lab, &["qdisc", "show", "dev", dev]);
        assert!(!q.contains("htb"), "{dev} still has jatah's tree: {q}");
        let f = tc(&lab, &["filter", "show", "dev", dev, "egress"]);
        assert!(!f.contains("jatah"), "{dev}: {f}");
    }
    assert!(
        tc(&lab, &["qdisc", "show", "dev", "wan0"]).contains("ingress"),
        "someone else's qdisc stays"
    );
    assert_eq!(
        lab.gw.run("nft", ["list", "ruleset"]).unwrap().stdout,
        nft_before,
        "NAT untouched"
    );
    assert!(!bpffs.join("jatah").exists(), "pins removed");
    // No jatah program is attached any more: traffic flows unshaped.
    let r = lab.iperf(0, Direction::Download, 3, 1).unwrap();
    assert!(
        mbit(r.bits_per_second) > 20.0,
        "unshaped after down: {:.2}",
        mbit(r.bits_per_second)
    );
    let out = lab.gw.run("bpftool", ["net", "show"]).unwrap();
    let net = String::from_utf8_lossy(&out.stdout);
    assert!(
        !net.contains("jatah"),
        "bpftool still sees jatah's programs: {net}"
    );
}
