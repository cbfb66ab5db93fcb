//! The API against its own OpenAPI document, fuzzed by schemathesis (from
//! PyPI; `./scripts/setup.sh test` installs it into .venv/): a real `jatah run` in the lab,
//! once with the admin token and once with an OPD's token. Every check
//! runs (no 5xx, status codes, content types, headers and bodies match the
//! schema, bad input rejected, auth not ignored) but
//! `positive_data_acceptance`: a schema-valid request can still be refused
//! with 400 for what JSON Schema cannot say (`from` after `to`, a range
//! longer than the store keeps).

mod support;

use std::path::Path;
use std::process::Command;

use jatah::lab::netns::require_root;
use jatah::lab::{GW_LISTEN, LAB_ADMIN_TOKEN, Lab, LabOpd, LabSpec, lab_opd_token};
use support::jatah;

/// The schemathesis command in the repository's virtual environment, where
/// `./scripts/setup.sh test` installs it (Debian's system Python refuses
/// `pip install`, PEP 668).
fn schemathesis() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/schemathesis")
}

fn schemathesis_run(lab: &Lab, token: &str, report: &Path) -> (bool, String) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", lab.gw.name()])
        .arg(schemathesis())
        .arg("run")
        .arg(format!("http://{GW_LISTEN}/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "50"])
        .args(["--request-timeout", "20"])
        .args(["--max-time", "45"])
        .args(["--seed", "20261128"])
        .args(["--report", "junit", "--report-dir"])
        .arg(report)
        .arg("--no-color")
        .env("SCHEMATHESIS_TELEMETRY", "false");
    let out = cmd
        .output()
        .expect("schemathesis runs (./scripts/setup.sh test installs it into .venv/)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_api_holds_to_its_openapi_document_for_admin_and_opd_tokens() {
    require_root();
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-st".into(),
        download: "100M".into(),
        upload: "50M".into(),
        nat: true,
        mtu: 1500,
        opds: vec![
            LabOpd::new("dinkes", "Dinas Kesehatan", ("20M", "40M"), ("5M", "10M")),
            LabOpd::new("bappeda", "Bappeda", ("10M", "20M"), ("5M", "10M")),
        ],
    })
    .unwrap();
    lab.start_daemon(jatah()).unwrap();
    let reports = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    for (who, token) in [
        ("admin", LAB_ADMIN_TOKEN.to_string()),
        ("opd:dinkes", lab_opd_token("dinkes")),
    ] {
        let (ok, out) = schemathesis_run(&lab, &token, &reports.join(who.replace(':', "-")));
        let summary: Vec<&str> = out.lines().skip_while(|l| !l.contains("SUMMARY")).collect();
        eprintln!("schemathesis as {who}:\n{}", summary.join("\n"));
        assert!(ok, "schemathesis found problems as {who}:\n{out}");
        assert!(
            out.contains("passed"),
            "schemathesis ran test cases as {who}:\n{out}"
        );
    }
    assert!(lab.daemon_running(), "jatah survived the fuzzing");
    let (code, _) = lab.http_get("/healthz").unwrap();
    assert_eq!(code, 200);
}
