//! The one-second loop: the one place that reads the kernel's counters
//! while jatah runs (a scrape reads them too, at its own time). Each
//! second it takes one [`Reading`] (one batched read of the counter map,
//! one of the round-trip map, one of the TCP retransmission map, one HTB
//! dump per tree) and hands it to every
//! consumer:
//!
//! ```text
//!   Reading ──► Traffic (rates for the API and status page)
//!           ──► Watcher ──► Tick ──► Engine ──► verdict changes ──► log, history events
//!           ──► (each minute) history store: cumulative counters + peak rates
//!           ──► (each second) history store: the delivered estimate, if one holds
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use jatah_common::{
    Counters, DIRECTIONS, DOWNLOAD, SIDE_LAN, SIDE_WAN, SLOT_UNCLASSIFIED, UPLOAD, rtt_index,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::datapath::{CounterReader, SlotTable};
use crate::diagnosis::capacity::Confidence;
use crate::diagnosis::{Change, Engine};
use crate::diagnosis::signals::{Reading, Watcher};
use crate::gateway;
use crate::policy::{Direction, Policy};
use crate::history::{CounterReading, DeliveredSecond, HistoryStore};
use crate::runtime::adapt;
use crate::runtime::state::{
    Adaptive, AppState, KernelStatus, PolicyView, drops_by_minor, lock, queued_by_minor,
};

/// Runs the loop until `shutdown` fires.
pub async fn run(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut minute = minute_start(Utc::now());
    let watcher = Arc::new(std::sync::Mutex::new(Watcher::default()));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        let now_minute = minute_start(now);
        let record_minute = (now_minute > minute).then_some(minute);
        minute = now_minute;
        let (st, w) = (state.clone(), watcher.clone());
        // Map reads and netlink dumps block: keep them off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            sample_once(&st, &mut lock(&w), now, record_minute);
        })
        .await;
    }
}

/// One second: read the kernel once, then feed rates, diagnosis and (at a
/// minute boundary) the history.
pub fn sample_once(
    state: &AppState,
    watcher: &mut Watcher,
    now: DateTime<Utc>,
    record_minute: Option<DateTime<Utc>>,
) {
    let Some(reader) = &state.counters else {
        return;
    };
    let view = state.view();
    let reading = take_reading(reader, &view, &state.kernel);

    // The OPDs read this second; one whose read failed is left out (its
    // history minute waits for the next reading, its rates keep their
    // series), never counted as zero.
    let read: BTreeMap<String, Counters> = view
        .slots
        .iter()
        .filter_map(|(id, slot)| reading.counters.get(slot).map(|c| (id.clone(), *c)))
        .collect();
    state.traffic.record(
        reading.at.unwrap_or_else(Instant::now),
        &read,
        reading.unclassified,
        &view.slots,
    );
    // The history minute before diagnosis: a failure there must not cost
    // a minute of usage.
    if let Some(minute) = record_minute {
        record_history_minute(state, &read, minute);
    }

    let probes = state
        .diagnosis
        .prober
        .as_ref()
        .map(|p| p.snapshot())
        .unwrap_or_default();
    let mut tick = watcher.tick(&reading, &view.policy, &view.slots, &probes, now);
    let carried = {
        let mut a = lock(&state.adaptive);
        let carried = root_carried(&mut a, &reading);
        for (d, c) in a.controllers.iter().enumerate() {
            if c.adapted() {
                tick.effective_bps[d] = c.effective(tick.capacity_bps[d]);
                tick.basis_bps[d] = c.basis().unwrap_or(0);
                tick.carried_bps[d] = carried[d].0;
                tick.probed_bps[d] = c.probed().unwrap_or(0);
            }
        }
        carried
    };
    let (changes, delivered, congested, upload_share) = {
        let mut engine = lock(&state.diagnosis.engine);
        let changes = engine.step(&tick);
        (
            changes,
            delivered_seconds(&engine, tick.capacity_bps),
            engine.uplink_congested(),
            engine.upload_carried_share(),
        )
    };
    for c in &changes {
        record_change(state, c);
    }
    adapt_capacity(
        state,
        &view.policy,
        carried,
        now,
        delivered.map(|d| d.map(|d| d.bps)),
        congested,
        [None, upload_share],
    );
    if delivered.iter().any(Option::is_some)
        && let Some(store) = lock(&state.history.store).as_mut()
    {
        store.note_delivered(now, delivered);
    }
}

