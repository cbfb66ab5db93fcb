//! `/metrics`: per-OPD counters read from the BPF maps at scrape time by a
//! custom Collector (summed over CPUs), drops from the HTB class statistics,
//! allocations from the policy in force. Bytes, never bits.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::http::exposition::{Family as MetricFamily, Kind, Sample as Metric, Value};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jatah_common::{DOWNLOAD, Stat, UPLOAD, opd_class_minor};
use tracing::warn;

use crate::datapath::SlotTable;

use crate::http::AppState;
use crate::policy::Direction;
use crate::shaper::{ClassStats, Shaper};

/// Keeps counters read from HTB classes (drops, a group's bytes) monotonic:
/// HTB statistics restart from zero when a class is recreated, the
/// exported counter must not.
#[derive(Debug, Default)]
pub struct Monotonic {
    /// (series index, key) -> (last raw value, carried offset)
    seen: BTreeMap<(usize, String), (u64, u64)>,
}

impl Monotonic {
    pub fn observe(&mut self, dir: usize, opd: &str, raw: u64) -> u64 {
        let e = self.seen.entry((dir, opd.to_string())).or_insert((raw, 0));
        if raw < e.0 {
            e.1 += e.0;
        }
        e.0 = raw;
        e.1 + raw
    }
}

type LabelPair = (&'static str, String);

fn label(name: &'static str, value: &str) -> LabelPair {
    (name, value.to_string())
}

fn family(name: &str, help: &str, kind: Kind, metrics: Vec<Metric>) -> MetricFamily {
    MetricFamily {
        name: name.to_string(),
        help: help.to_string(),
        kind,
        samples: metrics,
    }
}

fn counter(labels: Vec<LabelPair>, v: f64) -> Metric {
    Metric {
        labels,
        value: Value::Number(v),
    }
}

fn gauge(labels: Vec<LabelPair>, v: f64) -> Metric {
    counter(labels, v)
}

/// The collector; reads everything at scrape time.
pub struct JatahCollector {
    state: Arc<AppState>,
}

impl JatahCollector {
    pub fn new(state: Arc<AppState>) -> Self {
        JatahCollector { state }
    }
}

/// HTB class statistics of both trees (download on the LAN device, upload
/// on the WAN), read over netlink; empty where unavailable.
pub fn htb_stats(state: &AppState) -> [Vec<ClassStats>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    let Some(ifaces) = state.shaping() else {
        return out;
    };
    let mut shaper = match Shaper::new() {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "netlink unavailable for HTB statistics");
            return out;
        }
    };
    for (d, iface) in [(DOWNLOAD, &ifaces.lan_device), (UPLOAD, &ifaces.wan)] {
        match shaper.class_stats(iface.ifindex) {
            Ok(stats) => out[d] = stats,
            Err(e) => {
                warn!(interface = %iface.name, operation = "htb_stats", error = %e, "reading HTB class statistics");
                state.count_kernel_error("htb_stats", &iface.name);
            }
        }
    }
    out
}

/// HTB drops per class minor, per direction index.
pub fn drops_by_minor(stats: &[Vec<ClassStats>; 2]) -> [BTreeMap<u16, u64>; 2] {
    [0, 1].map(|d| stats[d].iter().map(|c| (c.minor, c.drops)).collect())
}

