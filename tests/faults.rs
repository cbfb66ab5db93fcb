//! Faults around the daemon: the gateway's interfaces going away and coming
//! back (or appearing only after jatah starts). Programs and HTB trees are
//! attached again within 5 s, the failure is logged and counted, and the
//! allocations hold afterwards with real traffic.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{INET_ADDR, Lab, wait_iperf};
use jatah::policy::Direction;
use jatah_common::{DOWNLOAD, UPLOAD};
use support::fixtures::dinsos_and_bpbd_lab;
use support::{jatah, one_lab_at_a_time};

fn build(prefix: &str) -> Lab {
    require_root();
    Lab::build(dinsos_and_bpbd_lab(prefix, true)).unwrap()
}

/// Whether jatah's classifiers and HTB root are on the gateway's `ifname`:
/// `tc` shows the root, and pings from dinsos' router are counted in each
/// of `directions`. On lan0, download is `jatah_dl` (egress) and upload
/// `jatah_ul_mark` (ingress, marking for the WAN side behind NAT); on wan0,
/// upload is `jatah_ul` (egress, by that mark). This bpftool cannot list
/// TCX links by interface, so the programs are judged by what they do.
fn attached(lab: &Lab, ifname: &str, directions: &[usize]) -> bool {
    let Ok(tc) = lab.gw.run("tc", ["qdisc", "show", "dev", ifname]) else {
        return false;
    };
    if !String::from_utf8_lossy(&tc.stdout).contains("qdisc htb 1: root") {
        return false;
    }
    let count = || lab.counters().ok().map(|c| c["dinsos"]);
    let Some(before) = count() else {
        return false;
    };
    let _ = lab.opds[0].run("ping", ["-c", "2", "-i", "0.2", "-W", "1", INET_ADDR]);
    let Some(after) = count() else {
        return false;
    };
    directions
        .iter()
        .all(|&d| after.packets[d] > before.packets[d])
}

const LAN: (&str, &[usize]) = ("lan0", &[DOWNLOAD, UPLOAD]);
const WAN: (&str, &[usize]) = ("wan0", &[UPLOAD]);

/// Polls `check` every `every` until it holds (how long it took) or
/// `limit` passes (None).
fn wait_for(limit: Duration, every: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    let rounds = limit.as_millis() / every.as_millis().max(1) + 1;
    for _ in 0..rounds {
        if check() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= limit {
            break;
        }
        std::thread::sleep(every);
    }
    None
}

/// Seconds until jatah is back on an interface (None after 15 s).
fn seconds_until_attached(lab: &Lab, (ifname, directions): (&str, &[usize])) -> Option<f64> {
    wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        attached(lab, ifname, directions)
    })
    .map(|d| d.as_secs_f64())
}

