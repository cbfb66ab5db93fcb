//! Monthly reports: per OPD, a local month's volume, peak and
//! 95th-percentile rates, time at the ceiling and time in each fault
//! state; for the uplink, what it delivered against the contract. Read
//! from the store alone (`jatah report` opens it read-only beside a
//! running daemon; the API does the same), with the month cut in the
//! gateway's timezone.
//!
//! **Definitions** (the README's "Monthly reports" repeats them):
//!
//! - *volume*: bytes in the month, from the daily rows (kept forever);
//! - *rate samples*: each recorded minute's mean rate (bytes x 8 / 60 s)
//!   while the month lies within the minute retention; else each local
//!   hour's mean rate while within the hourly retention; older months
//!   have daily rows only, and no percentile or ceiling figures. The
//!   report names the resolution it used ([`Resolution`]);
//! - *peak*: the highest 1-second rate of the month (kept at every
//!   resolution);
//! - *p95*: the 95th percentile of the rate samples, nearest rank: sorted
//!   ascending, the value at position ceil(0.95 x n);
//! - *hours at the ceiling*: samples whose mean rate was at least 95% of
//!   the ceiling in force at the sample's start, as the caller's policy
//!   (with its schedules) says; none without a policy;
//! - *hours in a state*: from the diagnosis events: a state lasts from its
//!   event to the OPD's next one (or the month's end, now, or the OPD's
//!   last recorded minute, whichever comes first); the state in force when
//!   the month began comes from the last event before it. A time jatah was
//!   stopped counts in the state recorded before the stop;
//! - *uplink*: hours the delivered estimate was below 80% of the contract
//!   in force that second, and the mean delivered rate over the seconds an
//!   estimate held (`delivered.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use utoipa::ToSchema;

use super::buckets::{self, Unit};
use super::{
    BELOW_RATIO, DB_FILE, HOUR_RETENTION_DAYS, HistoryError, HistoryStore, MINUTE_RETENTION_DAYS,
    SCHEMA_VERSION,
};

mod text;
pub use text::{Separator, csv, markdown};

/// A sample counts as at the ceiling at this share of the ceiling.
pub const CEILING_RATIO: f64 = 0.95;

/// The diagnosis states an OPD or the gateway is in (`diagnosis::verdict`
/// names them); other events (capacity changes) are not states.
const STATES: [&str; 7] = [
    "healthy",
    "idle",
    "saturated",
    "local_fault",
    "local_degraded",
    "upstream_degraded",
    "upstream_down",
];

/// Which rows gave the rate samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Per-minute rows (months within the last 35 days).
    Minute,
    /// Per-hour rows (months within the last 2 years).
    Hour,
    /// Daily rows only: no percentile or ceiling figures.
    Day,
}

impl Resolution {
    /// `minute`, `hour` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
        }
    }
}

/// One direction of one OPD over the month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct DirectionMonth {
    /// Bytes in the month.
    pub bytes: u64,
    /// Highest 1-second rate, bits/s.
    pub peak_bps: u64,
    /// 95th percentile of the rate samples, bits/s; null with daily rows
    /// only or without samples.
    pub p95_bps: Option<u64>,
    /// Hours whose samples were at >= 95% of the ceiling then in force;
    /// null without a policy or with daily rows only.
    pub hours_at_ceiling: Option<f64>,
}

/// Hours in each diagnosis state other than `healthy` and `idle`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct StateHours {
    pub saturated: f64,
    pub local_fault: f64,
    pub local_degraded: f64,
    pub upstream_degraded: f64,
    pub upstream_down: f64,
}

