//! Data path benchmarks (root): classifier cost per packet against an empty
//! classifier as the number of prefixes grows, the cost of handshake RTT
//! tracking, and forwarding throughput through the lab gateway with
//! jatah's programs attached and detached over the same HTB tree. Prints
//! numbers; never fails on timing. The measuring code lives in
//! `jatah::bench`, shared with `cargo bench --bench compare`.
//!
//!   cargo bench --bench datapath [-- --rounds N --quick]

use std::path::Path;

use jatah::bench::classifier::{self, REPEAT, prefixes, tcp_frame};
use jatah::bench::traffic::{self, RunSettings};
use jatah::bench::{Progress, median};
use jatah::datapath::Datapath;
use jatah::netns::BpffsMount;
use jatah_common::program_names;

fn classifier(rounds: usize, sizes: &[usize]) {
    println!(
        "## Classifier cost per packet (BPF_PROG_TEST_RUN, {REPEAT} runs each, median of {rounds} rounds)\n"
    );
    println!("| prefixes | empty classifier ns | jatah_dl ns | ratio |");
    println!("|---:|---:|---:|---:|");
    for c in classifier::costs(sizes, rounds, REPEAT).unwrap() {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} |",
            c.prefixes, c.empty_ns, c.jatah_ns, c.ratio
        );
    }
    println!();
}

fn rtt_cost(rounds: usize) {
    let bpffs = BpffsMount::new("jt-bench").unwrap();
    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
    dp.sync_opds(&prefixes(30)).unwrap();
    dp.set_mark_mask(0x7fff_0000).unwrap();
    let cases = [
        (
            "SYN from an OPD (LAN ingress)",
            program_names::UPLOAD_MARK,
            tcp_frame(true, 0x02, 0),
        ),
        (
            "SYN-ACK to an OPD (LAN egress)",
            program_names::DOWNLOAD,
            tcp_frame(false, 0x12, 0),
        ),
        (
            "ACK from an OPD (LAN ingress)",
            program_names::UPLOAD_MARK,
            tcp_frame(true, 0x10, 0),
        ),
        (
            "data to an OPD (LAN egress)",
            program_names::DOWNLOAD,
            tcp_frame(false, 0x10, 1400),
        ),
        (
            "data from an OPD (LAN ingress)",
            program_names::UPLOAD_MARK,
            tcp_frame(true, 0x10, 1400),
        ),
    ];
    println!(
        "## Handshake RTT tracking: cost per packet, off vs on (BPF_PROG_TEST_RUN, {REPEAT} runs, median of {rounds} rounds)\n"
    );
    println!("| packet | tracking off ns | tracking on ns | on/off |");
    println!("|---|---:|---:|---:|");
    for (name, prog, f) in cases {
        let mut off = Vec::new();
        let mut on = Vec::new();
        for _ in 0..rounds {
            dp.set_rtt_tracking(false).unwrap();
            off.push(classifier::ns_per_packet(&dp, prog, &f, REPEAT).unwrap());
            dp.set_rtt_tracking(true).unwrap();
            on.push(classifier::ns_per_packet(&dp, prog, &f, REPEAT).unwrap());
        }
        let (a, b) = (median(&off), median(&on));
        println!("| {name} | {a:.0} | {b:.0} | {:.2} |", b / a);
    }
    println!();
}

fn forwarding(rounds: usize, seconds: u32) {
    let run = RunSettings {
        seconds,
        pin_cpus: false,
    };
    let (attached, detached, ratio) = traffic::attached_vs_detached(
        Path::new(env!("CARGO_BIN_EXE_jatah")),
        rounds,
        &run,
        &Progress::default(),
    )
    .unwrap();
    println!(
        "## Forwarding throughput through the lab gateway (iperf3 TCP download, {seconds} s, median of {rounds} rounds)\n"
    );
    println!("| programs | Gbit/s |");
    println!("|---|---:|");
    println!("| attached (jatah) | {:.2} |", attached / 1e9);
    println!("| detached (same HTB tree) | {:.2} |", detached / 1e9);
    println!("\nratio attached/detached (median of per-round ratios): {ratio:.3}\n");
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
    classifier(rounds, sizes);
    rtt_cost(rounds);
    forwarding(rounds, if quick { 2 } else { 5 });
}
