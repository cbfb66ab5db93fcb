use super::*;

const C: u64 = 100_000_000;

fn input(carried: u64, delivered: Option<u64>, congested: bool) -> Input {
    Input {
        contract_bps: C,
        carried_bps: carried,
        queued_bps: 0,
        delivered_bps: delivered,
        congested,
        margin: MARGIN_UPLOAD,
        arrived_share: None,
    }
}

/// Steps `n` seconds with `f(second)`; the changes made.
fn run(c: &mut Controller, n: u32, mut f: impl FnMut(u32, u64) -> Input) -> Vec<Change> {
    (0..n)
        .filter_map(|s| {
            let cap = c.effective(C);
            c.step(&f(s, cap))
        })
        .collect()
}

/// An ISP that delivers `isp` bit/s to offices that want `demand`: the
/// traffic carried is the least of the two and the capacity in force;
/// with the capacity above the ISP the ISP's queue fills (congested)
/// and, below 85% of the capacity in force, an estimate forms.
fn world(isp: u64, demand: u64) -> impl Fn(u32, u64) -> Input {
    move |_, cap| {
        let carried = isp.min(demand).min(cap);
        let congested = cap > isp && demand > isp;
        // An estimate forms when the ISP limits; while the gateway
        // limits, it reads the gateway's own capacity.
        let delivered = if congested && (carried as f64) < 0.85 * cap as f64 {
            Some(isp)
        } else if demand > cap && cap < C {
            Some(cap)
        } else {
            None
        };
        input(carried, delivered, congested)
    }
}

/// A controller adapted to an ISP that delivers 40M of the contract:
/// 38M in force (the upload margin), basis 40M.
fn adapted_to_40m() -> Controller {
    let mut c = Controller::default();
    run(&mut c, 30, world(C, 2 * C));
    run(&mut c, 30, world(40_000_000, 2 * C));
    assert_eq!(c.effective(C), 38_000_000);
    c
}

/// Steps up to `n` seconds with `f(second, cap)` until the capacity is
/// back at the contract: the second it was (None: not within `n`), and
/// the changes made.
fn until_contract(
    c: &mut Controller,
    n: u32,
    mut f: impl FnMut(u32, u64) -> Input,
) -> (Option<u32>, Vec<Change>) {
    let mut changes = Vec::new();
    for s in 0..n {
        let cap = c.effective(C);
        changes.extend(c.step(&f(s, cap)));
        if !c.adapted() {
            return (Some(s), changes);
        }
    }
    (None, changes)
}

#[test]
fn at_the_contract_nothing_moves() {
    let mut c = Controller::default();
    assert!(run(&mut c, 300, world(C, 2 * C)).is_empty());
    assert!(run(&mut c, 300, world(C, C / 10)).is_empty());
    assert_eq!(c.effective(C), C);
}

#[test]
fn a_drop_is_followed_at_once_and_held_while_probes_fail() {
    let mut c = Controller::default();
    run(&mut c, 30, world(C, 2 * C));
    let changes = run(&mut c, 600, world(40_000_000, 2 * C));
    assert_eq!(changes[0].reason, Reason::IspDeliversLess);
    assert_eq!(changes[0].to_bps, 38_000_000, "40M less 5%");
    // Probes go above the ISP and come back, at most every 30 s; never
    // below the first step.
    let probes = changes.iter().filter(|c| c.reason == Reason::Probe).count();
    assert!((10..=25).contains(&probes), "{probes}: {changes:?}");
    assert!(changes.iter().all(|c| c.to_bps >= 38_000_000 && c.to_bps < C));
    assert_eq!(c.effective(C), 38_000_000);
    // Seconds spent above what the ISP delivers: few.
    let mut above = 0;
    run(&mut c, 600, |s, cap| {
        above += u32::from(cap > 40_000_000);
        world(40_000_000, 2 * C)(s, cap)
    });
    assert!(above <= 60, "{above} s of 600 above the ISP");
}

