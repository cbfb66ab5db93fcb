//! Adaptive uplink capacity: when the ISP delivers less than the contract,
//! jatah shapes to what it delivers (less a margin), so the queue forms at
//! the gateway, where guarantees are kept in proportion, and not at the
//! ISP, where the office with the most connections wins. It probes upward
//! and returns to the contract when the ISP recovers.
//!
//! Pure: one [`Controller`] per direction, stepped once a second with what
//! the sampler and the diagnosis engine already know ([`Input`]); it says
//! when the effective capacity changes ([`Change`]) and the caller puts
//! the new tree in force (`gateway::scale_tree`).
//!
//! - **Down**, at once (after a cooldown of [`COOLDOWN_S`]): a delivered
//!   estimate at medium confidence or better, below 95% of the capacity
//!   in force: the capacity becomes the estimate less a margin
//!   ([`MARGIN_DOWNLOAD`], [`MARGIN_UPLOAD`]), never below [`FLOOR`] of
//!   the contract. That estimate is kept as the basis: what the ISP
//!   delivered, while the gateway holds the traffic below it. Once
//!   adapted, a lower estimate counts only with a sign of congestion
//!   beyond the gateway (the ISP worsened); without one it is the figure
//!   the gateway adapted to, still held.
//! - **Probe**, while adapted: once the office traffic fills the capacity
//!   (at least [`FULL`] of it) with no sign of congestion beyond the
//!   gateway, for [`PROBE_FIRST_S`] (doubling after each failed probe, up
//!   to [`PROBE_MAX_S`]), a step of [`PROBE_STEP`] up from the capacity
//!   or from what the ISP last delivered, the higher. The probe holds if
//!   after [`PROBE_CHECK_S`] the traffic carries [`PROBE_HELD`] of the new
//!   capacity, judged once the gateway's own queues (which a probe empties
//!   first) no longer drain, and the next one follows at once; a
//!   congestion sign, or traffic that stays below (the ISP still limits), takes it back. A
//!   probe short of demand rather than of uplink (no congestion sign, and
//!   [`DEMAND_LIMITED`] times what the ISP was known to deliver carried)
//!   is kept: a recovered ISP is not held below what the offices ask.
//! - **Back to the contract** when a probe reaches it (or ends within
//!   [`MIN_CHANGE`] of it), or after
//!   [`IDLE_S`] of traffic under half the capacity in force (nothing to
//!   learn from; the guarantees need not stay scaled).

use serde::Serialize;

/// Share taken off the delivered estimate for upload: shaped before the
/// ISP, the gateway is the bottleneck with any margin; 5% leaves room for
/// the ISP's own variation.
pub const MARGIN_UPLOAD: f64 = 0.05;
/// The same for download, shaped after the ISP: the gateway can only drop
/// what arrives above its rate, and TCP's windows shrink enough to empty
/// the ISP's queue only when that is a fair share (15% here; 5% left a
/// 100 ms ISP queue full in the lab, and the offices sharing by flows).
pub const MARGIN_DOWNLOAD: f64 = 0.15;
/// The lowest effective capacity, as a share of the contract.
pub const FLOOR: f64 = 0.30;
/// Seconds after a change before another decrease.
pub const COOLDOWN_S: u32 = 10;
/// Share of the capacity in force that counts as filled.
pub const FULL: f64 = 0.85;
/// Multiplier of a probe.
pub const PROBE_STEP: f64 = 1.25;
/// Seconds of filled, uncongested traffic before the first probe.
pub const PROBE_FIRST_S: u32 = 10;
/// Longest wait between probes (after failed ones): bounds how long the
/// gateway stays below a recovered ISP (this, plus a few probe steps).
pub const PROBE_MAX_S: u32 = 30;
/// Seconds a probe has to show the ISP carries more.
pub const PROBE_CHECK_S: u32 = 3;
/// Share of a probe's capacity the traffic must carry for the probe to
/// hold: HTB keeps a saturated root within a few percent of its rate, and
/// an ISP that still limits keeps it at what it delivered, which every
/// probe exceeds by [`PROBE_STEP`] (40 of 50 is 0.80).
pub const PROBE_HELD: f64 = 0.93;
/// A probe whose traffic falls short of it but carries more than this
/// multiple of what the uplink was known to deliver, with no sign of
/// congestion, was short of demand, not of uplink: it is kept. An ISP that
/// still limits carries about the basis (a few percent over it at most).
pub const DEMAND_LIMITED: f64 = 1.10;
/// A probe short of its capacity that still carries this multiple of what
/// the uplink was known to deliver, with no sign of congestion, is given
/// until [`PROBE_CONFIRM_S`] to show one: the uplink carried more than it
/// was known to, so either the ISP has recovered and the offices ask no
/// more, or it limits a little above the basis. Only the path's signs can
/// tell, and they take a window to show.
pub const ABOVE_BASIS: f64 = 1.03;
/// Seconds a probe in doubt ([`ABOVE_BASIS`]) is kept, waiting for a sign
/// of congestion; none by then, and it was short of demand: it is kept.
/// The signs are judged over 10 s windows.
pub const PROBE_CONFIRM_S: u32 = 12;
/// A probe's second in which the gateway's own queues shrank by more than
/// this share of its capacity is a draining one, not judged.
pub const DRAINING: f64 = 0.05;
/// Seconds of light traffic after which the contract is restored.
pub const IDLE_S: u32 = 60;
/// Smaller relative changes are not made (churn).
const MIN_CHANGE: f64 = 0.05;

