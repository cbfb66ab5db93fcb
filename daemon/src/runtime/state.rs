//! What jatah's tasks and HTTP handlers share while the daemon runs, as a
//! few typed parts, each guarding its own data and saying what it is for.
//!
//! The whole is built complete by [`StateBuilder::build`] before any task
//! starts: nothing is filled in afterwards, so a handler never meets a
//! half-started daemon. Who writes what:
//!
//! | part | written by | read by |
//! |---|---|---|
//! | [`PolicyCell`] | start-up, reloads | everyone |
//! | [`Traffic`] | the sampler, once a second | API, status page |
//! | [`Diagnosis`] | the sampler (verdicts), reloads (thresholds) | API, metrics, status page |
//! | [`History`] | the sampler (minutes, events) | API, status page |
//! | [`KernelStatus`] | the link keeper, failing kernel operations | metrics, sampler |
//! | [`TokenCell`] | start-up, the tokens watcher (`runtime::tokens`) | every request |
//! | `control` | reloads and the link keeper, one at a time | — |
//! | `reloads` | reloads | API, metrics |
//! | `ops` ([`crate::runtime::ops`]) | scrapes (gauges from the state, their own time) | metrics |
//! | [`PlanLimit`] | `POST /api/v1/policy/plan` | — |

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use jatah_common::{Counters, DIRECTIONS, DOWNLOAD, UPLOAD, lane_owner};
use tracing::warn;

use crate::datapath::{CounterReader, Datapath};
use crate::diagnosis::Engine;
use crate::diagnosis::probe::Prober;
use crate::gateway::Interfaces;
use crate::history::HistoryStore;
use crate::http::auth::{Access, AuthError, Tokens};
use crate::policy::Policy;
use crate::runtime::rates::{RateTable, WindowRates};
use crate::shaper::{ClassStats, Shaper};

/// Locks a mutex, taking the data of a poisoned one too: a panic in one
/// task must not stop the others from reading what is there.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A copy of what a read-write lock holds, poisoned or not (as [`lock`]).
fn read_copy<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Write access to a read-write lock, poisoned or not (as [`lock`]).
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// The policy in force and the slot each of its OPDs holds, swapped as one
/// on every (re)load so handlers never see a half-applied policy.
#[derive(Debug, Clone)]
pub struct PolicyView {
    pub policy: Policy,
    pub slots: BTreeMap<String, u32>,
    /// Removed OPDs whose final counters have not been scraped yet.
    pub retired: BTreeMap<String, u32>,
    pub source: PathBuf,
}

impl PolicyView {
    /// One more than the highest slot in use (retired slots included):
    /// how far to read the per-slot maps.
    pub fn slot_count(&self) -> u32 {
        self.slots
            .values()
            .chain(self.retired.values())
            .max()
            .map_or(0, |m| m + 1)
    }
}

/// The [`PolicyView`] in force, and the retired slots whose final counters
/// Prometheus has been given (they may be reused from the next reload on).
#[derive(Debug)]
pub struct PolicyCell {
    view: RwLock<Arc<PolicyView>>,
    exported_retired: Mutex<BTreeSet<u32>>,
}

impl PolicyCell {
    fn new(view: PolicyView) -> Self {
        PolicyCell {
            view: RwLock::new(Arc::new(view)),
            exported_retired: Mutex::new(BTreeSet::new()),
        }
    }

    /// The view in force.
    pub fn view(&self) -> Arc<PolicyView> {
        read_copy(&self.view)
    }

    /// Makes `view` the one in force.
    pub fn publish(&self, view: PolicyView) {
        *write(&self.view) = Arc::new(view);
    }

    /// A scrape delivered these retired OPDs' final counters: they leave
    /// the view, and their slots may be reused.
    pub fn retired_exported(&self, slots: &BTreeSet<u32>) {
        if slots.is_empty() {
            return;
        }
        let mut view = write(&self.view);
        let mut next = (**view).clone();
        next.retired.retain(|_, s| !slots.contains(s));
        *view = Arc::new(next);
        drop(view);
        lock(&self.exported_retired).extend(slots.iter().copied());
    }

    /// Retired slots that may be reused now (each is handed out once).
    pub fn take_reusable(&self) -> BTreeSet<u32> {
        std::mem::take(&mut *lock(&self.exported_retired))
    }
}

/// The API tokens in force, swapped whole when the tokens file changes: a
/// request checks its token against one version, never a mix.
#[derive(Debug, Default)]
pub struct TokenCell {
    tokens: RwLock<Arc<Tokens>>,
}

