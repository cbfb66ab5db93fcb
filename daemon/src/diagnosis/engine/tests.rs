//! The engine on synthetic signal series: every state and its edges.

use crate::diagnosis::test_rng::Rng;
use super::*;

const CEIL: u64 = 10_000_000;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Normal traffic: packets both ways at `bps` download, router answering.
fn busy(bps: u64) -> OpdSignals {
    OpdSignals {
        packets: [bps / 12_000 + 10, bps / 240_000 + 5],
        bps: [bps, bps / 20],
        drops: [0, 0],
        ceiling_bps: [CEIL, CEIL],
        probe_configured: true,
        probes: vec![Probe::Answered(Duration::from_millis(2))],
        handshake_rtts: [
            vec![Duration::from_millis(1)],
            vec![Duration::from_millis(30)],
        ],
        link_up: None,
        ..Default::default()
    }
}

fn quiet() -> OpdSignals {
    OpdSignals {
        packets: [0, 0],
        bps: [0, 0],
        ceiling_bps: [CEIL, CEIL],
        probe_configured: true,
        probes: vec![Probe::Answered(Duration::from_millis(2))],
        ..Default::default()
    }
}

struct Run {
    engine: Engine,
    second: i64,
    changes: Vec<Change>,
}

impl Run {
    fn new() -> Self {
        Run {
            engine: Engine::new(Thresholds::default()),
            second: 0,
            changes: Vec::new(),
        }
    }

    /// Feeds `secs` seconds of the same signals for every OPD named.
    fn feed(
        &mut self,
        secs: i64,
        opds: &[(&str, OpdSignals)],
        upstream: &[(&str, Probe)],
    ) -> Vec<Change> {
        let mut out = Vec::new();
        for _ in 0..secs {
            let tick = Tick {
                at: t0() + chrono::Duration::seconds(self.second),
                opds: opds
                    .iter()
                    .map(|(id, s)| (id.to_string(), s.clone()))
                    .collect(),
                upstream: upstream
                    .iter()
                    .map(|(n, p)| (n.to_string(), vec![*p]))
                    .collect(),
                capacity_bps: [100_000_000, 100_000_000],
                ..Default::default()
            };
            self.second += 1;
            out.extend(self.engine.step(&tick));
        }
        self.changes.extend(out.clone());
        out
    }

    fn state(&self, id: &str) -> State {
        self.engine.opd(id).map(|v| v.state).expect("a verdict")
    }

    fn gateway(&self) -> State {
        self.engine
            .gateway()
            .map(|v| v.state)
            .expect("a gateway verdict")
    }

