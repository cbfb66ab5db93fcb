//! Shaping removed behind jatah's back: someone replaces the root qdisc,
//! deletes a class, or detaches a classifier. jatah's keeper looks each
//! second, puts it back within a few seconds, counts it in
//! `jatah_kernel_repairs_total{interface,what}` and logs it.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use jatah::lab::Lab;
use jatah::lab::netns::require_root;
use support::fixtures::dinsos_and_bpbd_lab;
use support::verdicts::within;
use support::{jatah, one_lab_at_a_time};

/// The LAN device of the lab's gateway: jatah's download tree and two of
/// its classifiers are there.
const LAN: &str = "lan0";
/// How soon a repair must be done.
const REPAIRED_WITHIN: Duration = Duration::from_secs(5);

fn tc(lab: &Lab, args: &[&str]) -> String {
    let out = lab.gw.run("tc", args).expect("tc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `jatah_kernel_repairs_total` for `what` on the LAN device.
fn repairs(lab: &Lab, what: &str) -> u64 {
    support::metrics::sample(
        lab,
        &format!("jatah_kernel_repairs_total{{interface=\"{LAN}\",what=\"{what}\"}}"),
    )
}

/// The pinned link of jatah's download classifier on the LAN device.
fn download_link_pin(lab: &Lab) -> PathBuf {
    let root = lab.bpffs().unwrap().join("jatah");
    std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("links").join(format!("jatah_dl@{LAN}")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no pinned jatah_dl link under {}", root.display()))
}

/// Packets counted as dinsos's download.
fn download_packets(lab: &Lab) -> u64 {
    lab.counters().unwrap()["dinsos"].packets[jatah_common::DOWNLOAD]
}

#[test]
fn a_replaced_root_a_deleted_class_and_a_detached_classifier_are_put_back() {
    let _one = one_lab_at_a_time();
    require_root();
    let mut lab = Lab::build(dinsos_and_bpbd_lab("jt-keep", false)).unwrap();
    lab.start_daemon(jatah()).unwrap();
    assert!(tc(&lab, &["qdisc", "show", "dev", LAN]).contains("qdisc htb 1: root"));

    // 1. The root qdisc replaced: everything below it is gone.
    tc(&lab, &["qdisc", "replace", "dev", LAN, "root", "pfifo"]);
    assert!(!tc(&lab, &["qdisc", "show", "dev", LAN]).contains("htb 1:"));
    let took = within(REPAIRED_WITHIN, "the root qdisc put back", || {
        tc(&lab, &["qdisc", "show", "dev", LAN]).contains("qdisc htb 1: root")
            && repairs(&lab, "root_qdisc") == 1
    });
    eprintln!("root qdisc replaced: put back after {took:.1} s");
    let classes = tc(&lab, &["class", "show", "dev", LAN]);

    // 2. A leaf class deleted (with it, that lane's shaping).
    let leaf = classes
        .lines()
        .find(|l| l.contains(" leaf ") && !l.contains("1:2 "))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("a leaf class")
        .to_string();
    tc(&lab, &["class", "del", "dev", LAN, "classid", &leaf]);
    let has_leaf = |lab: &Lab| {
        tc(lab, &["class", "show", "dev", LAN])
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(leaf.as_str()))
    };
    assert!(!has_leaf(&lab), "class {leaf} was deleted");
    let took = within(REPAIRED_WITHIN, "the deleted class put back", || {
        has_leaf(&lab) && repairs(&lab, "class") == 1
    });
    eprintln!("class {leaf} deleted: put back after {took:.1} s");

    // 3. The download classifier's link unpinned: with no one holding it,
    // the kernel detaches it.
    let pin = download_link_pin(&lab);
    std::fs::remove_file(&pin).unwrap();
    let took = within(REPAIRED_WITHIN, "the classifier attached again", || {
        pin.exists() && repairs(&lab, "classifier") == 1
    });
    eprintln!("classifier link removed: attached again after {took:.1} s");
    // It classifies again: pings from the Internet to dinsos count as
    // dinsos's download.
    let before = download_packets(&lab);
    lab.inet
        .run(
            "ping",
            ["-c", "5", "-i", "0.2", "-W", "1", &jatah::lab::opd_addr(0)],
        )
        .expect("ping");
    let counted = download_packets(&lab) - before;
    assert!(
        counted >= 5,
        "dinsos's download counted {counted} of 5 pings"
    );

    let log = lab.daemon_log();
    for told in [
        "root qdisc was replaced by someone else",
        "HTB classes were deleted by someone else",
        "classifier was detached by someone else",
    ] {
        assert!(log.contains(told), "the log says {told:?}: {log}");
    }
    // And the interface reads as attached throughout the end state.
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    assert!(
        metrics.contains(&format!(
            "jatah_interface_attached{{interface=\"{LAN}\"}} 1"
        )),
        "{metrics}"
    );
}
