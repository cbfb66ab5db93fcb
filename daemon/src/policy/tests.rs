//! Validation tests: every rule has a rejected example with its exact
//! `line:column` and a distinctive part of the message.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::validate::line_column;
use super::*;

/// A valid policy; the tests replace single lines of it. Line numbers are
/// part of the tests' expectations, so keep this layout.
const BASE: &str = r#"[gateway]
wan = "eth0"
lan = ["eth1"]
download = "100M"
upload = "50M"

[[opd]]
id = "diskominfo"
name = "Dinas Komunikasi dan Informatika"
subnets = ["10.20.1.0/24"]
download = { guaranteed = "20M", ceiling = "80M" }
upload = { guaranteed = "10M", ceiling = "40M" }
probe = "10.20.1.1"

[[opd]]
id = "dinkes"
name = "Dinas Kesehatan"
subnets = ["10.20.2.0/24", "fd00:20:0:2::/64"]
download = { guaranteed = "20M", ceiling = "80M" }
upload = { guaranteed = "10M", ceiling = "40M" }
"#;

/// BASE with 1-based line `line` replaced by `text` (which may span
/// several lines, or be empty to blank the line).
fn with(edits: &[(usize, &str)]) -> String {
    let mut lines: Vec<String> = BASE.lines().map(str::to_string).collect();
    for &(line, text) in edits {
        lines[line - 1] = text.to_string();
    }
    lines.join("\n") + "\n"
}

fn rejected(source: &str) -> PolicyError {
    match parse(source, "test.toml") {
        Ok(policy) => panic!("policy accepted, expected rejection:\n{source}\n{policy:?}"),
        Err(error) => error,
    }
}

/// Exactly one diagnostic, at `line:column`, containing `fragment`.
#[track_caller]
fn assert_one(source: &str, line: usize, column: usize, fragment: &str) {
    let error = rejected(source);
    assert_eq!(
        error.diagnostics.len(),
        1,
        "expected exactly one diagnostic, got:\n{error}"
    );
    let diagnostic = &error.diagnostics[0];
    assert_eq!(
        (diagnostic.line, diagnostic.column),
        (line, column),
        "wrong position:\n{error}"
    );
    assert!(
        diagnostic.message.contains(fragment),
        "message does not contain {fragment:?}:\n{error}"
    );
}

/// Some diagnostic at `line:column` contains `fragment`.
#[track_caller]
fn assert_has(error: &PolicyError, line: usize, column: usize, fragment: &str) {
    assert!(
        error
            .diagnostics
            .iter()
            .any(|d| d.line == line && d.column == column && d.message.contains(fragment)),
        "no diagnostic at {line}:{column} containing {fragment:?}:\n{error}"
    );
}

// ---- accepted policies ------------------------------------------------------

#[test]
fn base_policy_parses_with_defaults() {
    let policy = parse(BASE, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    let gateway = &policy.gateway;
    assert_eq!(gateway.wan, "eth0");
    assert_eq!(gateway.lan, vec!["eth1".to_string()]);
    assert_eq!(gateway.download, Rate(100_000_000));
    assert_eq!(gateway.upload, Rate(50_000_000));
    assert_eq!(gateway.timezone, chrono_tz::Asia::Makassar);
    assert_eq!(gateway.leaf_qdisc, LeafQdisc::Auto);
    assert_eq!(gateway.leaf_limit, 1000);
    assert_eq!(gateway.mark_mask, 0x7fff_0000);
    assert_eq!(gateway.mark_shift(), 16);
    assert_eq!(gateway.shaping, Shaping::default());
    assert!(gateway.shaping.interactive);

    assert_eq!(policy.opds.len(), 2);
    let first = &policy.opds[0];
    assert_eq!(first.id, "diskominfo");
    assert_eq!(first.name, "Dinas Komunikasi dan Informatika");
    assert_eq!(first.subnets, vec!["10.20.1.0/24".parse().unwrap()]);
    assert_eq!(
        first.download,
        Allocation {
            guaranteed: Rate(20_000_000),
            ceiling: Rate(80_000_000)
        }
    );
    assert_eq!(first.probe, Some("10.20.1.1".parse::<IpAddr>().unwrap()));
    let second = policy.opd("dinkes").expect("dinkes");
    assert_eq!(second.subnets.len(), 2);
    assert_eq!(second.probe, None);
    assert_eq!(
        second.allocation(Direction::Upload).ceiling,
        Rate(40_000_000)
    );
    assert!(policy.opd("bappeda").is_none());
}

#[test]
fn optional_gateway_keys_are_read() {
    let source = with(&[(
        5,
        "upload = \"50M\"\ntimezone = \"Asia/Jakarta\"\nleaf_qdisc = \"fq_codel\"\n\
         leaf_limit = 500\nmark_mask = \"0x00ffff00\"",
    )]);
    let policy = parse(&source, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.gateway.timezone, chrono_tz::Asia::Jakarta);
    assert_eq!(policy.gateway.leaf_qdisc, LeafQdisc::FqCodel);
    assert_eq!(policy.gateway.leaf_limit, 500);
    assert_eq!(policy.gateway.mark_mask, 0x00ff_ff00);
    assert_eq!(policy.gateway.mark_shift(), 8);

    // A TOML hex integer is the same mask to an admin.
    let source = with(&[(
        5,
        "upload = \"50M\"\nmark_mask = 0xffff\nleaf_qdisc = \"cake\"",
    )]);
    let policy = parse(&source, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.gateway.mark_mask, 0xffff);
    assert_eq!(policy.gateway.leaf_qdisc, LeafQdisc::Cake);
}

#[test]
fn allocation_may_be_a_sub_table() {
    let source = with(&[(
        20,
        "\n[opd.upload]\nguaranteed = \"10M\"\nceiling = \"40M\"",
    )]);
    let policy = parse(&source, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.opds[1].upload.guaranteed, Rate(10_000_000));
}

#[test]
fn summary_and_accessors() {
    let policy = parse(BASE, "test.toml").unwrap();
    assert_eq!(
        policy.summary(),
        "2 OPDs; download: guaranteed 40M of 100M; upload: guaranteed 20M of 50M"
    );
    assert_eq!(policy.capacity(Direction::Download), Rate(100_000_000));
    assert_eq!(policy.capacity(Direction::Upload), Rate(50_000_000));
    assert_eq!(policy.guaranteed_sum(Direction::Upload), Rate(20_000_000));
    assert_eq!(Direction::all(), [Direction::Download, Direction::Upload]);
    assert_eq!(Direction::Download.as_str(), "download");
    assert_eq!(Direction::Upload.to_string(), "upload");

    let mut single = policy.clone();
    single.opds.truncate(1);
    assert!(
        single
            .summary()
            .starts_with("1 OPD; download: guaranteed 20M of 100M")
    );
}

#[test]
fn serializes_for_the_api() {
    let policy = parse(BASE, "test.toml").unwrap();
    let json = serde_json::to_value(&policy).unwrap();
    assert_eq!(json["gateway"]["timezone"], "Asia/Makassar");
    assert_eq!(json["gateway"]["mark_mask"], "0x7fff0000");
    assert_eq!(json["gateway"]["leaf_qdisc"], "auto");
    assert_eq!(json["gateway"]["download"], "100M");
    assert_eq!(json["opds"][0]["download"]["ceiling"], "80M");
    assert_eq!(json["opds"][0]["subnets"][0], "10.20.1.0/24");
    assert_eq!(json["opds"][0]["probe"], "10.20.1.1");
    assert_eq!(json["opds"][1]["probe"], serde_json::Value::Null);
    assert_eq!(
        serde_json::to_value(LeafQdisc::FqCodel).unwrap(),
        "fq_codel"
    );
    assert_eq!(serde_json::to_value(Direction::Upload).unwrap(), "upload");
}

fn policy_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_policy_is_valid() {
    let files = policy_files();
    assert!(
        files.len() >= 2,
        "expected the example policies, found {files:?}"
    );
    for file in files {
        if let Err(error) = load(&file) {
            panic!("{} is rejected:\n{error}", file.display());
        }
    }
}

#[test]
fn penajam_paser_utara_policy() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/penajam-paser-utara.toml");
    let policy = load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        policy.summary(),
        "26 OPDs, 1 group; download: guaranteed 250M of 300M; upload: guaranteed 180M of 300M"
    );
    assert_eq!(policy.gateway.timezone, chrono_tz::Asia::Makassar);
    let rsud = policy.opd("rsud-rapb").expect("RSUD");
    assert_eq!(rsud.name, "RSUD Ratu Aji Putri Botung");
    // Public services get more than an ordinary office.
    let inspektorat = policy.opd("inspektorat").expect("Inspektorat");
    for id in ["rsud-rapb", "disdukcapil", "dpmptsp"] {
        let opd = policy.opd(id).expect(id);
        for direction in Direction::all() {
            assert!(opd.allocation(direction).ceiling > inspektorat.allocation(direction).ceiling);
            assert!(
                opd.allocation(direction).guaranteed > inspektorat.allocation(direction).guaranteed
            );
        }
    }
    let probes = policy.opds.iter().filter(|opd| opd.probe.is_some()).count();
    assert!(probes >= 20, "only {probes} OPDs have a probe");
}

