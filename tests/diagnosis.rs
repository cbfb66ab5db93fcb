//! Fault diagnosis in the lab, with real traffic and real faults: a pulled
//! cable, a router switched off, an uplink delivering 30% of its contract,
//! an OPD at its ceiling, both faults at once, a quiet night, and a long
//! healthy run. Each verdict is read from jatah's own API.

mod support;

use std::process::Child;
use std::time::{Duration, Instant};

use jatah::lab::Lab;
use jatah::lab::netns::require_root;
use jatah::policy::Direction;
use serde_json::Value;
use support::fixtures::{DIAGNOSIS_OPDS as OPDS, diagnosis_lab};
use support::verdicts::{
    all_healthy, events_since, gateway_state, get, no_local_blame, now_rfc3339, state, until_state,
    within,
};
use support::{jatah, one_lab_at_a_time};

fn start(prefix: &str) -> Lab {
    require_root();
    let mut lab = Lab::build(diagnosis_lab(prefix)).expect("building the lab");
    lab.start_daemon(jatah()).expect("starting jatah");
    lab
}

/// Steady, paced traffic for every OPD in `which`: downloads at 2 Mbit/s.
fn traffic(lab: &Lab, which: &[usize], seconds: u32) -> Vec<Child> {
    which
        .iter()
        .map(|&i| {
            lab.spawn_iperf_paced(i, Direction::Download, seconds, "2M")
                .unwrap()
        })
        .collect()
}

fn stop(children: Vec<Child>) {
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn cable_pull_is_a_local_fault_and_nothing_else_moves() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-dcable");
    let t = traffic(&lab, &[0, 1, 2, 3], 120);
    within(Duration::from_secs(40), "all healthy", || {
        all_healthy(&lab, &OPDS)
    });
    let since = now_rfc3339();
    lab.set_opd_link(0, false).unwrap();
    let took = until_state(&lab, "dinkes", "local_fault", Duration::from_secs(10));
    eprintln!("cable pulled: dinkes local_fault after {took:.1} s");
    let d = get(&lab, "/api/v1/opds/dinkes/diagnosis");
    eprintln!("{}", serde_json::to_string_pretty(&d["verdict"]).unwrap());
    assert!(
        d["verdict"]["evidence"]["probe_lost_in_a_row"]
            .as_u64()
            .unwrap()
            >= 3
    );
    assert!(
        d["verdict"]["explanation_id"]
            .as_str()
            .unwrap()
            .contains("periksa")
    );
    assert!(
        all_healthy(&lab, &OPDS[1..]),
        "the other OPDs and the gateway stay healthy"
    );
    let moved: Vec<Value> = events_since(&lab, &since)
        .into_iter()
        .filter(|e| e["opd"] != "dinkes")
        .collect();
    assert!(moved.is_empty(), "nothing else changed state: {moved:?}");

    lab.set_opd_link(0, true).unwrap();
    // The office resumes its traffic once the cable is back.
    let again = traffic(&lab, &[0], 60);
    let back = until_state(&lab, "dinkes", "healthy", Duration::from_secs(15));
    eprintln!("cable back: dinkes healthy after {back:.1} s");
    stop(again);
    stop(t);
}

#[test]
fn a_router_switched_off_is_a_local_fault() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-drouter");
    let mut t = traffic(&lab, &[0, 1, 2, 3], 120);
    within(Duration::from_secs(40), "all healthy", || {
        all_healthy(&lab, &OPDS)
    });
    // disdik's router goes off: its traffic stops, its address is gone,
    // its link (switch port) stays up.
    let disdik = t.remove(1);
    stop(vec![disdik]);
    lab.router_off(1).unwrap();
    let took = until_state(&lab, "disdik", "local_fault", Duration::from_secs(15));
    eprintln!("router off: disdik local_fault after {took:.1} s");
    let v = get(&lab, "/api/v1/opds/disdik/diagnosis");
    assert_eq!(v["verdict"]["evidence"]["reason"], "router_not_answering");
    assert!(all_healthy(&lab, &["dinkes", "bappeda", "kec-waru"]));
    stop(t);
}

#[test]
fn an_uplink_at_30_percent_is_upstream_degraded_and_no_opd_is_blamed() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-dup");
    let paced = traffic(&lab, &[0, 1, 2, 3], 120);
    within(Duration::from_secs(40), "all healthy", || {
        all_healthy(&lab, &OPDS)
    });
    let since = now_rfc3339();
    // The ISP delivers 12 of 40 Mbit/s, behind a 400 ms queue, while every
    // OPD wants its ceiling.
    lab.limit_uplink("12mbit", "32kb", "400ms").unwrap();
    let hungry: Vec<Child> = (0..4)
        .map(|i| lab.spawn_iperf(i, Direction::Download, 60, 2).unwrap())
        .collect();
    let took = within(Duration::from_secs(30), "gateway upstream_degraded", || {
        gateway_state(&lab).as_deref() == Some("upstream_degraded")
    });
    eprintln!("uplink limited: upstream_degraded after {took:.1} s");
    let g = get(&lab, "/api/v1/gateway");
    eprintln!("{}", serde_json::to_string_pretty(&g["diagnosis"]).unwrap());
    // Hold the fault a while: still nobody blamed.
    std::thread::sleep(Duration::from_secs(10));
    no_local_blame(&lab, &since);
    for o in OPDS {
        let s = state(&lab, o).unwrap();
        assert!(s != "local_fault" && s != "local_degraded", "{o} is {s}");
    }
    lab.restore_uplink().unwrap();
    stop(hungry);
    stop(paced);
}

