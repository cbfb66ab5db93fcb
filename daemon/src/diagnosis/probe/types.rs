//! What the prober is given and what it reports: targets, configuration,
//! each target's status, errors; and the two address families it speaks.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

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
    #[cfg(any(test, feature = "testkit"))]
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
    #[cfg(any(test, feature = "testkit"))]
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

    #[cfg(any(test, feature = "testkit"))]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    pub(super) fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}