#[test]
fn minimal_policy() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/minimal.toml");
    let policy = load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.opds.len(), 2);
}

// ---- reporting ------------------------------------------------------------------

#[test]
fn display_is_one_file_line_column_per_line() {
    let source = with(&[(4, "download = \"100MB\""), (16, "id = \"Dinkes\"")]);
    let error = rejected(&source);
    let text = error.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("test.toml:4:12: \"100MB\": byte units"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("test.toml:16:6: invalid id \"Dinkes\""),
        "{text}"
    );
}

#[test]
fn all_problems_are_reported_sorted_by_position() {
    // Problems in the gateway and in both OPDs, written bottom-up.
    let source = with(&[
        (19, "download = { guaranteed = \"20M\", ceiling = \"10M\" }"),
        (13, "probe = \"router\""),
        (8, "id = \"Diskominfo\""),
        (3, "lan = []"),
    ]);
    let error = rejected(&source);
    let positions: Vec<(usize, usize)> = error
        .diagnostics
        .iter()
        .map(|d| (d.line, d.column))
        .collect();
    assert_eq!(
        positions,
        vec![(3, 7), (8, 6), (13, 9), (19, 44)],
        "{error}"
    );
}

#[test]
fn read_error() {
    let error = load(Path::new("/nonexistent/jatah.toml")).unwrap_err();
    assert_eq!(error.diagnostics.len(), 1);
    let text = error.to_string();
    assert!(
        text.starts_with("/nonexistent/jatah.toml: cannot read: "),
        "{text}"
    );
}

#[test]
fn columns_count_characters() {
    assert_eq!(line_column("abc", 0), (1, 1));
    assert_eq!(line_column("abc\ndef", 4), (2, 1));
    assert_eq!(line_column("abc\ndef", 6), (2, 3));
    assert_eq!(line_column("é = 1", 3), (1, 3));
    // "é" is two bytes: the error on "eth1:1" is at character 16, byte 17.
    let source = with(&[(3, "lan = [\"éth1\", \"eth1:1\"]")]);
    assert_one(&source, 3, 16, "contains ':'");
}

// ---- TOML structure ---------------------------------------------------------

#[test]
fn syntax_error() {
    assert_one(
        &with(&[(4, "download = 100M\"")]),
        4,
        12,
        "TOML syntax error",
    );
}

#[test]
fn several_syntax_errors() {
    let error = rejected(&with(&[
        (2, "wan = eth0"),
        (17, "name = \"Dinas Kesehatan"),
    ]));
    assert_eq!(error.diagnostics.len(), 2, "{error}");
    assert_has(&error, 2, 7, "TOML syntax error");
    assert_eq!(error.diagnostics[1].line, 17, "{error}");
}

#[test]
fn duplicate_key() {
    assert_one(
        &with(&[(5, "upload = \"50M\"\ndownload = \"200M\"")]),
        6,
        1,
        "duplicate key download",
    );
}

#[test]
fn unknown_key_in_gateway() {
    assert_one(
        &with(&[(5, "upload = \"50M\"\nbandwidth = \"300M\"")]),
        6,
        1,
        "unknown key \"bandwidth\" in [gateway]; allowed keys: wan, lan, download, upload, \
         timezone, leaf_qdisc, leaf_limit, mark_mask",
    );
}

#[test]
fn unknown_key_in_opd_suggests_the_right_one() {
    let error = rejected(&with(&[(10, "subnet = [\"10.20.1.0/24\"]")]));
    assert_eq!(error.diagnostics.len(), 2, "{error}");
    // The misspelt key, and the key it leaves missing (at the header).
    assert_has(&error, 7, 1, "missing required key \"subnets\"");
    assert_has(
        &error,
        10,
        1,
        "unknown key \"subnet\" in [[opd]] (did you mean \"subnets\"?); allowed keys: id, name, \
         subnets, download, upload, probe",
    );
}

