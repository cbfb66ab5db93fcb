//! Load (root): wrk against the API and `/metrics` at once while OPDs pull
//! traffic through the lab gateway and the policy is reloaded every 5 s;
//! the same traffic without that load first. Reports requests/s, p99 and
//! errors per endpoint, reload outcomes, and the shaped iperf3 rate with
//! and without load (issue: within 5%). Prints numbers; never fails on
//! timing.
//!
//!   cargo bench --bench load [-- --seconds 60]

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use jatah::lab::{GW_LISTEN, LAB_ADMIN_TOKEN, Lab, LabOpd, LabSpec, wait_iperf};
use jatah::policy::Direction;

/// What wrk printed that matters: requests/s, p99 (ms), errors.
#[derive(Debug, Default)]
struct Wrk {
    rps: f64,
    p99_ms: f64,
    requests: u64,
    errors: u64,
}

fn spawn_wrk(lab: &Lab, path: &str, seconds: u64) -> Child {
    lab.gw
        .command("wrk")
        .args(["-t1", "-c4", &format!("-d{seconds}s"), "--latency", "-H"])
        .arg(format!("Authorization: Bearer {LAB_ADMIN_TOKEN}"))
        .arg(format!("http://{GW_LISTEN}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk runs (scripts/setup.sh installs it)")
}

fn millis(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn parse_wrk(out: &str) -> Wrk {
    let mut w = Wrk::default();
    for line in out.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        match t.as_slice() {
            ["99%", v] => w.p99_ms = millis(v),
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => w.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                w.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    w
}

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
    jatah::netns::require_root();
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
    let api = spawn_wrk(&lab, "/api/v1/opds", seconds);
    let metrics = spawn_wrk(&lab, "/metrics", seconds);
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
    let api = parse_wrk(&String::from_utf8_lossy(
        &api.wait_with_output().unwrap().stdout,
    ));
    let metrics = parse_wrk(&String::from_utf8_lossy(
        &metrics.wait_with_output().unwrap().stdout,
    ));
    for c in bg {
        let _ = wait_iperf(c);
    }
    reload_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
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
        reload_ms.get(reload_ms.len() / 2).copied().unwrap_or(0.0),
        reload_ms.last().copied().unwrap_or(0.0)
    );
    println!("| dinkes download (30M ceiling, 4 flows) | Mbit/s |");
    println!("|---|---:|");
    println!("| traffic only | {q:.2} |");
    println!("| traffic + API load + reloads | {l:.2} |");
    println!("\nloaded/quiet: {:.3} (target: within 5%)", l / q);
}
