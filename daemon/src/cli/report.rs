//! `jatah report`: a month's report from the history store, read directly
//! (read-only, beside a running daemon), as Markdown or CSV.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Datelike, Utc};

use crate::history::report_text::{self, Separator};
use crate::history::{HistoryStore, ReportPolicy, parse_month};
use crate::policy::{Direction, Policy};

/// Print a month's report: per OPD volume, peak and 95th-percentile
/// rates, hours at the ceiling and in each diagnosis state; the uplink's
/// hours under 80% of the contract.
///
/// Reads the history store under --data-dir directly, read-only: it works
/// while jatah runs and changes nothing. Months and days are the gateway's
/// (the policy's timezone, or the one the store recorded). With --policy,
/// OPDs without traffic are listed too and hours at the ceiling are
/// counted against the policy's ceilings (and its schedules).
///
///   jatah report --month 2026-11 --policy /etc/jatah/policy.toml
///
///   jatah report --month 2026-11 --format csv --separator ';' > nov.csv
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The month, YYYY-MM, in the gateway's timezone (default: this month).
    #[arg(long)]
    pub month: Option<String>,
    /// md (a table to read) or csv (a header row, one row per OPD and per
    /// uplink direction).
    #[arg(long, default_value = "md", value_parser = ["md", "csv"])]
    pub format: String,
    /// CSV separator: ',' or ';'. With ';' decimals are written with a
    /// comma (1,25), as spreadsheets set to Indonesian read them.
    #[arg(long, default_value = ",", value_name = "','|';'")]
    pub separator: String,
    /// Directory of the usage history database (`jatah run --data-dir`).
    #[arg(long, env = "JATAH_DATA_DIR", default_value = "/var/lib/jatah")]
    pub data_dir: PathBuf,
    /// The policy file jatah runs with: its timezone, OPDs, ceilings and
    /// contract. Without it: the store's timezone, the OPDs with data,
    /// and no hours at the ceiling.
    #[arg(long, env = "JATAH_POLICY")]
    pub policy: Option<PathBuf>,
}

/// What the report needs from a policy: its OPDs, the ceiling each had at
/// any instant (base allocation, or a schedule's while its window was
/// open) and the contract. `base` is the policy file as read, before
/// schedules.
pub fn report_policy(base: &Policy) -> ReportPolicy<'_> {
    let tz = base.gateway.timezone;
    // Open windows per instant, worked out once per sample time.
    let open: RefCell<HashMap<i64, Vec<usize>>> = RefCell::new(HashMap::new());
    let ceiling = move |opd: &str, at: i64| -> Option<[u64; 2]> {
        let o = base.opd(opd)?;
        let mut c = [Direction::Download, Direction::Upload]
            .map(|d| o.allocation(d).ceiling.bits_per_second());
        if base.schedules.is_empty() {
            return Some(c);
        }
        let mut cache = open.borrow_mut();
        let windows = cache.entry(at).or_insert_with(|| {
            let t = DateTime::from_timestamp(at, 0).unwrap_or_default();
            (0..base.schedules.len())
                .filter(|&i| base.schedules[i].window.is_open(t, tz))
                .collect()
        });
        for &i in windows.iter() {
            for a in base.schedules[i].allocations.iter().filter(|a| a.opd == opd) {
                if let Some(d) = a.download {
                    c[0] = d.ceiling.bits_per_second();
                }
                if let Some(u) = a.upload {
                    c[1] = u.ceiling.bits_per_second();
                }
            }
        }
        Some(c)
    };
    ReportPolicy {
        opds: base.opds.iter().map(|o| o.id.clone()).collect(),
        ceiling: Box::new(ceiling),
        contract: [Direction::Download, Direction::Upload]
            .map(|d| base.capacity(d).bits_per_second()),
    }
}

