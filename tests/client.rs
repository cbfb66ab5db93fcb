//! `jatah status` and `jatah plan` as an admin runs them against a gateway
//! whose API is served over HTTPS with a self-signed certificate: trusted
//! with `--ca`, refused without it with a sentence that says what to do;
//! `--json` for scripts; a 32-character id shown whole beside its name;
//! `--watch` redrawing, and going on after a failed fetch.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{GW_LISTEN, LAB_ADMIN_TOKEN, Lab, LabOpd, LabSpec};
use support::jatah;

/// The longest id a policy allows, and a name with letters beyond ASCII.
const LONG_ID: &str = "dinas-komunikasi-dan-informatika";
const NAME: &str = "Dinas Komunikasi — Łódź";

fn status(lab: &Lab, args: &[&str]) -> Output {
    lab.gw
        .command(jatah())
        .arg("status")
        .args(["--api", &format!("https://{GW_LISTEN}")])
        .args(args)
        .env("JATAH_TOKEN", LAB_ADMIN_TOKEN)
        .env_remove("JATAH_CA")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn status_over_https_with_ca_json_and_a_32_character_id() {
    require_root();
    let _one = support::one_lab_at_a_time();
    assert_eq!(LONG_ID.len(), 32);
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-cli".into(),
        download: "100M".into(),
        upload: "100M".into(),
        nat: false,
        mtu: 1500,
        opds: vec![LabOpd::new(LONG_ID, NAME, ("5M", "10M"), ("5M", "10M"))],
    })
    .expect("building the lab");
    // The API listener (127.0.0.1 in the gateway) over HTTPS.
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ca = lab.dir().join("api-cert.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let key_file = lab.dir().join("api-key.pem");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.run_args = vec![
        "--tls-cert".into(),
        ca.to_str().unwrap().into(),
        "--tls-key".into(),
        key_file.to_str().unwrap().into(),
    ];
    lab.spawn_daemon(jatah()).unwrap();
    let ca = ca.to_str().unwrap();

    // With --ca: the table, the long id whole, its name beside it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = status(&lab, &["--ca", ca]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        lab.daemon_log()
    );
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with(LONG_ID))
        .unwrap_or_else(|| panic!("no row for {LONG_ID}:\n{table}"));
    let rest = row[LONG_ID.len()..].trim_start();
    assert!(rest.starts_with(NAME), "the name beside the id: {row}");
    assert!(table.lines().any(|l| l.starts_with("OPD ")), "{table}");

    // Without --ca: exit 1 and a sentence naming the certificate and --ca.
    let out = status(&lab, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("certificate not trusted") && err.contains("--ca FILE"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // JATAH_CA does the same as --ca; --json is the API's JSON.
    let out = lab
        .gw
        .command(jatah())
        .args(["status", "--json", "--api", &format!("https://{GW_LISTEN}")])
        .env("JATAH_TOKEN", LAB_ADMIN_TOKEN)
        .env("JATAH_CA", ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json is JSON");
    assert_eq!(v["opds"][0]["id"], LONG_ID);
    assert_eq!(v["opds"][0]["name"], NAME);

    // Plain HTTP against the HTTPS listener says what to change.
    let out = lab
        .gw
        .command(jatah())
        .args(["status", "--api", GW_LISTEN])
        .env("JATAH_TOKEN", LAB_ADMIN_TOKEN)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("https://"),
        "{}",
        text(&out.stderr)
    );

    // `jatah plan` over the same connection: the policy in force, no change.
    let out = lab
        .gw
        .command(jatah())
        .arg("plan")
        .arg(&lab.policy_path)
        .args(["--api", &format!("https://{GW_LISTEN}"), "--ca", ca])
        .env("JATAH_TOKEN", LAB_ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).to_lowercase().contains("no change"),
        "{}",
        text(&out.stdout)
    );
}

/// `--watch` against an address where nothing listens: each turn shows the
/// error and the next one tries again; it never exits by itself.
#[test]
fn watch_shows_a_failed_fetch_and_tries_again() {
    // A port just freed: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(jatah())
        .args(["status", "--watch", "1", "--api"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut errors = 0;
    let mut headers = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains(" every 1 s, ") {
            headers += 1;
        }
        if line.starts_with("error: ") {
            assert!(line.contains("connection refused"), "{line}");
            errors += 1;
        }
        if errors == 2 {
            break;
        }
    }
    assert_eq!((headers, errors), (2, 2));
    assert!(child.try_wait().unwrap().is_none(), "still watching");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn watch_takes_whole_seconds_from_1() {
    for bad in ["0", "x"] {
        let out = Command::new(jatah())
            .args(["status", "--watch", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            text(&out.stderr).contains("--watch"),
            "{}",
            text(&out.stderr)
        );
    }
}