/// What each direction's root class carried since the last reading, and
/// how fast the gateway's own queues grew meanwhile (negative: drained),
/// bit/s (0 without two readings to compare); the reading kept for the
/// next.
fn root_carried(a: &mut Adaptive, reading: &Reading) -> [(u64, i64); DIRECTIONS] {
    std::array::from_fn(|d| {
        let rates = match (reading.at, reading.root_bytes[d], a.root_bytes[d]) {
            (Some(at), Some(now_b), Some((then, then_b))) if at > then => {
                let secs = at.duration_since(then).as_secs_f64();
                let rate = |bytes: f64| bytes * 8.0 / secs;
                let queued = match (a.backlog_bytes[d], reading.backlog_bytes[d]) {
                    (Some(before), Some(now)) => rate(now as f64 - before as f64) as i64,
                    _ => 0,
                };
                (rate(now_b.saturating_sub(then_b) as f64) as u64, queued)
            }
            _ => (0, 0),
        };
        if let (Some(at), Some(b)) = (reading.at, reading.root_bytes[d]) {
            a.root_bytes[d] = Some((at, b));
            a.backlog_bytes[d] = reading.backlog_bytes[d];
        }
        rates
    })
}

/// Steps each direction's adaptive capacity and puts a change in force:
/// the trees rebuilt at the new capacities, a log line and a gateway event
/// per change. With `adapt = false` a capacity still adapted goes back to
/// the contract.
fn adapt_capacity(
    state: &AppState,
    policy: &Policy,
    carried: [(u64, i64); DIRECTIONS],
    now: DateTime<Utc>,
    delivered: [Option<u64>; 2],
    congested: [bool; DIRECTIONS],
    arrived_share: [Option<f64>; DIRECTIONS],
) {
    let mut a = lock(&state.adaptive);
    let mut changes = Vec::new();
    for dir in Direction::all() {
        let d = dir.index();
        let contract = policy.capacity(dir).bits_per_second();
        let (carried, queued) = carried[d];
        let controller = &mut a.controllers[d];
        let change = if policy.gateway.shaping.adapt {
            controller.step(&adapt::Input {
                contract_bps: contract,
                carried_bps: carried,
                queued_bps: queued,
                delivered_bps: delivered[d],
                congested: congested[d],
                margin: match dir {
                    Direction::Download => adapt::MARGIN_DOWNLOAD,
                    Direction::Upload => adapt::MARGIN_UPLOAD,
                },
                arrived_share: arrived_share[d],
            })
        } else if controller.adapted() {
            let from = controller.effective(contract);
            *controller = adapt::Controller::default();
            Some(adapt::Change {
                from_bps: from,
                to_bps: contract,
                reason: adapt::Reason::Contract,
                measured_bps: None,
            })
        } else {
            None
        };
        if let Some(c) = change {
            a.last_change[d] = Some((now, c));
            changes.push((dir, contract, c));
        }
    }
    if changes.is_empty() {
        return;
    }
    let effective: [Option<u64>; 2] = std::array::from_fn(|d| {
        let c = &a.controllers[d];
        c.adapted()
            .then(|| c.effective(policy.capacity(Direction::all()[d]).bits_per_second()))
    });
    drop(a);
    if let Some(ctl) = lock(&state.control).as_mut() {
        ctl.effective_bps = effective;
        if let Err(e) = gateway::shape(policy, &ctl.ifaces, &ctl.datapath, &mut ctl.shaper, effective)
        {
            warn!(error = %e, "putting the adapted capacity in force");
            state.kernel.count_error("adapt", &ctl.ifaces.wan.name);
        }
    }
    for (dir, contract, c) in changes {
        record_capacity_change(state, now, dir, contract, &c);
    }
}

