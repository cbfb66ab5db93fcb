use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Asia;

use super::super::tests::{TempDir, t};
use super::super::{CounterReading, DeliveredSecond, Event, HistoryError, HistoryStore};
use super::*;

fn reading(opd: &str, down: u64, up: u64, peak_down: u64, peak_up: u64) -> CounterReading {
    CounterReading {
        opd: opd.into(),
        download_bytes_total: down,
        upload_bytes_total: up,
        peak_download_bps: peak_down,
        peak_upload_bps: peak_up,
    }
}

fn event(at: &str, opd: Option<&str>, state: &str) -> Event {
    Event {
        at: t(at),
        opd: opd.map(str::to_string),
        state: state.into(),
        previous: None,
        evidence: serde_json::json!({}),
        message: state.to_string(),
    }
}

/// dinkes: 40/10 Mbit/s ceilings; bappeda: 20/10; a 100/50 contract.
fn policy() -> ReportPolicy<'static> {
    ReportPolicy {
        opds: vec!["dinkes".into(), "bappeda".into()],
        ceiling: Box::new(|opd: &str, _at: i64| match opd {
            "dinkes" => Some([40_000_000, 10_000_000]),
            "bappeda" => Some([20_000_000, 10_000_000]),
            _ => None,
        }),
        contract: [100_000_000, 50_000_000],
    }
}

const M0: &str = "2026-11-10T00:00:00Z";

/// A known month written through the daemon's own write path: minute `i`
/// (1..=100) from M0 carries `i` Mbit/s down for dinkes, 9.5 Mbit/s up;
/// arsip (not in the policy) 1,000 bytes once; diagnosis events and two
/// minutes of a short uplink.
fn known_month(store: &mut HistoryStore) {
    let m0 = t(M0);
    let (mut down, mut up) = (0u64, 0u64);
    for i in 0..=100i64 {
        let at = m0 + TimeDelta::minutes(i);
        if i > 0 {
            down += i as u64 * 7_500_000;
            up += 71_250_000;
        }
        let s = |bps| Some(DeliveredSecond { bps, contracted_bps: 100_000_000, since: None });
        let delivered = match i {
            5 => Some(s(30_000_000)),
            6 => Some(s(90_000_000)),
            _ => None,
        };
        if let Some(d) = delivered {
            for sec in 0..60 {
                store.note_delivered(at + TimeDelta::seconds(sec), [d, None]);
            }
        }
        let arsip = if i == 0 { 0 } else { 1_000 };
        store
            .record_minute(
                at,
                &[
                    reading("dinkes", down, up, i as u64 * 1_100_000, 12_000_000),
                    reading("arsip", arsip, 0, 8_000, 0),
                ],
            )
            .unwrap();
    }
    for e in [
        // Before the month: in force when it begins (16:00 UTC, 31 Oct).
        event("2026-10-31T00:00:00Z", Some("dinkes"), "local_fault"),
        event("2026-11-01T16:00:00Z", Some("dinkes"), "healthy"),
        event("2026-11-10T01:00:00Z", Some("dinkes"), "saturated"),
        event("2026-11-10T01:30:00Z", Some("dinkes"), "healthy"),
        event("2026-11-05T00:00:00Z", None, "upstream_degraded"),
        // Not a state: does not end the one in force.
        event("2026-11-05T01:00:00Z", None, "capacity_adapted"),
        event("2026-11-05T02:15:00Z", None, "healthy"),
        // Another OPD's: not dinkes's.
        event("2026-11-06T00:00:00Z", Some("bappeda"), "upstream_down"),
    ] {
        store.record_event(&e).unwrap();
    }
}

#[test]
fn p95_is_the_nearest_rank() {
    let mut v: Vec<u64> = (1..=100).rev().collect();
    assert_eq!(p95(&mut v), Some(95));
    assert_eq!(p95(&mut [7]), Some(7));
    assert_eq!(p95(&mut []), None);
    let mut twenty: Vec<u64> = (1..=20).collect();
    assert_eq!(p95(&mut twenty), Some(19), "ceil(0.95 x 20) = 19th");
    let mut two = vec![10, 3];
    assert_eq!(p95(&mut two), Some(10));
}

