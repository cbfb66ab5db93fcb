//! An uplink delivering less than its contract, the way ISPs really do it
//! (issue 14): policing and queues emulated with a tbf on the Internet
//! side of the lab. jatah must say `upstream_degraded` with the figure the
//! uplink truly delivered, and blame no OPD.
//!
//! The scenarios below are the CI slice of the matrix (the whole
//! matrix is `cargo bench --bench capacity`): the upload policed, a 100 ms
//! queue at 40 % of demand, 3 % WAN loss, and the false positives one OPD's
//! lossy LAN, one slow remote server and one OPD at its ceiling. Those the
//! engine cannot pass yet are ignored with what they need.
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
use support::verdicts::{
    gateway_state, get, no_local_blame, no_upstream_verdict, now_rfc3339, poll, state,
    until_gateway, until_state, within,
};
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

/// How long after a limit begins its delivered figure must be given (the
/// verdict itself within 30 s, and from TCP loss often before a figure):
/// the plateau needs 8 s at its new level and 3 more to form.
const FIGURE_WITHIN: Duration = Duration::from_secs(45);

/// The headline limit: 30 % of the 40M contract, policed.
const POLICED_RATE: &str = "12mbit";
const POLICED_BPS: f64 = 12e6;

/// Starts [`DEMAND`] for `seconds`.
fn demand(lab: &Lab, seconds: u32) -> Children {
    offices(lab, seconds, &["-P", "4"])
}

/// [`demand`], but disdik's 4 flows paced to 1.75 Mbit/s each, 7 of its
/// 10 Mbit/s ceiling. With the lab's sub-millisecond round trips a 5 %
/// lossy LAN does not slow TCP, so unpaced flows sit at the ceiling, where
/// the bytes disdik's own class drops are taken off its LAN duplicates
/// and can cancel them (it then reads `saturated`, as in one suite run).
/// Over a real office LAN's round trips 5 % loss holds TCP well under a
/// 10 Mbit/s ceiling.
fn demand_with_disdik_below_its_ceiling(lab: &Lab, seconds: u32) -> Children {
    offices(lab, seconds, &["-P", "4", "-b", "1750k"])
}

/// The four offices' downloads for `seconds`, disdik's with `disdik`'s
/// iperf3 arguments.
fn offices(lab: &Lab, seconds: u32, disdik: &[&str]) -> Children {
    let bulk = |i: usize, args: &[&str]| {
        lab.spawn_iperf_args(i, Direction::Download, seconds, 0, args, false)
            .expect("starting iperf3")
    };
    Children(vec![
        bulk(0, &["-P", "1"]),
        bulk(1, disdik),
        bulk(2, &["-P", "8"]),
        lab.spawn_iperf_paced(3, Direction::Download, seconds, "2M")
            .expect("starting iperf3"),
    ])
}

