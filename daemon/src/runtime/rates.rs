//! Current rates per OPD, from counter samples the daemon takes itself once
//! a second (not from Prometheus): the last 1 s, 10 s and 60 s, and the peak
//! 1-second rate of the current minute for the history.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

/// Samples kept per OPD: enough to span 60 s at one per second.
const KEEP: usize = 62;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    bytes: [u64; 2],
}

/// Rates in bits per second over three windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct WindowRates {
    pub last_1s_bps: u64,
    pub last_10s_bps: u64,
    pub last_60s_bps: u64,
}

#[derive(Debug, Default)]
struct Series {
    samples: VecDeque<Sample>,
    /// Highest 1-second rate (bits/s) per direction since `take_minute_peaks`.
    peak: [u64; 2],
}

/// Counter samples of every OPD.
#[derive(Debug, Default)]
pub struct RateTable {
    series: BTreeMap<String, Series>,
}

impl RateTable {
    /// Records cumulative byte counters (download, upload) of one OPD.
    pub fn record(&mut self, opd: &str, at: Instant, bytes: [u64; 2]) {
        let s = self.series.entry(opd.to_string()).or_default();
        if let Some(prev) = s.samples.back() {
            let dt = at.saturating_duration_since(prev.at).as_secs_f64();
            if dt > 0.0 {
                for ((peak, now), before) in s.peak.iter_mut().zip(bytes).zip(prev.bytes) {
                    *peak = (*peak).max(bits_per_second(now.saturating_sub(before), dt));
                }
            }
            // A counter that went down belongs to a new OPD in a reused slot:
            // start the series again rather than report a negative rate.
            if bytes[0] < prev.bytes[0] || bytes[1] < prev.bytes[1] {
                s.samples.clear();
                s.peak = [0, 0];
            }
        }
        s.samples.push_back(Sample { at, bytes });
        while s.samples.len() > KEEP {
            s.samples.pop_front();
        }
    }

    /// Forgets OPDs that are no longer in the policy.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.series.retain(|id, _| keep(id));
    }

    /// Rates of one direction (0 = download, 1 = upload) of an OPD.
    pub fn rates(&self, opd: &str, dir: usize) -> WindowRates {
        let Some(s) = self.series.get(opd) else {
            return WindowRates::default();
        };
        WindowRates {
            last_1s_bps: window_rate(&s.samples, dir, Duration::from_secs(1)),
            last_10s_bps: window_rate(&s.samples, dir, Duration::from_secs(10)),
            last_60s_bps: window_rate(&s.samples, dir, Duration::from_secs(60)),
        }
    }

    /// The peak 1-second rates (download, upload) since the last call, and
    /// resets them (called at each minute boundary).
    pub fn take_minute_peaks(&mut self) -> BTreeMap<String, [u64; 2]> {
        self.series
            .iter_mut()
            .map(|(id, s)| (id.clone(), std::mem::take(&mut s.peak)))
            .collect()
    }
}

fn bits_per_second(bytes: u64, secs: f64) -> u64 {
    (bytes as f64 * 8.0 / secs).round() as u64
}

/// Rate between the newest sample and the newest one at least `window`
/// older (or the oldest there is, while the series is younger than that).
fn window_rate(samples: &VecDeque<Sample>, dir: usize, window: Duration) -> u64 {
    let Some(last) = samples.back() else {
        return 0;
    };
    let Some(first) = samples
        .iter()
        .rev()
        .find(|s| last.at.saturating_duration_since(s.at) >= window)
        .or_else(|| samples.front())
    else {
        return 0;
    };
    let dt = last.at.saturating_duration_since(first.at).as_secs_f64();
    if dt <= 0.0 {
        return 0;
    }
    bits_per_second(last.bytes[dir].saturating_sub(first.bytes[dir]), dt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample a second at a steady 1 MB/s download, 100 kB/s upload.
    fn steady(table: &mut RateTable, t0: Instant, secs: u64) {
        for s in 0..=secs {
            table.record(
                "a",
                t0 + Duration::from_secs(s),
                [s * 1_000_000, s * 100_000],
            );
        }
    }

    #[test]
    fn steady_traffic_reads_the_same_in_every_window() {
        let mut t = RateTable::default();
        steady(&mut t, Instant::now(), 70);
        let r = t.rates("a", 0);
        assert_eq!(r.last_1s_bps, 8_000_000);
        assert_eq!(r.last_10s_bps, 8_000_000);
        assert_eq!(r.last_60s_bps, 8_000_000);
        assert_eq!(t.rates("a", 1).last_10s_bps, 800_000);
        assert_eq!(t.rates("unknown", 0), WindowRates::default());
    }

    #[test]
    fn a_burst_shows_in_the_short_window_and_is_diluted_in_the_long_one() {
        let mut t = RateTable::default();
        let t0 = Instant::now();
        for s in 0..=60u64 {
            t.record("a", t0 + Duration::from_secs(s), [0, 0]);
        }
        // 10 MB in the 61st second.
        t.record("a", t0 + Duration::from_secs(61), [10_000_000, 0]);
        let r = t.rates("a", 0);
        assert_eq!(r.last_1s_bps, 80_000_000);
        assert_eq!(r.last_10s_bps, 8_000_000);
        assert!(
            r.last_60s_bps < 1_400_000 && r.last_60s_bps > 1_300_000,
            "{r:?}"
        );
        assert_eq!(t.take_minute_peaks()["a"], [80_000_000, 0]);
        assert_eq!(
            t.take_minute_peaks()["a"],
            [0, 0],
            "peaks reset after being taken"
        );
    }

    #[test]
    fn a_counter_reset_never_gives_a_negative_or_huge_rate() {
        let mut t = RateTable::default();
        let t0 = Instant::now();
        steady(&mut t, t0, 5);
        t.record("a", t0 + Duration::from_secs(6), [10, 10]);
        t.record("a", t0 + Duration::from_secs(7), [1010, 10]);
        assert_eq!(t.rates("a", 0).last_1s_bps, 8_000);
    }
}
