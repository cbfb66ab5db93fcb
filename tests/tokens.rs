//! Tokens at rest: `jatah token new --append` puts only a hash in a file
//! its owner alone may read, `list` and `revoke` keep that file, a running
//! jatah refuses a revoked token within 2 s without a restart, and a
//! tokens file others may read stops `jatah run` at once.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{Lab, LabOpd, LabSpec};
use support::{Scratch, jatah, one_lab_at_a_time};

fn run_jatah(args: &[&str]) -> Output {
    Command::new(jatah())
        .args(args)
        .env_remove("JATAH_TOKENS")
        .output()
        .expect("running jatah")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory for one test, removed when it ends.
fn temp_dir(test: &str) -> Scratch {
    Scratch::new(&format!("tokens-{test}"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `jatah token new --append FILE`: the token it printed, after checking
/// that stdout holds the token alone and the file does not hold it.
fn new_token(file: &Path, name: &str, role: &str) -> String {
    let f = file.to_str().unwrap();
    let out = run_jatah(&[
        "token", "new", "--role", role, "--name", name, "--append", f,
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "token new --append: {stderr}");
    let token = stdout.trim().to_string();
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "stdout is the token alone: {stdout:?}"
    );
    assert!(!stderr.contains(&token), "the token goes to stdout only");
    assert!(
        stderr.contains(name) && stderr.contains(f) && stderr.lines().count() == 1,
        "a one-line hint: {stderr}"
    );
    let held = std::fs::read_to_string(file).unwrap();
    assert!(
        !held.contains(&token),
        "no plaintext token in the file:\n{held}"
    );
    assert_eq!(mode(file), 0o600, "the tokens file is mode 0600");
    token
}

#[test]
fn new_list_and_revoke_keep_the_file_private_and_free_of_tokens() {
    let dir = temp_dir("cli");
    let file = dir.join("tokens.toml");
    let f = file.to_str().unwrap();
    let noc = new_token(&file, "noc", "admin");
    // Comments the admin writes survive later edits.
    let mut held = std::fs::read_to_string(&file).unwrap();
    held = format!("# API tokens of this gateway\n{held}");
    std::fs::write(&file, held).unwrap();
    let dinkes = new_token(&file, "operator dinkes", "opd:dinkes");
    assert_ne!(noc, dinkes);

    let out = run_jatah(&[
        "token", "new", "--role", "admin", "--name", "noc", "--append", f,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("\"noc\" is in the file already"),
        "{}",
        text(&out.stderr)
    );

    let out = run_jatah(&["token", "list", "--tokens", f]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(
        listing.contains("noc") && listing.contains("admin"),
        "{listing}"
    );
    assert!(
        listing.contains("operator dinkes") && listing.contains("opd:dinkes"),
        "{listing}"
    );
    let held = std::fs::read_to_string(&file).unwrap();
    for hash in held.lines().filter_map(|l| l.strip_prefix("sha256 = ")) {
        let hash = hash.trim_matches('"');
        assert!(!listing.contains(hash), "no hash in full: {listing}");
        assert!(listing.contains(&hash[..8]), "a short prefix: {listing}");
    }

    let out = run_jatah(&["token", "revoke", "nobody", "--tokens", f]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("no token named \"nobody\"")
            && err.contains("\"noc\"")
            && err.contains("\"operator dinkes\""),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), held, "unchanged");

    let out = run_jatah(&["token", "revoke", "noc", "--tokens", f]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(
        after.starts_with("# API tokens of this gateway\n"),
        "{after}"
    );
    assert!(
        !after.contains("\"noc\"") && after.contains("operator dinkes"),
        "{after}"
    );
    assert_eq!(mode(&file), 0o600);
    let entries = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(entries, 1, "no temporary file left in {}", dir.display());

    // Without --append: the entry on stdout, the token on stderr only.
    let out = run_jatah(&["token", "new", "--role", "opd:dinkes", "--name", "x"]);
    assert!(out.status.success());
    let (entry, hint) = (text(&out.stdout), text(&out.stderr));
    let token = hint.lines().last().unwrap().trim();
    assert_eq!(token.len(), 64, "{hint}");
    assert!(
        entry.contains("[[token]]") && !entry.contains(token),
        "{entry}"
    );

    // A file others may read is refused, and left as it was.
    chmod(&file, 0o644);
    for args in [
        vec!["token", "list", "--tokens", f],
        vec!["token", "revoke", "operator dinkes", "--tokens", f],
        vec![
            "token", "new", "--role", "admin", "--name", "y", "--append", f,
        ],
    ] {
        let out = run_jatah(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("{f}: mode 0644")) && err.contains(&format!("chmod 600 {f}")),
            "{args:?}: {err}"
        );
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), after);
}

#[test]
fn run_refuses_a_tokens_file_group_or_others_may_read() {
    let dir = temp_dir("run");
    let file = dir.join("tokens.toml");
    new_token(&file, "noc", "admin");
    for m in [0o644, 0o640] {
        chmod(&file, m);
        let out = run_jatah(&[
            "run",
            "--policy",
            dir.join("policy.toml").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--run-dir",
            dir.join("run").to_str().unwrap(),
            "--tokens",
            file.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        let f = file.display();
        assert!(
            err.contains(&format!(
                "{f}: mode {m:04o} lets group or others read or write"
            )) && err.contains(&format!("`chmod 600 {f}`")),
            "{err}"
        );
    }
}

/// Polls `f` every 50 ms until it holds, for at most `limit`: the time it
/// took, or None.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    for _ in 0..=(limit.as_millis() / 50) {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= limit {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_revoked_token_gets_401_within_2_s_without_a_restart() {
    require_root();
    let _one = one_lab_at_a_time();
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-tok".into(),
        download: "100M".into(),
        upload: "100M".into(),
        nat: false,
        mtu: 1500,
        opds: vec![LabOpd::new(
            "dinkes",
            "Dinas Kesehatan",
            ("5M", "10M"),
            ("5M", "10M"),
        )],
    })
    .expect("building the lab");
    // The lab's own tokens file, replaced by one `jatah token new` makes.
    let file = lab.dir().join("tokens.toml");
    std::fs::remove_file(&file).unwrap();
    let f = file.to_str().unwrap().to_string();
    let noc = new_token(&file, "noc", "admin");
    let dinkes = new_token(&file, "operator dinkes", "opd:dinkes");
    lab.start_daemon(jatah()).unwrap();
    let pid = lab.daemon_pid().unwrap();
    let status = |lab: &Lab, token: &str| {
        lab.http_get_as("/api/v1/opds/dinkes", Some(token))
            .map(|(s, _)| s)
            .unwrap_or(0)
    };
    assert_eq!(status(&lab, &noc), 200);
    assert_eq!(status(&lab, &dinkes), 200);

    let out = run_jatah(&["token", "revoke", "operator dinkes", "--tokens", &f]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let took = within(Duration::from_secs(2), || status(&lab, &dinkes) == 401);
    assert!(
        took.is_some(),
        "a revoked token is refused within 2 s:\n{}",
        lab.daemon_log()
    );
    eprintln!("revoked token refused after {:?}", took.unwrap());
    assert_eq!(status(&lab, &noc), 200, "the other token still works");
    assert!(
        lab.daemon_log()
            .contains("tokens reloaded: 1 tokens (added: [], removed: [\"operator dinkes\"])"),
        "{}",
        lab.daemon_log()
    );

    // A token added while jatah runs works as soon.
    let again = new_token(&file, "operator dinkes", "opd:dinkes");
    assert!(
        within(Duration::from_secs(2), || status(&lab, &again) == 200).is_some(),
        "{}",
        lab.daemon_log()
    );
    assert_eq!(status(&lab, &dinkes), 401, "the old token stays revoked");

    // A file others may read is not read: the tokens in force stay.
    chmod(&file, 0o644);
    let said = |needle: &str| lab.daemon_log().contains(needle);
    assert!(
        within(Duration::from_secs(3), || said(
            "the tokens loaded before stay in force"
        ))
        .is_some(),
        "{}",
        lab.daemon_log()
    );
    assert!(said(&format!("chmod 600 {f}")), "{}", lab.daemon_log());
    assert_eq!(status(&lab, &noc), 200);
    assert_eq!(status(&lab, &again), 200);

    // SIGHUP reads it again too.
    chmod(&file, 0o600);
    assert!(
        within(Duration::from_secs(3), || said(
            "tokens reloaded: 2 tokens (added: [], removed: [])"
        ))
        .is_some(),
        "{}",
        lab.daemon_log()
    );
    // SAFETY: signalling our own child (`ip netns exec` execs jatah).
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let hup = || {
        lab.daemon_log()
            .lines()
            .any(|l| l.contains("tokens reloaded: 2 tokens") && l.contains("SIGHUP"))
    };
    assert!(
        within(Duration::from_secs(3), hup).is_some(),
        "{}",
        lab.daemon_log()
    );

    assert_eq!(lab.daemon_pid(), Some(pid), "no restart");
    assert!(lab.daemon_running(), "{}", lab.daemon_log());
    assert!(
        !lab.daemon_log().contains(&noc) && !lab.daemon_log().contains(&again),
        "logs never show a token"
    );
}
