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
//!
//! **Delivered capacity.** Beside usage, the store keeps what the uplink
//! delivered in the minutes a delivered estimate held, with the contract
//! in force, for "how many hours this month did the ISP deliver less than
//! 80% of the contract?" (`delivered.rs` says what a minute holds).
//!
//! Layout: this file holds the types; `store.rs` opens, writes and prunes
//! the database, `queries.rs` reads it, `report.rs` sums a month for the
//! monthly report, `delivered.rs` answers the
//! delivered-capacity questions (`seconds.rs` gathers a minute's seconds),
//! `buckets.rs` cuts local hours and days and `schema.rs` creates and
//! upgrades the tables.

mod buckets;
mod delivered;
mod queries;
mod report;
mod schema;
mod seconds;
mod store;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use rusqlite::{Connection, ErrorCode};
use serde::{Deserialize, Serialize};

pub use delivered::DeliveredPeriod;
pub use report::{MonthlyReport, ReportPolicy, parse_month};
/// Monthly reports as text (Markdown, CSV).
pub mod report_text {
    pub use super::report::{Separator, csv, markdown};
}
pub use schema::SCHEMA_VERSION;
pub use seconds::{BELOW_RATIO, DeliveredSecond, DeliveredSeconds};

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

/// Volume of one step of a usage query, as the store returns it and the
/// API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsagePoint {
    /// Start of the step (UTC); steps of 1h and 1d are aligned to the
    /// gateway's local time.
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
    /// Delivered-capacity minutes deleted (kept as long as hourly rows).
    pub delivered_rows: u64,
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
    /// There is no history database where one was to be read.
    #[error(
        "there is no usage history at {}: give the --data-dir that `jatah run` uses",
        path.display()
    )]
    Missing {
        /// The database file looked for.
        path: PathBuf,
    },
    /// The file was written by an older jatah and not yet upgraded (a
    /// reader never upgrades it).
    #[error(
        "history database {} has schema version {found}, older than this jatah's; \
         start this jatah's daemon once (it upgrades the file), then read it again",
        path.display()
    )]
    OlderSchema {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
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
    /// Delivered seconds not yet written (`delivered.rs`).
    delivered: DeliveredSeconds,
}