impl TokenCell {
    pub fn new(tokens: Tokens) -> Self {
        TokenCell {
            tokens: RwLock::new(Arc::new(tokens)),
        }
    }

    /// The tokens in force.
    pub fn current(&self) -> Arc<Tokens> {
        read_copy(&self.tokens)
    }

    /// Makes `tokens` the ones in force; returns those they replace.
    pub fn replace(&self, tokens: Tokens) -> Arc<Tokens> {
        std::mem::replace(&mut *write(&self.tokens), Arc::new(tokens))
    }

    /// [`Tokens::authenticate`] against the tokens in force.
    pub fn authenticate(
        &self,
        header: Option<&str>,
    ) -> Result<(Access, Option<String>), AuthError> {
        self.current().authenticate(header)
    }

    /// Whether requests without a token may read the summary.
    pub fn anonymous_summary(&self) -> bool {
        self.current().anonymous_summary
    }

    /// Adds a token to those in force (tests).
    #[cfg(any(test, feature = "testkit"))]
    pub fn add(&self, name: &str, role: Access, token: &str) {
        let mut guard = write(&self.tokens);
        let mut next = (**guard).clone();
        next.add(name, role, token);
        *guard = Arc::new(next);
    }
}

/// Outcome of the last policy (re)load.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    pub successful: bool,
    pub at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub duration_seconds: f64,
}

/// The history store, or why it is unavailable. The data path and metrics
/// never wait for it.
#[derive(Default)]
pub struct History {
    pub store: Mutex<Option<HistoryStore>>,
    pub error: Mutex<Option<String>>,
    /// Where the store lives, to open it again when opening failed at start
    /// (a full disk, a damaged file since moved aside).
    pub location: Mutex<Option<(PathBuf, chrono_tz::Tz)>>,
}

impl History {
    pub fn available(&self) -> bool {
        self.error.lock().map(|e| e.is_none()).unwrap_or(false)
            && self.store.lock().map(|s| s.is_some()).unwrap_or(false)
    }
}

/// The verdict engine and the ICMP prober that feeds it.
pub struct Diagnosis {
    pub engine: Mutex<Engine>,
    /// None without permission to send ICMP, and in tests.
    pub prober: Option<Prober>,
}

/// Keeps counters read from HTB classes (drops, a group's bytes) monotonic:
/// HTB statistics restart from zero when a class is recreated, an exported
/// counter must not.
#[derive(Debug, Default)]
pub struct Monotonic {
    /// (series index, key) -> (last raw value, carried offset)
    seen: BTreeMap<(usize, String), (u64, u64)>,
}

impl Monotonic {
    /// The monotonic value of series `series` of `key` whose raw value is
    /// now `raw`.
    pub fn observe(&mut self, series: usize, key: &str, raw: u64) -> u64 {
        let e = self
            .seen
            .entry((series, key.to_string()))
            .or_insert((raw, 0));
        if raw < e.0 {
            e.1 += e.0;
        }
        e.0 = raw;
        e.1 + raw
    }
}

/// The kernel side as the daemon sees it: which interfaces it shapes, what
/// is attached, which operations failed; and the memory that keeps HTB
/// counters monotonic for Prometheus.
#[derive(Default)]
pub struct KernelStatus {
    shaping: RwLock<Option<Interfaces>>,
    /// Failed operations, repairs and attachment, as exported.
    pub metrics: crate::runtime::ops::KernelMetrics,
    /// Drops per OPD class, as exported.
    pub drops: Mutex<Monotonic>,
    /// Bytes and packets per group class, as exported.
    pub group_counters: Mutex<Monotonic>,
}

impl KernelStatus {
    /// The interfaces jatah shapes on now (their ifindexes change when an
    /// interface is recreated).
    pub fn shaping(&self) -> Option<Interfaces> {
        read_copy(&self.shaping)
    }

    pub fn set_shaping(&self, ifaces: Interfaces) {
        *write(&self.shaping) = Some(ifaces);
    }

    /// Counts a failed netlink or BPF operation on an interface
    /// (`jatah_kernel_errors_total`). The caller logs it.
    pub fn count_error(&self, operation: &str, interface: &str) {
        self.metrics.count_error(operation, interface);
    }

    /// Counts a part of jatah's data path found gone from an interface and
    /// put back (`jatah_kernel_repairs_total`). The caller logs it.
    pub fn count_repair(&self, what: &str, interface: &str) {
        self.metrics.count_repair(what, interface);
    }

