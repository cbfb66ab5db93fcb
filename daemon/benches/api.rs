//! Daemon benchmarks (root): `/metrics` scrape time and body size with 30
//! and 1,000 OPDs, resident memory with 1,000 OPDs after a while, and API
//! throughput with wrk on `/api/v1/opds` (30 OPDs, 2 connections).
//! Prints numbers; never fails on timing. The measuring code lives in
//! `jatah::bench::control`, shared with `cargo bench --bench compare`.
//!
//!   cargo bench --bench api [-- --rss-minutes 10 --quick --scrapes-only]

use std::path::Path;
use std::time::{Duration, Instant};

use jatah::bench::control::{lab_with_daemon, scrape, scrape_gzip};
use jatah::bench::rss_kib;
use jatah::lab::Lab;

fn lab_with(n: usize) -> Lab {
    let (lab, ready) =
        lab_with_daemon("jt-bapi", n, Path::new(env!("CARGO_BIN_EXE_jatah"))).unwrap();
    eprintln!("{n} OPDs: jatah ready in {ready:.2} s");
    lab
}

fn scrapes(rounds: usize) {
    println!(
        "## /metrics scrape (median of {rounds} scrapes, from inside the gateway namespace)\n"
    );
    println!(
        "| OPDs | scrape ms | jatah CPU ms | body bytes | series | gzip: scrape ms | gzip: jatah CPU ms | gzip: body bytes |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in [30, 1_000] {
        let lab = lab_with(n);
        let s = scrape(&lab, rounds).unwrap();
        let z = scrape_gzip(&lab, rounds).unwrap();
        if z.series != s.series {
            eprintln!("{n} OPDs: {} series plain, {} gzip", s.series, z.series);
        }
        println!(
            "| {n} | {:.2} | {:.2} | {} | {} | {:.2} | {:.2} | {} |",
            s.median_ms, s.cpu_ms, s.body_bytes, s.series, z.median_ms, z.cpu_ms, z.body_bytes
        );
    }
    println!();
}

fn rss(minutes: u64) {
    let lab = lab_with(1_000);
    let pid = lab.daemon_pid().unwrap();
    let start = rss_kib(pid).unwrap();
    let end_at = Instant::now() + Duration::from_secs(minutes * 60);
    let mut peak = start;
    // Scrape every 15 s meanwhile, as Prometheus would.
    while Instant::now() < end_at {
        let _ = lab.http_get("/metrics");
        peak = peak.max(rss_kib(pid).unwrap());
        std::thread::sleep(Duration::from_secs(15));
    }
    let end = rss_kib(pid).unwrap();
    println!("## Resident memory, 1,000 OPDs, scraped every 15 s\n");
    println!("| after | VmRSS MiB |");
    println!("|---|---:|");
    println!("| start | {:.1} |", start as f64 / 1024.0);
    println!("| {minutes} min | {:.1} |", end as f64 / 1024.0);
    println!("| peak | {:.1} |\n", peak as f64 / 1024.0);
}

fn wrk(seconds: u64) {
    let lab = lab_with(30);
    let w = jatah::bench::wrk::finish(jatah::bench::wrk::spawn(
        &lab,
        "/api/v1/opds",
        2,
        2,
        seconds,
    ));
    println!("## API throughput: wrk -t2 -c2 -d{seconds}s on /api/v1/opds (30 OPDs)\n");
    println!("| requests/s | p99 ms | errors |");
    println!("|---:|---:|---:|");
    println!("| {:.0} | {:.2} | {} |\n", w.rps, w.p99_ms, w.errors);
}

fn main() {
    jatah::lab::netns::require_root();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let minutes = args
        .iter()
        .position(|a| a == "--rss-minutes")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 0 } else { 10 });
    scrapes(if quick { 3 } else { 21 });
    if args.iter().any(|a| a == "--scrapes-only") {
        return;
    }
    wrk(if quick { 2 } else { 10 });
    rss(minutes);
}
