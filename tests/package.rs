//! The Debian package (scripts/package.sh): built around the binary this
//! test run built (cargo-deb `--no-build`, so nothing is compiled twice),
//! installed with dpkg, its files checked, the installed /usr/bin/jatah run
//! in the namespace lab, then purged, leaving nothing behind.
//!
//! It installs into the real system, so it refuses to run on a machine
//! where a jatah is installed already (a package, or the files a source
//! install leaves), and a Drop guard purges the package however the test
//! ends. The service is never enabled or started.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{LAB_ADMIN_TOKEN, Lab};
use jatah::policy::Direction;
use support::fixtures::dinsos_and_bpbd_lab;
use support::{jatah, one_lab_at_a_time};

const TOKENS: &str = "/etc/jatah/tokens.toml";
const POLICY: &str = "/etc/jatah/policy.toml";
const UNIT: &str = "/usr/lib/systemd/system/jatah.service";

/// What an admin's jatah would leave on this machine; the test touches
/// none of it.
const AN_ADMINS_JATAH: [&str; 5] = [
    "/etc/jatah",
    "/var/lib/jatah",
    "/usr/lib/systemd/system/jatah.service",
    "/etc/systemd/system/jatah.service",
    "/usr/bin/jatah",
];

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not start: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

fn query(field: &str) -> String {
    stdout(Command::new("dpkg-query").args(["-W", &format!("-f=${{{field}}}"), "jatah"]))
}

/// Refuses, naming what it found, when jatah is installed here already.
fn refuse_beside_an_installed_jatah() {
    let status = query_status();
    assert!(
        status.is_empty() || status.contains("not-installed"),
        "a jatah package is on this machine ({status}): this test installs and purges \
         one, so it refuses to run here (never an admin's install)"
    );
    for path in AN_ADMINS_JATAH {
        assert!(
            !Path::new(path).exists(),
            "{path} exists: this looks like a jatah installed on this machine, and the \
             package test would install over it and purge it; it refuses to run here"
        );
    }
}

/// Purges the package when dropped, also when the test failed midway.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let out = Command::new("dpkg")
            .args(["--purge", "jatah"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("dpkg --purge jatah failed: {out:?}");
        }
    }
}