impl JatahCollector {
    /// Every family, read now.
    pub fn collect(&self) -> Vec<MetricFamily> {
        let state = &self.state;
        let view = state.view();
        let policy = &view.policy;
        // The HTB dumps (netlink) and the round-trip histograms (BPF map
        // reads) are the two slow parts of a scrape; do them side by side.
        let (class_stats, diagnosis) = std::thread::scope(|s| {
            let htb = s.spawn(|| htb_stats(state));
            let diagnosis = diagnosis_families(state, &view);
            (htb.join().unwrap_or_default(), diagnosis)
        });
        let drops = drops_by_minor(&class_stats);
        let mut drop_tracker = state.drops.lock().unwrap_or_else(|p| p.into_inner());

        let counters = SlotTable::counters(state.counters.as_ref(), view.slot_count());
        let mut bytes = [Vec::new(), Vec::new()];
        let mut packets = [Vec::new(), Vec::new()];
        let mut dropped = [Vec::new(), Vec::new()];
        let mut guaranteed = [Vec::new(), Vec::new()];
        let mut ceiling = [Vec::new(), Vec::new()];
        let mut info = Vec::new();
        for opd in &policy.opds {
            let l = || vec![label("opd", &opd.id)];
            info.push(gauge(
                vec![label("name", &opd.name), label("opd", &opd.id)],
                1.0,
            ));
            for dir in Direction::all() {
                let d = dir_index(dir);
                let a = opd.allocation(dir);
                guaranteed[d].push(gauge(l(), a.guaranteed.bytes_per_second() as f64));
                ceiling[d].push(gauge(l(), a.ceiling.bytes_per_second() as f64));
            }
            let Some(&slot) = view.slots.get(&opd.id) else {
                continue;
            };
            if let Some(c) = counters.get(slot) {
                for d in [DOWNLOAD, UPLOAD] {
                    bytes[d].push(counter(l(), c.bytes[d] as f64));
                    packets[d].push(counter(l(), c.packets[d] as f64));
                }
            }
            let minor = opd_class_minor(slot) as u16;
            for d in [DOWNLOAD, UPLOAD] {
                let raw = drops[d].get(&minor).copied().unwrap_or(0);
                dropped[d].push(counter(l(), drop_tracker.observe(d, &opd.id, raw) as f64));
            }
        }
        drop(drop_tracker);
        // Removed OPDs: their final counters, once, so Prometheus sees the
        // last value; then their slots may be reused.
        if !view.retired.is_empty() && state.counters.is_some() {
            let mut exported = std::collections::BTreeSet::new();
            for (id, &slot) in &view.retired {
                if view.slots.contains_key(id) {
                    continue;
                }
                if let Some(c) = counters.get(slot) {
                    for d in [DOWNLOAD, UPLOAD] {
                        bytes[d].push(counter(vec![label("opd", id)], c.bytes[d] as f64));
                        packets[d].push(counter(vec![label("opd", id)], c.packets[d] as f64));
                    }
                    exported.insert(slot);
                }
            }
            state.retired_scraped(&exported);
        }

        let mut out = Vec::new();
        for (d, name) in [(DOWNLOAD, "download"), (UPLOAD, "upload")] {
            let what = if d == DOWNLOAD {
                "Internet -> OPD"
            } else {
                "OPD -> Internet"
            };
            out.push(family(
                &format!("jatah_opd_{name}_bytes_total"),
                &format!("Bytes {what} offered to the OPD's HTB class (headers of every segment included)."),
                Kind::Counter,
                std::mem::take(&mut bytes[d]),
            ));
            out.push(family(
                &format!("jatah_opd_{name}_packets_total"),
                &format!("Packets {what} attributed to the OPD."),
                Kind::Counter,
                std::mem::take(&mut packets[d]),
            ));
            out.push(family(
                &format!("jatah_opd_{name}_dropped_packets_total"),
                &format!(
                    "Packets {what} dropped by the OPD's HTB class (queue full at its ceiling)."
                ),
                Kind::Counter,
                std::mem::take(&mut dropped[d]),
            ));
            out.push(family(
                &format!("jatah_opd_{name}_guaranteed_bytes_per_second"),
                &format!("The OPD's guaranteed {name} rate."),
                Kind::Gauge,
                std::mem::take(&mut guaranteed[d]),
            ));
            out.push(family(
                &format!("jatah_opd_{name}_ceiling_bytes_per_second"),
                &format!("The OPD's {name} ceiling."),
                Kind::Gauge,
                std::mem::take(&mut ceiling[d]),
            ));
            out.push(family(
                &format!("jatah_gateway_{name}_capacity_bytes_per_second"),
                &format!("Contracted uplink {name} capacity."),
                Kind::Gauge,
                vec![gauge(
                    vec![],
                    policy.gateway.capacity(dir_of(d)).bytes_per_second() as f64,
                )],
            ));
        }
        out.extend(diagnosis);
        out.extend(group_families(state, &view, &class_stats));
        out.push(family(
            "jatah_opd_info",
            "OPDs in the policy in force (value 1), with their names.",
            Kind::Gauge,
            info,
        ));
        if let Some(reader) = &state.counters {
            if let Ok(u) = reader.read(jatah_common::SLOT_UNCLASSIFIED) {
                for (d, name) in [(DOWNLOAD, "download"), (UPLOAD, "upload")] {
                    out.push(family(
                        &format!("jatah_unclassified_{name}_bytes_total"),
                        &format!("{name} bytes that matched no OPD (default class)."),
                        Kind::Counter,
                        vec![counter(vec![], u.bytes[d] as f64)],
                    ));
                }
            }
            if let Ok(s) = reader.stats() {
                out.push(family(
                    "jatah_datapath_unparsed_packets_total",
                    "Packets the classifier could not parse (passed unshaped, default class).",
                    Kind::Counter,
                    vec![
                        counter(
                            vec![label("direction", "download"), label("reason", "malformed")],
                            s[Stat::MalformedDownload as usize] as f64,
                        ),
                        counter(
                            vec![label("direction", "upload"), label("reason", "malformed")],
                            s[Stat::MalformedUpload as usize] as f64,
                        ),
                        counter(
                            vec![label("direction", "any"), label("reason", "non_ip")],
                            s[Stat::NonIp as usize] as f64,
                        ),
                    ],
                ));
            }
        }
        let reload = state.reload.lock().map(|r| r.clone()).unwrap_or_default();
        out.push(family(
            "jatah_policy_last_reload_successful",
            "1 if the last policy load or reload succeeded.",
            Kind::Gauge,
            vec![gauge(vec![], if reload.successful { 1.0 } else { 0.0 })],
        ));
        out.push(family(
            "jatah_policy_last_reload_timestamp_seconds",
            "When the policy was last loaded or reloaded (Unix time).",
            Kind::Gauge,
            vec![gauge(
                vec![],
                reload.at.map(|t| t.timestamp() as f64).unwrap_or(0.0),
            )],
        ));
        out.push(family(
            "jatah_policy_last_reload_duration_seconds",
            "How long the last policy load or reload took to apply.",
            Kind::Gauge,
            vec![gauge(vec![], reload.duration_seconds)],
        ));
        let errors = state
            .kernel_errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        if !errors.is_empty() {
            out.push(family(
                "jatah_kernel_errors_total",
                "Netlink and BPF operations that failed, by operation and interface (each is also logged).",
                Kind::Counter,
                errors
                    .iter()
                    .map(|((op, iface), n)| {
                        counter(
                            vec![label("interface", iface), label("operation", op)],
                            *n as f64,
                        )
                    })
                    .collect(),
            ));
        }
        let attached = state
            .interfaces_attached
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        if !attached.is_empty() {
            out.push(family(
                "jatah_interface_attached",
                "1 while jatah's classifiers and HTB tree are on the interface; 0 while it is missing or re-attaching failed.",
                Kind::Gauge,
                attached
                    .iter()
                    .map(|(iface, up)| gauge(vec![label("interface", iface)], f64::from(u8::from(*up))))
                    .collect(),
            ));
        }
        out.push(family(
            "jatah_history_available",
            "1 if the usage history store is writable and answering.",
            Kind::Gauge,
            vec![gauge(
                vec![],
                if state.history.available() { 1.0 } else { 0.0 },
            )],
        ));
        out.push(family(
            "jatah_build_info",
            "jatah's version (value 1).",
            Kind::Gauge,
            vec![gauge(
                vec![label("version", env!("CARGO_PKG_VERSION"))],
                1.0,
            )],
        ));
        out
    }
}

