//! The estimator on synthetic per-second rates: a capped uplink, the cases
//! that must not look like one, and how an estimate forms, holds and goes.
//! Rates come from a small deterministic generator, so every run is the
//! same.

use crate::diagnosis::test_rng::Rng;
use super::*;

const CONTRACT: u64 = 200_000_000;
const CEIL: u64 = 100_000_000;
const M: f64 = 1_000_000.0;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-28T02:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// One second under a cap of `total`: the sum sits at the cap (within
/// ±1.5 %, the read's timing) and dips after losses now and then; the
/// shares move each second, more for OPDs with few flows (`jitter`), as
/// flows competing for one cap trade rate.
fn capped(total: f64, weights: &[(f64, f64)], rng: &mut Rng) -> Vec<f64> {
    let sum = if rng.unit() < 0.15 {
        total * (1.0 - 0.05 - 0.10 * rng.unit())
    } else {
        rng.around(total, 0.015)
    };
    let shares: Vec<f64> = weights
        .iter()
        .map(|(w, jitter)| rng.around(*w, *jitter))
        .collect();
    let all: f64 = shares.iter().sum();
    shares.iter().map(|s| sum * s / all).collect()
}

/// One second of independent demand: each OPD around its own mean.
fn independent(means: &[f64], jitter: f64, rng: &mut Rng) -> Vec<f64> {
    means.iter().map(|m| rng.around(*m, jitter)).collect()
}

/// Drives one estimator second by second.
struct Feed {
    est: Estimator,
    second: i64,
    capacity: u64,
    co: CoSignals,
}

impl Feed {
    fn new() -> Self {
        Feed::with(Estimator::new())
    }

    /// Feeds an upload estimator ([`Estimator::counted_before_loss`]).
    fn counted_before_loss() -> Self {
        Feed::with(Estimator::counted_before_loss())
    }

    fn with(est: Estimator) -> Self {
        Feed {
            est,
            second: 0,
            capacity: CONTRACT,
            co: CoSignals::default(),
        }
    }

    fn now(&self) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(self.second)
    }

    /// One second: OPDs "o0", "o1", … at these rates, all held, each with
    /// the ceiling `CEIL`.
    fn held(&mut self, rates: &[f64]) -> Option<Delivered> {
        let classes = vec![OpdClass::Held; rates.len()];
        self.classed(rates, &classes, 0.0)
    }

    /// One second with explicit classes and unclassified traffic.
    fn classed(
        &mut self,
        rates: &[f64],
        classes: &[OpdClass],
        unclassified: f64,
    ) -> Option<Delivered> {
        let mut sources: Vec<SourceRate> = rates
            .iter()
            .zip(classes)
            .enumerate()
            .map(|(i, (r, c))| SourceRate {
                id: format!("o{i}"),
                bps: *r as u64,
                ceiling_bps: CEIL,
                class: *c,
            })
            .collect();
        sources.push(SourceRate {
            id: "unclassified".into(),
            bps: unclassified as u64,
            ceiling_bps: 0,
            class: OpdClass::Unclassified,
        });
        let at = self.now();
        self.second += 1;
        let co = self.co.clone();
        self.est.step(at, sources, self.capacity, &co).cloned()
    }
}

/// The three OPDs of the headline case: 15, 25 and 30 Mbit/s of demand
/// with 1, 4 and 8 flows (fewer flows, wilder shares).
const THREE: [(f64, f64); 3] = [(15.0, 0.6), (25.0, 0.35), (30.0, 0.2)];

fn within(x: u64, truth: f64, share: f64) -> bool {
    (x as f64 - truth).abs() <= share * truth
}