/// Builds the package from this run's binary into a fresh directory.
fn build_package() -> (PathBuf, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ok = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "cargo-deb is missing: run ./scripts/setup.sh build");
    let out_dir = std::env::temp_dir().join(format!("jt-package-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let started = Instant::now();
    run(Command::new(repo.join("scripts/package.sh"))
        .arg("--binary")
        .arg(jatah())
        .arg("--output")
        .arg(&out_dir)
        .arg("--fast"));
    eprintln!("package built in {:.1} s", started.elapsed().as_secs_f64());
    let deb = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("package.sh wrote a .deb");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(name, format!("jatah_{version}_amd64.deb"));
    (out_dir, deb)
}

/// The files the package holds, as dpkg lists them after installing.
fn files_listed() -> Vec<String> {
    stdout(Command::new("dpkg").args(["-L", "jatah"]))
        .lines()
        .map(str::to_string)
        .collect()
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

fn check_installed_files(listed: &[String]) {
    let subcommands = [
        "jatah",
        "jatah-check",
        "jatah-run",
        "jatah-status",
        "jatah-plan",
        "jatah-token",
        "jatah-token-new",
        "jatah-token-list",
        "jatah-token-revoke",
        "jatah-down",
        "jatah-lab",
    ];
    let mut expected: Vec<String> = [
        "/usr/bin/jatah",
        UNIT,
        POLICY,
        "/usr/share/doc/jatah/README.md",
        "/usr/share/doc/jatah/copyright",
        "/usr/share/jatah/policies/minimal.toml",
        "/usr/share/jatah/dashboards/README.md",
        "/usr/share/jatah/dashboards/rules/jatah-alerts.rules.yml",
        "/usr/share/bash-completion/completions/jatah",
        "/usr/share/zsh/vendor-completions/_jatah",
        "/usr/share/fish/vendor_completions.d/jatah.fish",
    ]
    .map(String::from)
    .to_vec();
    expected.extend(
        subcommands
            .iter()
            .map(|s| format!("/usr/share/man/man1/{s}.1.gz")),
    );
    for f in &expected {
        assert!(listed.contains(f), "dpkg -L jatah lacks {f}:\n{listed:#?}");
        assert!(Path::new(f).is_file(), "{f} is listed but not there");
    }
    assert!(
        !listed.iter().any(|f| f.contains("generate-docs")),
        "a page or file for the hidden generate-docs command was packaged"
    );
    assert!(
        !listed.iter().any(|f| f == TOKENS),
        "the tokens file must not be a packaged file (an upgrade would replace it)"
    );
    assert_eq!(mode("/usr/bin/jatah"), 0o755);

    // The policy is a conffile: an upgrade never overwrites an admin's edit.
    let conffiles = query("Conffiles");
    assert!(
        conffiles.lines().any(|l| l.trim().starts_with(POLICY)),
        "{POLICY} is not a conffile: {conffiles:?}"
    );
    // Nothing but the C library.
    let depends = query("Depends");
    assert!(
        depends.starts_with("libc6") && !depends.contains(','),
        "the package depends on more than libc6: {depends}"
    );

    // The tokens file: made by postinst, root's alone, with no token in it.
    let meta = std::fs::metadata(TOKENS).expect("postinst creates the tokens file");
    assert_eq!(mode(TOKENS), 0o600, "{TOKENS} must be mode 0600");
    assert_eq!(meta.uid(), 0);
    let text = std::fs::read_to_string(TOKENS).unwrap();
    assert!(
        text.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "a fresh tokens file holds comments only: {text}"
    );

    // The unit runs the packaged binary, and systemd accepts it as shipped.
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        unit.contains("\nExecStart=/usr/bin/jatah run ")
            && unit.contains("\nExecStartPre=/usr/bin/jatah check "),
        "the unit does not run /usr/bin/jatah:\n{unit}"
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .output()
        .expect("systemd-analyze");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "systemd-analyze verify {UNIT}: {report}"
    );
    // Installed, not enabled.
    for wants in ["multi-user.target.wants", "default.target.wants"] {
        let link = Path::new("/etc/systemd/system")
            .join(wants)
            .join("jatah.service");
        assert!(
            !link.exists(),
            "installing enabled the service: {}",
            link.display()
        );
    }

    // Man pages: valid gzip, and man renders the main one with its
    // subcommands.
    for s in subcommands {
        run(Command::new("gzip").args(["-t", &format!("/usr/share/man/man1/{s}.1.gz")]));
    }
    let page = stdout(
        Command::new("man")
            .args(["-l", "/usr/share/man/man1/jatah.1.gz"])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80"),
    );
    for s in [
        "jatah-run(1)",
        "jatah-check(1)",
        "jatah-token(1)",
        "SUBCOMMANDS",
    ] {
        assert!(page.contains(s), "man jatah lacks {s}:\n{page}");
    }
    let page = stdout(
        Command::new("man")
            .args(["-l", "/usr/share/man/man1/jatah-run.1.gz"])
            .env("MANPAGER", "cat"),
    );
    assert!(page.contains("--status-listen"), "man jatah-run:\n{page}");

    // Completions: each names the subcommands; bash parses its file.
    for f in [
        "/usr/share/bash-completion/completions/jatah",
        "/usr/share/zsh/vendor-completions/_jatah",
        "/usr/share/fish/vendor_completions.d/jatah.fish",
    ] {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.contains("check") && text.contains("revoke"),
            "{f} does not complete jatah's subcommands"
        );
    }
    run(Command::new("bash").args(["-n", "/usr/share/bash-completion/completions/jatah"]));

    // The installed binary checks the installed policy.
    let out = stdout(Command::new("/usr/bin/jatah").args(["check", POLICY]));
    assert!(out.contains(": ok: "), "jatah check {POLICY}: {out}");
}

