//! Active ICMP echo probes (IPv4 and IPv6) towards each OPD's router and a
//! few upstream targets, the raw evidence that lets the diagnosis tell an
//! upstream capacity drop apart from a local fault at one OPD.
//!
//! How it works:
//! - One raw socket per address family, shared by every target and opened in
//!   the network namespace of the thread that calls [`Prober::new`]. Raw
//!   sockets see every ICMP echo reply on the host, so each request carries
//!   this prober's identifier, a sequence number, a random per-prober nonce
//!   and a per-probe serial; a reply counts only when all of them match an
//!   outstanding probe and it comes from the probed address. Anything else
//!   (another process's ping, a second prober, unrelated ICMP) is ignored.
//! - [`Prober::run`] is a single tokio task: it sends a round (one echo per
//!   target, spaced out so 1000 targets do not leave as one burst) every
//!   `interval`, reads replies as they arrive and declares a probe lost once
//!   `timeout` has passed. Sending never waits for a reply and all socket I/O
//!   is non-blocking, so a hung or slow network cannot stall the daemon.
//! - RTTs use the kernel's receive timestamp when available, so a busy
//!   runtime does not inflate the LAN RTTs the diagnosis compares.
//! - Memory is bounded: `window` results per target, and at most one
//!   outstanding probe per target and round.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};
use tokio_util::sync::CancellationToken;
use tracing::warn;

mod engine;
mod icmp;
#[cfg(test)]
mod tests;

use engine::{Engine, log_poll_error, readable, register};
use icmp::{open_family, random_u64};

/// One address the prober pings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProbeTarget {
    /// Stable name, e.g. `"opd:dinkes"` or `"upstream:isp"`; unique per
    /// target set.
    pub key: String,
    /// Address to ping. IPv6 link-local addresses are not supported (no
    /// interface scope can be given).
    pub addr: IpAddr,
}

impl ProbeTarget {
    /// A target named `key` at `addr`.
    pub fn new(key: impl Into<String>, addr: IpAddr) -> ProbeTarget {
        ProbeTarget {
            key: key.into(),
            addr,
        }
    }
}

/// Timing and history settings of a [`Prober`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Time between two probes of the same target (default 1 s).
    pub interval: Duration,
    /// A reply later than this counts as lost (default 1 s, at most
    /// `interval` so a target never has two probes from one round in flight).
    pub timeout: Duration,
    /// Results kept per target (default 30).
    pub window: usize,
}

impl Default for ProbeConfig {
    fn default() -> ProbeConfig {
        ProbeConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            window: 30,
        }
    }
}

impl ProbeConfig {
    /// Checks the invariants [`Prober::new`] relies on.
    pub fn validate(&self) -> Result<(), ProbeError> {
        if self.interval.is_zero() {
            return Err(ProbeError::InvalidConfig(
                "interval must be greater than zero".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(ProbeError::InvalidConfig(
                "timeout must be greater than zero".into(),
            ));
        }
        if self.timeout > self.interval {
            return Err(ProbeError::InvalidConfig(format!(
                "timeout ({:?}) must not exceed interval ({:?})",
                self.timeout, self.interval
            )));
        }
        if self.window == 0 {
            return Err(ProbeError::InvalidConfig(
                "window must keep at least one result".into(),
            ));
        }
        Ok(())
    }
}

/// Status of one target.
///
/// In JSON, durations (`last_rtt`, `recent`) are seconds as floats and
/// `last_reply_at` is seconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeStatus {
    /// The target's key.
    pub key: String,
    /// The probed address.
    pub addr: IpAddr,
    /// Probes sent since the target (with this key and address) was added.
    pub sent: u64,
    /// Replies received in time since the target was added.
    pub received: u64,
    /// Probes with a result (answered or timed out) since the target was
    /// added: `completed - received` were lost, and the newest
    /// `completed - c` entries of `recent` are those since a reading `c`.
    pub completed: u64,
    /// RTT of the last answered probe.
    #[serde(serialize_with = "serialize_opt_secs")]
    pub last_rtt: Option<Duration>,
    /// When the last answered probe's reply arrived.
    #[serde(serialize_with = "serialize_opt_unix")]
    pub last_reply_at: Option<SystemTime>,
    /// Probes lost since the last answered one.
    pub consecutive_lost: u32,
    /// The last `window` results, oldest first; `None` is a lost probe.
    #[serde(serialize_with = "serialize_recent")]
    pub recent: Vec<Option<Duration>>,
}

impl ProbeStatus {
    /// Fraction of the last `last_n` results (at most `window`) that were
    /// lost, 0.0 to 1.0; 0.0 while there are no results yet (check
    /// `recent.is_empty()` to tell "no data" apart from "no loss").
    pub fn loss_ratio(&self, last_n: usize) -> f64 {
        let tail = self.tail(last_n);
        if tail.is_empty() {
            return 0.0;
        }
        let lost = tail.iter().filter(|r| r.is_none()).count();
        lost as f64 / tail.len() as f64
    }

