//! The checks that must scale: overlapping subnets among thousands of
//! OPDs, and the data path's limits, enforced wherever a policy is read.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::IpNet;
use jatah_common::{MAX_OPDS, MAX_PREFIXES};

use super::checker::{Walk, line_column};
use super::cross_checks::first_overlaps;
use crate::policy::{PolicyError, parse};

/// A policy of `n` OPDs `o0`, `o1`, ... (named "Kantor 0", ...), each
/// with the distinct /30 `subnet(i)` unless `subnets` gives its list.
fn many_opds(n: usize, subnets: impl Fn(usize) -> Option<String>) -> String {
    let mut text = String::from(
        "[gateway]\nwan = \"eth0\"\nlan = [\"eth1\"]\ndownload = \"100G\"\nupload = \"100G\"\n",
    );
    for i in 0..n {
        let list = subnets(i).unwrap_or_else(|| format!("\"{}\"", subnet(i)));
        write!(
            text,
            "\n[[opd]]\nid = \"o{i}\"\nname = \"Kantor {i}\"\nsubnets = [{list}]\n\
             download = {{ guaranteed = \"1M\", ceiling = \"2M\" }}\n\
             upload = {{ guaranteed = \"1M\", ceiling = \"2M\" }}\n"
        )
        .unwrap();
    }
    text
}

/// The `i`-th /30 from 10.0.0.0.
fn subnet(i: usize) -> String {
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + 4 * i as u32;
    format!("{}/30", Ipv4Addr::from(base))
}

/// The line of `[[opd]]` number `i` in [`many_opds`]'s text.
fn header_line(i: usize) -> usize {
    // Five gateway lines, then seven per OPD (blank line first).
    5 + 7 * i + 2
}

fn rejected(text: &str) -> PolicyError {
    match parse(text, "many.toml") {
        Ok(p) => panic!("accepted a policy of {} OPDs", p.opds.len()),
        Err(e) => e,
    }
}