#[test]
fn unknown_key_in_allocation() {
    let error = rejected(&with(&[(
        11,
        "download = { guaranteed = \"20M\", ceil = \"80M\" }",
    )]));
    assert_eq!(error.diagnostics.len(), 2, "{error}");
    assert_has(
        &error,
        11,
        12,
        "missing required key \"ceiling\" in download",
    );
    assert_has(
        &error,
        11,
        34,
        "unknown key \"ceil\" in download (did you mean \"ceiling\"?); allowed keys: guaranteed, ceiling",
    );
}

#[test]
fn unknown_key_at_top_level() {
    assert_one(
        &format!("timezone = \"Asia/Makassar\"\n{BASE}"),
        1,
        1,
        "unknown key \"timezone\" at the top level; gateway settings go under [gateway]",
    );
}

#[test]
fn missing_key_points_at_the_table_header() {
    assert_one(
        &with(&[(2, "")]),
        1,
        1,
        "missing required key \"wan\" in [gateway]",
    );
    assert_one(
        &with(&[(17, "")]),
        15,
        1,
        "missing required key \"name\" in this [[opd]]",
    );
    assert_one(
        &with(&[(20, "")]),
        15,
        1,
        "missing required key \"upload\" in this [[opd]]; e.g. upload = { guaranteed",
    );
}

#[test]
fn missing_gateway_and_opds() {
    let opds_only = BASE.split_once("\n\n").unwrap().1;
    assert_one(opds_only, 1, 1, "missing [gateway] table");
    let gateway_only = BASE.split_once("\n\n").unwrap().0;
    assert_one(gateway_only, 1, 1, "no OPDs; add one [[opd]] table");
}

#[test]
fn single_bracket_opd() {
    let source = "[gateway]\nwan = \"eth0\"\nlan = [\"eth1\"]\ndownload = \"100M\"\n\
                  upload = \"50M\"\n\n[opd]\nid = \"x\"\n";
    assert_one(source, 7, 1, "write [[opd]] with double brackets");
}

#[test]
fn wrong_value_type() {
    assert_one(
        &with(&[(10, "subnets = \"10.20.1.0/24\"")]),
        10,
        11,
        "subnets must be a list, not a string",
    );
    assert_one(
        &with(&[(11, "download = \"20M\"")]),
        11,
        12,
        "download must be a table with a guaranteed rate and a ceiling",
    );
    assert_one(
        &with(&[(2, "wan = 0")]),
        2,
        7,
        "wan must be a string, not an integer",
    );
}

// ---- ids ----------------------------------------------------------------------

#[test]
fn invalid_id() {
    assert_one(
        &with(&[(8, "id = \"Dinas Kominfo\"")]),
        8,
        6,
        "invalid id \"Dinas Kominfo\": an id is 1 to 32 characters of a-z, 0-9 and '-' \
         (it appears in metric labels and URLs); e.g. \"dinas-kominfo\"",
    );
    assert_one(&with(&[(8, "id = \"\"")]), 8, 6, "invalid id \"\"");
    assert_one(
        &with(&[(8, &format!("id = \"{}\"", "a".repeat(33)))]),
        8,
        6,
        "1 to 32 characters",
    );
    // 32 is fine.
    let source = with(&[(8, &format!("id = \"{}\"", "a".repeat(32)))]);
    assert!(parse(&source, "test.toml").is_ok());
}

#[test]
fn duplicate_id() {
    assert_one(
        &with(&[(16, "id = \"diskominfo\"")]),
        16,
        6,
        "duplicate id \"diskominfo\": the OPD at line 8 already uses it",
    );
}

// ---- subnets --------------------------------------------------------------------

#[test]
fn bad_cidr() {
    assert_one(
        &with(&[(10, "subnets = [\"10.20.1.0/33\"]")]),
        10,
        12,
        "\"10.20.1.0/33\" is not a subnet",
    );
    assert_one(
        &with(&[(10, "subnets = [\"10.20.1.1\"]")]),
        10,
        12,
        "\"10.20.1.1\" has no prefix length; write \"10.20.1.1/32\"",
    );
    assert_one(
        &with(&[(10, "subnets = [10]")]),
        10,
        12,
        "each subnet must be a string",
    );
}

#[test]
fn host_bits_set() {
    assert_one(
        &with(&[(10, "subnets = [\"10.20.1.5/24\"]")]),
        10,
        12,
        "10.20.1.5/24: host bits set; did you mean 10.20.1.0/24?",
    );
    assert_one(
        &with(&[(18, "subnets = [\"10.20.2.0/24\", \"fd00:20:0:2::1/64\"]")]),
        18,
        28,
        "fd00:20:0:2::1/64: host bits set; did you mean fd00:20:0:2::/64?",
    );
}

#[test]
fn subnets_overlapping_between_opds() {
    assert_one(
        &with(&[(18, "subnets = [\"10.20.2.0/24\", \"10.20.1.128/25\"]")]),
        18,
        28,
        "10.20.1.128/25 overlaps 10.20.1.0/24 of OPD \"diskominfo\" (line 10); an address can \
         belong to only one OPD",
    );
    // The wider range listed later is the one reported.
    assert_one(
        &with(&[(18, "subnets = [\"10.20.0.0/16\"]")]),
        18,
        12,
        "10.20.0.0/16 overlaps 10.20.1.0/24 of OPD \"diskominfo\" (line 10)",
    );
    // An OPD whose id is invalid is still named as written.
    let error = rejected(&with(&[
        (8, "id = \"Kominfo\""),
        (18, "subnets = [\"10.20.1.0/24\"]"),
    ]));
    assert_eq!(error.diagnostics.len(), 2, "{error}");
    assert_has(
        &error,
        18,
        12,
        "overlaps 10.20.1.0/24 of OPD \"Kominfo\" (line 10)",
    );
    // A subnet that is bad in another way still takes part.
    let error = rejected(&with(&[(
        18,
        "subnets = [\"10.20.1.0/24\", \"10.20.2.7/24\"]",
    )]));
    assert_eq!(error.diagnostics.len(), 2, "{error}");
    assert_has(
        &error,
        18,
        12,
        "overlaps 10.20.1.0/24 of OPD \"diskominfo\"",
    );
    assert_has(&error, 18, 28, "host bits set");
}

#[test]
fn subnets_overlapping_within_an_opd() {
    assert_one(
        &with(&[(10, "subnets = [\"10.20.1.0/24\", \"10.20.1.0/25\"]")]),
        10,
        28,
        "10.20.1.0/25 overlaps 10.20.1.0/24 listed earlier in this OPD (line 10)",
    );
    assert_one(
        &with(&[(
            10,
            "subnets = [\n  \"10.20.1.0/24\",\n  \"10.20.1.0/24\",\n]",
        )]),
        12,
        3,
        "10.20.1.0/24 is listed twice in this OPD (also on line 11)",
    );
}

