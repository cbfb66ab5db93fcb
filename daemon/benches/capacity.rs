//! The capacity-drop sweep of issue 14 (see `jatah::bench::capacity`):
//! uplink limits (policing and queues at 15/40/70 % of demand), WAN loss
//! and false positives, in both directions, against one or more jatah
//! binaries. Root. Prints each scenario as it goes; never fails on timing.
//!
//!   cargo bench --bench capacity                         # full run, updates BENCHMARKS.md
//!   cargo bench --bench capacity -- --jatah old=PATH --jatah new=PATH
//!   cargo bench --bench capacity -- --rounds 1 --only 'policed,slow' --soak-minutes 0
//!   cargo bench --bench capacity -- --smoke              # one short scenario, prints only
//!   cargo bench --bench capacity -- --soak-only --soak-minutes 30   # the healthy run alone, prints
//!   cargo bench --bench capacity -- --write FILE | --no-write

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jatah::bench::capacity::{self, BEGIN, END, Engine, Settings};
use jatah::bench::report;

const USAGE: &str = "usage: cargo bench --bench capacity [-- [--jatah LABEL=PATH]... [--rounds N] \
                     [--only SUBSTRING] [--soak-minutes M] [--soak-only] [--smoke] \
                     [--write FILE | --no-write]]\n\
                     --soak-only: only the healthy run of changing demand (prints, writes nothing)";

fn main() -> ExitCode {
    // cargo bench passes `--bench` to every bench binary.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut smoke = false;
    let mut engines = Vec::new();
    let mut rounds = None;
    let mut only = None;
    let mut soak = None;
    let mut soak_only = false;
    let mut write: Option<Option<PathBuf>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => smoke = true,
            "--jatah" => match it.next().and_then(|v| v.split_once('=')) {
                Some((label, path)) if !label.is_empty() && Path::new(path).is_file() => engines
                    .push(Engine {
                        label: label.into(),
                        path: PathBuf::from(path),
                    }),
                _ => return usage("--jatah wants LABEL=PATH of a jatah binary"),
            },
            "--rounds" => match it.next().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n > 0 => rounds = Some(n),
                _ => return usage("--rounds wants a number of rounds, at least 1"),
            },
            "--only" => match it.next() {
                Some(s) => only = Some(s.clone()),
                None => return usage("--only wants parts of scenario names, comma-separated"),
            },
            "--soak-minutes" => match it.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(m) => soak = Some(m),
                None => return usage("--soak-minutes wants a number of minutes"),
            },
            "--write" => match it.next() {
                Some(f) => write = Some(Some(PathBuf::from(f))),
                None => return usage("--write wants a file"),
            },
            "--no-write" => write = Some(None),
            "--soak-only" => {
                soak_only = true;
                write = Some(None);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    if engines.is_empty() {
        engines.push(default_engine());
    }
    let mut settings = if smoke {
        Settings::smoke(engines)
    } else {
        Settings::full(engines)
    };
    if let Some(n) = rounds {
        settings.rounds = n;
    }
    settings.soak_only = soak_only;
    if only.is_some() {
        settings.only = only;
    }
    if let Some(m) = soak {
        settings.soak_minutes = m;
    }
    if !args.is_empty() {
        settings.command = format!("cargo bench --bench capacity -- {}", args.join(" "));
    }
    let target = report::target_file(write, smoke);
    let results = match capacity::run(&settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("capacity: the sweep could not run: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let section = capacity::section(&settings, &results).markdown();
    println!("\n{section}");
    if let Some(path) = target {
        if let Err(e) = report::write_generated_between(&path, BEGIN, END, &section) {
            eprintln!("capacity: {e:#}");
            return ExitCode::FAILURE;
        }
        println!("wrote the generated capacity section of {}", path.display());
    }
    ExitCode::SUCCESS
}

/// The workspace's debug build of jatah (what the tests run), next to the
/// binary cargo built for this bench; that one if there is no debug build.
fn default_engine() -> Engine {
    let own = PathBuf::from(env!("CARGO_BIN_EXE_jatah"));
    let debug = own
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("debug").join("jatah"))
        .filter(|p| p.is_file());
    match debug {
        Some(path) => Engine {
            label: "this tree (debug)".into(),
            path,
        },
        None => Engine {
            label: "this tree".into(),
            path: own,
        },
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("capacity: {problem}\n{USAGE}");
    ExitCode::from(2)
}
