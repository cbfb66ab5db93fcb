//! Usage history: per-OPD byte volumes over time, in an embedded SQLite
//! database (`<data dir>/history.sqlite`, WAL mode).
//!
//! The daemon reads every OPD's cumulative byte counters from the BPF maps
//! once a minute and hands them to [`HistoryStore::record_minute`]. The
//! store turns them into per-minute volumes and keeps three resolutions:
//!
//! | table          | bucket               | kept                       |
//! |----------------|----------------------|----------------------------|
//! | `minute_usage` | UTC minute           | [`MINUTE_RETENTION_DAYS`]  |
//! | `hour_usage`   | local hour           | [`HOUR_RETENTION_DAYS`]    |
//! | `day_usage`    | local day            | forever                    |
//!
//! "Local" is the gateway's timezone; see `buckets.rs` for how hours and
//! days are cut across DST changes and half-hour offsets.
//!
//! **No byte lost, none counted twice.** The last cumulative value seen per
//! OPD (the *cursor*) is stored in the same transaction as the volumes it
//! produced. The kernel keeps counting while the daemon is down, so after a
//! restart the first recorded minute receives everything counted during the
//! downtime. If a write fails (disk full), neither cursor nor volumes move,
//! and the next successful minute receives the bytes instead.
//!
//! **Failures.** Every method returns errors instead of panicking, so the
//! caller can keep shaping traffic without history. After a storage failure
//! (disk full, damaged or replaced file) [`HistoryStore::reopen`] starts over
//! with a fresh connection.
//!
//! **Queries** return every step of the requested range, zero-filled where
//! nothing was recorded, so a CSV report has one line per step and a chart
//! has no gaps to interpolate across.

mod buckets;
mod schema;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use buckets::Unit;
pub use schema::SCHEMA_VERSION;

/// Default data directory.
pub const DEFAULT_DIR: &str = "/var/lib/jatah";
/// File name of the database inside the data directory.
pub const DB_FILE: &str = "history.sqlite";
/// Per-minute rows are kept this many days.
pub const MINUTE_RETENTION_DAYS: i64 = 35;
/// Hourly rows are kept this many days: two years, a leap day included.
pub const HOUR_RETENTION_DAYS: i64 = 731;
/// The most points one [`HistoryStore::usage`] (or events) query returns.
pub const MAX_POINTS: usize = 10_000;

/// Resolution of a usage query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Step {
    /// One UTC minute (`1m`).
    #[serde(rename = "1m")]
    Minute,
    /// One local hour (`1h`).
    #[serde(rename = "1h")]
    Hour,
    /// One local day (`1d`).
    #[serde(rename = "1d")]
    Day,
}

impl Step {
    /// The query-string spelling: `1m`, `1h` or `1d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Minute => "1m",
            Step::Hour => "1h",
            Step::Day => "1d",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Step {
    type Err = String;

    fn from_str(s: &str) -> Result<Step, String> {
        match s {
            "1m" => Ok(Step::Minute),
            "1h" => Ok(Step::Hour),
            "1d" => Ok(Step::Day),
            other => Err(format!(
                "unknown step {other:?}: allowed values are 1m, 1h and 1d"
            )),
        }
    }
}

/// One OPD's counters as read at the end of a minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterReading {
    /// OPD id from the policy.
    pub opd: String,
    /// Cumulative bytes Internet -> OPD since the counter was created.
    pub download_bytes_total: u64,
    /// Cumulative bytes OPD -> Internet since the counter was created.
    pub upload_bytes_total: u64,
    /// Highest 1-second download rate seen during the minute, bits/s.
    pub peak_download_bps: u64,
    /// Highest 1-second upload rate seen during the minute, bits/s.
    pub peak_upload_bps: u64,
}

/// Volume of one step of a usage query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsagePoint {
    /// Start of the step (UTC; local-time aligned for hours and days).
    pub start: DateTime<Utc>,
    /// Bytes Internet -> OPD during the step.
    pub download_bytes: u64,
    /// Bytes OPD -> Internet during the step.
    pub upload_bytes: u64,
    /// Highest 1-second download rate during the step, bits/s.
    pub peak_download_bps: u64,
    /// Highest 1-second upload rate during the step, bits/s.
    pub peak_upload_bps: u64,
}

/// Volume over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Bytes Internet -> OPD.
    pub download_bytes: u64,
    /// Bytes OPD -> Internet.
    pub upload_bytes: u64,
}

impl Totals {
    fn add(self, other: Totals) -> Totals {
        Totals {
            download_bytes: self.download_bytes.saturating_add(other.download_bytes),
            upload_bytes: self.upload_bytes.saturating_add(other.upload_bytes),
        }
    }
}

