use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::TimeDelta;
use chrono_tz::{Asia, Australia, Europe};

use super::*;

/// A directory removed when the test ends.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "jatah-history-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn minutes(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

fn reading(opd: &str, down: u64, up: u64) -> CounterReading {
    CounterReading {
        opd: opd.to_owned(),
        download_bytes_total: down,
        upload_bytes_total: up,
        peak_download_bps: 0,
        peak_upload_bps: 0,
    }
}

fn peaked(opd: &str, down: u64, up: u64, peak_down: u64, peak_up: u64) -> CounterReading {
    CounterReading {
        peak_download_bps: peak_down,
        peak_upload_bps: peak_up,
        ..reading(opd, down, up)
    }
}

/// (start, download, upload, peak download, peak upload) of each point.
fn summary(points: &[UsagePoint]) -> Vec<(DateTime<Utc>, u64, u64, u64, u64)> {
    points
        .iter()
        .map(|p| {
            (
                p.start,
                p.download_bytes,
                p.upload_bytes,
                p.peak_download_bps,
                p.peak_upload_bps,
            )
        })
        .collect()
}

fn count(store: &HistoryStore, table: &str) -> i64 {
    store
        .conn()
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Records one OPD's minutes from 15:57 to 16:02 after `base`, with
/// per-minute deltas 100, 200, 400, 800, 1600 (download), a tenth of that
/// upload, and distinct peaks; the first minute only sets the cursor.
fn record_five_minutes(store: &mut HistoryStore, first: DateTime<Utc>) {
    let peaks = [0, 5_000, 7_000, 3_000, 9_000, 1_000];
    let mut down = 1_000_000;
    for (i, peak) in peaks.into_iter().enumerate() {
        if i > 0 {
            down += 100 << (i - 1);
        }
        let r = peaked("dinkes", down, down / 10, peak, peak / 2);
        store
            .record_minute(first + minutes(i as i64), &[r])
            .unwrap();
    }
}

#[test]
fn step_parses_and_names_the_allowed_values() {
    assert_eq!("1m".parse::<Step>(), Ok(Step::Minute));
    assert_eq!("1h".parse::<Step>(), Ok(Step::Hour));
    assert_eq!("1d".parse::<Step>(), Ok(Step::Day));
    let err = "5m".parse::<Step>().unwrap_err();
    assert!(err.contains("1m, 1h and 1d"), "{err}");
    assert_eq!(Step::Hour.as_str(), "1h");
    assert_eq!(serde_json::to_string(&Step::Day).unwrap(), "\"1d\"");
}

#[test]
fn makassar_rollups_across_local_midnight() {
    let dir = TempDir::new("wita");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    // 16:00 UTC is 00:00 WITA: 15:58 and 15:59 belong to 14 June local,
    // 16:00..16:02 to 15 June.
    record_five_minutes(&mut store, t("2025-06-14T15:57:00Z"));
    let now = t("2025-06-14T16:03:00Z");

    let hours = store
        .usage_at(
            "dinkes",
            t("2025-06-14T15:00:00Z"),
            t("2025-06-14T17:00:00Z"),
            Step::Hour,
            now,
        )
        .unwrap();
    assert_eq!(
        summary(&hours),
        [
            (t("2025-06-14T15:00:00Z"), 300, 30, 7_000, 3_500),
            (t("2025-06-14T16:00:00Z"), 2_800, 280, 9_000, 4_500),
        ]
    );

    let days = store
        .usage_at(
            "dinkes",
            t("2025-06-13T16:00:00Z"),
            t("2025-06-15T16:00:00Z"),
            Step::Day,
            now,
        )
        .unwrap();
    assert_eq!(
        summary(&days),
        [
            (t("2025-06-13T16:00:00Z"), 300, 30, 7_000, 3_500),
            (t("2025-06-14T16:00:00Z"), 2_800, 280, 9_000, 4_500),
        ]
    );

    let mins = store
        .usage_at(
            "dinkes",
            t("2025-06-14T15:57:00Z"),
            t("2025-06-14T16:03:00Z"),
            Step::Minute,
            now,
        )
        .unwrap();
    let downs: Vec<u64> = mins.iter().map(|p| p.download_bytes).collect();
    assert_eq!(downs, [0, 100, 200, 400, 800, 1_600]);

    let today = store.day_start(now);
    assert_eq!(today, t("2025-06-14T16:00:00Z"));
    assert_eq!(
        store.totals("dinkes", today, now).unwrap(),
        Totals {
            download_bytes: 2_800,
            upload_bytes: 280
        }
    );
    assert_eq!(
        store
            .totals("dinkes", store.month_start(now), now)
            .unwrap()
            .download_bytes,
        3_100
    );
    assert_eq!(store.month_start(now), t("2025-05-31T16:00:00Z"));
}

#[test]
fn kolkata_half_hour_offset_rollups() {
    let dir = TempDir::new("ist");
    let mut store = HistoryStore::open(&dir.0, Asia::Kolkata).unwrap();
    // IST is UTC+5:30: local midnight is 18:30 UTC, hours start at :30.
    record_five_minutes(&mut store, t("2025-06-14T18:27:00Z"));
    let now = t("2025-06-14T19:00:00Z");

    let hours = store
        .usage_at(
            "dinkes",
            t("2025-06-14T18:00:00Z"),
            t("2025-06-14T19:00:00Z"),
            Step::Hour,
            now,
        )
        .unwrap();
    assert_eq!(
        summary(&hours),
        [
            (t("2025-06-14T17:30:00Z"), 300, 30, 7_000, 3_500),
            (t("2025-06-14T18:30:00Z"), 2_800, 280, 9_000, 4_500),
        ]
    );
    let days = store
        .usage_at(
            "dinkes",
            t("2025-06-14T00:00:00Z"),
            t("2025-06-15T00:00:00Z"),
            Step::Day,
            now,
        )
        .unwrap();
    assert_eq!(
        summary(&days),
        [
            (t("2025-06-13T18:30:00Z"), 300, 30, 7_000, 3_500),
            (t("2025-06-14T18:30:00Z"), 2_800, 280, 9_000, 4_500),
        ]
    );
    assert_eq!(store.day_start(now), t("2025-06-14T18:30:00Z"));
}

#[test]
fn berlin_fall_back_keeps_both_2am_hours_and_a_25_hour_day() {
    let dir = TempDir::new("cet-fall");
    let mut store = HistoryStore::open(&dir.0, Europe::Berlin).unwrap();
    // 01:00 UTC on 26 Oct 2025: 03:00 CEST became 02:00 CET. 00:58 and
    // 00:59 UTC are 02:58/02:59 CEST; 01:00..01:02 UTC are 02:00..02:02 CET.
    record_five_minutes(&mut store, t("2025-10-26T00:57:00Z"));
    let now = t("2025-10-28T00:00:00Z");

    let hours = store
        .usage_at(
            "dinkes",
            t("2025-10-26T00:00:00Z"),
            t("2025-10-26T02:00:00Z"),
            Step::Hour,
            now,
        )
        .unwrap();
    assert_eq!(
        summary(&hours),
        [
            (t("2025-10-26T00:00:00Z"), 300, 30, 7_000, 3_500),
            (t("2025-10-26T01:00:00Z"), 2_800, 280, 9_000, 4_500),
        ]
    );

    let day = store.day_start(t("2025-10-26T12:00:00Z"));
    assert_eq!(day, t("2025-10-25T22:00:00Z"));
    let days = store
        .usage_at("dinkes", day, t("2025-10-27T23:00:00Z"), Step::Day, now)
        .unwrap();
    assert_eq!(
        summary(&days),
        [
            (t("2025-10-25T22:00:00Z"), 3_100, 310, 9_000, 4_500),
            (t("2025-10-26T23:00:00Z"), 0, 0, 0, 0),
        ]
    );
    let local_day_hours = store
        .usage_at("dinkes", day, t("2025-10-26T23:00:00Z"), Step::Hour, now)
        .unwrap();
    assert_eq!(local_day_hours.len(), 25);
}

#[test]
fn berlin_spring_forward_day_has_23_hourly_points() {
    let dir = TempDir::new("cet-spring");
    let mut store = HistoryStore::open(&dir.0, Europe::Berlin).unwrap();
    // 01:00 UTC on 30 Mar 2025: 02:00 CET became 03:00 CEST.
    record_five_minutes(&mut store, t("2025-03-30T00:57:00Z"));
    let now = t("2025-03-31T00:00:00Z");
    let day = store.day_start(t("2025-03-30T12:00:00Z"));
    assert_eq!(day, t("2025-03-29T23:00:00Z"));
    let hours = store
        .usage_at("dinkes", day, t("2025-03-30T22:00:00Z"), Step::Hour, now)
        .unwrap();
    assert_eq!(hours.len(), 23);
    assert_eq!(
        summary(&hours[1..3]),
        [
            (t("2025-03-30T00:00:00Z"), 300, 30, 7_000, 3_500), // 01:00 CET
            (t("2025-03-30T01:00:00Z"), 2_800, 280, 9_000, 4_500), // 03:00 CEST
        ]
    );
    assert_eq!(
        store
            .totals("dinkes", day, t("2025-03-30T22:00:00Z"))
            .unwrap()
            .download_bytes,
        3_100
    );
}

/// Small deterministic generator, so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// Totals and rollups agree with a brute-force sum of the recorded minutes,
/// for ranges cutting through hours, days and DST changes in several zones.
#[test]
fn totals_and_rollups_match_the_minutes_in_every_zone() {
    let zones = [
        Asia::Makassar,
        Asia::Kolkata,
        Asia::Kathmandu,
        Europe::Berlin,
        Australia::Lord_Howe,
    ];
    // Covers Berlin's and Lord Howe's October changes.
    let begin = t("2025-10-03T00:00:00Z");
    let end = t("2025-10-07T00:00:00Z");
    for tz in zones {
        let dir = TempDir::new("brute");
        let mut store = HistoryStore::open(&dir.0, tz).unwrap();
        let mut rng = Lcg(7);
        let mut truth = BTreeMap::new();
        let (mut down, mut up) = (0u64, 0u64);
        store
            .record_minute(begin, &[reading("bappeda", 0, 0)])
            .unwrap();
        let mut m = begin + minutes(1);
        while m < end {
            let (d, u) = (rng.next(1_000_000), rng.next(100_000));
            down += d;
            up += u;
            store
                .record_minute(m, &[reading("bappeda", down, up)])
                .unwrap();
            truth.insert(m, (d, u));
            m += minutes(1 + rng.next(17) as i64);
        }
        let brute = |a: DateTime<Utc>, b: DateTime<Utc>| {
            let (d, u) = truth
                .range(a..b)
                .fold((0, 0), |acc, (_, v)| (acc.0 + v.0, acc.1 + v.1));
            Totals {
                download_bytes: d,
                upload_bytes: u,
            }
        };
        let span = (end - begin).num_seconds() as u64;
        for _ in 0..200 {
            let a = begin + TimeDelta::seconds(rng.next(span) as i64);
            let b = a + TimeDelta::seconds(1 + rng.next(span) as i64);
            assert_eq!(
                store.totals("bappeda", a, b).unwrap(),
                brute(a, b),
                "{tz} [{a}, {b})"
            );
        }
        let whole = brute(begin, end);
        for step in [Step::Hour, Step::Day] {
            let points = store.usage_at("bappeda", begin, end, step, end).unwrap();
            let sum: u64 = points.iter().map(|p| p.download_bytes).sum();
            assert_eq!(sum, whole.download_bytes, "{tz} {step}");
            // Each point holds exactly the minutes of its step.
            for (i, p) in points.iter().enumerate() {
                let next = points.get(i + 1).map_or(end, |n| n.start);
                assert_eq!(
                    p.download_bytes,
                    brute(p.start, next).download_bytes,
                    "{tz} {step} {}",
                    p.start
                );
            }
        }
    }
}

#[test]
fn restart_keeps_history_and_attributes_downtime_to_the_next_minute() {
    let dir = TempDir::new("restart");
    let m0 = t("2025-06-14T02:00:00Z");
    {
        let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
        assert_eq!(store.last_minute().unwrap(), None);
        store
            .record_minute(m0, &[reading("dinkes", 1_000, 100)])
            .unwrap();
        store
            .record_minute(m0 + minutes(1), &[reading("dinkes", 1_500, 150)])
            .unwrap();
    }
    // Down for minutes 2..4; the kernel kept counting.
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    assert_eq!(store.last_minute().unwrap(), Some(m0 + minutes(1)));
    let m5 = m0 + minutes(5);
    store
        .record_minute(m5, &[reading("dinkes", 4_000, 400)])
        .unwrap();
    // The same minute again: nothing new, then only what is new.
    store
        .record_minute(m5, &[reading("dinkes", 4_000, 400)])
        .unwrap();
    store
        .record_minute(m5, &[reading("dinkes", 4_100, 410)])
        .unwrap();
    assert_eq!(store.last_minute().unwrap(), Some(m5));

    let now = m0 + minutes(6);
    let points = store
        .usage_at("dinkes", m0, now, Step::Minute, now)
        .unwrap();
    let downs: Vec<u64> = points.iter().map(|p| p.download_bytes).collect();
    assert_eq!(downs, [0, 500, 0, 0, 0, 2_600]);
    assert_eq!(
        store.totals("dinkes", m0, now).unwrap(),
        Totals {
            download_bytes: 3_100,
            upload_bytes: 310
        }
    );
    // The hourly and daily rollups carry the same total.
    for step in [Step::Hour, Step::Day] {
        let points = store.usage_at("dinkes", m0, now, step, now).unwrap();
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].download_bytes, 3_100, "{step}");
    }
}