/// Groups: allocation, membership, and what each group's HTB class
/// delivered (kept monotonic like the drops).
fn group_families(
    state: &AppState,
    view: &crate::http::PolicyView,
    stats: &[Vec<ClassStats>; 2],
) -> Vec<MetricFamily> {
    let policy = &view.policy;
    if policy.groups.is_empty() {
        return Vec::new();
    }
    let mut info = Vec::new();
    let mut member = Vec::new();
    let mut alloc: [[Vec<Metric>; 2]; 2] = Default::default();
    let mut delivered: [[Vec<Metric>; 2]; 2] = Default::default();
    let per_dir = [
        crate::gateway::group_class_stats(policy, &stats[DOWNLOAD]),
        crate::gateway::group_class_stats(policy, &stats[UPLOAD]),
    ];
    let mut tracker = state
        .group_counters
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for g in &policy.groups {
        let l = || vec![label("group", &g.id)];
        info.push(gauge(
            vec![label("group", &g.id), label("name", &g.name)],
            1.0,
        ));
        for o in policy.members(&g.id) {
            member.push(gauge(vec![label("group", &g.id), label("opd", &o.id)], 1.0));
        }
        for (d, dir) in [(DOWNLOAD, Direction::Download), (UPLOAD, Direction::Upload)] {
            let a = g.allocation(dir);
            alloc[d][0].push(gauge(l(), a.guaranteed.bytes_per_second() as f64));
            alloc[d][1].push(gauge(l(), a.ceiling.bytes_per_second() as f64));
            if let Some(c) = per_dir[d].get(&g.id) {
                let key = format!("group:{}", g.id);
                delivered[d][0].push(counter(l(), tracker.observe(d * 2, &key, c.bytes) as f64));
                delivered[d][1].push(counter(
                    l(),
                    tracker.observe(d * 2 + 1, &key, c.packets) as f64,
                ));
            }
        }
    }
    let mut out = vec![
        family(
            "jatah_group_info",
            "Groups in the policy in force (value 1), with their names.",
            Kind::Gauge,
            info,
        ),
        family(
            "jatah_group_member",
            "OPDs in each group (value 1).",
            Kind::Gauge,
            member,
        ),
    ];
    for (d, name) in [(DOWNLOAD, "download"), (UPLOAD, "upload")] {
        let [g, c] = std::mem::take(&mut alloc[d]);
        out.push(family(
            &format!("jatah_group_{name}_guaranteed_bytes_per_second"),
            &format!("The group's guaranteed {name} rate."),
            Kind::Gauge,
            g,
        ));
        out.push(family(
            &format!("jatah_group_{name}_ceiling_bytes_per_second"),
            &format!("The group's {name} ceiling."),
            Kind::Gauge,
            c,
        ));
        let [b, p] = std::mem::take(&mut delivered[d]);
        out.push(family(
            &format!("jatah_group_{name}_bytes_total"),
            &format!("{name} bytes the group's HTB class delivered (not offered: drops excluded)."),
            Kind::Counter,
            b,
        ));
        out.push(family(
            &format!("jatah_group_{name}_packets_total"),
            &format!("{name} packets the group's HTB class delivered."),
            Kind::Counter,
            p,
        ));
    }
    out
}