    /// Whether jatah's programs and HTB tree are on each shaped interface
    /// (`jatah_interface_attached`).
    pub fn set_attached(&self, attached: BTreeMap<String, bool>) {
        self.metrics.set_attached(attached);
    }

    /// HTB class statistics of both trees (download on the LAN device,
    /// upload on the WAN), read over netlink; empty where unavailable (a
    /// failure is logged and counted).
    pub fn htb_stats(&self) -> [Vec<ClassStats>; DIRECTIONS] {
        let mut out = [Vec::new(), Vec::new()];
        let Some(ifaces) = self.shaping() else {
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
                    self.count_error("htb_stats", &iface.name);
                }
            }
        }
        out
    }
}

/// HTB drops per class minor, per direction.
pub fn drops_by_minor(stats: &[Vec<ClassStats>; DIRECTIONS]) -> [BTreeMap<u16, u64>; DIRECTIONS] {
    by_owner(stats, |c| c.drops)
}

/// Bytes queued in each OPD's leaves now, by the OPD class's minor, per
/// direction. HTB reports a backlog on leaves only, and an OPD with lanes
/// is an inner class over them.
pub fn queued_by_minor(stats: &[Vec<ClassStats>; DIRECTIONS]) -> [BTreeMap<u16, u64>; DIRECTIONS] {
    by_owner(stats, |c| u64::from(c.backlog_bytes))
}

/// `value` of every class summed by the class that owns it: a lane's
/// counts are its OPD's.
fn by_owner(
    stats: &[Vec<ClassStats>; DIRECTIONS],
    value: impl Fn(&ClassStats) -> u64,
) -> [BTreeMap<u16, u64>; DIRECTIONS] {
    [DOWNLOAD, UPLOAD].map(|d| {
        let mut by_minor = BTreeMap::new();
        for c in &stats[d] {
            *by_minor.entry(lane_owner(u32::from(c.minor)) as u16).or_insert(0) += value(c);
        }
        by_minor
    })
}

/// What owns the kernel state: the loaded programs and maps, the netlink
/// socket, the interfaces. One reload (or re-attachment) at a time holds it.
pub struct Controller {
    /// The policy file as read, before schedules: the policy in force is
    /// this with the allocations of the windows open now.
    pub base: Policy,
    pub datapath: Datapath,
    pub shaper: Shaper,
    pub ifaces: Interfaces,
    pub policy_path: PathBuf,
    /// The capacity each direction is shaped to where it adapted to an
    /// uplink that delivers less (`runtime::adapt`); `None`: the contract.
    pub effective_bps: [Option<u64>; DIRECTIONS],
}

/// The adaptive capacity of each direction (`runtime::adapt`), the root
/// classes' last byte counts and queued bytes its rates come from, and the
/// last change.
#[derive(Debug, Default)]
pub struct Adaptive {
    pub controllers: [crate::runtime::adapt::Controller; DIRECTIONS],
    pub root_bytes: [Option<(std::time::Instant, u64)>; DIRECTIONS],
    pub backlog_bytes: [Option<u64>; DIRECTIONS],
    pub last_change: [Option<(DateTime<Utc>, crate::runtime::adapt::Change)>; DIRECTIONS],
}

/// What the sampler measured: each OPD's current rates, and the counters
/// of the latest reading, by OPD id.
#[derive(Debug, Default)]
pub struct Traffic {
    inner: Mutex<TrafficInner>,
}

#[derive(Debug, Default)]
struct TrafficInner {
    rates: RateTable,
    totals: BTreeMap<String, Counters>,
    unclassified: Counters,
}

impl Traffic {
    /// Records one reading: the cumulative counters of the OPDs read this
    /// second, by id, and the unclassified slot's (None when its read
    /// failed). `in_force` are the OPDs of the policy in force, by id: one
    /// whose read failed keeps its rate series and last totals, one no
    /// longer in force is forgotten.
    pub fn record(
        &self,
        at: std::time::Instant,
        read: &BTreeMap<String, Counters>,
        unclassified: Option<Counters>,
        in_force: &BTreeMap<String, u32>,
    ) {
        let mut guard = lock(&self.inner);
        let t = &mut *guard;
        for (id, c) in read {
            t.rates.record(id, at, c.bytes);
            match t.totals.get_mut(id) {
                Some(total) => *total = *c,
                None => {
                    t.totals.insert(id.clone(), *c);
                }
            }
        }
        t.rates.retain(|id| in_force.contains_key(id));
        t.totals.retain(|id, _| in_force.contains_key(id));
        if let Some(u) = unclassified {
            t.unclassified = u;
        }
    }