/// The ISP's congestion signs come too late for a 3-second probe (the
/// verdict takes longer): the traffic carried alone must show that the
/// ISP still limits. Download's margin leaves the capacity at 34M
/// under a 40M ISP, so a probe sized from the capacity (42.5M) would
/// be 94% carried and hold.
#[test]
fn an_upload_probe_above_a_policer_is_judged_on_what_arrived() {
    // Upload policed to 40M, no sign beyond: TCP offers the root all
    // the capacity in force, the far ends acknowledge 40M of it.
    let isp = 40_000_000;
    let policed = |arrived: bool| {
        move |_: u32, cap: u64| Input {
            arrived_share: arrived.then(|| (isp as f64 / cap as f64).min(1.0)),
            ..input(cap, (cap > isp).then_some(isp), false)
        }
    };
    let adapted = || {
        let mut c = Controller::default();
        run(&mut c, 30, world(C, 2 * C));
        run(&mut c, 20, world(isp, 2 * C));
        assert_eq!(c.effective(C), 38_000_000, "40M less 5%");
        c
    };
    // A probe held is followed at once by the next, from its rate.
    let held = |changes: &[Change]| {
        changes
            .iter()
            .any(|c| c.reason == Reason::Probe && c.from_bps > 38_000_000)
    };
    let mut c = adapted();
    let changes = run(&mut c, 300, policed(true));
    assert!(changes.iter().any(|c| c.reason == Reason::ProbeFailed), "{changes:?}");
    assert!(!held(&changes), "every probe taken back: {changes:?}");
    assert_eq!(c.settled(C), 38_000_000, "{changes:?}");
    // Judged on the root's count alone, the probes hold, step after
    // step, over a policer at 40%.
    let mut c = adapted();
    let changes = run(&mut c, 300, policed(false));
    assert!(held(&changes), "{changes:?}");
}

#[test]
fn a_probe_fails_on_the_traffic_alone_when_the_isp_still_limits() {
    let isp = 40_000_000;
    let quiet = move |_: u32, cap: u64| Input {
        margin: MARGIN_DOWNLOAD,
        ..input(isp.min(cap), (cap > isp).then_some(isp), false)
    };
    let mut c = Controller::default();
    run(&mut c, 30, world(C, 2 * C));
    run(&mut c, 20, |s, cap| Input {
        margin: MARGIN_DOWNLOAD,
        ..world(isp, 2 * C)(s, cap)
    });
    assert_eq!(c.effective(C), 34_000_000, "40M less 15%");
    let changes = run(&mut c, 300, quiet);
    assert!(changes.iter().any(|c| c.reason == Reason::Probe), "{changes:?}");
    assert!(
        changes
            .iter()
            .filter(|c| c.reason == Reason::Probe)
            .all(|c| c.to_bps >= 50_000_000),
        "every probe reaches 1.25x the 40M delivered: {changes:?}"
    );
    assert_eq!(c.settled(C), 34_000_000, "{changes:?}");
}

/// The gateway's own queues fill while it holds the offices below the
/// ISP, and empty at a probe's rate first: above an ISP that still
/// delivers 40M, a probe to 50M carries 50M for two seconds. What
/// drained is not the uplink's; the probe must still be taken back (in
/// the lab it was kept, and the offices shared the ISP's queue again).
#[test]
fn a_probe_is_judged_without_what_drains_from_the_gateways_queues() {
    let isp = 40_000_000;
    let mut c = Controller::default();
    run(&mut c, 30, world(C, 2 * C));
    run(&mut c, 20, |s, cap| Input {
        margin: MARGIN_DOWNLOAD,
        ..world(isp, 2 * C)(s, cap)
    });
    assert_eq!(c.effective(C), 34_000_000);
    // 24 Mbit queued at the gateway whenever it holds below the ISP.
    let mut queued = 0;
    let changes = run(&mut c, 300, |_, cap| {
        if cap <= isp {
            queued = 24_000_000;
        }
        let drained = queued.min(cap.saturating_sub(isp));
        queued -= drained;
        Input {
            margin: MARGIN_DOWNLOAD,
            queued_bps: -(drained as i64),
            ..input(isp.min(cap) + drained, (cap > isp).then_some(isp), false)
        }
    });
    let failed: Vec<_> = changes
        .iter()
        .filter(|c| c.reason == Reason::ProbeFailed)
        .collect();
    assert!(!failed.is_empty(), "{changes:?}");
    assert!(
        failed.iter().all(|c| c.measured_bps == Some(isp)),
        "each probe measured the ISP's 40M: {failed:?}"
    );
    assert_eq!(c.settled(C), 34_000_000, "{changes:?}");
}

/// After the ISP recovers, offices that ask for less than the next
/// probe leave it short; the capacity must not stay below what they
/// ask (seen in the lab: 28 of 40M held against 32M of demand).
#[test]
fn a_probe_short_of_demand_on_a_recovered_isp_is_kept() {
    let mut c = Controller::default();
    run(&mut c, 30, world(C, 2 * C));
    run(&mut c, 30, |s, cap| Input {
        margin: MARGIN_DOWNLOAD,
        ..world(40_000_000, 2 * C)(s, cap)
    });
    assert_eq!(c.effective(C), 34_000_000);
    // The ISP is back; the offices ask 45M.
    let demand = 45_000_000;
    let changes = run(&mut c, 120, |s, cap| Input {
        margin: MARGIN_DOWNLOAD,
        ..world(C, demand)(s, cap)
    });
    assert!(
        c.effective(C) > demand,
        "in force {} against a demand of {demand}: {changes:?}",
        c.effective(C)
    );
}

