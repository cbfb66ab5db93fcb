//! What the uplink delivers, per direction, read from the rates jatah
//! already counts each second.
//!
//! A capped uplink (an ISP policing the line, a congested upstream) leaves a
//! signature no single OPD shows: the aggregate sits flat below the contract
//! and below what the OPDs' ceilings allow, while the OPDs trade rate among
//! themselves (one gains what another loses). Independent demand does the
//! opposite: its variances add up. The [`Estimator`] looks for that plateau
//! over the last seconds and, when it holds, says how much the uplink
//! delivers, how sure it is and since when.
//!
//! Pure: it takes plain numbers and classes, so it names nothing of the
//! engine that feeds it (no module cycle), and tests drive it directly.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// Seconds in which the start of the plateau is looked for: a drop is
/// judged once its seconds are the majority, 8 s in.
const CORE_WINDOW_S: usize = 15;
/// Seconds of aggregate kept: the plateau window grows back to this while
/// the older seconds sit at the same level. 30 rather than 15: with
/// independent demand the conservation ratio of a 15 s window falls to 0.3
/// by chance about once an hour of busy traffic (a false medium estimate,
/// measured on synthetic demand), of a 30 s window not once in 20 hours.
const MAX_WINDOW_S: usize = 30;
/// The shortest plateau window: fewer seconds cannot tell a plateau from a
/// pause between two bursts.
const MIN_WINDOW_S: usize = 8;
/// A second above this multiple of the window's median is not part of it
/// (seconds from before a drop fall out), nor an older second outside
/// [median/ratio, median·ratio] when the window grows back. A new plateau
/// this far from the estimate is a new episode, with its own start.
const SPIKE_RATIO: f64 = 1.25;
/// Least mean load (bit/s) to say anything: low demand at night gives no
/// estimate, not "degraded" (cake-autorate's `connection_active_thr_kbps`).
const MIN_LOAD_BPS: f64 = 2_000_000.0;
/// The least load as a share of the contract, for large uplinks.
const MIN_LOAD_SHARE: f64 = 0.05;
/// p90 of the aggregate above this share of the bound: the gateway or the
/// OPDs' own ceilings explain the level, not the uplink.
const BOUND_RATIO: f64 = 0.85;
/// Most coefficient of variation of a plateau.
const MAX_CV: f64 = 0.15;
/// Most difference between the means of the window's two halves, relative
/// to its mean: a ramp (slow start, demand growing) is not a plateau.
const MAX_HALVES: f64 = 0.10;
/// Least held OPDs: one OPD alone cannot show rate being traded.
const MIN_HELD: usize = 2;
/// Least share of the aggregate the held OPDs carry.
const HELD_SHARE: f64 = 0.5;
/// Conservation ratio up to which the sources compete for one cap.
const MAX_RHO: f64 = 0.5;
/// Conservation ratio up to which the plateau alone is medium confidence
/// (on a window of `MEDIUM_WINDOW_S`).
const MEDIUM_RHO: f64 = 0.3;
/// Conservation ratio up to which a shorter window is medium confidence:
/// independent demand reaches it by chance about once in 2000 windows of
/// 8 s; the lab's policed and queued uplinks give 0.003-0.008.
const MEDIUM_RHO_SHORT: f64 = 0.1;
/// Held OPDs needed for medium confidence without a co-signal.
const MEDIUM_HELD: usize = 3;
/// Seconds of window needed for medium confidence without a co-signal: on
/// 8 s of independent demand the conservation ratio falls to 0.3 by chance
/// one window in thirty (at start-up, or when one second above the level
/// cut the window short), on 12 s one in eighty (false medium estimates
/// seen at start-up in the unit tests), on 15 s one in about 170 and none
/// seen. A drop reaches medium 15 s in, or sooner when its ratio is below
/// `MEDIUM_RHO_SHORT`.
const MEDIUM_WINDOW_S: usize = 15;
/// Below this share of the mean, the sources' spread is too small for the
/// conservation ratio to mean anything (steady, paced sources).
const INCONCLUSIVE_SHARE: f64 = 0.05;
/// Upstream probe loss that counts as a congested path.
const PROBE_LOSS: f64 = 0.1;
/// Consecutive plateau seconds before an estimate forms.
const FORM_S: u32 = 3;
/// Above this multiple of the estimate in 3 of the last 5 seconds, the
/// limit was lifted.
const LIFTED_RATIO: f64 = 1.15;
const LIFTED_OF: usize = 5;
const LIFTED_COUNT: usize = 3;
/// At this share of the bound the OPDs get what they could take: no limit.
const AT_BOUND: f64 = 0.9;
/// Without a plateau second (a demand lull, or the signature wavering) the
/// confidence drops one level per this many seconds, and the estimate goes
/// at `LULL_DROP_S`.
const LULL_STEP_S: u32 = 20;
const LULL_DROP_S: u32 = 60;
/// While the gateway is adapted, a second in which its root class sent
/// this share of its own capacity is one the gateway held the traffic
/// (see [`Estimator::hold_basis`]): HTB keeps a saturated class within a
/// few percent of its rate. Not the offices' counted rate, which includes
/// what their own classes drop: offices at their ceilings, asking less
/// than the gateway allows, counted 0.88 of it and kept a figure standing
/// for minutes after the ISP recovered.
const GATEWAY_FILLED: f64 = 0.93;
/// Seconds at one adapted capacity before congestion beyond the gateway
/// speaks for a lower plateau: the engine judges congestion over 10 s
/// windows, so for that long after the gateway adapts it still reports
/// the ISP's queue or losses from before, which the gateway then ended.
const SETTLE_S: u32 = 12;
/// A gap between seconds longer than this discards the window.
const MAX_GAP_S: i64 = 5;

