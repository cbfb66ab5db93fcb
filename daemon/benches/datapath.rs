//! Data path benchmarks (root): classifier cost per packet against an empty
//! classifier as the number of prefixes grows, and forwarding throughput
//! through the lab gateway with jatah's programs attached and detached over
//! the same HTB tree. Prints numbers; never fails on timing.
//!
//!   cargo bench --bench datapath [-- --rounds N --quick]

use std::path::Path;
use std::time::Duration;

use jatah::datapath::{Datapath, OpdPrefixes, Prefix, SkbContext};
use jatah::lab::{Lab, LabOpd, LabSpec};
use jatah::netns::BpffsMount;
use jatah::policy::Direction;
use jatah_common::program_names;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `n` prefixes spread over OPDs (at most 4 per OPD): /24s under 10.0.0.0/8.
fn prefixes(n: usize) -> Vec<OpdPrefixes> {
    let per_opd = n.div_ceil(jatah_common::MAX_OPDS as usize - 1).max(1);
    let mut opds = Vec::new();
    for i in 0..n {
        let p = Prefix::V4([10, (i >> 8) as u8, i as u8, 0], 24);
        if i % per_opd == 0 {
            opds.push(OpdPrefixes {
                id: format!("o{}", opds.len()),
                prefixes: Vec::new(),
            });
        }
        opds.last_mut().unwrap().prefixes.push(p);
    }
    opds
}

fn frame(dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 51, 100, 1]);
    f.extend_from_slice(&dst);
    let mut tcp = [0u8; 20];
    tcp[12] = 5 << 4;
    f.extend_from_slice(&tcp);
    f.extend_from_slice(&[0u8; 20]);
    f
}

fn classifier(rounds: usize, sizes: &[usize]) {
    let bpffs = BpffsMount::new("jt-bench").unwrap();
    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
    const REPEAT: u32 = 1_000_000;
    println!(
        "## Classifier cost per packet (BPF_PROG_TEST_RUN, {REPEAT} runs each, median of {rounds} rounds)\n"
    );
    println!("| prefixes | empty classifier ns | jatah_dl ns | ratio |");
    println!("|---:|---:|---:|---:|");
    for &n in sizes {
        let opds = prefixes(n);
        dp.sync_opds(&opds).unwrap();
        // An address inside the last prefix (the deepest trie path).
        let last = n - 1;
        let f = frame([10, (last >> 8) as u8, last as u8, 7]);
        let ctx = SkbContext::forwarded();
        let mut empty = Vec::new();
        let mut jatah = Vec::new();
        for _ in 0..rounds {
            let (_, _, e) = dp.test_run("jatah_empty", &f, &ctx, REPEAT).unwrap();
            let (_, out, j) = dp
                .test_run(program_names::DOWNLOAD, &f, &ctx, REPEAT)
                .unwrap();
            assert_ne!(
                out.priority,
                jatah_common::htb_priority(jatah_common::DEFAULT_CLASS_MINOR)
            );
            empty.push(e.as_nanos() as f64);
            jatah.push(j.as_nanos() as f64);
        }
        let (e, j) = (median(empty), median(jatah));
        println!("| {n} | {e:.0} | {j:.0} | {:.2} |", j / e);
    }
    println!();
}

/// A TCP frame to or from 10.0.0.7 with the given flags, between the OPD
/// host's port `opd_port` and the Internet host's port 443.
fn tcp(from_opd: bool, flags: u8, payload: usize, opd_port: u16) -> Vec<u8> {
    let mut f = frame([10, 0, 0, 7]);
    let (sport, dport) = if from_opd {
        let (src, dst) = (f[26..30].to_vec(), f[30..34].to_vec());
        f[26..30].copy_from_slice(&dst);
        f[30..34].copy_from_slice(&src);
        (opd_port, 443)
    } else {
        (443, opd_port)
    };
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[47] = flags;
    f.truncate(54);
    f.extend(std::iter::repeat_n(0u8, payload));
    f
}

