//! The alerting people install: every alert links the README section that
//! says what to do, and the Alertmanager example routes jatah's alerts as
//! its comments promise, checked by amtool and by a real Alertmanager
//! (Debian's prometheus-alertmanager) that sends to a webhook on loopback
//! in place of Telegram.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{Datelike, Timelike, Weekday};
use support::Scratch;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The anchor a Markdown renderer gives a heading: lower case, spaces to
/// '-', other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// (alert, runbook_url) for every alert of the rules file.
fn runbooks() -> Vec<(String, Option<String>)> {
    let text = read(&repo().join("dashboards/rules/jatah-alerts.rules.yml"));
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            out.push((name.trim().to_string(), None));
        } else if let Some(url) = line.strip_prefix("runbook_url:") {
            let last = out.last_mut().expect("runbook_url before any alert");
            last.1 = Some(url.trim().trim_matches('"').to_string());
        }
    }
    out
}

#[test]
fn every_alert_links_its_runbook_section_in_the_readme() {
    let readme = read(&repo().join("README.md"));
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let runbook = readme
        .split("\n## Alert runbook\n")
        .nth(1)
        .expect("README has an \"Alert runbook\" section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let alerts = runbooks();
    assert!(alerts.len() >= 11, "{alerts:?}");
    for (alert, url) in alerts {
        let url = url.unwrap_or_else(|| panic!("{alert} has no runbook_url"));
        let target = url
            .strip_prefix("README.md#")
            .unwrap_or_else(|| panic!("{alert}: {url} is not a README section"));
        assert!(
            anchors.contains(target),
            "{alert}: no README heading for #{target}"
        );
        assert!(
            runbook.contains(&format!("\n### {alert}\n")),
            "{alert} has no section under \"Alert runbook\""
        );
    }
}

#[test]
fn amtool_accepts_the_alertmanager_example() {
    let out = Command::new("amtool")
        .args(["check-config"])
        .arg(repo().join("dashboards/alertmanager.example.yml"))
        .output()
        .expect("amtool (Debian's prometheus-alertmanager package)");
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("1 receivers"), "{report}");
}

/// A free port on loopback (bound and released; the server binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port()
}

/// The example with its Telegram receiver replaced by a webhook to
/// `hook`, and groups sent after a second instead of 30.
fn config_with_webhook(hook: u16) -> String {
    let example = read(&repo().join("dashboards/alertmanager.example.yml"));
    let (head, rest) = example
        .split_once("\nreceivers:\n")
        .expect("a receivers section");
    let (_, tail) = rest
        .split_once("\ntime_intervals:\n")
        .expect("time intervals");
    let head = head
        .replace("group_wait: 30s", "group_wait: 1s")
        .replace("group_interval: 5m", "group_interval: 1s");
    assert!(
        head.contains("group_wait: 1s"),
        "the example's group_wait changed"
    );
    format!(
        "{head}\nreceivers:\n  - name: noc-telegram\n    webhook_configs:\n      \
         - url: http://127.0.0.1:{hook}/\n        send_resolved: false\n\ntime_intervals:\n{tail}"
    )
}

/// Receives the webhook's POSTs: each body, as JSON, on the channel.
fn webhook(listener: TcpListener, tx: mpsc::Sender<serde_json::Value>) {
    listener.set_nonblocking(false).unwrap();
    for stream in listener.incoming().take(100) {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_ok() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn fire(am: u16, labels: &[&str]) {
    let out = Command::new("amtool")
        .arg(format!("--alertmanager.url=http://127.0.0.1:{am}"))
        .args(["alert", "add"])
        .args(labels)
        .arg("--annotation=summary=test")
        .output()
        .expect("amtool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `now` is inside the example's office hours (WITA, Monday to
/// Friday, 07:00 to 17:00); None within a minute of a boundary.
fn office_hours(now: chrono::DateTime<chrono_tz::Tz>) -> Option<bool> {
    let minute = now.hour() * 60 + now.minute();
    let weekday = !matches!(now.weekday(), Weekday::Sat | Weekday::Sun);
    let near = |m: u32| minute.abs_diff(m) <= 1;
    if near(0) || near(7 * 60) || near(17 * 60) || near(24 * 60) {
        return None;
    }
    Some(weekday && (7 * 60..17 * 60).contains(&minute))
}

#[test]
fn a_real_alertmanager_pages_outages_at_any_hour_and_office_faults_in_office_hours() {
    let hook = TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || webhook(hook, tx));
    let dir = Scratch::new("alertmanager");
    std::fs::write(dir.join("alertmanager.yml"), config_with_webhook(hook_port)).unwrap();
    let am = free_port();
    let _server = Killed(
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                dir.join("alertmanager.yml").display()
            ))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("prometheus-alertmanager (Debian's prometheus-alertmanager package)"),
    );
    let started = Instant::now();
    while !get(am, "/-/ready").is_some_and(|r| r.contains(" 200 ")) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "Alertmanager not ready:\n{}",
            read(&dir.join("log"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Makassar);
    // The sources of inhibitions first.
    fire(
        am,
        &["alertname=JatahDown", "severity=critical", "gateway=gw-a"],
    );
    fire(
        am,
        &[
            "alertname=JatahUpstreamDown",
            "severity=critical",
            "gateway=gw-c",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    // jatah on gw-a does not answer: what it said last is not news.
    fire(
        am,
        &[
            "alertname=JatahInterfaceNotAttached",
            "severity=critical",
            "gateway=gw-a",
            "interface=eth1",
        ],
    );
    // An office's router is off.
    fire(
        am,
        &[
            "alertname=JatahOpdLocalFault",
            "severity=critical",
            "gateway=gw-b",
            "opd=dinkes",
        ],
    );
    // gw-c's uplink is down: "delivers less" is held back.
    fire(
        am,
        &[
            "alertname=JatahUpstreamDegraded",
            "severity=warning",
            "gateway=gw-c",
        ],
    );
    fire(
        am,
        &[
            "alertname=JatahInterfaceNotAttached",
            "severity=critical",
            "gateway=gw-c",
            "interface=eth0",
        ],
    );

    let mut got = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(12);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        let Ok(v) = rx.recv_timeout(left) else { break };
        for a in v["alerts"].as_array().into_iter().flatten() {
            got.insert(format!(
                "{}@{}",
                a["labels"]["alertname"].as_str().unwrap_or("?"),
                a["labels"]["gateway"].as_str().unwrap_or("?")
            ));
        }
    }
    eprintln!("delivered at {now}: {got:?}");
    for paged in [
        "JatahDown@gw-a",
        "JatahUpstreamDown@gw-c",
        "JatahInterfaceNotAttached@gw-c",
    ] {
        assert!(got.contains(paged), "{paged} not sent: {got:?}");
    }
    for held in [
        "JatahInterfaceNotAttached@gw-a",
        "JatahUpstreamDegraded@gw-c",
    ] {
        assert!(!got.contains(held), "{held} sent: {got:?}");
    }
    match office_hours(now) {
        Some(open) => assert_eq!(
            got.contains("JatahOpdLocalFault@gw-b"),
            open,
            "an office fault at {now} (office hours: {open}): {got:?}"
        ),
        None => eprintln!("{now} is at an office-hours boundary: the office fault is not judged"),
    }
}
