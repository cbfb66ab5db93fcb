//! The verdict engine: from a window of per-second signals, decide for each
//! OPD (and the gateway) whether things are healthy, idle, saturated, broken
//! locally or upstream, with the numbers that decided it and since when.
//!
//! Pure and deterministic: the daemon feeds it one [`Tick`] a second (tests
//! feed synthetic ones) and it returns the state changes. Hysteresis: a new
//! state must be the verdict for `enter` consecutive seconds before it is
//! taken, so one lost probe or one quiet moment does not flap.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::baseline::Baseline;
use super::capacity::{CoSignals, Confidence, Delivered, Estimator, OpdClass, SourceRate};
use super::verdict::{Change, State, Verdict};
#[cfg(test)]
use super::verdict::{explain, explain_since};

/// The gateway verdict's reason while the uplink delivers less than the
/// OPDs ask of it.
const DELIVERS_LESS: &str = "delivers_less";
/// The gateway verdict's reason while TCP loses segments beyond the
/// gateway at half the OPDs.
const WAN_TCP_LOSS: &str = "wan_tcp_loss";
/// The source name of traffic that matched no OPD.
const UNCLASSIFIED: &str = "unclassified";
/// The directions' names by index (0 download, 1 upload), as evidence and
/// logs write them.
const DIRECTION_NAMES: [&str; 2] = ["download", "upload"];
/// Least 10 s rate of an active OPD, whatever its ceiling: below it, its
/// rate says nothing about the uplink.
const MIN_ACTIVE_BPS: u64 = 256_000;
/// Share of its ceiling from which an OPD dropping in its own class is
/// limited by that class rather than held by the uplink.
const NEAR_CEILING: f64 = 0.7;
/// A gap between ticks longer than this discards the windows: verdicts
/// need recent, continuous evidence.
const MAX_GAP_S: i64 = 5;
/// Seconds of signals needed before a first verdict (or a change after a
/// clock gap): a verdict from a few seconds would be a guess.
const WARM_UP_S: usize = 10;

/// The engine: per-OPD and gateway tracks.
#[derive(Debug)]
pub struct Engine {
    thresholds: Thresholds,
    opds: BTreeMap<String, Track>,
    gateway: Track,
    upstream: BTreeMap<String, VecDeque<Probe>>,
    last_at: Option<DateTime<Utc>>,
    /// What the uplink delivers, download then upload.
    capacity: [Estimator; 2],
    /// Each upstream target's learned round trip.
    upstream_baselines: BTreeMap<String, Baseline>,
    /// Congestion beyond the gateway last second, download then upload
    /// (see [`Engine::uplink_congested`]).
    congested: [bool; 2],
}

impl Engine {
    pub fn new(thresholds: Thresholds) -> Self {
        Engine {
            thresholds,
            opds: BTreeMap::new(),
            gateway: Track::default(),
            upstream: BTreeMap::new(),
            last_at: None,
            capacity: [Estimator::new(), Estimator::counted_before_loss()],
            upstream_baselines: BTreeMap::new(),
            congested: [false; 2],
        }
    }

    /// Whether the path beyond the gateway showed congestion last second,
    /// download then upload: inflated upstream probes or WAN handshakes
    /// and lost probes (either direction's queue can cause them), TCP loss
    /// beyond the gateway in that direction. None of these comes from the
    /// gateway's own queues, so the adaptive capacity reads them to know a
    /// probe went above what the ISP delivers. Per direction, so a limited
    /// upload does not keep download adapted (its probes and its return to
    /// the contract wait for an uncongested second).
    pub fn uplink_congested(&self) -> [bool; 2] {
        self.congested
    }

    /// Of the upload that left the gateway over the last
    /// [`loss::CARRIED_SHARE_S`] seconds, the share the Internet's ends
    /// acknowledged, pooled over the OPDs' sampled connections: what the
    /// gateway's root class sent times this is what the ISP carried (a
    /// policer passes less than TCP offers it). None with too little
    /// upload to judge.
    pub fn upload_carried_share(&self) -> Option<f64> {
        loss::carried_share(self.opds.values())
    }

    /// New thresholds (a policy reload); verdicts and windows are kept.
    pub fn set_thresholds(&mut self, t: Thresholds) {
        self.thresholds = t;
    }

    /// The current verdict of an OPD.
    pub fn opd(&self, id: &str) -> Option<&Verdict> {
        self.opds.get(id).and_then(|t| t.current.as_ref())
    }

