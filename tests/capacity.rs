//! An uplink delivering less than its contract, the way ISPs really do it
//! (issue 14): policing and queues emulated with a tbf on the Internet
//! side of the lab. jatah must say `upstream_degraded` with the figure the
//! uplink truly delivered, and blame no OPD.
//!
//! The `trace_*` tests (ignored; run them by name) record what jatah
//! reports each second next to what the limit delivered, as CSV, for
//! calibrating the diagnosis. `JATAH_TRACE_DIR` says where (default: the
//! temporary directory).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jatah::lab::Lab;
use jatah::lab::netns::require_root;
use jatah::policy::Direction;
use support::fixtures::{DIAGNOSIS_OPDS as OPDS, diagnosis_lab};
use support::verdicts::{gateway_state, get, no_local_blame, now_rfc3339, state, within};
use support::{Children, jatah, one_lab_at_a_time};

/// What each OPD asks for, in the order of [`OPDS`]: bulk downloads with
/// one, four and eight flows (each up to its 10M ceiling) and a steady one
/// paced at 2M, about 32 Mbit/s under the 40M contract.
const DEMAND: [&str; 4] = [
    "iperf3 -R -P 1 (bulk)",
    "iperf3 -R -P 4 (bulk)",
    "iperf3 -R -P 8 (bulk)",
    "iperf3 -R -b 2M (paced)",
];

/// Healthy traffic before the limit: jatah learns its round-trip
/// baselines from 30 s of clean time.
const WARM_UP: Duration = Duration::from_secs(35);

/// The headline limit: 30 % of the 40M contract, policed.
const POLICED_RATE: &str = "12mbit";
const POLICED_BPS: f64 = 12e6;

/// Starts [`DEMAND`] for `seconds`.
fn demand(lab: &Lab, seconds: u32) -> Children {
    let bulk = |i: usize, flows: &str| {
        lab.spawn_iperf_args(i, Direction::Download, seconds, 0, &["-P", flows], false)
            .expect("starting iperf3")
    };
    Children(vec![
        bulk(0, "1"),
        bulk(1, "4"),
        bulk(2, "8"),
        lab.spawn_iperf_paced(3, Direction::Download, seconds, "2M")
            .expect("starting iperf3"),
    ])
}

fn start(prefix: &str) -> Lab {
    require_root();
    let mut lab = Lab::build(diagnosis_lab(prefix)).expect("building the lab");
    lab.start_daemon(jatah()).expect("starting jatah");
    lab
}