/// What the controller reads each second, for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Input {
    /// The contract in force (the policy's capacity), bit/s.
    pub contract_bps: u64,
    /// What the gateway's root class carried this second, bit/s.
    pub carried_bps: u64,
    /// How fast the gateway's own queues in this direction grew this
    /// second, bit/s; negative while they drained: part of what the root
    /// carried had waited there.
    pub queued_bps: i64,
    /// What the uplink delivers, when the diagnosis engine holds an
    /// estimate at medium confidence or better, bit/s.
    pub delivered_bps: Option<u64>,
    /// A sign of congestion beyond the gateway this second, in this
    /// direction (`Engine::uplink_congested`: inflated probes or WAN
    /// handshakes, lost probes, TCP loss beyond the gateway).
    pub congested: bool,
    /// Share taken off the delivered estimate ([`MARGIN_DOWNLOAD`],
    /// [`MARGIN_UPLOAD`]).
    pub margin: f64,
    /// Of what the root class carried, the share that arrived beyond the
    /// ISP, where that is known (upload: what the far ends acknowledged,
    /// `Engine::upload_carried_share`); None: all of it (download is
    /// counted after the ISP). A probe is judged on what arrived: TCP
    /// offers a policer more than it passes, so the root's own count of
    /// a probe above a policer reads as carried.
    pub arrived_share: Option<f64>,
}

/// Why the effective capacity changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The ISP delivers less than the capacity in force.
    IspDeliversLess,
    /// A probe met congestion or was not filled: back to before it.
    ProbeFailed,
    /// Traffic fills the capacity with no congestion: a step up.
    Probe,
    /// Back at the contract (a probe reached it, or traffic was light).
    Contract,
    /// The contract itself changed (a reload).
    ContractChanged,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::IspDeliversLess => "isp_delivers_less",
            Reason::ProbeFailed => "probe_failed",
            Reason::Probe => "probe",
            Reason::Contract => "contract",
            Reason::ContractChanged => "contract_changed",
        }
    }
}

/// A change of the effective capacity, to put in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub from_bps: u64,
    pub to_bps: u64,
    pub reason: Reason,
    /// For a probe taken back: what the uplink carried during it, bit/s.
    pub measured_bps: Option<u64>,
}

/// One direction's adaptive capacity.
#[derive(Debug, Clone, Default)]
pub struct Controller {
    /// The effective capacity while below the contract; `None` at it.
    cap: Option<u64>,
    /// The contract last seen.
    contract: u64,
    /// Seconds since the last change.
    since_change: u32,
    /// Consecutive seconds the traffic filled the capacity, uncongested.
    filled_s: u32,
    /// Consecutive seconds of traffic under half the capacity.
    light_s: u32,
    /// Seconds of filled traffic needed before the next probe.
    probe_wait: u32,
    /// The capacity before the probe in progress.
    probing: Option<u64>,
    /// Traffic carried since the probe began, draining seconds left out:
    /// sum (bit/s) and seconds.
    probe_carried: (u64, u32),
    /// What the uplink delivered when the capacity was last lowered.
    basis: Option<u64>,
    /// What the last probe carried when it met congestion beyond the
    /// gateway: what the ISP delivers now, found while the gateway held
    /// the traffic below it (see [`Controller::probed`]).
    probed: Option<u64>,
}

impl Controller {
    /// The capacity in force for `contract_bps` (the contract unless
    /// adapted).
    pub fn effective(&self, contract_bps: u64) -> u64 {
        self.cap.map_or(contract_bps, |c| c.min(contract_bps))
    }