    /// Median RTT of the answered probes among the last `last_n` results;
    /// `None` if none of them was answered.
    pub fn median_rtt(&self, last_n: usize) -> Option<Duration> {
        let mut rtts: Vec<Duration> = self.tail(last_n).iter().flatten().copied().collect();
        if rtts.is_empty() {
            return None;
        }
        rtts.sort_unstable();
        let mid = rtts.len() / 2;
        if rtts.len() % 2 == 1 {
            Some(rtts[mid])
        } else {
            Some((rtts[mid - 1] + rtts[mid]) / 2)
        }
    }

    /// Whether the most recent probe was answered (false before any result).
    pub fn answering(&self) -> bool {
        matches!(self.recent.last(), Some(Some(_)))
    }

    fn tail(&self, last_n: usize) -> &[Option<Duration>] {
        let n = last_n.min(self.recent.len());
        &self.recent[self.recent.len() - n..]
    }
}

fn serialize_opt_secs<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    v.map(|d| d.as_secs_f64()).serialize(s)
}

fn serialize_opt_unix<S: Serializer>(v: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    v.map(|t| {
        t.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    })
    .serialize(s)
}

fn serialize_recent<S: Serializer>(v: &[Option<Duration>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|r| r.map(|d| d.as_secs_f64())))
}

/// Why a [`Prober`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Opening a raw ICMP socket was refused.
    #[error(
        "ICMP probes need root or CAP_NET_RAW (opening the raw {family} ICMP socket: {source})"
    )]
    PermissionDenied {
        /// `"IPv4"` or `"IPv6"`.
        family: &'static str,
        /// The error from `socket(2)`.
        source: io::Error,
    },
    /// Opening a raw ICMP socket failed for another reason.
    #[error("cannot open the raw {family} ICMP socket: {source}")]
    Socket {
        /// `"IPv4"` or `"IPv6"`.
        family: &'static str,
        /// The error from `socket(2)`.
        source: io::Error,
    },
    /// Neither IPv4 nor IPv6 is available in this network namespace.
    #[error("neither IPv4 nor IPv6 ICMP sockets are supported here")]
    NoFamily,
    /// The configuration is inconsistent.
    #[error("invalid probe configuration: {0}")]
    InvalidConfig(String),
}

/// The active prober: a cheap-to-clone handle; every clone shares the
/// sockets, targets and results.
#[derive(Clone, Debug)]
pub struct Prober {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ProbeConfig,
    /// ICMP identifier of this prober's echo requests.
    ident: u16,
    /// Random payload marker: the 16-bit identifier alone may collide with
    /// another pinger's.
    nonce: u64,
    v4: Option<OwnedFd>,
    v6: Option<OwnedFd>,
    state: Mutex<State>,
    /// Probes currently awaiting a reply or their timeout.
    in_flight: AtomicUsize,
    /// Only one `run` may read the sockets at a time.
    run_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// In the order of the last `set_targets`.
    targets: Vec<TargetState>,
    by_key: HashMap<String, usize>,
    by_uid: HashMap<u64, usize>,
    next_uid: u64,
}

/// A target plus its history. `uid` changes whenever the key or address
/// does, so replies to probes of a replaced target are not credited to the
/// new one.
#[derive(Debug)]
struct TargetState {
    uid: u64,
    key: String,
    addr: IpAddr,
    sent: u64,
    received: u64,
    completed: u64,
    last_rtt: Option<Duration>,
    last_reply_at: Option<SystemTime>,
    consecutive_lost: u32,
    recent: VecDeque<Option<Duration>>,
}

impl TargetState {
    fn record(&mut self, result: Option<Duration>, reply_at: SystemTime, window: usize) {
        while self.recent.len() >= window {
            self.recent.pop_front();
        }
        self.recent.push_back(result);
        self.completed += 1;
        match result {
            Some(rtt) => {
                self.received += 1;
                self.last_rtt = Some(rtt);
                self.last_reply_at = Some(reply_at);
                self.consecutive_lost = 0;
            }
            None => self.consecutive_lost = self.consecutive_lost.saturating_add(1),
        }
    }

