//! The read side of the store: usage per step, totals and events over a
//! range, zero-filled where nothing was recorded.

use chrono::{DateTime, Datelike, SecondsFormat, TimeDelta, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::buckets::{self, Unit};
use super::{
    Event, HOUR_RETENTION_DAYS, HistoryError, HistoryStore, MAX_POINTS, MINUTE_RETENTION_DAYS,
    Step, Totals, UsagePoint,
};

impl HistoryStore {
    /// Usage of `opd` per `step`, for every step overlapping `[from, to)`,
    /// ascending. The first point is the step containing `from` (hours and
    /// days start on local boundaries). Steps without data are included
    /// with zeros, and an OPD never recorded gives all zeros.
    ///
    /// Errors: `from >= to`; `step=1m` reaching back more than
    /// [`MINUTE_RETENTION_DAYS`] (or `1h` more than [`HOUR_RETENTION_DAYS`]);
    /// more than [`MAX_POINTS`] points.
    pub fn usage(
        &self,
        opd: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Step,
    ) -> Result<Vec<UsagePoint>, HistoryError> {
        self.usage_at(opd, from, to, step, Utc::now())
    }

    /// [`HistoryStore::usage`] with retention judged relative to `now`.
    pub fn usage_at(
        &self,
        opd: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Step,
        now: DateTime<Utc>,
    ) -> Result<Vec<UsagePoint>, HistoryError> {
        check_range(from, to)?;
        let starts = self.steps(from, to, step, now)?;
        let (Some(&first), Some(&last)) = (starts.first(), starts.last()) else {
            return Ok(Vec::new());
        };
        let end = match step {
            Step::Minute => last + 60,
            Step::Hour => buckets::next_secs(self.tz, Unit::Hour, last),
            Step::Day => buckets::next_secs(self.tz, Unit::Day, last),
        };
        let mut points: Vec<UsagePoint> = starts
            .iter()
            .map(|&s| UsagePoint {
                start: buckets::utc(s),
                download_bytes: 0,
                upload_bytes: 0,
                peak_download_bps: 0,
                peak_upload_bps: 0,
            })
            .collect();
        let rows = self
            .rows(opd, table(step), first, end)
            .map_err(|e| self.classify(e))?;
        // Rows normally start exactly on a step; one that does not (the
        // timezone was changed since it was written) goes to the step it
        // falls in.
        let mut i = 0;
        for (start, row) in rows {
            while i + 1 < starts.len() && starts[i + 1] <= start {
                i += 1;
            }
            let p = &mut points[i];
            p.download_bytes = p.download_bytes.saturating_add(row.download_bytes);
            p.upload_bytes = p.upload_bytes.saturating_add(row.upload_bytes);
            p.peak_download_bps = p.peak_download_bps.max(row.peak_download_bps);
            p.peak_upload_bps = p.peak_upload_bps.max(row.peak_upload_bps);
        }
        Ok(points)
    }

    /// Step starts (Unix seconds) for a usage query.
    fn steps(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        step: Step,
        now: DateTime<Utc>,
    ) -> Result<Vec<i64>, HistoryError> {
        let too_many = || HistoryError::TooManyPoints {
            limit: MAX_POINTS,
            detail: format!(
                "at step={step} from {} to {}; narrow the range or use a coarser step",
                rfc3339(from),
                rfc3339(to)
            ),
        };
        let to_s = ceil_secs(to);
        let unit = match step {
            Step::Minute => {
                if from < now - TimeDelta::days(MINUTE_RETENTION_DAYS) {
                    return Err(HistoryError::RetentionExceeded(format!(
                        "minute data is kept {MINUTE_RETENTION_DAYS} days; use step=1h"
                    )));
                }
                let first = from.timestamp().div_euclid(60) * 60;
                let count = (to_s - first + 59) / 60;
                if count > MAX_POINTS as i64 {
                    return Err(too_many());
                }
                return Ok((0..count).map(|i| first + 60 * i).collect());
            }
            Step::Hour => {
                if from < now - TimeDelta::days(HOUR_RETENTION_DAYS) {
                    return Err(HistoryError::RetentionExceeded(
                        "hourly data is kept 2 years; use step=1d".to_owned(),
                    ));
                }
                Unit::Hour
            }
            Step::Day => Unit::Day,
        };
        let mut starts = Vec::new();
        let mut s = buckets::floor_secs(self.tz, unit, from.timestamp());
        while s < to_s {
            if starts.len() == MAX_POINTS {
                return Err(too_many());
            }
            starts.push(s);
            s = buckets::next_secs(self.tz, unit, s);
        }
        Ok(starts)
    }

    /// Rows of `table` for `opd` with `lo <= start < hi`, ascending.
    fn rows(
        &self,
        opd: &str,
        table: &str,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<(i64, UsagePoint)>, HistoryError> {
        let conn = self.conn()?;
        let Some(id) = opd_id(conn, opd)? else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT start, download_bytes, upload_bytes, peak_download_bps, peak_upload_bps
             FROM {table} WHERE opd_id = ?1 AND start >= ?2 AND start < ?3 ORDER BY start"
        ))?;
        let rows = stmt.query_map(params![id, lo, hi], |r| {
            let start: i64 = r.get(0)?;
            Ok((
                start,
                UsagePoint {
                    start: buckets::utc(start),
                    download_bytes: from_db(r.get(1)?),
                    upload_bytes: from_db(r.get(2)?),
                    peak_download_bps: from_db(r.get(3)?),
                    peak_upload_bps: from_db(r.get(4)?),
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Bytes of `opd` in the minutes starting in `[from, to)`.
    ///
    /// Whole local days come from the daily table, whole local hours from the
    /// hourly one and the remaining edges from minutes, so "this month" is
    /// still exact once its first minutes have been pruned. Edges older than
    /// the minute (or hour) retention count as zero.
    pub fn totals(
        &self,
        opd: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Totals, HistoryError> {
        check_range(from, to)?;
        self.totals_inner(opd, ceil_secs(from), ceil_secs(to))
            .map_err(|e| self.classify(e))
    }

    fn totals_inner(&self, opd: &str, a: i64, b: i64) -> Result<Totals, HistoryError> {
        let conn = self.conn()?;
        let Some(id) = opd_id(conn, opd)? else {
            return Ok(Totals::default());
        };
        let sum = |table: &str, lo: i64, hi: i64| -> Result<Totals, HistoryError> {
            if lo >= hi {
                return Ok(Totals::default());
            }
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT coalesce(sum(download_bytes), 0), coalesce(sum(upload_bytes), 0)
                 FROM {table} WHERE opd_id = ?1 AND start >= ?2 AND start < ?3"
            ))?;
            Ok(stmt.query_row(params![id, lo, hi], |r| {
                Ok(Totals {
                    download_bytes: from_db(r.get(0)?),
                    upload_bytes: from_db(r.get(1)?),
                })
            })?)
        };
        // [a, b) without whole days: whole hours in the middle, minutes at
        // the edges. Every day boundary is an hour boundary, so the pieces
        // tile the range exactly.
        let partial = |a: i64, b: i64| -> Result<Totals, HistoryError> {
            let h0 = buckets::ceil_secs(self.tz, Unit::Hour, a);
            let h1 = buckets::floor_secs(self.tz, Unit::Hour, b);
            if h0 < h1 {
                Ok(sum("hour_usage", h0, h1)?
                    .add(sum("minute_usage", a, h0)?)
                    .add(sum("minute_usage", h1, b)?))
            } else {
                sum("minute_usage", a, b)
            }
        };
        let d0 = buckets::ceil_secs(self.tz, Unit::Day, a);
        let d1 = buckets::floor_secs(self.tz, Unit::Day, b);
        if d0 < d1 {
            Ok(sum("day_usage", d0, d1)?
                .add(partial(a, d0)?)
                .add(partial(d1, b)?))
        } else {
            partial(a, b)
        }
    }

    /// Start of the local day containing `t`, in UTC.
    pub fn day_start(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        buckets::utc(buckets::floor_secs(self.tz, Unit::Day, t.timestamp()))
    }

    /// Start of the local month containing `t`, in UTC.
    pub fn month_start(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        buckets::utc(buckets::month_floor_secs(self.tz, t.timestamp()))
    }

    /// The latest minute recorded for any OPD, `None` on a new database.
    #[cfg(any(test, feature = "testkit"))]
    pub fn last_minute(&self) -> Result<Option<DateTime<Utc>>, HistoryError> {
        let result = (|| -> Result<Option<i64>, HistoryError> {
            Ok(self
                .conn()?
                .query_row("SELECT max(last_minute) FROM opd", [], |r| r.get(0))?)
        })();
        Ok(result.map_err(|e| self.classify(e))?.map(buckets::utc))
    }

    /// Events with `from <= at < to`, oldest first: every OPD's and the
    /// gateway's (`None`), or one OPD's and the gateway's (`Some(opd)`,
    /// what an `opd:` token may read). The OPD is picked in the query, so
    /// other OPDs' events never count towards the limit: more than
    /// [`MAX_POINTS`] of the events asked for is an error.
    pub fn events(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        opd: Option<&str>,
    ) -> Result<Vec<Event>, HistoryError> {
        check_range(from, to)?;
        let result = (|| -> Result<Vec<Event>, HistoryError> {
            let conn = self.conn()?;
            // Two statements rather than `?3 IS NULL OR ...`, so each can
            // use its index (`events_at`, `events_opd_at`); both take the
            // same parameters (?3, the OPD, is NULL in the first).
            let mut stmt = conn.prepare_cached(if opd.is_none() {
                "SELECT at_ms, opd, state, previous, evidence, message FROM events
                 WHERE at_ms >= ?1 AND at_ms < ?2 AND ?3 IS NULL
                 ORDER BY at_ms, id LIMIT ?4"
            } else {
                "SELECT at_ms, opd, state, previous, evidence, message FROM events
                 WHERE (opd = ?3 OR opd IS NULL) AND at_ms >= ?1 AND at_ms < ?2
                 ORDER BY at_ms, id LIMIT ?4"
            })?;
            let rows = stmt.query_map(
                params![
                    from.timestamp_millis(),
                    to.timestamp_millis(),
                    opd,
                    MAX_POINTS as i64 + 1
                ],
                |r| {
                    let evidence: String = r.get(4)?;
                    Ok(Event {
                        at: DateTime::from_timestamp_millis(r.get(0)?)
                            .unwrap_or(DateTime::<Utc>::MIN_UTC),
                        opd: r.get(1)?,
                        state: r.get(2)?,
                        previous: r.get(3)?,
                        // Written by record_event, so valid JSON; keep the
                        // text rather than fail if someone edited the file.
                        evidence: serde_json::from_str(&evidence)
                            .unwrap_or(serde_json::Value::String(evidence)),
                        message: r.get(5)?,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })();
        let events = result.map_err(|e| self.classify(e))?;
        if events.len() > MAX_POINTS {
            return Err(HistoryError::TooManyPoints {
                limit: MAX_POINTS,
                detail: format!(
                    "events from {} to {}; narrow the range",
                    rfc3339(from),
                    rfc3339(to)
                ),
            });
        }
        Ok(events)
    }
}

fn opd_id(conn: &Connection, opd: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM opd WHERE name = ?1")?
        .query_row(params![opd], |r| r.get(0))
        .optional()
}

fn table(step: Step) -> &'static str {
    match step {
        Step::Minute => "minute_usage",
        Step::Hour => "hour_usage",
        Step::Day => "day_usage",
    }
}

fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The smallest whole second not before `t`: a row starting at second `s`
/// lies in `[from, to)` exactly when `ceil(from) <= s < ceil(to)`.
fn ceil_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Rejects empty ranges, and times outside years 1970..=9999 where no data
/// can exist and the calendar arithmetic would only risk overflow.
fn check_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<(), HistoryError> {
    if from >= to {
        return Err(HistoryError::BadRange(format!(
            "`from` ({}) must be before `to` ({})",
            rfc3339(from),
            rfc3339(to)
        )));
    }
    for t in [from, to] {
        if !(1970..=9999).contains(&t.year()) {
            return Err(HistoryError::BadRange(format!(
                "{} is outside the years 1970 to 9999",
                rfc3339(t)
            )));
        }
    }
    Ok(())
}