#[test]
fn first_reading_is_zero_and_counter_reset_counts_the_new_value() {
    let dir = TempDir::new("reset");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2025-06-14T02:00:00Z");
    store
        .record_minute(m, &[reading("dinkes", 5_000_000, 9_000)])
        .unwrap();
    store
        .record_minute(m + minutes(1), &[reading("dinkes", 5_000_100, 9_010)])
        .unwrap();
    // Removed and re-added: the counters start over.
    store
        .record_minute(m + minutes(2), &[reading("dinkes", 300, 30)])
        .unwrap();
    store
        .record_minute(m + minutes(3), &[reading("dinkes", 400, 40)])
        .unwrap();
    // An OPD appearing later with a large counter starts at zero too.
    store
        .record_minute(m + minutes(3), &[reading("disdik", 7_000_000, 7_000_000)])
        .unwrap();

    let now = m + minutes(4);
    let points = store.usage_at("dinkes", m, now, Step::Minute, now).unwrap();
    let got: Vec<(u64, u64)> = points
        .iter()
        .map(|p| (p.download_bytes, p.upload_bytes))
        .collect();
    assert_eq!(got, [(0, 0), (100, 10), (300, 30), (100, 10)]);
    assert_eq!(store.totals("disdik", m, now).unwrap(), Totals::default());
    // Unknown OPD: zeros, one point per step.
    let unknown = store.usage_at("nope", m, now, Step::Minute, now).unwrap();
    assert_eq!(unknown.len(), 4);
    assert!(unknown.iter().all(|p| p.download_bytes == 0));
}

