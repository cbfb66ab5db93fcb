//! `/metrics`: per-OPD counters read from the BPF maps at scrape time by a
//! custom Collector (summed over CPUs), drops from the HTB class statistics,
//! allocations from the policy in force, written by `http::exposition`;
//! then the registry of jatah's operational metrics and the process's
//! (`runtime::ops`). Bytes, never bits. Gzip when the scraper accepts it.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::http::exposition::{Family as MetricFamily, Kind, Sample as Metric, Value};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jatah_common::{DIRECTIONS, DOWNLOAD, Stat, UPLOAD, opd_class_minor, rtt_index};

use crate::datapath::SlotTable;

use crate::diagnosis::capacity::Confidence;
use crate::diagnosis::signals::ProbeOf;
use crate::policy::Direction;
use crate::runtime::state::{AppState, PolicyView, drops_by_minor, lock};
use crate::shaper::ClassStats;

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

/// What one scrape read: every family, and the retired OPDs whose final
/// counters it holds.
pub struct Scrape {
    pub families: Vec<MetricFamily>,
    pub exported_retired: BTreeSet<u32>,
}

/// Reads every family now, from the kernel and the daemon's state. Only
/// reads: what the scrape exported is for the caller to record.
pub fn collect(state: &AppState) -> Scrape {
    let view = state.view();
    // The HTB dumps (netlink) and the round-trip histograms (BPF map
    // reads) are the two slow parts of a scrape; do them side by side.
    let (class_stats, diagnosis) = std::thread::scope(|s| {
        let htb = s.spawn(|| state.kernel.htb_stats());
        let diagnosis = diagnosis_families(state, &view);
        (htb.join().unwrap_or_default(), diagnosis)
    });
    let (mut families, exported_retired) = opd_families(state, &view, &class_stats);
    families.extend(diagnosis);
    families.extend(group_families(state, &view, &class_stats));
    Scrape {
        families,
        exported_retired,
    }
}

/// Every OPD's counters, drops and allocation, the gateway's capacity, the
/// unclassified traffic and what the classifier could not parse.
fn opd_families(
    state: &AppState,
    view: &PolicyView,
    class_stats: &[Vec<ClassStats>; DIRECTIONS],
) -> (Vec<MetricFamily>, BTreeSet<u32>) {
    {
        let policy = &view.policy;
        let drops = drops_by_minor(class_stats);
        let mut drop_tracker = lock(&state.kernel.drops);

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
                let d = dir.index();
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
        let mut exported = BTreeSet::new();
        if !view.retired.is_empty() && state.counters.is_some() {
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
                    policy
                        .gateway
                        .capacity(Direction::from_index(d))
                        .bytes_per_second() as f64,
                )],
            ));
        }
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
        (out, exported)
    }
}