    /// The gateway's own verdict (healthy, upstream_degraded, upstream_down).
    pub fn gateway(&self) -> Option<&Verdict> {
        self.gateway.current.as_ref()
    }

    /// What the uplink delivers now, download then upload, while an
    /// estimate holds (any confidence; only medium and high give a
    /// verdict).
    pub fn delivered(&self) -> [Option<&Delivered>; 2] {
        [self.capacity[0].delivered(), self.capacity[1].delivered()]
    }

    /// Every OPD's verdict.
    pub fn verdicts(&self) -> impl Iterator<Item = (&str, &Verdict)> {
        self.opds
            .iter()
            .filter_map(|(id, t)| t.current.as_ref().map(|v| (id.as_str(), v)))
    }

    /// Feeds one second; returns the state changes it caused.
    pub fn step(&mut self, tick: &Tick) -> Vec<Change> {
        let t = self.thresholds.clone();
        if let Some(last) = self.last_at
            && ((tick.at - last).num_seconds() > MAX_GAP_S || tick.at <= last)
        {
            // A clock gap (daemon paused, time set): old windows would
            // mislead; start collecting again, keep the current verdicts.
            for tr in self.opds.values_mut() {
                tr.seconds.clear();
                tr.probes.clear();
                tr.rtts = Default::default();
                tr.candidate = None;
            }
            self.gateway.seconds.clear();
            self.upstream.clear();
        }
        self.last_at = Some(tick.at);
        self.opds.retain(|id, _| tick.opds.contains_key(id));
        for (id, s) in &tick.opds {
            self.opds.entry(id.clone()).or_default().push(tick.at, s);
        }
        self.upstream.retain(|k, _| tick.upstream.contains_key(k));
        for (name, probes) in &tick.upstream {
            let q = self.upstream.entry(name.clone()).or_default();
            q.extend(probes.iter().copied());
            while q.len() > PROBES_KEPT {
                q.pop_front();
            }
        }

        let delivers_less = self
            .delivered()
            .into_iter()
            .flatten()
            .any(|d| d.confidence >= Confidence::Medium);
        rtt::learn(
            tick.at,
            &mut self.opds,
            &self.upstream,
            &mut self.upstream_baselines,
            &tick.upstream,
            rtt::uplink_suspected(&self.gateway, delivers_less),
            &t,
        );

        // The OPDs are classified with the verdicts they hold now, before
        // this second's verdicts: an OPD that is locally broken is never
        // evidence about the uplink.
        let uplink = self.uplink(&t);
        let probe_loss = self.upstream_probes().0;
        self.congested = uplink.congested(probe_loss, t.upstream_loss_ratio);
        for (dir, name) in DIRECTION_NAMES.into_iter().enumerate() {
            let sources = self.sources(tick, dir, &t);
            let co = uplink.co_signals(probe_loss, dir);
            let _span = tracing::debug_span!(
                target: "jatah::diagnosis::capacity",
                "capacity",
                dir = name
            )
            .entered();
            self.capacity[dir].step(tick.at, sources, tick.capacity_bps[dir], &co);
            if tick.probed_bps[dir] > 0 {
                self.capacity[dir].probed(tick.at, tick.probed_bps[dir]);
            }
            self.capacity[dir].hold_basis(
                tick.basis_bps[dir],
                tick.effective_bps[dir],
                tick.carried_bps[dir],
                self.congested[dir],
            );
        }

        let mut changes = Vec::new();
        self.gateway.seconds.push_back(OpdSignals::default());
        while self.gateway.seconds.len() > WINDOW_S {
            self.gateway.seconds.pop_front();
        }
        let (gw_state, gw_evidence) = self.gateway_verdict(tick, &t, &uplink);
        let plateau_since = self.delivers_less_since(&gw_evidence);
        // The verdict this one replaces began then: a new one cannot begin
        // before it (a plateau reaching back past a healthy spell would
        // list the new verdict before the healthy one in the history).
        let previous_since = self.gateway.current.as_ref().map(|v| v.since);
        if self.gateway.seconds.len() >= WARM_UP_S
            && let Some(mut c) = self
                .gateway
                .settle(None, tick.at, gw_state, gw_evidence, &t)
        {
            // The uplink delivered less from the start of the plateau, not
            // from when the verdict was confirmed.
            let plateau_since = plateau_since.map(|since| match previous_since {
                Some(p) => since.max(p + chrono::Duration::seconds(1)),
                None => since,
            });
            if let Some(since) = plateau_since
                && since < c.verdict.since
            {
                c.verdict.since = since;
                if let Some(v) = &mut self.gateway.current {
                    v.since = since;
                }
            }
            changes.push(c);
        }
        let gw_now = self
            .gateway
            .current
            .as_ref()
            .map(|v| v.state)
            .unwrap_or(State::Healthy);
        let ids: Vec<String> = self.opds.keys().cloned().collect();
        for id in ids {
            let track = &self.opds[&id];
            if track.seconds.len() < WARM_UP_S {
                continue;
            }
            let (state, evidence) = opd_verdict(track, gw_now, &t);
            let track = self.opds.get_mut(&id).expect("present");
            if let Some(c) = track.settle(Some(&id), tick.at, state, evidence, &t) {
                changes.push(c);
            }
        }
        changes
    }