#[test]
fn prune_removes_old_minutes_but_rollups_still_answer() {
    let dir = TempDir::new("prune");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    // 14 June 2025 local (WITA) is [13 June 16:00Z, 14 June 16:00Z).
    let day = t("2025-06-13T16:00:00Z");
    let first = t("2025-06-14T01:00:00Z");
    let mut total = 0;
    for i in 0..120 {
        total += 1_000;
        store
            .record_minute(first + minutes(i), &[reading("dinkes", total, 0)])
            .unwrap();
    }
    // A recent minute, inside the retention at prune time.
    let recent = first + TimeDelta::days(10);
    store
        .record_minute(recent, &[reading("dinkes", total + 5, 0)])
        .unwrap();
    let expected = 119 * 1_000;

    let now = first + TimeDelta::days(36);
    let report = store.prune(now).unwrap();
    assert_eq!(
        report,
        PruneReport {
            minute_rows: 120,
            hour_rows: 0,
            delivered_rows: 0,
        }
    );
    assert_eq!(count(&store, "minute_usage"), 1);

    let err = store
        .usage_at("dinkes", first, first + minutes(60), Step::Minute, now)
        .unwrap_err();
    assert!(matches!(err, HistoryError::RetentionExceeded(_)), "{err}");
    assert_eq!(err.to_string(), "minute data is kept 35 days; use step=1h");
    assert!(err.is_client_error());

    let hours = store
        .usage_at("dinkes", first, first + minutes(120), Step::Hour, now)
        .unwrap();
    assert_eq!(
        hours.iter().map(|p| p.download_bytes).collect::<Vec<_>>(),
        [59_000, 60_000]
    );
    let days = store
        .usage_at("dinkes", day, day + TimeDelta::days(1), Step::Day, now)
        .unwrap();
    assert_eq!(days[0].download_bytes, expected);
    // Whole days and whole hours stay exact without their minutes.
    assert_eq!(
        store
            .totals("dinkes", day, day + TimeDelta::days(1))
            .unwrap()
            .download_bytes,
        expected
    );
    assert_eq!(
        store
            .totals("dinkes", first, first + minutes(120))
            .unwrap()
            .download_bytes,
        expected
    );

    // Two years on, the hours go too; the day stays forever.
    let later = recent + TimeDelta::days(HOUR_RETENTION_DAYS + 1);
    let report = store.prune(later).unwrap();
    assert_eq!(report.hour_rows, 3, "two hours on 14 June, one on 24 June");
    assert_eq!(report.minute_rows, 1);
    assert_eq!(count(&store, "hour_usage"), 0);
    assert_eq!(count(&store, "day_usage"), 2);
    let err = store
        .usage_at("dinkes", first, first + minutes(120), Step::Hour, later)
        .unwrap_err();
    assert!(matches!(err, HistoryError::RetentionExceeded(_)), "{err}");
    let days = store
        .usage_at("dinkes", day, day + TimeDelta::days(1), Step::Day, later)
        .unwrap();
    assert_eq!(days[0].download_bytes, expected);
}