/// Runs the policing scenario; returns (seconds to medium, estimate then,
/// estimate after a minute).
fn policing(seed: u64, limit: f64) -> (i64, Delivered, Delivered) {
    let mut rng = Rng::new(seed);
    let mut f = Feed::new();
    for _ in 0..60 {
        let r = independent(&[15.0 * M, 25.0 * M, 30.0 * M], 0.2, &mut rng);
        if let Some(d) = f.held(&r) {
            assert!(
                d.confidence < Confidence::Medium,
                "seed {seed} before the drop: {d:?}"
            );
        }
    }
    let drop_at = f.now();
    let mut first = None;
    let mut last = None;
    for s in 0..60 {
        let r = capped(limit, &THREE, &mut rng);
        if let Some(d) = f.held(&r) {
            if first.is_none() && d.confidence >= Confidence::Medium {
                assert_eq!(d.since, drop_at, "since is the drop second");
                first = Some((s + 1, d.clone()));
            }
            last = Some(d);
        }
    }
    let (took, d) = first.expect("an estimate of medium or better");
    (took, d, last.expect("still held"))
}

#[test]
fn policing_30_of_70_across_three_opds_estimates_within_5pct() {
    // Medium without a co-signal needs a conservation ratio of 0.1 or less,
    // or 0.3 on 15 s of window (shorter windows let chance ratios from
    // independent demand through). This generator's losses dip the sum by
    // 5-15 % in one second of seven, so its ratio is often between the two
    // and most seeds wait for 15 s; the lab's traces (below) give 0.001.
    let mut times = Vec::new();
    for seed in 1..=20 {
        let (took, at_first, after) = policing(seed, 30.0 * M);
        times.push(took);
        assert!(took <= 20, "seed {seed}: medium after {took} s");
        for d in [&at_first, &after] {
            assert!(
                within(d.bps, 30.0 * M, 0.05),
                "seed {seed}: {} bit/s, {:?}",
                d.bps,
                d.evidence
            );
        }
        assert_eq!(at_first.evidence.held.len(), 3);
    }
    times.sort();
    eprintln!("seconds to medium: {times:?}");
    assert!(
        times.iter().filter(|t| **t <= 15).count() >= 17,
        "{times:?}"
    );
}

#[test]
fn queue_plus_inflated_probes_is_high_confidence() {
    let mut rng = Rng::new(7);
    let mut f = Feed::new();
    f.co.probes_inflated = true;
    let mut last = None;
    for _ in 0..30 {
        last = f.held(&capped(30.0 * M, &THREE, &mut rng));
    }
    let d = last.expect("an estimate");
    assert_eq!(d.confidence, Confidence::High);
    assert_eq!(d.evidence.co_signals, vec!["probes_inflated".to_string()]);
}

#[test]
fn independent_app_limited_demand_never_forms_an_estimate() {
    // Half an hour of each of several demand levels, 20 to 70 % of the
    // contract, spread over four OPDs that vary on their own.
    let mut formed = 0;
    let mut seconds = 0;
    for seed in 1..=5 {
        let mut rng = Rng::new(seed);
        let mut f = Feed::new();
        for s in 0..1800 {
            // The level wanders slowly between 20 and 70 % of the contract.
            let level = 0.45 + 0.25 * ((s as f64) / 300.0).sin();
            let each = level * CONTRACT as f64 / 4.0;
            let r = independent(&[each, each, each, each], 0.3, &mut rng);
            seconds += 1;
            if let Some(d) = f.held(&r) {
                formed += 1;
                assert!(
                    d.confidence < Confidence::Medium,
                    "seed {seed} second {s}: {d:?}"
                );
            }
        }
    }
    // Low estimates (evidence only, no verdict) do form by chance now and
    // then; they are counted for the record.
    eprintln!("{formed} of {seconds} seconds held a low estimate");
}

#[test]
fn steady_paced_sources_are_inconclusive_without_a_co_signal() {
    let mut f = Feed::new();
    for _ in 0..60 {
        assert!(f.held(&[10.0 * M, 10.0 * M, 10.0 * M]).is_none());
    }
    // The same steady flows behind a queue the probes see: medium.
    f.co.probes_inflated = true;
    let mut last = None;
    for _ in 0..5 {
        last = f.held(&[10.0 * M, 10.0 * M, 10.0 * M]);
    }
    let d = last.expect("an estimate with a co-signal");
    assert_eq!(d.confidence, Confidence::Medium);
    assert_eq!(d.evidence.conservation, None);
}