/// Offices asking a little more than the ISP was known to deliver
/// (between [`ABOVE_BASIS`] and [`DEMAND_LIMITED`] of it) leave every
/// probe short; with no sign of congestion the probe is kept after
/// [`PROBE_CONFIRM_S`], and the gateway stops holding them back.
#[test]
fn a_probe_a_little_above_the_basis_is_kept_when_no_congestion_shows() {
    let mut c = adapted_to_40m();
    assert_eq!(c.basis(), Some(40_000_000));
    // The ISP is back; the offices ask 42M, 5% over the basis.
    let demand = 42_000_000;
    let mut kept_after = None;
    for s in 0..120 {
        let cap = c.effective(C);
        c.step(&world(C, demand)(s, cap));
        if kept_after.is_none() && c.settled(C) > demand {
            kept_after = Some(s);
        }
    }
    let kept = kept_after.expect("a probe kept");
    assert!(c.settled(C) > demand, "in force {}", c.settled(C));
    assert!(kept <= 10 + PROBE_CONFIRM_S + 2, "kept after {kept} s");
}

/// The figure the gateway adapted to stays while the gateway holds the
/// traffic below it (`Estimator::hold_basis`, then fading over a minute),
/// so after the ISP recovers it still reads below every probe. Without a
/// sign of congestion it is no news: a probe in doubt is judged at
/// [`PROBE_CONFIRM_S`], not undone at the cooldown by that figure, and a
/// kept one is not taken back by it (seen in the lab after 3% random
/// upload loss ended: probes undone every 30 s, "isp_delivers_less").
#[test]
fn the_held_figure_without_congestion_undoes_no_probe() {
    let mut c = adapted_to_40m();
    // The ISP is back; the offices ask 43M; the figure still reads 40M.
    let demand = 43_000_000;
    let changes = run(&mut c, 120, |_, cap| {
        input(demand.min(cap), Some(40_000_000), false)
    });
    assert!(
        c.settled(C) > demand,
        "in force {}: {changes:?}",
        c.settled(C)
    );
    assert!(
        !changes.iter().any(|ch| ch.reason == Reason::IspDeliversLess),
        "{changes:?}"
    );
    // The same figure with congestion beyond the gateway: the ISP limits
    // again, and the gateway follows it down.
    let changes = run(&mut c, 30, |_, cap| {
        input(40_000_000.min(cap), Some(40_000_000), true)
    });
    assert_eq!(changes.last().map(|ch| ch.reason), Some(Reason::IspDeliversLess));
    assert_eq!(c.effective(C), 38_000_000);
}

/// A probe in doubt that meets congestion within its wait is undone.
#[test]
fn a_probe_in_doubt_that_meets_congestion_is_undone() {
    let mut c = adapted_to_40m();
    // The ISP now delivers 42M: the probe carries 5% over the basis,
    // and the ISP's queue shows 6 s into it.
    let isp = 42_000_000;
    let mut since_probe = 0;
    let changes = run(&mut c, 200, |s, cap| {
        since_probe = if cap > isp { since_probe + 1 } else { 0 };
        Input {
            congested: since_probe >= 6,
            ..world(isp, 2 * C)(s, cap)
        }
    });
    assert!(changes.iter().any(|c| c.reason == Reason::ProbeFailed), "{changes:?}");
    assert!(c.settled(C) < isp, "in force {}: {changes:?}", c.settled(C));
}

/// A probe that meets congestion says what the ISP delivers; one that
/// holds says it no longer limits there.
#[test]
fn a_probe_that_meets_congestion_measures_the_isp() {
    let mut c = Controller::default();
    run(&mut c, 30, world(C, 2 * C));
    run(&mut c, 10, world(40_000_000, 2 * C));
    assert!(c.adapted());
    assert_eq!(c.probed(), None, "no probe yet");
    let changes = run(&mut c, 60, world(40_000_000, 2 * C));
    assert!(changes.iter().any(|c| c.reason == Reason::ProbeFailed), "{changes:?}");
    assert_eq!(c.probed(), Some(40_000_000));
    // The ISP recovers: a probe holds, and the measure goes.
    let mut gone = None;
    for s in 0..120 {
        let cap = c.effective(C);
        c.step(&world(C, 2 * C)(s, cap));
        if c.probed().is_none() {
            gone = Some(s);
            break;
        }
    }
    assert!(gone.is_some(), "still {:?}", c.probed());
}

