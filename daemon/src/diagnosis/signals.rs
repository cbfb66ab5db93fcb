//! Gathers each second's signals for the verdict engine: per-OPD packets
//! and rates from the BPF counters, handshake round trips from the RTT
//! histograms, HTB drops, router and upstream probes, interface carrier.
//! Turns the engine's state changes into log lines and history events.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jatah_common::{Counters, RTT_BUCKETS, RttHistogram, SIDE_LAN, SIDE_WAN, opd_class_minor};
use tracing::{info, warn};

use crate::datapath::SlotTable;
use crate::diagnosis::probe::{ProbeStatus, ProbeTarget};
use crate::diagnosis::{Change, OpdSignals, Probe, Thresholds, Tick};
use crate::http::AppState;
use crate::policy::{Direction, Policy};

/// The verdict engine's thresholds from the policy.
pub fn thresholds(policy: &Policy) -> Thresholds {
    let d = &policy.diagnosis;
    Thresholds {
        probe_lost_in_a_row: d.probe_lost_in_a_row,
        silence_s: d.silence.as_secs().max(1) as u32,
        lan_rtt: d.lan_rtt,
        wan_rtt: d.wan_rtt,
        ..Thresholds::default()
    }
}

/// Probe targets of a policy: every OPD router, every upstream target.
pub fn probe_targets(policy: &Policy) -> Vec<ProbeTarget> {
    let mut t: Vec<ProbeTarget> = policy
        .opds
        .iter()
        .filter_map(|o| {
            o.probe
                .map(|a| ProbeTarget::new(format!("opd:{}", o.id), a))
        })
        .collect();
    t.extend(
        policy
            .diagnosis
            .upstream
            .iter()
            .map(|u| ProbeTarget::new(format!("upstream:{}", u.name), u.address)),
    );
    t
}

#[derive(Debug, Default, Clone)]
struct Previous {
    counters: Counters,
    rtt: [RttHistogram; 2],
    drops: [u64; 2],
}

/// Remembers the previous second to turn cumulative counters into deltas.
#[derive(Debug, Default)]
pub struct Watcher {
    prev: BTreeMap<String, Previous>,
    probe_done: BTreeMap<String, u64>,
    last: Option<Instant>,
}

/// Interface names that hold an address inside each subnet, for carrier.
fn interfaces_by_address() -> Vec<(String, IpAddr)> {
    crate::sys::interface_addresses()
}

fn carrier(ifname: &str) -> Option<bool> {
    let state = std::fs::read_to_string(format!("/sys/class/net/{ifname}/operstate")).ok()?;
    match state.trim() {
        "up" | "unknown" => Some(true),
        "down" | "lowerlayerdown" | "notpresent" => Some(false),
        _ => None,
    }
}

