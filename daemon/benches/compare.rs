//! jatah against the classic tc script approach (HTB classified by linear
//! u32 filters) and against no shaping, plus shaping accuracy and growth
//! with the number of OPDs; see `jatah::bench::compare`. Root. Prints
//! every table as it goes; never fails on timing.
//!
//!   cargo bench --bench compare                    # full run, updates BENCHMARKS.md
//!   cargo bench --bench compare -- --rounds 7      # more rounds
//!   cargo bench --bench compare -- --smoke         # one short round, writes nothing
//!   cargo bench --bench compare -- --write FILE    # the generated section into FILE
//!   cargo bench --bench compare -- --no-write      # print only

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jatah::bench::compare::{self, Settings};
use jatah::bench::report;

const USAGE: &str =
    "usage: cargo bench --bench compare [-- [--rounds N] [--smoke] [--write FILE | --no-write]]";

fn main() -> ExitCode {
    // cargo bench passes `--bench` to every bench binary.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut smoke = false;
    let mut rounds = None;
    let mut write: Option<Option<PathBuf>> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => smoke = true,
            "--rounds" => match it.next().and_then(|v| v.parse::<usize>().ok()) {
                Some(n) if n > 0 => rounds = Some(n),
                _ => return usage("--rounds wants a number of rounds, at least 1"),
            },
            "--write" => match it.next() {
                Some(f) => write = Some(Some(PathBuf::from(f))),
                None => return usage("--write wants a file"),
            },
            "--no-write" => write = Some(None),
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return usage(&format!("unknown argument {other:?}")),
        }
    }
    let mut settings = if smoke {
        Settings::smoke()
    } else {
        Settings::full()
    };
    if let Some(n) = rounds {
        settings.rounds = n;
    }
    settings.command = if args.is_empty() {
        "cargo bench --bench compare".into()
    } else {
        format!("cargo bench --bench compare -- {}", args.join(" "))
    };
    let target = report::target_file(write, smoke);
    let jatah = Path::new(env!("CARGO_BIN_EXE_jatah"));
    let report = match compare::run(&settings, jatah) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("compare: the benchmark could not run: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = target {
        if let Err(e) = report::write_generated(&path, &report.markdown()) {
            eprintln!("compare: {e:#}");
            return ExitCode::FAILURE;
        }
        println!("wrote the generated section of {}", path.display());
    }
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("compare: {problem}\n{USAGE}");
    ExitCode::from(2)
}