#[test]
fn opd_without_subnets() {
    assert_one(
        &with(&[(10, "subnets = []")]),
        10,
        11,
        "no subnets; an OPD needs at least one",
    );
}

// ---- rates ----------------------------------------------------------------------

#[test]
fn zero_and_negative_rates() {
    assert_one(
        &with(&[(12, "upload = { guaranteed = \"0\", ceiling = \"40M\" }")]),
        12,
        25,
        "\"0\": a rate must be greater than zero",
    );
    assert_one(
        &with(&[(5, "upload = \"-50M\"")]),
        5,
        10,
        "\"-50M\": a rate cannot be negative",
    );
}

#[test]
fn byte_units() {
    assert_one(
        &with(&[(
            11,
            "download = { guaranteed = \"10MB\", ceiling = \"80M\" }",
        )]),
        11,
        27,
        "\"10MB\": byte units are not accepted; rates are bits per second: write \"80M\"",
    );
    assert_one(
        &with(&[(4, "download = \"1GiB\"")]),
        4,
        12,
        "k, M and G are powers of ten: write \"8.589934592G\"",
    );
}

#[test]
fn integer_rate() {
    assert_one(
        &with(&[(4, "download = 300000000")]),
        4,
        12,
        "300000000 is a bare number; write rates as strings with a unit, e.g. \"300M\"",
    );
    assert_one(
        &with(&[(12, "upload = { guaranteed = 10, ceiling = \"40M\" }")]),
        12,
        25,
        "write rates as strings with a unit, e.g. \"300M\"",
    );
}

#[test]
fn ceiling_below_guaranteed() {
    assert_one(
        &with(&[(19, "download = { guaranteed = \"20M\", ceiling = \"10M\" }")]),
        19,
        44,
        "ceiling 10M is below guaranteed 20M",
    );
}

#[test]
fn ceiling_above_capacity() {
    assert_one(
        &with(&[(12, "upload = { guaranteed = \"10M\", ceiling = \"60M\" }")]),
        12,
        42,
        "ceiling 60M exceeds the gateway's upload capacity 50M (line 5); write at most \"50M\"",
    );
}

#[test]
fn guarantees_above_capacity() {
    assert_one(
        &with(&[(19, "download = { guaranteed = \"81M\", ceiling = \"81M\" }")]),
        4,
        12,
        "the download guarantees of 2 OPDs sum to 101M, more than the download capacity 100M \
         by 1M; lower some guarantees or raise the capacity",
    );
    // Equal to the capacity is fine; one bit more is not.
    let full = with(&[(19, "download = { guaranteed = \"80M\", ceiling = \"80M\" }")]);
    assert!(parse(&full, "test.toml").is_ok());
    assert_one(
        &with(&[(
            19,
            "download = { guaranteed = \"80.000001M\", ceiling = \"81M\" }",
        )]),
        4,
        12,
        "sum to 100.000001M, more than the download capacity 100M by 1",
    );
    assert_one(
        &with(&[(20, "upload = { guaranteed = \"45M\", ceiling = \"50M\" }")]),
        5,
        10,
        "the upload guarantees of 2 OPDs sum to 55M, more than the upload capacity 50M by 5M",
    );
}

// ---- gateway ------------------------------------------------------------------------

#[test]
fn bad_timezone() {
    assert_one(
        &with(&[(5, "upload = \"50M\"\ntimezone = \"Asia/Makasar\"")]),
        6,
        12,
        "\"Asia/Makasar\" is not an IANA time zone name; write e.g. \"Asia/Makassar\" (WITA)",
    );
    assert_one(
        &with(&[(5, "upload = \"50M\"\ntimezone = \"WITA\"")]),
        6,
        12,
        "write \"Asia/Makassar\"",
    );
    assert_one(
        &with(&[(5, "upload = \"50M\"\ntimezone = \"asia/jakarta\"")]),
        6,
        12,
        "write \"Asia/Jakarta\"",
    );
}

#[test]
fn invalid_interface_names() {
    assert_one(
        &with(&[(2, "wan = \"enp0s31f6-uplink-isp\"")]),
        2,
        7,
        "interface name \"enp0s31f6-uplink-isp\" is 20 bytes; Linux allows at most 15",
    );
    assert_one(&with(&[(2, "wan = \"\"")]), 2, 7, "interface name is empty");
    assert_one(
        &with(&[(3, "lan = [\"eth1\", \"eth 2\"]")]),
        3,
        16,
        "contains '/' or whitespace",
    );
    assert_one(
        &with(&[(3, "lan = [\"eth1/2\"]")]),
        3,
        8,
        "contains '/' or whitespace",
    );
    assert_one(
        &with(&[(2, "wan = \"eth0:1\"")]),
        2,
        7,
        "interface name \"eth0:1\" contains ':'",
    );
    // 15 bytes is the limit, and VLAN subinterfaces are fine.
    let source = with(&[
        (2, "wan = \"enp0s31f6.1234\""),
        (3, "lan = [\"eth1.10\", \"eth1.20\"]"),
    ]);
    assert!(parse(&source, "test.toml").is_ok());
}

#[test]
fn lan_empty() {
    assert_one(&with(&[(3, "lan = []")]), 3, 7, "lan is empty");
}

#[test]
fn wan_listed_in_lan() {
    assert_one(
        &with(&[(3, "lan = [\"eth1\", \"eth0\"]")]),
        3,
        16,
        "\"eth0\" is the wan interface; an interface is either wan",
    );
    assert_one(
        &with(&[(3, "lan = [\"eth1\", \"eth1\"]")]),
        3,
        16,
        "\"eth1\" is listed twice in lan",
    );
}

#[test]
fn mark_mask() {
    let at = |value: &str| with(&[(5, &format!("upload = \"50M\"\nmark_mask = {value}"))]);
    assert_one(
        &at("\"0x7f0f0000\""),
        6,
        13,
        "mark_mask 0x7f0f0000 is not one contiguous run of bits",
    );
    assert_one(
        &at("\"0x00ff0000\""),
        6,
        13,
        "mark_mask 0x00ff0000 has 8 bits; OPD slots need a contiguous run of at least 15 bits",
    );
    assert_one(&at("\"0\""), 6, 13, "not one contiguous run");
    assert_one(&at("\"0xfffff0000\""), 6, 13, "is not a 32-bit mask");
    assert_one(&at("\"mask\""), 6, 13, "is not a 32-bit mask");
    // All 32 bits is one contiguous run.
    assert!(parse(&at("\"0xffffffff\""), "t").is_ok());
    assert!(parse(&at("\"0x7fff\""), "t").is_ok());
}

