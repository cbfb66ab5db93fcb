//! Who in the office uses its allocation: two hosts in one office, one
//! downloading at the office's ceiling, one browsing lightly. The hosts
//! endpoint names the heavy host first with most of the download (and the
//! policy's name for it); another office's token gets 404, and per-host
//! figures never reach /metrics.

mod support;

use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{GW_LISTEN, LAB_ADMIN_TOKEN, Lab, lab_opd_token};
use jatah::policy::Direction;
use support::fixtures::dinsos_and_bpbd_lab;
use support::{Children, jatah, one_lab_at_a_time};

/// The light host: a second address on bpbd's LAN (bpbd is OPD 1, its
/// network 10.20.2.0/24; the lab's own host there is 10.20.2.2).
const LIGHT: &str = "10.20.2.37";
const HEAVY: &str = "10.20.2.2";

#[test]
fn the_heavy_host_is_named_first_with_most_of_the_download() {
    require_root();
    let _one = one_lab_at_a_time();
    let mut lab = Lab::build(dinsos_and_bpbd_lab("jt-hosts", true)).unwrap();
    // Names for the light host (bpbd is the policy's last OPD, so the
    // appended table is its).
    let policy = std::fs::read_to_string(&lab.policy_path).unwrap()
        + &format!("\n[[opd.host]]\naddress = \"{LIGHT}\"\nname = \"PC Bendahara\"\n");
    lab.write_policy(&policy).unwrap();
    lab.opds[1]
        .ip(["addr", "add", &format!("{LIGHT}/24"), "dev", "eth0"])
        .unwrap();
    lab.start_daemon(jatah()).unwrap();

    // bpbd's ceiling is 50M: four flows from its main host fill it; the
    // light host fetches at 300 kbit/s from its own address.
    let _traffic = Children(vec![
        lab.spawn_iperf_args(1, Direction::Download, 40, 0, &["-P", "4"], false)
            .unwrap(),
        lab.spawn_iperf_args(
            1,
            Direction::Download,
            40,
            1,
            &["-b", "300K", "-B", LIGHT],
            false,
        )
        .unwrap(),
    ]);
    // Two snapshots 15 s apart make a window; the first is taken at start.
    std::thread::sleep(Duration::from_secs(20));
    let ask = |token: &str, query: &str| {
        lab.http_get_as(&format!("/api/v1/opds/bpbd/hosts{query}"), Some(token))
            .unwrap()
    };
    let mut answer = serde_json::Value::Null;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        let (status, body) = ask(&lab_opd_token("bpbd"), "?window=1m");
        assert_eq!(status, 200, "{body}");
        answer = serde_json::from_str(&body).unwrap();
        if answer["active_hosts"].as_u64() >= Some(2) {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("{answer:#}");
    assert_eq!(answer["opd"], "bpbd");
    assert_eq!(answer["active_hosts"], 2, "{answer}");
    let hosts = answer["hosts"].as_array().unwrap();
    assert_eq!(hosts[0]["address"], HEAVY, "{answer}");
    let heavy_share = hosts[0]["download"]["share"].as_f64().unwrap();
    assert!(
        heavy_share >= 0.8,
        "heavy host: {heavy_share} of the download"
    );
    assert!(
        hosts[0]["download"]["rate_bps"].as_u64().unwrap() > 20_000_000,
        "{answer}"
    );
    assert_eq!(hosts[1]["address"], LIGHT);
    assert_eq!(hosts[1]["name"], "PC Bendahara");
    let light = hosts[1]["download"]["rate_bps"].as_u64().unwrap();
    assert!(
        (100_000..2_000_000).contains(&light),
        "light host at {light} bit/s"
    );
    let window = answer["window_seconds"].as_f64().unwrap();
    assert!((15.0..=40.0).contains(&window), "window of {window} s");

    // Another office's token: bpbd does not exist for it. The admin sees it.
    let (status, _) = ask(&lab_opd_token("dinsos"), "");
    assert_eq!(status, 404);
    let (status, body) = ask(LAB_ADMIN_TOKEN, "?window=5m&limit=1");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(v["hosts"][0]["address"], HEAVY);
    // dinsos downloaded nothing, and its page shows nothing of bpbd's
    // hosts. (Its router answers the gateway's probes: a few hundred
    // bytes of upload a minute, counted like any packet from the office.)
    let (status, body) = lab
        .http_get_as("/api/v1/opds/dinsos/hosts", Some(&lab_opd_token("dinsos")))
        .unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["download_bytes"], 0, "{v}");
    assert!(v["upload_bytes"].as_u64().unwrap() < 10_000, "{v}");
    assert!(!body.contains(LIGHT) && !body.contains(HEAVY), "{v}");
    // Bad windows and limits name the parameter.
    for query in ["?window=2m", "?limit=0", "?limit=101", "?limit=x"] {
        let (status, body) = ask(LAB_ADMIN_TOKEN, query);
        assert_eq!(status, 400, "{query}: {body}");
    }
    // The same in the terminal, for the office's own token.
    let out = lab
        .gw
        .command(jatah())
        .args([
            "status", "--hosts", "bpbd", "--window", "1m", "--api", GW_LISTEN,
        ])
        .env("JATAH_TOKEN", lab_opd_token("bpbd"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(text.contains("2 active"), "{text}");
    let first = lines.iter().position(|l| l.starts_with("host")).unwrap() + 1;
    assert!(lines[first].starts_with(HEAVY), "{text}");
    assert!(
        lines[first + 1].starts_with(LIGHT) && lines[first + 1].contains("PC Bendahara"),
        "{text}"
    );
    let out = lab
        .gw
        .command(jatah())
        .args(["status", "--hosts", "bpbd", "--api", GW_LISTEN])
        .env("JATAH_TOKEN", lab_opd_token("dinsos"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    // Per-host figures are in the API only.
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    assert!(!metrics.contains(LIGHT) && !metrics.contains(HEAVY));
}