/// What [`HistoryStore::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Per-minute rows deleted.
    pub minute_rows: u64,
    /// Hourly rows deleted.
    pub hour_rows: u64,
}

/// A diagnosis state change (or another event worth keeping).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// When the new state began (stored with millisecond precision).
    pub at: DateTime<Utc>,
    /// The OPD concerned; `None` for gateway-wide events.
    pub opd: Option<String>,
    /// The new state, e.g. `local_fault`.
    pub state: String,
    /// The state before, if any.
    pub previous: Option<String>,
    /// The numbers behind the verdict.
    pub evidence: serde_json::Value,
    /// One line for humans.
    pub message: String,
}

/// Why a history operation failed.
///
/// [`HistoryError::is_client_error`] separates bad requests (HTTP 400)
/// from storage failures (HTTP 503).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The data directory cannot be created or written.
    #[error("history directory {} is not writable: {source}", dir.display())]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// The file system is full; nothing was recorded.
    #[error(
        "the disk holding {} is full: usage is not being recorded (no bytes are lost; \
         they are recorded once space is freed)",
        path.display()
    )]
    DiskFull {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The database file is damaged or is not a database.
    #[error(
        "history database {} is damaged ({source}); move it aside and the next reopen \
         starts a new history",
        path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The file was written by a newer jatah.
    #[error(
        "history database {} has schema version {found}, newer than the {supported} this \
         jatah understands; upgrade jatah or move the file aside",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Version this build writes.
        supported: i64,
    },
    /// The store has no open database (the last reopen failed).
    #[error("history database {} is not open (the last reopen failed)", path.display())]
    Unavailable {
        /// The database file.
        path: PathBuf,
    },
    /// Any other SQLite failure.
    #[error("history database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The requested time range is invalid.
    #[error("bad time range: {0}")]
    BadRange(String),
    /// The range reaches before the data kept at that resolution.
    #[error("{0}")]
    RetentionExceeded(String),
    /// The answer would have too many points.
    #[error("too many points: more than {limit} {detail}")]
    TooManyPoints {
        /// [`MAX_POINTS`].
        limit: usize,
        /// What was asked and what to do instead.
        detail: String,
    },
    /// `record_minute` was given a time that is not on a minute boundary.
    #[error("{} is not the start of a minute", .0.to_rfc3339_opts(SecondsFormat::AutoSi, true))]
    UnalignedMinute(DateTime<Utc>),
}

impl HistoryError {
    /// True for errors caused by the request (HTTP 400), false for storage
    /// failures (HTTP 503).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            HistoryError::BadRange(_)
                | HistoryError::RetentionExceeded(_)
                | HistoryError::TooManyPoints { .. }
                | HistoryError::UnalignedMinute(_)
        )
    }

    /// Gives the SQLite failures an admin can act on their own variant.
    fn classify(self, dir: &Path, path: &Path) -> HistoryError {
        let HistoryError::Sqlite(e) = self else {
            return self;
        };
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => HistoryError::DiskFull {
                path: path.to_owned(),
                source: e,
            },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => HistoryError::Corrupt {
                path: path.to_owned(),
                source: e,
            },
            Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen) => HistoryError::NotWritable {
                dir: dir.to_owned(),
                source: io::Error::other(e),
            },
            _ => HistoryError::Sqlite(e),
        }
    }
}

/// The usage history database.
///
/// Not `Sync`: share it behind a mutex and call it from blocking threads.
#[derive(Debug)]
pub struct HistoryStore {
    dir: PathBuf,
    path: PathBuf,
    tz: Tz,
    /// `None` only after a failed [`HistoryStore::reopen`].
    conn: Option<Connection>,
}