#[test]
fn leaf_limit_and_qdisc() {
    let at = |line: &str| with(&[(5, &format!("upload = \"50M\"\n{line}"))]);
    assert_one(
        &at("leaf_limit = 0"),
        6,
        14,
        "leaf_limit 0 would drop every packet; write at least 1",
    );
    assert_one(&at("leaf_limit = -5"), 6, 14, "would drop every packet");
    assert_one(
        &at("leaf_limit = \"1000\""),
        6,
        14,
        "leaf_limit is a number of packets, not a string",
    );
    assert_one(&at("leaf_limit = 5000000000"), 6, 14, "too large");
    assert_one(
        &at("leaf_qdisc = \"fq-codel\""),
        6,
        14,
        "unknown leaf_qdisc \"fq-codel\"; write one of \"auto\", \"pfifo\", \"fq_codel\" or \"cake\"",
    );
}

#[test]
fn lanes_and_queue_sizes() {
    let at = |line: &str| with(&[(5, &format!("upload = \"50M\"\n{line}"))]);
    let ok = |line: &str| {
        parse(&at(line), "test.toml")
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .gateway
            .shaping
    };
    assert!(!ok("interactive = false").interactive);
    assert!(!ok("adapt = false").adapt);
    assert!(ok("").boost_new_connections, "on by default");
    assert!(!ok("boost_new_connections = false").boost_new_connections);
    assert_one(
        &at("boost_new_connections = \"on\""),
        6,
        25,
        "boost_new_connections is true or false, not a string",
    );
    assert_one(&at("adapt = 1"), 6, 9, "adapt is true or false, not an integer");
    assert_eq!(ok("interactive_percent = 10").interactive_percent, 10);
    assert_eq!(ok("queue_target = \"25ms\"").queue_target_ms, 25);
    assert_eq!(ok("queue_target = \"off\"").queue_target_ms, 0);
    assert_eq!(ok("queue_floor = 3000").queue_floor_bytes, 3000);
    assert_one(&at("interactive = \"yes\""), 6, 15, "interactive is true or false, not a string");
    assert_one(&at("interactive_percent = 0"), 6, 23, "must be a whole number from 1 to 50");
    assert_one(&at("interactive_percent = 80"), 6, 23, "must be a whole number from 1 to 50");
    assert_one(&at("queue_target = \"2s\""), 6, 16, "from \"1ms\" to \"1s\", or \"off\"");
    assert_one(&at("queue_target = \"soon\""), 6, 16, "queue_target: \"soon\" is not a duration");
    assert_one(&at("queue_target = 10"), 6, 16, "queue_target");
    assert_one(&at("queue_floor = 100"), 6, 15, "from 1514 to 16777216");
    assert_one(&at("interactiv = true"), 6, 1, "interactive");
}

// ---- probe ------------------------------------------------------------------------

#[test]
fn probe_not_an_address() {
    assert_one(
        &with(&[(13, "probe = \"router-kominfo\"")]),
        13,
        9,
        "probe \"router-kominfo\" is not an IP address",
    );
    assert_one(
        &with(&[(13, "probe = \"10.20.1.1/24\"")]),
        13,
        9,
        "the probe is one address, the OPD's router: write \"10.20.1.1\"",
    );
    let source = with(&[(13, "probe = \"fd00:20:0:1::1\"")]);
    assert!(parse(&source, "test.toml").is_ok());
}

#[test]
fn rtt_sampling_takes_powers_of_two() {
    for n in [1u32, 2, 16, 128] {
        let p = parse(
            &format!("{BASE}[diagnosis]\nrtt_sampling = {n}\n"),
            "test.toml",
        )
        .unwrap();
        assert_eq!(p.diagnosis.rtt_sampling, n);
    }
}

#[test]
fn diagnosis_table_is_read_with_defaults_for_what_is_left_out() {
    let source = format!(
        "{BASE}\n[diagnosis]\nprobe_interval = \"500ms\"\nwan_rtt = \"200ms\"\nrtt_tracking = false\n\n\
         [[diagnosis.upstream]]\nname = \"isp\"\naddress = \"203.0.113.1\"\n\n\
         [[diagnosis.upstream]]\nname = \"anchor-jkt\"\naddress = \"2001:db8::1\"\n"
    );
    let p = parse(&source, "test.toml").unwrap();
    let d = &p.diagnosis;
    assert_eq!(d.probe_interval, std::time::Duration::from_millis(500));
    assert_eq!(d.wan_rtt, std::time::Duration::from_millis(200));
    assert_eq!(
        d.lan_rtt,
        std::time::Duration::from_millis(50),
        "default kept"
    );
    assert!(!d.rtt_tracking);
    assert_eq!(d.rtt_sampling, 8, "default kept");
    assert_eq!(d.upstream.len(), 2);
    assert_eq!(
        d.upstream[1].address,
        "2001:db8::1".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        parse(BASE, "t.toml").unwrap().diagnosis,
        DiagnosisSettings::default()
    );
}

#[test]
fn diagnosis_errors_point_at_the_value() {
    // BASE has 20 lines; [diagnosis] starts on line 21.
    assert_one(
        &format!("{BASE}[diagnosis]\nlan_rtt = \"fast\"\n"),
        22,
        11,
        "lan_rtt",
    );
    assert_one(
        &format!("{BASE}[diagnosis]\nsilence = \"0s\"\n"),
        22,
        11,
        "zero",
    );
    assert_one(
        &format!("{BASE}[diagnosis]\nprobe_lost_in_a_row = 0\n"),
        22,
        23,
        "between 1 and 60",
    );
    assert_one(
        &format!("{BASE}[diagnosis]\nrtt_sampling = 3\n"),
        22,
        16,
        "1, 2, 4, 8, 16, 32, 64 or 128",
    );
    assert_one(
        &format!("{BASE}[diagnosis]\nrtt_sampling = 256\n"),
        22,
        16,
        "1, 2, 4, 8, 16, 32, 64 or 128",
    );
    assert_one(
        &format!("{BASE}[diagnosis]\nrtt_sampling = \"8\"\n"),
        22,
        16,
        "the default is 8",
    );
    assert_one(
        &format!("{BASE}[diagnosis]\nprobes = 3\n"),
        22,
        1,
        "unknown key \"probes\"",
    );
    assert_one(
        &format!("{BASE}[[diagnosis.upstream]]\nname = \"ISP 1\"\naddress = \"203.0.113.1\"\n"),
        22,
        8,
        "a-z, 0-9",
    );
    assert_one(
        &format!("{BASE}[[diagnosis.upstream]]\nname = \"isp\"\naddress = \"isp.example\"\n"),
        23,
        11,
        "not an IP address",
    );
}