#[test]
fn hourly_rows_are_kept_for_two_years() {
    let dir = TempDir::new("hours");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2024-02-29T04:00:00Z");
    store.record_minute(m, &[reading("dinkes", 0, 0)]).unwrap();
    // 730 days later (the leap day included) is still within two years.
    let report = store.prune(m + TimeDelta::days(730)).unwrap();
    assert_eq!(report.hour_rows, 0);
    assert_eq!(count(&store, "hour_usage"), 1);
    let report = store.prune(m + TimeDelta::days(732)).unwrap();
    assert_eq!(report.hour_rows, 1);
}

#[test]
fn not_writable_directory_is_reported_clearly() {
    let dir = TempDir::new("notdir");
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("plain-file");
    std::fs::write(&file, "x").unwrap();

    for bad in [
        file.join("history"),              // parent is a regular file
        file.clone(),                      // a file where the directory should be
        PathBuf::from("/proc/jatah-test"), // cannot create directories in /proc
    ] {
        let err = HistoryStore::open(&bad, Asia::Makassar).unwrap_err();
        assert!(
            matches!(&err, HistoryError::NotWritable { dir, .. } if *dir == bad),
            "{}: {err:?}",
            bad.display()
        );
        assert!(!err.is_client_error());
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!(
                "history directory {} is not writable",
                bad.display()
            )),
            "{msg}"
        );
    }
}