#[test]
fn one_opd_at_its_ceiling_with_drops_is_not_held() {
    // o0 sits flat at its ceiling (self-limited); the others are small and
    // independent: the flat sum is o0's own class, not the uplink.
    let mut rng = Rng::new(3);
    let mut f = Feed::new();
    let classes = [OpdClass::SelfLimited, OpdClass::Held, OpdClass::Held];
    for _ in 0..300 {
        let mut r = vec![rng.around(0.97 * CEIL as f64, 0.01)];
        r.extend(independent(&[3.0 * M, 4.0 * M], 0.3, &mut rng));
        assert!(f.classed(&r, &classes, 0.0).is_none());
    }
}

#[test]
fn one_slow_server_capping_one_opd_is_no_plateau() {
    // o0 is capped at 3 Mbit/s by a slow server; o1 and o2 vary freely.
    let mut rng = Rng::new(5);
    let mut f = Feed::new();
    for _ in 0..600 {
        let mut r = vec![rng.around(3.0 * M, 0.03)];
        r.extend(independent(&[25.0 * M, 30.0 * M], 0.3, &mut rng));
        if let Some(d) = f.held(&r) {
            assert!(d.confidence < Confidence::Medium, "{d:?}");
        }
    }
}

#[test]
fn quiet_night_below_min_load_is_no_estimate() {
    // 1.5 Mbit/s in all, capped or not: too little to judge.
    let mut rng = Rng::new(9);
    let mut f = Feed::new();
    for _ in 0..600 {
        let r = capped(1.5 * M, &THREE, &mut rng);
        assert!(f.held(&r).is_none());
    }
}

#[test]
fn an_excluded_lossy_lan_opd_is_no_evidence() {
    // o0's lossy LAN limits it (excluded); o1 is the only held OPD left.
    let mut rng = Rng::new(11);
    let mut f = Feed::new();
    let classes = [OpdClass::Excluded, OpdClass::Held, OpdClass::Inactive];
    for _ in 0..300 {
        let r = capped(20.0 * M, &[(10.0, 0.5), (10.0, 0.5)], &mut rng);
        let r = [r[0], r[1], 0.0];
        assert!(f.classed(&r, &classes, 0.0).is_none());
    }
}

#[test]
fn two_opds_sharing_one_cap_is_low_only() {
    let mut rng = Rng::new(13);
    let mut f = Feed::new();
    let mut last = None;
    for _ in 0..60 {
        last = f.held(&capped(20.0 * M, &[(10.0, 0.5), (10.0, 0.5)], &mut rng));
    }
    assert_eq!(last.expect("an estimate").confidence, Confidence::Low);
}

#[test]
fn ramp_after_slow_start_is_not_a_plateau() {
    // From 5 to 80 Mbit/s over 40 s, shares moving as under a cap.
    let mut rng = Rng::new(17);
    let mut f = Feed::new();
    for s in 0..40 {
        let total = (5.0 + 75.0 * s as f64 / 40.0) * M;
        assert!(f.held(&capped(total, &THREE, &mut rng)).is_none(), "{s}");
    }
}

/// A feed after 40 s under a 30 Mbit/s cap shared by [`THREE`] (an
/// estimate has formed), with its generator to go on.
fn capped_for_40_s(seed: u64) -> (Feed, Rng) {
    let mut rng = Rng::new(seed);
    let mut f = Feed::new();
    for _ in 0..40 {
        f.held(&capped(30.0 * M, &THREE, &mut rng));
    }
    (f, rng)
}

#[test]
fn lifted_limit_drops_the_estimate_within_3_s() {
    let (mut f, mut rng) = capped_for_40_s(19);
    assert!(f.est.delivered().is_some());
    let mut gone = None;
    for s in 1..=10 {
        let r = independent(&[15.0 * M, 25.0 * M, 30.0 * M], 0.2, &mut rng);
        if f.held(&r).is_none() {
            gone = Some(s);
            break;
        }
    }
    let gone = gone.expect("dropped");
    assert!(gone <= 3, "dropped after {gone} s");
}

