//! Load (root): wrk against the API and `/metrics` at once while OPDs pull
//! traffic through the lab gateway and the policy is reloaded every 5 s;
//! the same traffic without that load first. Reports requests/s, p99 and
//! errors per endpoint, reload outcomes, and the shaped iperf3 rate with
//! and without load (issue: within 5%). Prints numbers; never fails on
//! timing.
//!
//!   cargo bench --bench load [-- --seconds 60]

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use jatah::bench::{median, wrk};
use jatah::lab::{Lab, LabOpd, LabSpec, wait_iperf};
use jatah::policy::Direction;

fn policy(lab: &Lab, bappeda_ceiling: &str) -> String {
    lab.spec.policy_toml().replace(
        "download = { guaranteed = \"5M\", ceiling = \"10M\" }",
        &format!("download = {{ guaranteed = \"5M\", ceiling = \"{bappeda_ceiling}\" }}"),
    )
}

/// iperf3 download for dinkes, held to its 30M ceiling.
fn shaped_run(lab: &Lab, seconds: u32) -> Child {
    lab.spawn_iperf(0, Direction::Download, seconds, 4).unwrap()
}

fn main() {
    jatah::lab::netns::require_root();
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-bload".into(),
        download: "100M".into(),
        upload: "50M".into(),
        nat: true,
        mtu: 1500,
        opds: vec![
            LabOpd::new("dinkes", "Dinas Kesehatan", ("20M", "30M"), ("5M", "10M")),
            LabOpd::new("bappeda", "Bappeda", ("5M", "10M"), ("3M", "6M")),
            LabOpd::new("disdik", "Dinas Pendidikan", ("10M", "20M"), ("5M", "10M")),
        ],
    })
    .unwrap();
    lab.start_daemon(Path::new(env!("CARGO_BIN_EXE_jatah")))
        .unwrap();
    // Other OPDs pull traffic too, in both rounds.
    let background = |lab: &Lab| {
        vec![
            lab.spawn_iperf(1, Direction::Download, seconds as u32, 1)
                .unwrap(),
            lab.spawn_iperf(2, Direction::Upload, seconds as u32, 1)
                .unwrap(),
        ]
    };

    eprintln!("round 1: traffic only ({seconds} s)");
    let bg = background(&lab);
    let quiet = wait_iperf(shaped_run(&lab, seconds as u32)).unwrap();
    for c in bg {
        let _ = wait_iperf(c);
    }

    eprintln!("round 2: traffic + wrk on /api/v1/opds and /metrics + a reload every 5 s");
    let bg = background(&lab);
    let iperf = shaped_run(&lab, seconds as u32);
    let api = wrk::spawn(&lab, "/api/v1/opds", 1, 4, seconds);
    let metrics = wrk::spawn(&lab, "/metrics", 1, 4, seconds);
    let started = Instant::now();
    let (mut applied, mut reloads, mut reload_ms) = (0, 0, Vec::new());
    let mut flip = false;
    while started.elapsed() < Duration::from_secs(seconds.saturating_sub(2)) {
        std::thread::sleep(Duration::from_secs(5));
        flip = !flip;
        lab.write_policy(&policy(&lab, if flip { "12M" } else { "10M" }))
            .unwrap();
        let t = Instant::now();
        let (code, body) = lab.reload_now().unwrap();
        reload_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        reloads += 1;
        if code == 200 && body.contains("\"applied\"") {
            applied += 1;
        } else {
            eprintln!("reload: {code} {body}");
        }
    }
    let loaded = wait_iperf(iperf).unwrap();
    let (api, metrics) = (wrk::finish(api), wrk::finish(metrics));
    for c in bg {
        let _ = wait_iperf(c);
    }
    let (q, l) = (quiet.bits_per_second / 1e6, loaded.bits_per_second / 1e6);
    println!(
        "## Load: API and /metrics under wrk, reloads every 5 s, traffic flowing ({seconds} s)\n"
    );
    println!("| endpoint | requests/s | p99 ms | requests | errors |");
    println!("|---|---:|---:|---:|---:|");
    for (name, w) in [("/api/v1/opds", &api), ("/metrics (3 OPDs)", &metrics)] {
        println!(
            "| {name} | {:.0} | {:.2} | {} | {} |",
            w.rps, w.p99_ms, w.requests, w.errors
        );
    }
    println!(
        "\nReloads: {applied} of {reloads} applied, median {:.1} ms, max {:.1} ms.\n",
        median(&reload_ms),
        reload_ms.iter().copied().fold(0.0, f64::max)
    );
    println!("| dinkes download (30M ceiling, 4 flows) | Mbit/s |");
    println!("|---|---:|");
    println!("| traffic only | {q:.2} |");
    println!("| traffic + API load + reloads | {l:.2} |");
    println!("\nloaded/quiet: {:.3} (target: within 5%)", l / q);
}