/// Logs a change of the effective capacity and keeps it as a gateway event.
fn record_capacity_change(
    state: &AppState,
    now: DateTime<Utc>,
    dir: Direction,
    contract: u64,
    c: &adapt::Change,
) {
    let mbit = |b: u64| format!("{:.1}", b as f64 / 1e6);
    let percent = (c.to_bps * 100).checked_div(contract).unwrap_or(100);
    let adapted = c.to_bps < contract;
    // A probe taken back says what the uplink carried during it.
    let why = match c.measured_bps {
        Some(m) => format!(
            "{}: the uplink carried {} of the probe's {}",
            c.reason.as_str(),
            mbit(m),
            mbit(c.from_bps)
        ),
        None => c.reason.as_str().to_string(),
    };
    let message = if adapted {
        format!(
            "{} capacity set to {} Mbit/s of the contracted {} ({why}): guarantees scaled to {percent}%",
            dir.as_str(),
            mbit(c.to_bps),
            mbit(contract),
        )
    } else {
        format!(
            "{} capacity back at the contracted {} Mbit/s ({})",
            dir.as_str(),
            mbit(contract),
            c.reason.as_str()
        )
    };
    info!(
        direction = dir.as_str(),
        from_bps = c.from_bps,
        to_bps = c.to_bps,
        contract_bps = contract,
        reason = c.reason.as_str(),
        measured_bps = c.measured_bps,
        "{message}"
    );
    let state_name = |bps: u64| {
        if bps < contract {
            "capacity_adapted"
        } else {
            "capacity_contract"
        }
    };
    if let Some(store) = lock(&state.history.store).as_mut() {
        let event = crate::history::Event {
            at: now,
            opd: None,
            state: state_name(c.to_bps).to_string(),
            previous: Some(state_name(c.from_bps).to_string()),
            evidence: serde_json::json!({
                "direction": dir.as_str(),
                "from_bps": c.from_bps,
                "to_bps": c.to_bps,
                "contract_bps": contract,
                "scale_percent": percent,
                "reason": c.reason.as_str(),
                "measured_bps": c.measured_bps,
            }),
            message,
        };
        if let Err(e) = store.record_event(&event) {
            warn!(error = %e, "could not keep a capacity event in the history");
        }
    }
}

/// This second's delivered estimate per direction, where one holds at
/// medium confidence or better, with the contract in force: what the
/// history keeps per minute.
fn delivered_seconds(engine: &Engine, contracted_bps: [u64; 2]) -> [Option<DeliveredSecond>; 2] {
    let held = engine.delivered();
    [0, 1].map(|dir| {
        held[dir]
            .filter(|d| d.confidence >= Confidence::Medium)
            .map(|d| DeliveredSecond {
                bps: d.bps,
                contracted_bps: contracted_bps[dir],
                since: Some(d.since),
            })
    })
}

/// Reads every slot in use: counters and round trips in one batch each,
/// and the HTB drops.
pub fn take_reading(reader: &CounterReader, view: &PolicyView, kernel: &KernelStatus) -> Reading {
    let n = view.slot_count();
    // The counters and the unclassified slot first and together, stamped
    // just before: their rates share one time base. The HTB dumps (whose
    // length varies) come last.
    let at = Instant::now();
    let counters = SlotTable::counters(Some(reader), n);
    let unclassified = reader.read(SLOT_UNCLASSIFIED).ok();
    let round_trips = SlotTable::round_trips(Some(reader), n);
    let tcp_loss = SlotTable::tcp_loss(Some(reader), n);
    let mut reading = Reading {
        at: Some(at),
        unclassified,
        ..Reading::default()
    };
    for &slot in view.slots.values() {
        if let Some(c) = counters.get(slot) {
            reading.counters.insert(slot, c);
        }
        let rtt = [SIDE_LAN, SIDE_WAN]
            .map(|side| round_trips.get(rtt_index(slot, side)).unwrap_or_default());
        reading.round_trips.insert(slot, rtt);
        if let Some(t) = tcp_loss.get(slot) {
            reading.tcp_loss.insert(slot, t);
        }
    }
    let stats = kernel.htb_stats();
    reading.drops = drops_by_minor(&stats);
    reading.queued = queued_by_minor(&stats);
    reading.class_bytes =
        std::array::from_fn(|d| stats[d].iter().map(|c| (c.minor, c.bytes)).collect());
    reading.root_bytes = std::array::from_fn(|d| {
        stats[d]
            .iter()
            .find(|c| u32::from(c.minor) == jatah_common::ROOT_CLASS_MINOR)
            .map(|c| c.bytes)
    });
    // The direction's backlog is its OPDs' (and the default class's):
    // every leaf belongs to one of them.
    reading.backlog_bytes =
        std::array::from_fn(|d| (!stats[d].is_empty()).then(|| reading.queued[d].values().sum()));
    reading
}

