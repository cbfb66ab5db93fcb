//! Policy apply time (root): a cold apply of a generated policy with 10,
//! 100 and 1,000 OPDs (maps, both HTB trees), and a reload that changes one
//! OPD of 1,000. In the lab's gateway namespace; median of 5 rounds.
//!
//!   cargo bench --bench reload [-- --rounds N]

use std::time::Instant;

use jatah::datapath::Datapath;
use jatah::gateway;
use jatah::lab::{Lab, LabOpd, LabSpec, generated_policy};
use jatah::netns::BpffsMount;
use jatah::shaper::Shaper;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    jatah::netns::require_root();
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let lab = Lab::build(LabSpec {
        prefix: "jt-breload".into(),
        download: "40G".into(),
        upload: "40G".into(),
        nat: false,
        mtu: 1500,
        opds: vec![LabOpd::new(
            "opd-0",
            "OPD 0",
            ("1M", "100M"),
            ("1M", "100M"),
        )],
    })
    .unwrap();
    let rows = lab
        .in_gateway(move || {
            let mut rows = Vec::new();
            for n in [10usize, 100, 1_000] {
                let policy = jatah::policy::parse(&generated_policy(n), "generated.toml").unwrap();
                let ifaces = gateway::resolve_interfaces(&policy, "generated.toml").unwrap();
                let mut cold = Vec::new();
                let mut one = Vec::new();
                for r in 0..rounds {
                    let bpffs = BpffsMount::new("jt-breload").unwrap();
                    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
                    let mut shaper = Shaper::new().unwrap();
                    for iface in [&ifaces.lan_device, &ifaces.wan] {
                        shaper.remove(iface.ifindex).unwrap();
                    }
                    let t = Instant::now();
                    gateway::apply(&policy, &ifaces, &mut dp, &mut shaper).unwrap();
                    cold.push(t.elapsed().as_secs_f64() * 1e3);
                    // One OPD's download ceiling changes.
                    let mut changed = policy.clone();
                    changed.opds[n / 2].download.ceiling =
                        jatah::policy::Rate(if r % 2 == 0 { 90_000_000 } else { 80_000_000 });
                    let t = Instant::now();
                    gateway::apply(&changed, &ifaces, &mut dp, &mut shaper).unwrap();
                    one.push(t.elapsed().as_secs_f64() * 1e3);
                }
                rows.push((n, median(cold), median(one)));
            }
            Ok(rows)
        })
        .unwrap();
    println!("## Policy apply time (median of {rounds} rounds, in the lab gateway)\n");
    println!("| OPDs | cold apply ms | one-OPD change ms |");
    println!("|---:|---:|---:|");
    for (n, cold, one) in rows {
        println!("| {n} | {cold:.1} | {one:.2} |");
    }
}