/// The report as text, or what is wrong (bad month, no store, bad policy).
pub fn report(args: &ReportArgs, now: DateTime<Utc>) -> Result<(String, Vec<String>), String> {
    let sep = Separator::parse(&args.separator).ok_or_else(|| {
        format!(
            "--separator {:?}: write ',' or ';' (';' also writes decimals with a comma)",
            args.separator
        )
    })?;
    let asked = match &args.month {
        Some(m) => Some(parse_month(m).ok_or_else(|| {
            format!("--month {m:?} is not a month: write YYYY-MM, e.g. 2026-11")
        })?),
        None => None,
    };
    let policy = match &args.policy {
        Some(p) => Some(crate::policy::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let store = HistoryStore::open_read_only(&args.data_dir, policy.as_ref().map(|p| p.gateway.timezone))
        .map_err(|e| e.to_string())?;
    let (year, month) = asked.unwrap_or_else(|| {
        let local = now.with_timezone(&store.timezone());
        (local.year(), local.month())
    });
    let mut notes = Vec::new();
    if let Some(stored) = store.recorded_timezone()
        && stored != store.timezone().name()
    {
        notes.push(format!(
            "the store's days were cut in {stored}, the policy's timezone is {}: days recorded before a change keep their old boundaries",
            store.timezone()
        ));
    }
    let rp = policy.as_ref().map(report_policy);
    let r = store
        .monthly_report(year, month, rp.as_ref(), now)
        .map_err(|e| e.to_string())?;
    if !r.has_data {
        notes.push(format!(
            "no usage recorded for {} in {}",
            r.month,
            args.data_dir.display()
        ));
    }
    if policy.is_none() {
        notes.push("without --policy: no hours at the ceiling, and only OPDs with data".into());
    }
    let text = match args.format.as_str() {
        "csv" => report_text::csv(&r, sep),
        _ => report_text::markdown(&r),
    };
    Ok((text, notes))
}

/// `jatah report`: prints the report, notes on stderr; exit 1 on error.
pub fn main(args: ReportArgs) -> ExitCode {
    match report(&args, Utc::now()) {
        Ok((text, notes)) => {
            print!("{text}");
            for n in notes {
                eprintln!("note: {n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

[[schedule]]
name = "jam-pelayanan"
days = ["mon", "tue", "wed", "thu", "fri"]
from = "07:30"
to = "16:00"

[[schedule.opd]]
id = "disdukcapil"
download = { guaranteed = "35M", ceiling = "80M" }
"#;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn the_ceiling_follows_the_schedules_window_in_local_time() {
        let policy = crate::policy::parse(POLICY, "report-test.toml").unwrap();
        let rp = report_policy(&policy);
        assert_eq!(rp.opds, ["disdukcapil"]);
        assert_eq!(rp.contract, [100_000_000, 50_000_000]);
        // Tuesday 3 November 2026, 08:00 WITA (00:00 UTC): the window is open.
        let open = (rp.ceiling)("disdukcapil", at("2026-11-03T00:00:00Z"));
        assert_eq!(open, Some([80_000_000, 10_000_000]), "upload keeps its base");
        // 07:29 WITA: not yet; Saturday: never.
        let before = (rp.ceiling)("disdukcapil", at("2026-11-02T23:29:00Z"));
        assert_eq!(before, Some([30_000_000, 10_000_000]));
        let saturday = (rp.ceiling)("disdukcapil", at("2026-11-07T02:00:00Z"));
        assert_eq!(saturday, Some([30_000_000, 10_000_000]));
        assert_eq!((rp.ceiling)("nobody", 0), None);
    }

    fn args(month: &str, separator: &str, dir: &std::path::Path) -> ReportArgs {
        ReportArgs {
            month: Some(month.into()),
            format: "md".into(),
            separator: separator.into(),
            data_dir: dir.to_owned(),
            policy: None,
        }
    }

    #[test]
    fn a_bad_month_or_separator_or_a_missing_store_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("jatah-report-cli-{}", std::process::id()));
        let now = Utc::now();
        let e = report(&args("2026-13", ",", &dir), now).unwrap_err();
        assert!(e.contains("--month \"2026-13\" is not a month"), "{e}");
        let e = report(&args("2026-11", "|", &dir), now).unwrap_err();
        assert!(e.contains("--separator"), "{e}");
        let e = report(&args("2026-11", ";", &dir), now).unwrap_err();
        assert!(e.contains("there is no usage history at"), "{e}");
        assert!(!dir.exists(), "nothing was created");
    }
}
