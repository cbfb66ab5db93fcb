//! The write side of the store: opening and reopening the database,
//! recording minutes and events, and pruning old rows.

use std::io;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use rusqlite::{Connection, OptionalExtension, params};

use super::buckets::{self, Unit};
use super::{
    CounterReading, DB_FILE, DeliveredSeconds, Event, HOUR_RETENTION_DAYS, HistoryError, HistoryStore,
    MINUTE_RETENTION_DAYS, PruneReport, SCHEMA_VERSION, schema,
};

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
            delivered: Default::default(),
        })
    }

    /// The database file.
    #[cfg(any(test, feature = "testkit"))]
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

    /// The connection, or the error of the last failed reopen.
    pub(super) fn conn(&self) -> Result<&Connection, HistoryError> {
        self.conn.as_ref().ok_or_else(|| HistoryError::Unavailable {
            path: self.path.clone(),
        })
    }

    /// Classifies a failure against this store's directory and file.
    pub(super) fn classify(&self, e: HistoryError) -> HistoryError {
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
        let result = record(conn, starts, readings, &self.delivered);
        match result {
            Ok(written) => {
                self.delivered.forget(&written);
                Ok(())
            }
            Err(e) => Err(self.classify(e.into())),
        }
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
            let delivered_rows = tx.execute(
                "DELETE FROM delivered_minute WHERE start < ?1",
                params![hour_cutoff],
            )?;
            tx.commit()?;
            Ok(PruneReport {
                minute_rows: minute_rows as u64,
                hour_rows: hour_rows as u64,
                delivered_rows: delivered_rows as u64,
            })
        })();
        result.map_err(|e| self.classify(e.into()))
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

/// Writes one minute for all readings, and the delivered seconds of it
/// and earlier minutes, in a single transaction. `starts` = minute, hour
/// and day bucket starts. Returns the delivered minutes written.
fn record(
    conn: &mut Connection,
    starts: [i64; 3],
    readings: &[CounterReading],
    delivered: &DeliveredSeconds,
) -> rusqlite::Result<Vec<i64>> {
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
    let written = delivered.write(&tx, starts[0])?;
    tx.commit()?;
    Ok(written)
}

/// Bytes since the cursor; a counter that went backwards was recreated
/// and everything it holds is new.
fn delta(seen: u64, now: u64) -> u64 {
    if now >= seen { now - seen } else { now }
}

/// Volumes beyond i64 (8 EiB) cannot occur; saturate rather than wrap.
fn to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