#[test]
fn bad_requests_are_client_errors() {
    let dir = TempDir::new("bad");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let now = t("2025-06-14T02:00:00Z");

    for (from, to) in [(now, now), (now, now - minutes(1))] {
        let err = store
            .usage_at("dinkes", from, to, Step::Hour, now)
            .unwrap_err();
        assert!(matches!(err, HistoryError::BadRange(_)), "{err}");
        assert!(err.is_client_error());
        assert!(matches!(
            store.totals("dinkes", from, to),
            Err(HistoryError::BadRange(_))
        ));
    }

    // 10,000 minutes is fine; one more is not.
    let from = now - minutes(10_000);
    assert_eq!(
        store
            .usage_at("dinkes", from, now, Step::Minute, now)
            .unwrap()
            .len(),
        10_000
    );
    let err = store
        .usage_at("dinkes", from - minutes(1), now, Step::Minute, now)
        .unwrap_err();
    assert!(
        matches!(err, HistoryError::TooManyPoints { limit: 10_000, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("more than 10000"), "{err}");
    assert!(err.is_client_error());
    let err = store
        .usage_at("dinkes", now - TimeDelta::days(500), now, Step::Hour, now)
        .unwrap_err();
    assert!(matches!(err, HistoryError::TooManyPoints { .. }), "{err}");

    let err = store
        .usage_at(
            "dinkes",
            now - TimeDelta::days(36),
            now - TimeDelta::days(34),
            Step::Minute,
            now,
        )
        .unwrap_err();
    assert!(matches!(err, HistoryError::RetentionExceeded(_)), "{err}");

    for unaligned in [t("2025-06-14T02:00:30Z"), t("2025-06-14T02:00:00.5Z")] {
        let err = store
            .record_minute(unaligned, &[reading("dinkes", 1, 1)])
            .unwrap_err();
        assert!(matches!(err, HistoryError::UnalignedMinute(_)), "{err}");
        assert!(err.is_client_error());
    }
    assert_eq!(count(&store, "opd"), 0, "nothing written by rejected calls");
}

#[test]
fn damaged_file_is_an_error_and_a_new_one_is_started_after_moving_it() {
    let dir = TempDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join(DB_FILE);
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = HistoryStore::open(&dir.0, Asia::Makassar).unwrap_err();
    assert!(matches!(err, HistoryError::Corrupt { .. }), "{err:?}");
    assert!(!err.is_client_error());
    assert!(err.to_string().contains("move it aside"), "{err}");

    std::fs::rename(&path, dir.0.join("history.sqlite.damaged")).unwrap();
    let store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    assert_eq!(store.last_minute().unwrap(), None);
}

#[test]
fn reopen_after_the_file_was_replaced() {
    let dir = TempDir::new("reopen");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2025-06-14T02:00:00Z");
    store
        .record_minute(m, &[reading("dinkes", 10, 10)])
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.0.join(format!("{DB_FILE}{suffix}")));
    }
    store.reopen().unwrap();
    assert_eq!(store.last_minute().unwrap(), None);
    store
        .record_minute(m + minutes(1), &[reading("dinkes", 20, 20)])
        .unwrap();
    assert_eq!(store.last_minute().unwrap(), Some(m + minutes(1)));
    assert!(dir.0.join(DB_FILE).exists());
}