    /// Loss ratio and median round trip of the recent upstream probes.
    fn upstream_probes(&self) -> (Option<f64>, Option<Duration>) {
        let all: Vec<Probe> = self.upstream.values().flatten().copied().collect();
        let probe_loss = (!all.is_empty())
            .then(|| all.iter().filter(|p| **p == Probe::Lost).count() as f64 / all.len() as f64);
        let probe_rtt = median(all.iter().filter_map(|p| match p {
            Probe::Answered(d) => Some(*d),
            Probe::Lost => None,
        }));
        (probe_loss, probe_rtt)
    }

    /// Whether the upstream probes are inflated: their pooled median above
    /// the cap, or most targets above their own learned thresholds.
    fn probes_inflated(&self, t: &Thresholds, ev: &mut serde_json::Map<String, Value>) -> bool {
        let (_, probe_rtt) = self.upstream_probes();
        let relative = rtt::upstream(&self.upstream, &self.upstream_baselines, t, ev);
        relative || probe_rtt.is_some_and(|r| r > t.wan_rtt)
    }

    /// This second's tests of the path beyond the gateway, made once for
    /// the estimator's co-signals and the gateway verdict.
    fn uplink(&self, t: &Thresholds) -> Uplink {
        let mut targets = serde_json::Map::new();
        let probes_inflated = self.probes_inflated(t, &mut targets);
        Uplink {
            probes_inflated,
            targets,
            wan: rtt::wan(&self.opds, t),
            tcp: loss::wan(&self.opds),
        }
    }

    /// Every OPD's rate this second in one direction, classed as evidence
    /// about the uplink, and the unclassified traffic.
    fn sources(&self, tick: &Tick, dir: usize, t: &Thresholds) -> Vec<SourceRate> {
        let mut v: Vec<SourceRate> = tick
            .opds
            .iter()
            .map(|(id, s)| SourceRate {
                id: id.clone(),
                bps: self
                    .opds
                    .get(id)
                    .map_or(s.bps[dir], |tr| loss::delivered_bps(tr, s.bps[dir], dir)),
                ceiling_bps: s.ceiling_bps[dir],
                class: self
                    .opds
                    .get(id)
                    .map_or(OpdClass::Inactive, |tr| opd_class(tr, dir, t)),
            })
            .collect();
        v.push(SourceRate {
            id: UNCLASSIFIED.into(),
            bps: tick.unclassified_bps[dir],
            ceiling_bps: 0,
            class: OpdClass::Unclassified,
        });
        v
    }

    /// The start of the plateau when the gateway verdict is the uplink
    /// delivering less.
    fn delivers_less_since(&self, evidence: &Value) -> Option<DateTime<Utc>> {
        if evidence.get("reason").and_then(Value::as_str) != Some(DELIVERS_LESS) {
            return None;
        }
        self.delivered()
            .into_iter()
            .flatten()
            .filter(|d| d.confidence >= Confidence::Medium)
            .map(|d| d.since)
            .min()
    }

