use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Asia;
use rusqlite::Connection;

use super::super::tests::{TempDir, t};
use super::super::{DB_FILE, HistoryStore, SCHEMA_VERSION, schema};
use super::*;

fn second(bps: u64, contracted_bps: u64) -> Option<DeliveredSecond> {
    Some(DeliveredSecond {
        bps,
        contracted_bps,
        since: None,
    })
}

/// Notes `n` seconds from `from` with the same figures.
fn note(
    store: &mut HistoryStore,
    from: DateTime<Utc>,
    n: i64,
    s: [Option<DeliveredSecond>; 2],
) {
    for i in 0..n {
        store.note_delivered(from + TimeDelta::seconds(i), s);
    }
}

#[test]
fn a_minute_keeps_the_mean_the_lowest_and_the_seconds_below_80_percent() {
    let dir = TempDir::new("minute");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2026-11-03T02:00:00Z");
    // 20 s at 30 of 200 Mbit/s download, 20 s at 170 (above 80%), 20 s
    // without an estimate; upload never short.
    note(&mut store, m, 20, [second(30_000_000, 200_000_000), None]);
    note(
        &mut store,
        m + TimeDelta::seconds(20),
        20,
        [second(170_000_000, 200_000_000), None],
    );
    store.record_minute(m, &[]).unwrap();
    let [down, up] = store
        .delivered(m - TimeDelta::hours(1), m + TimeDelta::hours(1))
        .unwrap();
    assert_eq!(down.minutes_with_estimate, 1);
    assert_eq!(down.seconds_below_80_percent, 20);
    assert_eq!(down.hours_below_80_percent, 0.01);
    let lowest = down.lowest.unwrap();
    assert_eq!(lowest.minute, m);
    assert_eq!(lowest.delivered_bps, 100_000_000, "mean of the held seconds");
    assert_eq!(lowest.contracted_bps, 200_000_000);
    assert_eq!(up.minutes_with_estimate, 0);
    assert_eq!(up.lowest, None);
    let lowest_second: i64 = store
        .conn()
        .unwrap()
        .query_row(
            "SELECT lowest_bps FROM delivered_minute WHERE direction = 'download'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(lowest_second, 30_000_000);
}

#[test]
fn below_80_percent_follows_the_contract_in_force_each_second() {
    let dir = TempDir::new("policy");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2026-11-03T02:00:00Z");
    // 100 Mbit/s delivered: below 80% of 200, not below 80% of 120. The
    // contract changes from 200 to 120 after 30 s.
    note(&mut store, m, 30, [second(100_000_000, 200_000_000), None]);
    note(
        &mut store,
        m + TimeDelta::seconds(30),
        30,
        [second(100_000_000, 120_000_000), None],
    );
    store.record_minute(m, &[]).unwrap();
    let [down, _] = store.delivered(m, m + TimeDelta::minutes(1)).unwrap();
    assert_eq!(down.seconds_below_80_percent, 30);
    assert_eq!(down.lowest.unwrap().contracted_bps, 120_000_000);
}

#[test]
fn a_month_adds_up_hours_by_local_day_in_the_gateways_timezone() {
    let dir = TempDir::new("month");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let (from, to) = store.month_range(2026, 11).unwrap();
    // WITA is UTC+8: November starts at 16:00 UTC on 31 October.
    assert_eq!(from, t("2026-10-31T16:00:00Z"));
    assert_eq!(to, t("2026-11-30T16:00:00Z"));
    // 90 minutes short on 3 November from 23:00 WITA: 60 on the 3rd, 30
    // on the 4th (local); one short minute just before the month.
    let start = t("2026-11-03T15:00:00Z");
    for minute in 0..90 {
        let at = start + TimeDelta::minutes(minute);
        let bps = if minute == 70 { 20_000_000 } else { 60_000_000 };
        note(&mut store, at, 60, [None, second(bps, 100_000_000)]);
        store.record_minute(at, &[]).unwrap();
    }
    let before = from - TimeDelta::minutes(1);
    note(&mut store, before, 60, [None, second(1, 100_000_000)]);
    store.record_minute(before, &[]).unwrap();

    let [down, up] = store.delivered(from, to).unwrap();
    assert_eq!(down.days.len(), 30);
    assert!(down.days.iter().all(|d| d.minutes_with_estimate == 0));
    assert_eq!(up.minutes_with_estimate, 90);
    assert_eq!(up.hours_below_80_percent, 1.5);
    assert_eq!(up.days.len(), 30);
    let d3 = &up.days[2];
    assert_eq!(d3.date.to_string(), "2026-11-03");
    assert_eq!(d3.start, t("2026-11-02T16:00:00Z"));
    assert_eq!(d3.hours_below_80_percent, 1.0);
    assert_eq!(d3.minutes_with_estimate, 60);
    let d4 = &up.days[3];
    assert_eq!(d4.hours_below_80_percent, 0.5);
    let lowest = up.lowest.clone().unwrap();
    assert_eq!(lowest.delivered_bps, 20_000_000);
    assert_eq!(lowest.minute, start + TimeDelta::minutes(70));
    assert_eq!(d4.lowest, up.lowest, "the lowest minute fell on the 4th");
    assert_eq!(
        up.days.iter().map(|d| d.minutes_with_estimate).sum::<u64>(),
        90
    );
    assert_eq!(store.month_range(2026, 12).unwrap().1, t("2026-12-31T16:00:00Z"));
}

#[test]
fn seconds_wait_for_the_next_minute_while_the_store_cannot_write() {
    let dir = TempDir::new("pending");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2026-11-03T02:00:00Z");
    note(&mut store, m, 60, [second(10, 100), None]);
    // Seconds of a later minute are not written early.
    note(&mut store, m + TimeDelta::minutes(1), 5, [second(10, 100), None]);
    store.record_minute(m, &[]).unwrap();
    let [down, _] = store.delivered(m, m + TimeDelta::minutes(5)).unwrap();
    assert_eq!(down.seconds_below_80_percent, 60);
    // A failed write keeps them: drop the table's rows' home for a moment.
    store
        .conn()
        .unwrap()
        .execute_batch("ALTER TABLE delivered_minute RENAME TO moved")
        .unwrap();
    assert!(store.record_minute(m + TimeDelta::minutes(1), &[]).is_err());
    store
        .conn()
        .unwrap()
        .execute_batch("ALTER TABLE moved RENAME TO delivered_minute")
        .unwrap();
    store.record_minute(m + TimeDelta::minutes(2), &[]).unwrap();
    let [down, _] = store.delivered(m, m + TimeDelta::minutes(5)).unwrap();
    assert_eq!(down.seconds_below_80_percent, 65);
    assert_eq!(down.minutes_with_estimate, 2);
}

#[test]
fn a_store_of_the_previous_schema_opens_and_gains_the_table() {
    let dir = TempDir::new("upgrade");
    std::fs::create_dir_all(&dir.0).unwrap();
    {
        let conn = Connection::open(dir.0.join(DB_FILE)).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.execute_batch(schema::MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
    }
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let version: i64 = store
        .conn()
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let m = t("2026-11-03T02:00:00Z");
    note(&mut store, m, 3, [second(1, 100), second(2, 100)]);
    store.record_minute(m, &[]).unwrap();
    let [down, up] = store.delivered(m, m + TimeDelta::minutes(1)).unwrap();
    assert_eq!((down.seconds_below_80_percent, up.seconds_below_80_percent), (3, 3));
}

#[test]
fn delivered_minutes_are_pruned_with_the_hourly_rows() {
    let dir = TempDir::new("prune");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2024-01-01T00:00:00Z");
    note(&mut store, m, 1, [second(1, 100), None]);
    store.record_minute(m, &[]).unwrap();
    let report = store.prune(m + TimeDelta::days(700)).unwrap();
    assert_eq!(report.delivered_rows, 0);
    let report = store.prune(m + TimeDelta::days(800)).unwrap();
    assert_eq!(report.delivered_rows, 1);
}

#[test]
fn an_empty_range_is_a_client_error() {
    let dir = TempDir::new("range");
    let store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2026-11-03T02:00:00Z");
    let err = store.delivered(m, m).unwrap_err();
    assert!(err.is_client_error(), "{err}");
}

#[test]
fn the_seconds_an_estimate_took_to_form_count_once() {
    let dir = TempDir::new("since");
    let mut store = HistoryStore::open(&dir.0, Asia::Makassar).unwrap();
    let m = t("2026-11-05T02:00:00Z");
    // The estimate holds from 02:00:25 on, but began at 02:00:10.
    let s = [
        Some(DeliveredSecond {
            bps: 12_000_000,
            contracted_bps: 40_000_000,
            since: Some(m + TimeDelta::seconds(10)),
        }),
        None,
    ];
    note(&mut store, m + TimeDelta::seconds(25), 35, s);
    store.record_minute(m, &[]).unwrap();
    let [down, _] = store
        .delivered(m - TimeDelta::hours(1), m + TimeDelta::hours(1))
        .unwrap();
    assert_eq!(
        down.seconds_below_80_percent, 50,
        "02:00:10 to 02:00:59, each once"
    );
}
