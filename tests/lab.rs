//! The namespace lab with real traffic: iperf3 through the gateway, jatah
//! running as a real process with its programs and HTB trees in the kernel.
//!
//! Lab tests run one at a time (a shared lock) so they do not compete for
//! the CPU and disturb each other's rates.

mod support;

use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{Lab, LabOpd, LabSpec, wait_iperf};
use jatah::policy::Direction;
use jatah_common::{DOWNLOAD, UPLOAD};
use support::fixtures::dinsos_and_bpbd_lab;
use support::{jatah, one_lab_at_a_time};

fn lab(spec: LabSpec) -> Lab {
    require_root();
    let mut lab = Lab::build(spec).expect("building the lab");
    lab.start_daemon(jatah()).expect("starting jatah");
    lab
}

fn spec(prefix: &str, down: &str, up: &str, nat: bool, opds: Vec<LabOpd>) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        download: down.into(),
        upload: up.into(),
        nat,
        mtu: 1500,
        opds,
    }
}

fn mbit(bps: f64) -> f64 {
    bps / 1e6
}

/// One 10 s TCP run against a 10 Mbit/s ceiling, checking the rate and that
/// jatah's counters agree with iperf3 (payload) and with HTB (delivered).
fn ceiling_holds(lab: &Lab, dir: Direction, iface: &str) {
    let id = "dinsos";
    let i = lab.opd_index(id).unwrap();
    let minor = lab.class_minor(id).unwrap();
    let d = if dir == Direction::Download {
        DOWNLOAD
    } else {
        UPLOAD
    };
    let htb_bytes = |lab: &Lab| {
        lab.class_stats(iface)
            .unwrap()
            .iter()
            .find(|c| c.minor == minor)
            .map(|c| c.bytes)
            .expect("the OPD's HTB class exists")
    };
    let bpf0 = lab.counters().unwrap()[id].bytes[d];
    let htb0 = htb_bytes(lab);
    let r = lab.iperf(i, dir, 10, 1).unwrap();
    // Let the last queued packets leave the HTB class.
    std::thread::sleep(Duration::from_millis(500));
    let bpf = (lab.counters().unwrap()[id].bytes[d] - bpf0) as f64;
    let htb = (htb_bytes(lab) - htb0) as f64;
    let rate = mbit(r.bits_per_second);
    eprintln!(
        "{dir:?}: iperf3 {rate:.2} Mbit/s, {} payload bytes; jatah {bpf} bytes; HTB {htb} bytes",
        r.bytes
    );
    assert!(
        (9.0..=10.3).contains(&rate),
        "{dir:?} rate {rate:.2} Mbit/s outside 9.0..10.3"
    );
    let vs_payload = bpf / r.bytes as f64 - 1.0;
    assert!(
        (-0.03..=0.06).contains(&vs_payload),
        "{dir:?}: jatah counted {:+.2}% against iperf3's payload (allowed -3%..+6%)",
        vs_payload * 100.0
    );
    let vs_htb = bpf / htb - 1.0;
    assert!(
        vs_htb.abs() <= 0.03,
        "{dir:?}: jatah counted {:+.2}% against HTB's class statistics (allowed 3%)",
        vs_htb * 100.0
    );
}

#[test]
fn ceilings_hold_and_counters_agree_through_nat() {
    let _one = one_lab_at_a_time();
    let lab = lab(dinsos_and_bpbd_lab("jt-ceil", true));
    ceiling_holds(&lab, Direction::Download, "lan0");
    ceiling_holds(&lab, Direction::Upload, "wan0");
}

#[test]
fn ceilings_hold_without_nat() {
    let _one = one_lab_at_a_time();
    let lab = lab(dinsos_and_bpbd_lab("jt-nonat", false));
    ceiling_holds(&lab, Direction::Upload, "wan0");
    ceiling_holds(&lab, Direction::Download, "lan0");
}

#[test]
fn guarantees_hold_when_two_opds_saturate_the_gateway() {
    let _one = one_lab_at_a_time();
    let lab = lab(spec(
        "jt-guar",
        "20M",
        "20M",
        true,
        vec![
            LabOpd::new("rsud", "RSUD", ("15M", "20M"), ("15M", "20M")),
            LabOpd::new("disdik", "Dinas Pendidikan", ("5M", "20M"), ("5M", "20M")),
        ],
    ));
    for dir in Direction::all() {
        let a = lab.spawn_iperf(0, dir, 10, 4).unwrap();
        let b = lab.spawn_iperf(1, dir, 10, 4).unwrap();
        let (a, b) = (wait_iperf(a).unwrap(), wait_iperf(b).unwrap());
        let (ra, rb) = (mbit(a.bits_per_second), mbit(b.bits_per_second));
        eprintln!(
            "{dir:?}: rsud {ra:.2} Mbit/s (guaranteed 15), disdik {rb:.2} Mbit/s (guaranteed 5)"
        );
        assert!(
            ra >= 0.9 * 15.0,
            "{dir:?}: rsud got {ra:.2} Mbit/s, under 90% of 15M"
        );
        assert!(
            rb >= 0.9 * 5.0,
            "{dir:?}: disdik got {rb:.2} Mbit/s, under 90% of 5M"
        );
        assert!(
            ra + rb <= 20.0 * 1.03,
            "{dir:?}: together {:.2} Mbit/s exceed the 20M gateway",
            ra + rb
        );
    }
}