#[test]
fn demand_lull_freezes_then_drops_after_60_s() {
    let (mut f, mut rng) = capped_for_40_s(23);
    let before = f.est.delivered().cloned().expect("an estimate");
    assert_eq!(before.confidence, Confidence::Medium);
    // Demand falls to 5 Mbit/s (the offices go to lunch).
    for s in 1..=60 {
        let r = independent(&[1.0 * M, 2.0 * M, 2.0 * M], 0.2, &mut rng);
        let now = f.held(&r);
        if s < 60 {
            let d = now.expect("frozen, still held");
            assert_eq!(d.bps, before.bps, "the figure is frozen");
            let expected = if s < 20 {
                Confidence::Medium
            } else {
                Confidence::Low
            };
            assert_eq!(d.confidence, expected, "second {s}");
        } else {
            assert!(now.is_none(), "gone after 60 s");
        }
    }
}

#[test]
fn upload_and_download_are_estimated_independently() {
    let mut rng = Rng::new(29);
    let mut down = Feed::new();
    let mut up = Feed::new();
    up.capacity = 50_000_000;
    for _ in 0..40 {
        down.held(&capped(30.0 * M, &THREE, &mut rng));
        up.held(&independent(&[3.0 * M, 5.0 * M, 6.0 * M], 0.3, &mut rng));
    }
    assert!(down.est.delivered().is_some());
    assert!(up.est.delivered().is_none());
}

/// Upload counted before the ISP's loss, less the duplicates of the last
/// 10 s: the total of a second reads either side of what the limit passed
/// (here ±12 % around 30 Mbit/s), while the OPDs trade rate as under any
/// cap.
fn upload_second(rng: &mut Rng) -> Vec<f64> {
    let passed = 30.0 * M;
    let counted = rng.around(passed, 0.12);
    capped(counted, &THREE, rng)
}

#[test]
fn an_upload_figure_is_the_windows_mean_and_holds_through_its_spread() {
    let (mut top, mut mean) = (Feed::new(), Feed::counted_before_loss());
    let mut rng = Rng::new(41);
    let (mut t, mut m) = (None, None);
    let mut mean_since = None;
    for s in 0..180 {
        let r = upload_second(&mut rng);
        t = top.held(&r);
        m = mean.held(&r);
        match (&m, mean_since) {
            (Some(d), None) => mean_since = Some(d.since),
            (Some(d), Some(since)) => assert_eq!(d.since, since, "second {s}: a new episode"),
            (None, Some(_)) => panic!("second {s}: the spread dropped the estimate"),
            (None, None) => {}
        }
    }
    let (t, m) = (t.expect("a p90 figure"), m.expect("a mean figure"));
    // The p90 of a two-sided spread reads high; the mean does not.
    assert!(t.bps as f64 > 1.05 * 30.0 * M, "{t:?}");
    assert!(within(m.bps, 30.0 * M, 0.03), "{m:?}");
    assert_eq!(m.evidence.p90_bps, t.evidence.p90_bps);
    // Seconds 17 % over the mean figure, yet under the window's top
    // (+15 %): the spread, not a lifted limit.
    let p90 = m.evidence.p90_bps as f64;
    let spread = 1.17 * m.bps as f64;
    assert!(spread < 1.15 * p90, "{m:?}");
    for s in 0..5 {
        let r = capped(spread, &THREE, &mut rng);
        assert!(mean.held(&r).is_some(), "dropped {s} s into the spread");
    }
    // Well over the top: lifted.
    let gone = (1..=5).find(|_| mean.held(&capped(1.5 * p90, &THREE, &mut rng)).is_none());
    assert!(gone.is_some_and(|s| s <= 3), "dropped after {gone:?} s");
}