/// Groups: allocation, membership, and what each group's HTB class
/// delivered (kept monotonic like the drops).
fn group_families(
    state: &AppState,
    view: &PolicyView,
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
    let mut tracker = lock(&state.kernel.group_counters);
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
fn diagnosis_families(state: &AppState, view: &PolicyView) -> Vec<MetricFamily> {
    use crate::diagnosis::State;
    let mut out = Vec::new();
    let engine = state
        .diagnosis
        .engine
        .lock()
        .unwrap_or_else(|p| p.into_inner());
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
    // The delivered estimate, only while it holds at medium confidence or
    // better: a low one is evidence in the API, never a figure to graph
    // or alert on. Absent otherwise, as the contract says.
    for (d, dir) in [(DOWNLOAD, "download"), (UPLOAD, "upload")] {
        let held = engine.delivered()[d]
            .filter(|e| e.confidence >= Confidence::Medium)
            .map(|e| vec![gauge(vec![], (e.bps / 8) as f64)])
            .unwrap_or_default();
        out.push(family(
            &format!("jatah_gateway_{dir}_delivered_bytes_per_second"),
            &format!(
                "What the uplink delivers {dir} now, while an estimate holds (a flat aggregate below the contract that the OPDs share)."
            ),
            Kind::Gauge,
            held,
        ));
    }
    drop(engine);
    // The capacity in force: the contract, or less while jatah shapes to
    // an uplink that delivers less.
    let adaptive = lock(&state.adaptive);
    for dir in Direction::all() {
        let contract = view.policy.capacity(dir).bits_per_second();
        let effective = adaptive.controllers[dir.index()].effective(contract);
        out.push(family(
            &format!(
                "jatah_gateway_{}_effective_capacity_bytes_per_second",
                dir.as_str()
            ),
            &format!(
                "The {} capacity jatah shapes to: the contract, or what the uplink delivers less a margin while it delivers less ([gateway] adapt).",
                dir.as_str()
            ),
            Kind::Gauge,
            vec![gauge(vec![], (effective / 8) as f64)],
        ));
    }
    drop(adaptive);

    let bounds = crate::diagnosis::signals::rtt_bucket_bounds();
    let mut hists = Vec::new();
    let mut unanswered = Vec::new();
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
                let Some(h) = rtts.get(rtt_index(slot, side)) else {
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
    out.extend(tcp_retransmissions(state, view));
    out.push(misplaced(state, view));

    let mut p_up = (Vec::new(), Vec::new());
    let mut p_rtt = (Vec::new(), Vec::new());
    let mut p_sent = (Vec::new(), Vec::new());
    let mut p_lost = (Vec::new(), Vec::new());
    if let Some(prober) = &state.diagnosis.prober {
        for st in prober.snapshot() {
            let (labels, upstream) = match ProbeOf::parse(&st.key) {
                Some(ProbeOf::Opd(id)) => (vec![label("opd", &id)], false),
                Some(ProbeOf::Upstream(name)) => (vec![label("target", &name)], true),
                None => continue,
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

/// Data segments judged and retransmitted in the sampled TCP connections,
/// per OPD and direction, and per side for the retransmissions; their
/// payload, and the upload their far ends acknowledged.
fn tcp_retransmissions(state: &AppState, view: &PolicyView) -> [MetricFamily; 4] {
    let (mut segments, mut retransmitted) = (Vec::new(), Vec::new());
    let (mut payload, mut acked) = (Vec::new(), Vec::new());
    let table = SlotTable::tcp_loss(state.counters.as_ref(), view.slot_count());
    if state.counters.is_some() {
        for opd in &view.policy.opds {
            let Some(t) = view.slots.get(&opd.id).and_then(|&s| table.get(s)) else {
                continue;
            };
            acked.push(counter(
                vec![label("opd", &opd.id)],
                t.acked_bytes[UPLOAD] as f64,
            ));
            for (d, dir) in [(DOWNLOAD, "download"), (UPLOAD, "upload")] {
                let labels = || vec![label("opd", &opd.id), label("direction", dir)];
                segments.push(counter(labels(), t.segments[d] as f64));
                payload.push(counter(labels(), t.payload_bytes[d] as f64));
                for (side, name) in [
                    (jatah_common::SIDE_LAN, "lan"),
                    (jatah_common::SIDE_WAN, "wan"),
                ] {
                    let mut l = labels();
                    l.push(label("side", name));
                    retransmitted.push(counter(l, t.retransmitted[side as usize][d] as f64));
                }
            }
        }
    }
    [
        family(
            "jatah_opd_tcp_segments_sampled_total",
            "Data segments of the sampled TCP connections (diagnosis.rtt_sampling) the gateway judged, per OPD and direction: the denominator of the retransmission ratio.",
            Kind::Counter,
            segments,
        ),
        family(
            "jatah_opd_tcp_retransmissions_total",
            "Segments of the sampled TCP connections sent again, per OPD, direction and side the first copy was lost on: lan = between the OPD host and the gateway, wan = beyond the gateway. Includes the OPD's own HTB drops (download on the lan side, upload on the wan side; see jatah_opd_*_dropped_packets_total).",
            Kind::Counter,
            retransmitted,
        ),
        family(
            "jatah_opd_tcp_payload_bytes_sampled_total",
            "Payload bytes of those data segments, per OPD and direction, copies sent again included.",
            Kind::Counter,
            payload,
        ),
        family(
            "jatah_opd_tcp_upload_acked_bytes_total",
            "Upload bytes of the sampled TCP connections their far ends acknowledged, per OPD: against jatah_opd_tcp_payload_bytes_sampled_total{direction=\"upload\"}, the share the uplink carried.",
            Kind::Counter,
            acked,
        ),
    ]
}

/// Per OPD: packets from its addresses that came in elsewhere than its
/// `interface`.
fn misplaced(state: &AppState, view: &PolicyView) -> MetricFamily {
    let mut series = Vec::new();
    if let Some(reader) = state.counters.as_ref() {
        for opd in &view.policy.opds {
            let Some(n) = view.slots.get(&opd.id).and_then(|&s| reader.misplaced(s).ok()) else {
                continue;
            };
            series.push(counter(vec![label("opd", &opd.id)], n as f64));
        }
    }
    family(
        "jatah_opd_misplaced_packets_total",
        "Packets from an OPD's addresses that came in elsewhere than the LAN interface or VLAN the OPD is bound to (its `interface`): a host on another network using its addresses. They are not counted or shaped as the OPD's (unclassified, in the default class).",
        Kind::Counter,
        series,
    )
}

/// Renders every metric in the text exposition format: the per-OPD
/// series, then jatah's operational metrics and the process's
/// ([`crate::runtime::ops`]).
pub fn render(state: &AppState) -> (String, BTreeSet<u32>) {
    let scrape = collect(state);
    let series: usize = scrape.families.iter().map(|f| f.samples.len()).sum();
    let mut body = String::with_capacity(series * 64 + 8 * 1024);
    crate::http::exposition::encode(&scrape.families, &mut body);
    let reload = {
        let r = lock(&state.reloads);
        crate::runtime::ops::LastReload {
            successful: r.successful,
            at_seconds: r.at.map(|t| t.timestamp() as f64).unwrap_or(0.0),
            duration_seconds: r.duration_seconds,
        }
    };
    state
        .ops
        .encode(reload, state.history.available(), &mut body);
    (body, scrape.exported_retired)
}

/// Whether an `Accept-Encoding` header accepts gzip (`gzip` or `*`, not
/// with `q=0`).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or("").trim();
            let refused = it.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// The body gzip-compressed. The fastest level: a scrape's text shrinks
/// about tenfold even so, at a fraction of the time of the default level.
fn gzip(body: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    enc.write_all(body.as_bytes())?;
    enc.finish()
}

/// `GET /metrics`. Netlink and map reads block, so they run off the
/// workers, and so does the compression when the scraper asks for gzip
/// (`Accept-Encoding: gzip`, as Prometheus does).
///
/// A removed OPD's final counters are exported once; once this response
/// holds them, its slot may be reused by the next reload. That record is
/// the one thing a scrape changes, and it is made here, not while reading.
pub async fn serve(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let compress = accepts_gzip(&headers);
    let rendered = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let (body, exported) = render(&state);
        let body = if compress {
            gzip(&body).map_err(|e| format!("compressing: {e}"))
        } else {
            Ok(body.into_bytes())
        };
        state.ops.observe_scrape(started.elapsed().as_secs_f64());
        state.policy.retired_exported(&exported);
        body
    })
    .await;
    // A scrape of many OPDs allocates megabytes in small pieces; hand the
    // freed ones back to the system rather than keep them between scrapes
    // (off the scrape's own time).
    tokio::task::spawn_blocking(|| {
        crate::sys::release_free_heap();
    });
    match rendered {
        Ok(Ok(body)) => {
            let mut res = (StatusCode::OK, body).into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            if compress {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            res
        }
        Ok(Err(e)) => crate::http::problem::Problem::internal(e).into_response(),
        Err(e) => crate::http::problem::Problem::internal(format!("collecting metrics: {e}"))
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
