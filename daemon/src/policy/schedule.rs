//! Schedules: named time windows (days of the week, from-to, in the
//! gateway's timezone) during which some OPDs get other allocations, e.g.
//! larger guarantees for public services in office hours, relaxed ceilings
//! at night. The policy in force at any moment is the base policy with the
//! allocations of the windows open then; jatah reloads at each window edge.
//!
//! Everything here is pure: the time comes in as an argument (tests move
//! it through window edges), and local times come from the timezone
//! database, so zones with daylight saving work too.

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;

use crate::policy::Policy;
pub use crate::policy::model::{Schedule, ScheduledAllocation, Window};

/// Days of the week, Monday first, as written in a policy.
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Names of the schedules open at `at`.
pub fn open_schedules(schedules: &[Schedule], at: DateTime<Utc>, tz: Tz) -> Vec<String> {
    schedules
        .iter()
        .filter(|s| s.window.is_open(at, tz))
        .map(|s| s.name.clone())
        .collect()
}

/// Puts a schedule's allocations into a policy.
fn apply(p: &mut Policy, s: &Schedule) {
    for a in &s.allocations {
        if let Some(opd) = p.opds.iter_mut().find(|o| o.id == a.opd) {
            if let Some(d) = a.download {
                opd.download = d;
            }
            if let Some(u) = a.upload {
                opd.upload = u;
            }
        }
    }
}

/// The policy in force at `at`: `base` with the allocations of every open
/// window applied.
pub fn effective(base: &Policy, schedules: &[Schedule], at: DateTime<Utc>) -> Policy {
    let tz = base.gateway.timezone;
    let mut p = base.clone();
    for s in schedules.iter().filter(|s| s.window.is_open(at, tz)) {
        apply(&mut p, s);
    }
    p
}

/// The next time after `at` when any window opens or closes (checked to
/// the minute, for a week ahead), or None without schedules.
pub fn next_edge(schedules: &[Schedule], at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    if schedules.is_empty() {
        return None;
    }
    let now = open_schedules(schedules, at, tz);
    let start = Utc
        .timestamp_opt(at.timestamp() - at.timestamp().rem_euclid(60), 0)
        .single()?;
    (1..=8 * 1440)
        .map(|m| start + Duration::minutes(m))
        .find(|t| open_schedules(schedules, *t, tz) != now)
}

