//! Data path benchmarks (root): classifier cost per packet against an empty
//! classifier as the number of prefixes grows, the cost of handshake RTT
//! tracking and of choosing a lane, and forwarding throughput through the lab gateway with
//! jatah's programs attached and detached over the same HTB tree. Prints
//! numbers; never fails on timing. The measuring code lives in
//! `jatah::bench`, shared with `cargo bench --bench compare`.
//!
//!   cargo bench --bench datapath [-- --rounds N --quick --rtt-only --lanes-only --hosts-only]

use std::path::Path;

use jatah::bench::classifier::{self, REPEAT, prefixes, tcp_frame};
use jatah::bench::traffic::{self, RunSettings};
use jatah::bench::{Progress, median};
use jatah::datapath::Datapath;
use jatah::lab::netns::BpffsMount;
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
    let cases: [(&str, &str, bool, u8, usize); 6] = [
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
        // An upload's ACK: with retransmission counting on, a followed
        // connection's takes the table lookup for its ACK number (the
        // same number every run: the lookup and compare, not the counter
        // an advancing one adds).
        (
            "ACK to an OPD (LAN egress)",
            program_names::DOWNLOAD,
            false,
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
    let mut with_loss = Vec::new();
    for (name, prog, from_opd, tcp_flags, payload) in cases {
        let timed_frame = tcp_frame(from_opd, tcp_flags, payload, timed);
        let untimed_frame = tcp_frame(from_opd, tcp_flags, payload, untimed);
        let (mut off, mut on_timed, mut on_untimed) = (Vec::new(), Vec::new(), Vec::new());
        let (mut loss_timed, mut loss_untimed) = (Vec::new(), Vec::new());
        let ns = |dp: &Datapath, f: &[u8]| classifier::ns_per_packet(dp, prog, f, REPEAT).unwrap();
        for _ in 0..rounds {
            dp.set_rtt_tracking(false).unwrap();
            off.push(ns(&dp, &untimed_frame));
            dp.set_rtt_tracking(true).unwrap();
            on_timed.push(ns(&dp, &timed_frame));
            on_untimed.push(ns(&dp, &untimed_frame));
            dp.set_tcp_loss_tracking(true).unwrap();
            loss_timed.push(ns(&dp, &timed_frame));
            loss_untimed.push(ns(&dp, &untimed_frame));
            dp.set_tcp_loss_tracking(false).unwrap();
        }
        let (a, t, u) = (median(&off), median(&on_timed), median(&on_untimed));
        let avg = (t + u * f64::from(sampling - 1)) / f64::from(sampling);
        println!(
            "| {name} | {a:.0} | {t:.0} | {u:.0} | {avg:.0} | {:.2} |",
            avg / a
        );
        let (lt, lu) = (median(&loss_timed), median(&loss_untimed));
        let lavg = (lt + lu * f64::from(sampling - 1)) / f64::from(sampling);
        with_loss.push(format!(
            "| {name} | {avg:.0} | {lt:.0} | {lu:.0} | {lavg:.0} | {:.2} |",
            lavg / avg
        ));
    }
    println!(
        "\n## ... and retransmission counting on as well (FLAG_TCP_LOSS, same sample, same rounds)\n"
    );
    println!(
        "| packet | handshakes only, average ns | + retransmissions, followed connection ns | + retransmissions, other connection ns | + retransmissions, average ns | average / handshakes only |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for row in with_loss {
        println!("{row}");
    }
    println!();
}

/// The cost of choosing a lane: lanes off (the OPD's class) against on
/// (interactive or bulk), with and without new connections' first bytes
/// in the interactive lane, on the packets a busy office sends most.
fn lanes_cost(rounds: usize) {
    let bpffs = BpffsMount::new("jt-bench").unwrap();
    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
    dp.sync_opds(&prefixes(30)).unwrap();
    dp.set_mark_mask(0x7fff_0000).unwrap();
    let with_seq = |mut f: Vec<u8>, seq: u32| {
        f[38..42].copy_from_slice(&seq.to_be_bytes());
        f
    };
    // A connection whose SYN-ACK passed (seq 1000): its data at 2000 is in
    // its first bytes.
    let synack = with_seq(tcp_frame(false, 0x12, 0, 40002), 1000);
    let new_data = with_seq(tcp_frame(false, 0x10, 1400, 40002), 2000);
    let cases: [(&str, &str, Vec<u8>); 5] = [
        (
            "data to an OPD (LAN egress)",
            program_names::DOWNLOAD,
            tcp_frame(false, 0x10, 1400, 40001),
        ),
        (
            "data to an OPD in a new connection's first bytes",
            program_names::DOWNLOAD,
            new_data,
        ),
        (
            "pure ACK to an OPD (LAN egress)",
            program_names::DOWNLOAD,
            tcp_frame(false, 0x10, 0, 40001),
        ),
        (
            "data from an OPD (WAN egress)",
            program_names::UPLOAD,
            tcp_frame(true, 0x10, 1400, 40001),
        ),
        (
            "pure ACK from an OPD (WAN egress)",
            program_names::UPLOAD,
            tcp_frame(true, 0x10, 0, 40001),
        ),
    ];
    println!(
        "## Lanes: cost per packet, off vs on (BPF_PROG_TEST_RUN, {REPEAT} runs, median of {rounds} rounds; ratios: median of the rounds' ratios)\n"
    );
    println!(
        "| packet | lanes off ns | lanes on, first bytes off ns | lanes on (default) ns | on, first bytes off / off | default / off |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    // Each case's per-round costs, off and default, for the mixes below.
    let mut rounds_of: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for (name, prog, frame) in cases {
        let (mut off, mut plain, mut on) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            dp.set_lanes(false).unwrap();
            off.push(classifier::ns_per_packet(&dp, prog, &frame, REPEAT).unwrap());
            dp.set_lanes(true).unwrap();
            dp.set_first_bytes(false).unwrap();
            plain.push(classifier::ns_per_packet(&dp, prog, &frame, REPEAT).unwrap());
            dp.set_first_bytes(true).unwrap();
            classifier::ns_per_packet(&dp, program_names::DOWNLOAD, &synack, 1).unwrap();
            on.push(classifier::ns_per_packet(&dp, prog, &frame, REPEAT).unwrap());
        }
        let (a, p, b) = (median(&off), median(&plain), median(&on));
        // The kernel reports whole nanoseconds per run: the ratios are the
        // medians of each round's, finer than a ratio of two medians.
        let ratio = |x: &[f64]| median(&x.iter().zip(&off).map(|(v, o)| v / o).collect::<Vec<_>>());
        println!(
            "| {name} | {a:.0} | {p:.0} | {b:.0} | {:.3} | {:.3} |",
            ratio(&plain),
            ratio(&on)
        );
        rounds_of.push((off, on));
    }
    println!();
    // The target is an average per packet: the cases weighted by what an
    // office's traffic is made of (shares of packets, in the cases'
    // order), each round's weighted cost on against off.
    let mixes: [(&str, [f64; 5]); 3] = [
        (
            "bulk download: two data segments to the office per ACK it sends",
            [2.0, 0.0, 0.0, 0.0, 1.0],
        ),
        (
            "both ways at once: each direction's data and ACKs as above",
            [2.0, 0.0, 1.0, 2.0, 1.0],
        ),
        (
            "browsing: every download segment in a new connection's first 32 KiB",
            [0.0, 2.0, 0.0, 0.0, 1.0],
        ),
    ];
    println!("| traffic mix (lanes on, default, against off) | average per packet, on / off |");
    println!("|---|---:|");
    for (name, w) in mixes {
        let per_round: Vec<f64> = (0..rounds)
            .map(|r| {
                let cost = |on: bool| -> f64 {
                    rounds_of
                        .iter()
                        .zip(w)
                        .map(|((off, def), w)| w * if on { def[r] } else { off[r] })
                        .sum()
                };
                cost(true) / cost(false)
            })
            .collect();
        println!("| {name} | {:.3} |", median(&per_round));
    }
    println!();
}

/// Per-host counting: the classifier's cost at 10,000 prefixes with it
/// off and on, alternating in each round, then again once 100,000
/// distinct hosts have passed (the table full, evicting).
fn hosts_cost(rounds: usize) {
    const N: usize = 10_000;
    let bpffs = BpffsMount::new("jt-bench").unwrap();
    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
    dp.sync_opds(&prefixes(N)).unwrap();
    let frame = classifier::frame(classifier::last_address(N));
    let measure = |dp: &mut Datapath| {
        let (mut off, mut on, mut empty) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            empty.push(classifier::ns_per_packet(dp, "jatah_empty", &frame, REPEAT).unwrap());
            dp.set_host_counting(false).unwrap();
            off.push(
                classifier::ns_per_packet(dp, program_names::DOWNLOAD, &frame, REPEAT).unwrap(),
            );
            dp.set_host_counting(true).unwrap();
            on.push(
                classifier::ns_per_packet(dp, program_names::DOWNLOAD, &frame, REPEAT).unwrap(),
            );
        }
        (median(&empty), median(&off), median(&on))
    };
    println!(
        "## Per-host counting: cost per packet at {N} prefixes (BPF_PROG_TEST_RUN, {REPEAT} runs, median of {rounds} rounds)\n"
    );
    println!("| hosts seen | empty ns | hosts off ns | hosts on ns | on/off | hosts held |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let reader = jatah::datapath::CounterReader::open(bpffs.path()).unwrap();
    let (e, a, b) = measure(&mut dp);
    println!(
        "| 1 | {e:.0} | {a:.0} | {b:.0} | {:.2} | {} |",
        b / a,
        reader.hosts().1
    );
    // 100,000 distinct hosts, ten in each of the 10,000 prefixes.
    dp.set_host_counting(true).unwrap();
    for k in 0..100_000usize {
        let p = k % N;
        let f = classifier::frame([10, (p >> 8) as u8, p as u8, 1 + (k / N) as u8]);
        classifier::ns_per_packet(&dp, program_names::DOWNLOAD, &f, 1).unwrap();
    }
    let held = reader.hosts().1;
    let (e, a, b) = measure(&mut dp);
    println!(
        "| 100,000 | {e:.0} | {a:.0} | {b:.0} | {:.2} | {held} |",
        b / a
    );
    println!(
        "\nhosts entered: {}, bound {}\n",
        reader.hosts_added().unwrap(),
        jatah_common::HOST_ENTRIES
    );
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
    jatah::lab::netns::require_root();
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
    if args.iter().any(|a| a == "--lanes-only") {
        lanes_cost(rounds);
        return;
    }
    if args.iter().any(|a| a == "--hosts-only") {
        hosts_cost(rounds);
        return;
    }
    classifier(rounds, sizes);
    rtt_cost(rounds);
    lanes_cost(rounds);
    hosts_cost(rounds);
    forwarding(rounds, if quick { 2 } else { 5 });
}