/// How an OPD's traffic in one direction can serve as evidence about the
/// uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpdClass {
    /// Active, below its ceiling, its office network fine: it gets what
    /// the uplink gives it (app-limited OPDs too; the group's demand is
    /// judged by the conservation ratio).
    Held,
    /// At its own ceiling or dropping in its own HTB class: its class is
    /// its bottleneck, not the uplink.
    SelfLimited,
    /// Its office network is broken or slow: never evidence about the
    /// uplink.
    Excluded,
    /// Too little traffic to say anything.
    Inactive,
    /// Traffic that matched no OPD: counts in the aggregate, has no
    /// ceiling.
    Unclassified,
}

/// One source's rate in one second and direction.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRate {
    /// The OPD's id (any fixed name for unclassified traffic).
    pub id: String,
    /// Bits per second in this second.
    pub bps: u64,
    /// The OPD's ceiling in this direction (0 for unclassified traffic).
    pub ceiling_bps: u64,
    /// How it counts as evidence, from its current verdict and windows.
    pub class: OpdClass,
}

/// Signs that the path itself is congested. The engine decides each flag
/// (round trips against their learned normal, capped by the absolute
/// `wan_rtt`; loss from the probes and the WAN side's retransmissions).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoSignals {
    /// Upstream probe round trips are inflated.
    pub probes_inflated: bool,
    /// The OPDs' WAN handshake round trips are inflated.
    pub wan_handshakes_inflated: bool,
    /// Share of recent upstream probes lost, when there are probes.
    pub probe_loss: Option<f64>,
    /// TCP segments are lost beyond the gateway at half the OPDs.
    pub wan_tcp_loss: bool,
}

impl CoSignals {
    /// Whether any sign shows, lost probes counted from `loss_bar` up.
    pub fn any(&self, loss_bar: f64) -> bool {
        self.beyond_tcp_loss(loss_bar) || self.wan_tcp_loss
    }

    /// Whether a sign other than TCP loss shows: the one that does not
    /// come from the same WAN-side duplicates upload's rates are
    /// corrected by.
    fn beyond_tcp_loss(&self, loss_bar: f64) -> bool {
        self.probes_inflated
            || self.wan_handshakes_inflated
            || self.probe_loss.is_some_and(|l| l >= loss_bar)
    }

    /// The names of the co-signals present, for the evidence.
    fn present(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.probes_inflated {
            v.push("probes_inflated".to_string());
        }
        if self.wan_handshakes_inflated {
            v.push("wan_handshakes_inflated".to_string());
        }
        if self.probe_loss.is_some_and(|l| l >= PROBE_LOSS) {
            v.push("probe_loss".to_string());
        }
        if self.wan_tcp_loss {
            v.push("wan_tcp_loss".to_string());
        }
        v
    }
}