/// Problems with a set of schedules against their policy: windows of the
/// same OPD that overlap, unknown OPDs, and moments when the allocations in
/// force would not fit (ceiling below guarantee, above capacity, sum of
/// guarantees above capacity). Returned as (schedule name, message).
pub fn check(base: &Policy, schedules: &[Schedule]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (i, a) in schedules.iter().enumerate() {
        for alloc in &a.allocations {
            if base.opd(&alloc.opd).is_none() {
                problems.push((
                    a.name.clone(),
                    format!("no OPD {:?} in this policy", alloc.opd),
                ));
            }
        }
        for b in &schedules[i + 1..] {
            let shared: Vec<&str> = a
                .allocations
                .iter()
                .filter(|x| b.allocations.iter().any(|y| y.opd == x.opd))
                .map(|x| x.opd.as_str())
                .collect();
            if !shared.is_empty() && a.window.overlaps(&b.window) {
                problems.push((
                    b.name.clone(),
                    format!(
                        "overlaps schedule {:?} for {}: an OPD can follow one schedule at a time",
                        a.name,
                        shared.join(", ")
                    ),
                ));
            }
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    // Every combination of open windows that occurs in a week must fit.
    let mut seen = std::collections::BTreeSet::new();
    for m in 0..7 * 1440u32 {
        let open: Vec<usize> = (0..schedules.len())
            .filter(|&i| schedules[i].window.open_at_minute(m))
            .collect();
        if open.is_empty() || !seen.insert(open.clone()) {
            continue;
        }
        let mut p = base.clone();
        for &i in &open {
            apply(&mut p, &schedules[i]);
        }
        let names: Vec<&str> = open.iter().map(|&i| schedules[i].name.as_str()).collect();
        for problem in p.allocation_problems() {
            problems.push((
                names.join("+"),
                format!(
                    "while {} {} open: {problem}",
                    names.join(" and "),
                    if names.len() == 1 { "is" } else { "are" }
                ),
            ));
        }
    }
    problems
}

/// A source of the current time, so the scheduler can be driven by tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Allocation;
    use crate::policy::Rate;
    use chrono::NaiveTime;

    const POLICY: &str = r#"
[gateway]
wan = "eth0"
lan = ["eth1"]
download = "100M"
upload = "50M"
timezone = "Asia/Makassar"

[[opd]]
id = "disdukcapil"
name = "Disdukcapil"
subnets = ["10.20.1.0/24"]
download = { guaranteed = "10M", ceiling = "30M" }
upload = { guaranteed = "5M", ceiling = "10M" }

[[opd]]
id = "bappeda"
name = "Bappeda"
subnets = ["10.20.2.0/24"]
download = { guaranteed = "10M", ceiling = "30M" }
upload = { guaranteed = "5M", ceiling = "10M" }
"#;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn alloc(g: u64, c: u64) -> Allocation {
        Allocation {
            guaranteed: Rate(g * 1_000_000),
            ceiling: Rate(c * 1_000_000),
        }
    }

    fn office_hours() -> Schedule {
        Schedule {
            name: "office-hours".into(),
            window: Window {
                days: [true, true, true, true, true, false, false],
                from: t(7, 30),
                to: t(16, 0),
            },
            allocations: vec![ScheduledAllocation {
                opd: "disdukcapil".into(),
                download: Some(alloc(40, 80)),
                upload: None,
            }],
        }
    }

    fn night() -> Schedule {
        Schedule {
            name: "night".into(),
            window: Window {
                days: [true; 7],
                from: t(22, 0),
                to: t(6, 0),
            },
            allocations: vec![ScheduledAllocation {
                opd: "bappeda".into(),
                download: Some(alloc(10, 100)),
                upload: None,
            }],
        }
    }

    /// A UTC instant for a local WITA (UTC+8) time: 2026-11-30 is a Monday.
    fn wita(day: u32, h: u32, m: u32) -> DateTime<Utc> {
        chrono_tz::Asia::Makassar
            .with_ymd_and_hms(2026, 11, 30 + day - 1, h, m, 0)
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| {
                // Past the end of November: December days.
                chrono_tz::Asia::Makassar
                    .with_ymd_and_hms(2026, 12, day - 1, h, m, 0)
                    .unwrap()
                    .with_timezone(&Utc)
            })
    }

    #[test]
    fn office_hours_apply_on_weekdays_between_the_edges_in_local_time() {
        let p = crate::policy::parse(POLICY, "t.toml").unwrap();
        let s = vec![office_hours()];
        // Monday 07:29 WITA (Sunday 23:29 UTC): not yet.
        assert_eq!(
            effective(&p, &s, wita(1, 7, 29))
                .opd("disdukcapil")
                .unwrap()
                .download
                .ceiling,
            Rate(30_000_000)
        );
        assert_eq!(
            effective(&p, &s, wita(1, 7, 30))
                .opd("disdukcapil")
                .unwrap()
                .download
                .ceiling,
            Rate(80_000_000)
        );
        assert_eq!(
            effective(&p, &s, wita(1, 15, 59))
                .opd("disdukcapil")
                .unwrap()
                .download
                .guaranteed,
            Rate(40_000_000)
        );
        assert_eq!(
            effective(&p, &s, wita(1, 16, 0))
                .opd("disdukcapil")
                .unwrap()
                .download
                .ceiling,
            Rate(30_000_000)
        );
        // Upload was not scheduled: unchanged.
        assert_eq!(
            effective(&p, &s, wita(1, 9, 0))
                .opd("disdukcapil")
                .unwrap()
                .upload
                .ceiling,
            Rate(10_000_000)
        );
        // Saturday (day 6): closed.
        assert!(open_schedules(&s, wita(6, 9, 0), p.gateway.timezone).is_empty());
    }

    #[test]
    fn a_window_past_midnight_belongs_to_the_day_it_starts() {
        let p = crate::policy::parse(POLICY, "t.toml").unwrap();
        let only_friday = Schedule {
            window: Window {
                days: [false, false, false, false, true, false, false],
                ..night().window
            },
            ..night()
        };
        let tz = p.gateway.timezone;
        assert!(
            only_friday.window.is_open(wita(5, 23, 0), tz),
            "Friday 23:00"
        );
        assert!(
            only_friday.window.is_open(wita(6, 5, 59), tz),
            "Saturday 05:59 belongs to Friday night"
        );
        assert!(!only_friday.window.is_open(wita(6, 6, 0), tz));
        assert!(
            !only_friday.window.is_open(wita(5, 5, 0), tz),
            "Friday morning belongs to Thursday night"
        );
    }

    #[test]
    fn the_next_edge_is_the_next_window_open_or_close() {
        let p = crate::policy::parse(POLICY, "t.toml").unwrap();
        let tz = p.gateway.timezone;
        let s = vec![office_hours(), night()];
        assert_eq!(next_edge(&s, wita(1, 7, 0), tz), Some(wita(1, 7, 30)));
        assert_eq!(next_edge(&s, wita(1, 7, 30), tz), Some(wita(1, 16, 0)));
        assert_eq!(next_edge(&s, wita(1, 16, 0), tz), Some(wita(1, 22, 0)));
        assert_eq!(next_edge(&s, wita(1, 22, 0), tz), Some(wita(2, 6, 0)));
        // Friday 16:00 -> Friday 22:00 (night), then Saturday 06:00, and
        // no office hours on the weekend.
        assert_eq!(
            next_edge(&[office_hours()], wita(5, 16, 0), tz),
            Some(wita(8, 7, 30))
        );
        assert_eq!(next_edge(&[], wita(1, 7, 0), tz), None);
    }

    #[test]
    fn overlapping_windows_for_the_same_opd_are_rejected() {
        let p = crate::policy::parse(POLICY, "t.toml").unwrap();
        let mut lunch = office_hours();
        lunch.name = "lunch".into();
        lunch.window.from = t(12, 0);
        lunch.window.to = t(13, 0);
        let problems = check(&p, &[office_hours(), lunch.clone()]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .1
                .contains("overlaps schedule \"office-hours\" for disdukcapil"),
            "{problems:?}"
        );
        // The same window for another OPD is fine.
        lunch.allocations[0].opd = "bappeda".into();
        assert!(check(&p, &[office_hours(), lunch]).is_empty());
    }

    #[test]
    fn allocations_that_would_not_fit_while_open_are_rejected() {
        let p = crate::policy::parse(POLICY, "t.toml").unwrap();
        let mut greedy = office_hours();
        greedy.allocations[0].download = Some(alloc(95, 100));
        let problems = check(&p, &[greedy]);
        assert!(
            problems
                .iter()
                .any(|(_, m)| m.contains("more than its capacity")),
            "{problems:?}"
        );
        let mut wrong = office_hours();
        wrong.allocations[0].download = Some(alloc(50, 20));
        assert!(
            check(&p, &[wrong])
                .iter()
                .any(|(_, m)| m.contains("ceiling"))
        );
        let mut ghost = office_hours();
        ghost.allocations[0].opd = "nosuch".into();
        assert!(
            check(&p, &[ghost])
                .iter()
                .any(|(_, m)| m.contains("no OPD"))
        );
    }

    #[test]
    fn local_time_follows_daylight_saving_where_there_is_one() {
        // Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST. A 07:30 window
        // opens at 06:30 UTC before the change and 05:30 UTC after it.
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let w = office_hours().window;
        let before = Utc.with_ymd_and_hms(2026, 3, 27, 6, 30, 0).unwrap(); // Friday
        let after = Utc.with_ymd_and_hms(2026, 3, 30, 5, 30, 0).unwrap(); // Monday
        assert!(w.is_open(before, tz) && !w.is_open(before - Duration::minutes(1), tz));
        assert!(w.is_open(after, tz) && !w.is_open(after - Duration::minutes(1), tz));
    }

    #[test]
    fn a_test_clock_can_stand_in_for_the_system_clock() {
        struct Fixed(DateTime<Utc>);
        impl Clock for Fixed {
            fn now(&self) -> DateTime<Utc> {
                self.0
            }
        }
        let c: Box<dyn Clock> = Box::new(Fixed(wita(1, 9, 0)));
        assert_eq!(c.now(), wita(1, 9, 0));
        assert!(SystemClock.now() > wita(1, 9, 0) - Duration::days(3650));
    }
}