// ---- groups ---------------------------------------------------------------------

/// A valid policy with a group of two OPDs and one OPD outside it; the
/// group tests replace single lines of it. Line numbers are part of the
/// tests' expectations, so keep this layout.
const GROUPED: &str = r#"[gateway]
wan = "eth0"
lan = ["eth1"]
download = "100M"
upload = "50M"

[[group]]
id = "kecamatan"
name = "Kantor Kecamatan"
download = { guaranteed = "30M", ceiling = "50M" }
upload = { guaranteed = "10M", ceiling = "20M" }

[[opd]]
id = "kec-waru"
name = "Kecamatan Waru"
subnets = ["10.20.1.0/24"]
download = { guaranteed = "10M", ceiling = "40M" }
upload = { guaranteed = "5M", ceiling = "20M" }
group = "kecamatan"

[[opd]]
id = "kec-sepaku"
name = "Kecamatan Sepaku"
subnets = ["10.20.2.0/24"]
download = { guaranteed = "20M", ceiling = "50M" }
upload = { guaranteed = "5M", ceiling = "10M" }
group = "kecamatan"

[[opd]]
id = "dinkes"
name = "Dinas Kesehatan"
subnets = ["10.20.3.0/24"]
download = { guaranteed = "60M", ceiling = "100M" }
upload = { guaranteed = "30M", ceiling = "50M" }
"#;

/// GROUPED with 1-based lines replaced, like [`with`].
fn grouped(edits: &[(usize, &str)]) -> String {
    let mut lines: Vec<String> = GROUPED.lines().map(str::to_string).collect();
    for &(line, text) in edits {
        lines[line - 1] = text.to_string();
    }
    lines.join("\n") + "\n"
}

#[test]
fn grouped_policy_parses() {
    let policy = parse(GROUPED, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.groups.len(), 1);
    let group = policy.group("kecamatan").expect("group");
    assert_eq!(group.name, "Kantor Kecamatan");
    assert_eq!(
        group.allocation(Direction::Download),
        &Allocation {
            guaranteed: Rate(30_000_000),
            ceiling: Rate(50_000_000)
        }
    );
    assert_eq!(group.upload.ceiling, Rate(20_000_000));
    let members: Vec<&str> = policy
        .members("kecamatan")
        .map(|opd| opd.id.as_str())
        .collect();
    assert_eq!(members, ["kec-waru", "kec-sepaku"]);
    assert_eq!(policy.opd("dinkes").unwrap().group, None);
    assert_eq!(
        policy.opd("kec-waru").unwrap().group.as_deref(),
        Some("kecamatan")
    );
    assert!(policy.group("dinkes").is_none());
    // The capacity holds the group's guarantee and the ungrouped OPD's.
    assert_eq!(policy.guaranteed_sum(Direction::Download), Rate(90_000_000));
    assert_eq!(
        policy.summary(),
        "3 OPDs, 1 group; download: guaranteed 90M of 100M; upload: guaranteed 40M of 50M"
    );
    let json = serde_json::to_value(&policy).unwrap();
    assert_eq!(json["groups"][0]["id"], "kecamatan");
    assert_eq!(json["groups"][0]["download"]["ceiling"], "50M");
    assert_eq!(json["opds"][0]["group"], "kecamatan");
    assert_eq!(json["opds"][2]["group"], serde_json::Value::Null);
    // A policy without groups has none.
    let flat = parse(BASE, "test.toml").unwrap();
    assert!(flat.groups.is_empty());
    assert!(flat.opds.iter().all(|opd| opd.group.is_none()));
    assert_eq!(
        serde_json::to_value(&flat).unwrap()["groups"],
        serde_json::json!([])
    );
}

#[test]
fn a_group_may_be_written_as_sub_tables_and_have_no_members() {
    let source = grouped(&[
        (
            10,
            "\n[group.download]\nguaranteed = \"30M\"\nceiling = \"50M\"",
        ),
        (11, ""),
    ])
    .replace("download = { guaranteed = \"30M\", ceiling = \"50M\" }", "")
        + "\n[[group]]\nid = \"cadangan\"\nname = \"Cadangan\"\n\
       download = { guaranteed = \"1M\", ceiling = \"2M\" }\n\
       upload = { guaranteed = \"1M\", ceiling = \"2M\" }\n";
    // The sub-table form needs the upload too.
    let source = source.replace(
        "ceiling = \"50M\"\n\n\n[[opd]]",
        "ceiling = \"50M\"\n\n[group.upload]\nguaranteed = \"10M\"\nceiling = \"20M\"\n\n[[opd]]",
    );
    let policy = parse(&source, "test.toml").unwrap_or_else(|e| panic!("{e}\n{source}"));
    assert_eq!(policy.groups.len(), 2);
    assert_eq!(policy.groups[0].upload.guaranteed, Rate(10_000_000));
    assert_eq!(policy.members("cadangan").count(), 0);
    // An empty group's guarantee still counts against the capacity.
    assert_eq!(policy.guaranteed_sum(Direction::Upload), Rate(41_000_000));
}

#[test]
fn unknown_group() {
    assert_one(
        &grouped(&[(27, "group = \"kecamatn\"")]),
        27,
        9,
        "unknown group \"kecamatn\" (did you mean \"kecamatan\"?); the groups are: kecamatan",
    );
    assert_one(
        &with(&[(13, "probe = \"10.20.1.1\"\ngroup = \"kecamatan\"")]),
        14,
        9,
        "unknown group \"kecamatan\"; define it in a [[group]] table with its id, name, \
         download and upload",
    );
    assert_one(
        &grouped(&[(19, "group = 1")]),
        19,
        9,
        "group must be a string, not an integer",
    );
}

#[test]
fn duplicate_group_id() {
    let second = "upload = { guaranteed = \"10M\", ceiling = \"20M\" }\n\n[[group]]\n\
                  id = \"kecamatan\"\nname = \"Kecamatan lagi\"\n\
                  download = { guaranteed = \"1M\", ceiling = \"1M\" }\n\
                  upload = { guaranteed = \"1M\", ceiling = \"1M\" }";
    assert_one(
        &grouped(&[(11, second)]),
        14,
        6,
        "duplicate group id \"kecamatan\": the group at line 8 already uses it; every group \
         needs its own id",
    );
    // A group may share its id with an OPD: they are labelled apart
    // ("group" and "opd") and have their own URLs.
    let source = grouped(&[
        (8, "id = \"dinkes\""),
        (19, "group = \"dinkes\""),
        (27, "group = \"dinkes\""),
    ]);
    assert!(parse(&source, "test.toml").is_ok());
}