/// Logs a state change and keeps it as an event in the history store.
fn record_change(state: &AppState, change: &Change) {
    let who = change.opd.as_deref().unwrap_or("gateway");
    info!(
        opd = who,
        from = change.previous.map(|s| s.as_str()).unwrap_or("none"),
        to = change.verdict.state.as_str(),
        evidence = %change.verdict.evidence,
        "{}",
        change.verdict.explanation_en
    );
    if let Some(store) = lock(&state.history.store).as_mut() {
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

fn minute_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::minutes(1)).unwrap_or(t)
}

/// Hands the minute's cumulative counters and peak rates to the history
/// store, opening it again if it was unavailable.
fn record_history_minute(
    state: &AppState,
    read: &BTreeMap<String, Counters>,
    minute: DateTime<Utc>,
) {
    let peaks = state.traffic.take_minute_peaks();
    let readings: Vec<CounterReading> = read
        .iter()
        .map(|(opd, totals)| {
            let peak = peaks.get(opd).copied().unwrap_or([0, 0]);
            CounterReading {
                opd: opd.clone(),
                download_bytes_total: totals.bytes[DOWNLOAD],
                upload_bytes_total: totals.bytes[UPLOAD],
                peak_download_bps: peak[DOWNLOAD],
                peak_upload_bps: peak[UPLOAD],
            }
        })
        .collect();
    let mut guard = lock(&state.history.store);
    if guard.is_none() {
        // Opening failed at start: try again every minute; the kernel's
        // counters keep every byte until then.
        let location = lock(&state.history.location).clone();
        if let Some((dir, tz)) = location
            && let Ok(store) = HistoryStore::open(&dir, tz)
        {
            info!(dir = %dir.display(), "usage history store opened");
            *guard = Some(store);
        }
    }
    let Some(store) = guard.as_mut() else {
        return;
    };
    let mut err_slot = lock(&state.history.error);
    let result = store.record_minute(minute, &readings).or_else(|first| {
        // Once the store failed (disk full), try to reopen before giving up
        // on this minute; the cursor in the database keeps bytes from being
        // lost while it is down.
        if err_slot.is_some() {
            store
                .reopen()
                .and_then(|_| store.record_minute(minute, &readings))
        } else {
            Err(first)
        }
    });
    match result {
        Ok(()) => {
            if err_slot.take().is_some() {
                info!("usage history store recovered");
            }
            if minute.timestamp() % 3600 == 0
                && let Err(e) = store.prune(Utc::now())
            {
                warn!(error = %e, "pruning usage history");
            }
        }
        Err(e) => {
            if err_slot.is_none() {
                warn!(error = %e, "usage history write failed; shaping and metrics continue");
            }
            *err_slot = Some(e.to_string());
        }
    }
}

/// Opens the history store for [`AppState`]; a failure is logged and
/// reported by the API and a metric, and never stops the data path (the
/// sampler tries again each minute).
pub fn open_history(dir: &std::path::Path, tz: chrono_tz::Tz) -> crate::runtime::state::History {
    let history = crate::runtime::state::History::default();
    *lock(&history.location) = Some((dir.to_owned(), tz));
    match HistoryStore::open(dir, tz) {
        Ok(store) => {
            info!(dir = %dir.display(), "usage history store open");
            *lock(&history.store) = Some(store);
        }
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "usage history unavailable; shaping and metrics continue");
            *lock(&history.error) = Some(e.to_string());
        }
    }
    history
}