/// How sure an estimate is. Only medium and high give a verdict; low is
/// evidence only (tentative).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// A plateau with a weak conservation ratio or only two held OPDs:
    /// evidence only.
    Low,
    /// A plateau the OPDs clearly share, or a flat aggregate behind signs
    /// of a congested path.
    Medium,
    /// A plateau and signs of a congested path.
    High,
}

impl Confidence {
    /// One level lower (low stays low).
    fn lower(self) -> Confidence {
        match self {
            Confidence::High => Confidence::Medium,
            _ => Confidence::Low,
        }
    }
}

/// The numbers behind an estimate, as of its latest plateau second.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PlateauEvidence {
    /// p90 of the aggregate over the window (the download figure).
    pub p90_bps: u64,
    /// Mean of the aggregate over the window (the upload figure).
    pub mean_bps: u64,
    /// Coefficient of variation of the aggregate.
    pub cv: f64,
    /// Var(aggregate) / Σ Var(source): near 1 for independent demand, near
    /// 0 when the sources share one cap; absent when inconclusive.
    pub conservation: Option<f64>,
    /// The most the active OPDs could take: min(capacity, Σ ceilings).
    pub bound_bps: u64,
    /// The held OPDs (to an `opd:` token, its own alone if held).
    pub held: Vec<String>,
    /// Seconds in the plateau window.
    pub window_s: u32,
    /// Co-signals present (probe loss, inflated round trips).
    pub co_signals: Vec<String>,
    /// Seconds since the plateau was last confirmed (the figure is frozen
    /// meanwhile: a demand lull or the signature wavering).
    pub unconfirmed_s: u32,
}

/// What the uplink delivers in one direction.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Delivered {
    /// Bits per second the uplink delivers.
    pub bps: u64,
    /// How sure the figure is.
    pub confidence: Confidence,
    /// When the drop began: the first second of the plateau window.
    pub since: DateTime<Utc>,
    /// The numbers behind the figure.
    pub evidence: PlateauEvidence,
}

/// One second of one direction.
#[derive(Debug, Clone)]
struct Second {
    at: DateTime<Utc>,
    total: u64,
    sources: Vec<SourceRate>,
}

/// A plateau found in this second's window.
struct Plateau {
    bps: u64,
    confidence: Confidence,
    since: DateTime<Utc>,
    evidence: PlateauEvidence,
}

/// Which statistic of the plateau window is the figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Figure {
    /// The p90: the rates were counted after the uplink carried them, so
    /// no second reads above what it delivers, and the seconds below are
    /// senders backing off after a loss.
    #[default]
    Top,
    /// The mean: the rates were counted before the loss and corrected by
    /// the duplicates of the last 10 s, so a second's correction is off
    /// either way and the top of the window reads high (+1 to +19 % in
    /// the lab's upload limits, the mean -9 to +7 %).
    Mean,
}

/// The delivered-capacity estimate of one direction, stepped once a second.
#[derive(Debug, Default)]
pub struct Estimator {
    figure: Figure,
    seconds: VecDeque<Second>,
    held: Option<Delivered>,
    plateau_run: u32,
    /// Whether each of the last seconds was above `LIFTED_RATIO`× the
    /// estimate.
    over: VecDeque<bool>,
    unconfirmed_s: u32,
    /// The confidence when the plateau was last confirmed.
    unconfirmed_from: Option<Confidence>,
    /// The confidence of the figure when the gateway adapted to it (see
    /// [`Estimator::hold_basis`]).
    adapted_from: Option<Confidence>,
    /// The confidence the figure had at the end of the last second: what
    /// the adaptive capacity acted on, before this second's plateau
    /// judged it again.
    reported: Option<Confidence>,
    /// The adapted capacity last held to, and the seconds since it
    /// changed (see [`Estimator::hold_basis`]).
    at_capacity: Option<(u64, u32)>,
    /// Capacity and ceilings last seen: a reload that changes them drops
    /// the estimate.
    shape: Option<(u64, Vec<(String, u64)>)>,
}

impl Estimator {
    /// A new estimator, with nothing seen, for rates counted after the
    /// uplink carried them (download).
    pub fn new() -> Self {
        Estimator::default()
    }