#[test]
fn invalid_group_id() {
    // The OPDs name the group as written: only the id itself is reported.
    assert_one(
        &grouped(&[
            (8, "id = \"Kecamatan\""),
            (19, "group = \"Kecamatan\""),
            (27, "group = \"Kecamatan\""),
        ]),
        8,
        6,
        "invalid group id \"Kecamatan\": an id is 1 to 32 characters of a-z, 0-9 and '-' (it \
         appears in metric labels and URLs); e.g. \"kecamatan\"",
    );
}

#[test]
fn group_structure_errors() {
    assert_one(
        &grouped(&[(7, "[group]")]).replace("group = \"kecamatan\"\n", ""),
        7,
        1,
        "write [[group]] with double brackets, one per group",
    );
    let error = rejected(&grouped(&[(9, "title = \"Kantor Kecamatan\"")]));
    assert_eq!(error.diagnostics.len(), 2, "{error}");
    assert_has(
        &error,
        7,
        1,
        "missing required key \"name\" in this [[group]]",
    );
    assert_has(
        &error,
        9,
        1,
        "unknown key \"title\" in [[group]]; allowed keys: id, name, \
         download, upload",
    );
    assert_one(
        &grouped(&[(11, "")]),
        7,
        1,
        "missing required key \"upload\" in this [[group]]",
    );
}

#[test]
fn group_ceiling_below_guaranteed() {
    assert_one(
        &grouped(&[
            (10, "download = { guaranteed = \"55M\", ceiling = \"50M\" }"),
            (
                33,
                "download = { guaranteed = \"40M\", ceiling = \"100M\" }",
            ),
        ]),
        10,
        44,
        "ceiling 50M is below guaranteed 55M; the ceiling is the most the group may use and \
         must be at least its guarantee: write at least \"55M\"",
    );
}

#[test]
fn group_ceiling_above_capacity() {
    assert_one(
        &grouped(&[(11, "upload = { guaranteed = \"10M\", ceiling = \"60M\" }")]),
        11,
        42,
        "ceiling 60M exceeds the gateway's upload capacity 50M (line 5); write at most \"50M\"",
    );
}

#[test]
fn members_guarantees_above_the_group_guarantee() {
    assert_one(
        &grouped(&[(26, "upload = { guaranteed = \"6M\", ceiling = \"10M\" }")]),
        11,
        25,
        "the upload guarantees of the 2 OPDs in group \"kecamatan\" sum to 11M, more than the \
         group's guaranteed 10M by 1M; lower some of theirs or raise the group's",
    );
    // Equal is fine.
    let full = grouped(&[(10, "download = { guaranteed = \"30M\", ceiling = \"50M\" }")]);
    assert!(parse(&full, "test.toml").is_ok());
}

#[test]
fn member_ceiling_above_the_group_ceiling() {
    assert_one(
        &grouped(&[(17, "download = { guaranteed = \"10M\", ceiling = \"60M\" }")]),
        17,
        44,
        "ceiling 60M exceeds the download ceiling 50M of group \"kecamatan\" (line 10); an OPD \
         cannot borrow beyond its group: write at most \"50M\"",
    );
    // Above the capacity too: the group's ceiling is the tighter limit.
    assert_one(
        &grouped(&[(
            17,
            "download = { guaranteed = \"10M\", ceiling = \"200M\" }",
        )]),
        17,
        44,
        "ceiling 200M exceeds the download ceiling 50M of group \"kecamatan\"",
    );
    // A group ceiling above the capacity is reported there; members are
    // then held to the capacity.
    let error = rejected(&grouped(&[
        (
            10,
            "download = { guaranteed = \"30M\", ceiling = \"150M\" }",
        ),
        (
            17,
            "download = { guaranteed = \"10M\", ceiling = \"120M\" }",
        ),
    ]));
    assert_eq!(error.diagnostics.len(), 2, "{error}");
    assert_has(
        &error,
        10,
        44,
        "ceiling 150M exceeds the gateway's download capacity",
    );
    assert_has(
        &error,
        17,
        44,
        "ceiling 120M exceeds the gateway's download capacity",
    );
}

#[test]
fn top_level_guarantees_above_capacity_count_the_group_not_its_members() {
    // The members' 30M plus dinkes' 60M fit; the group's 41M plus 60M do not.
    assert_one(
        &grouped(&[(10, "download = { guaranteed = \"41M\", ceiling = \"50M\" }")]),
        4,
        12,
        "the download guarantees of 1 group and 1 OPD outside groups sum to 101M, more than \
         the download capacity 100M by 1M; lower some guarantees or raise the capacity",
    );
    // Only groups at the top.
    let source = grouped(&[
        (
            34,
            "upload = { guaranteed = \"30M\", ceiling = \"50M\" }\ngroup = \"kecamatan\"",
        ),
        (
            10,
            "download = { guaranteed = \"101M\", ceiling = \"100M\" }",
        ),
    ]);
    let error = rejected(&source);
    assert_has(
        &error,
        4,
        12,
        "the download guarantees of 1 group sum to 101M, more than the download capacity 100M",
    );
}

#[test]
fn penajam_paser_utara_groups_its_kecamatan_offices() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/penajam-paser-utara.toml");
    let policy = load(&file).unwrap_or_else(|e| panic!("{e}"));
    let group = policy.group("kecamatan").expect("the kecamatan group");
    let members: Vec<&str> = policy
        .members("kecamatan")
        .map(|opd| opd.id.as_str())
        .collect();
    assert_eq!(
        members,
        ["kec-penajam", "kec-waru", "kec-babulu", "kec-sepaku"]
    );
    for direction in Direction::all() {
        let sum: u64 = policy
            .members("kecamatan")
            .map(|opd| opd.allocation(direction).guaranteed.0)
            .sum();
        assert!(sum <= group.allocation(direction).guaranteed.0);
    }
    assert_eq!(group.download.ceiling, Rate(50_000_000));
}

