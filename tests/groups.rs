//! Groups of OPDs in the lab, with real traffic: a group's ceiling holds
//! for its members together while an OPD outside it is unaffected, and a
//! reload changes a group in place (every class keeps its counters) while
//! an OPD that leaves the group is the only class created again.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{Lab, LabOpd, LabSpec, wait_iperf};
use jatah::policy::Direction;
use serde_json::Value;
use support::{jatah, one_lab_at_a_time};

const GROUP: &str = "kecamatan";

/// Two kecamatan offices (the group's members: OPDs 0 and 1) and a health
/// office outside the group (OPD 2), behind a 100 Mbit/s uplink.
fn spec(prefix: &str) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        download: "100M".into(),
        upload: "100M".into(),
        nat: true,
        mtu: 1500,
        opds: vec![
            LabOpd::new("kec-waru", "Kecamatan Waru", ("4M", "10M"), ("4M", "10M")),
            LabOpd::new(
                "kec-sepaku",
                "Kecamatan Sepaku",
                ("2M", "10M"),
                ("2M", "10M"),
            ),
            LabOpd::new("dinkes", "Dinas Kesehatan", ("10M", "30M"), ("10M", "30M")),
        ],
    }
}

/// The lab's policy with `members` in the group, whose ceiling (both
/// directions) is `ceiling`.
fn grouped_policy(spec: &LabSpec, members: &[&str], ceiling: &str) -> String {
    let mut text = spec.policy_toml();
    for id in members {
        let line = format!("id = \"{id}\"\n");
        assert!(text.contains(&line), "no OPD {id} in the lab's policy");
        text = text.replace(&line, &format!("{line}group = \"{GROUP}\"\n"));
    }
    text + &format!(
        "\n[[group]]\nid = \"{GROUP}\"\nname = \"Kantor Kecamatan\"\n\
         download = {{ guaranteed = \"6M\", ceiling = \"{ceiling}\" }}\n\
         upload = {{ guaranteed = \"6M\", ceiling = \"{ceiling}\" }}\n"
    )
}

/// Builds the lab and starts jatah with `policy`.
fn start(spec: LabSpec, policy: &str) -> Lab {
    require_root();
    let mut lab = Lab::build(spec).expect("building the lab");
    lab.write_policy(policy).unwrap();
    lab.start_daemon(jatah()).expect("starting jatah");
    lab
}

/// The group's HTB class minor, as jatah derives it from the policy.
fn group_minor(policy: &str) -> u16 {
    let policy = jatah::policy::parse(policy, "policy.toml").unwrap();
    jatah::gateway::group_minors(&policy)[GROUP]
}

/// The parent of every class of jatah's tree on a gateway interface, from
/// `tc class show` (e.g. 17 -> "1:7aba").
fn parents(lab: &Lab, iface: &str) -> BTreeMap<u16, String> {
    let out = lab.gw.run("tc", ["class", "show", "dev", iface]).unwrap();
    let mut parents = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let minor = w
            .get(2)
            .and_then(|id| id.strip_prefix("1:"))
            .and_then(|m| u16::from_str_radix(m, 16).ok());
        let parent = w
            .iter()
            .position(|x| *x == "parent")
            .and_then(|i| w.get(i + 1));
        if let (Some(minor), Some(parent)) = (minor, parent) {
            parents.insert(minor, parent.to_string());
        }
    }
    parents
}

/// Bytes HTB has sent through every class of an interface, by minor.
fn class_bytes(lab: &Lab, iface: &str) -> BTreeMap<u16, u64> {
    lab.class_stats(iface)
        .unwrap()
        .into_iter()
        .map(|c| (c.minor, c.bytes))
        .collect()
}