    /// A new estimator for rates counted before the uplink carried them
    /// and corrected for what it lost (upload): the figure is the window's
    /// mean, not its p90.
    pub fn counted_before_loss() -> Self {
        Estimator {
            figure: Figure::Mean,
            ..Estimator::default()
        }
    }

    /// The estimate that holds, if any (any confidence).
    pub fn delivered(&self) -> Option<&Delivered> {
        self.held.as_ref()
    }

    /// While the gateway shapes this direction to `effective_bps` because
    /// the uplink delivered `basis_bps`, a plateau at about the gateway's
    /// own capacity (from 5% under it to 3% over) says what the gateway
    /// lets through, not what the ISP delivers: the figure stays the one
    /// measured before. A plateau clearly below (the ISP delivers still
    /// less) is news and stands, and so does one clearly above: the rates
    /// are counted before the gateway's classes, so traffic offered above
    /// jatah's capacity came through the ISP (in the lab, 12.87 Mbit/s
    /// offered to a gateway at 12.25 behind an ISP at 12.8, replaced by a
    /// basis of 14.4 taken from a window that mixed a probe with the drop).
    ///
    /// A plateau clearly below the capacity is news only while the path
    /// beyond the gateway is `congested` in this direction, judged on
    /// seconds after the capacity last changed (`SETTLE_S`). Without
    /// congestion the ISP carries all it is offered, and the plateau is
    /// the gateway's own: in the lab, an ISP policing upload to 6.4
    /// Mbit/s, the gateway at its floor of 6.0, upload counted before
    /// the gateway's classes read 5.6 a few seconds after it adapted,
    /// while the loss of the 10 s before still showed. That figure
    /// replaced the basis of 6.12, was under 95 % of the capacity, and
    /// so stopped every probe: the gateway stayed at 6.0 for over a
    /// minute after the ISP recovered.
    ///
    /// Nor does a second in which the gateway's root class sent
    /// (`carried_bps`) about its own capacity count as unconfirmed: the
    /// offices' shares are then set by jatah's classes, steady, so no
    /// plateau shows the sources trading rate, and no queue forms at the
    /// ISP to inflate a round trip. The ISP is out of sight behind the gateway; the adaptive probes test it
    /// (`runtime::adapt`), and one that holds lifts the traffic above the
    /// figure, which drops it. Without this the figure faded to low
    /// confidence 20 s after the gateway adapted, and the verdict went
    /// healthy while the ISP still delivered 40 % of the contract.
    pub fn hold_basis(
        &mut self,
        basis_bps: u64,
        effective_bps: u64,
        carried_bps: u64,
        congested: bool,
    ) {
        if effective_bps == 0 {
            // At the contract: nothing to hold, and the next adaptation
            // starts afresh.
            self.at_capacity = None;
            self.adapted_from = None;
            return;
        }
        let e = effective_bps as f64;
        let settled = match self.at_capacity {
            Some((cap, s)) if cap == effective_bps => s.saturating_add(1),
            _ => 0,
        };
        self.at_capacity = Some((effective_bps, settled));
        let Some(d) = self.held.as_mut().filter(|_| basis_bps > 0) else {
            self.adapted_from = None;
            return;
        };
        // The confidence the gateway adapted to: the figure's as it was
        // reported, not as this second's plateau re-judged it. Upload's
        // plateau can be medium for one second and low the next (its
        // conservation ratio hovers about 0.3-0.45); the gateway adapts on
        // that second, the ISP's queue empties, and a figure held at low
        // left the verdict healthy while the ISP delivered 40 %.
        let reported = self.reported.unwrap_or(Confidence::Low);
        let from = *self.adapted_from.get_or_insert(d.confidence.max(reported));
        let news_below = congested && settled >= SETTLE_S;
        let at_gateway = (0.95 * e..=1.03 * e).contains(&(d.bps as f64));
        let below = (d.bps as f64) < 0.95 * e;
        if basis_bps > d.bps && (at_gateway || (below && !news_below)) {
            d.bps = basis_bps;
        }
        if carried_bps as f64 >= GATEWAY_FILLED * e {
            // Nor does a plateau diluted by those steady seconds (a
            // conservation ratio drifting up) lower the confidence.
            d.confidence = d.confidence.max(from);
            self.unconfirmed_s = 0;
            self.unconfirmed_from = None;
            d.evidence.unconfirmed_s = 0;
        }
    }