fn start(prefix: &str) -> Lab {
    require_root();
    let mut lab = Lab::build(diagnosis_lab(prefix)).expect("building the lab");
    // These tests judge the estimate against what the limit delivered;
    // adapting would shape the traffic below the limit and make that
    // figure the gateway's own (tests/adapt.rs tests adapting).
    let policy = lab
        .spec
        .policy_toml()
        .replacen("[gateway]\n", "[gateway]\nadapt = false\n", 1);
    lab.write_policy(&policy).expect("writing the policy");
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
    // The verdict can come first (from the retransmissions); the figure
    // follows once the plateau is judged. How soon is the benchmark's to
    // report; this test judges the figure.
    let figure = within(Duration::from_secs(30), "a delivered figure", || {
        get(&lab, "/api/v1/gateway")["diagnosis"]["evidence"]["download_delivered_bps"].is_number()
    });
    eprintln!("the delivered figure {figure:.1} s after the verdict");

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

/// Upload demand, in the order of [`OPDS`]: bulk uploads with one, four
/// and eight flows (each up to its 5M ceiling) and one paced at 1M, about
/// 16 Mbit/s under the 20M contract.
fn upload_demand(lab: &Lab, seconds: u32) -> Children {
    let bulk = |i: usize, flows: &str| {
        lab.spawn_iperf_args(i, Direction::Upload, seconds, 0, &["-P", flows], false)
            .expect("starting iperf3")
    };
    Children(vec![
        bulk(0, "1"),
        bulk(1, "4"),
        bulk(2, "8"),
        lab.spawn_iperf_paced(3, Direction::Upload, seconds, "1M")
            .expect("starting iperf3"),
    ])
}

/// Builds the lab, starts `load` for `seconds`, waits for [`settled`] and
/// for the warm-up to pass; returns the lab and its clients.
fn warmed_up(prefix: &str, seconds: u32, load: fn(&Lab, u32) -> Children) -> (Lab, Children) {
    let lab = start(prefix);
    let up = Instant::now();
    let clients = load(&lab, seconds);
    within(Duration::from_secs(40), "a healthy gateway", || {
        settled(&lab)
    });
    sleep_until(up + WARM_UP);
    (lab, clients)
}

/// While a limit in `dir` holds: the gateway turns `upstream_degraded`
/// within 30 s, its `{dir}_delivered_bps` is within 10 % of what the
/// limit sent over the following 10 s (where `estimate` is
/// [`Estimate::Required`]; with [`Estimate::IfAny`] only a figure given
/// is checked), no OPD is blamed; then `lift` ends the limit and the
/// gateway is healthy within 60 s.
/// Whether a scenario must give a delivered figure.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Estimate {
    Required,
    IfAny,
}

