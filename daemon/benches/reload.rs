//! Policy apply time (root): a cold apply of a generated policy with 10,
//! 100 and 1,000 OPDs (maps, both HTB trees), and a reload that changes one
//! OPD of 1,000. In the lab's gateway namespace; median of 5 rounds. The
//! measuring code is `jatah::bench::control::apply_times`, shared with
//! `cargo bench --bench compare` (which also goes to 10,000 OPDs).
//!
//!   cargo bench --bench reload [-- --rounds N]

use jatah::bench::control::{apply_times, generated_opd};
use jatah::bench::lab_spec;
use jatah::lab::Lab;

fn main() {
    jatah::lab::netns::require_root();
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let lab = Lab::build(lab_spec("jt-breload", generated_opd())).unwrap();
    let rows = apply_times(&lab, &[10, 100, 1_000], rounds).unwrap();
    println!("## Policy apply time (median of {rounds} rounds, in the lab gateway)\n");
    println!("| OPDs | cold apply ms | one-OPD change ms |");
    println!("|---:|---:|---:|");
    for r in rows {
        println!("| {} | {:.1} | {:.2} |", r.opds, r.cold_ms, r.one_change_ms);
    }
}
