//! HTTP load with wrk from inside the lab's gateway namespace, and the
//! figures read back from its report.

use std::process::{Child, Stdio};

use crate::lab::{GW_LISTEN, LAB_ADMIN_TOKEN, Lab};

/// What wrk printed that matters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Wrk {
    pub rps: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Non-2xx/3xx responses and socket errors.
    pub errors: u64,
}

/// Starts wrk (`threads`, `connections`, `seconds`, `--latency`) on `path`
/// of the lab's jatah with the admin token.
pub fn spawn(lab: &Lab, path: &str, threads: u32, connections: u32, seconds: u64) -> Child {
    lab.gw
        .command("wrk")
        .args([
            format!("-t{threads}"),
            format!("-c{connections}"),
            format!("-d{seconds}s"),
            "--latency".into(),
            "-H".into(),
        ])
        .arg(format!("Authorization: Bearer {LAB_ADMIN_TOKEN}"))
        .arg(format!("http://{GW_LISTEN}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk runs (./scripts/setup.sh test installs it)")
}

/// Waits for a wrk started by [`spawn`] and reads its report.
pub fn finish(child: Child) -> Wrk {
    let out = child.wait_with_output().expect("waiting for wrk");
    parse(&String::from_utf8_lossy(&out.stdout))
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

/// Reads wrk's text report.
pub fn parse(out: &str) -> Wrk {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rate_p99_and_errors_from_a_wrk_report() {
        let report = "Running 10s test @ http://127.0.0.1:9476/api/v1/opds
  2 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   120.00us   40.00us   2.00ms   90.00%
  Latency Distribution
     50%  110.00us
     75%  130.00us
     90%  160.00us
     99%  238.00us
  163763 requests in 10.00s, 80.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  16376.30
Transfer/sec:      8.00MB
";
        let w = parse(report);
        assert_eq!(w.requests, 163_763);
        assert!((w.rps - 16_376.30).abs() < 1e-6);
        assert!((w.p99_ms - 0.238).abs() < 1e-9);
        assert_eq!(w.errors, 7);
    }
}
