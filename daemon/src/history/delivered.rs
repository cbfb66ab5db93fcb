//! What the uplink delivered, minute by minute: the history behind "how
//! many hours this month did the ISP deliver less than 80% of the
//! contract?".
//!
//! **What a minute holds.** Each second the sampler hands the store the
//! delivered estimate of each direction while one holds at medium
//! confidence or better (see `diagnosis/capacity.rs`), with the contracted
//! capacity in force that second. A minute's row in `delivered_minute`
//! keeps, per direction:
//!
//! - `seconds`: how many of its seconds an estimate held;
//! - `delivered_bps`: the mean of the estimate over those seconds;
//! - `lowest_bps`: the lowest estimate of those seconds;
//! - `below_seconds`: how many of those seconds the estimate was below
//!   80% of the contract in force *that second*, so the count stays right
//!   across a policy change;
//! - `contracted_bps`: the contract in force at the minute's last held
//!   second.
//!
//! A minute without an estimate has no row: the uplink delivered what was
//! asked of it, or nothing showed that it did not. "Hours below 80%" is the
//! sum of `below_seconds` over 3,600. Rows are kept as long as hourly usage
//! ([`HOUR_RETENTION_DAYS`](super::HOUR_RETENTION_DAYS)): they exist only
//! while the uplink is short, so they stay few.
//!
//! Seconds are gathered in memory (`DeliveredSeconds`) and written with
//! the minute's usage in one transaction; a failed write keeps them for the
//! next minute (up to `MAX_PENDING_MINUTES`, in `seconds.rs`).

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::params;
use serde::Serialize;
use utoipa::ToSchema;

use super::buckets::{self, Unit};
use super::seconds::DIRECTIONS;
use super::{DeliveredSecond, HistoryError, HistoryStore};

/// The lowest delivered minute of a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LowestMinute {
    /// The minute's start (UTC).
    pub minute: DateTime<Utc>,
    /// The mean delivered over the minute's estimated seconds, bits/s.
    pub delivered_bps: u64,
    /// The contract in force that minute, bits/s.
    pub contracted_bps: u64,
}

/// One local day of one direction.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeliveredDay {
    /// The local date (gateway's timezone), `YYYY-MM-DD`.
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    /// The day's first instant (UTC).
    pub start: DateTime<Utc>,
    /// Hours the uplink delivered less than 80% of the contract.
    pub hours_below_80_percent: f64,
    /// Minutes in which a delivered estimate held (medium confidence or
    /// better) for at least one second.
    pub minutes_with_estimate: u64,
    /// The day's lowest delivered minute; null without an estimate.
    pub lowest: Option<LowestMinute>,
}

/// One direction over a period.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeliveredPeriod {
    /// Hours the uplink delivered less than 80% of the contract in force.
    pub hours_below_80_percent: f64,
    /// Seconds behind `hours_below_80_percent`.
    pub seconds_below_80_percent: u64,
    /// Minutes in which a delivered estimate held.
    pub minutes_with_estimate: u64,
    /// The lowest delivered minute; null without an estimate.
    pub lowest: Option<LowestMinute>,
    /// Every local day of the period, in order (zeros where nothing was short).
    pub days: Vec<DeliveredDay>,
}

/// Seconds as hours, to the hundredth.
fn hours(seconds: u64) -> f64 {
    (seconds as f64 / 36.0).round() / 100.0
}

fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl HistoryStore {
    /// Adds one second of delivered estimates (see [`DeliveredSeconds`]);
    /// written with the next [`HistoryStore::record_minute`] at or after
    /// the second's minute.
    pub fn note_delivered(&mut self, at: DateTime<Utc>, seconds: [Option<DeliveredSecond>; 2]) {
        self.delivered.note(at, seconds);
    }

    /// The local month (gateway's timezone) `year`-`month`: its first
    /// instant and the next month's, in UTC. `None` for a month chrono
    /// cannot represent.
    pub fn month_range(&self, year: i32, month: u32) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let (ny, nm) = if month == 12 {
            (year.checked_add(1)?, 1)
        } else {
            (year, month + 1)
        };
        // Noon UTC on the 1st is on the 1st or 2nd of that month in every
        // zone (offsets lie within -12 h and +14 h).
        let noon = |y: i32, m: u32| -> Option<i64> {
            Some(
                NaiveDate::from_ymd_opt(y, m, 1)?
                    .and_hms_opt(12, 0, 0)?
                    .and_utc()
                    .timestamp(),
            )
        };
        let from = buckets::month_floor_secs(self.tz, noon(year, month)?);
        let to = buckets::month_floor_secs(self.tz, noon(ny, nm)?);
        Some((buckets::utc(from), buckets::utc(to)))
    }

    /// What the uplink delivered in `[from, to)`, per direction
    /// (download, upload), with a breakdown by local day.
    pub fn delivered(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<[DeliveredPeriod; 2], HistoryError> {
        if from >= to {
            return Err(HistoryError::BadRange(format!(
                "from ({from}) must be before to ({to})"
            )));
        }
        let result = (|| -> Result<[DeliveredPeriod; 2], HistoryError> {
            let conn = self.conn()?;
            let mut stmt = conn.prepare_cached(
                "SELECT start, contracted_bps, delivered_bps, below_seconds
                 FROM delivered_minute
                 WHERE direction = ?1 AND start >= ?2 AND start < ?3
                 ORDER BY start",
            )?;
            let (a, b) = (from.timestamp(), to.timestamp());
            let mut out = Vec::with_capacity(2);
            for dir in DIRECTIONS {
                let rows = stmt
                    .query_map(params![dir, a, b], |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            from_db(r.get(1)?),
                            from_db(r.get(2)?),
                            from_db(r.get(3)?),
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                out.push(self.period(a, b, &rows));
            }
            let upload = out.pop().unwrap_or_else(|| self.period(a, b, &[]));
            let download = out.pop().unwrap_or_else(|| self.period(a, b, &[]));
            Ok([download, upload])
        })();
        result.map_err(|e| self.classify(e))
    }

    /// Sums minute rows `(start, contracted, delivered, below seconds)`,
    /// sorted by start, into a period of local days.
    fn period(&self, a: i64, b: i64, rows: &[(i64, u64, u64, u64)]) -> DeliveredPeriod {
        let lowest_of = |rows: &[(i64, u64, u64, u64)]| {
            rows.iter()
                .min_by_key(|r| (r.2, r.0))
                .map(|&(start, contracted, delivered, _)| LowestMinute {
                    minute: buckets::utc(start),
                    delivered_bps: delivered,
                    contracted_bps: contracted,
                })
        };
        let mut days = Vec::new();
        let mut day = buckets::floor_secs(self.tz, Unit::Day, a).max(a);
        // A month has at most 31 days; the bound only guards the loop.
        for _ in 0..400 {
            if day >= b {
                break;
            }
            let end = buckets::next_secs(self.tz, Unit::Day, day).min(b);
            let lo = rows.partition_point(|r| r.0 < day);
            let hi = rows.partition_point(|r| r.0 < end);
            let in_day = &rows[lo..hi];
            let below: u64 = in_day.iter().map(|r| r.3).sum();
            days.push(DeliveredDay {
                date: buckets::utc(day).with_timezone(&self.tz).date_naive(),
                start: buckets::utc(day),
                hours_below_80_percent: hours(below),
                minutes_with_estimate: in_day.len() as u64,
                lowest: lowest_of(in_day),
            });
            day = end;
        }
        let below: u64 = rows.iter().map(|r| r.3).sum();
        DeliveredPeriod {
            hours_below_80_percent: hours(below),
            seconds_below_80_percent: below,
            minutes_with_estimate: rows.len() as u64,
            lowest: lowest_of(rows),
            days,
        }
    }
}

#[cfg(test)]
mod tests;
