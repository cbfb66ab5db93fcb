//! Local-time hour and day buckets.
//!
//! Rollups follow the gateway's wall clock, so "a day" is a local day and
//! may be 23 or 25 hours long across a DST change. Buckets are defined by
//! what the local clock shows, not by fixed lengths:
//!
//! - an **hour bucket** is the set of instants that share the local date,
//!   the local hour *and* the UTC offset. Including the offset keeps the two
//!   "02:00" hours of a DST fall-back apart, and it makes a zone whose
//!   offset changes by 30 minutes (Australia/Lord_Howe) yield a short bucket
//!   instead of overlapping ones;
//! - a **day bucket** is the set of instants that share the local date. If
//!   local midnight does not exist (DST starting at 00:00, as in Chile) the
//!   day starts at the first instant that exists, e.g. 01:00.
//!
//! Every day boundary is also an hour boundary (a new date is a new hour),
//! which is what lets totals mix day, hour and minute rows exactly.
//!
//! All arithmetic is in whole seconds since the Unix epoch: zone transitions
//! happen on whole seconds, and the stored rows are keyed by seconds.

use chrono::{DateTime, NaiveDate, Offset, Timelike, Utc};
use chrono_tz::Tz;

/// The two local-time resolutions that are rolled up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Hour,
    Day,
}

impl Unit {
    /// Nominal length, used only as a first guess.
    fn nominal_secs(self) -> i64 {
        match self {
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
        }
    }
}

/// What identifies the bucket an instant falls in.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Hour(NaiveDate, u32, i32),
    Day(NaiveDate),
}