#[test]
fn disk_full_loses_nothing_once_space_returns() {
    let dir = TempDir::new("full");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2025-06-14T02:00:00Z");
    store
        .record_minute(m, &[reading("dinkes", 1_000, 0)])
        .unwrap();
    // Simulate a full disk: the file may not grow beyond its current size.
    let conn = store.conn().unwrap();
    let pages: i64 = conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .unwrap();
    conn.pragma_update(None, "max_page_count", pages).unwrap();
    let mut readings = vec![reading("dinkes", 1_500, 0)];
    readings.extend((0..2_000).map(|i| reading(&format!("opd-{i}"), 1, 1)));
    let err = store.record_minute(m + minutes(1), &readings).unwrap_err();
    assert!(matches!(err, HistoryError::DiskFull { .. }), "{err:?}");
    assert!(!err.is_client_error());
    assert!(err.to_string().contains("is full"), "{err}");

    // Space is back (max_page_count is per connection).
    store.reopen().unwrap();
    store
        .record_minute(m + minutes(2), &[reading("dinkes", 1_700, 0)])
        .unwrap();
    let now = m + minutes(3);
    let downs: Vec<u64> = store
        .usage_at("dinkes", m, now, Step::Minute, now)
        .unwrap()
        .iter()
        .map(|p| p.download_bytes)
        .collect();
    assert_eq!(downs, [0, 0, 700]);
    assert_eq!(count(&store, "opd"), 1, "the failed minute left no trace");
}

