//! Round trips judged against learned baselines: moderate inflation that
//! stays under the absolute caps, and the cases that must not be blamed.

use super::*;

fn ms_(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// `busy` with the handshake round trips given (LAN, WAN).
fn busy_rtt(bps: u64, lan: Duration, wan: Duration) -> OpdSignals {
    OpdSignals {
        handshake_rtts: [vec![lan; 3], vec![wan; 3]],
        ..busy(bps)
    }
}

const OPDS: [&str; 3] = ["a", "b", "c"];

fn all(s: OpdSignals) -> Vec<(&'static str, OpdSignals)> {
    OPDS.iter().map(|id| (*id, s.clone())).collect()
}

/// Sixty seconds of clean traffic: every path learns its normal.
fn learned() -> Run {
    let mut r = Run::new();
    r.feed(60, &all(busy_rtt(4_000_000, ms_(1), ms_(30))), &[ISP_OK]);
    assert_eq!(r.gateway(), State::Healthy);
    r
}

/// Seconds until the gateway is `state`, at most `max`.
fn gateway_within(r: &mut Run, max: i64, opds: &[(&str, OpdSignals)], up: &[(&str, Probe)]) -> Option<i64> {
    (1..=max).find(|_| {
        r.feed(1, opds, up);
        r.engine.gateway().map(|v| v.state) == Some(State::UpstreamDegraded)
    })
}

#[test]
fn a_moderate_queue_on_every_opds_wan_side_degrades_the_uplink_under_the_cap() {
    // 30 ms -> 100 ms: under the 150 ms cap, far above 30 + 20 ms.
    let mut r = learned();
    let slow = all(busy_rtt(4_000_000, ms_(1), ms_(100)));
    let s = gateway_within(&mut r, 40, &slow, &[ISP_OK]).expect("upstream_degraded");
    assert!(s <= 40, "{s}");
    r.feed(10, &slow, &[ISP_OK]);
    for id in OPDS {
        assert_eq!(r.state(id), State::UpstreamDegraded, "{id} follows, not blamed");
    }
    let ev = &r.engine.gateway().unwrap().evidence;
    assert_eq!(ev["opds_with_slow_wan_rtt"], 3, "{ev}");
    // Back to normal: healthy again, and the queue was never learned.
    r.feed(40, &all(busy_rtt(4_000_000, ms_(1), ms_(30))), &[ISP_OK]);
    assert_eq!(r.gateway(), State::Healthy);
    assert!(r.engine.opds["a"].baselines.handshake[1].value() <= Some(ms_(30)));
}

#[test]
fn without_a_baseline_only_the_cap_judges() {
    let mut r = Run::new();
    let slow = all(busy_rtt(4_000_000, ms_(1), ms_(100)));
    assert_eq!(gateway_within(&mut r, 60, &slow, &[ISP_OK]), None);
}

#[test]
fn inflated_upstream_probes_degrade_the_uplink_under_the_cap() {
    let mut r = learned();
    let up = [("isp", Probe::Answered(ms_(60)))];
    let s = gateway_within(&mut r, 40, &all(busy_rtt(4_000_000, ms_(1), ms_(30))), &up);
    assert!(s.is_some(), "5 ms -> 60 ms at the ISP router");
    let ev = &r.engine.gateway().unwrap().evidence;
    assert_eq!(ev["upstream_targets"]["isp"]["baseline_ms"], 5.0, "{ev}");
    assert_eq!(ev["upstream_targets"]["isp"]["threshold_ms"], 25.0, "{ev}");
}

#[test]
fn one_slow_target_among_two_is_not_the_uplink() {
    let mut r = Run::new();
    let ok = ("far", Probe::Answered(ms_(40)));
    r.feed(60, &all(busy_rtt(4_000_000, ms_(1), ms_(30))), &[ISP_OK, ok]);
    let one_slow = [ISP_OK, ("far", Probe::Answered(ms_(120)))];
    let s = gateway_within(&mut r, 60, &all(busy_rtt(4_000_000, ms_(1), ms_(30))), &one_slow);
    assert_eq!(s, None, "one target slow, the other fine");
}

#[test]
fn one_opd_talking_to_a_slow_server_is_not_the_uplink() {
    let mut r = learned();
    let mut opds = all(busy_rtt(4_000_000, ms_(1), ms_(30)));
    opds[0].1 = busy_rtt(4_000_000, ms_(1), ms_(140));
    assert_eq!(gateway_within(&mut r, 60, &opds, &[ISP_OK]), None);
    assert_eq!(r.state("a"), State::Healthy);
}

#[test]
fn a_lan_slower_than_its_normal_is_local_degraded_under_the_cap() {
    // 1 ms -> 25 ms: under the 50 ms cap, above 1 + 15 ms.
    let mut r = learned();
    let mut opds = all(busy_rtt(4_000_000, ms_(1), ms_(30)));
    opds[1].1 = busy_rtt(4_000_000, ms_(25), ms_(30));
    r.feed(30, &opds, &[ISP_OK]);
    assert_eq!(r.state("b"), State::LocalDegraded);
    assert_eq!(r.state("a"), State::Healthy);
    assert_eq!(r.gateway(), State::Healthy);
    let ev = &r.engine.opd("b").unwrap().evidence;
    assert_eq!(ev["lan_rtt_baseline_ms"], 1.0, "{ev}");
    assert_eq!(ev["lan_threshold_ms"], 16.0, "{ev}");
}

#[test]
fn an_opd_near_its_ceiling_is_not_blamed_for_its_own_queue() {
    // At 75 % of its ceiling (not saturated), its own download queue
    // explains a LAN round trip of 30 ms: only the 50 ms cap applies.
    let mut r = learned();
    let mut opds = all(busy_rtt(4_000_000, ms_(1), ms_(30)));
    opds[2].1 = busy_rtt(CEIL * 3 / 4, ms_(30), ms_(30));
    r.feed(40, &opds, &[ISP_OK]);
    assert_eq!(r.state("c"), State::Healthy);
    // And an OPD whose upload is near its ceiling has its SYNs queued at
    // the gateway: its WAN round trips are left out.
    let mut up_busy = busy_rtt(4_000_000, ms_(1), ms_(100));
    up_busy.bps[1] = CEIL * 3 / 4;
    let opds = [("a", up_busy.clone()), ("b", up_busy), ("c", busy_rtt(4_000_000, ms_(1), ms_(30)))];
    assert_eq!(gateway_within(&mut r, 40, &opds, &[ISP_OK]), None);
}