    fn gateway_verdict(&self, tick: &Tick, t: &Thresholds, uplink: &Uplink) -> (State, Value) {
        let mut ev = serde_json::Map::new();
        // Upstream probes.
        let (probe_loss, probe_rtt) = self.upstream_probes();
        let every_target_down = !self.upstream.is_empty()
            && self.upstream.values().all(|q| {
                q.len() >= t.probe_lost_in_a_row as usize
                    && q.iter()
                        .rev()
                        .take(t.probe_lost_in_a_row as usize)
                        .all(|p| *p == Probe::Lost)
            });
        if let Some(l) = probe_loss {
            ev.insert("upstream_probe_loss_ratio".into(), json!(l));
        }
        if let Some(r) = probe_rtt {
            ev.insert("upstream_probe_rtt_ms".into(), json!(ms(r)));
        }
        // WAN handshake round trips across OPDs, each against its own
        // baseline.
        let wan = &uplink.wan;
        if !wan.medians.is_empty() {
            ev.insert("opds_with_wan_rtt".into(), json!(wan.medians.len()));
            ev.insert("opds_with_slow_wan_rtt".into(), json!(wan.inflated));
            ev.insert(
                "wan_rtt_median_ms".into(),
                json!(ms(median(wan.medians.iter().copied()).unwrap_or_default())),
            );
        }
        if wan.own_queue > 0 {
            ev.insert("opds_wan_rtt_own_queue".into(), json!(wan.own_queue));
        }
        let wan_rtt_up = wan.up();
        // TCP segments sent again because they were lost beyond the
        // gateway, across OPDs.
        let tcp = &uplink.tcp;
        tcp.evidence(&mut ev);
        // Aggregate throughput against the contracted capacity.
        // What the offices received through the gateway: with the bulk
        // lanes' short queues, TCP offers more than an office's ceiling
        // and its own class drops the rest, which is no sign of a full
        // uplink (in the lab, 41.5 Mbit/s offered for 32 received).
        let total_down: u64 = self
            .opds
            .values()
            .map(|tr| tr.mean_sent_bps(10, 0))
            .sum();
        let cap = tick.capacity_bps[0];
        ev.insert("download_bps_10s".into(), json!(total_down));
        ev.insert("download_capacity_bps".into(), json!(cap));
        let below_capacity = cap > 0 && (total_down as f64) < 0.9 * cap as f64;
        let active = self
            .opds
            .values()
            .filter(|tr| tr.packets(10, 0) + tr.packets(10, 1) >= t.idle_packets)
            .count();
        ev.insert("active_opds".into(), json!(active));
        ev.insert("wan_threshold_ms".into(), json!(ms(t.wan_rtt)));
        // What the uplink delivers, on every gateway verdict while an
        // estimate holds; a low-confidence one only as tentative.
        let mut delivers_less = false;
        for (dir, name) in DIRECTION_NAMES.into_iter().enumerate() {
            let Some(d) = self.delivered()[dir] else {
                continue;
            };
            if d.confidence >= Confidence::Medium {
                delivers_less = true;
                ev.insert(format!("{name}_delivered_bps"), json!(d.bps));
                ev.insert(format!("{name}_delivered_confidence"), json!(d.confidence));
                ev.insert(format!("{name}_delivered_since"), json!(d.since));
                ev.insert(
                    format!("{name}_capacity_bps"),
                    json!(tick.capacity_bps[dir]),
                );
                if tick.effective_bps[dir] > 0 {
                    ev.insert(
                        format!("{name}_effective_capacity_bps"),
                        json!(tick.effective_bps[dir]),
                    );
                }
            } else {
                ev.insert(format!("{name}_delivered_tentative_bps"), json!(d.bps));
            }
            ev.insert(format!("{name}_delivered_evidence"), json!(d.evidence));
        }

        let probes_bad = probe_loss.is_some_and(|l| l >= t.upstream_loss_ratio) || {
            ev.extend(uplink.targets.clone());
            uplink.probes_inflated
        };
        if every_target_down {
            return (State::UpstreamDown, Value::Object(ev));
        }
        if probes_bad || (wan_rtt_up && below_capacity) {
            return (State::UpstreamDegraded, Value::Object(ev));
        }
        if tcp.up() && below_capacity {
            ev.insert("reason".into(), json!(WAN_TCP_LOSS));
            return (State::UpstreamDegraded, Value::Object(ev));
        }
        if delivers_less {
            ev.insert("reason".into(), json!(DELIVERS_LESS));
            return (State::UpstreamDegraded, Value::Object(ev));
        }
        (State::Healthy, Value::Object(ev))
    }
}

/// The tests of the path beyond the gateway in one second.
struct Uplink {
    /// Upstream probes inflated (pooled median over the cap, or most
    /// targets over their learned thresholds).
    probes_inflated: bool,
    /// Each target's round trip, baseline and threshold, for evidence.
    targets: serde_json::Map<String, Value>,
    wan: rtt::Wan,
    tcp: loss::Wan,
}

