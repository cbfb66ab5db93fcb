//! Learned round-trip baselines: what "normal" is for one path, so a
//! round trip is judged against its own past and not only against an
//! absolute threshold.
//!
//! A path's raw samples (probe round trips, handshake round trips) are
//! gathered in 10-second buckets. A bucket closed while nothing was
//! suspected on the path ("clean") adds its median to the path's history
//! of the last 180 clean buckets (30 minutes of clean time, however long
//! ago). The baseline is the 10th percentile of that history, used once
//! three buckets (30 s) are in. A round trip is inflated when it is above
//!
//! ```text
//! min(cap, baseline + max(delta, (factor - 1) * baseline))
//! ```
//!
//! with the policy's `wan_rtt`/`lan_rtt` as the cap: 20 ms or 1.5x on the
//! WAN side, 15 ms or 3x on a LAN. A path suspected for 12 hours without
//! a clean bucket learns again from what it sees: a lasting route change
//! becomes the new normal instead of a verdict that never ends (the caps
//! still hold).

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Seconds of samples in one bucket.
const BUCKET_S: i64 = 10;
/// Samples a bucket needs for its median to count.
const BUCKET_MIN_SAMPLES: usize = 3;
/// Clean bucket medians kept: 30 minutes of clean time.
const KEPT: usize = 180;
/// Buckets needed before the baseline is used.
const MIN_BUCKETS: usize = 3;
/// Without a clean bucket for this long, a path learns from what it sees.
const RELEARN_AFTER_S: i64 = 12 * 3600;
/// The percentile of the clean medians that is the baseline.
const PERCENTILE: f64 = 0.10;

/// How far above its baseline a round trip may go on one kind of path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Always allowed above the baseline.
    pub delta: Duration,
    /// Allowed as a multiple of the baseline, when that is more.
    pub factor: f64,
}

/// Paths beyond the gateway: the ISP and the Internet.
pub const WAN: Rule = Rule {
    delta: Duration::from_millis(20),
    factor: 1.5,
};

/// An OPD's own network, between it and the gateway.
pub const LAN: Rule = Rule {
    delta: Duration::from_millis(15),
    factor: 3.0,
};

/// One path's learned normal round trip.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// Medians of clean buckets, oldest first.
    medians: VecDeque<Duration>,
    bucket: Vec<Duration>,
    bucket_start: Option<DateTime<Utc>>,
    /// Whether anything was suspected while the bucket filled.
    bucket_dirty: bool,
    /// When the last clean bucket closed (or the path was first seen).
    last_clean: Option<DateTime<Utc>>,
    /// Learning from suspected time after half a day without clean time.
    relearning: bool,
}

impl Baseline {
    /// Feeds one second's samples of the path; `clean` says nothing was
    /// suspected on it this second.
    pub fn observe(
        &mut self,
        at: DateTime<Utc>,
        samples: impl IntoIterator<Item = Duration>,
        clean: bool,
    ) {
        let start = *self.bucket_start.get_or_insert(at);
        self.last_clean.get_or_insert(at);
        if (at - start).num_seconds() >= BUCKET_S || at < start {
            self.close(at);
            self.bucket_start = Some(at);
        }
        self.bucket.extend(samples);
        self.bucket_dirty |= !clean;
    }

    fn close(&mut self, at: DateTime<Utc>) {
        let bucket = std::mem::take(&mut self.bucket);
        let dirty = std::mem::replace(&mut self.bucket_dirty, false);
        if bucket.len() < BUCKET_MIN_SAMPLES {
            return;
        }
        if dirty {
            let long = self
                .last_clean
                .is_some_and(|t| (at - t).num_seconds() >= RELEARN_AFTER_S);
            if !long {
                return;
            }
            if !self.relearning {
                // Suspected for half a day: what it sees now is its normal.
                self.medians.clear();
                self.relearning = true;
            }
        } else {
            self.last_clean = Some(at);
            self.relearning = false;
        }
        let mut v = bucket;
        v.sort();
        self.medians.push_back(v[v.len() / 2]);
        while self.medians.len() > KEPT {
            self.medians.pop_front();
        }
    }