impl StateHours {
    /// The states in report order, with their hours.
    pub fn fields(&self) -> [(&'static str, f64); 5] {
        [
            ("saturated", self.saturated),
            ("local_fault", self.local_fault),
            ("local_degraded", self.local_degraded),
            ("upstream_degraded", self.upstream_degraded),
            ("upstream_down", self.upstream_down),
        ]
    }

    fn from_ms(ms: &BTreeMap<&str, i64>) -> StateHours {
        let h = |s: &str| hours_of_ms(ms.get(s).copied().unwrap_or(0));
        StateHours {
            saturated: h("saturated"),
            local_fault: h("local_fault"),
            local_degraded: h("local_degraded"),
            upstream_degraded: h("upstream_degraded"),
            upstream_down: h("upstream_down"),
        }
    }
}

/// One OPD's month.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OpdMonth {
    /// OPD id.
    pub opd: String,
    pub download: DirectionMonth,
    pub upload: DirectionMonth,
    /// Hours in each diagnosis state.
    pub state_hours: StateHours,
}

/// One direction of the uplink over the month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct UplinkDirection {
    /// The contracted capacity, bits/s: the caller's policy's, else the
    /// highest contract recorded with a delivered minute; null if neither.
    pub contracted_bps: Option<u64>,
    /// Hours the delivered estimate was below 80% of the contract in force.
    pub hours_below_80_percent: f64,
    /// Minutes in which a delivered estimate held.
    pub minutes_with_estimate: u64,
    /// Mean delivered rate over the seconds an estimate held, bits/s; null
    /// when none held (the uplink delivered what was asked of it).
    pub mean_delivered_bps: Option<u64>,
    /// The lowest delivered minute's mean, bits/s.
    pub lowest_delivered_bps: Option<u64>,
}

/// The uplink's month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct UplinkMonth {
    pub download: UplinkDirection,
    pub upload: UplinkDirection,
    /// Hours the gateway's own verdict was `upstream_degraded`.
    pub hours_upstream_degraded: f64,
    /// Hours the gateway's own verdict was `upstream_down`.
    pub hours_upstream_down: f64,
}

/// A month's report.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct MonthlyReport {
    /// `YYYY-MM` in the gateway's timezone.
    pub month: String,
    /// The timezone the month and its days are cut in (IANA name).
    pub timezone: String,
    /// The month's first instant (UTC).
    pub from: DateTime<Utc>,
    /// The next month's first instant (UTC), exclusive.
    pub to: DateTime<Utc>,
    /// The rows the rate samples came from.
    pub resolution: Resolution,
    /// Share of the ceiling at which a sample counts as at the ceiling.
    pub ceiling_ratio: f64,
    /// Share of the contract under which the uplink counts as short.
    pub below_ratio: f64,
    /// False when the store holds nothing for the month (all zeros).
    pub has_data: bool,
    /// Every OPD of the policy and every OPD with data in the month.
    pub opds: Vec<OpdMonth>,
    pub uplink: UplinkMonth,
}

/// The ceiling of an OPD at a Unix second, per direction (download,
/// upload), bits/s; None for an OPD the policy does not know.
pub type CeilingAt<'a> = Box<dyn Fn(&str, i64) -> Option<[u64; 2]> + 'a>;

/// What the report needs from the policy: OPDs to list even without data,
/// the ceiling in force at an instant, the contract.
pub struct ReportPolicy<'a> {
    /// OPD ids in policy order.
    pub opds: Vec<String>,
    /// The ceiling of an OPD at an instant.
    pub ceiling: CeilingAt<'a>,
    /// The contracted capacity (download, upload), bits/s.
    pub contract: [u64; 2],
}

