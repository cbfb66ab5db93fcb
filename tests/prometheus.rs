//! A real Prometheus scraping jatah in the lab every second, while iperf3
//! drives traffic: PromQL rates agree with what iperf3 measured.

mod support;

use std::time::Duration;

use jatah::lab::netns::require_root;
use jatah::lab::{Lab, LabOpd, LabSpec, wait_iperf};
use jatah::policy::Direction;
use support::{jatah, metrics};

fn rate_of(lab: &Lab, opd: &str) -> f64 {
    let r = lab
        .prom_query(&format!(
            "rate(jatah_opd_download_bytes_total{{opd=\"{opd}\"}}[10s])"
        ))
        .unwrap();
    assert_eq!(r.len(), 1, "one series for {opd}: {r:?}");
    r[0]["value"][1].as_str().unwrap().parse::<f64>().unwrap()
}

#[test]
fn promql_rates_agree_with_iperf3_and_an_idle_opd_reads_zero() {
    require_root();
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-prom".into(),
        download: "100M".into(),
        upload: "100M".into(),
        nat: true,
        // Jumbo frames keep header bytes (counted by jatah, not by iperf3)
        // at 0.7% instead of 4.6%, well inside the 5% agreement asked for.
        mtu: 9000,
        opds: vec![
            LabOpd::new("dinkes", "Dinas Kesehatan", ("10M", "20M"), ("5M", "10M")),
            LabOpd::new("bappeda", "Bappeda", ("5M", "12M"), ("5M", "10M")),
            LabOpd::new("inspektorat", "Inspektorat", ("5M", "10M"), ("5M", "10M")),
        ],
    })
    .unwrap();
    lab.start_daemon(jatah()).unwrap();
    lab.start_prometheus(&[]).unwrap();

    let a = lab.spawn_iperf(0, Direction::Download, 20, 2).unwrap();
    let b = lab.spawn_iperf(1, Direction::Download, 20, 2).unwrap();
    // Query in the steady part of the run: 10 s window ending at 16 s.
    std::thread::sleep(Duration::from_secs(16));
    let (prom_a, prom_b) = (
        rate_of(&lab, "dinkes") * 8.0,
        rate_of(&lab, "bappeda") * 8.0,
    );
    let idle = rate_of(&lab, "inspektorat");
    let (a, b) = (wait_iperf(a).unwrap(), wait_iperf(b).unwrap());
    eprintln!(
        "dinkes: PromQL {:.2} Mbit/s, iperf3 {:.2}; bappeda: PromQL {:.2}, iperf3 {:.2}; inspektorat {idle}",
        prom_a / 1e6,
        a.bits_per_second / 1e6,
        prom_b / 1e6,
        b.bits_per_second / 1e6
    );
    for (name, prom, iperf) in [
        ("dinkes", prom_a, a.bits_per_second),
        ("bappeda", prom_b, b.bits_per_second),
    ] {
        let diff = prom / iperf - 1.0;
        assert!(
            diff.abs() <= 0.05,
            "{name}: PromQL rate differs from iperf3 by {:+.1}%",
            diff * 100.0
        );
    }
    assert_eq!(idle, 0.0, "an idle OPD must read 0");

    // Every core metric the README names is scraped.
    for metric in metrics::CORE {
        let r = lab.prom_query(metric).unwrap();
        assert!(!r.is_empty(), "{metric} is not in Prometheus");
    }
    let ceiling = lab
        .prom_query("jatah_opd_download_ceiling_bytes_per_second{opd=\"dinkes\"}")
        .unwrap();
    assert_eq!(ceiling[0]["value"][1], "2500000", "20M = 2,500,000 bytes/s");

    // promtool agrees the exposition is clean.
    let (status, body) = lab.http_get("/metrics").unwrap();
    assert_eq!(status, 200);
    let metrics_file = lab.dir().join("metrics.txt");
    std::fs::write(&metrics_file, &body).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "promtool check metrics < {}",
            metrics_file.display()
        ))
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );

    // Counters never went backwards during the run.
    let resets = lab
        .prom_query("sum(resets(jatah_opd_download_bytes_total[1m]))")
        .unwrap();
    assert_eq!(resets[0]["value"][1], "0", "a counter went backwards");
}