/// States, round trips and probes (the diagnosis signals).
fn diagnosis_families(state: &AppState, view: &crate::http::PolicyView) -> Vec<MetricFamily> {
    use crate::diagnosis::State;
    let mut out = Vec::new();
    let engine = state.engine.lock().unwrap_or_else(|p| p.into_inner());
    let mut states = Vec::new();
    for opd in &view.policy.opds {
        let current = engine.opd(&opd.id).map(|v| v.state);
        for s in State::ALL {
            states.push(gauge(
                vec![label("opd", &opd.id), label("state", s.as_str())],
                if current == Some(s) { 1.0 } else { 0.0 },
            ));
        }
    }
    out.push(family(
        "jatah_opd_state",
        "The OPD's diagnosis state (1 for the current state, 0 for the others).",
        Kind::Gauge,
        states,
    ));
    let gw = engine.gateway().map(|v| v.state);
    out.push(family(
        "jatah_gateway_state",
        "The gateway's diagnosis state (1 for the current state, 0 for the others).",
        Kind::Gauge,
        [State::Healthy, State::UpstreamDegraded, State::UpstreamDown]
            .into_iter()
            .map(|s| {
                gauge(
                    vec![label("state", s.as_str())],
                    if gw == Some(s) { 1.0 } else { 0.0 },
                )
            })
            .collect(),
    ));
    drop(engine);

    let bounds = crate::diagnosis::signals::rtt_bucket_bounds();
    let mut hists = Vec::new();
    let mut unanswered = Vec::new();
    // Index slot * 2 + side, like the map.
    let rtts = SlotTable::round_trips(state.counters.as_ref(), view.slot_count());
    if state.counters.is_some() {
        for opd in &view.policy.opds {
            let Some(&slot) = view.slots.get(&opd.id) else {
                continue;
            };
            for (side, name) in [
                (jatah_common::SIDE_LAN, "lan"),
                (jatah_common::SIDE_WAN, "wan"),
            ] {
                let Some(h) = rtts.get(slot * 2 + side) else {
                    continue;
                };
                let labels = || vec![label("opd", &opd.id), label("side", name)];
                // Every other kernel bucket (0.5 ms, 2 ms, 8 ms ... 2 s):
                // enough to tell a LAN from a WAN round trip and a slow one
                // from a fast one, at half the series per OPD.
                let mut cumulative = 0u64;
                let mut buckets = Vec::with_capacity(bounds.len() / 2);
                for (k, upper) in bounds.iter().enumerate() {
                    cumulative += h.buckets[k];
                    if k % 2 == 1 {
                        buckets.push((*upper, cumulative));
                    }
                }
                // The count is the buckets' total (the last one holds the
                // longest round trips), so the two always agree.
                let count: u64 = h.buckets.iter().sum();
                hists.push(Metric {
                    labels: labels(),
                    value: Value::Histogram {
                        buckets,
                        count,
                        sum: h.sum_ns as f64 / 1e9,
                    },
                });
                unanswered.push(counter(labels(), h.retransmits as f64));
            }
        }
    }
    out.push(family(
        "jatah_opd_rtt_seconds",
        "TCP handshake round trips per OPD, by side: lan = gateway to OPD host and back, wan = gateway to Internet host and back. Over the sampled connections (diagnosis.rtt_sampling).",
        Kind::Histogram,
        hists,
    ));
    out.push(family(
        "jatah_opd_syn_unanswered_total",
        "Handshake packets (SYN or SYN-ACK) sent again because the first went unanswered, per OPD and side, over the sampled connections.",
        Kind::Counter,
        unanswered,
    ));

    let mut p_up = (Vec::new(), Vec::new());
    let mut p_rtt = (Vec::new(), Vec::new());
    let mut p_sent = (Vec::new(), Vec::new());
    let mut p_lost = (Vec::new(), Vec::new());
    if let Some(prober) = &state.prober {
        for st in prober.snapshot() {
            let (labels, upstream) = if let Some(id) = st.key.strip_prefix("opd:") {
                (vec![label("opd", id)], false)
            } else if let Some(name) = st.key.strip_prefix("upstream:") {
                (vec![label("target", name)], true)
            } else {
                continue;
            };
            let pick = |pair: &mut (Vec<Metric>, Vec<Metric>), m: Metric| {
                if upstream {
                    pair.1.push(m)
                } else {
                    pair.0.push(m)
                }
            };
            pick(
                &mut p_up,
                gauge(labels.clone(), if st.answering() { 1.0 } else { 0.0 }),
            );
            if let Some(rtt) = st.last_rtt {
                pick(&mut p_rtt, gauge(labels.clone(), rtt.as_secs_f64()));
            }
            pick(&mut p_sent, counter(labels.clone(), st.sent as f64));
            pick(
                &mut p_lost,
                counter(labels, st.completed.saturating_sub(st.received) as f64),
            );
        }
    }
    for (prefix, what, idx) in [
        ("jatah_opd_probe", "the OPD's router", 0),
        ("jatah_upstream_probe", "an upstream target", 1),
    ] {
        let take = |pair: &mut (Vec<Metric>, Vec<Metric>)| {
            std::mem::take(if idx == 0 { &mut pair.0 } else { &mut pair.1 })
        };
        out.push(family(
            &format!("{prefix}_up"),
            &format!("1 if the last ICMP probe of {what} was answered."),
            Kind::Gauge,
            take(&mut p_up),
        ));
        out.push(family(
            &format!("{prefix}_rtt_seconds"),
            &format!("Round trip of the last answered probe of {what}."),
            Kind::Gauge,
            take(&mut p_rtt),
        ));
        out.push(family(
            &format!("{prefix}_sent_total"),
            &format!("ICMP probes sent to {what}."),
            Kind::Counter,
            take(&mut p_sent),
        ));
        out.push(family(
            &format!("{prefix}_lost_total"),
            &format!("ICMP probes of {what} that went unanswered."),
            Kind::Counter,
            take(&mut p_lost),
        ));
    }
    out
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Download => DOWNLOAD,
        Direction::Upload => UPLOAD,
    }
}

