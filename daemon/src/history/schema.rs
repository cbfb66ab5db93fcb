//! Database schema and its migrations.
//!
//! `PRAGMA user_version` holds the number of migrations applied. Each
//! migration runs in its own transaction together with the version bump, so
//! a crash mid-upgrade leaves the previous, consistent version. A file with
//! a higher version than this build knows is refused rather than written
//! to, so a downgrade cannot silently corrupt a newer layout.
//!
//! To change the schema, append a migration; never edit a released one.

use rusqlite::Connection;

/// Times are Unix seconds (UTC) except `events.at_ms` (milliseconds).
/// Byte and rate columns are non-negative integers; cumulative cursors are
/// stored bit-for-bit as i64 so the full u64 range round-trips.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: usage history.
    "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    -- One row per OPD ever seen; the cursor is the last cumulative counter
    -- value recorded, so deltas survive restarts.
    CREATE TABLE opd (
        id             INTEGER PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        download_total INTEGER NOT NULL,
        upload_total   INTEGER NOT NULL,
        last_minute    INTEGER NOT NULL
    ) STRICT;

    -- start: UTC minute (minute_usage), local hour start (hour_usage),
    -- local day start (day_usage), all as Unix seconds.
    CREATE TABLE minute_usage (
        opd_id            INTEGER NOT NULL REFERENCES opd(id),
        start             INTEGER NOT NULL,
        download_bytes    INTEGER NOT NULL,
        upload_bytes      INTEGER NOT NULL,
        peak_download_bps INTEGER NOT NULL,
        peak_upload_bps   INTEGER NOT NULL,
        PRIMARY KEY (opd_id, start)
    ) STRICT, WITHOUT ROWID;
    -- Pruning deletes by age across all OPDs.
    CREATE INDEX minute_usage_start ON minute_usage(start);

    CREATE TABLE hour_usage (
        opd_id            INTEGER NOT NULL REFERENCES opd(id),
        start             INTEGER NOT NULL,
        download_bytes    INTEGER NOT NULL,
        upload_bytes      INTEGER NOT NULL,
        peak_download_bps INTEGER NOT NULL,
        peak_upload_bps   INTEGER NOT NULL,
        PRIMARY KEY (opd_id, start)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX hour_usage_start ON hour_usage(start);

    CREATE TABLE day_usage (
        opd_id            INTEGER NOT NULL REFERENCES opd(id),
        start             INTEGER NOT NULL,
        download_bytes    INTEGER NOT NULL,
        upload_bytes      INTEGER NOT NULL,
        peak_download_bps INTEGER NOT NULL,
        peak_upload_bps   INTEGER NOT NULL,
        PRIMARY KEY (opd_id, start)
    ) STRICT, WITHOUT ROWID;
    ",
    // 2: diagnosis state changes.
    "
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY,
        at_ms    INTEGER NOT NULL,
        opd      TEXT,            -- NULL for gateway-wide events
        state    TEXT NOT NULL,
        previous TEXT,
        evidence TEXT NOT NULL,   -- JSON
        message  TEXT NOT NULL
    ) STRICT;
    CREATE INDEX events_at ON events(at_ms);
    CREATE INDEX events_opd_at ON events(opd, at_ms);
    ",
    // 3: what the uplink delivered, per minute an estimate held
    // (history/delivered.rs says what a row holds).
    "
    CREATE TABLE delivered_minute (
        direction      TEXT NOT NULL CHECK (direction IN ('download', 'upload')),
        start          INTEGER NOT NULL,  -- UTC minute
        contracted_bps INTEGER NOT NULL,  -- contract in force at the last held second
        delivered_bps  INTEGER NOT NULL,  -- mean over the held seconds
        lowest_bps     INTEGER NOT NULL,
        seconds        INTEGER NOT NULL,  -- seconds an estimate held (medium or better)
        below_seconds  INTEGER NOT NULL,  -- of those, below 80% of the contract that second
        PRIMARY KEY (direction, start)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX delivered_minute_start ON delivered_minute(start);
    ",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// What [`migrate`] found.
pub(crate) enum Migration {
    /// Up to date (possibly after applying migrations).
    Current,
    /// The file is newer than this build.
    TooNew(i64),
}

/// Brings the schema up to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Migration> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Ok(Migration::TooNew(version));
    }
    for (done, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", done as i64 + 1)?;
        tx.commit()?;
    }
    Ok(Migration::Current)
}