impl HistoryStore {
    /// Opens (creating if needed) `dir/history.sqlite`, upgrading its schema.
    /// `tz` decides where local hours and days begin.
    pub fn open(dir: &Path, tz: Tz) -> Result<HistoryStore, HistoryError> {
        let path = dir.join(DB_FILE);
        let conn = open_connection(dir, &path, tz)?;
        Ok(HistoryStore {
            dir: dir.to_owned(),
            path,
            tz,
            conn: Some(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The timezone hours and days are cut in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Closes the database and opens it again, e.g. after the disk was full
    /// or a damaged file was moved aside (a new one is then created).
    pub fn reopen(&mut self) -> Result<(), HistoryError> {
        // Close first: an old connection closing after the new one opened
        // could checkpoint into, or delete, a WAL file that is no longer its.
        self.conn = None;
        self.conn = Some(open_connection(&self.dir, &self.path, self.tz)?);
        Ok(())
    }

    fn conn(&self) -> Result<&Connection, HistoryError> {
        self.conn.as_ref().ok_or_else(|| HistoryError::Unavailable {
            path: self.path.clone(),
        })
    }

    fn classify(&self, e: HistoryError) -> HistoryError {
        e.classify(&self.dir, &self.path)
    }

    /// Records the minute starting at `minute` (UTC, on a minute boundary).
    ///
    /// Each reading's volume is its cumulative counters minus the last
    /// values the store saw for that OPD (kept in the database, so this
    /// survives restarts):
    /// - first reading ever for an OPD: 0 (it only sets the cursor);
    /// - a counter below the cursor was reset (the OPD was removed and
    ///   re-added): the volume is the new value;
    /// - recording the same minute again adds only what is new since the
    ///   previous call (nothing, if the counters did not move);
    /// - after downtime, the first minute recorded receives every byte the
    ///   kernel counted meanwhile.
    ///
    /// The minute, hourly and daily rows of all readings are written in one
    /// transaction: either all of them or, on error, none (the cursors do not
    /// move either, so nothing is lost).
    pub fn record_minute(
        &mut self,
        minute: DateTime<Utc>,
        readings: &[CounterReading],
    ) -> Result<(), HistoryError> {
        if minute.timestamp_subsec_nanos() != 0 || minute.timestamp().rem_euclid(60) != 0 {
            return Err(HistoryError::UnalignedMinute(minute));
        }
        let m = minute.timestamp();
        let starts = [
            m,
            buckets::floor_secs(self.tz, Unit::Hour, m),
            buckets::floor_secs(self.tz, Unit::Day, m),
        ];
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| HistoryError::Unavailable {
                path: self.path.clone(),
            })?;
        let result = record(conn, starts, readings);
        result.map_err(|e| self.classify(e.into()))
    }

    /// Deletes per-minute rows older than [`MINUTE_RETENTION_DAYS`] and
    /// hourly rows older than [`HOUR_RETENTION_DAYS`] before `now`. Daily
    /// rows are kept forever. Call it often (e.g. hourly) so each run
    /// deletes little.
    pub fn prune(&mut self, now: DateTime<Utc>) -> Result<PruneReport, HistoryError> {
        let minute_cutoff = (now - TimeDelta::days(MINUTE_RETENTION_DAYS)).timestamp();
        let hour_cutoff = (now - TimeDelta::days(HOUR_RETENTION_DAYS)).timestamp();
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| HistoryError::Unavailable {
                path: self.path.clone(),
            })?;
        let result = (|| -> rusqlite::Result<PruneReport> {
            let tx = conn.transaction()?;
            let minute_rows = tx.execute(
                "DELETE FROM minute_usage WHERE start < ?1",
                params![minute_cutoff],
            )?;
            let hour_rows = tx.execute(
                "DELETE FROM hour_usage WHERE start < ?1",
                params![hour_cutoff],
            )?;
            tx.commit()?;
            Ok(PruneReport {
                minute_rows: minute_rows as u64,
                hour_rows: hour_rows as u64,
            })
        })();
        result.map_err(|e| self.classify(e.into()))
    }

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
    pub fn last_minute(&self) -> Result<Option<DateTime<Utc>>, HistoryError> {
        let result = (|| -> Result<Option<i64>, HistoryError> {
            Ok(self
                .conn()?
                .query_row("SELECT max(last_minute) FROM opd", [], |r| r.get(0))?)
        })();
        Ok(result.map_err(|e| self.classify(e))?.map(buckets::utc))
    }

    /// Stores an event (kept forever; events are few).
    pub fn record_event(&mut self, event: &Event) -> Result<(), HistoryError> {
        let result = (|| -> Result<(), HistoryError> {
            self.conn()?
                .prepare_cached(
                    "INSERT INTO events (at_ms, opd, state, previous, evidence, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    event.at.timestamp_millis(),
                    event.opd,
                    event.state,
                    event.previous,
                    event.evidence.to_string(),
                    event.message,
                ])?;
            Ok(())
        })();
        result.map_err(|e| self.classify(e))
    }

    /// Events with `from <= at < to`, of one OPD or (`None`) of all,
    /// oldest first. More than [`MAX_POINTS`] is an error.
    pub fn events(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        opd: Option<&str>,
    ) -> Result<Vec<Event>, HistoryError> {
        check_range(from, to)?;
        let result = (|| -> Result<Vec<Event>, HistoryError> {
            let conn = self.conn()?;
            let mut stmt = conn.prepare_cached(
                "SELECT at_ms, opd, state, previous, evidence, message FROM events
                 WHERE at_ms >= ?1 AND at_ms < ?2 AND (?3 IS NULL OR opd = ?3)
                 ORDER BY at_ms, id LIMIT ?4",
            )?;
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

/// Creates the directory, checks it is writable, opens and prepares the
/// database.
fn open_connection(dir: &Path, path: &Path, tz: Tz) -> Result<Connection, HistoryError> {
    ensure_writable_dir(dir)?;
    let setup = || -> Result<Connection, HistoryError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        if conn.is_readonly("main")? {
            return Err(HistoryError::NotWritable {
                dir: dir.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{} is read-only", path.display()),
                ),
            });
        }
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Still usable, only slower and with readers blocking the writer.
            tracing::warn!(path = %path.display(), %mode, "file system does not support WAL");
        }
        // In WAL mode NORMAL loses at most the last commits on power loss,
        // never consistency; a lost minute just moves to the next one.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Keep the WAL from staying large after a big prune.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        if let schema::Migration::TooNew(found) = schema::migrate(&mut conn)? {
            return Err(HistoryError::NewerSchema {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        check_timezone(&conn, tz)?;
        Ok(conn)
    };
    setup().map_err(|e| e.classify(dir, path))
}

/// Remembers the zone the rollups are cut in and warns when it changes:
/// rows written before keep their old boundaries.
fn check_timezone(conn: &Connection, tz: Tz) -> rusqlite::Result<()> {
    let stored: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'timezone'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if stored.as_deref() != Some(tz.name()) {
        if let Some(old) = stored {
            tracing::warn!(
                old,
                new = tz.name(),
                "timezone changed: hourly and daily history recorded before keeps the old boundaries"
            );
        }
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('timezone', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![tz.name()],
        )?;
    }
    Ok(())
}

/// Creates `dir` and proves a file can be created in it, so a read-only or
/// misconfigured data directory is reported as such rather than as an
/// obscure SQLite error later.
fn ensure_writable_dir(dir: &Path) -> Result<(), HistoryError> {
    let not_writable = |source| HistoryError::NotWritable {
        dir: dir.to_owned(),
        source,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(not_writable(io::Error::new(
            io::ErrorKind::NotADirectory,
            "it exists and is not a directory",
        )));
    }
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    let probe = dir.join(".history-write-test");
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)
}

/// Writes one minute for all readings in a single transaction.
/// `starts` = minute, hour and day bucket starts.
fn record(
    conn: &mut Connection,
    starts: [i64; 3],
    readings: &[CounterReading],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut find =
            tx.prepare_cached("SELECT id, download_total, upload_total FROM opd WHERE name = ?1")?;
        let mut insert_opd = tx.prepare_cached(
            "INSERT INTO opd (name, download_total, upload_total, last_minute)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut update_opd = tx.prepare_cached(
            "UPDATE opd SET download_total = ?2, upload_total = ?3,
                            last_minute = max(last_minute, ?4)
             WHERE id = ?1",
        )?;
        let mut add = Vec::with_capacity(3);
        for table in ["minute_usage", "hour_usage", "day_usage"] {
            add.push(tx.prepare_cached(&format!(
                "INSERT INTO {table}
                   (opd_id, start, download_bytes, upload_bytes,
                    peak_download_bps, peak_upload_bps)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (opd_id, start) DO UPDATE SET
                   download_bytes = download_bytes + excluded.download_bytes,
                   upload_bytes = upload_bytes + excluded.upload_bytes,
                   peak_download_bps = max(peak_download_bps, excluded.peak_download_bps),
                   peak_upload_bps = max(peak_upload_bps, excluded.peak_upload_bps)"
            ))?);
        }
        for r in readings {
            // Cursors are stored bit-for-bit (`as`) so any u64 round-trips.
            let down_total = r.download_bytes_total as i64;
            let up_total = r.upload_bytes_total as i64;
            let cursor = find
                .query_row(params![r.opd], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)? as u64,
                        row.get::<_, i64>(2)? as u64,
                    ))
                })
                .optional()?;
            let (id, down, up) = match cursor {
                None => {
                    insert_opd.execute(params![r.opd, down_total, up_total, starts[0]])?;
                    (tx.last_insert_rowid(), 0, 0)
                }
                Some((id, down_seen, up_seen)) => {
                    update_opd.execute(params![id, down_total, up_total, starts[0]])?;
                    (
                        id,
                        delta(down_seen, r.download_bytes_total),
                        delta(up_seen, r.upload_bytes_total),
                    )
                }
            };
            for (stmt, start) in add.iter_mut().zip(starts) {
                stmt.execute(params![
                    id,
                    start,
                    to_db(down),
                    to_db(up),
                    to_db(r.peak_download_bps),
                    to_db(r.peak_upload_bps),
                ])?;
            }
        }
    }
    tx.commit()
}

/// Bytes since the cursor; a counter that went backwards was recreated
/// and everything it holds is new.
fn delta(seen: u64, now: u64) -> u64 {
    if now >= seen { now - seen } else { now }
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

/// Volumes beyond i64 (8 EiB) cannot occur; saturate rather than wrap.
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
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
