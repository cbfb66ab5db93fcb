//! The prober's shared state: its sockets and identity, and every
//! target's recent results, behind one lock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::types::{ProbeConfig, ProbeStatus};

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) config: ProbeConfig,
    /// ICMP identifier of this prober's echo requests.
    pub(super) ident: u16,
    /// Random payload marker: the 16-bit identifier alone may collide with
    /// another pinger's.
    pub(super) nonce: u64,
    pub(super) v4: Option<OwnedFd>,
    pub(super) v6: Option<OwnedFd>,
    pub(super) state: Mutex<State>,
    /// Probes currently awaiting a reply or their timeout.
    pub(super) in_flight: AtomicUsize,
    /// Only one `run` may read the sockets at a time.
    pub(super) run_lock: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// In the order of the last `set_targets`.
    pub(super) targets: Vec<TargetState>,
    pub(super) by_key: HashMap<String, usize>,
    pub(super) by_uid: HashMap<u64, usize>,
    pub(super) next_uid: u64,
}

/// A target plus its history. `uid` changes whenever the key or address
/// does, so replies to probes of a replaced target are not credited to the
/// new one.
#[derive(Debug)]
pub(super) struct TargetState {
    pub(super) uid: u64,
    pub(super) key: String,
    pub(super) addr: IpAddr,
    pub(super) sent: u64,
    pub(super) received: u64,
    pub(super) completed: u64,
    pub(super) last_rtt: Option<Duration>,
    pub(super) last_reply_at: Option<SystemTime>,
    pub(super) consecutive_lost: u32,
    pub(super) recent: VecDeque<Option<Duration>>,
}

impl TargetState {
    pub(super) fn record(&mut self, result: Option<Duration>, reply_at: SystemTime, window: usize) {
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

    pub(super) fn status(&self) -> ProbeStatus {
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

impl Inner {
    pub(super) fn lock_state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent counters behind;
        // keep probing rather than poisoning every caller.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