    /// While the gateway is adapted, its last probe met congestion beyond
    /// the gateway carrying `bps`: the ISP delivers that now. A figure
    /// that holds at medium or better stands; otherwise this becomes the
    /// figure, at medium, with `probe_met_congestion` among its co-signals
    /// (a partly recovered ISP, found by the probes while the gateway held
    /// the traffic just under it, where no plateau shows the sources
    /// trading rate and no queue forms at the ISP).
    ///
    /// Download only: the gateway's root class sends upload before the
    /// ISP drops what it cannot carry, so what an upload probe carried is
    /// what was offered (8.05 Mbit/s read for an ISP at 6.4 in the lab).
    pub fn probed(&mut self, at: DateTime<Utc>, bps: u64) {
        const SIGN: &str = "probe_met_congestion";
        if self.figure == Figure::Mean {
            return;
        }
        match &mut self.held {
            Some(d) if d.confidence >= Confidence::Medium => {}
            Some(d) => {
                d.bps = bps;
                d.confidence = Confidence::Medium;
                if !d.evidence.co_signals.iter().any(|c| c == SIGN) {
                    d.evidence.co_signals.push(SIGN.to_string());
                }
            }
            None => {
                self.over.clear();
                self.held = Some(Delivered {
                    bps,
                    confidence: Confidence::Medium,
                    since: at,
                    evidence: PlateauEvidence {
                        p90_bps: bps,
                        mean_bps: bps,
                        cv: 0.0,
                        conservation: None,
                        bound_bps: 0,
                        held: Vec::new(),
                        window_s: 0,
                        co_signals: vec![SIGN.to_string()],
                        unconfirmed_s: 0,
                    },
                });
            }
        }
        self.adapted_from = Some(Confidence::Medium);
        self.unconfirmed_s = 0;
        self.unconfirmed_from = None;
    }

    /// Feeds one second: every source's rate with its class, and the
    /// contracted (effective) capacity of this direction.
    pub fn step(
        &mut self,
        at: DateTime<Utc>,
        sources: Vec<SourceRate>,
        capacity_bps: u64,
        co: &CoSignals,
    ) -> Option<&Delivered> {
        self.reported = self.held.as_ref().map(|d| d.confidence);
        if let Some(last) = self.seconds.back()
            && ((at - last.at).num_seconds() > MAX_GAP_S || at <= last.at)
        {
            // A clock gap: the window no longer describes now.
            self.reset();
        }
        let shape = (
            capacity_bps,
            sources
                .iter()
                .filter(|s| s.class != OpdClass::Unclassified)
                .map(|s| (s.id.clone(), s.ceiling_bps))
                .collect::<Vec<_>>(),
        );
        if self.shape.as_ref().is_some_and(|s| *s != shape) {
            // A reload changed the bound: the plateau must be judged anew.
            self.held = None;
            self.reported = None;
            self.adapted_from = None;
            self.plateau_run = 0;
        }
        self.shape = Some(shape);
        let total: u64 = sources.iter().map(|s| s.bps).sum();
        let bound = bound(&sources, capacity_bps);
        self.seconds.push_back(Second { at, total, sources });
        while self.seconds.len() > MAX_WINDOW_S {
            self.seconds.pop_front();
        }

        if let Some(d) = &self.held {
            // Against the window's top, not a mean figure: a second or
            // two above the mean is the spread of the rates, not a lift.
            let top = d.bps.max(d.evidence.p90_bps);
            self.over
                .push_back(total as f64 > LIFTED_RATIO * top as f64);
            while self.over.len() > LIFTED_OF {
                self.over.pop_front();
            }
            let lifted = self.over.iter().filter(|o| **o).count() >= LIFTED_COUNT;
            let at_bound = bound > 0 && total as f64 >= AT_BOUND * bound as f64;
            if lifted || at_bound {
                self.drop_estimate();
            }
        }

        match self.plateau(capacity_bps, bound, co) {
            Some(p) => {
                self.plateau_run += 1;
                self.unconfirmed_s = 0;
                self.unconfirmed_from = None;
                if let Some(d) = &self.held
                    && !(d.bps as f64 / SPIKE_RATIO..=d.bps as f64 * SPIKE_RATIO)
                        .contains(&(p.bps as f64))
                {
                    // Another level: another episode, since its own start
                    // (the plateau has held long enough to be judged).
                    self.held = None;
                    self.reported = None;
                    self.adapted_from = None;
                    self.plateau_run = self.plateau_run.max(FORM_S);
                }
                match &mut self.held {
                    Some(d) => {
                        d.bps = p.bps;
                        d.confidence = p.confidence;
                        d.evidence = p.evidence;
                    }
                    None if self.plateau_run >= FORM_S => {
                        self.over.clear();
                        self.held = Some(Delivered {
                            bps: p.bps,
                            confidence: p.confidence,
                            since: p.since,
                            evidence: p.evidence,
                        });
                    }
                    None => {}
                }
            }
            None => {
                self.plateau_run = 0;
                let Some(d) = &mut self.held else {
                    return None;
                };
                // A demand lull (less load, fewer than 2 held OPDs) or the
                // signature wavering: the figure is not
                // confirmed this second. Keep it, frozen, through TCP
                // transients, trust it less as time goes, then let it go:
                // without demand there is no capacity to claim, and a
                // window that looked like a plateau by chance must not
                // linger.
                let from = *self.unconfirmed_from.get_or_insert(d.confidence);
                self.unconfirmed_s += 1;
                d.evidence.unconfirmed_s = self.unconfirmed_s;
                if self.unconfirmed_s >= LULL_DROP_S {
                    self.drop_estimate();
                } else {
                    d.confidence = (0..self.unconfirmed_s / LULL_STEP_S).fold(from, |c, _| c.lower());
                }
            }
        }
        self.held.as_ref()
    }

