//! `jatah import` as an admin runs it: the fixtures under
//! tests/fixtures/import (a MikroTik `/queue simple export` with the
//! awkward cases, a LibreQoS ShapedDevices.csv and network.json) become
//! policies that `jatah check` accepts, with the rates, groups and
//! warnings the README promises; broken input and a policy that would not
//! pass are refused with nothing written.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Scratch, jatah};

fn run(args: &[&str]) -> Output {
    Command::new(jatah())
        .args(args)
        .output()
        .expect("running jatah")
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/import")
        .join(name)
        .display()
        .to_string()
}

fn temp_dir(test: &str) -> Scratch {
    Scratch::new(&format!("import-{test}"))
}

/// Imports, checks the result with `jatah check` and returns it parsed,
/// with stderr.
fn import_and_check(args: &[&str], test: &str) -> (toml::Table, String, String) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "import failed: {stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let dir = temp_dir(test);
    let path = dir.join("policy.toml");
    std::fs::write(&path, &text).unwrap();
    let check = run(&["check", path.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "jatah check refused the import:\n{}\n{text}",
        String::from_utf8_lossy(&check.stderr)
    );
    (toml::from_str(&text).unwrap(), text, stderr)
}

fn entry<'a>(policy: &'a toml::Table, kind: &str, id: &str) -> &'a toml::Table {
    policy[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_table().unwrap())
        .find(|e| e["id"].as_str() == Some(id))
        .unwrap_or_else(|| panic!("no {kind} {id}"))
}

fn rates(entry: &toml::Table, direction: &str) -> (String, String) {
    let table = entry[direction].as_table().unwrap();
    (
        table["guaranteed"].as_str().unwrap().to_string(),
        table["ceiling"].as_str().unwrap().to_string(),
    )
}

fn pair(guaranteed: &str, ceiling: &str) -> (String, String) {
    (guaranteed.to_string(), ceiling.to_string())
}