fn dir_of(d: usize) -> Direction {
    if d == DOWNLOAD {
        Direction::Download
    } else {
        Direction::Upload
    }
}

/// Renders every metric in the text exposition format.
pub fn render(state: Arc<AppState>) -> String {
    let families = JatahCollector::new(state).collect();
    let series: usize = families.iter().map(|f| f.samples.len()).sum();
    let mut body = String::with_capacity(series * 64);
    crate::http::exposition::encode(&families, &mut body);
    drop(families);
    body
}

/// `GET /metrics`. Netlink and map reads block, so they run off the workers.
pub async fn serve(State(state): State<Arc<AppState>>) -> Response {
    let rendered = tokio::task::spawn_blocking(move || render(state)).await;
    // A scrape of many OPDs allocates megabytes in small pieces; hand the
    // freed ones back to the system rather than keep them between scrapes
    // (off the scrape's own time).
    tokio::task::spawn_blocking(|| {
        crate::sys::release_free_heap();
    });
    match rendered {
        Ok(body) => {
            let mut res = (StatusCode::OK, body).into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            res
        }
        Err(e) => crate::http::problem::Problem::internal(format!("collecting metrics: {e}"))
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_counters_never_go_backwards_when_a_class_is_recreated() {
        let mut t = Monotonic::default();
        assert_eq!(t.observe(0, "a", 5), 5);
        assert_eq!(t.observe(0, "a", 9), 9);
        assert_eq!(t.observe(0, "a", 2), 11, "class recreated: continue from 9");
        assert_eq!(t.observe(0, "a", 3), 12);
        assert_eq!(t.observe(1, "a", 1), 1, "directions are separate");
    }
}