    fn status(&self) -> ProbeStatus {
        ProbeStatus {
            key: self.key.clone(),
            addr: self.addr,
            sent: self.sent,
            received: self.received,
            completed: self.completed,
            last_rtt: self.last_rtt,
            last_reply_at: self.last_reply_at,
            consecutive_lost: self.consecutive_lost,
            recent: self.recent.iter().copied().collect(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl Prober {
    /// Opens the raw ICMP sockets in the calling thread's network namespace.
    /// A family the kernel lacks (IPv6 disabled) is skipped with a warning;
    /// its targets then count as lost.
    pub fn new(config: ProbeConfig) -> Result<Prober, ProbeError> {
        config.validate()?;
        let v4 = open_family(Family::V4)?;
        let v6 = open_family(Family::V6)?;
        if v4.is_none() && v6.is_none() {
            return Err(ProbeError::NoFamily);
        }
        let random = random_u64();
        Ok(Prober {
            inner: Arc::new(Inner {
                config,
                ident: (random >> 48) as u16,
                nonce: random_u64(),
                v4,
                v6,
                state: Mutex::new(State::default()),
                in_flight: AtomicUsize::new(0),
                run_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The configuration this prober was created with.
    pub fn config(&self) -> ProbeConfig {
        self.inner.config
    }

    /// The ICMP identifier this prober's echo requests carry.
    pub fn identifier(&self) -> u16 {
        self.inner.ident
    }

    /// Probes currently awaiting their reply or timeout (bounded by about
    /// one per target).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Replaces the target set (policy reload). A target whose key and
    /// address both stay keeps its counters and history; one whose address
    /// changed starts afresh; removed ones are forgotten. Of duplicate keys
    /// the first wins. New targets are probed from the next round on.
    pub fn set_targets(&self, targets: Vec<ProbeTarget>) {
        let mut state = self.inner.lock_state();
        let mut old: HashMap<String, TargetState> = state
            .targets
            .drain(..)
            .map(|t| (t.key.clone(), t))
            .collect();
        state.by_key.clear();
        state.by_uid.clear();
        for target in targets {
            if state.by_key.contains_key(&target.key) {
                warn!(key = %target.key, "duplicate probe target ignored");
                continue;
            }
            let kept = old
                .remove(&target.key)
                .filter(|prev| prev.addr == target.addr);
            let entry = match kept {
                Some(prev) => prev,
                None => {
                    state.next_uid += 1;
                    TargetState {
                        uid: state.next_uid,
                        key: target.key,
                        addr: target.addr,
                        sent: 0,
                        received: 0,
                        completed: 0,
                        last_rtt: None,
                        last_reply_at: None,
                        consecutive_lost: 0,
                        recent: VecDeque::with_capacity(self.inner.config.window),
                    }
                }
            };
            let index = state.targets.len();
            state.by_key.insert(entry.key.clone(), index);
            state.by_uid.insert(entry.uid, index);
            state.targets.push(entry);
        }
    }

    /// Current status of every target, in the order they were set.
    pub fn snapshot(&self) -> Vec<ProbeStatus> {
        let state = self.inner.lock_state();
        state.targets.iter().map(TargetState::status).collect()
    }

    /// Current status of the target with this key.
    pub fn status(&self, key: &str) -> Option<ProbeStatus> {
        let state = self.inner.lock_state();
        state.by_key.get(key).map(|&i| state.targets[i].status())
    }

    /// Probes until `shutdown` is cancelled. Probes still in flight when it
    /// stops are dropped without a result (the network is not at fault). If
    /// another `run` of the same prober is active, this one waits for it to
    /// end first.
    pub async fn run(&self, shutdown: CancellationToken) {
        let _running = tokio::select! {
            guard = self.inner.run_lock.lock() => guard,
            () = shutdown.cancelled() => return,
        };
        let v4 = register(self.inner.v4.as_ref(), Family::V4);
        let v6 = register(self.inner.v6.as_ref(), Family::V6);
        let mut engine = Engine::new(&self.inner);
        let mut backlog = false;
        loop {
            let wake = if backlog {
                Instant::now()
            } else {
                engine.next_wake()
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                r = readable(v4.as_ref()) => log_poll_error(r, Family::V4),
                r = readable(v6.as_ref()) => log_poll_error(r, Family::V6),
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            // Replies first, so one that arrived before its deadline is
            // credited even when this task woke up late.
            backlog = engine.drain(v4.as_ref(), Family::V4) | engine.drain(v6.as_ref(), Family::V6);
            let now = Instant::now();
            engine.expire(now);
            engine.send_due(now, v4.as_ref(), v6.as_ref());
            self.inner
                .in_flight
                .store(engine.pending.len(), Ordering::Relaxed);
        }
    }
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent counters behind;
        // keep probing rather than poisoning every caller.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
