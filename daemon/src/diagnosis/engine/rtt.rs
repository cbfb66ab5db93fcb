//! Round trips judged against their learned baselines (see
//! [`crate::diagnosis::baseline`]): which paths are inflated now, and the
//! numbers that say so.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::track::{Track, median, ms};
use super::inputs::{Probe, Thresholds};
use crate::diagnosis::baseline::{self, Baseline};
use crate::diagnosis::verdict::State;

/// Share of its ceiling from which an OPD's own queue at the gateway can
/// explain a slow round trip in that direction.
const OWN_QUEUE_RATIO: f64 = 0.7;
/// Answered probes a target needs for its median to be judged.
const MIN_ANSWERED: usize = 3;

/// Whether the OPD's own class at the gateway may be queueing in `dir`
/// (near its ceiling, or dropping): a round trip through that queue says
/// nothing about the path beyond it.
pub(super) fn own_queue(tr: &Track, dir: usize) -> bool {
    let ceil = tr.seconds.back().map_or(0, |s| s.ceiling_bps[dir]);
    let drops: u64 = tr.last(10).map(|s| s.drops[dir]).sum();
    drops > 0 || (ceil > 0 && tr.mean_bps(10, dir) as f64 >= OWN_QUEUE_RATIO * ceil as f64)
}

fn answered(probes: &VecDeque<Probe>) -> Option<Duration> {
    let v: Vec<Duration> = probes
        .iter()
        .filter_map(|p| match p {
            Probe::Answered(d) => Some(*d),
            Probe::Lost => None,
        })
        .collect();
    (v.len() >= MIN_ANSWERED)
        .then(|| median(v.into_iter()))
        .flatten()
}

/// An OPD's LAN: slow against its baselines (or the cap)?
pub(super) struct Lan {
    pub slow: bool,
    /// The threshold the LAN round trips were judged against.
    pub threshold: Duration,
    pub probe_baseline: Option<Duration>,
    pub handshake_baseline: Option<Duration>,
}

/// Judges an OPD's LAN round trips. Through its own download queue (the
/// router's probes and the LAN half of handshakes wait in it) only the
/// absolute cap applies.
pub(super) fn lan(tr: &Track, t: &Thresholds) -> Lan {
    let queued = own_queue(tr, 0);
    let threshold = |b: &Baseline| {
        if queued {
            t.lan_rtt
        } else {
            b.threshold(t.lan_rtt, baseline::LAN)
        }
    };
    let probe_thr = threshold(&tr.baselines.probe);
    let hs_thr = threshold(&tr.baselines.handshake[0]);
    let slow = tr.probe_median().is_some_and(|r| r > probe_thr)
        || tr.rtt_median(0).is_some_and(|(m, _)| m > hs_thr);
    Lan {
        slow,
        threshold: if tr.rtt_median(0).is_some() {
            hs_thr
        } else {
            probe_thr
        },
        probe_baseline: tr.baselines.probe.value(),
        handshake_baseline: tr.baselines.handshake[0].value(),
    }
}

/// The OPDs' WAN handshakes: how many are judged and how many inflated.
pub(super) struct Wan {
    pub medians: Vec<Duration>,
    pub inflated: usize,
    /// OPDs left out: their own upload queue explains their WAN round
    /// trips.
    pub own_queue: usize,
}

impl Wan {
    /// Half or more of at least two OPDs inflated.
    pub fn up(&self) -> bool {
        self.medians.len() >= 2 && self.inflated * 2 >= self.medians.len()
    }
}

pub(super) fn wan(opds: &BTreeMap<String, Track>, t: &Thresholds) -> Wan {
    let mut w = Wan {
        medians: Vec::new(),
        inflated: 0,
        own_queue: 0,
    };
    for tr in opds.values() {
        let Some((m, _)) = tr.rtt_median(1) else {
            continue;
        };
        // An OPD's SYNs wait in its own upload class before they leave.
        if own_queue(tr, 1) {
            w.own_queue += 1;
            continue;
        }
        w.medians.push(m);
        if m > tr.baselines.handshake[1].threshold(t.wan_rtt, baseline::WAN) {
            w.inflated += 1;
        }
    }
    w
}