    fn drop_estimate(&mut self) {
        self.held = None;
        self.reported = None;
        self.adapted_from = None;
        self.plateau_run = 0;
        self.over.clear();
        self.unconfirmed_s = 0;
        self.unconfirmed_from = None;
    }

    fn reset(&mut self) {
        self.seconds.clear();
        self.drop_estimate();
    }

    /// The plateau signature over this second's window, with its estimate
    /// and confidence, or None.
    fn plateau(&self, capacity_bps: u64, bound: u64, co: &CoSignals) -> Option<Plateau> {
        let totals: Vec<f64> = self.seconds.iter().map(|s| s.total as f64).collect();
        let n = totals.len();
        if n < MIN_WINDOW_S {
            return None;
        }
        // The longest suffix of the newest 15 s with no second above
        // SPIKE_RATIO× its median: where the plateau starts.
        let Some(mut w) = (MIN_WINDOW_S..=n.min(CORE_WINDOW_S)).rev().find(|&w| {
            let s = &totals[n - w..];
            let m = percentile(s, 0.5);
            s.iter().all(|x| *x <= SPIKE_RATIO * m)
        }) else {
            return no_plateau(format_args!("a spike in every window of the last {n} s"));
        };
        // Older seconds at the same level join it: a longer window judges
        // the sources' trading on more seconds.
        let m = percentile(&totals[n - w..], 0.5);
        while w < n.min(MAX_WINDOW_S)
            && (m / SPIKE_RATIO..=m * SPIKE_RATIO).contains(&totals[n - w - 1])
        {
            w += 1;
        }
        let a = &totals[n - w..];
        let avg = mean(a);
        // 1. Enough load.
        if avg < MIN_LOAD_BPS.max(MIN_LOAD_SHARE * capacity_bps as f64) {
            return no_plateau(format_args!("load {avg:.0} b/s too low"));
        }
        // 2. Below the bound.
        let p90 = percentile(a, 0.9);
        if p90 > BOUND_RATIO * bound as f64 {
            return no_plateau(format_args!("p90 {p90:.0} b/s near the bound {bound} b/s"));
        }
        // 3. Flat, not ramping.
        let var_a = variance(a);
        let cv = var_a.sqrt() / avg;
        let half = w / 2;
        let halves = (mean(&a[..half]) - mean(&a[half..])).abs() / avg;
        if cv > MAX_CV || halves > MAX_HALVES {
            return no_plateau(format_args!(
                "not flat over {w} s: cv {cv:.3}, halves differ by {halves:.3}"
            ));
        }
        // 4. Held OPDs, judged by their classes now, carrying enough of it.
        let window: Vec<&Second> = self.seconds.iter().skip(n - w).collect();
        let now = &window[w - 1].sources;
        let held: Vec<String> = now
            .iter()
            .filter(|s| s.class == OpdClass::Held)
            .map(|s| s.id.clone())
            .collect();
        // Each source's rate over the window (0 in a second it was absent).
        let mut by_source: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (i, s) in window.iter().enumerate() {
            for r in &s.sources {
                by_source.entry(r.id.as_str()).or_insert_with(|| vec![0.0; w])[i] = r.bps as f64;
            }
        }
        let series = |id: &str| by_source.get(id).map_or(&[][..], Vec::as_slice);
        let held_sum: f64 = held.iter().map(|id| series(id.as_str()).iter().sum::<f64>()).sum();
        if held.len() < MIN_HELD || held_sum < HELD_SHARE * a.iter().sum::<f64>() {
            return no_plateau(format_args!(
                "held {held:?} carry {:.2} of it",
                held_sum / a.iter().sum::<f64>().max(1.0)
            ));
        }
        // 5. Conservation: do the sources trade rate (one cap) or add up
        // (independent demand)?
        let var_sum: f64 = now
            .iter()
            .filter(|s| s.class != OpdClass::Inactive)
            .map(|s| variance(series(s.id.as_str())))
            .sum();
        let rho = (var_sum.sqrt() >= INCONCLUSIVE_SHARE * avg).then(|| var_a / var_sum);
        let co_signals = co.present();
        // Rates counted before the loss are corrected by the same WAN-side
        // duplicates that make the loss co-signal: alone, it vouches for
        // such a plateau up to medium, not high (once, as high, a weak
        // upload plateau read 8.7 where a policer passed 6.4 Mbit/s).
        let vouched = match self.figure {
            Figure::Mean => co.beyond_tcp_loss(PROBE_LOSS),
            Figure::Top => !co_signals.is_empty(),
        };
        let confidence = match rho {
            Some(r) if r <= MAX_RHO => {
                if vouched {
                    Confidence::High
                } else if held.len() >= MEDIUM_HELD
                    && (!co_signals.is_empty()
                        || r <= MEDIUM_RHO_SHORT
                        || (r <= MEDIUM_RHO && w >= MEDIUM_WINDOW_S))
                {
                    Confidence::Medium
                } else {
                    Confidence::Low
                }
            }
            // Steady flows behind a queue: only the path's own signs tell.
            None if !co_signals.is_empty() => Confidence::Medium,
            _ => {
                return no_plateau(format_args!(
                    "sources not trading rate: conservation {rho:?}, co-signals none"
                ));
            }
        };
        Some(Plateau {
            bps: match self.figure {
                Figure::Top => p90,
                Figure::Mean => avg,
            } as u64,
            confidence,
            since: window[0].at,
            evidence: PlateauEvidence {
                p90_bps: p90 as u64,
                mean_bps: avg as u64,
                cv: round3(cv),
                conservation: rho.map(round3),
                bound_bps: bound,
                held,
                window_s: w as u32,
                co_signals,
                unconfirmed_s: 0,
            },
        })
    }
}

/// No plateau this second, and why, for `RUST_LOG=jatah::diagnosis::capacity=debug`
/// (a figure that does not form is otherwise silent).
fn no_plateau(why: std::fmt::Arguments<'_>) -> Option<Plateau> {
    tracing::debug!("no plateau: {why}");
    None
}

/// The most the active OPDs could take: min(capacity, Σ ceilings of the
/// active OPDs). With no active OPD (only unclassified traffic) or no
/// ceilings known, the capacity.
fn bound(sources: &[SourceRate], capacity_bps: u64) -> u64 {
    let ceilings: u64 = sources
        .iter()
        .filter(|s| !matches!(s.class, OpdClass::Inactive | OpdClass::Unclassified))
        .map(|s| s.ceiling_bps)
        .sum();
    match (ceilings, capacity_bps) {
        (0, c) => c,
        (s, 0) => s,
        (s, c) => s.min(c),
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn variance(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len().max(1) as f64
}

/// The value at rank ⌊q·(n−1)⌋: for q = 0.9 it skips the highest second
/// of any window from 8 to 30 s, so one timing spike does not over-read.
fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(((s.len().saturating_sub(1)) as f64 * q).floor() as usize)
        .copied()
        .unwrap_or(0.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