impl Uplink {
    /// Whether the path itself shows congestion, as `dir`'s estimator
    /// reads it: the same tests the gateway verdict uses, TCP loss beyond
    /// the gateway in that direction only. Upload rates are corrected by
    /// the same WAN-side duplicates that make its loss co-signal, so the
    /// estimator lets that one raise an upload plateau to medium, not
    /// high (see `capacity`).
    fn co_signals(&self, probe_loss: Option<f64>, dir: usize) -> CoSignals {
        CoSignals {
            probes_inflated: self.probes_inflated,
            wan_handshakes_inflated: self.wan.up(),
            probe_loss,
            wan_tcp_loss: self.tcp.up_toward(dir),
        }
    }

    /// Congestion beyond the gateway per direction, for the adaptive
    /// capacity: inflated probes or WAN handshakes and lost probes (either
    /// direction's queue can cause them), TCP loss in that direction.
    fn congested(&self, probe_loss: Option<f64>, loss_ratio: f64) -> [bool; 2] {
        [0, 1].map(|dir| self.co_signals(probe_loss, dir).any(loss_ratio))
    }
}

/// How an OPD's traffic in one direction counts as evidence about the
/// uplink, from its 10 s window and the verdict it holds.
fn opd_class(tr: &Track, dir: usize, t: &Thresholds) -> OpdClass {
    let ceil = tr.seconds.back().map_or(0, |s| s.ceiling_bps[dir]);
    let rate = tr.mean_bps(10, dir);
    let active = tr.packets(10, 0) + tr.packets(10, 1) >= t.idle_packets
        && rate as f64 >= (MIN_ACTIVE_BPS as f64).max(0.02 * ceil as f64);
    if !active {
        return OpdClass::Inactive;
    }
    // A broken or slow office network limits the office, not the uplink.
    let local = tr
        .current
        .as_ref()
        .is_some_and(|v| matches!(v.state, State::LocalFault | State::LocalDegraded));
    let lan_lossy = tr.loss_ratio().is_some_and(|l| l >= t.lan_loss_ratio);
    if local || lan_lossy || rtt::lan(tr, t).slow || loss::lan_lossy(tr).is_some() {
        return OpdClass::Excluded;
    }
    // At its own ceiling, or near it and dropping in its own class: with
    // the aggregate below the contract, those drops come from its own HTB
    // class. Drops well below the ceiling are bursts its queue did not
    // hold (a short one, `queue_target`, drops them at any rate): an
    // office the uplink keeps at half its ceiling is held by the uplink,
    // not by its class, whatever a burst met.
    let drops: u64 = tr.last(10).map(|s| s.drops[dir]).sum();
    let at_ceiling = ceil > 0 && rate as f64 >= t.saturated_ratio * ceil as f64;
    let near_ceiling = ceil == 0 || rate as f64 >= NEAR_CEILING * ceil as f64;
    if at_ceiling || (drops > 0 && near_ceiling) {
        return OpdClass::SelfLimited;
    }
    OpdClass::Held
}