fn metric(lab: &Lab, prefix: &str) -> Option<f64> {
    let (_, body) = lab.http_get("/metrics").ok()?;
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// dinsos' traffic in `dir` through the recreated interface is held to
/// its 10M ceiling and counted.
fn assert_enforced(lab: &Lab, dir: Direction) {
    let d = match dir {
        Direction::Download => DOWNLOAD,
        Direction::Upload => UPLOAD,
    };
    let before = lab.counters().unwrap()["dinsos"].bytes[d];
    let r = wait_iperf(lab.spawn_iperf(0, dir, 5, 1).unwrap()).unwrap();
    let mbit = r.bits_per_second / 1e6;
    let after = lab.counters().unwrap()["dinsos"].bytes[d];
    eprintln!(
        "after re-attaching: {mbit:.2} Mbit/s, counted {} bytes",
        after - before
    );
    assert!(
        (8.0..=10.3).contains(&mbit),
        "held to the 10M ceiling: {mbit:.2}"
    );
    assert!(after - before > 4_000_000, "counted: {}", after - before);
}

#[test]
fn a_lan_interface_deleted_and_created_again_is_shaped_again_within_5_s() {
    let _one = one_lab_at_a_time();
    let mut lab = build("jt-flap");
    lab.start_daemon(jatah()).unwrap();
    assert!(attached(&lab, LAN.0, LAN.1));
    assert_eq!(
        metric(&lab, "jatah_interface_attached{interface=\"lan0\"}"),
        Some(1.0)
    );

    lab.delete_lan().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(lab.daemon_running(), "jatah lives on");
    assert_eq!(
        metric(&lab, "jatah_interface_attached{interface=\"lan0\"}"),
        Some(0.0),
        "the gauge shows the interface missing"
    );
    // The scrape could not read lan0's HTB classes: logged and counted.
    let errors = metric(
        &lab,
        "jatah_kernel_errors_total{interface=\"lan0\",operation=\"htb_stats\"}",
    );
    assert!(errors.is_some_and(|n| n >= 1.0), "{errors:?}");

    lab.create_lan().unwrap();
    let took = seconds_until_attached(&lab, LAN);
    eprintln!("lan0 recreated: classifiers and HTB back after {took:?} s");
    assert!(
        took.is_some_and(|s| s <= 5.0),
        "{took:?}\n{}",
        lab.daemon_log()
    );
    let log = lab.daemon_log();
    assert!(log.contains("interface is gone"), "{log}");
    assert!(log.contains("interface back"), "{log}");
    assert_enforced(&lab, Direction::Download);
    assert_eq!(
        metric(&lab, "jatah_interface_attached{interface=\"lan0\"}"),
        Some(1.0)
    );
}

#[test]
fn a_wan_interface_deleted_and_created_again_is_shaped_again_within_5_s() {
    let _one = one_lab_at_a_time();
    let mut lab = build("jt-wflap");
    lab.start_daemon(jatah()).unwrap();
    assert!(attached(&lab, WAN.0, WAN.1));
    lab.delete_wan().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(lab.daemon_running(), "jatah lives on");
    assert_eq!(
        metric(&lab, "jatah_interface_attached{interface=\"wan0\"}"),
        Some(0.0)
    );
    lab.create_wan().unwrap();
    let took = seconds_until_attached(&lab, WAN);
    eprintln!("wan0 recreated: classifier and HTB back after {took:?} s");
    assert!(
        took.is_some_and(|s| s <= 5.0),
        "{took:?}\n{}",
        lab.daemon_log()
    );
    assert_enforced(&lab, Direction::Upload);
}

#[test]
fn an_interface_created_after_jatah_starts_is_attached_within_5_s() {
    let _one = one_lab_at_a_time();
    let mut lab = build("jt-late");
    lab.delete_lan().unwrap();
    // A service manager's notify socket: nothing comes before attaching.
    let notify = NotifySocket::bind(&lab.dir().join("notify.sock"));
    lab.spawn_daemon(jatah()).unwrap();
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        lab.daemon_log()
            .contains("waiting for the interface to appear")
    });
    let log = lab.daemon_log();
    assert!(log.contains("waiting for the interface to appear"), "{log}");
    assert!(log.contains("lan0"), "the log names the interface: {log}");
    assert!(lab.daemon_running(), "jatah waits rather than exits");
    assert!(!attached(&lab, LAN.0, LAN.1));
    // A reload while it waits reads the policy again; it does not end it.
    let pid = lab.daemon_pid().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        lab.daemon_log().contains("SIGHUP: policy read again")
    });
    assert!(
        lab.daemon_running(),
        "SIGHUP while waiting: {}",
        lab.daemon_log()
    );
    assert!(lab.daemon_log().contains("SIGHUP: policy read again"));
    assert_eq!(notify.pending(), None, "not READY while waiting");

    lab.create_lan().unwrap();
    let took = seconds_until_attached(&lab, LAN);
    eprintln!("lan0 created after start: attached after {took:?} s");
    // systemd hears READY only now (Type=notify).
    let ready = notify.recv_timeout(Duration::from_secs(10));
    assert!(
        ready.as_deref().is_some_and(|m| m.starts_with("READY=1")),
        "READY after attaching: {ready:?}"
    );
    assert!(
        took.is_some_and(|s| s <= 5.0),
        "{took:?}\n{}",
        lab.daemon_log()
    );
    wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        lab.http_get("/healthz").ok().map(|(c, _)| c) == Some(200)
    });
    assert_eq!(lab.http_get("/healthz").unwrap().0, 200);
    assert_enforced(&lab, Direction::Download);
}