    /// Rates of one direction (`jatah_common::DOWNLOAD`/`UPLOAD`) of an OPD.
    pub fn rates(&self, opd: &str, dir: usize) -> WindowRates {
        lock(&self.inner).rates.rates(opd, dir)
    }

    /// The sum of the rates of these OPDs in one direction.
    pub fn sum_rates<'a>(
        &self,
        opds: impl IntoIterator<Item = &'a str>,
        dir: usize,
    ) -> WindowRates {
        let t = lock(&self.inner);
        let mut sum = WindowRates::default();
        for id in opds {
            let x = t.rates.rates(id, dir);
            sum.last_1s_bps += x.last_1s_bps;
            sum.last_10s_bps += x.last_10s_bps;
            sum.last_60s_bps += x.last_60s_bps;
        }
        sum
    }

    /// Cumulative counters of an OPD at the latest reading.
    pub fn totals(&self, opd: &str) -> Counters {
        lock(&self.inner)
            .totals
            .get(opd)
            .copied()
            .unwrap_or_default()
    }

    /// Cumulative counters of traffic that matched no OPD.
    pub fn unclassified(&self) -> Counters {
        lock(&self.inner).unclassified
    }

    /// The peak 1-second rates of every OPD since the last call, by
    /// direction, and resets them (called at each minute boundary).
    pub fn take_minute_peaks(&self) -> BTreeMap<String, [u64; DIRECTIONS]> {
        lock(&self.inner).rates.take_minute_peaks()
    }
}

/// How many policy plans (`POST /api/v1/policy/plan`) are computed at
/// once: parsing and comparing a policy of thousands of OPDs takes a core
/// for a while, and the gateway has few.
pub const PLANS_AT_ONCE: usize = 1;
/// How long a plan request waits for its turn before it is answered 503
/// with `Retry-After`.
pub const PLAN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The bound on plans computed at once: each holds a permit for as long
/// as it parses and compares, on a blocking thread, never on the async
/// workers that answer every other request.
#[derive(Debug)]
pub struct PlanLimit {
    pub permits: Arc<tokio::sync::Semaphore>,
    /// How long a request waits for a permit ([`PLAN_WAIT`]).
    pub wait: std::time::Duration,
}

impl Default for PlanLimit {
    fn default() -> Self {
        PlanLimit {
            permits: Arc::new(tokio::sync::Semaphore::new(PLANS_AT_ONCE)),
            wait: PLAN_WAIT,
        }
    }
}

/// What the handlers and tasks share.
pub struct AppState {
    /// Set once the data path is attached and the HTB trees are in force.
    pub ready: AtomicBool,
    pub tokens: TokenCell,
    pub policy: PolicyCell,
    /// The pinned counter maps; read by the sampler once a second and by
    /// each scrape (None in tests without a kernel).
    pub counters: Option<CounterReader>,
    pub traffic: Traffic,
    pub history: History,
    pub diagnosis: Diagnosis,
    pub kernel: KernelStatus,
    /// The kernel state, for reloads and re-attachment (None in tests).
    pub control: Mutex<Option<Controller>>,
    /// The capacity each direction adapts to.
    pub adaptive: Mutex<Adaptive>,
    pub reloads: Mutex<ReloadStatus>,
    /// jatah's own metrics and the process collector (`/metrics` appends
    /// them to the per-OPD series).
    pub ops: crate::runtime::ops::OpsMetrics,
    /// Whether a visitor without a token is recognised by its source
    /// address (and where it came in); off behind a proxy.
    pub by_address: AtomicBool,
    pub plans: PlanLimit,
    /// Snapshots of the per-host counters, for the hosts endpoint.
    pub hosts: super::hosts::HostHistory,
}

impl AppState {
    /// Starts building the state around the policy in force.
    pub fn builder(view: PolicyView, tokens: Tokens) -> StateBuilder {
        StateBuilder {
            view,
            tokens,
            counters: None,
            prober: None,
            control: None,
            shaping: None,
            history: History::default(),
            reload: ReloadStatus::default(),
        }
    }

    /// The policy view in force.
    pub fn view(&self) -> Arc<PolicyView> {
        self.policy.view()
    }
}

