//! Policy changes while traffic flows, in the lab: no packet lost across a
//! hundred reloads, every kind of change lands in the kernel, an invalid
//! file or a failure half-way changes nothing, and `jatah plan` shows what
//! a reload would do.

mod support;

use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{LAB_ADMIN_TOKEN, Lab, LabOpd, LabSpec, wait_iperf_udp};
use jatah::policy::Direction;
use serde_json::Value;
use support::{jatah, one_lab_at_a_time};

fn spec(prefix: &str) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        download: "100M".into(),
        upload: "50M".into(),
        nat: true,
        mtu: 1500,
        opds: vec![
            LabOpd::new("rsud", "RSUD", ("5M", "10M"), ("2M", "5M")),
            LabOpd::new("bappeda", "Bappeda", ("5M", "20M"), ("2M", "5M")),
            LabOpd::new("bpkad", "BPKAD", ("5M", "20M"), ("2M", "5M")),
        ],
    }
}

fn start(prefix: &str) -> Lab {
    require_root();
    let mut lab = Lab::build(spec(prefix)).expect("building the lab");
    lab.start_daemon(jatah()).expect("starting jatah");
    lab
}

/// POST /api/v1/policy/reload as admin: (status, body).
fn reload(lab: &Lab) -> (u16, Value) {
    let (status, body) = lab.reload_now().unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn admin_get(lab: &Lab, path: &str) -> Value {
    let (status, body) = lab.http_get_as(path, Some(LAB_ADMIN_TOKEN)).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The lab's policy with some OPDs changed and others added or left out.
fn policy_with(base: &LabSpec, edit: impl FnOnce(&mut LabSpec)) -> String {
    let mut s = base.clone();
    edit(&mut s);
    s.policy_toml()
}

#[test]
fn a_hundred_reloads_under_udp_traffic_lose_no_packet() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-rzero");
    let base = lab.spec.clone();
    // rsud: 8 Mbit/s of UDP against a 10M ceiling that moves between 10M
    // and 12M, never below what is offered.
    let udp = lab
        .spawn_iperf_udp(0, Direction::Download, 30, "8M")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let mut last_bytes = 0u64;
    let started = Instant::now();
    let mut applied = 0;
    for n in 0..100 {
        let text = policy_with(&base, |s| {
            s.opds[0].download.1 = if n % 2 == 0 {
                "12M".into()
            } else {
                "10M".into()
            };
            s.opds[1].download = ("5M".into(), format!("{}M", 15 + n % 5));
            if n % 3 == 0 {
                s.opds.pop(); // bpkad removed ...
            }
            if n % 4 == 0 {
                s.opds.push(LabOpd::new(
                    "kec-babulu",
                    "Kecamatan Babulu",
                    ("1M", "5M"),
                    ("1M", "2M"),
                ));
            }
        });
        lab.write_policy(&text).unwrap();
        let (status, v) = reload(&lab);
        assert_eq!(status, 200, "reload {n}: {v}");
        if v["result"] == "applied" {
            applied += 1;
        }
        let c = lab.counters().unwrap();
        let bytes = c["rsud"].bytes[jatah_common::DOWNLOAD];
        assert!(
            bytes >= last_bytes,
            "rsud's counter went backwards at reload {n}"
        );
        last_bytes = bytes;
        std::thread::sleep(Duration::from_millis(200));
    }
    let (packets, lost) = wait_iperf_udp(udp).unwrap();
    eprintln!(
        "{applied} reloads applied in {:.1} s; UDP: {packets} datagrams, {lost} lost",
        started.elapsed().as_secs_f64()
    );
    assert!(
        applied >= 90,
        "only {applied} of 100 reloads changed something"
    );
    assert!(packets > 10_000, "too little traffic to judge: {packets}");
    assert_eq!(lost, 0, "datagrams lost across reloads");
}

#[test]
fn every_kind_of_change_lands_in_the_kernel() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-rkinds");
    let base = lab.spec.clone();
    let minor = |id: &str| lab.class_minor(id).unwrap();
    let class = |id: &str| {
        let m = minor(id);
        lab.tc_classes("lan0")
            .unwrap()
            .into_iter()
            .find(|c| c.0 == m)
    };
    assert_eq!(
        class("rsud").map(|c| (c.1, c.2)),
        Some(("5Mbit".into(), "10Mbit".into()))
    );
    let rsud_minor = minor("rsud");

    // Change a rate, rename, move a subnet, add an OPD, remove one.
    let text = policy_with(&base, |s| {
        s.opds[0].download = ("6M".into(), "12M".into());
        s.opds[1].name = "Bapperida".into();
        s.opds.pop();
        s.opds.push(LabOpd::new(
            "kec-sepaku",
            "Kecamatan Sepaku",
            ("2M", "8M"),
            ("1M", "2M"),
        ));
    });
    lab.write_policy(&text).unwrap();
    let (status, v) = reload(&lab);
    assert_eq!(status, 200, "{v}");
    let plan = &v["plan"];
    assert_eq!(plan["added"][0]["id"], "kec-sepaku");
    assert_eq!(plan["removed"][0], "bpkad");
    assert_eq!(
        minor("rsud"),
        rsud_minor,
        "a changed OPD keeps its class and slot"
    );
    assert_eq!(
        class("rsud").map(|c| (c.1, c.2)),
        Some(("6Mbit".into(), "12Mbit".into()))
    );
    assert_eq!(
        class("kec-sepaku").map(|c| (c.1, c.2)),
        Some(("2Mbit".into(), "8Mbit".into()))
    );
    let slots = jatah::datapath::PinnedCounters::open(lab.bpffs().unwrap())
        .unwrap()
        .slots()
        .unwrap();
    assert!(!slots.contains_key("bpkad") && slots.contains_key("kec-sepaku"));
    assert_eq!(admin_get(&lab, "/api/v1/opds/bappeda")["name"], "Bapperida");
    let classes = lab.tc_classes("lan0").unwrap();
    assert_eq!(
        classes.iter().filter(|c| c.0 < 0x8000).count(),
        // root, default, rsud, bappeda, kec-sepaku
        5,
        "bpkad's class is gone"
    );
    assert_eq!(
        classes.iter().filter(|c| c.0 >= 0x8000).count(),
        6,
        "two lanes for each OPD left, none of bpkad's"
    );
    // The removed OPD's last counters are scraped once.
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    assert!(metrics.contains("jatah_opd_download_bytes_total{opd=\"bpkad\"}"));
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    assert!(!metrics.contains("opd=\"bpkad\""), "and only once");

    // Move bappeda's subnet to rsud: rsud's address space grows, traffic
    // to the moved subnet is rsud's.
    let text = policy_with(&base, |s| {
        s.opds.pop();
    })
    .replace(
        "subnets = [\"10.20.2.0/24\"]",
        "subnets = [\"10.20.99.0/24\"]",
    )
    .replace(
        "subnets = [\"10.20.1.0/24\"]",
        "subnets = [\"10.20.1.0/24\", \"10.20.2.0/24\"]",
    );
    lab.write_policy(&text).unwrap();
    let (status, v) = reload(&lab);
    assert_eq!(status, 200, "{v}");
    let moved = v["plan"]["changed"].as_array().unwrap();
    assert!(
        moved.iter().any(|c| c["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "subnet 10.20.2.0/24 moved from bappeda")),
        "{v}"
    );
    let before = lab.counters().unwrap()["rsud"].bytes[jatah_common::DOWNLOAD];
    let r = lab.iperf(1, Direction::Download, 2, 1).unwrap();
    let after = lab.counters().unwrap()["rsud"].bytes[jatah_common::DOWNLOAD];
    assert!(
        after - before >= r.bytes,
        "bappeda's host (10.20.2.2) now counts as rsud"
    );
}

#[test]
fn an_invalid_file_changes_nothing_and_says_so_in_log_metric_and_api() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-rinvalid");
    let classes = lab.tc_classes("lan0").unwrap();
    let slots = jatah::datapath::PinnedCounters::open(lab.bpffs().unwrap())
        .unwrap()
        .slots()
        .unwrap();
    let good = lab.spec.policy_toml();
    lab.write_policy(&good.replace("ceiling = \"10M\"", "ceiling = \"1M\""))
        .unwrap();
    let (status, v) = reload(&lab);
    assert_eq!(status, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("ceiling"), "{v}");
    assert_eq!(lab.tc_classes("lan0").unwrap(), classes, "HTB untouched");
    assert_eq!(
        jatah::datapath::PinnedCounters::open(lab.bpffs().unwrap())
            .unwrap()
            .slots()
            .unwrap(),
        slots,
        "maps untouched"
    );
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    assert!(
        metrics.contains("jatah_policy_last_reload_successful 0"),
        "metric says it failed"
    );
    let g = admin_get(&lab, "/api/v1/gateway");
    assert_eq!(g["policy"]["last_reload_successful"], false);
    assert!(
        g["policy"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("policy.toml:"),
        "{g}"
    );
    assert!(
        lab.daemon_log().contains("policy reload refused"),
        "the log says so"
    );
    // A change of interfaces needs a restart: refused too.
    lab.write_policy(
        &good
            .replace("wan = \"wan0\"", "wan = \"lan0\"")
            .replace("lan = [\"lan0\"]", "lan = [\"wan0\"]"),
    )
    .unwrap();
    assert_eq!(reload(&lab).0, 422);
    // Back to a good file: applied (unchanged) and the metric recovers.
    lab.write_policy(&good).unwrap();
    assert_eq!(reload(&lab).0, 200);
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    assert!(metrics.contains("jatah_policy_last_reload_successful 1"));
}

#[test]
fn a_failure_half_way_restores_the_previous_state() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-rfail");
    // Sorted: HTB's class hash grows when classes are added and does not
    // shrink, so `tc class show` may list the same classes in another
    // order once the new OPD's classes (with their lanes) came and went.
    let sorted = |mut v: Vec<(u16, String, String)>| {
        v.sort();
        v
    };
    let lan_classes = sorted(lab.tc_classes("lan0").unwrap());
    let slots = jatah::datapath::PinnedCounters::open(lab.bpffs().unwrap())
        .unwrap()
        .slots()
        .unwrap();
    // The WAN interface disappears; the next reload fails when it reaches
    // the upload tree, after the maps and the download tree were changed.
    lab.gw.ip(["link", "del", "wan0"]).unwrap();
    let text = policy_with(&lab.spec, |s| {
        s.opds[0].download = ("7M".into(), "14M".into());
        s.opds.push(LabOpd::new(
            "kec-waru",
            "Kecamatan Waru",
            ("1M", "5M"),
            ("1M", "2M"),
        ));
    });
    lab.write_policy(&text).unwrap();
    let (status, v) = reload(&lab);
    assert_eq!(status, 422, "{v}");
    eprintln!("{}", v["detail"]);
    assert!(v["detail"].as_str().unwrap().contains("failed"), "{v}");
    assert_eq!(
        sorted(lab.tc_classes("lan0").unwrap()),
        lan_classes,
        "download tree as before"
    );
    assert_eq!(
        jatah::datapath::PinnedCounters::open(lab.bpffs().unwrap())
            .unwrap()
            .slots()
            .unwrap(),
        slots,
        "OPD slots as before"
    );
    assert_eq!(
        admin_get(&lab, "/api/v1/opds/rsud")["download"]["ceiling_bps"],
        10_000_000
    );
}

#[test]
fn sighup_and_a_saved_file_reload_and_plan_shows_the_change_first() {
    let _one = one_lab_at_a_time();
    let lab = start("jt-rtrig");
    let new = policy_with(&lab.spec, |s| s.opds[0].download.1 = "15M".into());
    // jatah plan: shows the change, changes nothing.
    let file = lab.dir().join("next.toml");
    std::fs::write(&file, &new).unwrap();
    let out = lab
        .gw
        .command(jatah())
        .args([
            "plan",
            file.to_str().unwrap(),
            "--api",
            jatah::lab::GW_LISTEN,
        ])
        .env("JATAH_TOKEN", LAB_ADMIN_TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(text.contains("download ceiling 10M -> 15M"), "{text}");
    assert_eq!(
        admin_get(&lab, "/api/v1/opds/rsud")["download"]["ceiling_bps"],
        10_000_000
    );
    // An invalid file: exit 1 with FILE:LINE:COLUMN.
    std::fs::write(&file, new.replace("\"15M\"", "\"15MB\"")).unwrap();
    let out = lab
        .gw
        .command(jatah())
        .args(["plan", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("next.toml:"));

    // Saved by rename, as editors do: picked up within a few seconds.
    let tmp = lab.dir().join("policy.toml.swp");
    std::fs::write(&tmp, &new).unwrap();
    std::fs::rename(&tmp, &lab.policy_path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_get(&lab, "/api/v1/opds/rsud")["download"]["ceiling_bps"] != 15_000_000 {
        assert!(Instant::now() < deadline, "the saved file was not reloaded");
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGHUP: reloads at once (the file watcher is beaten to it by sending
    // the signal right after writing).
    let newer = policy_with(&lab.spec, |s| s.opds[0].download.1 = "18M".into());
    std::fs::write(&lab.policy_path, newer).unwrap();
    let pid = lab.daemon_pid().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin_get(&lab, "/api/v1/opds/rsud")["download"]["ceiling_bps"] != 18_000_000 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_schedule_switches_allocations_at_its_edges() {
    let _one = one_lab_at_a_time();
    // A window from the minute after next to one minute later, in WITA.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Makassar);
    let from = now + chrono::Duration::minutes(2);
    let to = from + chrono::Duration::minutes(1);
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let days: Vec<&str> = [from, to]
        .iter()
        .map(|t| day[chrono::Datelike::weekday(t).num_days_from_monday() as usize])
        .collect();
    let schedule = format!(
        "\n[[schedule]]\nname = \"rush\"\ndays = [\"{}\", \"{}\"]\nfrom = \"{}\"\nto = \"{}\"\n\n\
         [[schedule.opd]]\nid = \"rsud\"\ndownload = {{ guaranteed = \"5M\", ceiling = \"15M\" }}\n",
        days[0],
        days[1],
        from.format("%H:%M"),
        to.format("%H:%M")
    );
    require_root();
    let mut lab = Lab::build(spec("jt-rsched")).unwrap();
    let policy = format!("{}{schedule}", lab.spec.policy_toml());
    lab.write_policy(&policy).unwrap();
    lab.start_daemon(jatah()).unwrap();
    let ceiling =
        |lab: &Lab| admin_get(lab, "/api/v1/opds/rsud")["download"]["ceiling_bps"].as_u64();
    assert_eq!(ceiling(&lab), Some(10_000_000), "before the window");
    let rsud = lab.class_minor("rsud").unwrap();
    let wait_for = |want: u64, tc: &str, limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            let shown = lab
                .tc_classes("lan0")
                .unwrap()
                .into_iter()
                .find(|c| c.0 == rsud)
                .map(|c| c.2);
            if ceiling(&lab) == Some(want) && shown.as_deref() == Some(tc) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ceiling not {want} by the edge: {:?} {shown:?}",
                ceiling(&lab)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_for(15_000_000, "15Mbit", Duration::from_secs(190));
    let g = admin_get(&lab, "/api/v1/gateway");
    assert_eq!(g["schedules_open"], serde_json::json!(["rush"]));
    eprintln!("window open at {}", chrono::Utc::now());
    wait_for(10_000_000, "10Mbit", Duration::from_secs(75));
    assert_eq!(
        admin_get(&lab, "/api/v1/gateway")["schedules_open"],
        serde_json::json!([])
    );
    assert!(
        lab.daemon_log().contains("trigger=\"schedule\"")
            || lab.daemon_log().contains("trigger=schedule")
    );
}