#[test]
fn an_opd_borrows_capacity_others_leave_unused() {
    let _one = one_lab_at_a_time();
    let lab = lab(spec(
        "jt-borrow",
        "30M",
        "30M",
        true,
        vec![
            LabOpd::new("kec-waru", "Kecamatan Waru", ("5M", "25M"), ("5M", "25M")),
            LabOpd::new("bapenda", "Bapenda", ("20M", "30M"), ("20M", "30M")),
        ],
    ));
    let r = lab.iperf(0, Direction::Download, 10, 2).unwrap();
    let rate = mbit(r.bits_per_second);
    eprintln!("kec-waru alone: {rate:.2} Mbit/s (guaranteed 5M, ceiling 25M)");
    assert!(
        rate >= 0.85 * 25.0,
        "kec-waru borrowed only up to {rate:.2} Mbit/s"
    );
    assert!(
        rate <= 25.0 * 1.03,
        "kec-waru exceeded its 25M ceiling: {rate:.2}"
    );
}

#[test]
fn a_second_jatah_is_refused_and_the_first_keeps_working() {
    let _one = one_lab_at_a_time();
    let mut lab = lab(dinsos_and_bpbd_lab("jt-second", true));
    let mut second = lab.spawn_jatah(jatah(), "second.log").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the second jatah did not exit");
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(lab.dir().join("second.log")).unwrap();
    eprintln!("second jatah: {status}: {log}");
    assert_eq!(
        status.code(),
        Some(1),
        "the second jatah must fail with exit code 1"
    );
    assert!(log.contains("already running"), "unclear refusal: {log}");
    assert!(lab.daemon_running(), "the first jatah must keep running");
    assert_eq!(lab.http_get("/healthz").unwrap().0, 200);
    // And it still shapes: a short download stays under the 10M ceiling.
    let r = lab.iperf(0, Direction::Download, 3, 1).unwrap();
    assert!(
        mbit(r.bits_per_second) <= 10.3,
        "shaping lost: {:.2}",
        mbit(r.bits_per_second)
    );
}

#[test]
fn status_shows_an_opd_at_its_ceiling_while_it_downloads() {
    let _one = one_lab_at_a_time();
    let lab = lab(dinsos_and_bpbd_lab("jt-status", true));
    let iperf = lab.spawn_iperf(0, Direction::Download, 14, 1).unwrap();
    // The 10 s window is full of traffic after 12 s.
    std::thread::sleep(Duration::from_secs(12));
    let out = lab
        .gw
        .command(jatah())
        .args(["status", "--api", jatah::lab::GW_LISTEN])
        .env("JATAH_TOKEN", jatah::lab::LAB_ADMIN_TOKEN)
        .output()
        .unwrap();
    wait_iperf(iperf).unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    eprintln!("{table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    let row = table
        .lines()
        .find(|l| l.starts_with("dinsos"))
        .expect("dinsos row");
    // id, name (it may hold spaces), state, down guar/ceil, now, %ceil, ...:
    // columns are two or more spaces apart.
    let cells = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    let cols = cells(row);
    assert_eq!(cols[1], "Dinas Sosial", "{row}");
    assert_eq!(cols[2], "saturated", "at its ceiling for 12 s: {row}");
    assert_eq!(cols[3], "5.0/10.0");
    let now: f64 = cols[4].parse().unwrap();
    let pct: f64 = cols[5].parse().unwrap();
    assert!((9.0..=10.6).contains(&now), "download now {now} Mbit/s");
    assert!((90.0..=106.0).contains(&pct), "{pct}% of ceiling");
    let idle = table
        .lines()
        .find(|l| l.starts_with("bpbd"))
        .expect("bpbd row");
    let idle = cells(idle);
    assert_eq!(idle[2], "idle");
    assert_eq!(idle[4], "0.0", "an idle OPD reads 0");
    assert!(table.starts_with("uplink: healthy"), "{table}");

    // Without a token the API refuses, and status says why.
    let out = lab
        .gw
        .command(jatah())
        .args(["status", "--api", jatah::lab::GW_LISTEN])
        .env_remove("JATAH_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

fn lab_namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("jlab-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn jatah_lab_shows_live_rates_and_cleans_up_on_ctrl_c() {
    let _one = one_lab_at_a_time();
    require_root();
    assert!(lab_namespaces().is_empty(), "another lab is running");
    let child = std::process::Command::new(jatah())
        .args(["lab", "--seconds", "30"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Let it print a few tables, then press ctrl-c.
    std::thread::sleep(Duration::from_secs(12));
    assert!(!lab_namespaces().is_empty(), "the lab built its namespaces");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .rev()
        .find(|l| l.starts_with("bappeda"))
        .expect("a rate table with bappeda");
    let down: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    // Every OPD downloads as fast as it can on a 60M uplink: bappeda gets
    // at least its 5M guarantee and never more than its 10M ceiling.
    assert!(
        (0.9 * 5.0..=10.6).contains(&down),
        "bappeda at {down} Mbit/s: {row}"
    );
    assert!(text.contains("removing namespaces"));
    assert!(
        lab_namespaces().is_empty(),
        "namespaces left behind: {:?}",
        lab_namespaces()
    );
}
