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
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::sys;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// `ICMP_FILTER` from linux/icmp.h (level `SOL_RAW`): a bitmask of ICMP types
/// the kernel drops before queueing them on the socket.
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` from linux/icmpv6.h (level `IPPROTO_ICMPV6`): 256 bits, a
/// set bit blocks that ICMPv6 type.
const ICMPV6_FILTER: libc::c_int = 1;

/// Echo payload: 8 bytes of nonce, 8 bytes of probe serial.
const PAYLOAD_LEN: usize = 16;
/// ICMP header (8 bytes) plus payload.
const ECHO_LEN: usize = 8 + PAYLOAD_LEN;

/// Longest gap between two sends of a round: a round of a few targets leaves
/// almost at once (good for comparing them), a round of 1000 is spread over
/// at most half the interval instead of leaving as one burst.
const MAX_SEND_GAP: Duration = Duration::from_millis(1);
/// Packets read per socket before sends and timeouts get a turn again, so a
/// flood of foreign ICMP cannot starve the prober's own schedule.
const RECV_BUDGET: usize = 1024;
/// Receive buffer asked for: a round of 1000 replies arriving together must
/// not overflow the default buffer (each queued skb costs ~1 KiB).
const RECV_BUFFER: libc::c_int = 2 << 20;

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

/// A socket registered with the runtime for one `run`. It borrows the fd,
/// which [`Inner`] keeps owning, so a later `run` can register it again.
type Polled<'a> = AsyncFd<BorrowedFd<'a>>;

fn register(fd: Option<&OwnedFd>, family: Family) -> Option<Polled<'_>> {
    let fd = fd?.as_fd();
    // SAFETY: the borrow keeps the fd open and unchanged for as long as the
    // registration lives, as `register_with_interest` requires.
    match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(fd) => Some(fd),
        Err(e) => {
            warn!(family = family.name(), error = %e, "cannot poll the ICMP socket; its targets will count as lost");
            None
        }
    }
}

/// Resolves once the socket may have data. Readiness is cleared right away:
/// the caller then reads until `EWOULDBLOCK` (or its budget, in which case it
/// comes back without waiting), so no edge is missed.
async fn readable(fd: Option<&Polled<'_>>) -> io::Result<()> {
    match fd {
        Some(fd) => {
            fd.readable().await?.clear_ready();
            Ok(())
        }
        None => std::future::pending().await,
    }
}

fn log_poll_error(r: io::Result<()>, family: Family) {
    if let Err(e) = r {
        warn!(family = family.name(), error = %e, "polling the ICMP socket failed");
    }
}

/// A probe awaiting its reply.
#[derive(Debug)]
struct Pending {
    uid: u64,
    serial: u64,
    /// Canonical address the reply must come from.
    dest: IpAddr,
    sent_at: Instant,
    sent_wall: SystemTime,
}

/// Targets of the current round and how far sending has got.
struct Round {
    start: Instant,
    gap: Duration,
    queue: Vec<(u64, IpAddr)>,
    next: usize,
}

impl Round {
    fn new(start: Instant, queue: Vec<(u64, IpAddr)>, interval: Duration) -> Round {
        let slots = u32::try_from(queue.len().max(1)).unwrap_or(u32::MAX);
        let gap = (interval / 2 / slots).min(MAX_SEND_GAP);
        Round {
            start,
            gap,
            queue,
            next: 0,
        }
    }

    fn next_due(&self, interval: Duration) -> Instant {
        if self.next < self.queue.len() {
            self.start + self.gap * u32::try_from(self.next).unwrap_or(u32::MAX)
        } else {
            self.start + interval
        }
    }
}

/// State private to one `run`: outstanding probes and the send schedule.
struct Engine<'a> {
    inner: &'a Inner,
    pending: HashMap<u16, Pending>,
    /// Deadlines in send order (the timeout is fixed, so also in deadline
    /// order); entries already answered are skipped when popped.
    deadlines: VecDeque<(Instant, u16, u64)>,
    round: Round,
    next_seq: u16,
    next_serial: u64,
    buf: Box<[u8]>,
}

impl<'a> Engine<'a> {
    fn new(inner: &'a Inner) -> Engine<'a> {
        let round = Round::new(Instant::now(), round_targets(inner), inner.config.interval);
        Engine {
            inner,
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            round,
            next_seq: 0,
            next_serial: 0,
            buf: vec![0; 2048].into_boxed_slice(),
        }
    }

    fn next_wake(&self) -> Instant {
        let send = self.round.next_due(self.inner.config.interval);
        match self.deadlines.front() {
            Some(&(deadline, _, _)) => send.min(deadline),
            None => send,
        }
    }

    /// Reads what the socket holds; true if the budget ran out first.
    fn drain(&mut self, fd: Option<&Polled<'_>>, family: Family) -> bool {
        let Some(fd) = fd else { return false };
        for _ in 0..RECV_BUDGET {
            match sys::receive_timestamped(*fd.get_ref(), &mut self.buf) {
                Ok(packet) => {
                    let received_at = Instant::now();
                    self.on_packet(family, packet, received_at);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(family = family.name(), error = %e, "ICMP receive failed");
                    return false;
                }
            }
        }
        true
    }

    fn on_packet(&mut self, family: Family, packet: sys::Datagram, received_at: Instant) {
        let Some(reply) = parse_reply(family, &self.buf[..packet.len]) else {
            return;
        };
        if reply.ident != self.inner.ident || reply.nonce != self.inner.nonce {
            return;
        }
        let matches = self.pending.get(&reply.seq).is_some_and(|p| {
            p.serial == reply.serial && packet.from.map(|a| a.to_canonical()) == Some(p.dest)
        });
        if !matches {
            return;
        }
        let Some(probe) = self.pending.remove(&reply.seq) else {
            return;
        };
        let user_rtt = received_at.saturating_duration_since(probe.sent_at);
        // The kernel timestamp excludes scheduling delay; it is ignored when
        // the wall clock stepped in between (it would exceed the monotonic
        // measurement or precede the send).
        let rtt = packet
            .kernel_time
            .and_then(|t| t.duration_since(probe.sent_wall).ok())
            .filter(|k| *k <= user_rtt)
            .unwrap_or(user_rtt);
        let result = (rtt <= self.inner.config.timeout).then_some(rtt);
        self.record(probe.uid, result, probe.sent_wall + rtt);
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, seq, serial)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if self.pending.get(&seq).is_some_and(|p| p.serial == serial)
                && let Some(probe) = self.pending.remove(&seq)
            {
                self.record(probe.uid, None, SystemTime::now());
            }
        }
    }

    fn send_due(&mut self, now: Instant, v4: Option<&Polled<'_>>, v6: Option<&Polled<'_>>) {
        let interval = self.inner.config.interval;
        while self.round.next_due(interval) <= now {
            if let Some(&(uid, addr)) = self.round.queue.get(self.round.next) {
                self.round.next += 1;
                self.send_probe(uid, addr, v4, v6);
            } else {
                let mut start = self.round.start + interval;
                // After a stall (suspended VM, overloaded runtime) skip the
                // missed rounds instead of sending them back to back.
                if now.saturating_duration_since(start) >= interval {
                    start = now;
                }
                self.round = Round::new(start, round_targets(self.inner), interval);
            }
        }
    }

    fn send_probe(
        &mut self,
        uid: u64,
        addr: IpAddr,
        v4: Option<&Polled<'_>>,
        v6: Option<&Polled<'_>>,
    ) {
        {
            let mut state = self.inner.lock_state();
            let Some(&i) = state.by_uid.get(&uid) else {
                return; // removed by set_targets during this round
            };
            state.targets[i].sent += 1;
        }
        let dest = addr.to_canonical();
        let family = Family::of(dest);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let serial = self.next_serial;
        self.next_serial += 1;
        // 65536 probes in flight would be needed to reuse a sequence number;
        // should it happen anyway, the older probe is given up as lost.
        if let Some(old) = self.pending.remove(&seq) {
            self.record(old.uid, None, SystemTime::now());
        }
        let packet = echo_request(family, self.inner.ident, seq, self.inner.nonce, serial);
        let sent_wall = SystemTime::now();
        let sent_at = Instant::now();
        let fd = match family {
            Family::V4 => v4,
            Family::V6 => v6,
        };
        let result = match fd {
            Some(fd) => send_echo(*fd.get_ref(), dest, &packet),
            None => Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
        };
        // A failed send (no route, full buffer, firewall) is a lost probe;
        // it still waits for its deadline so every target yields one result
        // per interval.
        if let Err(e) = result {
            debug!(%addr, error = %e, "ICMP echo not sent");
        }
        self.pending.insert(
            seq,
            Pending {
                uid,
                serial,
                dest,
                sent_at,
                sent_wall,
            },
        );
        self.deadlines
            .push_back((sent_at + self.inner.config.timeout, seq, serial));
    }

    fn record(&self, uid: u64, result: Option<Duration>, at: SystemTime) {
        let window = self.inner.config.window;
        let mut state = self.inner.lock_state();
        if let Some(&i) = state.by_uid.get(&uid) {
            state.targets[i].record(result, at, window);
        }
    }
}

impl Drop for Engine<'_> {
    /// Also runs when the `run` future is dropped instead of cancelled: the
    /// probes in flight are abandoned, not lost.
    fn drop(&mut self) {
        self.inner.in_flight.store(0, Ordering::Relaxed);
    }
}

fn round_targets(inner: &Inner) -> Vec<(u64, IpAddr)> {
    let state = inner.lock_state();
    state.targets.iter().map(|t| (t.uid, t.addr)).collect()
}

fn open_family(family: Family) -> Result<Option<OwnedFd>, ProbeError> {
    match open_socket(family) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) => match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => Err(ProbeError::PermissionDenied {
                family: family.name(),
                source: e,
            }),
            Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT) => {
                warn!(
                    family = family.name(),
                    "no ICMP support; targets of this family will count as lost"
                );
                Ok(None)
            }
            _ => Err(ProbeError::Socket {
                family: family.name(),
                source: e,
            }),
        },
    }
}

fn open_socket(family: Family) -> io::Result<OwnedFd> {
    let (domain, protocol) = match family {
        Family::V4 => (libc::AF_INET, libc::IPPROTO_ICMP),
        Family::V6 => (libc::AF_INET6, libc::IPPROTO_ICMPV6),
    };
    let fd = sys::socket(
        domain,
        libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        protocol,
    )?;

    // Let only echo replies reach the socket: a raw socket otherwise gets a
    // copy of every ICMP packet, including our own requests on loopback.
    // Best effort: the parser checks the type anyway.
    let filtered = match family {
        Family::V4 => {
            let blocked: u32 = !(1u32 << ICMP_ECHO_REPLY);
            sys::set_socket_option(fd.as_fd(), libc::SOL_RAW, ICMP_FILTER, &blocked)
        }
        Family::V6 => {
            let mut blocked = [u32::MAX; 8];
            let t = usize::from(ICMPV6_ECHO_REPLY);
            blocked[t >> 5] &= !(1u32 << (t & 31));
            sys::set_socket_option(fd.as_fd(), libc::IPPROTO_ICMPV6, ICMPV6_FILTER, &blocked)
        }
    };
    if let Err(e) = filtered {
        debug!(family = family.name(), error = %e, "ICMP type filter not installed");
    }
    // SO_RCVBUFFORCE goes past net.core.rmem_max (we are privileged anyway).
    if sys::set_socket_option(
        fd.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &RECV_BUFFER,
    )
    .is_err()
    {
        let _ = sys::set_socket_option(fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, &RECV_BUFFER);
    }
    let on: libc::c_int = 1;
    if let Err(e) = sys::set_socket_option(fd.as_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, &on)
    {
        debug!(family = family.name(), error = %e, "no kernel receive timestamps; RTTs include scheduling delay");
    }
    Ok(fd)
}

/// Builds an echo request. The IPv4 checksum is ours to compute; on raw
/// ICMPv6 sockets the kernel fills it in (it covers the pseudo-header).
fn echo_request(family: Family, ident: u16, seq: u16, nonce: u64, serial: u64) -> [u8; ECHO_LEN] {
    let mut p = [0u8; ECHO_LEN];
    p[0] = match family {
        Family::V4 => ICMP_ECHO_REQUEST,
        Family::V6 => ICMPV6_ECHO_REQUEST,
    };
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&nonce.to_be_bytes());
    p[16..24].copy_from_slice(&serial.to_be_bytes());
    if family == Family::V4 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071). Over data that includes a correct
/// checksum field it yields 0.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The fields of an echo reply that identify the probe it answers.
#[derive(Debug, PartialEq, Eq)]
struct EchoReply {
    ident: u16,
    seq: u16,
    nonce: u64,
    serial: u64,
}

/// Parses what a raw socket returned: for IPv4 the IP header comes first,
/// for IPv6 the data starts at the ICMPv6 header (whose checksum the kernel
/// has already verified).
fn parse_reply(family: Family, packet: &[u8]) -> Option<EchoReply> {
    let icmp = match family {
        Family::V4 => {
            let first = *packet.first()?;
            let header_len = usize::from(first & 0x0f) * 4;
            if first >> 4 != 4
                || header_len < 20
                || packet.len() < header_len
                || packet[9] != libc::IPPROTO_ICMP as u8
            {
                return None;
            }
            let icmp = &packet[header_len..];
            if icmp.len() < ECHO_LEN || icmp[0] != ICMP_ECHO_REPLY || checksum(icmp) != 0 {
                return None;
            }
            icmp
        }
        Family::V6 => {
            if packet.len() < ECHO_LEN || packet[0] != ICMPV6_ECHO_REPLY {
                return None;
            }
            packet
        }
    };
    if icmp[1] != 0 {
        return None;
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&icmp[i..i + 8]);
        u64::from_be_bytes(b)
    };
    Some(EchoReply {
        ident: u16::from_be_bytes([icmp[4], icmp[5]]),
        seq: u16::from_be_bytes([icmp[6], icmp[7]]),
        nonce: u64_at(8),
        serial: u64_at(16),
    })
}

fn send_echo(fd: BorrowedFd<'_>, dest: IpAddr, packet: &[u8]) -> io::Result<()> {
    sys::send_to(fd, dest, packet, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL).map(drop)
}

/// Randomness for the identifier and nonce; falls back to time, pid and a
/// counter mixed together if getrandom(2) is unavailable.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if sys::fill_random(&mut bytes).is_ok_and(|n| n == 8) {
        return u64::from_ne_bytes(bytes);
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::netns::{NetNs, require_root, unique_token};
    use std::net::Ipv4Addr;
    use std::sync::mpsc;
    use std::thread;

    fn fast() -> ProbeConfig {
        ProbeConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(80),
            window: 30,
        }
    }

    fn target(key: &str, addr: &str) -> ProbeTarget {
        ProbeTarget::new(key, addr.parse().unwrap())
    }

    /// A prober running the way the daemon runs it: on a thread that entered
    /// the namespace, under a current-thread runtime.
    struct Running {
        prober: Prober,
        stop: CancellationToken,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Running {
        fn start(ns: Arc<NetNs>, config: ProbeConfig, targets: Vec<ProbeTarget>) -> Running {
            let (tx, rx) = mpsc::channel();
            let stop = CancellationToken::new();
            let token = stop.clone();
            let thread = thread::spawn(move || {
                ns.enter_current_thread().expect("enter namespace");
                let prober = Prober::new(config).expect("open ICMP sockets");
                prober.set_targets(targets);
                tx.send(prober.clone()).unwrap();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(prober.run(token));
            });
            let prober = rx.recv().expect("prober thread failed to start");
            Running {
                prober,
                stop,
                thread: Some(thread),
            }
        }

        fn status(&self, key: &str) -> ProbeStatus {
            self.prober.status(key).expect(key)
        }

        /// Polls until `cond` holds, failing with the snapshot if it does not
        /// within `limit`.
        fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Prober) -> bool) {
            let end = Instant::now() + limit;
            while !cond(&self.prober) {
                assert!(
                    Instant::now() < end,
                    "timed out waiting for {what}: {:#?}",
                    self.prober.snapshot()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }

        fn stop(mut self) {
            self.stop.cancel();
            self.thread
                .take()
                .unwrap()
                .join()
                .expect("prober thread panicked");
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.cancel();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Namespaces A and B joined by a veth pair, IPv4 and IPv6 on both ends.
    struct Lab {
        a: Arc<NetNs>,
        b: NetNs,
        vb: String,
    }

    const B4: &str = "10.99.0.2";
    const B6: &str = "fd00:99::2";

    impl Lab {
        fn new() -> Lab {
            require_root();
            let a = NetNs::create("jt-prb").unwrap();
            let b = NetNs::create("jt-prb").unwrap();
            let token = unique_token();
            let (va, vb) = (format!("pa{token}"), format!("pb{token}"));
            a.ip([
                "link",
                "add",
                &va,
                "type",
                "veth",
                "peer",
                "name",
                &vb,
                "netns",
                b.name(),
            ])
            .unwrap();
            a.ip(["addr", "add", "10.99.0.1/24", "dev", &va]).unwrap();
            a.ip(["addr", "add", "fd00:99::1/64", "dev", &va, "nodad"])
                .unwrap();
            a.ip(["link", "set", &va, "up"]).unwrap();
            let lab = Lab {
                a: Arc::new(a),
                b,
                vb,
            };
            lab.b_up();
            lab
        }

        /// (Re)configures B's end; IPv6 addresses vanish when a link goes
        /// down, so bringing it back means adding them again.
        fn b_up(&self) {
            let vb = self.vb.as_str();
            self.b.ip(["link", "set", vb, "up"]).unwrap();
            self.b
                .ip(["addr", "replace", "10.99.0.2/24", "dev", vb])
                .unwrap();
            self.b
                .ip(["addr", "replace", "fd00:99::2/64", "dev", vb, "nodad"])
                .unwrap();
        }
    }

    fn all_received(p: &Prober, at_least: u64) -> bool {
        p.snapshot().iter().all(|s| s.received >= at_least)
    }

    #[test]
    fn loopback_is_answered_quickly() {
        require_root();
        let ns = Arc::new(NetNs::create("jt-prb").unwrap());
        let run = Running::start(
            ns,
            fast(),
            vec![target("lo:v4", "127.0.0.1"), target("lo:v6", "::1")],
        );
        run.wait_for("5 replies each", Duration::from_secs(5), |p| {
            all_received(p, 5)
        });
        for key in ["lo:v4", "lo:v6"] {
            let s = run.status(key);
            assert!(s.answering(), "{s:?}");
            assert_eq!(s.consecutive_lost, 0, "{s:?}");
            assert_eq!(s.loss_ratio(30), 0.0, "{s:?}");
            assert!(s.received <= s.sent && s.sent - s.received <= 1, "{s:?}");
            assert_eq!(s.completed, s.received, "{s:?}");
            assert!(
                s.median_rtt(30).unwrap() < Duration::from_millis(50),
                "{s:?}"
            );
            assert!(s.last_rtt.unwrap() < Duration::from_millis(50), "{s:?}");
            let age = SystemTime::now()
                .duration_since(s.last_reply_at.unwrap())
                .unwrap();
            assert!(age < Duration::from_secs(1), "{s:?}");
            assert!(s.recent.iter().all(Option::is_some), "{s:?}");
        }
        run.stop();
    }

    #[test]
    fn link_down_is_lost_then_recovers() {
        let lab = Lab::new();
        let run = Running::start(
            lab.a.clone(),
            fast(),
            vec![target("opd:v4", B4), target("opd:v6", B6)],
        );
        run.wait_for("B answering", Duration::from_secs(5), |p| {
            all_received(p, 3) && p.snapshot().iter().all(ProbeStatus::answering)
        });

        lab.b.ip(["link", "set", &lab.vb, "down"]).unwrap();
        run.wait_for("total loss", Duration::from_secs(2), |p| {
            p.snapshot()
                .iter()
                .all(|s| s.loss_ratio(5) == 1.0 && s.consecutive_lost >= 5)
        });
        let first = run.prober.snapshot();
        run.wait_for("loss to keep growing", Duration::from_secs(2), |p| {
            p.snapshot()
                .iter()
                .zip(&first)
                .all(|(now, then)| now.consecutive_lost >= then.consecutive_lost + 3)
        });
        for s in run.prober.snapshot() {
            assert!(!s.answering(), "{s:?}");
            assert!(
                s.last_rtt.is_some(),
                "history of the good days is kept: {s:?}"
            );
            assert!(s.recent.len() <= 30, "{s:?}");
        }

        lab.b_up();
        run.wait_for("B answering again", Duration::from_secs(5), |p| {
            p.snapshot()
                .iter()
                .all(|s| s.answering() && s.consecutive_lost == 0)
        });
        run.stop();
    }

    #[test]
    fn foreign_echo_replies_are_ignored() {
        let lab = Lab::new();
        let targets = vec![target("opd:v4", B4), target("opd:v6", B6)];
        let config = ProbeConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            window: 30,
        };
        // Two probers and the system ping in one namespace, all pinging the
        // same addresses: every raw socket sees every reply. B drops the
        // first prober's requests only, so its probes sit in flight while
        // ping's replies (same source, sequence numbers sweeping past ours)
        // and the second prober's replies stream in. Its targets are set
        // only once that filter is in place.
        let muted = Running::start(lab.a.clone(), config, Vec::new());
        let other = Running::start(lab.a.clone(), config, targets.clone());
        let ident = muted.prober.identifier();
        assert_ne!(ident, other.prober.identifier());
        for rule in [
            "add table inet t".to_string(),
            "add chain inet t in { type filter hook input priority 0 ; }".into(),
            format!("add rule inet t in icmp type echo-request icmp id {ident} drop"),
            format!("add rule inet t in icmpv6 type echo-request icmpv6 id {ident} drop"),
        ] {
            lab.b.run("nft", rule.split_whitespace()).unwrap();
        }
        muted.prober.set_targets(targets);

        lab.a
            .run("ping", ["-q", "-c", "100", "-i", "0.01", "-W", "1", B4])
            .unwrap();
        lab.a
            .run(
                "ping",
                ["-6", "-q", "-c", "100", "-i", "0.01", "-W", "1", B6],
            )
            .unwrap();
        let muted_seen = muted.prober.snapshot();
        let other_seen = other.prober.snapshot();
        muted.stop();
        other.stop();
        for s in muted_seen {
            assert!(s.sent >= 10, "{s:?}");
            assert_eq!(s.received, 0, "a foreign reply was counted: {s:?}");
        }
        for s in other_seen {
            assert!(s.received <= s.sent && s.sent - s.received <= 1, "{s:?}");
            assert!(s.received >= 10, "{s:?}");
        }
    }

    /// Sends the given ICMP messages from namespace `ns` every 5 ms for
    /// `duration`, each list from its own source address.
    fn inject(ns: &NetNs, to: Ipv4Addr, sources: &[(Ipv4Addr, Vec<Vec<u8>>)], duration: Duration) {
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    ns.enter_current_thread().unwrap();
                    let sockets: Vec<(OwnedFd, &Vec<Vec<u8>>)> = sources
                        .iter()
                        .map(|(from, packets)| {
                            let fd = open_socket(Family::V4).unwrap();
                            sys::bind_address(fd.as_fd(), IpAddr::V4(*from))
                                .unwrap_or_else(|e| panic!("bind {from}: {e}"));
                            (fd, packets)
                        })
                        .collect();
                    let end = Instant::now() + duration;
                    while Instant::now() < end {
                        for (fd, packets) in &sockets {
                            for p in packets.iter() {
                                send_echo(fd.as_fd(), IpAddr::V4(to), p).unwrap();
                            }
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                })
                .join()
                .unwrap();
        });
    }

    #[test]
    fn only_exact_replies_from_the_target_count() {
        let lab = Lab::new();
        // B ignores echo requests, so every probe stays in flight for the
        // whole timeout while forged replies arrive.
        lab.b
            .run("sysctl", ["-qw", "net.ipv4.icmp_echo_ignore_all=1"])
            .unwrap();
        lab.b
            .ip(["addr", "add", "10.99.0.3/24", "dev", &lab.vb])
            .unwrap();
        let config = ProbeConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            window: 30,
        };
        let run = Running::start(lab.a.clone(), config, vec![target("opd", B4)]);
        let (ident, nonce) = (run.prober.inner.ident, run.prober.inner.nonce);
        // With one target, probe number `serial` carries sequence `serial`.
        let replies = |ident: u16, nonce: u64, serial_offset: u64| -> Vec<Vec<u8>> {
            (0..40u64)
                .map(|serial| {
                    let req = echo_request(
                        Family::V4,
                        ident,
                        serial as u16,
                        nonce,
                        serial + serial_offset,
                    );
                    reply_to(Family::V4, &req)
                })
                .collect()
        };
        let b4: Ipv4Addr = B4.parse().unwrap();
        let a4 = Ipv4Addr::new(10, 99, 0, 1);
        let forged = [
            (b4, replies(ident ^ 1, nonce, 0)), // another pinger's identifier
            (b4, replies(ident, nonce ^ 1, 0)), // our identifier, not our payload
            (b4, replies(ident, nonce, 1000)),  // stale probe serial
            (Ipv4Addr::new(10, 99, 0, 3), replies(ident, nonce, 0)), // wrong source
        ];
        inject(&lab.b, a4, &forged, Duration::from_millis(800));
        let s = run.status("opd");
        assert!(s.sent >= 5, "{s:?}");
        assert_eq!(s.received, 0, "a forged reply was counted: {s:?}");
        assert_eq!(s.loss_ratio(30), 1.0, "{s:?}");

        // Positive control: the same path with exact replies is credited.
        let sent_before = s.sent;
        inject(
            &lab.b,
            a4,
            &[(b4, replies(ident, nonce, 0))],
            Duration::from_millis(800),
        );
        let s = run.status("opd");
        assert!(s.sent <= 40, "{s:?}");
        assert!(s.received >= 5, "{s:?}");
        assert!(s.received <= s.sent - sent_before + 1, "{s:?}");
        assert!(s.last_rtt.unwrap() <= config.timeout, "{s:?}");
        run.stop();
    }

    #[test]
    fn set_targets_keeps_history_of_unchanged_targets() {
        require_root();
        let ns = Arc::new(NetNs::create("jt-prb").unwrap());
        let run = Running::start(
            ns,
            fast(),
            vec![
                target("keep", "127.0.0.1"),
                target("move", "::1"),
                target("drop", "127.0.0.3"),
            ],
        );
        run.wait_for("3 replies each", Duration::from_secs(5), |p| {
            all_received(p, 3)
        });
        let keep_before = run.status("keep");
        let move_before = run.status("move");

        run.prober.set_targets(vec![
            target("keep", "127.0.0.1"),
            target("move", "127.0.0.2"),
            target("fresh", "::1"),
        ]);
        let keys: Vec<String> = run.prober.snapshot().into_iter().map(|s| s.key).collect();
        assert_eq!(keys, ["keep", "move", "fresh"]);
        assert!(run.prober.status("drop").is_none());
        let keep = run.status("keep");
        assert!(keep.received >= keep_before.received, "{keep:?}");
        assert!(keep.recent.len() >= keep_before.recent.len(), "{keep:?}");
        let moved = run.status("move");
        assert!(moved.received < move_before.received, "{moved:?}");
        assert!(moved.recent.len() <= 1, "{moved:?}");
        assert_eq!(moved.addr, "127.0.0.2".parse::<IpAddr>().unwrap());

        run.wait_for("new targets answered", Duration::from_secs(5), |p| {
            all_received(p, 3)
        });
        let keep = run.status("keep");
        assert!(keep.received >= keep_before.received + 3, "{keep:?}");
        for s in run.prober.snapshot() {
            assert_eq!(s.loss_ratio(30), 0.0, "{s:?}");
        }
        run.stop();
    }

    #[test]
    fn unowned_address_is_always_lost_and_bounded() {
        let lab = Lab::new();
        let config = ProbeConfig {
            window: 5,
            ..fast()
        };
        let run = Running::start(
            lab.a.clone(),
            config,
            vec![
                target("nobody:v4", "10.99.0.77"),
                target("nobody:v6", "fd00:99::77"),
                target("opd:v4", B4),
            ],
        );
        run.wait_for("12 probes each", Duration::from_secs(5), |p| {
            p.snapshot().iter().all(|s| s.sent >= 12)
        });
        assert!(
            run.prober.in_flight() <= 2 * 3,
            "{}",
            run.prober.in_flight()
        );
        for key in ["nobody:v4", "nobody:v6"] {
            let s = run.status(key);
            assert_eq!(s.received, 0, "{s:?}");
            assert_eq!(s.recent, vec![None; 5], "{s:?}");
            assert_eq!(s.loss_ratio(100), 1.0, "{s:?}");
            assert_eq!(s.median_rtt(5), None, "{s:?}");
            assert!(!s.answering(), "{s:?}");
            assert!(u64::from(s.consecutive_lost) + 1 >= s.sent, "{s:?}");
            assert_eq!(u64::from(s.consecutive_lost), s.completed, "{s:?}");
            assert_eq!((s.last_rtt, s.last_reply_at), (None, None), "{s:?}");
        }
        let ok = run.status("opd:v4");
        assert!(ok.answering() && ok.recent.len() == 5, "{ok:?}");
        run.stop();
    }

    #[test]
    fn a_thousand_targets_are_all_answered() {
        require_root();
        let ns = Arc::new(NetNs::create("jt-prb").unwrap());
        let targets = (0..1000u32)
            .map(|i| {
                let addr = IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8));
                ProbeTarget::new(format!("opd:{i}"), addr)
            })
            .collect();
        let config = ProbeConfig {
            interval: Duration::from_millis(300),
            timeout: Duration::from_millis(300),
            window: 10,
        };
        let run = Running::start(ns, config, targets);
        run.wait_for("3 replies each", Duration::from_secs(10), |p| {
            all_received(p, 3)
        });
        let snapshot = run.prober.snapshot();
        assert_eq!(snapshot.len(), 1000);
        for s in &snapshot {
            assert_eq!(s.loss_ratio(10), 0.0, "{s:?}");
        }
        assert!(run.prober.in_flight() <= 2000);
        run.stop();
    }

    #[test]
    fn run_can_be_dropped_and_restarted() {
        require_root();
        let ns = NetNs::create("jt-prb").unwrap();
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    ns.enter_current_thread().unwrap();
                    let prober = Prober::new(fast()).unwrap();
                    prober.set_targets(vec![target("lo", "127.0.0.1")]);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        // Dropping the future is a valid way to stop it too.
                        let never = CancellationToken::new();
                        let _ = tokio::time::timeout(Duration::from_millis(350), prober.run(never))
                            .await;
                        let first = prober.status("lo").unwrap().received;
                        assert!(first >= 2, "first run: {first}");
                        assert_eq!(prober.in_flight(), 0);

                        let stop = CancellationToken::new();
                        let runner = prober.clone();
                        let task = tokio::spawn({
                            let stop = stop.clone();
                            async move { runner.run(stop).await }
                        });
                        tokio::time::sleep(Duration::from_millis(350)).await;
                        stop.cancel();
                        task.await.unwrap();
                        let second = prober.status("lo").unwrap().received;
                        assert!(second >= first + 2, "second run: {first} -> {second}");
                    });
                })
                .join()
                .unwrap();
        });
    }

    #[test]
    fn refuses_without_cap_net_raw() {
        require_root();
        const CAP_NET_RAW: u32 = 13;

        // Capabilities are per thread: only this helper thread loses one.
        let result = thread::spawn(|| {
            sys::drop_effective_capability(CAP_NET_RAW).expect("dropping CAP_NET_RAW");
            Prober::new(ProbeConfig::default()).map(|_| ())
        })
        .join()
        .unwrap();
        let err = result.expect_err("raw sockets must be refused without CAP_NET_RAW");
        assert!(
            matches!(err, ProbeError::PermissionDenied { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("root or CAP_NET_RAW"), "{err}");
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is ddf2, so the
        // checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
        assert_eq!(checksum(&[0xab]), !0xab00);
    }

    /// An IPv4 datagram carrying `icmp`, as a raw socket returns it.
    fn ipv4(icmp: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        p.extend_from_slice(icmp);
        p
    }

    /// Turns our request into the reply a host would send back.
    fn reply_to(family: Family, request: &[u8]) -> Vec<u8> {
        let mut r = request.to_vec();
        r[0] = match family {
            Family::V4 => ICMP_ECHO_REPLY,
            Family::V6 => ICMPV6_ECHO_REPLY,
        };
        r[2..4].fill(0);
        if family == Family::V4 {
            let sum = checksum(&r);
            r[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        r
    }

    #[test]
    fn echo_request_round_trips_through_the_parser() {
        let req = echo_request(Family::V4, 0xbeef, 7, 0x0123_4567_89ab_cdef, 42);
        assert_eq!(req[0], ICMP_ECHO_REQUEST);
        assert_eq!(checksum(&req), 0, "request checksum must verify");
        let expected = EchoReply {
            ident: 0xbeef,
            seq: 7,
            nonce: 0x0123_4567_89ab_cdef,
            serial: 42,
        };
        let reply = ipv4(&reply_to(Family::V4, &req));
        assert_eq!(parse_reply(Family::V4, &reply), Some(expected));

        let req6 = echo_request(Family::V6, 1, 2, 3, 4);
        assert_eq!(req6[0], ICMPV6_ECHO_REQUEST);
        assert_eq!(&req6[2..4], &[0, 0], "the kernel fills the ICMPv6 checksum");
        let parsed = parse_reply(Family::V6, &reply_to(Family::V6, &req6)).unwrap();
        assert_eq!(
            (parsed.ident, parsed.seq, parsed.nonce, parsed.serial),
            (1, 2, 3, 4)
        );
    }

    #[test]
    fn parser_rejects_what_is_not_our_kind_of_reply() {
        let req = echo_request(Family::V4, 9, 9, 9, 9);
        let good = reply_to(Family::V4, &req);
        assert!(parse_reply(Family::V4, &ipv4(&good)).is_some());
        // The request itself (seen on loopback), a corrupted reply, a
        // truncated one, a non-ICMP datagram and garbage.
        assert_eq!(parse_reply(Family::V4, &ipv4(&req)), None);
        let mut corrupt = good.clone();
        corrupt[20] ^= 1;
        assert_eq!(parse_reply(Family::V4, &ipv4(&corrupt)), None);
        assert_eq!(parse_reply(Family::V4, &ipv4(&good[..ECHO_LEN - 1])), None);
        let mut udp = ipv4(&good);
        udp[9] = 17;
        assert_eq!(parse_reply(Family::V4, &udp), None);
        assert_eq!(parse_reply(Family::V4, &[0x45, 0, 0]), None);
        assert_eq!(parse_reply(Family::V4, &[]), None);
        let mut code = good.clone();
        code[1] = 1;
        let sum = {
            code[2..4].fill(0);
            checksum(&code)
        };
        code[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(parse_reply(Family::V4, &ipv4(&code)), None);

        let req6 = echo_request(Family::V6, 9, 9, 9, 9);
        assert_eq!(parse_reply(Family::V6, &req6), None);
        assert_eq!(
            parse_reply(Family::V6, &reply_to(Family::V6, &req6)[..10]),
            None
        );
    }

    fn status_with(recent: Vec<Option<Duration>>) -> ProbeStatus {
        ProbeStatus {
            key: "t".into(),
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sent: recent.len() as u64,
            received: recent.iter().flatten().count() as u64,
            completed: recent.len() as u64,
            last_rtt: None,
            last_reply_at: None,
            consecutive_lost: 0,
            recent,
        }
    }

    #[test]
    fn status_statistics() {
        let ms = |n| Some(Duration::from_millis(n));
        let s = status_with(vec![ms(10), None, ms(30), ms(20), None, ms(40)]);
        assert_eq!(s.loss_ratio(6), 2.0 / 6.0);
        assert_eq!(s.loss_ratio(100), 2.0 / 6.0);
        assert_eq!(s.loss_ratio(2), 0.5);
        assert_eq!(s.loss_ratio(1), 0.0);
        assert_eq!(s.loss_ratio(0), 0.0);
        assert_eq!(s.median_rtt(6), Some(Duration::from_millis(25)));
        assert_eq!(s.median_rtt(3), Some(Duration::from_millis(30)));
        assert_eq!(s.median_rtt(2), Some(Duration::from_millis(40)));
        assert_eq!(s.median_rtt(0), None);
        assert!(s.answering());
        let lost = status_with(vec![ms(1), None]);
        assert!(!lost.answering());
        assert_eq!(lost.median_rtt(1), None);
        let empty = status_with(vec![]);
        assert!(!empty.answering());
        assert_eq!(empty.loss_ratio(30), 0.0);
        assert_eq!(empty.median_rtt(30), None);
    }

    #[test]
    fn window_keeps_only_the_last_results() {
        let mut t = TargetState {
            uid: 1,
            key: "t".into(),
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sent: 0,
            received: 0,
            completed: 0,
            last_rtt: None,
            last_reply_at: None,
            consecutive_lost: 0,
            recent: VecDeque::new(),
        };
        let now = SystemTime::now();
        for i in 0..10 {
            t.record(Some(Duration::from_millis(i)), now, 3);
        }
        t.record(None, now, 3);
        t.record(None, now, 3);
        let s = t.status();
        assert_eq!(s.recent, vec![Some(Duration::from_millis(9)), None, None]);
        assert_eq!((s.received, s.consecutive_lost), (10, 2));
        assert_eq!(s.completed, 12);
        assert_eq!(s.last_rtt, Some(Duration::from_millis(9)));
        t.record(Some(Duration::from_millis(5)), now, 3);
        assert_eq!(t.status().consecutive_lost, 0);
    }

    #[test]
    fn config_is_validated() {
        assert!(ProbeConfig::default().validate().is_ok());
        let bad = [
            ProbeConfig {
                timeout: Duration::from_secs(2),
                ..ProbeConfig::default()
            },
            ProbeConfig {
                window: 0,
                ..ProbeConfig::default()
            },
            ProbeConfig {
                interval: Duration::ZERO,
                ..ProbeConfig::default()
            },
            ProbeConfig {
                timeout: Duration::ZERO,
                ..ProbeConfig::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(Prober::new(config), Err(ProbeError::InvalidConfig(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn status_serializes_durations_as_seconds() {
        let mut s = status_with(vec![Some(Duration::from_millis(1500)), None]);
        s.last_rtt = Some(Duration::from_millis(250));
        s.last_reply_at = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["last_rtt"], 0.25);
        assert_eq!(json["last_reply_at"], 1_700_000_000.0);
        assert_eq!(json["recent"], serde_json::json!([1.5, null]));
        assert_eq!(json["addr"], "127.0.0.1");
    }

    /// Compile-time check: the daemon hands the handle around and spawns
    /// `run` on a multi-thread runtime.
    #[allow(dead_code)]
    fn handle_and_run_future_are_send(p: &Prober) {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        send_sync(p);
        send(&p.run(CancellationToken::new()));
    }
}