#[test]
fn offices_are_told_the_settled_capacity_not_a_probe() {
    let mut c = Controller::default();
    run(&mut c, 30, world(C, 2 * C));
    run(&mut c, 60, world(40_000_000, 2 * C));
    let mut seen = Vec::new();
    for s in 0..300 {
        let cap = c.effective(C);
        c.step(&world(40_000_000, 2 * C)(s, cap));
        seen.push((c.probing(), c.effective(C), c.settled(C)));
    }
    assert!(seen.iter().any(|(p, _, _)| *p), "a probe was seen");
    for (probing, in_force, settled) in seen {
        assert_eq!(settled, 38_000_000, "probing {probing}, in force {in_force}");
        assert_eq!(probing, in_force > settled);
    }
}

/// A controller adapted to an ISP at 40% of the contract, the offices
/// asking twice the contract.
fn adapted_to_an_isp_at_40m() -> Controller {
    let mut c = Controller::default();
    run(&mut c, 30, world(C, 2 * C));
    run(&mut c, 120, world(40_000_000, 2 * C));
    assert!(c.adapted());
    c
}

#[test]
fn the_contract_returns_within_a_minute_of_the_isp_recovering() {
    let mut c = adapted_to_an_isp_at_40m();
    let (took, _) = until_contract(&mut c, 120, world(C, 2 * C));
    let took = took.expect("back at the contract");
    assert!(took <= 60, "{took} s");
}

/// The gateway's queues swing from second to second while it holds
/// the offices (a leaf of 1000 packets is a second of 12 Mbit/s): the
/// seconds they shrink are not judged, and the others carry the
/// capacity, so no probe fails on a recovered ISP (judged on what
/// reached the queues, every other second read short).
#[test]
fn the_gateways_queue_swings_do_not_fail_probes_on_a_recovered_isp() {
    let mut c = adapted_to_an_isp_at_40m();
    let (took, changes) = until_contract(&mut c, 120, |s, cap| {
        let swing = (cap / 5) as i64;
        Input {
            queued_bps: if s % 2 == 0 { swing } else { -swing },
            ..world(C, 2 * C)(s, cap)
        }
    });
    let took = took.expect("back at the contract");
    assert!(
        changes.iter().all(|c| c.reason != Reason::ProbeFailed),
        "{changes:?}"
    );
    assert!(took <= 30, "{took} s: {changes:?}");
}

#[test]
fn the_floor_bounds_the_drop() {
    let mut c = Controller::default();
    run(&mut c, 20, world(C, 2 * C));
    run(&mut c, 20, world(5_000_000, 2 * C));
    assert_eq!(c.effective(C), 30_000_000);
}

#[test]
fn light_traffic_restores_the_contract() {
    let mut c = Controller::default();
    run(&mut c, 20, world(40_000_000, 2 * C));
    assert!(c.adapted());
    let changes = run(&mut c, IDLE_S + 5, world(40_000_000, 5_000_000));
    assert_eq!(changes.last().map(|c| c.reason), Some(Reason::Contract));
    assert!(!c.adapted());
}

#[test]
fn small_differences_make_no_change_and_a_new_contract_clears_the_cap() {
    let mut c = Controller::default();
    // 97% of the contract delivered: not worth a change.
    assert!(run(&mut c, 60, |_, _| input(97_000_000, Some(97_000_000), true)).is_empty());
    run(&mut c, 20, world(40_000_000, 2 * C));
    assert!(c.adapted());
    // The contract is lowered below the cap by a reload.
    let ch = c.step(&Input {
        contract_bps: 30_000_000,
        ..input(30_000_000, None, false)
    });
    assert_eq!(ch.map(|c| c.reason), Some(Reason::ContractChanged));
    assert!(!c.adapted());
    assert_eq!(c.effective(30_000_000), 30_000_000);
}

/// A probe that would end a little below the contract (78M delivered,
/// 1.25x is 97.5M of 100M) goes to the contract: offices asking 80% of
/// it could never fill a gateway at 97.5M enough for the last step, and
/// left it scaled for good.
#[test]
fn a_step_that_ends_just_below_the_contract_is_the_contract() {
    let mut c = Controller::default();
    run(&mut c, 30, world(C, 2 * C));
    run(&mut c, 30, world(78_000_000, 2 * C));
    assert_eq!(c.effective(C), 74_100_000);
    let (back, changes) = until_contract(&mut c, 120, world(C, 80_000_000));
    assert!(back.is_some(), "still adapted: {changes:?}");
    assert_eq!(changes.len(), 1, "one step, to the contract: {changes:?}");
    assert_eq!(changes[0].to_bps, C);
}