#[test]
fn while_the_gateway_holds_the_traffic_at_its_adapted_capacity_the_figure_stands() {
    let (mut f, mut rng) = capped_for_40_s(43);
    let formed = f.est.delivered().cloned().expect("an estimate");
    assert!(formed.confidence >= Confidence::Medium, "{formed:?}");
    // Adapted to 30 less 15 %: jatah's classes hold each office steady at
    // its share of 25.5 Mbit/s, so no plateau shows rate being traded.
    let effective = 25_500_000;
    let steady = |rng: &mut Rng| {
        [6.0, 8.5, 11.0].map(|share: f64| rng.around(share * M, 0.01))
    };
    for s in 0..120 {
        let r = steady(&mut rng);
        f.held(&r);
        // The root class sends its rate, within HTB's percent or two.
        f.est.hold_basis(formed.bps, effective, (0.98 * effective as f64) as u64, false);
        let d = f.est.delivered().expect("held");
        assert!(within(d.bps, formed.bps as f64, 0.05), "second {s}: {d:?}");
        assert!(d.confidence >= Confidence::Medium, "second {s}: {d:?}");
    }
    // Offices asking less than the gateway allows: nothing holds the
    // figure any more, and it goes like any unconfirmed one.
    let mut gone = None;
    for s in 1..=70 {
        let r = [3.0 * M, 4.0 * M, 5.0 * M];
        f.held(&r);
        f.est.hold_basis(formed.bps, effective, (12.0 * M) as u64, false);
        if f.est.delivered().is_none() {
            gone = Some(s);
            break;
        }
    }
    assert_eq!(gone, Some(LULL_DROP_S as i32), "dropped after {gone:?} s");
}

/// After a probe the offices' demand, not the gateway, sets the traffic:
/// their counted rates (which include what their own classes drop at
/// their ceilings) still add up to about the gateway's capacity, but its
/// root class sends less than that. Nothing holds the figure.
#[test]
fn offices_short_of_the_gateways_capacity_do_not_hold_the_figure() {
    let (mut f, mut rng) = capped_for_40_s(53);
    let formed = f.est.delivered().cloned().expect("an estimate");
    let effective = 25_500_000;
    let mut gone = None;
    for s in 1..=70 {
        let r = [6.0, 8.5, 11.0].map(|share: f64| rng.around(share * M, 0.01));
        f.held(&r);
        f.est.hold_basis(formed.bps, effective, (0.88 * effective as f64) as u64, false);
        if f.est.delivered().is_none() {
            gone = Some(s);
            break;
        }
    }
    // A few seconds of the old window's plateau, then a lull's minute.
    assert!(
        gone.is_some_and(|s| s <= LULL_DROP_S as i32 + 8),
        "dropped after {gone:?} s"
    );
}

/// The gateway adapts on the second a figure is medium; the next second's
/// plateau may judge it low (upload's conservation ratio hovers about the
/// medium bound). The figure keeps the confidence the gateway acted on.
#[test]
fn the_figure_keeps_the_confidence_the_gateway_adapted_on() {
    let (mut f, mut rng) = capped_for_40_s(47);
    let formed = f.est.delivered().cloned().expect("an estimate");
    assert!(formed.confidence >= Confidence::Medium, "{formed:?}");
    // Adapted to 30 less 5 %; the ISP still carries 30, and one office of
    // three is now at its own ceiling: two held OPDs make a low plateau.
    let effective = 28_500_000;
    let classes = [OpdClass::Held, OpdClass::Held, OpdClass::SelfLimited];
    for s in 0..30 {
        let r = capped(30.0 * M, &THREE, &mut rng);
        let d = f.classed(&r, &classes, 0.0).expect("held");
        if s == 0 {
            assert_eq!(d.confidence, Confidence::Low, "the plateau alone: {d:?}");
        }
        f.est.hold_basis(formed.bps, effective, effective, false);
        let d = f.est.delivered().expect("held");
        assert!(d.confidence >= Confidence::Medium, "second {s}: {d:?}");
    }
}