#[test]
fn sixteen_thousand_opds_with_a_subnet_each_validate() {
    let n = MAX_OPDS as usize;
    let policy = parse(&many_opds(n, |_| None), "many.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.opds.len(), n);
    assert_eq!(policy.opds[n - 1].id, format!("o{}", n - 1));
}

#[test]
fn an_overlap_deep_in_a_long_list_is_found_and_names_both_opds() {
    let n = MAX_OPDS as usize;
    let late = 15_000;
    // OPD 15000 also claims 10.0.0.16/28, which holds the /30s of OPDs 4
    // to 7, and the /30 of the last OPD, which comes after it in the file.
    let text = many_opds(n, |i| {
        (i == late).then(|| format!("\"{}\", \"10.0.0.16/28\", \"{}\"", subnet(i), subnet(n - 1)))
    });
    let error = rejected(&text);
    let subnets_line = |i| header_line(i) + 3;
    let found: Vec<(usize, String)> = error
        .diagnostics
        .iter()
        .map(|d| (d.line, d.message.clone()))
        .collect();
    // Each is reported where the later subnet is written, against the
    // first earlier subnet it overlaps, naming that one's OPD and line:
    // the problem's line is the one OPD, the message the other.
    assert_eq!(
        found,
        [
            (
                subnets_line(late),
                format!(
                    "10.0.0.16/28 overlaps 10.0.0.16/30 of OPD \"o4\" (line {}); an address can \
                     belong to only one OPD",
                    subnets_line(4)
                )
            ),
            (
                subnets_line(n - 1),
                format!(
                    "{0} overlaps {0} of OPD \"o{late}\" (line {1}); an address can belong to \
                     only one OPD",
                    subnet(n - 1),
                    subnets_line(late)
                )
            ),
        ],
        "{error}"
    );
    let line = |n: usize| text.lines().nth(n - 1).unwrap();
    assert_eq!(line(header_line(late)), "[[opd]]");
    assert!(line(subnets_line(late)).contains("10.0.0.16/28"));
}

#[test]
fn more_opds_than_the_data_path_has_slots_for_are_refused_with_the_limit_and_the_count() {
    let n = MAX_OPDS as usize + 2;
    let error = rejected(&many_opds(n, |_| None));
    assert_eq!(error.diagnostics.len(), 1, "{error}");
    let d = &error.diagnostics[0];
    assert_eq!(d.line, header_line(MAX_OPDS as usize), "at the first OPD too many");
    assert!(
        d.message
            .starts_with(&format!("{n} OPDs, more than the {MAX_OPDS} jatah's data path")),
        "{}",
        d.message
    );
    assert!(d.message.contains("remove 2"), "{}", d.message);
}

#[test]
fn more_subnets_than_the_prefix_table_holds_are_refused_with_the_limit_and_the_count() {
    // 9 OPDs, the first 8 with 16,384 /32s each (131,072 in all, exactly
    // the table) and the last with one more.
    let per = 16_384;
    let text = many_opds(9, |i| {
        let first = u32::from(Ipv4Addr::new(10, 64, 0, 0)) + (i * per) as u32;
        let count = if i < 8 { per } else { 1 };
        Some(
            (0..count as u32)
                .map(|k| format!("\"{}/32\"", Ipv4Addr::from(first + k)))
                .collect::<Vec<_>>()
                .join(","),
        )
    });
    let error = rejected(&text);
    assert_eq!(error.diagnostics.len(), 1, "{error}");
    let m = &error.diagnostics[0].message;
    assert!(
        m.starts_with(&format!(
            "{} IPv4 subnets in all OPDs, more than the {MAX_PREFIXES} jatah's IPv4 prefix table",
            MAX_PREFIXES + 1
        )),
        "{m}"
    );
    // One fewer fits.
    let fits = many_opds(8, |i| {
        let first = u32::from(Ipv4Addr::new(10, 64, 0, 0)) + (i * per) as u32;
        Some(
            (0..per as u32)
                .map(|k| format!("\"{}/32\"", Ipv4Addr::from(first + k)))
                .collect::<Vec<_>>()
                .join(","),
        )
    });
    parse(&fits, "fits.toml").unwrap_or_else(|e| panic!("{e}"));
}

/// xorshift64: the same prefixes on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn the_sorted_overlap_search_agrees_with_comparing_every_pair() {
    let mut rng = Rng(0x0dd5_eed5_1234_5678);
    for round in 0..300 {
        // Few distinct networks in a narrow range, so nesting, repeats and
        // neighbours are common; both families mixed.
        let nets: Vec<IpNet> = (0..1 + round % 40)
            .map(|_| {
                let r = rng.next();
                if r.is_multiple_of(5) {
                    let len = 112 + (r >> 8) as u8 % 17;
                    let addr = 0xfd00_u128 << 112 | u128::from((r >> 16) as u16);
                    IpNet::new(std::net::Ipv6Addr::from(addr).into(), len)
                        .unwrap()
                        .trunc()
                } else {
                    let len = 24 + (r >> 8) as u8 % 9;
                    let addr = u32::from(Ipv4Addr::new(10, 0, 0, 0)) | (r >> 16) as u32 & 0x3ff;
                    IpNet::new(Ipv4Addr::from(addr).into(), len).unwrap().trunc()
                }
            })
            .collect();
        let pairwise: Vec<Option<usize>> = (0..nets.len())
            .map(|later| {
                (0..later).find(|&earlier| {
                    let (a, b) = (&nets[later], &nets[earlier]);
                    a.contains(&b.network()) || b.contains(&a.network())
                })
            })
            .collect();
        assert_eq!(first_overlaps(&nets), pairwise, "{nets:?}");
    }
}

#[test]
fn positions_found_in_one_walk_are_those_counted_one_by_one() {
    let text = "a = 1\n\né = \"ü\"\r\n  [x]\nlast";
    let mut walk = Walk::default();
    for offset in 0..=text.len() + 2 {
        assert_eq!(walk.to(text, offset), line_column(text, offset), "{offset}");
    }
}