    /// Seconds (from now) it takes `id` to reach `state`, feeding `signals`.
    fn seconds_until(
        &mut self,
        id: &str,
        state: State,
        max: i64,
        opds: &dyn Fn(i64) -> Vec<(&'static str, OpdSignals)>,
    ) -> i64 {
        for s in 1..=max {
            let o = opds(s);
            self.feed(1, &o, &[("isp", Probe::Answered(Duration::from_millis(5)))]);
            if self.engine.opd(id).map(|v| v.state) == Some(state) {
                return s;
            }
        }
        panic!(
            "{id} not {state:?} within {max} s: {:?}",
            self.engine.opd(id)
        );
    }
}

const ISP_OK: (&str, Probe) = ("isp", Probe::Answered(Duration::from_millis(5)));

#[test]
fn steady_traffic_is_healthy_and_stays_so() {
    let mut r = Run::new();
    r.feed(
        10,
        &[("a", busy(4_000_000)), ("b", busy(2_000_000))],
        &[ISP_OK],
    );
    assert_eq!(r.state("a"), State::Healthy);
    assert_eq!(r.gateway(), State::Healthy);
    let later = r.feed(
        300,
        &[("a", busy(4_000_000)), ("b", busy(2_000_000))],
        &[ISP_OK],
    );
    assert!(
        later.is_empty(),
        "no state change in 5 healthy minutes: {later:?}"
    );
}

#[test]
fn no_verdict_before_ten_seconds_of_signals() {
    let mut r = Run::new();
    r.feed(9, &[("a", busy(1_000_000))], &[ISP_OK]);
    assert!(r.engine.opd("a").is_none());
    r.feed(1, &[("a", busy(1_000_000))], &[ISP_OK]);
    assert!(r.engine.opd("a").is_some());
}

#[test]
fn a_quiet_opd_whose_router_answers_is_idle_never_a_fault() {
    let mut r = Run::new();
    let changes = r.feed(600, &[("a", quiet())], &[ISP_OK]);
    assert_eq!(r.state("a"), State::Idle);
    assert_eq!(
        changes.iter().filter(|c| c.opd.is_some()).count(),
        1,
        "one verdict, then nothing"
    );
    // A busy OPD that goes quiet for the night becomes idle after a while.
    let mut r = Run::new();
    r.feed(30, &[("b", busy(1_000_000))], &[ISP_OK]);
    let took = r.seconds_until("b", State::Idle, 200, &|_| vec![("b", quiet())]);
    assert!(
        took > 60,
        "idle only after more than a quiet minute ({took} s)"
    );
    assert!(
        !r.changes
            .iter()
            .any(|c| c.verdict.state == State::LocalFault)
    );
}

#[test]
fn one_lost_probe_or_a_brief_silence_changes_nothing() {
    let mut r = Run::new();
    r.feed(20, &[("a", busy(4_000_000))], &[ISP_OK]);
    let mut lost = busy(4_000_000);
    lost.probes = vec![Probe::Lost];
    // One lost probe.
    let mut c = r.feed(1, &[("a", lost.clone())], &[ISP_OK]);
    c.extend(r.feed(10, &[("a", busy(4_000_000))], &[ISP_OK]));
    // Two lost in a row while traffic flows (a router busy for a moment).
    c.extend(r.feed(2, &[("a", lost)], &[ISP_OK]));
    c.extend(r.feed(10, &[("a", busy(4_000_000))], &[ISP_OK]));
    // A quiet minute.
    c.extend(r.feed(60, &[("a", quiet())], &[ISP_OK]));
    c.extend(r.feed(10, &[("a", busy(4_000_000))], &[ISP_OK]));
    assert!(c.is_empty(), "{c:?}");
}

#[test]
fn router_off_and_silent_is_a_local_fault_with_evidence_then_recovers() {
    let mut r = Run::new();
    r.feed(
        20,
        &[("a", busy(4_000_000)), ("b", busy(2_000_000))],
        &[ISP_OK],
    );
    let mut gone = quiet();
    gone.probes = vec![Probe::Lost];
    let took = r.seconds_until("a", State::LocalFault, 15, &|_| {
        vec![("a", gone.clone()), ("b", busy(2_000_000))]
    });
    assert!(took <= 8, "local_fault after {took} s");
    let v = r.engine.opd("a").unwrap();
    assert_eq!(v.evidence["reason"], "router_not_answering");
    assert!(v.evidence["probe_lost_in_a_row"].as_u64().unwrap() >= 3);
    assert_eq!(
        v.evidence["upload_packets_10s"].as_u64(),
        Some(v.evidence["upload_packets_10s"].as_u64().unwrap())
    );
    assert!(
        v.explanation_id.contains("periksa kabel daya"),
        "{}",
        v.explanation_id
    );
    assert_eq!(r.state("b"), State::Healthy, "other OPDs are untouched");
    assert_eq!(r.gateway(), State::Healthy);
    let back = r.seconds_until("a", State::Healthy, 15, &|_| {
        vec![("a", busy(4_000_000)), ("b", busy(2_000_000))]
    });
    assert!(back <= 10, "healthy again after {back} s");
}

#[test]
fn a_router_that_ignores_pings_but_passes_traffic_is_not_a_fault() {
    let mut r = Run::new();
    let mut filtered = busy(4_000_000);
    filtered.probes = vec![Probe::Lost];
    r.feed(60, &[("a", filtered)], &[ISP_OK]);
    assert_ne!(r.state("a"), State::LocalFault);
}

#[test]
fn link_down_is_a_local_fault() {
    let mut r = Run::new();
    r.feed(20, &[("a", busy(1_000_000))], &[ISP_OK]);
    let mut down = quiet();
    down.link_up = Some(false);
    r.seconds_until("a", State::LocalFault, 5, &|_| vec![("a", down.clone())]);
    assert_eq!(r.engine.opd("a").unwrap().evidence["reason"], "link_down");
}

#[test]
fn traffic_that_reaches_an_opd_and_never_returns_is_a_local_fault() {
    let mut r = Run::new();
    r.feed(20, &[("a", busy(1_000_000))], &[ISP_OK]);
    let mut one_way = busy(1_000_000);
    one_way.packets[1] = 0;
    one_way.probe_configured = false;
    one_way.probes.clear();
    r.seconds_until("a", State::LocalFault, 20, &|_| {
        vec![("a", one_way.clone())]
    });
    assert_eq!(
        r.engine.opd("a").unwrap().evidence["reason"],
        "one_way_traffic"
    );
}

#[test]
fn an_opd_at_its_ceiling_is_saturated_but_a_brief_burst_is_not() {
    let mut r = Run::new();
    r.feed(
        20,
        &[("a", busy(3_000_000)), ("b", busy(1_000_000))],
        &[ISP_OK],
    );
    let c = r.feed(2, &[("a", busy(CEIL)), ("b", busy(1_000_000))], &[ISP_OK]);
    let c2 = r.feed(
        10,
        &[("a", busy(3_000_000)), ("b", busy(1_000_000))],
        &[ISP_OK],
    );
    assert!(c.is_empty() && c2.is_empty(), "a 2 s burst: {c:?} {c2:?}");
    let mut full = busy(CEIL);
    // Its own queue slows its LAN round trips; that is not a local problem.
    full.probes = vec![Probe::Answered(Duration::from_millis(200))];
    full.drops = [30, 0];
    r.seconds_until("a", State::Saturated, 20, &|_| {
        vec![("a", full.clone()), ("b", busy(1_000_000))]
    });
    let v = r.engine.opd("a").unwrap();
    assert_eq!(v.evidence["reason"], "download_at_ceiling");
    assert_eq!(r.state("b"), State::Healthy);
    assert_eq!(r.gateway(), State::Healthy);
}

#[test]
fn a_slow_lan_at_one_opd_is_local_degraded() {
    let mut r = Run::new();
    r.feed(
        20,
        &[("a", busy(2_000_000)), ("b", busy(2_000_000))],
        &[ISP_OK],
    );
    let mut slow = busy(2_000_000);
    slow.probes = vec![Probe::Answered(Duration::from_millis(120))];
    slow.handshake_rtts[0] = vec![Duration::from_millis(90)];
    r.seconds_until("a", State::LocalDegraded, 20, &|_| {
        vec![("a", slow.clone()), ("b", busy(2_000_000))]
    });
    assert_eq!(r.state("b"), State::Healthy);
}

#[test]
fn upstream_loss_degrades_the_gateway_and_blames_no_opd() {
    let mut r = Run::new();
    r.feed(
        20,
        &[
            ("a", busy(4_000_000)),
            ("b", busy(3_000_000)),
            ("c", quiet()),
        ],
        &[ISP_OK],
    );
    let mut slow_wan = busy(2_000_000);
    slow_wan.handshake_rtts[1] = vec![Duration::from_millis(400)];
    for s in 0..30 {
        let p = if s % 2 == 0 {
            Probe::Lost
        } else {
            Probe::Answered(Duration::from_millis(300))
        };
        r.feed(
            1,
            &[
                ("a", slow_wan.clone()),
                ("b", slow_wan.clone()),
                ("c", quiet()),
            ],
            &[("isp", p)],
        );
    }
    assert_eq!(r.gateway(), State::UpstreamDegraded);
    assert_eq!(r.state("a"), State::UpstreamDegraded);
    assert_eq!(r.state("b"), State::UpstreamDegraded);
    assert_eq!(r.state("c"), State::Idle);
    let ev = &r.engine.gateway().unwrap().evidence;
    assert!(
        ev["upstream_probe_loss_ratio"].as_f64().unwrap() >= 0.3,
        "{ev}"
    );
    assert!(
        !r.changes
            .iter()
            .any(|c| matches!(c.verdict.state, State::LocalFault | State::LocalDegraded))
    );
}

#[test]
fn slow_wan_round_trips_at_many_opds_below_capacity_degrade_the_uplink_without_probes() {
    let mut r = Run::new();
    let mut slow = busy(3_000_000);
    slow.handshake_rtts[1] = vec![Duration::from_millis(500)];
    r.feed(
        40,
        &[("a", slow.clone()), ("b", slow.clone()), ("c", slow)],
        &[],
    );
    assert_eq!(r.gateway(), State::UpstreamDegraded);
    assert!(
        r.engine.gateway().unwrap().evidence["opds_with_slow_wan_rtt"]
            .as_u64()
            .unwrap()
            >= 2
    );
}

#[test]
fn every_upstream_target_lost_is_upstream_down() {
    let mut r = Run::new();
    r.feed(
        20,
        &[("a", busy(2_000_000))],
        &[
            ISP_OK,
            ("anchor", Probe::Answered(Duration::from_millis(30))),
        ],
    );
    r.feed(
        10,
        &[("a", quiet())],
        &[("isp", Probe::Lost), ("anchor", Probe::Lost)],
    );
    assert_eq!(r.gateway(), State::UpstreamDown);
    assert_ne!(
        r.state("a"),
        State::LocalFault,
        "its router answers: not its fault"
    );
}

#[test]
fn uplink_degraded_and_a_cable_pulled_at_once_each_with_its_own_evidence() {
    let mut r = Run::new();
    r.feed(
        20,
        &[("a", busy(2_000_000)), ("b", busy(2_000_000))],
        &[ISP_OK],
    );
    let mut gone = quiet();
    gone.probes = vec![Probe::Lost];
    for _ in 0..20 {
        r.feed(
            1,
            &[("a", gone.clone()), ("b", busy(2_000_000))],
            &[("isp", Probe::Lost)],
        );
        r.feed(
            1,
            &[("a", gone.clone()), ("b", busy(2_000_000))],
            &[("isp", Probe::Answered(Duration::from_millis(400)))],
        );
    }
    assert_eq!(r.gateway(), State::UpstreamDegraded);
    assert_eq!(r.state("a"), State::LocalFault);
    assert_eq!(r.state("b"), State::UpstreamDegraded);
    assert_eq!(
        r.engine.opd("a").unwrap().evidence["reason"],
        "router_not_answering"
    );
    assert!(
        r.engine
            .gateway()
            .unwrap()
            .evidence
            .get("upstream_probe_loss_ratio")
            .is_some()
    );
}

#[test]
fn a_clock_gap_resets_the_windows_and_changes_nothing_by_itself() {
    let mut r = Run::new();
    r.feed(20, &[("a", busy(2_000_000))], &[ISP_OK]);
    r.second += 3600; // the daemon was stopped for an hour
    let c = r.feed(30, &[("a", busy(2_000_000))], &[ISP_OK]);
    assert!(c.is_empty(), "{c:?}");
    assert_eq!(r.state("a"), State::Healthy);
}

#[test]
fn since_is_when_the_evidence_began_not_when_it_was_confirmed() {
    let mut r = Run::new();
    r.feed(20, &[("a", busy(2_000_000))], &[ISP_OK]);
    let mut down = quiet();
    down.link_up = Some(false);
    let start = t0() + chrono::Duration::seconds(r.second);
    r.seconds_until("a", State::LocalFault, 5, &|_| vec![("a", down.clone())]);
    assert_eq!(r.engine.opd("a").unwrap().since, start);
}

#[test]
fn explanations_exist_in_both_languages_for_every_state() {
    for s in State::ALL {
        for opd in [None, Some("dinkes")] {
            let (en, id) = explain(opd, s, &json!({}));
            assert!(!en.is_empty() && !id.is_empty());
            assert_ne!(en, id);
        }
    }
}

#[test]
fn a_problem_sentence_says_since_when_and_a_normal_one_does_not() {
    let ev = json!({"reason": "router_not_answering"});
    let (en, id) = explain_since(Some("dinkes"), State::LocalFault, &ev, Some("10:02 WITA"));
    assert_eq!(
        id,
        "Jaringan Diskominfo normal; perangkat di kantor Anda tidak merespons sejak 10:02 WITA: \
         periksa kabel daya dan konektor router."
    );
    assert!(en.contains("(since 10:02 WITA)"), "{en}");
    // Without a time, the sentence is the engine's own.
    assert_eq!(
        explain_since(Some("dinkes"), State::LocalFault, &ev, None),
        explain(Some("dinkes"), State::LocalFault, &ev)
    );
    let (en, id) = explain_since(
        Some("dinkes"),
        State::Healthy,
        &json!({}),
        Some("10:02 WITA"),
    );
    assert!(!en.contains("10:02") && !id.contains("10:02"));
}

/// Three OPDs (ceilings 100M down, 20M up) under a 200M/50M contract:
/// independent demand of 15, 25 and 30 Mbit/s, or the same demand behind a
/// cap of `limit` (the sum at the cap, dipping after losses, the shares
/// trading each second; fewer flows, wilder shares).
fn uplink_second(rng: &mut Rng, limit: Option<f64>) -> Vec<(&'static str, OpdSignals)> {
    let demand = [(15e6, 0.6), (25e6, 0.35), (30e6, 0.2)];
    let rates: Vec<f64> = match limit {
        None => demand.iter().map(|(m, _)| rng.around(*m, 0.2)).collect(),
        Some(total) => {
            let sum = if rng.unit() < 0.15 {
                total * (0.95 - 0.10 * rng.unit())
            } else {
                rng.around(total, 0.015)
            };
            let shares: Vec<f64> = demand.iter().map(|(m, j)| rng.around(*m, *j)).collect();
            let all: f64 = shares.iter().sum();
            shares.iter().map(|s| sum * s / all).collect()
        }
    };
    uplink_opds(rates)
}

/// The three OPDs "a", "b" and "c" of the uplink tests at these download
/// rates.
fn uplink_opds(rates: impl IntoIterator<Item = f64>) -> Vec<(&'static str, OpdSignals)> {
    ["a", "b", "c"]
        .into_iter()
        .zip(rates)
        .map(|(id, bps)| {
            let mut s = busy(bps as u64);
            s.ceiling_bps = [100_000_000, 20_000_000];
            s.probes = vec![Probe::Answered(Duration::from_millis(1))];
            (id, s)
        })
        .collect()
}

fn uplink_tick(second: i64, opds: Vec<(&'static str, OpdSignals)>) -> Tick {
    Tick {
        at: t0() + chrono::Duration::seconds(second),
        opds: opds
            .into_iter()
            .map(|(id, s)| (id.to_string(), s))
            .collect(),
        // The lab's policing: 3-5 ms to the ISP router, nothing lost.
        upstream: [("isp".to_string(), vec![Probe::Answered(Duration::from_millis(4))])].into(),
        capacity_bps: [200_000_000, 50_000_000],
        effective_bps: [0, 0],
            basis_bps: [0, 0],
            carried_bps: [0, 0],
            probed_bps: [0, 0],
        unclassified_bps: [0, 0],
    }
}

/// Offices an uplink policer holds far below their ceilings that drop a
/// few packets in their own classes (bursts a short queue does not hold)
/// are held by the uplink, not by their classes: the figure forms. Under
/// the old rule (any drop: at its own ceiling) none was held.
#[test]
fn drops_far_below_the_ceiling_leave_an_office_held_by_the_uplink() {
    let mut rng = Rng(0x5eed_1234_abcd_0002);
    let mut engine = Engine::new(Thresholds::default());
    let mut second = 0;
    for _ in 0..60 {
        engine.step(&uplink_tick(second, uplink_second(&mut rng, None)));
        second += 1;
    }
    let mut formed = None;
    for s in 1..=25 {
        let mut opds = uplink_second(&mut rng, Some(30e6));
        for (_, o) in &mut opds {
            o.drops = [3, 0];
        }
        engine.step(&uplink_tick(second, opds));
        second += 1;
        if let Some(d) = engine.delivered()[0] {
            formed = Some((s, d.bps));
            break;
        }
    }
    let (took, bps) = formed.expect("a figure within 25 s");
    assert!((bps as f64 - 30e6).abs() <= 0.05 * 30e6, "{bps}");
    eprintln!("figure after {took} s: {bps} bit/s");
}

#[test]
fn policed_uplink_is_upstream_degraded_with_the_figure_and_no_opd_blamed() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut engine = Engine::new(Thresholds::default());
    let mut changes = Vec::new();
    let mut second = 0;
    for _ in 0..60 {
        changes.extend(engine.step(&uplink_tick(second, uplink_second(&mut rng, None))));
        second += 1;
    }
    assert_eq!(engine.gateway().unwrap().state, State::Healthy);
    assert!(changes.iter().all(|c| c.verdict.state == State::Healthy));
    // The ISP polices the download to 30 Mbit/s.
    let drop_at = t0() + chrono::Duration::seconds(second);
    let mut took = None;
    for s in 1..=25 {
        changes.extend(engine.step(&uplink_tick(second, uplink_second(&mut rng, Some(30e6)))));
        second += 1;
        if engine.gateway().unwrap().state == State::UpstreamDegraded {
            took = Some(s);
            break;
        }
    }
    let took = took.expect("upstream_degraded within 25 s");
    let v = engine.gateway().unwrap().clone();
    assert_eq!(v.evidence["reason"], "delivers_less", "{}", v.evidence);
    let bps = v.evidence["download_delivered_bps"].as_u64().unwrap();
    assert!((bps as f64 - 30e6).abs() <= 0.05 * 30e6, "{bps}");
    assert!(v.evidence["download_delivered_confidence"] != "low");
    assert!(v.evidence.get("upload_delivered_bps").is_none());
    assert_eq!(v.since, drop_at, "since the plateau began");
    let (en, id) = explain_since(None, v.state, &v.evidence, Some("10:02 WITA"));
    assert_eq!(
        en,
        "The ISP delivers 30 of 200 Mbit/s download (since 10:02 WITA); \
         Diskominfo is on it, nothing to fix at the OPDs."
    );
    assert_eq!(
        id,
        "Penyedia layanan hanya mengirim 30 dari 200 Mbit/s (unduh) sejak 10:02 WITA; \
         Diskominfo sedang menangani, tidak ada yang perlu diperbaiki di kantor Anda."
    );
    let d = engine.delivered()[0].expect("download estimate");
    assert_eq!(d.since, drop_at);
    // The OPDs follow the uplink, none is blamed.
    for _ in 0..10 {
        changes.extend(engine.step(&uplink_tick(second, uplink_second(&mut rng, Some(30e6)))));
        second += 1;
    }
    for id in ["a", "b", "c"] {
        let v = engine.opd(id).unwrap();
        assert_eq!(v.state, State::UpstreamDegraded, "{id}");
        assert_eq!(v.evidence["reason"], "uplink");
    }
    assert!(
        !changes.iter().any(|c| matches!(
            c.verdict.state,
            State::LocalFault | State::LocalDegraded | State::Saturated
        )),
        "{changes:?}"
    );
    eprintln!("verdict after {took} s, estimate {bps} bit/s");

    // The limit is lifted: healthy again within 10 s.
    let mut back = None;
    for s in 1..=20 {
        engine.step(&uplink_tick(second, uplink_second(&mut rng, None)));
        second += 1;
        if engine.gateway().unwrap().state == State::Healthy {
            back = Some(s);
            break;
        }
    }
    let back = back.expect("healthy again");
    assert!(back <= 10, "healthy after {back} s");
    assert_eq!(engine.delivered(), [None, None]);
}

#[test]
fn a_delivered_figure_reads_in_both_languages_with_decimals_below_ten() {
    let ev = json!({
        "reason": "delivers_less",
        "download_delivered_bps": 12_300_000u64,
        "download_capacity_bps": 40_000_000u64,
        "upload_delivered_bps": 4_560_000u64,
        "upload_capacity_bps": 20_000_000u64,
    });
    let (en, id) = explain(None, State::UpstreamDegraded, &ev);
    assert_eq!(
        en,
        "The ISP delivers 12 of 40 Mbit/s download and 4.6 of 20 Mbit/s upload; \
         Diskominfo is on it, nothing to fix at the OPDs."
    );
    assert_eq!(
        id,
        "Penyedia layanan hanya mengirim 12 dari 40 Mbit/s (unduh) dan 4,6 dari 20 Mbit/s \
         (unggah); Diskominfo sedang menangani, tidak ada yang perlu diperbaiki di kantor Anda."
    );
}

mod baselines;
mod loss;

/// The three OPDs of [`uplink_second`] held steady by the gateway's classes
/// at their shares of `total` (jatah adapted: no rate traded).
fn steady_second(rng: &mut Rng, total: f64) -> Vec<(&'static str, OpdSignals)> {
    uplink_opds([15.0, 25.0, 30.0].map(|m| rng.around(total * m / 70.0, 0.01)))
}

/// A second with jatah's download adapted to 25.5M after the uplink
/// delivered 30M, its root class sending `carried`.
fn adapted_tick(second: i64, opds: Vec<(&'static str, OpdSignals)>, carried: f64) -> Tick {
    Tick {
        effective_bps: [25_500_000, 0],
        basis_bps: [30_000_000, 0],
        carried_bps: [carried as u64, 0],
        ..uplink_tick(second, opds)
    }
}

/// A figure held through a healthy spell (the offices asked less than the
/// gateway allowed, then more again) brings the verdict back; the new
/// verdict begins after the healthy one, not where the figure's plateau
/// began, so the history lists the changes in the order they happened.
#[test]
fn a_verdict_never_begins_before_the_one_it_replaces() {
    let mut rng = Rng(0x5eed_1234_abcd_0002);
    let mut engine = Engine::new(Thresholds::default());
    let mut changes = Vec::new();
    let mut second = 0;
    for _ in 0..60 {
        changes.extend(engine.step(&uplink_tick(second, uplink_second(&mut rng, None))));
        second += 1;
    }
    for _ in 0..30 {
        changes.extend(engine.step(&uplink_tick(second, uplink_second(&mut rng, Some(30e6)))));
        second += 1;
    }
    assert_eq!(engine.gateway().unwrap().state, State::UpstreamDegraded);
    // Adapted: the gateway holds the offices at 25.5M; the figure stands.
    for _ in 0..30 {
        changes.extend(engine.step(&adapted_tick(second, steady_second(&mut rng, 25.5e6), 25.4e6)));
        second += 1;
    }
    assert_eq!(engine.gateway().unwrap().state, State::UpstreamDegraded);
    // The offices ask 12M: nothing holds the figure, the verdict goes.
    let mut healthy_since = None;
    for _ in 0..60 {
        changes.extend(engine.step(&adapted_tick(second, steady_second(&mut rng, 12e6), 12e6)));
        second += 1;
        if engine.gateway().unwrap().state == State::Healthy {
            healthy_since = Some(engine.gateway().unwrap().since);
            break;
        }
    }
    let healthy_since = healthy_since.expect("healthy while the offices ask less");
    assert!(engine.delivered()[0].is_some(), "the figure outlives the verdict");
    // They ask more again: the gateway holds them, the figure stands again.
    let mut back = None;
    for _ in 0..30 {
        changes.extend(engine.step(&adapted_tick(second, steady_second(&mut rng, 25.5e6), 25.4e6)));
        second += 1;
        if engine.gateway().unwrap().state == State::UpstreamDegraded {
            back = Some(engine.gateway().unwrap().clone());
            break;
        }
    }
    let back = back.expect("upstream_degraded again");
    assert!(back.since > healthy_since, "{} vs healthy {}", back.since, healthy_since);
    let gateway: Vec<_> = changes.iter().filter(|c| c.opd.is_none()).collect();
    assert!(
        gateway.windows(2).all(|w| w[0].verdict.since < w[1].verdict.since),
        "{:?}",
        gateway.iter().map(|c| (c.verdict.state, c.verdict.since)).collect::<Vec<_>>()
    );
}