/// The upstream targets judged against their own baselines: inflated
/// when more than half of those with enough answers are.
pub(super) fn upstream(
    queues: &BTreeMap<String, VecDeque<Probe>>,
    baselines: &BTreeMap<String, Baseline>,
    t: &Thresholds,
    ev: &mut Map<String, Value>,
) -> bool {
    let mut judged = 0;
    let mut inflated = 0;
    let mut per_target = Map::new();
    for (name, q) in queues {
        let Some(m) = answered(q) else {
            continue;
        };
        let b = baselines.get(name).cloned().unwrap_or_default();
        let thr = b.threshold(t.wan_rtt, baseline::WAN);
        judged += 1;
        inflated += usize::from(m > thr);
        per_target.insert(
            name.clone(),
            json!({
                "rtt_ms": ms(m),
                "baseline_ms": b.value().map(ms),
                "threshold_ms": ms(thr),
            }),
        );
    }
    if !per_target.is_empty() {
        ev.insert("upstream_targets".into(), Value::Object(per_target));
    }
    judged > 0 && inflated * 2 > judged
}

/// Whether the uplink is suspected now: an upstream verdict held or
/// pending, or an estimate that it delivers less.
pub(super) fn uplink_suspected(gateway: &Track, delivers_less: bool) -> bool {
    let upstream = |s: State| matches!(s, State::UpstreamDegraded | State::UpstreamDown);
    delivers_less
        || gateway.current.as_ref().is_some_and(|v| upstream(v.state))
        || gateway.candidate.is_some_and(|(s, _)| upstream(s))
}

/// Feeds this second's round trips to the baselines. A path learns only
/// while nothing is suspected on it: not the uplink (for WAN paths), not
/// the OPD's LAN (for its LAN paths), and its own round trips not above
/// their threshold now; its own queue at the gateway also keeps it out.
pub(super) fn learn(
    at: DateTime<Utc>,
    opds: &mut BTreeMap<String, Track>,
    upstream: &BTreeMap<String, VecDeque<Probe>>,
    upstream_baselines: &mut BTreeMap<String, Baseline>,
    new_probes: &BTreeMap<String, Vec<Probe>>,
    uplink_suspected: bool,
    t: &Thresholds,
) {
    upstream_baselines.retain(|k, _| upstream.contains_key(k));
    for (name, q) in upstream {
        let b = upstream_baselines.entry(name.clone()).or_default();
        let inflated = answered(q).is_some_and(|m| m > b.threshold(t.wan_rtt, baseline::WAN));
        let samples = new_probes.get(name).into_iter().flatten().filter_map(|p| match p {
            Probe::Answered(d) => Some(*d),
            Probe::Lost => None,
        });
        b.observe(at, samples, !uplink_suspected && !inflated);
    }
    for tr in opds.values_mut() {
        let Some(s) = tr.seconds.back().cloned() else {
            continue;
        };
        let local = tr
            .current
            .as_ref()
            .is_some_and(|v| matches!(v.state, State::LocalFault | State::LocalDegraded));
        let lan_queue = own_queue(tr, 0);
        let wan_queue = own_queue(tr, 1);
        let lan = lan(tr, t);
        let lan_clean = !local && !lan_queue && !lan.slow;
        let probes = s.probes.iter().filter_map(|p| match p {
            Probe::Answered(d) => Some(*d),
            Probe::Lost => None,
        });
        tr.baselines.probe.observe(at, probes, lan_clean);
        tr.baselines.handshake[0].observe(at, s.handshake_rtts[0].iter().copied(), lan_clean);
        let wan_thr = tr.baselines.handshake[1].threshold(t.wan_rtt, baseline::WAN);
        let wan_inflated = tr.rtt_median(1).is_some_and(|(m, _)| m > wan_thr);
        tr.baselines.handshake[1].observe(
            at,
            s.handshake_rtts[1].iter().copied(),
            !uplink_suspected && !wan_queue && !wan_inflated,
        );
    }
}