fn degraded_then_recovers(
    lab: &Lab,
    dir: Direction,
    what: &str,
    estimate: Estimate,
    lift: impl FnOnce(&Lab),
) {
    let since = now_rfc3339();
    let limited = Instant::now();
    let took = until_gateway(lab, "upstream_degraded", Duration::from_secs(30));
    eprintln!("{what}: upstream_degraded after {took:.1} s");
    let field = format!("{}_delivered_bps", dir.as_str());
    if estimate == Estimate::Required {
        // A verdict from TCP loss can come seconds before the plateau has
        // held long enough to give a figure; the figure must follow.
        let wait = FIGURE_WITHIN.saturating_sub(limited.elapsed());
        let formed = poll(wait, || {
            get(lab, "/api/v1/gateway")["diagnosis"]["evidence"][&field].is_number()
        });
        if formed.is_none() {
            // Why the figure did not form, where the lab logs it
            // (JATAH_LAB_LOG with jatah::diagnosis::capacity=debug, as
            // scripts/test.sh sets).
            let log = lab.daemon_log();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(dir.as_str())).collect();
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
            panic!(
                "{what}: no {field} within {FIGURE_WITHIN:?} of the limit; gateway: {}",
                get(lab, "/api/v1/gateway")["diagnosis"]
            );
        }
        eprintln!(
            "{what}: {field} given {:.1} s after the limit began",
            limited.elapsed().as_secs_f64()
        );
    }
    let sent = || lab.uplink_sent_bytes_toward(dir).expect("reading the tbf");
    let (s0, t0) = (sent(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let g = get(lab, "/api/v1/gateway");
    let (s1, t1) = (sent(), Instant::now());
    eprintln!("{}", serde_json::to_string_pretty(&g["diagnosis"]).unwrap());
    assert_eq!(g["diagnosis"]["state"], "upstream_degraded", "held");
    if let (Some(s0), Some(s1)) = (s0, s1) {
        let truth = (s1 - s0) as f64 * 8.0 / (t1 - t0).as_secs_f64();
        let given = g["diagnosis"]["evidence"][&field].as_f64();
        if given.is_none() && estimate == Estimate::IfAny {
            eprintln!("{what}: no {field} (not required here)");
        }
        let estimate = match (given, estimate) {
            (Some(e), _) => e,
            (None, Estimate::IfAny) => f64::NAN,
            (None, Estimate::Required) => panic!("no {field} in {}", g["diagnosis"]),
        };
        eprintln!(
            "{what}: estimate {:.2} Mbit/s, the limit sent {:.2} Mbit/s ({:+.1} %)",
            estimate / 1e6,
            truth / 1e6,
            (estimate / truth - 1.0) * 100.0
        );
        assert!(
            estimate.is_nan() || (estimate - truth).abs() <= 0.1 * truth,
            "estimate {estimate:.0} b/s is not within 10 % of what the limit sent, {truth:.0} b/s"
        );
    }
    no_local_blame(lab, &since);
    lift(lab);
    let back = within(Duration::from_secs(60), "gateway healthy again", || {
        gateway_state(lab).as_deref() == Some("healthy")
    });
    eprintln!("{what}: healthy {back:.1} s after the end");
    no_local_blame(lab, &since);
}

/// For `seconds` (polled every 250 ms): the gateway never leaves
/// `healthy`, and no `upstream_*` event is recorded.
fn gateway_stays_healthy(lab: &Lab, seconds: u64, what: &str) {
    let since = now_rfc3339();
    let end = Instant::now() + Duration::from_secs(seconds);
    for _ in 0..seconds * 4 + 4 {
        if Instant::now() >= end {
            break;
        }
        let g = gateway_state(lab);
        assert_eq!(g.as_deref(), Some("healthy"), "{what}: gateway {g:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    no_upstream_verdict(lab, &since);
}

#[test]
fn upload_policed_to_40pct_of_demand_is_upstream_degraded() {
    let _one = one_lab_at_a_time();
    let (lab, _clients) = warmed_up("jt-cup", 150, upload_demand);
    // 40 % of the ~16 Mbit/s the OPDs send.
    lab.police_uplink_toward(Direction::Upload, "6400kbit")
        .unwrap();
    // Upload is counted where it enters the gateway, before the policer
    // drops 40 % of it: the figure is what the far ends acknowledged.
    degraded_then_recovers(
        &lab,
        Direction::Upload,
        "upload policed to 6.4M",
        Estimate::Required,
        |lab| lab.restore_uplink_toward(Direction::Upload).unwrap(),
    );
}

#[test]
fn a_100ms_queue_at_40pct_of_demand_is_upstream_degraded() {
    let _one = one_lab_at_a_time();
    let (lab, _clients) = warmed_up("jt-cq100", 150, demand);
    // 40 % of the ~32 Mbit/s the OPDs ask for, behind a 100 ms queue.
    lab.queue_uplink_toward(Direction::Download, "12800kbit", "100ms")
        .unwrap();
    degraded_then_recovers(
        &lab,
        Direction::Download,
        "100 ms queue at 12.8M",
        Estimate::Required,
        |lab| lab.restore_uplink().unwrap(),
    );
}

#[test]
fn three_pct_wan_loss_is_upstream_degraded() {
    let _one = one_lab_at_a_time();
    let (lab, _clients) = warmed_up("jt-closs", 150, demand);
    lab.wan_loss(3, false).unwrap();
    degraded_then_recovers(
        &lab,
        Direction::Download,
        "3 % WAN loss",
        Estimate::IfAny,
        |lab| lab.clear_wan_loss().unwrap(),
    );
}

#[test]
fn one_opds_lossy_lan_is_local_degraded_and_nothing_upstream() {
    let _one = one_lab_at_a_time();
    let (lab, _clients) = warmed_up("jt-clan", 150, demand_with_disdik_below_its_ceiling);
    let since = now_rfc3339();
    lab.lan_loss(1, 5).unwrap();
    // Within 60 s, not 30: the lab's veths carry GSO packets of about 24
    // segments whole, so 5 % of packets is some 14 loss events in the
    // ratio's 10 s, and the ratio wanders 2-6 % around the 3 % threshold
    // (in one suite run it was 2.3 % 30 s in). On a real NIC each frame
    // is lost on its own.
    let took = until_state(&lab, OPDS[1], "local_degraded", Duration::from_secs(60));
    eprintln!("5 % loss on disdik's LAN: local_degraded after {took:.1} s");
    gateway_stays_healthy(&lab, 20, "one lossy LAN");
    for o in [OPDS[0], OPDS[2], OPDS[3]] {
        let s = state(&lab, o).unwrap_or_default();
        assert!(!s.starts_with("local_"), "{o} is {s}");
    }
    no_upstream_verdict(&lab, &since);
}

#[test]
fn one_slow_remote_server_is_no_uplink_problem() {
    let _one = one_lab_at_a_time();
    let (mut lab, _clients) = warmed_up("jt-cfar", 150, demand);
    // A second bulk download at disdik, from a server 2 Mbit/s and a
    // 200 ms queue away; the rest of the Internet as fast as before.
    lab.start_far_server("2mbit", "200ms").unwrap();
    let far = lab
        .spawn_iperf_far(1, Direction::Download, 30, &["-R", "-P", "4"])
        .unwrap();
    let since = now_rfc3339();
    gateway_stays_healthy(&lab, 30, "one slow remote server");
    no_local_blame(&lab, &since);
    // The far server was really slow, and really used.
    let got = jatah::lab::wait_iperf(far).expect("the far transfer");
    eprintln!(
        "from the far server: {:.2} Mbit/s",
        got.bits_per_second / 1e6
    );
    assert!(
        (0.5e6..2.2e6).contains(&got.bits_per_second),
        "the far path carried {:.0} b/s, not about 2 Mbit/s",
        got.bits_per_second
    );
}

/// dinkes asks for far more than its 10M ceiling; the others ask for a
/// steady 1M each: the uplink carries about 13 of its 40 Mbit/s.
fn one_at_ceiling(lab: &Lab, seconds: u32) -> Children {
    let mut c = vec![
        lab.spawn_iperf_args(0, Direction::Download, seconds, 0, &["-P", "8"], false)
            .expect("starting iperf3"),
    ];
    for i in 1..OPDS.len() {
        c.push(
            lab.spawn_iperf_paced(i, Direction::Download, seconds, "1M")
                .expect("starting iperf3"),
        );
    }
    Children(c)
}

#[test]
fn one_opd_at_its_ceiling_is_saturated_and_no_uplink_problem() {
    let _one = one_lab_at_a_time();
    let (lab, _clients) = warmed_up("jt-cceil", 120, one_at_ceiling);
    assert_eq!(state(&lab, OPDS[0]).as_deref(), Some("saturated"));
    gateway_stays_healthy(&lab, 30, "one OPD at its ceiling");
    assert_eq!(state(&lab, OPDS[0]).as_deref(), Some("saturated"));
}

/// The sweep (`cargo bench --bench capacity`) still runs: its smoke
/// settings (one short scenario) through the same library entry point,
/// its table written between its markers into a scratch file. Asserts the
/// shape of what it produces, never a timing.
#[test]
fn the_capacity_sweep_runs_and_writes_its_table() {
    use jatah::bench::capacity::{self, BEGIN, END, Engine, Settings};
    use jatah::bench::report::{Cell, write_generated_between};

    let _one = one_lab_at_a_time();
    require_root();
    let settings = Settings::smoke(vec![Engine {
        label: "under test".into(),
        path: jatah().to_path_buf(),
    }]);
    assert_eq!(settings.scenarios().len(), 1);
    let results = capacity::run(&settings).expect("the smoke sweep runs");
    assert_eq!(results.rows.len(), 1);
    let row = &results.rows[0];
    assert_eq!(row.rounds.len(), 1);
    let section = capacity::section(&settings, &results);
    let table = &section.table;
    assert_eq!(table.rows.len(), 1);
    assert_eq!(table.rows[0].len(), table.columns.len());
    for cell in &table.rows[0] {
        if let Cell::Value(v, _) = cell {
            assert!(v.is_finite() && *v >= 0.0, "{:?}", table.rows[0]);
        }
    }
    let file = std::env::temp_dir().join(format!("jatah-capacity-{}.md", std::process::id()));
    std::fs::write(&file, "# Benchmarks\n\nHand-written.\n").unwrap();
    let written = write_generated_between(&file, BEGIN, END, &section.markdown());
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    written.unwrap();
    assert!(
        text.starts_with("# Benchmarks\n\nHand-written.\n"),
        "{text}"
    );
    assert!(text.contains(BEGIN) && text.contains(END), "{text}");
    assert!(
        text.contains("| download policed to 40% | under test |"),
        "{text}"
    );
}
