//! Who in an office uses its allocation: the top hosts of an OPD over a
//! recent window, from the classifier's per-host counters.
//!
//! The kernel keeps each host's running totals (`JATAH_HOSTS`, bounded,
//! least recently seen evicted). Here snapshots of those totals are kept
//! every [`SNAPSHOT_EVERY`]: all from the last [`DENSE_FOR`], then one per
//! [`SPARSE_EVERY`] up to [`KEEP_FOR`]. A window's usage is the live totals
//! less the youngest snapshot at least the window old, so a "1 hour" window
//! is 60 to 65 minutes, and the answer says exactly how long it was. Per-host
//! figures never reach Prometheus (one series per host would be unbounded).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jatah_common::{AddrKey, HostCount};
use tokio_util::sync::CancellationToken;

use crate::datapath::CounterReader;

/// How often the per-host totals are read into a snapshot.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(15);
/// Every snapshot younger than this is kept (the 1- and 5-minute windows).
pub const DENSE_FOR: Duration = Duration::from_secs(6 * 60);
/// Older snapshots are kept one per this long.
pub const SPARSE_EVERY: Duration = Duration::from_secs(5 * 60);
/// No snapshot is kept longer (the 1-hour window).
pub const KEEP_FOR: Duration = Duration::from_secs(66 * 60);

/// One host's running totals: bytes download, upload; and its OPD slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub bytes: [u64; 2],
    pub slot: u32,
}

/// Every host's totals at one moment.
pub type Snapshot = HashMap<AddrKey, Totals>;

/// The snapshots kept, oldest first, and what the map held at the last.
pub struct HostHistory {
    snapshots: Mutex<VecDeque<(Instant, Arc<Snapshot>)>>,
    /// Hosts in the map at the last snapshot, and entered ever.
    held: Mutex<(usize, u64)>,
    /// One walk of the kernel's table at a time for requests (a walk is a
    /// system call or two per host).
    pub walks: Arc<tokio::sync::Semaphore>,
}