impl Watcher {
    /// Builds this second's tick from the kernel and the prober.
    pub fn tick(&mut self, state: &AppState, at: DateTime<Utc>) -> Tick {
        let view = state.view();
        let policy = &view.policy;
        let now = Instant::now();
        let dt = self
            .last
            .map(|l| now.saturating_duration_since(l).as_secs_f64())
            .filter(|d| *d > 0.0)
            .unwrap_or(1.0);
        self.last = Some(now);
        let drops = crate::http::metrics::drops_by_minor(&crate::http::metrics::htb_stats(state));
        let probes: BTreeMap<String, ProbeStatus> = state
            .prober
            .as_ref()
            .map(|p| {
                p.snapshot()
                    .into_iter()
                    .map(|s| (s.key.clone(), s))
                    .collect()
            })
            .unwrap_or_default();
        let addrs = interfaces_by_address();
        let lan: Vec<&String> = policy.gateway.lan.iter().collect();

        let mut tick = Tick {
            at,
            capacity_bps: [
                policy.capacity(Direction::Download).bits_per_second(),
                policy.capacity(Direction::Upload).bits_per_second(),
            ],
            ..Tick::default()
        };
        let Some(reader) = &state.counters else {
            return tick;
        };
        let all_counters = SlotTable::counters(Some(reader), view.slot_count());
        let round_trips = SlotTable::round_trips(Some(reader), view.slot_count());
        for opd in &policy.opds {
            let Some(&slot) = view.slots.get(&opd.id) else {
                continue;
            };
            let Some(counters) = all_counters.get(slot) else {
                continue;
            };
            let rtt = [SIDE_LAN, SIDE_WAN]
                .map(|side| round_trips.get(slot * 2 + side).unwrap_or_default());
            let minor = opd_class_minor(slot) as u16;
            let drop_now = [
                drops[0].get(&minor).copied().unwrap_or(0),
                drops[1].get(&minor).copied().unwrap_or(0),
            ];
            let fresh = !self.prev.contains_key(&opd.id);
            let prev = self.prev.entry(opd.id.clone()).or_insert_with(|| Previous {
                counters,
                rtt,
                drops: drop_now,
            });
            let mut s = OpdSignals {
                ceiling_bps: [
                    opd.download.ceiling.bits_per_second(),
                    opd.upload.ceiling.bits_per_second(),
                ],
                probe_configured: opd.probe.is_some(),
                ..OpdSignals::default()
            };
            if !fresh {
                s.packets = std::array::from_fn(|d| {
                    counters.packets[d].saturating_sub(prev.counters.packets[d])
                });
                s.bps = std::array::from_fn(|d| {
                    (counters.bytes[d].saturating_sub(prev.counters.bytes[d]) as f64 * 8.0 / dt)
                        as u64
                });
                s.drops = std::array::from_fn(|d| drop_now[d].saturating_sub(prev.drops[d]));
                s.handshake_rtts =
                    std::array::from_fn(|side| new_round_trips(&prev.rtt[side], &rtt[side]));
            }
            *prev = Previous {
                counters,
                rtt,
                drops: drop_now,
            };
            if let Some(status) = probes.get(&format!("opd:{}", opd.id)) {
                s.probes = self.new_results(status);
            }
            // Carrier of the LAN interface that serves the OPD's subnets.
            s.link_up = addrs
                .iter()
                .filter(|(name, addr)| {
                    lan.contains(&name) && opd.subnets.iter().any(|n| n.contains(addr))
                })
                .find_map(|(name, _)| carrier(name));
            tick.opds.insert(opd.id.clone(), s);
        }
        self.prev.retain(|id, _| policy.opd(id).is_some());
        for u in &policy.diagnosis.upstream {
            if let Some(status) = probes.get(&format!("upstream:{}", u.name)) {
                let r = self.new_results(status);
                tick.upstream.insert(u.name.clone(), r);
            }
        }
        tick
    }

    /// Probe results that completed since the last tick.
    fn new_results(&mut self, status: &ProbeStatus) -> Vec<Probe> {
        let done = status.completed;
        let before = self.probe_done.insert(status.key.clone(), done);
        let Some(before) = before else {
            return Vec::new();
        };
        let n = (done.saturating_sub(before) as usize).min(status.recent.len());
        status.recent[status.recent.len() - n..]
            .iter()
            .map(|r| match r {
                Some(d) => Probe::Answered(*d),
                None => Probe::Lost,
            })
            .collect()
    }
}

/// Round trips completed between two readings of a histogram: their mean,
/// once per completed handshake (at most 16 a second are kept).
fn new_round_trips(before: &RttHistogram, now: &RttHistogram) -> Vec<Duration> {
    let n = now.count.saturating_sub(before.count);
    if n == 0 {
        return Vec::new();
    }
    let mean = now.sum_ns.saturating_sub(before.sum_ns) / n;
    vec![Duration::from_nanos(mean); n.min(16) as usize]
}

/// Upper bounds of the RTT histogram buckets, in seconds (the last is +Inf).
pub fn rtt_bucket_bounds() -> [f64; RTT_BUCKETS - 1] {
    let mut b = [0.0; RTT_BUCKETS - 1];
    for (k, v) in b.iter_mut().enumerate() {
        *v = jatah_common::RTT_BUCKET0_NS as f64 * (1u64 << k) as f64 / 1e9;
    }
    b
}

/// Logs a state change and keeps it as an event in the history store.
pub fn record_change(state: &AppState, change: &Change) {
    let who = change.opd.as_deref().unwrap_or("gateway");
    info!(
        opd = who,
        from = change.previous.map(|s| s.as_str()).unwrap_or("none"),
        to = change.verdict.state.as_str(),
        evidence = %change.verdict.evidence,
        "{}",
        change.verdict.explanation_en
    );
    let Ok(mut guard) = state.history.store.lock() else {
        return;
    };
    if let Some(store) = guard.as_mut() {
        let event = crate::history::Event {
            at: change.verdict.since,
            opd: change.opd.clone(),
            state: change.verdict.state.as_str().to_string(),
            previous: change.previous.map(|s| s.as_str().to_string()),
            evidence: change.verdict.evidence.clone(),
            message: change.verdict.explanation_en.clone(),
        };
        if let Err(e) = store.record_event(&event) {
            warn!(error = %e, "could not keep a diagnosis event in the history");
        }
    }
}
