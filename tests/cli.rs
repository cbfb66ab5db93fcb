//! The command line as an admin meets it: `jatah check` on good and broken
//! policies, `jatah run` refusing what it cannot enforce, and `--help`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{Scratch, jatah};

fn run_jatah(args: &[&str]) -> Output {
    Command::new(jatah())
        .args(args)
        .output()
        .expect("running jatah")
}

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// The policy written into a scratch directory of its own; the directory
/// goes when the returned guard drops.
fn temp_policy(name: &str, text: &str) -> (Scratch, PathBuf) {
    let dir = Scratch::new("cli");
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

#[test]
fn every_example_policy_passes_check() {
    let mut seen = 0;
    for entry in std::fs::read_dir(policies()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = run_jatah(&["check", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains(": ok: "));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected the example policies in policies/");
}

#[test]
fn a_broken_policy_is_reported_with_file_line_and_column_and_exit_code_1() {
    let (_dir, p) = temp_policy(
        "broken.toml",
        "[gateway]\nwan = \"eth0\"\nlan = [\"eth1\"]\ndownload = \"100M\"\nupload = \"100M\"\n\n\
         [[opd]]\nid = \"dinkes\"\nname = \"Dinas Kesehatan\"\nsubnets = [\"10.20.1.0/24\"]\n\
         download = { guaranteed = \"20M\", ceiling = \"10M\" }\nupload = { guaranteed = \"1M\", ceiling = \"5MB\" }\n",
    );
    let out = run_jatah(&["check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = p.display().to_string();
    assert!(
        err.contains(&format!("{file}:11:")),
        "ceiling < guaranteed on line 11: {err}"
    );
    assert!(
        err.contains(&format!("{file}:12:")),
        "byte unit on line 12: {err}"
    );
    assert!(err.contains("byte units"), "{err}");
}

/// A policy of `n` OPDs, each with its own /30.
fn opds_policy(n: usize) -> String {
    let mut text = String::from(
        "[gateway]\nwan = \"eth0\"\nlan = [\"eth1\"]\ndownload = \"100G\"\nupload = \"100G\"\n",
    );
    for i in 0..n {
        let net = std::net::Ipv4Addr::from(0x0a00_0000 + 4 * i as u32);
        text.push_str(&format!(
            "\n[[opd]]\nid = \"o{i}\"\nname = \"Kantor {i}\"\nsubnets = [\"{net}/30\"]\n\
             download = {{ guaranteed = \"1M\", ceiling = \"2M\" }}\n\
             upload = {{ guaranteed = \"1M\", ceiling = \"2M\" }}\n"
        ));
    }
    text
}

#[test]
fn check_holds_a_policy_to_the_data_paths_limits_as_run_does() {
    let max = jatah_common::MAX_OPDS as usize;
    let (_dir, p) = temp_policy("max-opds.toml", &opds_policy(max));
    let out = run_jatah(&["check", p.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{max} OPDs")));

    let (_dir, p) = temp_policy("too-many-opds.toml", &opds_policy(max + 1));
    let out = run_jatah(&["check", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} OPDs, more than the {max} jatah's data path has slots for",
            max + 1
        )),
        "{err}"
    );
}

const NO_SUCH_INTERFACES: &str = "[gateway]\nwan = \"jtnoexist0\"\nlan = [\"jtnoexist1\"]\n\
    download = \"100M\"\nupload = \"100M\"\n\n[[opd]]\nid = \"dinkes\"\nname = \"Dinas Kesehatan\"\n\
    subnets = [\"10.20.1.0/24\"]\ndownload = { guaranteed = \"20M\", ceiling = \"30M\" }\n\
    upload = { guaranteed = \"1M\", ceiling = \"5M\" }\n";

#[test]
fn run_refuses_a_missing_bpffs_at_once() {
    jatah::lab::netns::require_root();
    let (dir, p) = temp_policy("nobpffs.toml", NO_SUCH_INTERFACES);
    let run_dir = dir.join("run");
    let out = run_jatah(&[
        "run",
        "--policy",
        p.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--bpffs",
        "/nonexistent",
        "--run-dir",
        run_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a bpffs mount") && err.contains("mount -t bpf bpf /nonexistent"),
        "{err}"
    );
}

#[test]
fn run_waits_for_interfaces_that_do_not_exist_yet_and_changes_nothing_meanwhile() {
    jatah::lab::netns::require_root();
    let bpffs = jatah::lab::netns::BpffsMount::new("jt-cli").unwrap();
    let (dir, p) = temp_policy("noiface.toml", NO_SUCH_INTERFACES);
    let log_path = dir.join("noiface.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(jatah())
        .args(["run", "--policy"])
        .arg(&p)
        .args(["--listen", "127.0.0.1:0", "--bpffs"])
        .arg(bpffs.path())
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    /// Kills the child however the test ends.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id() as i32;
    let t0 = std::time::Instant::now();
    let said = |needle: &str| {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains(needle)
    };
    while !said("waiting for the interface to appear")
        && t0.elapsed() < std::time::Duration::from_secs(20)
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        text.contains("waiting for the interface to appear") && text.contains("jtnoexist0"),
        "the log names the missing interface: {text}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "jatah waits, not exits"
    );
    assert!(
        !bpffs.path().join("jatah").exists(),
        "nothing is pinned while waiting"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let mut reaped = Reap(child);
    let status = (0..100)
        .find_map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            reaped.0.try_wait().unwrap()
        })
        .expect("jatah stops on SIGTERM while waiting");
    assert!(status.success(), "{status}");
    assert!(said("nothing was changed"));
}

#[test]
fn help_names_every_subcommand() {
    let out = run_jatah(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["check", "run", "down", "lab"] {
        assert!(text.contains(sub), "--help does not mention {sub}: {text}");
    }
}

#[test]
fn the_systemd_unit_is_valid() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/jatah.service"),
    )
    .unwrap();
    for cap in [
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_PERFMON",
        "ProtectSystem=strict",
        "StateDirectory=jatah",
        "Type=notify",
        "Restart=always",
        "UMask=0077",
        "LimitNOFILE=",
        "SystemCallFilter=@system-service bpf",
    ] {
        assert!(unit.contains(cap), "the unit lacks {cap}");
    }
    // systemd-analyze checks every directive; point it at the built binary.
    let dir = Scratch::new("unit");
    let path = dir.join("jatah.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/jatah", jatah().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "systemd-analyze verify: {report}"
    );
    // Its exposure as systemd scores it (0 best, 10 worst; the README
    // quotes it): "OK" is below 4.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for jatah.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(score < 4.0, "the unit's exposure is {score}:\n{text}");
}