#[test]
fn states_last_until_the_next_change_and_the_one_in_force_counts_from_the_start() {
    let ms = state_ms(
        Some("local_fault"),
        &[(1_000, "healthy"), (5_000, "upstream_down")],
        0,
        10_000,
    );
    assert_eq!(ms.get("local_fault"), Some(&1_000));
    assert_eq!(ms.get("healthy"), Some(&4_000));
    assert_eq!(ms.get("upstream_down"), Some(&5_000));
    assert!(state_ms(None, &[], 0, 10).is_empty());
}

#[test]
fn months_parse_as_yyyy_mm_only() {
    assert_eq!(parse_month("2026-11"), Some((2026, 11)));
    for bad in ["2026-13", "2026-00", "2026-1", "nov", "2026-11-01", ""] {
        assert_eq!(parse_month(bad), None, "{bad}");
    }
}

#[test]
fn a_minute_after_local_midnight_on_the_1st_belongs_to_the_next_month() {
    let dir = TempDir::new("report-boundary");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    // Cursors first, then 23:59 WITA on 30 November and 00:30 WITA on
    // 1 December (16:30 UTC on 30 November).
    let first = t("2026-11-30T15:00:00Z");
    store.record_minute(first, &[reading("dinkes", 0, 0, 0, 0)]).unwrap();
    let late = t("2026-11-30T15:59:00Z");
    store.record_minute(late, &[reading("dinkes", 100, 0, 0, 0)]).unwrap();
    let after = t("2026-11-30T16:30:00Z");
    store.record_minute(after, &[reading("dinkes", 350, 0, 0, 0)]).unwrap();
    let now = t("2026-12-02T00:00:00Z");
    let nov = store.monthly_report(2026, 11, None, now).unwrap();
    let dec = store.monthly_report(2026, 12, None, now).unwrap();
    assert_eq!(nov.from, t("2026-10-31T16:00:00Z"));
    assert_eq!(nov.to, t("2026-11-30T16:00:00Z"));
    assert_eq!(nov.timezone, "Asia/Makassar");
    assert_eq!(nov.opds[0].download.bytes, 100);
    assert_eq!(dec.opds[0].download.bytes, 250, "16:30 UTC is 1 December, 00:30 WITA");
    assert_eq!(dec.from, t("2026-11-30T16:00:00Z"));
    // In UTC the same minute would still be November.
    let utc_dir = TempDir::new("report-boundary-utc");
    let mut utc = HistoryStore::open(&utc_dir.0, chrono_tz::UTC).unwrap();
    for (at, total) in [(first, 0), (late, 100), (after, 350)] {
        utc.record_minute(at, &[reading("dinkes", total, 0, 0, 0)]).unwrap();
    }
    let nov = utc.monthly_report(2026, 11, None, now).unwrap();
    assert_eq!(nov.opds[0].download.bytes, 350);
}