/// Handshake timing cost per packet: tracking off, on for a connection in
/// the sample, on for one outside it, at the default sampling rate.
fn rtt_cost(rounds: usize) {
    let bpffs = BpffsMount::new("jt-bench").unwrap();
    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
    dp.sync_opds(&prefixes(30)).unwrap();
    dp.set_mark_mask(0x7fff_0000).unwrap();
    let sampling = jatah::policy::DiagnosisSettings::default().rtt_sampling;
    let shift = sampling.trailing_zeros();
    dp.set_rtt_sampling(shift).unwrap();
    let flags = shift << jatah_common::RTT_SAMPLE_SHIFT_POS;
    let port = |sampled: bool| {
        (40000..41000u16)
            .find(|p| jatah_common::handshake_sampled(*p, 443, flags) == sampled)
            .unwrap()
    };
    let (timed, untimed) = (port(true), port(false));
    const REPEAT: u32 = 1_000_000;
    let cases: [(&str, &str, bool, u8, usize); 5] = [
        (
            "SYN from an OPD (LAN ingress)",
            program_names::UPLOAD_MARK,
            true,
            0x02,
            0,
        ),
        (
            "SYN-ACK to an OPD (LAN egress)",
            program_names::DOWNLOAD,
            false,
            0x12,
            0,
        ),
        (
            "ACK from an OPD (LAN ingress)",
            program_names::UPLOAD_MARK,
            true,
            0x10,
            0,
        ),
        (
            "data to an OPD (LAN egress)",
            program_names::DOWNLOAD,
            false,
            0x10,
            1400,
        ),
        (
            "data from an OPD (LAN ingress)",
            program_names::UPLOAD_MARK,
            true,
            0x10,
            1400,
        ),
    ];
    println!(
        "## Handshake RTT tracking: cost per packet, off vs on (BPF_PROG_TEST_RUN, {REPEAT} runs, median of {rounds} rounds, 1 connection in {sampling} timed)\n"
    );
    println!(
        "| packet | off ns | on, timed connection ns | on, other connection ns | on, average ns | average/off |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let ctx = SkbContext::forwarded();
    for (name, prog, from_opd, tcp_flags, payload) in cases {
        let timed_frame = tcp(from_opd, tcp_flags, payload, timed);
        let untimed_frame = tcp(from_opd, tcp_flags, payload, untimed);
        let (mut off, mut on_timed, mut on_untimed) = (Vec::new(), Vec::new(), Vec::new());
        let ns = |dp: &Datapath, f: &[u8]| {
            dp.test_run(prog, f, &ctx, REPEAT).unwrap().2.as_nanos() as f64
        };
        for _ in 0..rounds {
            dp.set_rtt_tracking(false).unwrap();
            off.push(ns(&dp, &untimed_frame));
            dp.set_rtt_tracking(true).unwrap();
            on_timed.push(ns(&dp, &timed_frame));
            on_untimed.push(ns(&dp, &untimed_frame));
        }
        let (a, t, u) = (median(off), median(on_timed), median(on_untimed));
        let avg = (t + u * f64::from(sampling - 1)) / f64::from(sampling);
        println!(
            "| {name} | {a:.0} | {t:.0} | {u:.0} | {avg:.0} | {:.2} |",
            avg / a
        );
    }
    println!();
}

fn forwarding(rounds: usize, seconds: u32) {
    let jatah = Path::new(env!("CARGO_BIN_EXE_jatah"));
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-bfwd".into(),
        download: "40G".into(),
        upload: "40G".into(),
        nat: true,
        mtu: 1500,
        opds: vec![LabOpd::new(
            "dinkes",
            "Dinas Kesehatan",
            ("1G", "40G"),
            ("1G", "40G"),
        )],
    })
    .unwrap();
    lab.start_daemon(jatah).unwrap();
    let links = lab.bpffs().unwrap().join("jatah/v1/links");
    let mut attached = Vec::new();
    let mut detached = Vec::new();
    for r in 0..rounds {
        // jatah's programs attached (the daemon pinned its links).
        let a = lab
            .iperf(0, Direction::Download, seconds, 1)
            .unwrap()
            .bits_per_second;
        // Detach: stop jatah and remove its link pins; the HTB tree stays.
        lab.stop_daemon().unwrap();
        for e in std::fs::read_dir(&links).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        let d = lab
            .iperf(0, Direction::Download, seconds, 1)
            .unwrap()
            .bits_per_second;
        lab.start_daemon(jatah).unwrap();
        eprintln!(
            "round {r}: attached {:.2} Gbit/s, detached {:.2} Gbit/s",
            a / 1e9,
            d / 1e9
        );
        attached.push(a);
        detached.push(d);
    }
    let ratios: Vec<f64> = attached.iter().zip(&detached).map(|(a, d)| a / d).collect();
    println!(
        "## Forwarding throughput through the lab gateway (iperf3 TCP download, {seconds} s, median of {rounds} rounds)\n"
    );
    println!("| programs | Gbit/s |");
    println!("|---|---:|");
    println!("| attached (jatah) | {:.2} |", median(attached) / 1e9);
    println!(
        "| detached (same HTB tree) | {:.2} |",
        median(detached) / 1e9
    );
    println!(
        "\nratio attached/detached (median of per-round ratios): {:.3}\n",
        median(ratios)
    );
}

fn main() {
    jatah::netns::require_root();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let sizes: &[usize] = if quick {
        &[10, 1_000]
    } else {
        &[10, 1_000, 10_000, 60_000]
    };
    if args.iter().any(|a| a == "--rtt-only") {
        rtt_cost(rounds);
        return;
    }
    classifier(rounds, sizes);
    rtt_cost(rounds);
    forwarding(rounds, if quick { 2 } else { 5 });
}
