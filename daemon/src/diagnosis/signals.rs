//! Turns each second's kernel reading into the verdict engine's signals:
//! per-OPD packets and rates from the BPF counters, handshake round trips
//! from the RTT histograms, HTB drops, router and upstream probes,
//! interface carrier. It never reads the kernel's maps itself: the sampler
//! (`runtime::sampler`) reads them once a second and hands the
//! [`Reading`] to every consumer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jatah_common::{
    Counters, DIRECTIONS, RTT_BUCKETS, RttHistogram, TcpLoss, opd_class_minor,
    rtt_bucket_bound_ns,
};

use crate::diagnosis::probe::{ProbeStatus, ProbeTarget};
use crate::diagnosis::{OpdSignals, Probe, Tick};
use crate::policy::{Direction, Policy};

/// One reading of the kernel, taken by the sampler once a second: the
/// cumulative counters and round-trip histograms of every slot in use, and
/// the HTB drops of every class.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub at: Option<Instant>,
    /// Counters by slot.
    pub counters: BTreeMap<u32, Counters>,
    /// Round-trip histograms by slot, LAN side then WAN side.
    pub round_trips: BTreeMap<u32, [RttHistogram; 2]>,
    /// Retransmissions in the sampled TCP connections, by slot.
    pub tcp_loss: BTreeMap<u32, TcpLoss>,
    /// HTB drops by class minor, per direction.
    pub drops: [BTreeMap<u16, u64>; DIRECTIONS],
    /// Bytes the root class (`1:1`) carried so far, per direction; None
    /// where the dump failed.
    pub root_bytes: [Option<u64>; DIRECTIONS],
    /// Bytes queued in the direction's leaves now; None where the dump
    /// failed.
    pub backlog_bytes: [Option<u64>; DIRECTIONS],
    /// Bytes each class sent so far, by minor, per direction.
    pub class_bytes: [BTreeMap<u16, u64>; DIRECTIONS],
    /// Bytes queued in each OPD's leaves now, by the OPD class's minor,
    /// per direction.
    pub queued: [BTreeMap<u16, u64>; DIRECTIONS],
    /// Traffic that matched no OPD.
    /// None when reading it failed this second.
    pub unclassified: Option<Counters>,
}

/// What a probe target is: an OPD's router or an upstream target. Its
/// [`ProbeOf::key`] names it in the prober.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOf {
    Opd(String),
    Upstream(String),
}

impl ProbeOf {
    const OPD: &str = "opd:";
    const UPSTREAM: &str = "upstream:";

    /// The prober's key of this target.
    pub fn key(&self) -> String {
        match self {
            ProbeOf::Opd(id) => format!("{}{id}", Self::OPD),
            ProbeOf::Upstream(name) => format!("{}{name}", Self::UPSTREAM),
        }
    }

    /// The target a prober key names.
    pub fn parse(key: &str) -> Option<ProbeOf> {
        if let Some(id) = key.strip_prefix(Self::OPD) {
            Some(ProbeOf::Opd(id.to_string()))
        } else {
            key.strip_prefix(Self::UPSTREAM)
                .map(|n| ProbeOf::Upstream(n.to_string()))
        }
    }
}

/// Probe targets of a policy: every OPD router, every upstream target.
pub fn probe_targets(policy: &Policy) -> Vec<ProbeTarget> {
    let mut t: Vec<ProbeTarget> = policy
        .opds
        .iter()
        .filter_map(|o| {
            o.probe
                .map(|a| ProbeTarget::new(ProbeOf::Opd(o.id.clone()).key(), a))
        })
        .collect();
    t.extend(
        policy
            .diagnosis
            .upstream
            .iter()
            .map(|u| ProbeTarget::new(ProbeOf::Upstream(u.name.clone()).key(), u.address)),
    );
    t
}

