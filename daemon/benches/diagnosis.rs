//! Time from fault to verdict in the lab (root): a pulled cable until the
//! OPD is `local_fault`, and an uplink limited to 30% of its contract until
//! the gateway is `upstream_degraded`. Median of 5 runs each. Prints
//! numbers; never fails on timing.
//!
//!   cargo bench --bench diagnosis [-- --runs N]

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use jatah::bench::median;
use jatah::lab::{LAB_ADMIN_TOKEN, Lab, LabOpd, LabSpec};
use jatah::policy::Direction;
use serde_json::Value;

fn get(lab: &Lab, path: &str) -> Value {
    let (_, body) = lab.http_get_as(path, Some(LAB_ADMIN_TOKEN)).unwrap();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn opd_state(lab: &Lab, id: &str) -> String {
    get(lab, &format!("/api/v1/opds/{id}/diagnosis"))["verdict"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn gateway_state(lab: &Lab) -> String {
    get(lab, "/api/v1/gateway")["diagnosis"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn wait(limit: Duration, mut ok: impl FnMut() -> bool) -> Option<f64> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if ok() {
            return Some(t.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn lab() -> (Lab, Vec<Child>) {
    let ids = ["dinkes", "disdik", "bappeda", "kec-waru"];
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-bdiag".into(),
        download: "40M".into(),
        upload: "20M".into(),
        nat: true,
        mtu: 1500,
        opds: ids
            .iter()
            .map(|id| LabOpd::new(id, id, ("5M", "10M"), ("2M", "5M")))
            .collect(),
    })
    .unwrap();
    lab.start_daemon(Path::new(env!("CARGO_BIN_EXE_jatah")))
        .unwrap();
    let traffic = (0..4)
        .map(|i| {
            lab.spawn_iperf_paced(i, Direction::Download, 900, "2M")
                .unwrap()
        })
        .collect();
    (lab, traffic)
}

fn main() {
    jatah::lab::netns::require_root();
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);

    let (lab, mut traffic) = lab();
    let mut cable = Vec::new();
    for r in 0..runs {
        wait(Duration::from_secs(60), || {
            opd_state(&lab, "dinkes") == "healthy"
        })
        .expect("healthy");
        lab.set_opd_link(0, false).unwrap();
        let t = wait(Duration::from_secs(60), || {
            opd_state(&lab, "dinkes") == "local_fault"
        })
        .expect("fault");
        eprintln!("cable pull {r}: local_fault after {t:.1} s");
        cable.push(t);
        lab.set_opd_link(0, true).unwrap();
        let mut old = traffic.remove(0);
        let _ = old.kill();
        let _ = old.wait();
        traffic.insert(
            0,
            lab.spawn_iperf_paced(0, Direction::Download, 900, "2M")
                .unwrap(),
        );
    }
    let mut upstream = Vec::new();
    for r in 0..runs {
        wait(Duration::from_secs(60), || gateway_state(&lab) == "healthy").expect("uplink healthy");
        lab.limit_uplink("12mbit", "32kb", "400ms").unwrap();
        let hungry: Vec<Child> = (0..4)
            .map(|i| lab.spawn_iperf(i, Direction::Download, 60, 2).unwrap())
            .collect();
        let t = wait(Duration::from_secs(60), || {
            gateway_state(&lab) == "upstream_degraded"
        })
        .expect("degraded");
        eprintln!("uplink limit {r}: upstream_degraded after {t:.1} s");
        upstream.push(t);
        for mut h in hungry {
            let _ = h.kill();
            let _ = h.wait();
        }
        lab.restore_uplink().unwrap();
    }
    for mut c in traffic {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!("## Time from fault to verdict (lab, median of {runs} runs)\n");
    println!("| fault | verdict | median s | min s | max s |");
    println!("|---|---|---:|---:|---:|");
    let row = |name: &str, verdict: &str, v: &[f64]| {
        let min = v.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = v.iter().cloned().fold(0.0, f64::max);
        println!(
            "| {name} | {verdict} | {:.1} | {min:.1} | {max:.1} |",
            median(v)
        );
    };
    row("cable pulled (scenario 1)", "OPD local_fault", &cable);
    row(
        "uplink at 30% (scenario 3)",
        "gateway upstream_degraded",
        &upstream,
    );
}