/// Parses `YYYY-MM` (years 1970 to 9998).
pub fn parse_month(s: &str) -> Option<(i32, u32)> {
    let (y, m) = s.split_once('-')?;
    if y.len() != 4 || m.len() != 2 || !(y.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let (y, m) = (y.parse::<i32>().ok()?, m.parse::<u32>().ok()?);
    ((1970..=9998).contains(&y) && (1..=12).contains(&m)).then_some((y, m))
}

fn hours_of_ms(ms: i64) -> f64 {
    (ms.max(0) as f64 / 36_000.0).round() / 100.0
}

fn hours_of_secs(s: i64) -> f64 {
    (s.max(0) as f64 / 36.0).round() / 100.0
}

fn from_db(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// 95th percentile, nearest rank; `values` is sorted here.
pub(crate) fn p95(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() as f64 * 0.95).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// Milliseconds spent in each state within `[a, b)`, given the state in
/// force at `a` (if any) and the changes `(at_ms, state)` after it, sorted.
pub(crate) fn state_ms<'s>(
    before: Option<&'s str>,
    changes: &[(i64, &'s str)],
    a: i64,
    b: i64,
) -> BTreeMap<&'s str, i64> {
    let mut out = BTreeMap::new();
    let mut current = before.map(|s| (a, s));
    for &(at, state) in changes.iter().chain([(b, "")].iter()) {
        let at = at.clamp(a, b);
        if let Some((since, s)) = current {
            *out.entry(s).or_insert(0) += at - since;
        }
        current = Some((at, state));
    }
    out.remove("");
    out
}

impl HistoryStore {
    /// Opens `dir/history.sqlite` for reading only: nothing is created or
    /// upgraded, and a running daemon keeps writing (WAL readers do not
    /// block the writer). `tz`: the timezone to cut months in; None takes
    /// the one the daemon last recorded in the file.
    pub fn open_read_only(dir: &Path, tz: Option<Tz>) -> Result<HistoryStore, HistoryError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(HistoryError::Missing { path });
        }
        let open = || -> Result<(Connection, Tz), HistoryError> {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "query_only", true)?;
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Err(HistoryError::NewerSchema {
                    path: path.clone(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            if version < SCHEMA_VERSION {
                return Err(HistoryError::OlderSchema {
                    path: path.clone(),
                    found: version,
                });
            }
            let stored: Option<String> = conn
                .query_row("SELECT value FROM meta WHERE key = 'timezone'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            let tz = tz
                .or_else(|| stored.and_then(|s| s.parse::<Tz>().ok()))
                .unwrap_or(Tz::UTC);
            Ok((conn, tz))
        };
        let (conn, tz) = open().map_err(|e| e.classify(dir, &path))?;
        Ok(HistoryStore {
            dir: dir.to_owned(),
            path,
            tz,
            conn: Some(conn),
            delivered: Default::default(),
        })
    }

    /// The timezone the daemon last recorded in the file (it cuts hours
    /// and days in it), if any.
    pub fn recorded_timezone(&self) -> Option<String> {
        self.conn()
            .ok()?
            .query_row("SELECT value FROM meta WHERE key = 'timezone'", [], |r| {
                r.get(0)
            })
            .optional()
            .ok()
            .flatten()
    }

    /// The same database opened again, read-only, for a long read that
    /// must not hold up the daemon's writes.
    pub fn reader(&self) -> Result<HistoryStore, HistoryError> {
        HistoryStore::open_read_only(&self.dir, Some(self.tz))
    }

    /// The report of the local month `year`-`month`, with retention and
    /// "now" judged at `now`. `policy` adds OPDs without data, the
    /// ceilings and the contract.
    pub fn monthly_report(
        &self,
        year: i32,
        month: u32,
        policy: Option<&ReportPolicy<'_>>,
        now: DateTime<Utc>,
    ) -> Result<MonthlyReport, HistoryError> {
        let (from, to) = self
            .month_range(year, month)
            .ok_or_else(|| HistoryError::BadRange(format!("{year:04}-{month:02} is out of range")))?;
        let resolution = if from >= now - TimeDelta::days(MINUTE_RETENTION_DAYS) {
            Resolution::Minute
        } else if from >= now - TimeDelta::days(HOUR_RETENTION_DAYS) {
            Resolution::Hour
        } else {
            Resolution::Day
        };
        let result = (|| -> Result<MonthlyReport, HistoryError> {
            let conn = self.conn()?;
            let (a, b) = (from.timestamp(), to.timestamp());
            // Every OPD with a row in the month, by id in the store.
            let mut stmt = conn.prepare_cached(
                "SELECT opd.name, opd.id, opd.last_minute,
                        sum(d.download_bytes), sum(d.upload_bytes),
                        max(d.peak_download_bps), max(d.peak_upload_bps)
                 FROM day_usage d JOIN opd ON opd.id = d.opd_id
                 WHERE d.start >= ?1 AND d.start < ?2 GROUP BY opd.id",
            )?;
            let mut stored: BTreeMap<String, (i64, i64, [u64; 4])> = BTreeMap::new();
            let rows = stmt.query_map(params![a, b], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    [
                        from_db(r.get(3)?),
                        from_db(r.get(4)?),
                        from_db(r.get(5)?),
                        from_db(r.get(6)?),
                    ],
                ))
            })?;
            for row in rows {
                let (name, id, last, v) = row?;
                stored.insert(name, (id, last, v));
            }
            let has_data = !stored.is_empty();
            let mut names: Vec<String> = policy.map(|p| p.opds.clone()).unwrap_or_default();
            let listed: BTreeSet<String> = names.iter().cloned().collect();
            names.extend(stored.keys().filter(|n| !listed.contains(*n)).cloned());
            let end_ms = b.min(now.timestamp()).saturating_mul(1000);
            let mut opds = Vec::with_capacity(names.len());
            for name in names {
                let Some(&(id, last, v)) = stored.get(&name) else {
                    opds.push(OpdMonth {
                        opd: name,
                        download: DirectionMonth::default(),
                        upload: DirectionMonth::default(),
                        state_hours: StateHours::default(),
                    });
                    continue;
                };
                let ceiling = |at: i64| policy.and_then(|p| (p.ceiling)(&name, at));
                let [down, up] = self.rates(conn, id, a, b, resolution, &ceiling)?;
                let alive_ms = (last + 60).saturating_mul(1000);
                let ms = self.state_ms_of(conn, Some(&name), a * 1000, end_ms.min(alive_ms))?;
                opds.push(OpdMonth {
                    download: DirectionMonth {
                        bytes: v[0],
                        peak_bps: v[2],
                        ..down
                    },
                    upload: DirectionMonth {
                        bytes: v[1],
                        peak_bps: v[3],
                        ..up
                    },
                    state_hours: StateHours::from_ms(&ms),
                    opd: name,
                });
            }
            let uplink = self.uplink(conn, a, b, end_ms, policy.map(|p| p.contract))?;
            Ok(MonthlyReport {
                month: format!("{year:04}-{month:02}"),
                timezone: self.tz.name().to_string(),
                from,
                to,
                resolution,
                ceiling_ratio: CEILING_RATIO,
                below_ratio: BELOW_RATIO,
                has_data,
                opds,
                uplink,
            })
        })();
        result.map_err(|e| self.classify(e))
    }

    /// p95 and hours at the ceiling per direction from the month's minute
    /// or hour rows (peaks and bytes come from the daily rows).
    fn rates(
        &self,
        conn: &Connection,
        id: i64,
        a: i64,
        b: i64,
        resolution: Resolution,
        ceiling: &dyn Fn(i64) -> Option<[u64; 2]>,
    ) -> Result<[DirectionMonth; 2], HistoryError> {
        let table = match resolution {
            Resolution::Minute => "minute_usage",
            Resolution::Hour => "hour_usage",
            Resolution::Day => return Ok(Default::default()),
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT start, download_bytes, upload_bytes FROM {table}
             WHERE opd_id = ?1 AND start >= ?2 AND start < ?3 ORDER BY start"
        ))?;
        let rows = stmt
            .query_map(params![id, a, b], |r| {
                Ok((r.get::<_, i64>(0)?, from_db(r.get(1)?), from_db(r.get(2)?)))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut samples: [Vec<u64>; 2] = Default::default();
        let mut at_ceiling = [0i64; 2];
        let mut known = true;
        for &(start, down, up) in &rows {
            let secs = match resolution {
                Resolution::Minute => 60,
                _ => (buckets::next_secs(self.tz, Unit::Hour, start) - start).max(1),
            };
            let ceil = ceiling(start);
            known &= ceil.is_some();
            for (d, bytes) in [down, up].into_iter().enumerate() {
                let rate = bytes.saturating_mul(8) / secs as u64;
                samples[d].push(rate);
                if let Some(c) = ceil
                    && c[d] > 0
                    && rate as f64 >= CEILING_RATIO * c[d] as f64
                {
                    at_ceiling[d] += secs;
                }
            }
        }
        Ok([0, 1].map(|d| DirectionMonth {
            p95_bps: p95(&mut samples[d]),
            hours_at_ceiling: known.then(|| hours_of_secs(at_ceiling[d])),
            ..Default::default()
        }))
    }

    /// Milliseconds in each state of `opd` (None: the gateway) within
    /// `[a_ms, b_ms)`.
    fn state_ms_of(
        &self,
        conn: &Connection,
        opd: Option<&str>,
        a_ms: i64,
        b_ms: i64,
    ) -> Result<BTreeMap<&'static str, i64>, HistoryError> {
        if b_ms <= a_ms {
            return Ok(BTreeMap::new());
        }
        let in_states = STATES.map(|s| format!("'{s}'")).join(",");
        let before: Option<String> = conn
            .prepare_cached(&format!(
                "SELECT state FROM events WHERE opd IS ?1 AND at_ms < ?2
                 AND state IN ({in_states}) ORDER BY at_ms DESC, id DESC LIMIT 1"
            ))?
            .query_row(params![opd, a_ms], |r| r.get(0))
            .optional()?;
        let changes = conn
            .prepare_cached(&format!(
                "SELECT at_ms, state FROM events WHERE opd IS ?1 AND at_ms >= ?2
                 AND at_ms < ?3 AND state IN ({in_states}) ORDER BY at_ms, id"
            ))?
            .query_map(params![opd, a_ms, b_ms], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // Back to the static names (the query only returns those).
        let name = |s: &str| STATES.iter().copied().find(|n| *n == s);
        let changes: Vec<(i64, &'static str)> = changes
            .iter()
            .filter_map(|(at, s)| Some((*at, name(s)?)))
            .collect();
        Ok(state_ms(before.as_deref().and_then(name), &changes, a_ms, b_ms))
    }

    fn uplink(
        &self,
        conn: &Connection,
        a: i64,
        b: i64,
        end_ms: i64,
        contract: Option<[u64; 2]>,
    ) -> Result<UplinkMonth, HistoryError> {
        let mut stmt = conn.prepare_cached(
            "SELECT count(*), coalesce(sum(below_seconds), 0), coalesce(sum(seconds), 0),
                    coalesce(sum(delivered_bps * seconds), 0), min(delivered_bps),
                    max(contracted_bps)
             FROM delivered_minute WHERE direction = ?1 AND start >= ?2 AND start < ?3",
        )?;
        let mut dirs = Vec::with_capacity(2);
        for (d, dir) in ["download", "upload"].into_iter().enumerate() {
            let (minutes, below, seconds, weighted, lowest, contracted) =
                stmt.query_row(params![dir, a, b], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, f64>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                })?;
            dirs.push(UplinkDirection {
                contracted_bps: contract.map(|c| c[d]).or(contracted.map(from_db)),
                hours_below_80_percent: hours_of_secs(below),
                minutes_with_estimate: from_db(minutes),
                mean_delivered_bps: (seconds > 0).then(|| (weighted / seconds as f64).round() as u64),
                lowest_delivered_bps: lowest.map(from_db),
            });
        }
        let alive: Option<i64> = conn.query_row("SELECT max(last_minute) FROM opd", [], |r| r.get(0))?;
        let b_ms = alive.map_or(end_ms, |l| end_ms.min((l + 60).saturating_mul(1000)));
        let ms = self.state_ms_of(conn, None, a * 1000, b_ms)?;
        let up = dirs.pop().unwrap_or_default();
        let down = dirs.pop().unwrap_or_default();
        Ok(UplinkMonth {
            download: down,
            upload: up,
            hours_upstream_degraded: hours_of_ms(ms.get("upstream_degraded").copied().unwrap_or(0)),
            hours_upstream_down: hours_of_ms(ms.get("upstream_down").copied().unwrap_or(0)),
        })
    }
}

#[cfg(test)]
mod tests;
