//! A minute's delivered seconds, gathered in memory until the minute is
//! written (see `delivered.rs` for what a minute holds). Apart from the
//! store so the store's type can hold it without a module cycle.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};

/// A second counts as "below" when the estimate is under this share of the
/// contract in force.
pub const BELOW_RATIO: f64 = 0.8;
/// Minutes of seconds kept in memory while the store cannot write.
pub const MAX_PENDING_MINUTES: usize = 120;

/// The names of the two directions as stored and answered.
pub(crate) const DIRECTIONS: [&str; 2] = ["download", "upload"];

/// One second's estimate of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveredSecond {
    /// What the uplink delivers, bits per second.
    pub bps: u64,
    /// The contracted capacity in force that second, bits per second.
    pub contracted_bps: u64,
    /// When the estimate began (the start of the plateau it came from):
    /// its first second also counts the seconds since then, which passed
    /// while the estimate formed.
    pub since: Option<DateTime<Utc>>,
}

/// One direction's seconds of one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MinuteSum {
    seconds: u32,
    below_seconds: u32,
    sum_bps: u128,
    lowest_bps: u64,
    contracted_bps: u64,
}

impl MinuteSum {
    fn add(&mut self, s: DeliveredSecond) {
        if self.seconds == 0 || s.bps < self.lowest_bps {
            self.lowest_bps = s.bps;
        }
        self.seconds += 1;
        self.sum_bps += u128::from(s.bps);
        if (s.bps as f64) < BELOW_RATIO * s.contracted_bps as f64 {
            self.below_seconds += 1;
        }
        self.contracted_bps = s.contracted_bps;
    }

    fn mean_bps(&self) -> u64 {
        if self.seconds == 0 {
            0
        } else {
            u64::try_from(self.sum_bps / u128::from(self.seconds)).unwrap_or(u64::MAX)
        }
    }
}

/// Seconds not yet written, by UTC minute.
#[derive(Debug, Default)]
pub struct DeliveredSeconds {
    pending: BTreeMap<i64, [MinuteSum; 2]>,
    /// The last second noted per direction (Unix seconds).
    last: [Option<i64>; 2],
}

/// Seconds at most counted back to an estimate's start.
const MAX_BACKFILL_S: i64 = 120;

impl DeliveredSeconds {
    /// Adds the second at `at`; `None` where no estimate holds.
    pub fn note(&mut self, at: DateTime<Utc>, seconds: [Option<DeliveredSecond>; 2]) {
        if seconds.iter().all(Option::is_none) {
            return;
        }
        let now = at.timestamp();
        for (dir, s) in seconds.iter().enumerate() {
            let Some(s) = *s else {
                continue;
            };
            // The seconds between the estimate's start and its first
            // second here count too, once: they were short already.
            if let Some(since) = s.since {
                let mut from = since.timestamp().max(now - MAX_BACKFILL_S);
                if let Some(l) = self.last[dir] {
                    from = from.max(l + 1);
                }
                for t in from..now {
                    self.pending.entry(t.div_euclid(60) * 60).or_default()[dir].add(s);
                }
            }
            self.pending.entry(now.div_euclid(60) * 60).or_default()[dir].add(s);
            self.last[dir] = Some(now);
        }
        while self.pending.len() > MAX_PENDING_MINUTES {
            self.pending.pop_first();
        }
    }

    /// Writes every pending minute that starts at or before `up_to`
    /// (seconds) inside `tx`; returns the minutes written, to be forgotten
    /// once the transaction commits.
    pub(crate) fn write(&self, tx: &Transaction<'_>, up_to: i64) -> rusqlite::Result<Vec<i64>> {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO delivered_minute
               (direction, start, contracted_bps, delivered_bps, lowest_bps, seconds, below_seconds)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (direction, start) DO UPDATE SET
               contracted_bps = excluded.contracted_bps,
               delivered_bps = (delivered_bps * seconds + excluded.delivered_bps * excluded.seconds)
                               / (seconds + excluded.seconds),
               lowest_bps = min(lowest_bps, excluded.lowest_bps),
               seconds = seconds + excluded.seconds,
               below_seconds = below_seconds + excluded.below_seconds",
        )?;
        let mut written = Vec::new();
        for (&minute, sums) in self.pending.range(..=up_to) {
            for (dir, sum) in DIRECTIONS.iter().zip(sums) {
                if sum.seconds == 0 {
                    continue;
                }
                stmt.execute(params![
                    dir,
                    minute,
                    to_db(sum.contracted_bps),
                    to_db(sum.mean_bps()),
                    to_db(sum.lowest_bps),
                    sum.seconds,
                    sum.below_seconds,
                ])?;
            }
            written.push(minute);
        }
        Ok(written)
    }

    /// Forgets minutes written by a committed transaction.
    pub(crate) fn forget(&mut self, minutes: &[i64]) {
        for m in minutes {
            self.pending.remove(m);
        }
    }
}


/// Rates beyond i64 cannot occur; saturate rather than wrap.
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