#[test]
fn a_mikrotik_export_becomes_a_policy_that_passes_check() {
    let file = fixture("queues.rsc");
    let (policy, text, stderr) = import_and_check(
        &[
            "import",
            "mikrotik",
            &file,
            "--capacity-download",
            "300M",
            "--capacity-upload",
            "200M",
            "--wan",
            "ether1",
            "--lan",
            "bridge-lan",
        ],
        "mikrotik",
    );
    assert_eq!(policy["gateway"]["download"].as_str(), Some("300M"));
    assert_eq!(policy["gateway"]["wan"].as_str(), Some("ether1"));

    // max-limit=100M/150M is upload/download: download 150M, upload 100M.
    let rsud = entry(&policy, "opd", "rsud-ratu-aji-putri-botung");
    assert_eq!(rates(rsud, "download"), pair("30M", "150M"));
    assert_eq!(rates(rsud, "upload"), pair("25M", "100M"));
    // Wrapped target, bare IPv4 and IPv6 addresses.
    let dinkes = entry(&policy, "opd", "dinas-kesehatan");
    let subnets: Vec<&str> = dinkes["subnets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        subnets,
        ["10.20.9.0/24", "10.20.19.5/32", "fd00:20:0:9::/64"]
    );
    assert!(
        text.contains("# RSUD \"Ratu Aji\" - SIMRS, V-Claim\n"),
        "{text}"
    );
    assert!(text.contains(&format!("# from {file}:14\n")), "{text}");
    // 0/0: the ceiling is the capacity.
    let kominfo = entry(&policy, "opd", "diskominfo");
    assert_eq!(rates(kominfo, "download"), pair("128k", "300M"));
    assert_eq!(rates(kominfo, "upload"), pair("128k", "200M"));
    // A parent queue is a group; its children are its members.
    let kecamatan = entry(&policy, "group", "kecamatan");
    assert_eq!(rates(kecamatan, "download"), pair("20M", "40M"));
    assert_eq!(
        entry(&policy, "opd", "kecamatan-waru")["group"].as_str(),
        Some("kecamatan")
    );
    // The same name twice, and a quoted name with escaped quotes.
    assert_eq!(
        rates(entry(&policy, "opd", "dinkes-2"), "download"),
        pair("128k", "12M")
    );
    assert_eq!(
        entry(&policy, "opd", "dinas-sosial")["name"].as_str(),
        Some("Dinas \"Sosial\"")
    );
    // Disabled: carried commented out; an interface target: left out.
    assert!(text.contains("\n# id = \"dinas-lama\"\n"), "{text}");
    // Removing the "# " of the disabled entry's lines, as its comment
    // says, gives a policy that passes too.
    let mut enabled = String::new();
    let mut in_disabled = false;
    for line in text.lines() {
        in_disabled = (in_disabled || line == "# [[opd]]") && !line.is_empty();
        let line = if in_disabled {
            line.strip_prefix("# ").unwrap()
        } else {
            line
        };
        enabled.push_str(line);
        enabled.push('\n');
    }
    let dir = temp_dir("enabled");
    let path = dir.join("policy.toml");
    std::fs::write(&path, &enabled).unwrap();
    let check = run(&["check", path.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("11 OPDs, 1 group"));
    assert!(
        policy["opd"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["id"].as_str() != Some("hotspot"))
    );

    for expected in [
        ":12: warning: priority=2/2 not carried over",
        ":14: warning: burst-limit=60M/120M not carried over",
        ":19: warning: queue \"Dinas Lama\" is disabled",
        ":20: warning: target ether5 (an interface) not carried over",
        ":22: warning: queue \"hotspot\" has no address target",
        ":23: warning: parent=gudang is not in the file",
        ":24: warning: `set` ignored",
        ":25: warning: section /queue tree ignored",
        ":28: warning: name \"dinkes\" is also on line 18",
    ] {
        assert!(
            stderr.contains(&format!("{file}{expected}")),
            "{expected}:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("capacity is not in the source"),
        "{stderr}"
    );
}

#[test]
fn without_a_capacity_one_is_derived_and_warned_of() {
    let file = fixture("queues.rsc");
    let (policy, _, stderr) = import_and_check(&["import", "mikrotik", &file], "derived");
    assert_eq!(policy["gateway"]["download"].as_str(), Some("150M"));
    assert!(stderr.contains(&format!(
        "{file}: warning: the download capacity is not in the source; 150M is the largest ceiling"
    )));
    assert!(stderr.contains("warning: the gateway's interfaces are not in the source"));
}

#[test]
fn libreqos_circuits_and_nodes_become_opds_and_groups() {
    let devices = fixture("ShapedDevices.csv");
    let network = fixture("network.json");
    let (policy, text, stderr) = import_and_check(
        &[
            "import",
            "libreqos",
            &devices,
            &network,
            "--capacity-download",
            "300M",
            "--capacity-upload",
            "300M",
        ],
        "libreqos",
    );
    // Two device rows of one circuit: one OPD with both devices' addresses.
    let rsud = entry(&policy, "opd", "rsud-ratu-aji-putri-botung");
    assert_eq!(rsud["subnets"].as_array().unwrap().len(), 3);
    assert_eq!(rates(rsud, "download"), pair("30M", "150M"));
    assert_eq!(rsud["group"].as_str(), Some("ap-kesehatan"));
    let waru = entry(&policy, "opd", "kecamatan-waru");
    assert_eq!(rates(waru, "upload"), pair("500k", "8.5M"));
    // network.json's node limits are the group's ceilings.
    let radio = entry(&policy, "group", "ap-radio");
    assert_eq!(rates(radio, "download").1, "30M");
    assert_eq!(rates(radio, "upload").1, "20M");
    let dinkes = entry(&policy, "opd", "dinas-kesehatan");
    assert_eq!(dinkes["subnets"].as_array().unwrap().len(), 3);
    assert!(text.contains("# Puskesmas links, SIMPUS\n"), "{text}");
    assert!(text.contains(&format!("# from {devices}:4\n")), "{text}");
    for expected in [
        format!("{devices}:3: warning: MAC not carried over"),
        format!("{devices}:4: warning: sqm=cake not carried over"),
        format!("{network}:22: warning: node AP_Radio is inside Kabupaten > Site_Radio"),
    ] {
        assert!(stderr.contains(&expected), "{expected}:\n{stderr}");
    }
}

#[test]
fn broken_input_names_file_and_line_exits_1_and_writes_nothing() {
    let dir = temp_dir("broken");
    let output = dir.join("policy.toml");
    let file = fixture("queues-broken.rsc");
    let out = run(&["import", "mikrotik", &file, "-o", output.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{file}:3: target \"10.20.300.0/24\"")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:5: max-limit=10X/20M")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert!(!output.exists());

    let csv = dir.join("ShapedDevices.csv");
    let good = std::fs::read_to_string(fixture("ShapedDevices.csv")).unwrap();
    std::fs::write(&csv, good.replace("10.20.41.0/24", "10.20.41.0/33")).unwrap();
    let out = run(&["import", "libreqos", csv.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:8: IPv4: \"10.20.41.0/33\"", csv.display())),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_import_that_would_fail_check_is_refused() {
    let dir = temp_dir("refused");
    let output = dir.join("policy.toml");
    // The guarantees add up to more than 20M of download.
    let out = run(&[
        "import",
        "mikrotik",
        &fixture("queues.rsc"),
        "--capacity-download",
        "20M",
        "--capacity-upload",
        "200M",
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the imported policy does not pass `jatah check`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("more than the download capacity 20M"),
        "{stderr}"
    );
    assert!(!output.exists());
}

#[test]
fn an_existing_output_is_replaced_only_with_force() {
    let dir = temp_dir("force");
    let output = dir.join("policy.toml");
    std::fs::write(&output, "keep me\n").unwrap();
    let file = fixture("queues.rsc");
    let out = run(&["import", "mikrotik", &file, "-o", output.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists; nothing written"));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "keep me\n");

    let out = run(&[
        "import",
        "mikrotik",
        &file,
        "-o",
        output.to_str().unwrap(),
        "--force",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let check = run(&["check", output.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
