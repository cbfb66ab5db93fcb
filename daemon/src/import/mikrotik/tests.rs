use super::*;
use crate::import::model::Limits;

fn rate(text: &str) -> Option<Rate> {
    Some(parse_rate(text).unwrap())
}

fn limits(draft: &Draft, id: &str, direction: Direction) -> Limits {
    draft.opds.iter().find(|o| o.id == id).unwrap().limits[direction.index()]
}

#[test]
fn a_wrapped_line_is_one_line_numbered_by_its_first() {
    let text = "/queue simple\nadd max-limit=1M/2M \\\n    name=a target=\\\n    10.0.0.0/24,\\\n    10.0.1.0/24\nadd name=b target=10.0.2.0/24\n";
    let lines = logical_lines(text);
    assert_eq!(lines[1].0, 2);
    assert_eq!(
        lines[1].1,
        "add max-limit=1M/2M name=a target=10.0.0.0/24,10.0.1.0/24"
    );
    assert_eq!(lines[2], (6, "add name=b target=10.0.2.0/24".to_string()));
    // An escaped backslash at the end is not a continuation.
    let lines = logical_lines("add comment=\"x\\\\\"\nadd name=y\n");
    assert_eq!(lines.len(), 2);
}

#[test]
fn quoted_values_keep_spaces_and_escapes() {
    let words = words(r#"add name="Dinas Kesehatan" comment="RSUD \"Ratu Aji\" a\\b" target=10.0.0.1"#)
        .unwrap();
    assert_eq!(
        words,
        [
            "add",
            "name=Dinas Kesehatan",
            "comment=RSUD \"Ratu Aji\" a\\b",
            "target=10.0.0.1"
        ]
    );
    assert!(words_err(r#"add name="open"#).contains("not closed"));
    // Non-ASCII text is exported as hex escapes of its UTF-8 bytes.
    assert_eq!(super::words(r#"comment="Caf\C3\A9 \_x""#).unwrap(), ["comment=Café  x"]);
}

fn words_err(line: &str) -> String {
    words(line).unwrap_err()
}

#[test]
fn rates_are_upload_then_download_and_zero_is_no_limit() {
    assert_eq!(pair("10M/50M").unwrap(), [rate("10M"), rate("50M")]);
    assert_eq!(pair("512k/1G").unwrap(), [rate("512k"), rate("1G")]);
    assert_eq!(pair("2000000/0").unwrap(), [rate("2M"), None]);
    assert_eq!(pair("0/0").unwrap(), [None, None]);
    assert!(pair("10M").unwrap_err().contains("UPLOAD/DOWNLOAD"));
    assert!(pair("10X/1M").unwrap_err().contains("unknown unit"));

    let draft = read("add limit-at=1M/4M max-limit=10M/50M name=a target=10.0.0.0/24\n", "q.rsc");
    assert!(draft.errors.is_empty(), "{:?}", draft.errors);
    assert_eq!(limits(&draft, "a", Direction::Upload).ceiling, rate("10M"));
    assert_eq!(limits(&draft, "a", Direction::Download).ceiling, rate("50M"));
    assert_eq!(limits(&draft, "a", Direction::Upload).guaranteed, rate("1M"));
    assert_eq!(limits(&draft, "a", Direction::Download).guaranteed, rate("4M"));
}

#[test]
fn targets_take_ipv6_bare_hosts_and_report_interfaces() {
    let draft = read(
        "/queue simple\nadd name=x target=10.0.0.0/24,10.0.1.7,fd00:1::/64,2001:db8::1,ether2,10.0.2.9/24\n",
        "q.rsc",
    );
    assert!(draft.errors.is_empty(), "{:?}", draft.errors);
    let nets: Vec<String> = draft.opds[0].subnets.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        ["10.0.0.0/24", "10.0.1.7/32", "fd00:1::/64", "2001:db8::1/128", "10.0.2.0/24"]
    );
    let warnings = draft.warning_lines().join("\n");
    assert!(warnings.contains("q.rsc:2: warning: target ether2 (an interface) not carried over"));
    assert!(warnings.contains("10.0.2.9/24 has host bits set; carried as 10.0.2.0/24"));
}

#[test]
fn duplicate_names_get_unique_ids_with_a_warning() {
    let mut draft = read(
        "add name=dinkes target=10.0.0.0/24\nadd name=Dinkes target=10.0.1.0/24\nadd name=dinkes target=10.0.2.0/24\n",
        "q.rsc",
    );
    draft.unique_ids();
    let ids: Vec<&str> = draft.opds.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["dinkes", "dinkes-2", "dinkes-3"]);
    let warnings = draft.warning_lines().join("\n");
    assert!(warnings.contains("q.rsc:3: warning: name \"dinkes\" is also on line 1"));
    assert!(warnings.contains("q.rsc:2: warning: OPD id \"dinkes\" is taken"));
}

#[test]
fn parents_become_groups_and_other_sections_and_commands_are_skipped() {
    let draft = read(
        "# by RouterOS 7\n/queue simple\nadd max-limit=20M/40M name=kec target=10.0.0.0/16\n\
         add name=a parent=kec target=10.0.1.0/24\nset [ find name=a ] max-limit=1M/1M\n\
         /ip address\nadd address=10.0.0.1/24 interface=ether1\n/queue simple add name=b target=10.0.2.0/24\n\
         add disabled=yes name=c target=10.0.3.0/24 comment=\"old office\"\n",
        "q.rsc",
    );
    assert!(draft.errors.is_empty(), "{:?}", draft.errors);
    assert_eq!(draft.groups.len(), 1);
    assert_eq!(draft.groups[0].id, "kec");
    assert_eq!(draft.groups[0].limits[Direction::Download.index()].ceiling, rate("40M"));
    let opds: Vec<(&str, Option<&str>, bool)> = draft
        .opds
        .iter()
        .map(|o| (o.id.as_str(), o.group.as_deref(), o.disabled))
        .collect();
    assert_eq!(opds, [("a", Some("kec"), false), ("b", None, false), ("c", None, true)]);
    assert_eq!(draft.opds[2].comments, ["old office"]);
    let warnings = draft.warning_lines().join("\n");
    assert!(warnings.contains("q.rsc:5: warning: `set` ignored"));
    assert!(warnings.contains("q.rsc:6: warning: section /ip address ignored"));
    assert!(!warnings.contains("q.rsc:7:"), "{warnings}");
}

#[test]
fn bad_lines_are_errors_with_their_line_numbers() {
    let draft = read(
        "/queue simple\nadd name=ok target=10.0.0.0/24\nadd max-limit=1M/1M \\\n    target=10.0.300.0/24 name=bad\n\
         add max-limit=5MB/1M name=bytes target=10.0.1.0/24\nadd target=10.0.2.0/24\nadd name=\"open target=10.0.3.0/24\n",
        "q.rsc",
    );
    assert_eq!(
        draft.errors,
        [
            "q.rsc:3: target \"10.0.300.0/24\" is not an address, a subnet or an interface",
            "q.rsc:5: max-limit=5MB/1M: \"5MB\": byte units are not accepted; rates are bits per second: write \"40M\"",
            "q.rsc:6: this queue has no name=",
            "q.rsc:7: a quoted value is not closed (missing \")",
        ]
    );
}