/// The gateway held at its floor just under a partly recovered ISP: no
/// plateau trades rate, so no figure holds at medium; a probe that met
/// congestion carrying 6.4 Mbit/s becomes the figure, and stands while
/// the gateway holds the traffic. Not for upload, whose root class sends
/// before the ISP drops.
#[test]
fn a_probe_that_met_congestion_is_the_figure_while_the_gateway_holds_the_traffic() {
    let mut up = Feed::counted_before_loss();
    up.est.probed(up.now(), 6_400_000);
    assert!(up.est.delivered().is_none(), "{:?}", up.est.delivered());
    let mut rng = Rng::new(59);
    let mut f = Feed::new();
    let effective = 6_000_000;
    let steady = |rng: &mut Rng| [1.5, 2.0, 2.5].map(|m: f64| rng.around(m * M, 0.01));
    for _ in 0..30 {
        f.held(&steady(&mut rng));
        f.est.hold_basis(2_400_000, effective, effective, false);
    }
    assert!(
        f.est.delivered().is_none_or(|d| d.confidence < Confidence::Medium),
        "{:?}",
        f.est.delivered()
    );
    let at = f.now();
    f.est.probed(at, 6_400_000);
    for s in 0..60 {
        f.held(&steady(&mut rng));
        f.est.probed(f.now(), 6_400_000);
        f.est.hold_basis(2_400_000, effective, effective, false);
        let d = f.est.delivered().expect("held");
        assert_eq!(d.bps, 6_400_000, "second {s}");
        assert!(d.confidence >= Confidence::Medium, "second {s}: {d:?}");
        assert!(d.evidence.co_signals.iter().any(|c| c == "probe_met_congestion"));
    }
    // A probe holds (the ISP recovered): no more measure, the traffic
    // climbs, and the figure goes.
    let gone = (1..=10).find(|_| {
        f.held(&[3.0 * M, 4.0 * M, 5.0 * M]);
        f.est.hold_basis(2_400_000, 7_500_000, 7_500_000, false);
        f.est.delivered().is_none()
    });
    assert!(gone.is_some_and(|s| s <= 4), "dropped after {gone:?} s");
}

/// While adapted, a plateau at the gateway's own capacity reads the
/// basis; one clearly above it was offered through the ISP and stands.
#[test]
fn a_plateau_above_the_adapted_capacity_is_not_replaced_by_the_basis() {
    let effective = 25_500_000;
    for (level, expect) in [(25.8, 30.0), (26.4, 26.4)] {
        let (mut f, mut rng) = capped_for_40_s(61);
        // The ISP now carries `level`: the offices trade rate below it.
        let mut last = None;
        for _ in 0..40 {
            f.held(&capped(level * M, &THREE, &mut rng));
            f.est.hold_basis(30_000_000, effective, effective, false);
            last = f.est.delivered().cloned();
        }
        let d = last.expect("held");
        assert!(within(d.bps, expect * M, 0.03), "plateau {level}: {d:?}");
    }
}

/// While adapted, a plateau clearly below the gateway's capacity is the
/// ISP's only with congestion beyond the gateway, judged after the
/// capacity settled: the congestion of the 10 s before the gateway
/// adapted does not make its own shaped rate the ISP's figure.
#[test]
fn a_plateau_below_the_adapted_capacity_needs_congestion_after_it_settled() {
    // Adapted to 30 less 15 %; the offices now trade rate at 22 (the
    // gateway's own classes, or an ISP that fell further).
    let effective = 25_500_000;
    let run = |congested: &dyn Fn(u32) -> bool| {
        let (mut f, mut rng) = capped_for_40_s(67);
        let mut figures = Vec::new();
        for s in 0..40 {
            f.held(&capped(22.0 * M, &THREE, &mut rng));
            f.est.hold_basis(30_000_000, effective, effective, congested(s));
            figures.push(f.est.delivered().expect("held").bps);
        }
        figures
    };
    // No congestion, or only the lingering one of the first 10 s: the
    // basis stands throughout.
    for figures in [run(&|_| false), run(&|s| s < 10)] {
        assert!(
            figures.iter().all(|&b| within(b, 30.0 * M, 0.03)),
            "{figures:?}"
        );
    }
    // Congested throughout: the basis until the capacity settled, then
    // the lower plateau is news.
    let figures = run(&|_| true);
    let before = &figures[..SETTLE_S as usize];
    assert!(before.iter().all(|&b| within(b, 30.0 * M, 0.03)), "{figures:?}");
    let last = *figures.last().unwrap();
    assert!(within(last, 22.0 * M, 0.05), "{figures:?}");
}