#[test]
fn a_known_month_adds_up_exactly_from_minutes() {
    let dir = TempDir::new("report-known");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    known_month(&mut store);
    let now = t("2026-12-02T00:00:00Z");
    let p = policy();
    let r = store.monthly_report(2026, 11, Some(&p), now).unwrap();
    assert!(r.has_data);
    assert_eq!(r.resolution, Resolution::Minute);
    let ids: Vec<&str> = r.opds.iter().map(|o| o.opd.as_str()).collect();
    assert_eq!(ids, ["dinkes", "bappeda", "arsip"], "policy order, then others");
    let d = &r.opds[0];
    assert_eq!(d.download.bytes, 7_500_000 * 5050);
    assert_eq!(d.upload.bytes, 71_250_000 * 100);
    assert_eq!(d.download.peak_bps, 110_000_000);
    assert_eq!(d.upload.peak_bps, 12_000_000);
    // 101 minutes (the first only set the cursor): 0, 1, ..., 100 Mbit/s;
    // the 96th smallest is 95.
    assert_eq!(d.download.p95_bps, Some(95_000_000));
    assert_eq!(d.upload.p95_bps, Some(9_500_000));
    // 38 Mbit/s is 95% of 40: minutes 38..=100 (63 of them).
    assert_eq!(d.download.hours_at_ceiling, Some(1.05));
    // 9.5 Mbit/s is exactly 95% of 10: all 100 minutes.
    assert_eq!(d.upload.hours_at_ceiling, Some(1.67));
    assert_eq!(d.state_hours.local_fault, 24.0, "from the month's start");
    assert_eq!(d.state_hours.saturated, 0.5);
    assert_eq!(d.state_hours.upstream_down, 0.0, "bappeda's event is not dinkes's");
    let b = &r.opds[1];
    assert_eq!((b.download.bytes, b.download.p95_bps), (0, None));
    let a = &r.opds[2];
    assert_eq!(a.download.bytes, 1_000);
    assert_eq!(a.download.hours_at_ceiling, None, "no ceiling for an OPD the policy lacks");
    let u = &r.uplink;
    assert_eq!(u.download.contracted_bps, Some(100_000_000));
    assert_eq!(u.download.minutes_with_estimate, 2);
    assert_eq!(u.download.hours_below_80_percent, 0.02, "60 s");
    assert_eq!(u.download.mean_delivered_bps, Some(60_000_000));
    assert_eq!(u.download.lowest_delivered_bps, Some(30_000_000));
    assert_eq!(u.upload.contracted_bps, Some(50_000_000));
    assert_eq!(u.upload.mean_delivered_bps, None);
    assert_eq!(u.hours_upstream_degraded, 2.25, "capacity events are not states");

    let csv = text::csv(&r, Separator::Comma);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], text::CSV_COLUMNS.join(","));
    assert_eq!(
        lines[1],
        "2026-11,Asia/Makassar,minute,opd,dinkes,37875000000,7125000000,110000000,12000000,\
         95000000,9500000,1.05,1.67,0.50,24.00,0.00,0.00,0.00,,,,,"
    );
    assert_eq!(
        lines[3],
        "2026-11,Asia/Makassar,minute,opd,arsip,1000,0,8000,0,0,0,,,0.00,0.00,0.00,0.00,0.00,,,,,"
    );
    assert_eq!(
        lines[4],
        "2026-11,Asia/Makassar,minute,uplink,download,,,,,,,,,,,,2.25,0.00,100000000,0.02,2,60000000,30000000"
    );
    assert_eq!(lines.len(), 6);
    let semi = text::csv(&r, Separator::Semicolon);
    assert_eq!(
        semi.lines().nth(1).unwrap(),
        "2026-11;Asia/Makassar;minute;opd;dinkes;37875000000;7125000000;110000000;12000000;\
         95000000;9500000;1,05;1,67;0,50;24,00;0,00;0,00;0,00;;;;;"
    );
    let md = text::markdown(&r);
    assert!(md.contains("Rates from per-minute samples."), "{md}");
    assert!(md.contains("From 2026-11-01T00:00:00+08:00 to 2026-12-01T00:00:00+08:00"), "{md}");
    assert!(
        md.contains(
            "| dinkes | 37.88 GB | 7.12 GB | 37875000000 | 7125000000 | 110.0 Mbit/s | 12.0 Mbit/s | 95.0 Mbit/s | 9.5 Mbit/s | 1.05 | 1.67 |"
        ),
        "{md}"
    );
    assert!(md.contains("| arsip | 1.00 kB | 0 B | 1000 | 0 | 8.0 kbit/s | 0 bit/s | 0 bit/s | 0 bit/s | - | - |"), "{md}");
    assert!(md.contains("| dinkes | 0.50 | 24.00 | 0.00 | 0.00 | 0.00 |"), "{md}");
    assert!(
        md.contains("| download | 100.0 Mbit/s | 0.02 | 2 | 60.0 Mbit/s | 30.0 Mbit/s |"),
        "{md}"
    );
    assert!(md.contains("2.25 h upstream_degraded"), "{md}");
}

