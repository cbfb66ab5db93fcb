//! What the engine is fed and judges with: the thresholds, one second of
//! signals per OPD and for the gateway, and how long a verdict must hold.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::diagnosis::verdict::State;

/// Seconds a new verdict must hold before the state changes to it.
pub(super) fn enter_after(state: State, t: &Thresholds) -> u32 {
    match state {
        State::LocalFault | State::UpstreamDown => t.fault_enter_s,
        State::Idle => t.idle_enter_s,
        State::Healthy => t.recover_enter_s,
        _ => t.degraded_enter_s,
    }
}

/// Thresholds of the verdicts, from the policy's `[diagnosis]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    /// Probes of an OPD's router lost in a row before it counts as not
    /// answering.
    pub probe_lost_in_a_row: u32,
    /// Seconds without a packet from an OPD that count as silent.
    pub silence_s: u32,
    /// Packets (both directions) in 10 s below which an OPD is idle.
    pub idle_packets: u64,
    /// Share of the ceiling (10 s average) from which an OPD is saturated.
    pub saturated_ratio: f64,
    /// LAN round trip (probe or handshake median) above which an OPD is
    /// degraded locally.
    pub lan_rtt: Duration,
    /// Share of its router's probes lost (last 10) that degrades an OPD.
    pub lan_loss_ratio: f64,
    /// WAN round trip (handshake median across OPDs, or upstream probes)
    /// above which the uplink is degraded.
    pub wan_rtt: Duration,
    /// Share of upstream probes lost (last 10) that degrades the uplink.
    pub upstream_loss_ratio: f64,
    /// Seconds a fault verdict must hold before it is declared.
    pub fault_enter_s: u32,
    /// Seconds a degraded or saturated verdict must hold.
    pub degraded_enter_s: u32,
    /// Seconds a healthy verdict must hold (recovery).
    pub recover_enter_s: u32,
    /// Seconds of quiet before a busy OPD counts as idle: one quiet minute
    /// is not a change of state.
    pub idle_enter_s: u32,
}

impl Thresholds {
    /// The thresholds a policy's `[diagnosis]` section sets; the rest
    /// keep their defaults.
    pub fn from_policy(policy: &crate::policy::Policy) -> Self {
        let d = &policy.diagnosis;
        Thresholds {
            probe_lost_in_a_row: d.probe_lost_in_a_row,
            silence_s: d.silence.as_secs().max(1) as u32,
            lan_rtt: d.lan_rtt,
            wan_rtt: d.wan_rtt,
            ..Thresholds::default()
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            probe_lost_in_a_row: 3,
            silence_s: 3,
            idle_packets: 20,
            saturated_ratio: 0.9,
            lan_rtt: Duration::from_millis(50),
            lan_loss_ratio: 0.3,
            wan_rtt: Duration::from_millis(150),
            upstream_loss_ratio: 0.3,
            fault_enter_s: 2,
            degraded_enter_s: 5,
            recover_enter_s: 5,
            idle_enter_s: 90,
        }
    }
}

/// Result of one probe in a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Probe {
    Answered(Duration),
    Lost,
}

/// What one second says about one OPD.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpdSignals {
    /// Packets and bits/s in this second, download then upload.
    pub packets: [u64; 2],
    pub bps: [u64; 2],
    /// Packets the OPD's HTB classes dropped in this second.
    pub drops: [u64; 2],
    /// Bytes its classifier counted less the bytes its HTB class sent in
    /// this second (dropped, or still queued), download then upload; None
    /// where the class was not in the dump. Negative in a second its queue
    /// sent more than it took in, so that sums over a window are the drops
    /// (and the change in queue) and not the sum of each second's noise.
    /// A dropped GRO packet is one drop but up to 44 segments: bytes say
    /// how much TCP lost.
    pub unsent_bytes: [Option<i64>; 2],
    /// How much the bytes queued in the OPD's leaves grew in this second
    /// (negative: they drained); None where a dump missed its classes.
    /// [`OpdSignals::unsent_bytes`] less this is what its classes dropped.
    pub queue_growth_bytes: [Option<i64>; 2],
    pub ceiling_bps: [u64; 2],
    /// Probes of the OPD's router completed in this second (oldest first);
    /// `probe_configured` false when the policy names no router.
    pub probe_configured: bool,
    pub probes: Vec<Probe>,
    /// Handshake round trips completed this second, per side (LAN, WAN).
    pub handshake_rtts: [Vec<Duration>; 2],
    /// Carrier of the OPD's own interface, where it has one.
    pub link_up: Option<bool>,
    /// Data segments of the sampled TCP connections judged in this second,
    /// download then upload (the denominator of `tcp_retransmitted`).
    pub tcp_segments: [u64; 2],
    /// Of those, segments sent again, by the side the first copy was lost
    /// on (`[SIDE_LAN]`, `[SIDE_WAN]`), download then upload. Includes the
    /// OPD's own HTB drops (on the LAN side for download, the WAN side for
    /// upload): compare with `drops`.
    pub tcp_retransmitted: [[u64; 2]; 2],
    /// Payload bytes of those segments, download then upload.
    pub tcp_payload_bytes: [u64; 2],
    /// Bytes of their data the other end acknowledged for the first time
    /// in this second; upload only (download stays 0).
    pub tcp_acked_bytes: [u64; 2],
}

/// One second of signals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tick {
    pub at: DateTime<Utc>,
    pub opds: BTreeMap<String, OpdSignals>,
    /// Upstream probes completed this second, by target name.
    pub upstream: BTreeMap<String, Vec<Probe>>,
    pub capacity_bps: [u64; 2],
    /// The capacity jatah shapes to where it adapted to an uplink that
    /// delivers less (0: the contract).
    pub effective_bps: [u64; 2],
    /// What the uplink delivered when jatah adapted to it: the figure
    /// that stands while the gateway holds traffic at `effective_bps`.
    pub basis_bps: [u64; 2],
    /// What the gateway's root class sent in this second where jatah
    /// adapted (0 elsewhere): at its capacity, the gateway holds the
    /// traffic; well below, the offices ask no more.
    pub carried_bps: [u64; 2],
    /// Where jatah adapted, what its last probe carried when it met
    /// congestion beyond the gateway (0: none since): what the ISP
    /// delivers now.
    pub probed_bps: [u64; 2],
    /// Bits/s of traffic that matched no OPD in this second, download then
    /// upload: it shares the uplink, so it counts in the delivered
    /// aggregate.
    pub unclassified_bps: [u64; 2],
}



/// How many seconds of signals the engine keeps.
pub(super) const WINDOW_S: usize = 30;

/// Probe results kept per target.
pub(super) const PROBES_KEPT: usize = 10;

/// Handshake samples kept per OPD and side.
pub(super) const RTTS_KEPT: usize = 64;
