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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::warn;

mod engine;
mod icmp;
mod state;
#[cfg(test)]
mod tests;
mod types;

use engine::{Engine, log_poll_error, readable, register};
use icmp::{open_family, random_u64};
use state::{Inner, State, TargetState};
use types::Family;
pub use types::{ProbeConfig, ProbeError, ProbeStatus, ProbeTarget};

/// The active prober: a cheap-to-clone handle; every clone shares the
/// sockets, targets and results.
#[derive(Clone, Debug)]
pub struct Prober {
    inner: Arc<Inner>,
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
    #[cfg(any(test, feature = "testkit"))]
    pub fn config(&self) -> ProbeConfig {
        self.inner.config
    }

    /// The ICMP identifier this prober's echo requests carry.
    #[cfg(any(test, feature = "testkit"))]
    pub fn identifier(&self) -> u16 {
        self.inner.ident
    }

    /// Probes currently awaiting their reply or timeout (bounded by about
    /// one per target).
    #[cfg(any(test, feature = "testkit"))]
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
    #[cfg(any(test, feature = "testkit"))]
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