#[test]
fn an_opd_past_its_ceiling_is_saturated_and_nothing_else_changes() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-dsat");
    let paced = traffic(&lab, &[0, 1, 3], 120);
    let bappeda_paced = traffic(&lab, &[2], 120);
    within(Duration::from_secs(40), "all healthy", || {
        all_healthy(&lab, &OPDS)
    });
    let since = now_rfc3339();
    stop(bappeda_paced);
    let push = lab.spawn_iperf(2, Direction::Download, 60, 4).unwrap();
    let took = until_state(&lab, "bappeda", "saturated", Duration::from_secs(20));
    eprintln!("bappeda saturated after {took:.1} s");
    std::thread::sleep(Duration::from_secs(5));
    let others: Vec<Value> = events_since(&lab, &since)
        .into_iter()
        .filter(|e| e["opd"] != "bappeda")
        .collect();
    assert!(others.is_empty(), "nothing else changed: {others:?}");
    assert!(all_healthy(&lab, &["dinkes", "disdik", "kec-waru"]));
    stop(vec![push]);
    stop(paced);
}

#[test]
fn uplink_limited_and_a_cable_pulled_at_once_are_told_apart() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-dboth");
    let paced = traffic(&lab, &[0, 1, 2, 3], 120);
    within(Duration::from_secs(40), "all healthy", || {
        all_healthy(&lab, &OPDS)
    });
    lab.limit_uplink("12mbit", "32kb", "400ms").unwrap();
    let hungry: Vec<Child> = (1..4)
        .map(|i| lab.spawn_iperf(i, Direction::Download, 60, 2).unwrap())
        .collect();
    lab.set_opd_link(0, false).unwrap();
    within(Duration::from_secs(30), "both verdicts", || {
        gateway_state(&lab).as_deref() == Some("upstream_degraded")
            && state(&lab, "dinkes").as_deref() == Some("local_fault")
    });
    let a = get(&lab, "/api/v1/opds/dinkes/diagnosis");
    assert_eq!(a["verdict"]["evidence"]["reason"], "router_not_answering");
    assert!(
        a["gateway"]["evidence"]["upstream_probe_rtt_ms"].is_number()
            || a["gateway"]["evidence"]["upstream_probe_loss_ratio"].is_number()
    );
    for o in &OPDS[1..] {
        let s = state(&lab, o).unwrap();
        assert!(s != "local_fault" && s != "local_degraded", "{o} is {s}");
    }
    lab.restore_uplink().unwrap();
    stop(hungry);
    stop(paced);
}

#[test]
fn a_quiet_night_is_idle_never_a_fault() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-dquiet");
    let since = now_rfc3339();
    within(Duration::from_secs(30), "all idle", || {
        OPDS.iter()
            .all(|o| state(&lab, o).as_deref() == Some("idle"))
    });
    std::thread::sleep(Duration::from_secs(20));
    for o in OPDS {
        assert_eq!(state(&lab, o).as_deref(), Some("idle"));
    }
    assert_eq!(gateway_state(&lab).as_deref(), Some("healthy"));
    for e in events_since(&lab, &since) {
        assert_ne!(e["state"], "local_fault", "{e}");
    }
}

#[test]
fn two_healthy_minutes_of_mixed_traffic_change_no_state() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-dcalm");
    // Mixed: three OPDs download at different paces, one also uploads.
    let mut t = vec![
        lab.spawn_iperf_paced(0, Direction::Download, 400, "3M")
            .unwrap(),
        lab.spawn_iperf_paced(1, Direction::Download, 400, "1M")
            .unwrap(),
        lab.spawn_iperf_paced(2, Direction::Download, 400, "5M")
            .unwrap(),
        lab.spawn_iperf_paced(2, Direction::Upload, 400, "1M")
            .unwrap(),
        lab.spawn_iperf_paced(3, Direction::Upload, 400, "2M")
            .unwrap(),
    ];
    within(Duration::from_secs(40), "all healthy", || {
        all_healthy(&lab, &OPDS)
    });
    let since = now_rfc3339();
    // Two minutes, looking every 5 s: no delivered-capacity estimate may
    // ever be held while the uplink delivers all the OPDs ask for. (The
    // suite's short version; long healthy runs are the benchmark's.)
    let calm = Instant::now();
    for _ in 0..30 {
        if calm.elapsed() >= Duration::from_secs(120) {
            break;
        }
        let g = get(&lab, "/api/v1/gateway");
        let evidence = &g["diagnosis"]["evidence"];
        assert!(
            evidence.get("download_delivered_bps").is_none()
                && evidence.get("upload_delivered_bps").is_none(),
            "a delivered estimate in a healthy run: {}",
            g["diagnosis"]
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    let changes = events_since(&lab, &since);
    assert!(
        changes.is_empty(),
        "state changes in a healthy run: {changes:?}"
    );
    assert!(all_healthy(&lab, &OPDS));
    stop(std::mem::take(&mut t));
}