    /// The capacity the gateway holds between probes: the one in force,
    /// or, while a probe tries a step up, the one before it. What offices
    /// are told their guarantees are scaled to, so a three-second probe
    /// does not change the page.
    pub fn settled(&self, contract_bps: u64) -> u64 {
        self.probing
            .filter(|_| self.adapted())
            .map_or(self.effective(contract_bps), |p| p.min(contract_bps))
    }

    /// Whether a probe is in progress.
    pub fn probing(&self) -> bool {
        self.adapted() && self.probing.is_some()
    }

    /// Whether the capacity is below the contract.
    pub fn adapted(&self) -> bool {
        self.cap.is_some()
    }

    /// While adapted, what the uplink delivered when the capacity was last
    /// lowered (or what a held probe showed it carries since).
    pub fn basis(&self) -> Option<u64> {
        self.basis.filter(|_| self.adapted())
    }

    /// While adapted, what the last probe carried when it met congestion
    /// beyond the gateway, until a probe holds or an estimate lowers the
    /// capacity again. After an ISP partly recovers (15% of the contract,
    /// then 40%), the gateway can sit just under the ISP's new rate (at
    /// its floor): no queue forms at the ISP, no estimate forms, and only
    /// a probe shows the ISP still limits.
    pub fn probed(&self) -> Option<u64> {
        self.probed.filter(|_| self.adapted())
    }

    /// One second; a change to put in force, if any.
    pub fn step(&mut self, i: &Input) -> Option<Change> {
        self.since_change = self.since_change.saturating_add(1);
        let contract = i.contract_bps;
        if contract != self.contract {
            let from = self.effective(self.contract.max(1));
            self.contract = contract;
            if let Some(c) = self.cap
                && c >= contract
            {
                return self.set(from, None, Reason::ContractChanged);
            }
        }
        let cap = self.effective(contract);
        let carried = i.carried_bps as f64;
        let floor = (FLOOR * contract as f64) as u64;

        // The ISP delivers less than we allow. While adapted, only with a
        // sign of congestion beyond the gateway: the figure then is the
        // one the gateway adapted to, held while it keeps the traffic
        // below the ISP (`Estimator::hold_basis`), and below a probe that
        // is still in doubt or was kept because the offices asked no more
        // it says nothing new. Taken as news, it undid such probes at the
        // cooldown, before they were judged, and after a lossy uplink
        // recovered the gateway stayed at the figure for minutes.
        if let Some(d) = i.delivered_bps
            && (d as f64) < 0.95 * cap as f64
            && self.since_change >= COOLDOWN_S
            && (!self.adapted() || i.congested)
        {
            let target = ((d as f64 * (1.0 - i.margin)) as u64).max(floor);
            if (target as f64) < (1.0 - MIN_CHANGE) * cap as f64 {
                self.probing = None;
                self.basis = Some(d);
                self.probed = None;
                self.probe_wait = self.probe_wait.max(PROBE_FIRST_S);
                return self.set(cap, Some(target), Reason::IspDeliversLess);
            }
        }
        // At the contract only a decrease (above) moves anything.
        self.cap?;
        // A probe in progress: held if the new capacity fills, else undone.
        // Not judged on a second the gateway's own queues drain (until
        // [`PROBE_CONFIRM_S`]): they filled while it held the offices below
        // the ISP and empty at the probe's rate first, so for a second or
        // two a probe above an ISP that still limits carries its full rate
        // (in the lab a 40M ISP held or kept a probe to 50M). Nor on what
        // reached the queues instead: on a recovered ISP the senders speed
        // up only as the queue empties, and such probes failed.
        if let Some(before) = self.probing {
            let i = &Input {
                carried_bps: (i.carried_bps as f64 * i.arrived_share.unwrap_or(1.0)) as u64,
                ..*i
            };
            let carried = i.carried_bps as f64;
            let draining = (i.queued_bps as f64) < -DRAINING * cap as f64
                && self.since_change < PROBE_CONFIRM_S;
            let short = carried < PROBE_HELD * cap as f64;
            // What the probe carried so far, its first second (the
            // senders ramping up) and draining seconds left out.
            if self.since_change > 1 && !draining {
                self.probe_carried.0 += i.carried_bps;
                self.probe_carried.1 += 1;
            }
            let (sum, n) = self.probe_carried;
            let mean = if n > 0 {
                sum as f64 / n as f64
            } else {
                carried
            };
            if !i.congested && draining {
                return None;
            }
            if i.congested || (self.since_change >= PROBE_CHECK_S && short) {
                let basis = self.basis.unwrap_or(before) as f64;
                if i.congested {
                    // The ISP's limit, met: what the probe carried (its
                    // mean once past its first second) is what it delivers.
                    self.probed = Some(mean as u64);
                } else {
                    // Short, but clearly more than the uplink was known
                    // to carry and no sign of congestion: the offices
                    // asked no more (an ISP that still limits carries
                    // about the basis). The uplink carries all of it; keep
                    // the step, so the gateway does not hold offices below
                    // what they ask of a recovered ISP.
                    let confirmed = self.since_change >= PROBE_CONFIRM_S;
                    if mean > DEMAND_LIMITED * basis || (confirmed && mean > ABOVE_BASIS * basis) {
                        return self.keep_probe(mean as u64);
                    }
                    // More than the basis, less than clearly more: wait
                    // for the path's signs (seen in the lab: a basis of
                    // 28 and offices asking 31 failed every probe, and
                    // held them at 28 of a recovered 40 for minutes).
                    if !confirmed && mean > ABOVE_BASIS * basis {
                        return None;
                    }
                }
                self.probing = None;
                self.probe_wait = (self.probe_wait * 2).clamp(PROBE_FIRST_S, PROBE_MAX_S);
                return self
                    .set(cap, Some(before), Reason::ProbeFailed)
                    .map(|c| Change {
                        measured_bps: Some(mean as u64),
                        ..c
                    });
            }
            if self.since_change < PROBE_CHECK_S {
                return None;
            }
            // Held: the uplink carries at least this; the next step at once.
            self.probing = None;
            self.probed = None;
            self.probe_wait = PROBE_FIRST_S;
            self.basis = self.basis.max(Some(cap));
            return self.probe(cap, contract);
        }
        // While adapted the estimate reads about the capacity in force
        // (the gateway holds the traffic there): only one clearly below
        // it is news.
        if i.congested || i.delivered_bps.is_some_and(|d| (d as f64) < 0.95 * cap as f64) {
            self.filled_s = 0;
            self.light_s = 0;
            return None;
        }
        // Filled, uncongested: probe; light for long: the contract.
        self.filled_s = if carried >= FULL * cap as f64 {
            self.filled_s + 1
        } else {
            0
        };
        self.light_s = if carried < 0.5 * cap as f64 {
            self.light_s + 1
        } else {
            0
        };
        if self.light_s >= IDLE_S {
            return self.set(cap, None, Reason::Contract);
        }
        if self.filled_s >= self.probe_wait.max(1) {
            return self.probe(cap, contract);
        }
        None
    }