/// TCP loss beyond the gateway raises a download plateau to high; an
/// upload one, whose rates it corrected, to medium at most.
#[test]
fn the_loss_co_signal_raises_an_upload_plateau_to_medium_only() {
    let loss = CoSignals {
        wan_tcp_loss: true,
        ..CoSignals::default()
    };
    let mut best = Vec::new();
    for mut f in [Feed::new(), Feed::counted_before_loss()] {
        f.co = loss.clone();
        let mut rng = Rng::new(71);
        let mut top = None;
        for _ in 0..40 {
            if let Some(d) = f.held(&capped(30.0 * M, &THREE, &mut rng)) {
                top = top.max(Some(d.confidence));
            }
        }
        best.push(top);
    }
    assert_eq!(best, [Some(Confidence::High), Some(Confidence::Medium)]);
}

#[test]
fn unclassified_traffic_counts_in_the_aggregate() {
    // A quarter of the capped 40 Mbit/s matches no OPD.
    let mut rng = Rng::new(31);
    let mut f = Feed::new();
    let classes = [OpdClass::Held; 3];
    let weights = [(15.0, 0.6), (25.0, 0.35), (30.0, 0.2), (23.0, 0.4)];
    let mut last = None;
    for _ in 0..40 {
        let r = capped(40.0 * M, &weights, &mut rng);
        last = f.classed(&r[..3], &classes, r[3]);
    }
    let d = last.expect("an estimate");
    assert!(within(d.bps, 40.0 * M, 0.05), "{d:?}");
}

#[test]
fn p90_ignores_one_timing_spike() {
    let mut rng = Rng::new(37);
    let mut f = Feed::new();
    let mut last = None;
    for s in 0..30 {
        let mut r = capped(30.0 * M, &THREE, &mut rng);
        if s == 25 {
            // A tbf burst and the counter read's timing: 20 % over.
            r.iter_mut().for_each(|x| *x *= 1.2);
        }
        last = f.held(&r);
    }
    let d = last.expect("an estimate");
    assert!(d.bps as f64 <= 1.02 * 30.0 * M, "{d:?}");
    assert!(d.evidence.window_s >= 8);
}

#[test]
fn a_clock_gap_or_a_reload_drops_the_estimate() {
    let mut rng = Rng::new(41);
    let mut f = Feed::new();
    for _ in 0..30 {
        f.held(&capped(30.0 * M, &THREE, &mut rng));
    }
    assert!(f.est.delivered().is_some());
    f.second += 3600;
    assert!(f.held(&capped(30.0 * M, &THREE, &mut rng)).is_none());
    for _ in 0..30 {
        f.held(&capped(30.0 * M, &THREE, &mut rng));
    }
    assert!(f.est.delivered().is_some());
    f.capacity = 300_000_000;
    assert!(f.held(&capped(30.0 * M, &THREE, &mut rng)).is_none());
}

/// One lab run, second by second: the trace written by the lab under a
/// tbf on the Internet side (`tests/diagnosis.rs` setup: 40M contract, four
/// OPDs with 10M ceilings, three bulk and one paced), replayed through the
/// estimator with the engine's classes rebuilt from its columns.
struct Replay {
    /// Seconds from the limit to the first medium-or-better estimate, and
    /// its evidence then.
    to_medium: Option<usize>,
    at_medium: Option<PlateauEvidence>,
    /// Estimate at the end of the limited phase and the tbf's mean rate
    /// over that phase (the truth).
    estimate: Option<u64>,
    truth: f64,
    /// Seconds from the lift to the estimate's drop.
    to_drop: Option<usize>,
    /// Seconds an estimate held before the limit.
    before: usize,
}