/// The gateway healthy, every OPD healthy or (the bulk ones, wanting more
/// than their 10M ceilings) saturated: what [`DEMAND`] gives while the
/// uplink delivers it.
fn settled(lab: &Lab) -> bool {
    gateway_state(lab).as_deref() == Some("healthy")
        && OPDS.iter().all(|o| {
            matches!(
                state(lab, o).as_deref(),
                Some("healthy") | Some("saturated")
            )
        })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// What the tbf has sent so far; panics without one.
fn sent(lab: &Lab) -> u64 {
    lab.uplink_sent_bytes()
        .expect("reading the tbf")
        .expect("the uplink limit is set")
}

#[test]
fn policed_uplink_is_upstream_degraded_with_the_delivered_figure() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-cpol");
    let up = Instant::now();
    let _clients = demand(&lab, 150);
    within(Duration::from_secs(40), "a healthy gateway", || {
        settled(&lab)
    });
    sleep_until(up + WARM_UP);

    let since = now_rfc3339();
    lab.police_uplink(POLICED_RATE).unwrap();
    let policed_at = Instant::now();
    let took = within(Duration::from_secs(30), "gateway upstream_degraded", || {
        gateway_state(&lab).as_deref() == Some("upstream_degraded")
    });
    eprintln!("policed to {POLICED_RATE}: upstream_degraded after {took:.1} s");

    // What the limit truly delivered over the 10 s the estimate then covers.
    let (s0, t0) = (sent(&lab), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let g = get(&lab, "/api/v1/gateway");
    let (s1, t1) = (sent(&lab), Instant::now());
    let truth = (s1 - s0) as f64 * 8.0 / (t1 - t0).as_secs_f64();
    eprintln!("{}", serde_json::to_string_pretty(&g["diagnosis"]).unwrap());
    assert_eq!(
        g["diagnosis"]["state"], "upstream_degraded",
        "the verdict held while the limit did"
    );
    let estimate = g["diagnosis"]["evidence"]["download_delivered_bps"]
        .as_f64()
        .unwrap_or_else(|| panic!("no download_delivered_bps in {}", g["diagnosis"]));
    eprintln!(
        "delivered: estimate {:.2} Mbit/s, tbf sent {:.2} Mbit/s ({:+.1} %)",
        estimate / 1e6,
        truth / 1e6,
        (estimate / truth - 1.0) * 100.0
    );
    assert!(
        (estimate - truth).abs() <= 0.1 * truth,
        "estimate {estimate:.0} b/s is not within 10 % of what the tbf sent, {truth:.0} b/s"
    );
    assert!(
        (estimate - POLICED_BPS).abs() <= 0.1 * POLICED_BPS,
        "estimate {estimate:.0} b/s is not within 10 % of the {POLICED_RATE} limit"
    );
    let delivered = &g["download"]["delivered"];
    assert!(
        matches!(delivered["confidence"].as_str(), Some("medium" | "high")),
        "the estimate in GET /api/v1/gateway holds at medium or better: {delivered}"
    );
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    let exported = metric(
        &metrics,
        "jatah_gateway_download_delivered_bytes_per_second",
    )
    .expect("the delivered metric is exported while the estimate holds");
    assert!(
        (exported * 8.0 - truth).abs() <= 0.1 * truth,
        "exported {exported:.0} B/s against {truth:.0} b/s sent"
    );
    no_local_blame(&lab, &since);
    for o in OPDS {
        let s = state(&lab, o).unwrap_or_default();
        assert!(s != "local_fault" && s != "local_degraded", "{o} is {s}");
    }

    lab.restore_uplink().unwrap();
    let policed_for = policed_at.elapsed().as_secs_f64();
    let back = within(Duration::from_secs(60), "gateway healthy again", || {
        gateway_state(&lab).as_deref() == Some("healthy")
    });
    no_local_blame(&lab, &since);
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    assert_eq!(
        metric(
            &metrics,
            "jatah_gateway_download_delivered_bytes_per_second"
        ),
        None,
        "no delivered figure once the uplink delivers again"
    );
    eprintln!(
        "limit lifted: healthy after {back:.1} s; {:.0} s since jatah was up",
        up.elapsed().as_secs_f64()
    );

    // The history keeps the policed minutes: this month's answer counts
    // them below 80% of the contract, with the lowest figure near the limit.
    let mut month = serde_json::Value::Null;
    within(
        Duration::from_secs(70),
        "the policed minutes in the history",
        || {
            month = get(&lab, "/api/v1/gateway/delivered");
            month["download"]["minutes_with_estimate"].as_u64() > Some(0)
        },
    );
    let d = &month["download"];
    eprintln!(
        "history: {} minute(s) with an estimate, {} s below 80%, lowest {}",
        d["minutes_with_estimate"], d["seconds_below_80_percent"], d["lowest"]
    );
    let below = d["seconds_below_80_percent"].as_u64().unwrap();
    assert!(
        below > 0 && below as f64 <= policed_for + 60.0,
        "{below} s below 80% of the contract, policed for {policed_for:.0} s"
    );
    assert_eq!(d["contracted_bps"], 40_000_000u64);
    let lowest = d["lowest"]["delivered_bps"].as_f64().unwrap();
    assert!(
        (lowest - POLICED_BPS).abs() <= 0.15 * POLICED_BPS,
        "lowest delivered minute {lowest:.0} b/s against the {POLICED_RATE} limit"
    );
}

/// The value of an unlabelled sample in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn trace_path(name: &str) -> PathBuf {
    std::env::var_os("JATAH_TRACE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(name)
}

/// The headline scenario without assertions, recorded: 35 s healthy, 45 s
/// limited by `limit` (described by `what`), 25 s after lifting it.
fn record(prefix: &str, file: &str, what: &str, limit: impl Fn(&Lab)) {
    let _one = one_lab_at_a_time();
    let lab = start(prefix);
    let up = Instant::now();
    let _clients = demand(&lab, 150);
    let path = trace_path(file);
    let trace = lab
        .record_trace(&path, &DEMAND)
        .expect("starting the trace");
    trace.phase("warm-up: no limit");
    sleep_until(up + WARM_UP);
    limit(&lab);
    trace.phase(&format!("limited: {what}"));
    std::thread::sleep(Duration::from_secs(45));
    lab.restore_uplink().unwrap();
    trace.phase("lifted: no limit");
    std::thread::sleep(Duration::from_secs(25));
    let rows = trace.finish().expect("recording the trace");
    eprintln!("{rows} rows in {}", path.display());
}

#[test]
#[ignore = "records a calibration trace (about 2 minutes)"]
fn trace_policing_30pct() {
    record(
        "jt-ctpol",
        "trace-policing-30pct.csv",
        "tbf rate 12mbit burst 16kb latency 5ms (policing at 30% of the 40M contract)",
        |lab| lab.police_uplink(POLICED_RATE).unwrap(),
    );
}

#[test]
#[ignore = "records a calibration trace (about 2 minutes)"]
fn trace_queue_100ms() {
    record(
        "jt-ctq100",
        "trace-queue-100ms.csv",
        "tbf rate 12mbit burst 32kb latency 100ms (a 100 ms queue at 30% of the 40M contract)",
        |lab| lab.queue_uplink(POLICED_RATE, "100ms").unwrap(),
    );
}