#[test]
fn allocation_problems_recheck_a_changed_policy() {
    let policy = parse(GROUPED, "test.toml").unwrap();
    assert!(policy.allocation_problems().is_empty());
    assert!(
        parse(BASE, "test.toml")
            .unwrap()
            .allocation_problems()
            .is_empty()
    );

    // As a schedule might change it: kec-waru above its group's ceiling and
    // guarantee, dinkes above the capacity, and an unknown group.
    let mut changed = policy.clone();
    let waru = &mut changed.opds[0];
    waru.download = Allocation {
        guaranteed: Rate(25_000_000),
        ceiling: Rate(60_000_000),
    };
    changed.opds[2].download.guaranteed = Rate(70_000_000);
    changed.opds[2].group = Some("puskesmas".into());
    assert_eq!(
        changed.allocation_problems(),
        [
            "OPD kec-waru's download ceiling 60M exceeds the ceiling of its group kecamatan 50M",
            "the download guarantees of group kecamatan's OPDs sum to 45M, more than its \
             guarantee 30M",
            "OPD dinkes names unknown group puskesmas",
        ]
    );
    let mut over = policy.clone();
    over.opds[2].upload.guaranteed = Rate(45_000_000);
    over.groups[0].upload.ceiling = Rate(5_000_000);
    assert_eq!(
        over.allocation_problems(),
        [
            "group kecamatan's upload ceiling 5M is below its guarantee 10M",
            "OPD kec-waru's upload ceiling 20M exceeds the ceiling of its group kecamatan 5M",
            "OPD kec-sepaku's upload ceiling 10M exceeds the ceiling of its group kecamatan 5M",
            "the upload guarantees the gateway holds (groups and OPDs outside groups) sum to 55M, \
             more than its capacity 50M",
        ]
    );
}

const OFFICE_HOURS: &str = "\n[[schedule]]\nname = \"office-hours\"\ndays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\n\
from = \"07:30\"\nto = \"16:00\"\n\n[[schedule.opd]]\nid = \"dinkes\"\ndownload = { guaranteed = \"30M\", ceiling = \"90M\" }\n";

#[test]
fn schedules_are_read() {
    let p = parse(&format!("{BASE}{OFFICE_HOURS}"), "t.toml").unwrap();
    assert_eq!(p.schedules.len(), 1);
    let s = &p.schedules[0];
    assert_eq!(s.name, "office-hours");
    assert_eq!(s.window.days, [true, true, true, true, true, false, false]);
    assert_eq!(s.window.from.to_string(), "07:30:00");
    assert_eq!(s.allocations[0].opd, "dinkes");
    assert_eq!(
        s.allocations[0].download.unwrap().ceiling,
        parse_rate("90M").unwrap()
    );
    assert!(s.allocations[0].upload.is_none());
}

#[test]
fn schedule_errors_point_at_the_problem() {
    // BASE has 20 lines; the schedule header is on line 22.
    let bad_day = format!("{BASE}{}", OFFICE_HOURS.replace("\"fri\"", "\"jumat\""));
    assert_one(&bad_day, 24, 37, "unknown day \"jumat\"");
    let bad_time = format!("{BASE}{}", OFFICE_HOURS.replace("\"16:00\"", "\"4pm\""));
    assert_one(&bad_time, 26, 6, "not a time of day");
    let too_much = format!(
        "{BASE}{}",
        OFFICE_HOURS
            .replace("\"30M\"", "\"95M\"")
            .replace("\"90M\"", "\"100M\"")
    );
    assert_has(&rejected(&too_much), 22, 1, "while office-hours is open");
    let below = format!("{BASE}{}", OFFICE_HOURS.replace("\"90M\"", "\"10M\""));
    assert_has(&rejected(&below), 22, 1, "below its guarantee");
    let second = OFFICE_HOURS
        .replace("office-hours", "lunch")
        .replace("07:30", "12:00")
        .replace("16:00", "13:00");
    let overlap = format!("{BASE}{OFFICE_HOURS}{second}");
    assert_has(
        &rejected(&overlap),
        32,
        1,
        "overlaps schedule \"office-hours\" for dinkes",
    );
    let ghost = format!(
        "{BASE}{}",
        OFFICE_HOURS.replace("id = \"dinkes\"", "id = \"nosuch\"")
    );
    assert_has(&rejected(&ghost), 22, 1, "no OPD \"nosuch\"");
}

#[test]
fn an_address_belongs_to_the_opd_whose_subnet_holds_it() {
    let policy = parse(BASE, "policy.toml").unwrap();
    let id = |a: &str| {
        policy
            .opd_for_address(a.parse::<IpAddr>().unwrap())
            .map(|o| o.id.as_str())
    };
    assert_eq!(id("10.20.1.7"), Some("diskominfo"));
    assert_eq!(id("10.20.2.200"), Some("dinkes"));
    assert_eq!(id("fd00:20:0:2::99"), Some("dinkes"));
    // As a dual-stack socket reports an IPv4 peer.
    assert_eq!(id("::ffff:10.20.2.5"), Some("dinkes"));
    assert_eq!(id("10.20.9.1"), None);
    assert_eq!(id("127.0.0.1"), None);
    assert_eq!(id("198.51.100.1"), None);
}

#[test]
fn host_names_are_read_and_checked() {
    let named = format!(
        "{BASE}\n[[opd.host]]\naddress = \"10.20.2.37\"\nname = \"PC Bendahara\"\n\n\
         [[opd.host]]\naddress = \"fd00:20:0:2::9\"\nname = \"Laptop Kadis\"\n"
    );
    let policy = parse(&named, "test.toml").unwrap();
    let hosts = &policy.opd("dinkes").unwrap().hosts;
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0].address, "10.20.2.37".parse::<IpAddr>().unwrap());
    assert_eq!(hosts[0].name, "PC Bendahara");
    assert!(policy.opd("diskominfo").unwrap().hosts.is_empty());
    // Line 23 is the first host's address, 24 its name.
    let host = |address: &str, name: &str| {
        format!("{BASE}\n[[opd.host]]\naddress = \"{address}\"\nname = \"{name}\"\n")
    };
    assert_one(
        &host("10.20.1.5", "PC"),
        23,
        11,
        "host 10.20.1.5 is outside this OPD's subnets",
    );
    assert_one(&host("10.20.2.x", "PC"), 23, 11, "is not an IP address");
    assert_one(&host("10.20.2.5", ""), 24, 8, "a host name is 1 to 64 characters");
    let twice = format!("{}{}", host("10.20.2.5", "A"), "\n[[opd.host]]\naddress = \"10.20.2.5\"\nname = \"B\"\n");
    let error = rejected(&twice);
    assert!(error.to_string().contains("host 10.20.2.5 is named twice"), "{error}");
    let nameless = format!("{BASE}\n[[opd.host]]\naddress = \"10.20.2.5\"\n");
    assert!(rejected(&nameless).to_string().contains("this host has no name"));
}