/// POST /api/v1/policy/reload as admin: (status, body).
fn reload(lab: &Lab) -> (u16, Value) {
    let (status, body) = lab.reload_now().unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn mbit(bps: f64) -> f64 {
    bps / 1e6
}

#[test]
fn a_group_ceiling_holds_for_its_members_together() {
    let _one = one_lab_at_a_time();
    let spec = spec("jt-gceil");
    let policy = grouped_policy(&spec, &["kec-waru", "kec-sepaku"], "10M");
    let lab = start(spec, &policy);
    let group = group_minor(&policy);
    let group_class = format!("1:{group:x}");
    for iface in ["lan0", "wan0"] {
        let parents = parents(&lab, iface);
        assert_eq!(parents.get(&group).map(String::as_str), Some("1:1"));
        for id in ["kec-waru", "kec-sepaku"] {
            assert_eq!(
                parents.get(&lab.class_minor(id).unwrap()),
                Some(&group_class),
                "{id} on {iface}"
            );
        }
        assert_eq!(
            parents
                .get(&lab.class_minor("dinkes").unwrap())
                .map(String::as_str),
            Some("1:1")
        );
        let classes = lab.tc_classes(iface).unwrap();
        let shown = classes.iter().find(|c| c.0 == group).expect("group class");
        assert_eq!((shown.1.as_str(), shown.2.as_str()), ("6Mbit", "10Mbit"));
    }

    let group_bytes = |iface: &str| class_bytes(&lab, iface)[&group];
    for (dir, iface) in [(Direction::Download, "lan0"), (Direction::Upload, "wan0")] {
        let clients: Vec<_> = (0..3)
            .map(|i| lab.spawn_iperf(i, dir, 12, 4).unwrap())
            .collect();
        // The clients start one after the other, so their averages cover
        // slightly different seconds: the group's own class is read over a
        // window in which all of them run.
        std::thread::sleep(Duration::from_secs(3));
        let (t0, b0) = (Instant::now(), group_bytes(iface));
        std::thread::sleep(Duration::from_secs(6));
        let (t1, b1) = (Instant::now(), group_bytes(iface));
        let together = mbit((b1 - b0) as f64 * 8.0 / (t1 - t0).as_secs_f64());
        let rates: Vec<f64> = clients
            .into_iter()
            .map(|c| mbit(wait_iperf(c).unwrap().bits_per_second))
            .collect();
        let (waru, sepaku, dinkes) = (rates[0], rates[1], rates[2]);
        eprintln!(
            "{dir:?}: kec-waru {waru:.2} Mbit/s (guaranteed 4), kec-sepaku {sepaku:.2} \
             (guaranteed 2); the group's class sent {together:.2} (ceiling 10); dinkes \
             {dinkes:.2} (ceiling 30)"
        );
        assert!(
            together <= 10.3,
            "{dir:?}: the group's members together got {together:.2} Mbit/s, over its 10M ceiling"
        );
        assert!(
            together >= 9.0,
            "{dir:?}: the group's members together got only {together:.2} Mbit/s of 10M"
        );
        assert!(
            waru >= 0.9 * 4.0,
            "{dir:?}: kec-waru got {waru:.2}, under 90% of 4M"
        );
        assert!(
            sepaku >= 0.9 * 2.0,
            "{dir:?}: kec-sepaku got {sepaku:.2}, under 90% of 2M"
        );
        assert!(
            (0.85 * 30.0..=30.0 * 1.03).contains(&dinkes),
            "{dir:?}: dinkes, outside the group, got {dinkes:.2} Mbit/s instead of its 30M ceiling"
        );
    }

    // The group in metrics and the API.
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{group=\"{GROUP}\"}}")))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(
        value("jatah_group_download_ceiling_bytes_per_second"),
        1_250_000.0
    );
    assert!(value("jatah_group_download_bytes_total") > 5_000_000.0);
    assert!(metrics.contains(&format!(
        "jatah_group_member{{group=\"{GROUP}\",opd=\"kec-waru\"}} 1"
    )));
    let (status, body) = lab
        .http_get_as(
            &format!("/api/v1/groups/{GROUP}"),
            Some(jatah::lab::LAB_ADMIN_TOKEN),
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let g: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(g["download"]["ceiling_bps"], 10_000_000);
    assert_eq!(g["members"].as_array().unwrap().len(), 2);
    // An OPD's token sees its own group, with only itself as a member; an
    // OPD outside the group does not see it.
    let own = lab
        .http_get_as(
            &format!("/api/v1/groups/{GROUP}"),
            Some(&jatah::lab::lab_opd_token("kec-waru")),
        )
        .unwrap();
    assert_eq!(own.0, 200);
    let own: Value = serde_json::from_str(&own.1).unwrap();
    assert_eq!(own["members"], serde_json::json!(["kec-waru"]));
    let outside = lab
        .http_get_as(
            &format!("/api/v1/groups/{GROUP}"),
            Some(&jatah::lab::lab_opd_token("dinkes")),
        )
        .unwrap();
    assert_eq!(outside.0, 404);
}