/// Polls an API path with a token until it answers `want` (at most 10 s).
fn answers(lab: &Lab, path: &str, token: &str, want: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if matches!(lab.http_get_as(path, Some(token)), Ok((s, _)) if s == want) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The installed binary in the lab, with the tokens file as postinst made
/// it: it starts, answers /healthz, holds an OPD to its ceiling, and takes
/// a token `jatah token new --append` adds to that file.
fn run_installed_jatah_in_the_lab() {
    let _one = one_lab_at_a_time();
    let mut lab = Lab::build(dinsos_and_bpbd_lab("jt-pkg", true)).expect("building the lab");
    let lab_tokens = lab.dir().join("tokens.toml");
    // The lab's file is mode 0600 already; writing keeps its mode.
    std::fs::write(&lab_tokens, std::fs::read(TOKENS).unwrap()).unwrap();
    lab.start_daemon(Path::new("/usr/bin/jatah"))
        .expect("the installed jatah starts with the fresh tokens file");
    let (status, body) = lab.http_get("/healthz").unwrap();
    assert_eq!(status, 200, "/healthz: {body}");
    // Its tokens are the fresh file's (none): the lab's own admin token
    // is refused.
    assert!(answers(&lab, "/api/v1/opds", LAB_ADMIN_TOKEN, 401));

    let out = run(Command::new("/usr/bin/jatah").args([
        "token",
        "new",
        "--role",
        "admin",
        "--name",
        "package-test",
        "--append",
        TOKENS,
    ]));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!token.is_empty(), "token new printed no token");
    assert_eq!(mode(TOKENS), 0o600, "{TOKENS} after --append");
    assert!(!std::fs::read_to_string(TOKENS).unwrap().contains(&token));
    std::fs::write(&lab_tokens, std::fs::read(TOKENS).unwrap()).unwrap();
    assert!(
        answers(&lab, "/api/v1/opds", &token, 200),
        "the appended token was not accepted:\n{}",
        lab.daemon_log()
    );

    // Shaping: dinsos downloads against its 10 Mbit/s ceiling.
    let i = lab.opd_index("dinsos").unwrap();
    let r = lab.iperf(i, Direction::Download, 5, 1).unwrap();
    let rate = r.bits_per_second / 1e6;
    eprintln!("installed jatah: dinsos downloads at {rate:.2} Mbit/s (ceiling 10)");
    assert!(
        (9.0..=10.3).contains(&rate),
        "download {rate:.2} Mbit/s outside 9.0..10.3: not held to the ceiling"
    );
    lab.stop_daemon().unwrap();
}

#[test]
fn the_package_installs_runs_in_the_lab_and_purges_to_nothing() {
    require_root();
    refuse_beside_an_installed_jatah();
    let (out_dir, deb) = build_package();

    let installed = Installed;
    let started = Instant::now();
    let out = run(Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    eprintln!("dpkg -i took {:.1} s", started.elapsed().as_secs_f64());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("NOT enabled") && said.contains("systemctl enable --now jatah"),
        "postinst does not tell the admin what to do next:\n{said}"
    );
    let listed = files_listed();
    check_installed_files(&listed);
    run_installed_jatah_in_the_lab();

    // The history a running service would have kept: purge removes it.
    std::fs::create_dir_all("/var/lib/jatah").unwrap();
    std::fs::write("/var/lib/jatah/history.db", b"").unwrap();

    // A remove keeps the configuration and the history ...
    run(Command::new("dpkg")
        .args(["--remove", "jatah"])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    for kept in [POLICY, TOKENS, "/var/lib/jatah/history.db"] {
        assert!(Path::new(kept).exists(), "dpkg --remove took {kept}");
    }
    assert!(!Path::new("/usr/bin/jatah").exists());
    // ... a purge takes everything.
    run(Command::new("dpkg")
        .args(["--purge", "jatah"])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    let status = query_status();
    assert!(
        status.is_empty() || status.contains("not-installed"),
        "dpkg still knows jatah: {status}"
    );
    let left: Vec<&String> = listed
        .iter()
        .filter(|f| {
            // Shared directories (/usr, /etc, /usr/share/man/man1) stay.
            Path::new(f).is_file() || Path::new(f).is_symlink()
        })
        .collect();
    assert!(left.is_empty(), "files left after purge: {left:?}");
    for path in [
        "/etc/jatah",
        "/var/lib/jatah",
        "/usr/share/jatah",
        "/usr/share/doc/jatah",
        UNIT,
    ] {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
    let _ = std::fs::remove_dir_all(out_dir);
    drop(installed);
}

fn query_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "jatah"])
        .output()
        .expect("dpkg-query");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
