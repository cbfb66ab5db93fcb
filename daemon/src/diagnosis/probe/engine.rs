//! The probing loop of one [`Prober::run`](super::Prober::run): sends each round, matches
//! replies to outstanding probes and declares the late ones lost.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tracing::{debug, warn};

use super::icmp::{echo_request, parse_reply, send_echo};
use super::state::Inner;
use super::types::Family;
use crate::sys;

/// Longest gap between two sends of a round: a round of a few targets leaves
/// almost at once (good for comparing them), a round of 1000 is spread over
/// at most half the interval instead of leaving as one burst.
const MAX_SEND_GAP: Duration = Duration::from_millis(1);
/// Packets read per socket before sends and timeouts get a turn again, so a
/// flood of foreign ICMP cannot starve the prober's own schedule.
const RECV_BUDGET: usize = 1024;

/// A socket registered with the runtime for one `run`. It borrows the fd,
/// which [`Inner`] keeps owning, so a later `run` can register it again.
type Polled<'a> = AsyncFd<BorrowedFd<'a>>;

pub(super) fn register(fd: Option<&OwnedFd>, family: Family) -> Option<Polled<'_>> {
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
pub(super) async fn readable(fd: Option<&Polled<'_>>) -> io::Result<()> {
    match fd {
        Some(fd) => {
            fd.readable().await?.clear_ready();
            Ok(())
        }
        None => std::future::pending().await,
    }
}

pub(super) fn log_poll_error(r: io::Result<()>, family: Family) {
    if let Err(e) = r {
        warn!(family = family.name(), error = %e, "polling the ICMP socket failed");
    }
}

/// A probe awaiting its reply.
#[derive(Debug)]
pub(super) struct Pending {
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
    pub(super) fn new(start: Instant, queue: Vec<(u64, IpAddr)>, interval: Duration) -> Round {
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
pub(super) struct Engine<'a> {
    inner: &'a Inner,
    pub(super) pending: HashMap<u16, Pending>,
    /// Deadlines in send order (the timeout is fixed, so also in deadline
    /// order); entries already answered are skipped when popped.
    deadlines: VecDeque<(Instant, u16, u64)>,
    round: Round,
    next_seq: u16,
    next_serial: u64,
    buf: Box<[u8]>,
}

impl<'a> Engine<'a> {
    pub(super) fn new(inner: &'a Inner) -> Engine<'a> {
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

    pub(super) fn next_wake(&self) -> Instant {
        let send = self.round.next_due(self.inner.config.interval);
        match self.deadlines.front() {
            Some(&(deadline, _, _)) => send.min(deadline),
            None => send,
        }
    }

    /// Reads what the socket holds; true if the budget ran out first.
    pub(super) fn drain(&mut self, fd: Option<&Polled<'_>>, family: Family) -> bool {
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

    pub(super) fn expire(&mut self, now: Instant) {
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

    pub(super) fn send_due(
        &mut self,
        now: Instant,
        v4: Option<&Polled<'_>>,
        v6: Option<&Polled<'_>>,
    ) {
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