/// Converts seconds to a UTC instant, clamping to chrono's range so that
/// no input can make this panic.
pub(crate) fn utc(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(if secs < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

fn key(tz: Tz, unit: Unit, secs: i64) -> Key {
    let local = utc(secs).with_timezone(&tz);
    match unit {
        Unit::Hour => Key::Hour(
            local.date_naive(),
            local.hour(),
            local.offset().fix().local_minus_utc(),
        ),
        Unit::Day => Key::Day(local.date_naive()),
    }
}

/// Seconds elapsed since the bucket began, assuming the UTC offset did not
/// change within it (verified by the callers).
fn elapsed_guess(tz: Tz, unit: Unit, secs: i64) -> i64 {
    let local = utc(secs).with_timezone(&tz);
    match unit {
        Unit::Hour => i64::from(local.minute() * 60 + local.second()),
        Unit::Day => i64::from(local.num_seconds_from_midnight()),
    }
}

/// The smallest `x` in `[lo, hi]` for which `pred(x)` holds, given that
/// `pred` is false then true over that interval and `pred(hi)` holds.
fn first_true(mut lo: i64, mut hi: i64, pred: impl Fn(i64) -> bool) -> i64 {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

/// Start of the bucket containing `secs`.
pub(crate) fn floor_secs(tz: Tz, unit: Unit, secs: i64) -> i64 {
    let k = key(tz, unit, secs);
    let guess = secs - elapsed_guess(tz, unit, secs);
    if key(tz, unit, guess) != k {
        // The offset changed after the guess: the bucket began at that
        // transition, somewhere in (guess, secs].
        return first_true(guess + 1, secs, |x| key(tz, unit, x) == k);
    }
    if key(tz, unit, guess - 1) != k {
        return guess;
    }
    // The clock went back earlier in this bucket (a 25-hour day): it began
    // before the guess. Find an instant outside it, then the boundary.
    let mut outside = guess;
    for _ in 0..8 {
        outside -= 6 * 3_600;
        if key(tz, unit, outside) != k {
            return first_true(outside + 1, guess, |x| key(tz, unit, x) == k);
        }
    }
    guess
}

/// Start of the bucket after the one containing `secs`.
pub(crate) fn next_secs(tz: Tz, unit: Unit, secs: i64) -> i64 {
    let k = key(tz, unit, secs);
    let step = unit.nominal_secs();
    // Find some instant already outside the bucket; buckets are never
    // longer than a nominal one plus a few hours.
    let mut probe = secs + step;
    for _ in 0..8 {
        if key(tz, unit, probe) != k {
            break;
        }
        probe += step / 4;
    }
    // Usually the bucket holding `probe` starts right where ours ends.
    let start = floor_secs(tz, unit, probe);
    if start > secs && key(tz, unit, start - 1) == k {
        return start;
    }
    // A bucket shorter than nominal lies in between: search for the end.
    first_true(secs + 1, probe, |x| key(tz, unit, x) != k)
}

/// The first bucket boundary at or after `secs`.
pub(crate) fn ceil_secs(tz: Tz, unit: Unit, secs: i64) -> i64 {
    let start = floor_secs(tz, unit, secs);
    if start == secs {
        secs
    } else {
        next_secs(tz, unit, start)
    }
}

/// Start of the local month containing `secs`.
pub(crate) fn month_floor_secs(tz: Tz, secs: i64) -> i64 {
    let mut start = floor_secs(tz, Unit::Day, secs);
    // At most 30 steps back to the first of the month; the bound only
    // protects against a zone database that skips the 1st entirely.
    for _ in 0..32 {
        let date = utc(start).with_timezone(&tz).date_naive();
        if chrono::Datelike::day(&date) == 1 {
            break;
        }
        start = floor_secs(tz, Unit::Day, start - 1);
    }
    start
}

/// A local wall-clock time to UTC, the earliest instant if it is
/// ambiguous. For tests and for callers building ranges from local dates.
#[cfg(test)]
pub(crate) fn local(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    use chrono::TimeZone;
    tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Asia, Australia, Europe};

    fn t(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    fn hours_from(tz: Tz, start: &str, n: usize) -> Vec<i64> {
        let mut out = vec![floor_secs(tz, Unit::Hour, t(start))];
        while out.len() < n {
            out.push(next_secs(tz, Unit::Hour, *out.last().unwrap()));
        }
        out
    }

    #[test]
    fn makassar_days_start_at_16_utc() {
        let tz = Asia::Makassar;
        assert_eq!(
            floor_secs(tz, Unit::Day, t("2025-06-14T15:59:00Z")),
            t("2025-06-13T16:00:00Z")
        );
        assert_eq!(
            floor_secs(tz, Unit::Day, t("2025-06-14T16:00:00Z")),
            t("2025-06-14T16:00:00Z")
        );
        assert_eq!(
            next_secs(tz, Unit::Day, t("2025-06-14T16:00:00Z")),
            t("2025-06-15T16:00:00Z")
        );
        assert_eq!(
            ceil_secs(tz, Unit::Day, t("2025-06-14T16:00:01Z")),
            t("2025-06-15T16:00:00Z")
        );
    }

    #[test]
    fn kolkata_hours_start_at_half_past_utc() {
        let tz = Asia::Kolkata;
        assert_eq!(
            floor_secs(tz, Unit::Hour, t("2025-06-14T10:29:00Z")),
            t("2025-06-14T09:30:00Z")
        );
        assert_eq!(
            floor_secs(tz, Unit::Day, t("2025-06-14T18:29:00Z")),
            t("2025-06-13T18:30:00Z")
        );
        assert_eq!(
            hours_from(tz, "2025-06-14T10:00:00Z", 3),
            [
                t("2025-06-14T09:30:00Z"),
                t("2025-06-14T10:30:00Z"),
                t("2025-06-14T11:30:00Z")
            ]
        );
    }

    #[test]
    fn berlin_spring_forward_day_has_23_hours() {
        let tz = Europe::Berlin;
        // 2025-03-30 02:00 CET became 03:00 CEST at 01:00 UTC.
        let day = floor_secs(tz, Unit::Day, t("2025-03-30T12:00:00Z"));
        assert_eq!(day, t("2025-03-29T23:00:00Z"));
        assert_eq!(next_secs(tz, Unit::Day, day) - day, 23 * 3_600);
        assert_eq!(
            hours_from(tz, "2025-03-30T00:30:00Z", 3),
            [
                t("2025-03-30T00:00:00Z"), // 01:00 CET
                t("2025-03-30T01:00:00Z"), // 03:00 CEST
                t("2025-03-30T02:00:00Z"), // 04:00 CEST
            ]
        );
    }

    #[test]
    fn berlin_fall_back_day_has_25_hours_and_two_2am_hours() {
        let tz = Europe::Berlin;
        // 2025-10-26 03:00 CEST became 02:00 CET at 01:00 UTC.
        let day = floor_secs(tz, Unit::Day, t("2025-10-26T20:00:00Z"));
        assert_eq!(day, t("2025-10-25T22:00:00Z"));
        assert_eq!(next_secs(tz, Unit::Day, day) - day, 25 * 3_600);
        assert_eq!(
            hours_from(tz, "2025-10-26T00:10:00Z", 3),
            [
                t("2025-10-26T00:00:00Z"), // 02:00 CEST
                t("2025-10-26T01:00:00Z"), // 02:00 CET
                t("2025-10-26T02:00:00Z"), // 03:00 CET
            ]
        );
    }

    #[test]
    fn lord_howe_half_hour_dst_gives_short_buckets_not_overlaps() {
        let tz = Australia::Lord_Howe;
        // 2025-10-05 02:00 +10:30 became 02:30 +11 at 15:30 UTC (Oct 4).
        let hours = hours_from(tz, "2025-10-04T14:00:00Z", 4);
        assert_eq!(
            hours,
            [
                t("2025-10-04T13:30:00Z"), // 00:00 +10:30
                t("2025-10-04T14:30:00Z"), // 01:00 +10:30
                t("2025-10-04T15:30:00Z"), // 02:30 +11, a 30-minute hour
                t("2025-10-04T16:00:00Z"), // 03:00 +11
            ]
        );
        for w in hours.windows(2) {
            assert_eq!(floor_secs(tz, Unit::Hour, w[1] - 1), w[0]);
        }
    }

    #[test]
    fn santiago_day_without_midnight_starts_at_one() {
        let tz = America::Santiago;
        // 2025-09-07 00:00 -04 became 01:00 -03 (at 04:00 UTC).
        let day = floor_secs(tz, Unit::Day, t("2025-09-07T15:00:00Z"));
        assert_eq!(day, t("2025-09-07T04:00:00Z"));
        assert_eq!(
            next_secs(tz, Unit::Day, t("2025-09-06T12:00:00Z")),
            t("2025-09-07T04:00:00Z")
        );
        // 2025-04-06 00:00 -03 became 23:00 -04 on the 5th: a 25-hour day.
        let sat = floor_secs(tz, Unit::Day, t("2025-04-05T12:00:00Z"));
        assert_eq!(sat, t("2025-04-05T03:00:00Z"));
        assert_eq!(next_secs(tz, Unit::Day, sat) - sat, 25 * 3_600);
    }

    #[test]
    fn month_start_is_local() {
        let tz = Asia::Makassar;
        assert_eq!(
            month_floor_secs(tz, t("2025-07-31T15:59:00Z")),
            t("2025-06-30T16:00:00Z")
        );
        assert_eq!(
            month_floor_secs(tz, t("2025-07-31T16:00:00Z")),
            t("2025-07-31T16:00:00Z")
        );
        assert_eq!(
            utc(month_floor_secs(Europe::Berlin, t("2025-11-15T00:00:00Z"))),
            local(Europe::Berlin, 2025, 11, 1, 0, 0)
        );
    }
}