impl Default for HostHistory {
    fn default() -> Self {
        HostHistory {
            snapshots: Mutex::default(),
            held: Mutex::default(),
            walks: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// Reads the kernel's per-host totals.
pub fn read(counts: Vec<(AddrKey, HostCount)>) -> Snapshot {
    counts
        .into_iter()
        .map(|(k, c)| {
            (
                k,
                Totals {
                    bytes: c.bytes,
                    slot: c.slot,
                },
            )
        })
        .collect()
}

impl HostHistory {
    /// Keeps a snapshot taken at `at`, and drops those no longer needed.
    pub fn push(&self, at: Instant, snapshot: Snapshot) {
        let mut s = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        s.push_back((at, Arc::new(snapshot)));
        prune(&mut s, at);
    }

    /// Records how many hosts the map holds and how many were ever
    /// entered (their difference is how many the kernel evicted).
    pub fn set_held(&self, held: usize, added: u64) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = (held, added);
    }

    /// Hosts held and hosts evicted, as of the last snapshot.
    pub fn held_and_evicted(&self) -> (usize, u64) {
        let (held, added) = *self.held.lock().unwrap_or_else(|p| p.into_inner());
        (held, added.saturating_sub(held as u64))
    }

    /// The youngest snapshot at least `window` old at `now` (else the
    /// oldest there is), with its age.
    pub fn base(&self, now: Instant, window: Duration) -> Option<(Duration, Arc<Snapshot>)> {
        let s = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let aged = |(at, snap): &(Instant, Arc<Snapshot>)| (now.saturating_duration_since(*at), snap.clone());
        s.iter()
            .rev()
            .map(aged)
            .find(|(age, _)| *age >= window)
            .or_else(|| s.front().map(aged))
    }

    #[cfg(test)]
    fn snapshots(&self) -> usize {
        self.snapshots.lock().map(|s| s.len()).unwrap_or(0)
    }

}

/// Keeps every snapshot younger than [`DENSE_FOR`], then the first of each
/// [`SPARSE_EVERY`] stretch, none older than [`KEEP_FOR`].
fn prune(s: &mut VecDeque<(Instant, Arc<Snapshot>)>, now: Instant) {
    let mut last_kept: Option<Instant> = None;
    s.retain(|(at, _)| {
        let age = now.saturating_duration_since(*at);
        let keep = if age > KEEP_FOR {
            false
        } else if age < DENSE_FOR {
            true
        } else {
            last_kept.is_none_or(|k| at.saturating_duration_since(k) >= SPARSE_EVERY)
        };
        if keep {
            last_kept = Some(*at);
        }
        keep
    });
}

/// One host's use over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostUse {
    pub address: IpAddr,
    /// Bytes download, upload over the window.
    pub bytes: [u64; 2],
}

/// The hosts of OPD `slot` that moved bytes between `base` and `now`,
/// most bytes first (download and upload together). A host not in `base`
/// entered the map since, so its totals are its use. One whose totals
/// went below half of `base` was evicted and entered again: its totals
/// are its use since; a smaller drop is counts caught moving from the
/// cache to the table during a read (bounded, see `CounterReader::hosts`)
/// and counts as nothing.
pub fn usage(base: &Snapshot, now: &Snapshot, slot: u32) -> Vec<HostUse> {
    let mut out: Vec<HostUse> = now
        .iter()
        .filter(|(_, t)| t.slot == slot)
        .filter_map(|(k, t)| {
            let before = base.get(k).map_or([0, 0], |b| b.bytes);
            let bytes: [u64; 2] = std::array::from_fn(|d| {
                if t.bytes[d] >= before[d] {
                    t.bytes[d] - before[d]
                } else if t.bytes[d] < before[d] / 2 {
                    t.bytes[d]
                } else {
                    0
                }
            });
            (bytes != [0, 0]).then(|| HostUse {
                address: address(k),
                bytes,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (b.bytes[0] + b.bytes[1])
            .cmp(&(a.bytes[0] + a.bytes[1]))
            .then(a.address.cmp(&b.address))
    });
    out
}

/// An office's hosts over a window ([`usage`]) and the office's bytes
/// each way: what the API and the status page show.
pub struct Window {
    pub hosts: Vec<HostUse>,
    /// The office's bytes, download and upload (all its hosts).
    pub total: [u64; 2],
}

impl Window {
    pub fn of(base: &Snapshot, now: &Snapshot, slot: u32) -> Window {
        let hosts = usage(base, now, slot);
        let total = std::array::from_fn(|d| hosts.iter().map(|h| h.bytes[d]).sum());
        Window { hosts, total }
    }

    /// A host's share of the office's bytes in direction `d`, 0..1.
    pub fn share(&self, h: &HostUse, d: usize) -> f64 {
        if self.total[d] > 0 {
            h.bytes[d] as f64 / self.total[d] as f64
        } else {
            0.0
        }
    }
}

/// The address a key stands for (IPv4 for a mapped address).
pub fn address(k: &AddrKey) -> IpAddr {
    std::net::Ipv6Addr::from(k.addr).to_canonical()
}

/// Runs `snapshot` (on a blocking thread) every [`SNAPSHOT_EVERY`] until
/// shutdown.
pub async fn keep(snapshot: impl Fn() + Clone + Send + 'static, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let _ = tokio::task::spawn_blocking(snapshot.clone()).await;
    }
}

/// Reads the per-host counters now into `history`; the live totals.
pub fn snapshot_now(reader: &CounterReader, history: &HostHistory) -> Option<Arc<Snapshot>> {
    let (counts, held) = reader.hosts();
    let snap = read(counts);
    if let Ok(added) = reader.hosts_added() {
        history.set_held(held, added);
    }
    history.push(Instant::now(), snap);
    history.base(Instant::now(), Duration::ZERO).map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(last: u8) -> AddrKey {
        crate::datapath::addr_key(IpAddr::from([10, 20, 1, last]))
    }

    fn snap(hosts: &[(u8, u64, u64, u32)]) -> Snapshot {
        hosts
            .iter()
            .map(|&(h, d, u, slot)| {
                (
                    key(h),
                    Totals {
                        bytes: [d, u],
                        slot,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_window_is_the_difference_new_hosts_count_whole_and_other_offices_are_left_out() {
        let base = snap(&[(1, 1_000, 100, 0), (2, 500, 50, 0), (3, 9_000, 0, 1)]);
        let now = snap(&[
            (1, 101_000, 1_100, 0),
            (2, 500, 50, 0),   // idle in the window
            (3, 99_000, 0, 1), // another office
            (4, 2_000, 200, 0), // entered since
            (5, 300, 0, 0),    // evicted and entered again (below base)
            (6, 9_000, 0, 0),  // caught mid-move during a read: nothing
        ]);
        let mut base = base;
        base.insert(key(5), Totals { bytes: [7_000, 0], slot: 0 });
        base.insert(key(6), Totals { bytes: [10_000, 0], slot: 0 });
        let u = usage(&base, &now, 0);
        let got: Vec<(IpAddr, [u64; 2])> = u.iter().map(|h| (h.address, h.bytes)).collect();
        assert_eq!(
            got,
            vec![
                (IpAddr::from([10, 20, 1, 1]), [100_000, 1_000]),
                (IpAddr::from([10, 20, 1, 4]), [2_000, 200]),
                (IpAddr::from([10, 20, 1, 5]), [300, 0]),
            ]
        );
    }

    #[test]
    fn snapshots_are_dense_for_minutes_sparse_for_the_hour_and_bounded() {
        let h = HostHistory::default();
        let t0 = Instant::now();
        // Two hours of snapshots every 15 s.
        let n = 2 * 3600 / 15;
        for i in 0..=n {
            h.push(t0 + SNAPSHOT_EVERY * i, Snapshot::new());
        }
        let now = t0 + SNAPSHOT_EVERY * n;
        // 6 minutes dense (24 or 25) and one per 5 minutes to 66 (about 12).
        assert!((30..=40).contains(&h.snapshots()), "{} snapshots", h.snapshots());
        for (window, most) in [(60, 75), (300, 315), (3600, 3900)] {
            let (age, _) = h.base(now, Duration::from_secs(window)).unwrap();
            assert!(
                age >= Duration::from_secs(window) && age <= Duration::from_secs(most),
                "window {window} s: base {age:?} old"
            );
        }
    }

    #[test]
    fn evictions_are_entries_made_less_entries_held() {
        let h = HostHistory::default();
        h.set_held(32_768, 100_000);
        assert_eq!(h.held_and_evicted(), (32_768, 67_232));
    }
}