fn replay(csv: &str) -> Replay {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let num = |r: &Vec<&str>, c: usize| r[c].parse::<f64>().unwrap_or(0.0);
    let opds = ["dinkes", "disdik", "bappeda", "kec-waru"];
    let phase = col("phase");
    let mut f = Feed::new();
    f.capacity = 40_000_000;
    let mut history: Vec<Vec<(f64, f64)>> = vec![Vec::new(); opds.len()];
    let mut prev_drops = vec![None; opds.len()];
    let (mut limit_at, mut lift_at) = (None, None);
    let mut out = Replay {
        to_medium: None,
        at_medium: None,
        estimate: None,
        truth: 0.0,
        to_drop: None,
        before: 0,
    };
    let mut truth = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        if limit_at.is_none() && r[phase].starts_with("limited") {
            limit_at = Some(i);
        }
        if lift_at.is_none() && r[phase].starts_with("lifted") {
            lift_at = Some(i);
        }
        let mut sources = Vec::new();
        for (k, o) in opds.iter().enumerate() {
            let bps = num(r, col(&format!("{o}_download_bps_1s")));
            let ceil = num(r, col(&format!("{o}_download_ceiling_bps")));
            let drops = num(r, col(&format!("{o}_download_htb_drops_total")));
            let new_drops = prev_drops[k].map_or(0.0, |p| drops - p);
            prev_drops[k] = Some(drops);
            history[k].push((bps, new_drops));
            // The engine's classes: 10 s mean against the ceiling, HTB drops
            // in 10 s, a least rate to be active.
            let last: Vec<&(f64, f64)> = history[k].iter().rev().take(10).collect();
            let mean = last.iter().map(|(b, _)| b).sum::<f64>() / last.len() as f64;
            let dropped = last.iter().any(|(_, d)| *d > 0.0);
            let class = if mean < 256_000f64.max(0.02 * ceil) {
                OpdClass::Inactive
            } else if mean >= 0.9 * ceil || dropped {
                OpdClass::SelfLimited
            } else {
                OpdClass::Held
            };
            sources.push(SourceRate {
                id: o.to_string(),
                bps: bps as u64,
                ceiling_bps: ceil as u64,
                class,
            });
        }
        sources.push(SourceRate {
            id: "unclassified".into(),
            bps: num(r, col("unclassified_download_bps_since_prev_row")) as u64,
            ceiling_bps: 0,
            class: OpdClass::Unclassified,
        });
        let at = f.now();
        f.second += 1;
        let held = f.est.step(at, sources, 40_000_000, &CoSignals::default()).cloned();
        match (limit_at, lift_at) {
            (None, _) => out.before += usize::from(held.is_some()),
            (Some(l), None) => {
                if out.to_medium.is_none()
                    && held.as_ref().is_some_and(|d| d.confidence >= Confidence::Medium)
                {
                    out.to_medium = Some(i - l + 1);
                    out.at_medium = held.as_ref().map(|d| d.evidence.clone());
                }
                out.estimate = held.map(|d| d.bps);
                // The tbf's own count, once its rate has settled.
                if i > l + 1 {
                    truth.push(num(r, col("tbf_sent_bps_since_prev_row")));
                }
            }
            (Some(_), Some(l)) => {
                if out.to_drop.is_none() && held.is_none() {
                    out.to_drop = Some(i - l + 1);
                }
            }
        }
    }
    out.truth = truth.iter().sum::<f64>() / truth.len().max(1) as f64;
    out
}

fn check_lab_trace(name: &str, csv: &str) {
    let r = replay(csv);
    eprintln!(
        "{name}: medium after {:?} s, estimate {:?} vs tbf {:.0} bit/s, dropped {:?} s after the lift",
        r.to_medium, r.estimate, r.truth, r.to_drop
    );
    eprintln!("{name}: at medium {:?}", r.at_medium);
    assert_eq!(r.before, 0, "no estimate before the limit");
    // The verdict (5 s later) within the 30 s.
    assert!(r.to_medium.is_some_and(|s| s <= 25), "{:?}", r.to_medium);
    let e = r.estimate.expect("held at the end of the limit") as f64;
    assert!((e - r.truth).abs() <= 0.10 * r.truth, "{e} vs {}", r.truth);
    assert!((e - 12e6).abs() <= 0.10 * 12e6, "{e}");
    if csv.contains("lifted") {
        assert!(r.to_drop.is_some_and(|s| s <= 5), "{:?}", r.to_drop);
    }
}

#[test]
fn the_lab_policed_to_30pct_is_estimated_within_10pct() {
    check_lab_trace("policing", include_str!("trace-policing-30pct.csv"));
}

#[test]
fn the_lab_behind_a_100ms_queue_is_estimated_within_10pct() {
    check_lab_trace("queue 100 ms", include_str!("trace-queue-100ms.csv"));
}
