//! The `[diagnosis]` table: how jatah probes and when it calls a fault.
//!
//! ```toml
//! [diagnosis]
//! probe_interval = "1s"      # how often OPD routers and upstream targets are pinged
//! rtt_tracking = true        # time TCP handshakes (LAN and WAN round trips) and
//!                            # count retransmissions by side
//! rtt_sampling = 8           # ... of one connection in 8 (1, 2, 4, ... 128)
//! lan_rtt = "50ms"           # an OPD's LAN round trip above this: local_degraded
//! wan_rtt = "150ms"          # upstream round trips above this: upstream_degraded
//! probe_lost_in_a_row = 3    # router probes lost in a row before "not answering"
//! silence = "3s"             # no packet from an OPD this long: silent
//!
//! [[diagnosis.upstream]]     # targets beyond the gateway: the ISP's router, anchors
//! name = "isp"
//! address = "203.0.113.1"
//! ```

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

/// An upstream probe target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamTarget {
    /// Label value in metrics (`[a-z0-9-]`), never the address.
    pub name: String,
    pub address: IpAddr,
}

/// Diagnosis settings with their documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiagnosisSettings {
    pub probe_interval: Duration,
    pub rtt_tracking: bool,
    /// One TCP connection in this many (a power of two) has its handshake
    /// timed and its retransmissions counted; the clock read that timing
    /// needs is the dearest step of the classifier.
    pub rtt_sampling: u32,
    pub lan_rtt: Duration,
    pub wan_rtt: Duration,
    pub probe_lost_in_a_row: u32,
    pub silence: Duration,
    pub upstream: Vec<UpstreamTarget>,
}

impl Default for DiagnosisSettings {
    fn default() -> Self {
        DiagnosisSettings {
            probe_interval: Duration::from_secs(1),
            rtt_tracking: true,
            rtt_sampling: 8,
            lan_rtt: Duration::from_millis(50),
            wan_rtt: Duration::from_millis(150),
            probe_lost_in_a_row: 3,
            silence: Duration::from_secs(3),
            upstream: Vec::new(),
        }
    }
}

pub(super) const DIAGNOSIS_KEYS: &[&str] = &[
    "probe_interval",
    "rtt_tracking",
    "rtt_sampling",
    "lan_rtt",
    "wan_rtt",
    "probe_lost_in_a_row",
    "silence",
    "upstream",
];
pub(super) const UPSTREAM_KEYS: &[&str] = &["name", "address"];

/// Parses "500ms", "1s", "2m" (a whole number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("\"{text}\" is not a duration; write e.g. \"500ms\", \"1s\" or \"2m\"")
    })?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n * 60),
        _ => {
            return Err(format!(
                "\"{text}\": unknown unit; write e.g. \"500ms\", \"1s\" or \"2m\""
            ));
        }
    };
    if d.is_zero() {
        return Err(format!("\"{text}\" is zero; write a positive duration"));
    }
    Ok(d)
}