#[test]
fn a_reload_changes_the_group_in_place_and_recreates_only_what_moves() {
    let _one = one_lab_at_a_time();
    let spec = spec("jt-greload");
    let both = ["kec-waru", "kec-sepaku"];
    let policy = grouped_policy(&spec, &both, "10M");
    let lab = start(spec.clone(), &policy);
    let group = group_minor(&policy);
    let [waru, sepaku, dinkes] =
        ["kec-waru", "kec-sepaku", "dinkes"].map(|id| lab.class_minor(id).unwrap());
    // Traffic in every class, so a class created again would show (its
    // counters would start from zero).
    let clients: Vec<_> = (0..3)
        .map(|i| lab.spawn_iperf(i, Direction::Download, 2, 1).unwrap())
        .collect();
    for c in clients {
        wait_iperf(c).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = class_bytes(&lab, "lan0");
    for minor in [group, waru, sepaku, dinkes] {
        assert!(before[&minor] > 100_000, "class {minor:#x}: {before:?}");
    }

    // The group's ceiling changes: in place.
    lab.write_policy(&grouped_policy(&spec, &both, "12M"))
        .unwrap();
    let (status, v) = reload(&lab);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"], "applied", "{v}");
    let plan = &v["plan"];
    assert_eq!(plan["groups_changed"][0]["id"], GROUP, "{v}");
    assert_eq!(
        plan["groups_changed"][0]["changes"],
        serde_json::json!(["download ceiling 10M -> 12M", "upload ceiling 10M -> 12M"])
    );
    assert_eq!(plan["recreated"], serde_json::json!([]));
    for iface in ["lan0", "wan0"] {
        let classes = lab.tc_classes(iface).unwrap();
        let shown = classes.iter().find(|c| c.0 == group).expect("group class");
        assert_eq!((shown.1.as_str(), shown.2.as_str()), ("6Mbit", "12Mbit"));
    }
    let after = class_bytes(&lab, "lan0");
    for minor in [group, waru, sepaku, dinkes] {
        assert!(
            after[&minor] >= before[&minor],
            "class {minor:#x} lost its counters: {} -> {}",
            before[&minor],
            after[&minor]
        );
    }

    // kec-sepaku leaves the group: its classes alone are created again.
    lab.write_policy(&grouped_policy(&spec, &["kec-waru"], "12M"))
        .unwrap();
    let (status, v) = reload(&lab);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["plan"]["recreated"],
        serde_json::json!(["kec-sepaku"]),
        "{v}"
    );
    let moved = v["plan"]["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "kec-sepaku")
        .expect("kec-sepaku changed");
    assert!(
        moved["changes"][0]
            .as_str()
            .unwrap()
            .starts_with("group kecamatan -> none"),
        "{moved}"
    );
    let parents = parents(&lab, "lan0");
    assert_eq!(parents[&sepaku], "1:1");
    assert_eq!(parents[&waru], format!("1:{group:x}"));
    let last = class_bytes(&lab, "lan0");
    assert!(
        last[&sepaku] < before[&sepaku],
        "kec-sepaku's class was created again: its HTB counters restart"
    );
    for minor in [group, waru, dinkes] {
        assert!(
            last[&minor] >= after[&minor],
            "class {minor:#x} did not move and must keep its counters"
        );
    }
    // jatah's own counters of the moved OPD continue.
    let counters = lab.counters().unwrap();
    assert!(counters["kec-sepaku"].bytes[jatah_common::DOWNLOAD] >= before[&sepaku] / 2);
}
