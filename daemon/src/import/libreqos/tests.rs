use super::*;

const HEADER: &str = "Circuit ID,Circuit Name,Device ID,Device Name,Parent Node,MAC,IPv4,IPv6,\
                      Download Min Mbps,Upload Min Mbps,Download Max Mbps,Upload Max Mbps,Comment";

fn rate(text: &str) -> Option<Rate> {
    Some(parse_rate(text).unwrap())
}

#[test]
fn csv_fields_may_be_quoted_with_commas_and_quotes_and_comments_are_skipped() {
    let text = "# a comment\n\nid,name\n1,\"a, b\"\n2,\"say \"\"hi\"\"\"\n3,\"two\nlines\"\n4,x\n";
    let rows = records(text).unwrap();
    let lines: Vec<usize> = rows.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [3, 4, 5, 6, 8]);
    assert_eq!(rows[1].1, ["1", "a, b"]);
    assert_eq!(rows[2].1, ["2", "say \"hi\""]);
    assert_eq!(rows[3].1, ["3", "two\nlines"]);
    assert_eq!(records("a,\"open\n").unwrap_err().0, 1);
}

#[test]
fn mbps_take_decimals_and_zero_is_none() {
    assert_eq!(mbps("20").unwrap(), rate("20M"));
    assert_eq!(mbps("2.5").unwrap(), rate("2.5M"));
    assert_eq!(mbps("0.5").unwrap(), rate("500k"));
    assert_eq!(mbps("0").unwrap(), None);
    assert_eq!(mbps("").unwrap(), None);
    assert!(mbps("20M").is_err());
    assert!(mbps("-1").is_err());
}

#[test]
fn a_circuit_of_several_devices_is_one_opd_with_all_their_addresses() {
    let csv = format!(
        "{HEADER}\nc1,Dinas Kesehatan,1,R1,AP_1,,\"10.0.0.0/24, 10.0.1.5\",fd00::/64,10,5,100,50,main\n\
         c2,Setda,2,R2,,,10.0.2.0/24,,1,1,10,10,\n\
         c1,Dinas Kesehatan,3,R3,AP_1,,10.0.3.0/24,2001:db8::7,10,5,100,50,annex\n"
    );
    let draft = read(&csv, "s.csv", None);
    assert!(draft.errors.is_empty(), "{:?}", draft.errors);
    assert_eq!(draft.opds.len(), 2);
    let dinkes = &draft.opds[0];
    assert_eq!(dinkes.id, "dinas-kesehatan");
    assert_eq!(dinkes.origin.line, 2);
    let nets: Vec<String> = dinkes.subnets.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        nets,
        ["10.0.0.0/24", "10.0.1.5/32", "fd00::/64", "10.0.3.0/24", "2001:db8::7/128"]
    );
    assert_eq!(dinkes.limits[Direction::Download.index()].ceiling, rate("100M"));
    assert_eq!(dinkes.limits[Direction::Upload.index()].guaranteed, rate("5M"));
    assert_eq!(dinkes.group.as_deref(), Some("ap-1"));
    assert!(dinkes.comments.contains(&"annex".to_string()));
    assert_eq!(draft.opds[1].group, None);
}

#[test]
fn network_nodes_limit_the_groups_and_roots_give_the_capacity() {
    let csv = format!("{HEADER}\nc1,A,1,R1,AP_1,,10.0.0.0/24,,1,1,10,10,\n");
    let json = r#"{"Site": {"downloadBandwidthMbps": 300, "uploadBandwidthMbps": 200,
        "children": {"AP_1": {"downloadBandwidthMbps": 50, "uploadBandwidthMbps": 25.5}}},
        "Other": {"downloadBandwidthMbps": 100, "uploadBandwidthMbps": 100}}"#;
    let draft = read(&csv, "s.csv", Some((json, "n.json")));
    assert!(draft.errors.is_empty(), "{:?}", draft.errors);
    assert_eq!(draft.groups.len(), 1);
    let group = &draft.groups[0];
    assert_eq!(group.id, "ap-1");
    assert_eq!(group.limits[Direction::Upload.index()].ceiling, rate("25.5M"));
    assert_eq!(group.origin.line, 2);
    assert_eq!(
        draft.source_capacity[Direction::Download.index()].as_ref().unwrap().0,
        Rate(400_000_000)
    );
    let warnings = draft.warning_lines().join("\n");
    assert!(warnings.contains("n.json:2: warning: node AP_1 is inside Site"), "{warnings}");
}

#[test]
fn bad_rows_are_errors_with_their_line_numbers() {
    let csv = format!(
        "# comment\n{HEADER}\nc1,A,1,R1,,,10.0.0.0/24,,1,1,10,10,\n\
         c2,B,2,R2,,,10.0.1.0/24, 10.0.2.0/24,,1,1,10,10,\nc3,C,3,R3,,,10.0.999.0/24,,1,1,10,10,\n\
         c4,D,4,R4,,,10.0.4.0/24,,1,1,ten,10,\n,E,5,R5,,,10.0.5.0/24,,1,1,10,10,\n"
    );
    let draft = read(&csv, "s.csv", None);
    assert_eq!(draft.errors.len(), 4, "{:?}", draft.errors);
    assert!(draft.errors[0].starts_with("s.csv:4: 14 fields, the header has 13"));
    assert!(draft.errors[1].starts_with("s.csv:5: IPv4: \"10.0.999.0/24\""));
    assert!(draft.errors[2].starts_with("s.csv:6: Download Max Mbps: \"ten\""));
    assert_eq!(draft.errors[3], "s.csv:7: no Circuit ID");

    let draft = read("Circuit ID,IPv4\n1,10.0.0.1\n", "s.csv", None);
    assert!(draft.errors[0].starts_with("s.csv:1: the header has no column Circuit Name"));
    let draft = read(&format!("{HEADER}\n"), "s.csv", Some(("{\"a\": [", "n.json")));
    assert!(draft.errors[0].starts_with("n.json:1: not JSON"), "{:?}", draft.errors);
}

#[test]
fn nodes_whose_ids_collide_are_two_groups_each_with_its_own_members() {
    let csv = format!(
        "{HEADER}\nc1,A,1,R1,AP 1,,10.0.0.0/24,,1,1,10,10,\nc2,B,2,R2,AP_1,,10.0.1.0/24,,1,1,10,10,\n"
    );
    let draft = read(&csv, "s.csv", None);
    let groups: Vec<&str> = draft.groups.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(groups, ["ap-1", "ap-1-2"]);
    assert_eq!(draft.opds[0].group.as_deref(), Some("ap-1"));
    assert_eq!(draft.opds[1].group.as_deref(), Some("ap-1-2"));
    assert!(
        draft
            .warning_lines()
            .iter()
            .any(|w| w.starts_with("s.csv:3: warning: group id \"ap-1\" is taken"))
    );
}