/// A datagram socket standing in for systemd's `$NOTIFY_SOCKET` (the lab
/// passes its path to jatah when it exists).
struct NotifySocket(std::os::unix::net::UnixDatagram);

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        NotifySocket(std::os::unix::net::UnixDatagram::bind(path).unwrap())
    }

    /// The next message, or None after `limit`.
    fn recv_timeout(&self, limit: Duration) -> Option<String> {
        self.0.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 512];
        let n = self.0.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// A message already waiting, without blocking.
    fn pending(&self) -> Option<String> {
        self.0.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 512];
        let got = self.0.recv(&mut buf).ok();
        self.0.set_nonblocking(false).unwrap();
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

/// A small tmpfs mounted over the lab's history directory, unmounted on
/// Drop (declare it after the lab so it goes first).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "jatah-test-disk",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_owned())
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        for _ in 0..10_000 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Seconds until the next minute boundary, plus `extra`.
fn past_next_minute(extra: u64) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Duration::from_secs(60 - now % 60 + extra)
}

fn usage_download(lab: &Lab) -> (u16, u64) {
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    let path = format!(
        "/api/v1/opds/dinsos/usage?from={}&to={}&step=1m",
        jatah::lab::url_encode(&from),
        jatah::lab::url_encode(&to)
    );
    let (code, body) = lab
        .http_get_as(&path, Some(jatah::lab::LAB_ADMIN_TOKEN))
        .unwrap();
    if code != 200 {
        return (code, 0);
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let total = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["download_bytes"].as_u64().unwrap())
        .sum();
    (code, total)
}

#[test]
fn a_full_history_disk_stops_only_the_history_and_loses_no_bytes_once_freed() {
    let _one = one_lab_at_a_time();
    let mut lab = build("jt-disk");
    let disk = SmallDisk::mount(&lab.dir().join("data"), "4m");
    lab.start_daemon(jatah()).unwrap();
    // The first minute sets the history's cursors.
    std::thread::sleep(past_next_minute(3));
    assert_eq!(usage_download(&lab).0, 200);

    let filler = disk.fill();
    let counted_before = lab.counters().unwrap()["dinsos"].bytes[DOWNLOAD];
    let r = wait_iperf(lab.spawn_iperf(0, Direction::Download, 4, 1).unwrap()).unwrap();
    let sent_while_full = lab.counters().unwrap()["dinsos"].bytes[DOWNLOAD] - counted_before;
    let mbit = r.bits_per_second / 1e6;
    assert!((8.0..=10.3).contains(&mbit), "still shaped: {mbit:.2}");
    let failed = wait_for(Duration::from_secs(75), Duration::from_millis(500), || {
        metric(&lab, "jatah_history_available") == Some(0.0)
    });
    assert!(
        failed.is_some(),
        "the store reports the full disk\n{}",
        lab.daemon_log()
    );
    assert_eq!(
        usage_download(&lab).0,
        503,
        "the API says the store is unavailable"
    );
    let (code, body) = lab.http_get("/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("jatah_opd_download_bytes_total{opd=\"dinsos\"}"));
    assert!(lab.daemon_log().contains("is full"), "{}", lab.daemon_log());

    std::fs::remove_file(filler).unwrap();
    let recovered = wait_for(Duration::from_secs(75), Duration::from_millis(500), || {
        metric(&lab, "jatah_history_available") == Some(1.0)
    });
    assert!(
        recovered.is_some(),
        "recovers once space returns\n{}",
        lab.daemon_log()
    );
    let (code, total) = usage_download(&lab);
    eprintln!(
        "disk full then freed: {sent_while_full} bytes counted while full, history has {total}"
    );
    assert_eq!(code, 200);
    assert!(
        total >= sent_while_full,
        "the bytes of the outage are in the history: {total} < {sent_while_full}"
    );
    assert!(lab.daemon_log().contains("recovered"));
    drop(disk);
}