fn opd_verdict(tr: &Track, gateway: State, t: &Thresholds) -> (State, Value) {
    let down_pk = tr.packets(10, 0);
    let up_pk = tr.packets(10, 1);
    let silent_up =
        tr.seconds.len() >= t.silence_s as usize && tr.packets(t.silence_s as usize, 1) == 0;
    let lost_row = tr.lost_in_a_row();
    let loss = tr.loss_ratio();
    let probe_rtt = tr.probe_median();
    let last = tr.seconds.back().cloned().unwrap_or_default();
    let rate = [tr.mean_bps(10, 0), tr.mean_bps(10, 1)];
    let mut ev = serde_json::Map::new();
    ev.insert("download_packets_10s".into(), json!(down_pk));
    ev.insert("upload_packets_10s".into(), json!(up_pk));
    ev.insert("download_bps_10s".into(), json!(rate[0]));
    ev.insert("upload_bps_10s".into(), json!(rate[1]));
    if last.probe_configured {
        ev.insert("probe_lost_in_a_row".into(), json!(lost_row));
        if let Some(l) = loss {
            ev.insert("probe_loss_ratio".into(), json!(l));
        }
        if let Some(r) = probe_rtt {
            ev.insert("probe_rtt_ms".into(), json!(ms(r)));
        }
    }
    if let Some((m, n)) = tr.rtt_median(0) {
        ev.insert("lan_rtt_median_ms".into(), json!(ms(m)));
        ev.insert("lan_rtt_samples".into(), json!(n));
    }
    if let Some((m, n)) = tr.rtt_median(1) {
        ev.insert("wan_rtt_median_ms".into(), json!(ms(m)));
        ev.insert("wan_rtt_samples".into(), json!(n));
    }
    for (side, name) in [(0, "lan"), (1, "wan")] {
        if let Some((r, d)) = loss::worst(tr, side) {
            ev.insert(format!("{name}_tcp_loss_ratio"), json!(loss::round4(r)));
            ev.insert(
                format!("{name}_tcp_loss_direction"),
                json!(DIRECTION_NAMES[d]),
            );
        }
    }
    if let Some(up) = last.link_up {
        ev.insert("link".into(), json!(if up { "up" } else { "down" }));
    }

    // Local fault: its link is down, or its router stopped answering and
    // nothing comes from it, or traffic reaches it and nothing comes back.
    if last.link_up == Some(false) {
        ev.insert("reason".into(), json!("link_down"));
        return (State::LocalFault, Value::Object(ev));
    }
    let router_gone = last.probe_configured && lost_row >= t.probe_lost_in_a_row;
    if router_gone && silent_up {
        ev.insert("reason".into(), json!("router_not_answering"));
        return (State::LocalFault, Value::Object(ev));
    }
    if tr.seconds.len() >= 10 && down_pk >= t.idle_packets && up_pk == 0 {
        ev.insert("reason".into(), json!("one_way_traffic"));
        return (State::LocalFault, Value::Object(ev));
    }
    // TCP on its own network sends segments again: loss between the OPD
    // and the gateway, its own class's drops already taken off. Before
    // the ceiling: a full allocation does not explain loss on the wire.
    if loss::lan_lossy(tr).is_some() {
        ev.insert("reason".into(), json!("lan_tcp_loss"));
        ev.insert("lan_tcp_loss_threshold".into(), json!(loss::LAN_LOSS));
        return (State::LocalDegraded, Value::Object(ev));
    }
    // At its own ceiling: its allocation is full, not the network. Its own
    // queue also explains a slow LAN round trip, so this comes first.
    for (d, name) in DIRECTION_NAMES.into_iter().enumerate() {
        let ceil = last.ceiling_bps[d];
        if ceil > 0 && rate[d] as f64 >= t.saturated_ratio * ceil as f64 {
            ev.insert("reason".into(), json!(format!("{name}_at_ceiling")));
            ev.insert("ceiling_bps".into(), json!(ceil));
            ev.insert("drops_10s".into(), json!(tr.drops(10)));
            return (State::Saturated, Value::Object(ev));
        }
    }
    let lan = rtt::lan(tr, t);
    if let Some(b) = lan.probe_baseline.filter(|_| last.probe_configured) {
        ev.insert("probe_rtt_baseline_ms".into(), json!(ms(b)));
    }
    if let Some(b) = lan.handshake_baseline {
        ev.insert("lan_rtt_baseline_ms".into(), json!(ms(b)));
    }
    let lan_slow = lan.slow;
    // Scattered losses that go on: a loss among the latest three, so a
    // router that has come back is not held to its outage.
    let recent_loss = tr.probes.iter().rev().take(3).any(|p| *p == Probe::Lost);
    let lan_lossy =
        loss.is_some_and(|l| l >= t.lan_loss_ratio) && tr.probes.len() >= 5 && recent_loss;
    if lan_slow || lan_lossy {
        ev.insert(
            "reason".into(),
            json!(if lan_lossy {
                "router_probe_loss"
            } else {
                "lan_rtt_high"
            }),
        );
        ev.insert("lan_threshold_ms".into(), json!(ms(lan.threshold)));
        return (State::LocalDegraded, Value::Object(ev));
    }
    let active = down_pk + up_pk >= t.idle_packets;
    if active && matches!(gateway, State::UpstreamDegraded | State::UpstreamDown) {
        ev.insert("reason".into(), json!("uplink"));
        return (gateway, Value::Object(ev));
    }
    if !active {
        return (State::Idle, Value::Object(ev));
    }
    (State::Healthy, Value::Object(ev))
}

mod inputs;
mod loss;
mod rtt;
mod track;

pub use inputs::{OpdSignals, Probe, Thresholds, Tick};
use inputs::{PROBES_KEPT, WINDOW_S};

use track::{Track, median, ms};

#[cfg(test)]
mod tests;