/// Gathers the parts of an [`AppState`]; those not given are absent (tests
/// without a kernel, a gateway without ICMP permission).
pub struct StateBuilder {
    view: PolicyView,
    tokens: Tokens,
    counters: Option<CounterReader>,
    prober: Option<Prober>,
    control: Option<Controller>,
    shaping: Option<Interfaces>,
    history: History,
    reload: ReloadStatus,
}

impl StateBuilder {
    pub fn counters(mut self, reader: CounterReader) -> Self {
        self.counters = Some(reader);
        self
    }

    pub fn prober(mut self, prober: Prober) -> Self {
        self.prober = Some(prober);
        self
    }

    /// The kernel state and the interfaces it shapes.
    pub fn control(mut self, controller: Controller) -> Self {
        self.shaping = Some(controller.ifaces.clone());
        self.control = Some(controller);
        self
    }

    pub fn history(mut self, history: History) -> Self {
        self.history = history;
        self
    }

    pub fn reload_status(mut self, status: ReloadStatus) -> Self {
        self.reload = status;
        self
    }

    pub fn build(self) -> AppState {
        let thresholds = crate::diagnosis::Thresholds::from_policy(&self.view.policy);
        let kernel = KernelStatus::default();
        let ops = crate::runtime::ops::OpsMetrics::new(&kernel.metrics);
        if let Some(ifaces) = self.shaping {
            kernel.set_shaping(ifaces);
        }
        AppState {
            ready: AtomicBool::new(false),
            tokens: TokenCell::new(self.tokens),
            policy: PolicyCell::new(self.view),
            counters: self.counters,
            traffic: Traffic::default(),
            history: self.history,
            diagnosis: Diagnosis {
                engine: Mutex::new(Engine::new(thresholds)),
                prober: self.prober,
            },
            kernel,
            control: Mutex::new(self.control),
            adaptive: Mutex::new(Adaptive::default()),
            reloads: Mutex::new(self.reload),
            ops,
            by_address: AtomicBool::new(true),
            plans: PlanLimit::default(),
            hosts: Default::default(),
        }
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

    fn counters(bytes: u64) -> Counters {
        Counters {
            bytes: [bytes, 0],
            packets: [bytes / 1000, 0],
        }
    }

    #[test]
    fn an_opd_whose_read_failed_keeps_its_totals_and_rates_until_it_leaves_the_policy() {
        let traffic = Traffic::default();
        let in_force: BTreeMap<String, u32> = [("a".to_string(), 0), ("b".to_string(), 1)].into();
        let t0 = std::time::Instant::now();
        let both = |s: u64| -> BTreeMap<String, Counters> {
            [("a".to_string(), counters(s * 1_000_000)), ("b".to_string(), counters(s * 500_000))]
                .into()
        };
        for s in 0..=5 {
            traffic.record(t0 + std::time::Duration::from_secs(s), &both(s), None, &in_force);
        }
        // Second 6: a's read failed. Its totals stay, never 0.
        let only_b: BTreeMap<String, Counters> = [("b".to_string(), counters(3_000_000))].into();
        traffic.record(t0 + std::time::Duration::from_secs(6), &only_b, None, &in_force);
        assert_eq!(traffic.totals("a"), counters(5_000_000));
        assert_eq!(traffic.rates("a", DOWNLOAD).last_10s_bps, 8_000_000);
        // Second 7: a read again; its rate spans the gap, not doubled.
        traffic.record(t0 + std::time::Duration::from_secs(7), &both(7), None, &in_force);
        assert_eq!(traffic.rates("a", DOWNLOAD).last_1s_bps, 8_000_000);
        // a leaves the policy: forgotten.
        let only_b_in_force: BTreeMap<String, u32> = [("b".to_string(), 1)].into();
        traffic.record(t0 + std::time::Duration::from_secs(8), &only_b, None, &only_b_in_force);
        assert_eq!(traffic.totals("a"), Counters::default());
        assert_eq!(traffic.rates("a", DOWNLOAD), WindowRates::default());
    }

    #[test]
    fn a_failed_unclassified_read_keeps_the_last_good_counters() {
        let traffic = Traffic::default();
        let none = BTreeMap::new();
        let t0 = std::time::Instant::now();
        traffic.record(t0, &none, Some(counters(42)), &BTreeMap::new());
        traffic.record(t0, &none, None, &BTreeMap::new());
        assert_eq!(traffic.unclassified(), counters(42));
    }
}