#[test]
fn older_months_fall_back_to_hours_then_to_days() {
    let dir = TempDir::new("report-hourly");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    known_month(&mut store);
    let p = policy();
    let r = store
        .monthly_report(2026, 11, Some(&p), t("2027-01-15T00:00:00Z"))
        .unwrap();
    assert_eq!(r.resolution, Resolution::Hour);
    let d = &r.opds[0];
    assert_eq!(d.download.bytes, 7_500_000 * 5050, "volumes do not depend on it");
    // Hours from 08:00 and 09:00 WITA: 1..=59 and 60..=100 Mbit/s minutes
    // (the cursor minute adds nothing): 29.5 and 54.67 Mbit/s.
    assert_eq!(d.download.p95_bps, Some(54_666_666));
    assert_eq!(d.download.hours_at_ceiling, Some(1.0));
    assert_eq!(d.download.peak_bps, 110_000_000);
    assert!(text::markdown(&r).contains("Rates from hourly samples"));
    let r = store
        .monthly_report(2026, 11, Some(&p), t("2029-01-15T00:00:00Z"))
        .unwrap();
    assert_eq!(r.resolution, Resolution::Day);
    assert_eq!(r.opds[0].download.p95_bps, None);
    assert_eq!(r.opds[0].download.hours_at_ceiling, None);
    assert_eq!(r.opds[0].download.peak_bps, 110_000_000);
}

#[test]
fn an_empty_month_says_so() {
    let dir = TempDir::new("report-empty");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    known_month(&mut store);
    let p = policy();
    let r = store
        .monthly_report(2026, 9, Some(&p), t("2026-12-02T00:00:00Z"))
        .unwrap();
    assert!(!r.has_data);
    assert!(r.opds.iter().all(|o| o.download.bytes == 0));
    let md = text::markdown(&r);
    assert!(md.contains("**No data**"), "{md}");
    assert!(!md.contains("| dinkes"), "{md}");
}

#[test]
fn the_read_only_open_reads_beside_the_writer_and_changes_nothing() {
    let dir = TempDir::new("report-readonly");
    // No database: an error, and none is created.
    let err = HistoryStore::open_read_only(&dir.0, None).unwrap_err();
    assert!(matches!(err, HistoryError::Missing { .. }), "{err}");
    assert!(!dir.0.join(super::super::DB_FILE).exists());

    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    known_month(&mut store);
    // The timezone comes from the file when none is given.
    let reader = HistoryStore::open_read_only(&dir.0, None).unwrap();
    assert_eq!(reader.timezone(), Asia::Makassar);
    let now = t("2026-12-02T00:00:00Z");
    let before = reader.monthly_report(2026, 11, None, now).unwrap();
    // The writer goes on while the reader is open.
    store
        .record_minute(t("2026-11-20T00:00:00Z"), &[reading("dinkes", u64::MAX / 4, 0, 0, 0)])
        .unwrap();
    let after = reader.monthly_report(2026, 11, None, now).unwrap();
    assert!(after.opds[1].download.bytes > before.opds[1].download.bytes);
    // Without a policy: OPDs with data only, no ceiling figures.
    let ids: Vec<&str> = before.opds.iter().map(|o| o.opd.as_str()).collect();
    assert_eq!(ids, ["arsip", "dinkes"]);
    assert_eq!(before.opds[1].download.hours_at_ceiling, None);
    assert_eq!(before.uplink.download.contracted_bps, Some(100_000_000));
    // A reader cannot write.
    let mut reader = reader;
    let at: DateTime<Utc> = t("2026-11-21T00:00:00Z");
    assert!(reader.record_minute(at, &[reading("dinkes", 1, 0, 0, 0)]).is_err());
    assert!(reader.record_event(&event("2026-11-21T00:00:00Z", None, "healthy")).is_err());
    drop(reader);
    let again = HistoryStore::open_read_only(&dir.0, None).unwrap();
    let unchanged = again.monthly_report(2026, 11, None, now).unwrap();
    assert_eq!(unchanged, after, "nothing was written through the reader");
    // With the daemon stopped (its connection closed, the WAL files gone)
    // the store still reads, and stays as it was.
    drop(again);
    drop(store);
    let wal = |suffix: &str| dir.0.join(format!("{}{suffix}", super::super::DB_FILE));
    assert!(!wal("-wal").exists() && !wal("-shm").exists());
    let stopped = HistoryStore::open_read_only(&dir.0, None).unwrap();
    assert_eq!(stopped.monthly_report(2026, 11, None, now).unwrap(), after);
    drop(stopped);
    // SQLite may leave an empty WAL beside it; the daemon opens and
    // writes as before.
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    store
        .record_minute(t("2026-11-22T00:00:00Z"), &[reading("dinkes", 1, 0, 0, 0)])
        .unwrap();
}
