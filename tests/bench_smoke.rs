//! The comparison benchmark (`cargo bench --bench compare`) still runs:
//! its smoke settings (one round, 30 subnets, one-second runs) through
//! the same library entry point, written into a scratch copy of
//! BENCHMARKS.md. Asserts the shape of what it produces, never a timing.

mod support;

use jatah::bench::compare::{self, SECTIONS, Settings};
use jatah::bench::report::{self, BEGIN, Cell, END};
use jatah::lab::netns::require_root;
use support::{Scratch, jatah, one_lab_at_a_time};

/// Names of network namespaces this process created with `prefix`.
fn our_namespaces(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let mine = format!("-{:x}", std::process::id() & 0xfffff);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|n| n.starts_with(prefix) && n.contains(&mine))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_comparison_runs_and_writes_every_section_with_positive_numbers() {
    let _one = one_lab_at_a_time();
    require_root();
    let scratch = Scratch::new("bench-smoke");
    let file = scratch.join("BENCHMARKS.md");
    let hand_written = "# Benchmarks\n\nHand-written text that must stay.\n";
    std::fs::write(&file, hand_written).unwrap();

    let settings = Settings::smoke();
    let report = compare::run(&settings, jatah()).expect("the smoke run measures everything");

    for title in SECTIONS {
        let section = report
            .section(title)
            .unwrap_or_else(|| panic!("no section {title:?}"));
        let table = &section.table;
        assert!(!table.rows.is_empty(), "{title}: no rows");
        for row in &table.rows {
            assert_eq!(row.len(), table.columns.len(), "{title}: {row:?}");
            for (cell, column) in row.iter().zip(&table.columns) {
                if let Cell::Value(v, _) = cell {
                    assert!(
                        v.is_finite() && *v > 0.0,
                        "{title}, {column}: {v} is not a positive number"
                    );
                }
            }
        }
    }
    let rows = |title: &str| report.section(title).unwrap().table.rows.len();
    assert_eq!(rows(SECTIONS[1]), settings.forwarding_sizes.len());
    assert_eq!(
        rows(SECTIONS[3]),
        settings.accuracy_ceilings.len() * settings.accuracy_flows.len()
    );
    assert_eq!(rows(SECTIONS[4]), settings.growth_sizes.len());

    report::write_generated(&file, &report.markdown()).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with(hand_written), "{text}");
    assert!(
        text.contains(BEGIN) && text.trim_end().ends_with(END),
        "{text}"
    );
    for title in SECTIONS {
        assert!(text.contains(&format!("### {title}\n")), "{title} missing");
    }
    // Written twice, the section is replaced, not repeated.
    report::write_generated(&file, &report.markdown()).unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    for prefix in ["jt-bcmp", "jt-bacc", "jt-bapply", "jt-bgrow"] {
        assert_eq!(our_namespaces(prefix), Vec::<String>::new(), "left behind");
    }
}