#[test]
fn unavailable_after_a_failed_reopen_then_recovers() {
    let dir = TempDir::new("unavail");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let path = store.path().to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.0.join(format!("{DB_FILE}{suffix}")));
    }
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    assert!(matches!(store.reopen(), Err(HistoryError::Corrupt { .. })));
    let err = store.last_minute().unwrap_err();
    assert!(matches!(err, HistoryError::Unavailable { .. }), "{err}");
    assert!(matches!(
        store.record_minute(t("2025-06-14T02:00:00Z"), &[]),
        Err(HistoryError::Unavailable { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    store.reopen().unwrap();
    assert_eq!(store.last_minute().unwrap(), None);
}

#[test]
fn schema_is_versioned_and_upgraded_in_place() {
    let dir = TempDir::new("schema");
    std::fs::create_dir_all(&dir.0).unwrap();
    let path = dir.0.join(DB_FILE);
    // A database at version 1 (before events existed) with one cursor.
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO opd (name, download_total, upload_total, last_minute)
             VALUES ('dinkes', 1000, 0, 0)",
            [],
        )
        .unwrap();
    }
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let version: i64 = store
        .conn()
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(count(&store, "events"), 0);
    let m = t("2025-06-14T02:00:00Z");
    store
        .record_minute(m, &[reading("dinkes", 1_250, 0)])
        .unwrap();
    assert_eq!(
        store
            .totals("dinkes", m, m + minutes(1))
            .unwrap()
            .download_bytes,
        250,
        "the cursor survived the upgrade"
    );
    let mode: String = store
        .conn()
        .unwrap()
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(store);

    // A newer file is refused rather than written to.
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = HistoryStore::open(&dir.0, Asia::Makassar).unwrap_err();
    assert!(
        matches!(err, HistoryError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
}

#[test]
fn a_thousand_opds_in_one_minute() {
    let dir = TempDir::new("many");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2025-06-14T02:00:00Z");
    let batch = |k: u64| -> Vec<CounterReading> {
        (0..1_000u64)
            .map(|i| reading(&format!("opd-{i}"), k * (i + 1), k))
            .collect()
    };
    store.record_minute(m, &batch(1)).unwrap();
    store.record_minute(m + minutes(1), &batch(3)).unwrap();
    assert_eq!(count(&store, "minute_usage"), 2_000);
    assert_eq!(count(&store, "hour_usage"), 1_000);
    assert_eq!(count(&store, "day_usage"), 1_000);
    let total = store.totals("opd-999", m, m + minutes(2)).unwrap();
    assert_eq!(
        total,
        Totals {
            download_bytes: 2_000,
            upload_bytes: 2
        }
    );
}

#[test]
fn events_round_trip() {
    let dir = TempDir::new("events");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let at = t("2025-06-14T02:00:00.250Z");
    let fault = Event {
        at,
        opd: Some("dinkes".to_owned()),
        state: "local_fault".to_owned(),
        previous: Some("healthy".to_owned()),
        evidence: serde_json::json!({"probe_loss": 1.0, "link": "down"}),
        message: "dinkes router unreachable".to_owned(),
    };
    let upstream = Event {
        at: at + minutes(5),
        opd: None,
        state: "upstream_degraded".to_owned(),
        previous: None,
        evidence: serde_json::json!({"wan_rtt_ms": 180}),
        message: "uplink slow".to_owned(),
    };
    store.record_event(&upstream).unwrap();
    store.record_event(&fault).unwrap();

    let all = store.events(at, at + minutes(10), None).unwrap();
    assert_eq!(all, [fault.clone(), upstream.clone()]);
    // One OPD's events come with the gateway's, not with others'.
    assert_eq!(
        store.events(at, at + minutes(10), Some("dinkes")).unwrap(),
        [fault.clone(), upstream.clone()]
    );
    assert_eq!(
        store.events(at, at + minutes(10), Some("bappeda")).unwrap(),
        [upstream]
    );
    assert_eq!(
        store
            .events(at + TimeDelta::milliseconds(1), at + minutes(5), None)
            .unwrap(),
        []
    );
    assert!(matches!(
        store.events(at, at, None),
        Err(HistoryError::BadRange(_))
    ));
}

#[test]
fn an_opds_events_are_picked_in_the_query_so_others_never_fill_the_limit() {
    let dir = TempDir::new("events-limit");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let at = t("2025-06-14T02:00:00Z");
    let event = |ms: i64, opd: Option<&str>, state: &str| Event {
        at: at + TimeDelta::milliseconds(ms),
        opd: opd.map(str::to_owned),
        state: state.to_owned(),
        previous: None,
        evidence: serde_json::json!({}),
        message: String::new(),
    };
    // More of another OPD's events than one answer may hold, with dinkes'
    // and the gateway's among and after them.
    store.record_event(&event(0, Some("dinkes"), "local_fault")).unwrap();
    for i in 0..MAX_POINTS as i64 + 50 {
        store.record_event(&event(1 + i, Some("bappeda"), "saturated")).unwrap();
    }
    store.record_event(&event(20_000, None, "upstream_degraded")).unwrap();
    store.record_event(&event(20_001, Some("dinkes"), "healthy")).unwrap();

    let mine = store.events(at, at + minutes(1), Some("dinkes")).unwrap();
    let seen: Vec<(Option<&str>, &str)> = mine
        .iter()
        .map(|e| (e.opd.as_deref(), e.state.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (Some("dinkes"), "local_fault"),
            (None, "upstream_degraded"),
            (Some("dinkes"), "healthy"),
        ]
    );
    // All of them at once is over the limit, and says so.
    assert!(matches!(
        store.events(at, at + minutes(1), None),
        Err(HistoryError::TooManyPoints { .. })
    ));
}

#[test]
fn store_can_move_to_a_blocking_thread() {
    fn is_send<T: Send>() {}
    is_send::<HistoryStore>();
    is_send::<HistoryError>();
}