    /// The learned normal round trip, once enough clean time is in.
    pub fn value(&self) -> Option<Duration> {
        if self.medians.len() < MIN_BUCKETS {
            return None;
        }
        let mut v: Vec<Duration> = self.medians.iter().copied().collect();
        v.sort();
        Some(v[((v.len() - 1) as f64 * PERCENTILE).round() as usize])
    }

    /// The round trip above which the path is inflated: the cap alone
    /// until a baseline is learned.
    pub fn threshold(&self, cap: Duration, rule: Rule) -> Duration {
        match self.value() {
            Some(b) => {
                let allowed = rule.delta.max(b.mul_f64(rule.factor - 1.0));
                cap.min(b + allowed)
            }
            None => cap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn at(s: i64) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(s)
    }

    fn ms_(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Feeds `secs` seconds of one sample of `rtt` each from `from`.
    fn feed(b: &mut Baseline, from: i64, secs: i64, rtt: Duration, clean: bool) {
        for s in from..from + secs {
            b.observe(at(s), [rtt], clean);
        }
    }

    #[test]
    fn the_cap_alone_until_thirty_seconds_of_clean_time() {
        let mut b = Baseline::default();
        assert_eq!(b.threshold(ms_(150), WAN), ms_(150));
        feed(&mut b, 0, 30, ms_(4), true);
        assert_eq!(b.value(), None, "the third bucket closes with the next second");
        feed(&mut b, 30, 1, ms_(4), true);
        assert_eq!(b.value(), Some(ms_(4)));
        assert_eq!(b.threshold(ms_(150), WAN), ms_(24), "4 ms + 20 ms");
    }

    #[test]
    fn the_rule_takes_the_larger_allowance_and_the_cap_still_holds() {
        let mut b = Baseline::default();
        feed(&mut b, 0, 41, ms_(80), true);
        assert_eq!(b.threshold(ms_(500), WAN), ms_(120), "1.5 x 80 ms");
        assert_eq!(b.threshold(ms_(100), WAN), ms_(100), "the cap");
        let mut lan = Baseline::default();
        feed(&mut lan, 0, 41, Duration::from_micros(300), true);
        assert_eq!(lan.threshold(ms_(50), LAN), Duration::from_micros(15_300));
        let mut slow_lan = Baseline::default();
        feed(&mut slow_lan, 0, 41, ms_(10), true);
        assert_eq!(slow_lan.threshold(ms_(50), LAN), ms_(30), "3 x 10 ms");
    }

    #[test]
    fn suspected_time_is_not_learned() {
        let mut b = Baseline::default();
        feed(&mut b, 0, 31, ms_(5), true);
        feed(&mut b, 31, 600, ms_(300), false);
        assert_eq!(b.value(), Some(ms_(5)));
    }

    #[test]
    fn a_low_percentile_ignores_some_busy_clean_minutes() {
        let mut b = Baseline::default();
        feed(&mut b, 0, 600, ms_(5), true);
        feed(&mut b, 600, 120, ms_(60), true);
        assert_eq!(b.value(), Some(ms_(5)));
    }

    #[test]
    fn half_a_day_suspected_learns_the_new_normal() {
        let mut b = Baseline::default();
        feed(&mut b, 0, 31, ms_(5), true);
        // One sample a minute is enough to keep buckets closing.
        for m in 0..(12 * 60 + 2) {
            for s in 0..3 {
                b.observe(at(31 + m * 60 + s), [ms_(90)], false);
            }
        }
        assert_eq!(b.value(), None, "the old baseline is dropped, the new one forming");
        let end = 31 + (12 * 60 + 2) * 60;
        for m in 0..4 {
            for s in 0..3 {
                b.observe(at(end + m * 11 + s), [ms_(90)], false);
            }
        }
        assert_eq!(b.value(), Some(ms_(90)));
    }

    #[test]
    fn sparse_buckets_do_not_count() {
        let mut b = Baseline::default();
        for s in 0..100 {
            let samples: Vec<Duration> = if s % 10 == 0 { vec![ms_(4)] } else { vec![] };
            b.observe(at(s), samples, true);
        }
        assert_eq!(b.value(), None, "one sample per bucket is not a median");
    }
}