    /// Keeps a probe that was short of demand, not of uplink: the uplink
    /// carried `carried`, and the next probe may follow.
    fn keep_probe(&mut self, carried: u64) -> Option<Change> {
        self.probing = None;
        self.probed = None;
        self.basis = Some(carried);
        self.probe_wait = PROBE_FIRST_S;
        self.since_change = 0;
        self.filled_s = 0;
        None
    }

    /// A step up from `cap`, or the contract if the step reaches it (or
    /// ends within [`MIN_CHANGE`] of it). The
    /// step starts from what the ISP last delivered when that is higher
    /// (the margin keeps the capacity below it): a probe that only
    /// reached the delivered figure would be carried by an ISP that still
    /// limits (34 -> 42.5 against 40 is 94%, above [`PROBE_HELD`]), hold,
    /// and leave the queue at the ISP.
    fn probe(&mut self, cap: u64, contract: u64) -> Option<Change> {
        let from = cap.max(self.basis.unwrap_or(0));
        let up = (from as f64 * PROBE_STEP) as u64;
        // A step that ends within MIN_CHANGE of the contract is the
        // contract: from there the next step needs the offices to fill
        // 85% of it, and offices asking 80% left the gateway at 98% of its
        // contract, its guarantees scaled, for good.
        if up as f64 >= (1.0 - MIN_CHANGE) * contract as f64 {
            return self.set(cap, None, Reason::Contract);
        }
        self.probing = Some(cap);
        self.probe_carried = (0, 0);
        self.set(cap, Some(up), Reason::Probe)
    }

    fn set(&mut self, from: u64, to: Option<u64>, reason: Reason) -> Option<Change> {
        self.cap = to.filter(|&c| c < self.contract);
        if self.cap.is_none() {
            self.probing = None;
            self.probed = None;
            self.probe_wait = 0;
        }
        self.since_change = 0;
        self.filled_s = 0;
        self.light_s = 0;
        let to_bps = self.effective(self.contract);
        (to_bps != from).then_some(Change {
            from_bps: from,
            to_bps,
            reason,
            measured_bps: None,
        })
    }
}

#[cfg(test)]
mod tests;