/// An OPD's last good reading: cumulative values, read at `at`.
#[derive(Debug, Clone)]
struct Previous {
    at: Instant,
    counters: Counters,
    rtt: [RttHistogram; 2],
    /// Cumulative HTB drops per direction; None while the class has not
    /// been seen in a dump.
    drops: [Option<u64>; DIRECTIONS],
    /// Cumulative bytes the OPD's class sent, per direction, with the
    /// classifier's byte count at the same reading.
    sent: [Option<(u64, u64)>; DIRECTIONS],
    /// Bytes queued in the OPD's leaves at the same reading.
    queued: [Option<u64>; DIRECTIONS],
    /// The rates of the last second with a good reading, held for a
    /// second whose read failed.
    packets: [u64; 2],
    bps: [u64; 2],
    /// None until a read of the retransmission counters succeeded.
    tcp: Option<TcpLoss>,
}

/// Remembers the previous second to turn cumulative counters into deltas.
#[derive(Debug, Default)]
pub struct Watcher {
    prev: BTreeMap<String, Previous>,
    probe_done: BTreeMap<String, u64>,
    /// The unclassified slot's counters at the last second they were
    /// read, and when.
    prev_unclassified: Option<(Counters, Instant)>,
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
    /// Builds this second's tick from the sampler's reading, the policy in
    /// force (with each OPD's slot) and the prober's state.
    pub fn tick(
        &mut self,
        reading: &Reading,
        policy: &Policy,
        slots: &BTreeMap<String, u32>,
        probes: &[ProbeStatus],
        at: DateTime<Utc>,
    ) -> Tick {
        let now = reading.at.unwrap_or_else(Instant::now);
        let probes: BTreeMap<&str, &ProbeStatus> =
            probes.iter().map(|s| (s.key.as_str(), s)).collect();
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
        for opd in &policy.opds {
            let Some(&slot) = slots.get(&opd.id) else {
                continue;
            };
            let mut s = OpdSignals {
                ceiling_bps: [
                    opd.download.ceiling.bits_per_second(),
                    opd.upload.ceiling.bits_per_second(),
                ],
                probe_configured: opd.probe.is_some(),
                ..OpdSignals::default()
            };
            let minor = opd_class_minor(slot) as u16;
            let tcp = reading.tcp_loss.get(&slot).copied();
            // A class missing from a dump (the dump failed) is unknown,
            // not zero: the next good dump must not count old drops as new.
            let drop_now: [Option<u64>; DIRECTIONS] =
                std::array::from_fn(|d| reading.drops[d].get(&minor).copied());
            let queued_now: [Option<u64>; DIRECTIONS] =
                std::array::from_fn(|d| reading.queued[d].get(&minor).copied());
            let sent_now = |c: &Counters| -> [Option<(u64, u64)>; DIRECTIONS] {
                std::array::from_fn(|d| {
                    reading.class_bytes[d]
                        .get(&minor)
                        .map(|&sent| (sent, c.bytes[d]))
                })
            };
            match (reading.counters.get(&slot), self.prev.get_mut(&opd.id)) {
                (Some(&counters), Some(prev)) => {
                    let rtt = reading.round_trips.get(&slot).copied().unwrap_or_default();
                    // Each OPD's rate spans the time since its own last
                    // good reading: after a failed read, two seconds of
                    // bytes over two seconds.
                    let dt = now.saturating_duration_since(prev.at).as_secs_f64();
                    let dt = if dt > 0.0 { dt } else { 1.0 };
                    s.packets = std::array::from_fn(|d| {
                        counters.packets[d].saturating_sub(prev.counters.packets[d])
                    });
                    s.bps = std::array::from_fn(|d| {
                        (counters.bytes[d].saturating_sub(prev.counters.bytes[d]) as f64 * 8.0
                            / dt) as u64
                    });
                    s.drops = std::array::from_fn(|d| match (drop_now[d], prev.drops[d]) {
                        (Some(now), Some(before)) => now.saturating_sub(before),
                        _ => 0,
                    });
                    s.handshake_rtts =
                        std::array::from_fn(|side| new_round_trips(&prev.rtt[side], &rtt[side]));
                    // A failed read (either side) gives no delta this
                    // second; the next one spans the gap.
                    if let (Some(now_t), Some(prev_t)) = (&tcp, &prev.tcp) {
                        tcp_deltas(&mut s, prev_t, now_t);
                    }
                    let sent = sent_now(&counters);
                    s.unsent_bytes = std::array::from_fn(|d| match (sent[d], prev.sent[d]) {
                        (Some((sent1, seen1)), Some((sent0, seen0))) => {
                            let seen = seen1.saturating_sub(seen0) as i64;
                            let sent = sent1.saturating_sub(sent0) as i64;
                            Some(seen.saturating_sub(sent))
                        }
                        _ => None,
                    });
                    s.queue_growth_bytes =
                        std::array::from_fn(|d| match (queued_now[d], prev.queued[d]) {
                            (Some(q1), Some(q0)) => Some(q1 as i64 - q0 as i64),
                            _ => None,
                        });
                    *prev = Previous {
                        at: now,
                        counters,
                        rtt,
                        sent,
                        queued: queued_now,
                        drops: std::array::from_fn(|d| drop_now[d].or(prev.drops[d])),
                        packets: s.packets,
                        bps: s.bps,
                        tcp: tcp.or(prev.tcp),
                    };
                }
                (Some(&counters), None) => {
                    // The first reading: rates from the next one.
                    let rtt = reading.round_trips.get(&slot).copied().unwrap_or_default();
                    self.prev.insert(
                        opd.id.clone(),
                        Previous {
                            at: now,
                            counters,
                            rtt,
                            sent: sent_now(&counters),
                            queued: queued_now,
                            drops: drop_now,
                            packets: [0; 2],
                            bps: [0; 2],
                            tcp,
                        },
                    );
                }
                (None, Some(prev)) => {
                    // The read failed: the OPD keeps its place in the
                    // verdicts and the delivered estimate with its last
                    // second's rates, for this second only.
                    s.packets = prev.packets;
                    s.bps = prev.bps;
                    prev.packets = [0; 2];
                    prev.bps = [0; 2];
                }
                (None, None) => continue,
            }
            if let Some(status) = probes.get(ProbeOf::Opd(opd.id.clone()).key().as_str()) {
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
        // Traffic that matched no OPD still crosses the uplink: the
        // delivered estimate counts it like an OPD's.
        // A failed read keeps the last good one (and this second reads 0),
        // so it never turns into a spike of the whole counter.
        if let Some(now_c) = reading.unclassified {
            if let Some((prev, at)) = self.prev_unclassified {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                if dt > 0.0 {
                    tick.unclassified_bps = std::array::from_fn(|d| {
                        (now_c.bytes[d].saturating_sub(prev.bytes[d]) as f64 * 8.0 / dt) as u64
                    });
                }
            }
            self.prev_unclassified = Some((now_c, now));
        }
        for u in &policy.diagnosis.upstream {
            if let Some(status) = probes.get(ProbeOf::Upstream(u.name.clone()).key().as_str()) {
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

/// Segments judged, segments sent again (per side), their payload and the
/// bytes acknowledged between two readings of an OPD's TCP counters, per
/// direction, into this second's signals.
fn tcp_deltas(s: &mut OpdSignals, before: &TcpLoss, now: &TcpLoss) {
    let delta = |a: &[u64; 2], b: &[u64; 2]| -> [u64; 2] {
        std::array::from_fn(|d| a[d].saturating_sub(b[d]))
    };
    s.tcp_segments = delta(&now.segments, &before.segments);
    s.tcp_retransmitted =
        std::array::from_fn(|side| delta(&now.retransmitted[side], &before.retransmitted[side]));
    s.tcp_payload_bytes = delta(&now.payload_bytes, &before.payload_bytes);
    s.tcp_acked_bytes = delta(&now.acked_bytes, &before.acked_bytes);
}

/// Upper bounds of the RTT histogram buckets, in seconds (the last is +Inf).
pub fn rtt_bucket_bounds() -> [f64; RTT_BUCKETS - 1] {
    std::array::from_fn(|k| rtt_bucket_bound_ns(k) as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[gateway]
wan = "eth0"
lan = ["eth1"]
download = "100M"
upload = "50M"

[[opd]]
id = "a"
name = "A"
subnets = ["10.20.1.0/24"]
download = { guaranteed = "10M", ceiling = "20M" }
upload = { guaranteed = "5M", ceiling = "10M" }
"#;

    fn unclassified(bytes: u64) -> Option<Counters> {
        Some(Counters {
            bytes: [bytes, 0],
            packets: [0, 0],
        })
    }

    fn counters(bytes: u64) -> Counters {
        Counters {
            bytes: [bytes, 0],
            packets: [bytes / 1000, 0],
        }
    }

    #[test]
    fn a_failed_opd_read_keeps_the_opd_and_the_next_rate_spans_the_gap() {
        let policy = crate::policy::parse(POLICY, "t.toml").unwrap();
        let slots = BTreeMap::from([("a".to_string(), 0)]);
        let t0 = Instant::now();
        let at = Utc::now();
        let mut w = Watcher::default();
        let mut tick = |s: u64, c: Option<Counters>| {
            let mut reading = Reading {
                at: Some(t0 + Duration::from_secs(s)),
                ..Reading::default()
            };
            if let Some(c) = c {
                reading.counters.insert(0, c);
            }
            w.tick(&reading, &policy, &slots, &[], at)
                .opds
                .get("a")
                .map(|o| o.bps[0])
        };
        assert_eq!(tick(0, Some(counters(1_000_000))), Some(0));
        assert_eq!(tick(1, Some(counters(1_125_000))), Some(1_000_000));
        assert_eq!(
            tick(2, None),
            Some(1_000_000),
            "a failed read keeps the OPD with its last rate"
        );
        assert_eq!(
            tick(3, Some(counters(1_375_000))),
            Some(1_000_000),
            "two seconds of bytes over two seconds"
        );
        assert_eq!(tick(4, None), Some(1_000_000));
        assert_eq!(tick(5, None), Some(0), "held for one second only");
    }

    /// Seconds of OPD "a" (slot 0, 1000 bytes a second) whose HTB dump
    /// holds a value for its class, put there by `put` (None: the dump
    /// missed the class); each gives "a"'s signals for that second.
    fn dump_ticks(put: fn(&mut Reading, u16, u64)) -> impl FnMut(u64, Option<u64>) -> OpdSignals {
        let policy = crate::policy::parse(POLICY, "t.toml").unwrap();
        let slots = BTreeMap::from([("a".to_string(), 0)]);
        let minor = opd_class_minor(0) as u16;
        let t0 = Instant::now();
        let mut w = Watcher::default();
        move |s, value| {
            let mut reading = Reading {
                at: Some(t0 + Duration::from_secs(s)),
                ..Reading::default()
            };
            reading.counters.insert(0, counters(1000 * (s + 1)));
            if let Some(v) = value {
                put(&mut reading, minor, v);
            }
            w.tick(&reading, &policy, &slots, &[], Utc::now()).opds["a"].clone()
        }
    }

    #[test]
    fn a_failed_htb_dump_does_not_count_old_drops_as_new() {
        let mut tick = dump_ticks(|r, minor, d| {
            r.drops[0].insert(minor, d);
        });
        let mut tick = |s, d| tick(s, d).drops[0];
        assert_eq!(tick(0, Some(500)), 0);
        assert_eq!(tick(1, Some(510)), 10);
        assert_eq!(tick(2, None), 0, "a failed dump reads as no new drops");
        assert_eq!(tick(3, Some(515)), 5, "not 515: the cumulative count is kept");
    }

    #[test]
    fn an_opds_queue_growth_is_its_lanes_backlog_change_and_unknown_after_a_failed_dump() {
        let mut tick = dump_ticks(|r, minor, q| {
            r.queued[0].insert(minor, q);
        });
        let mut tick = |s, q| tick(s, q).queue_growth_bytes[0];
        assert_eq!(tick(0, Some(30_000)), None, "the first reading is the base");
        assert_eq!(tick(1, Some(50_000)), Some(20_000));
        assert_eq!(tick(2, Some(5_000)), Some(-45_000), "a queue draining");
        assert_eq!(tick(3, None), None, "a failed dump");
        assert_eq!(tick(4, Some(6_000)), None, "no change against an unknown backlog");
        assert_eq!(tick(5, Some(6_000)), Some(0));
    }

    #[test]
    fn retransmissions_become_per_second_deltas_and_a_failed_read_no_spike() {
        let policy = crate::policy::parse(POLICY, "t.toml").unwrap();
        let slots = BTreeMap::from([("a".to_string(), 0)]);
        let t0 = Instant::now();
        let mut w = Watcher::default();
        let mut tick = |s: u64, segments: Option<u64>| {
            let mut reading = Reading {
                at: Some(t0 + Duration::from_secs(s)),
                counters: BTreeMap::from([(0, Counters::default())]),
                ..Reading::default()
            };
            if let Some(n) = segments {
                let mut t = TcpLoss {
                    segments: [n, n / 2],
                    payload_bytes: [n * 1_448, n * 724],
                    acked_bytes: [0, n * 600],
                    ..TcpLoss::default()
                };
                t.retransmitted[jatah_common::SIDE_WAN as usize] = [n / 10, 0];
                t.retransmitted[jatah_common::SIDE_LAN as usize] = [0, n / 100];
                reading.tcp_loss.insert(0, t);
            }
            let o = &w.tick(&reading, &policy, &slots, &[], Utc::now()).opds["a"];
            (
                o.tcp_segments,
                o.tcp_retransmitted,
                o.tcp_payload_bytes,
                o.tcp_acked_bytes,
            )
        };
        assert_eq!(tick(0, Some(1_000)).0, [0, 0], "the first reading is the base");
        assert_eq!(
            tick(1, Some(2_000)),
            (
                [1_000, 500],
                [[0, 10], [100, 0]],
                [1_448_000, 724_000],
                [0, 600_000]
            )
        );
        assert_eq!(
            tick(2, None),
            ([0, 0], [[0, 0], [0, 0]], [0, 0], [0, 0]),
            "a failed read"
        );
        assert_eq!(
            tick(3, Some(4_000)).0,
            [2_000, 1_000],
            "the next reading spans the gap"
        );
    }

    #[test]
    fn a_failed_unclassified_read_is_no_spike_and_the_next_rate_spans_the_gap() {
        let policy = crate::policy::parse(POLICY, "t.toml").unwrap();
        let slots = BTreeMap::from([("a".to_string(), 0)]);
        let t0 = Instant::now();
        let at = Utc::now();
        let mut w = Watcher::default();
        let mut tick = |s: u64, u: Option<Counters>| {
            let reading = Reading {
                at: Some(t0 + Duration::from_secs(s)),
                unclassified: u,
                ..Reading::default()
            };
            w.tick(&reading, &policy, &slots, &[], at).unclassified_bps
        };
        assert_eq!(tick(0, unclassified(1_000_000)), [0, 0]);
        assert_eq!(tick(1, unclassified(1_125_000)), [1_000_000, 0]);
        assert_eq!(tick(2, None), [0, 0], "a failed read reads 0, not the whole counter");
        assert_eq!(
            tick(3, unclassified(1_375_000)),
            [1_000_000, 0],
            "two seconds of bytes over two seconds"
        );
    }
}
