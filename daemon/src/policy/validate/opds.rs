//! One `[[opd]]` table: its id, name, subnets, allocations, probe and
//! group.

use std::net::IpAddr;

use ipnet::IpNet;
use toml::de::DeTable;

use super::checker::{Checker, Span, Value};
use super::entries::AllocationDraft;
use crate::policy::Opd;

/// Keys allowed in `[[opd]]`; also used to hint at a missing header.
pub(super) const OPD_KEYS: &[&str] = &[
    "id", "name", "subnets", "download", "upload", "probe", "group", "interface", "host",
];

/// Host names an OPD may list.
const MAX_HOST_NAMES: usize = 4_096;
/// Longest host name, in characters.
const MAX_HOST_NAME_LEN: usize = 64;

/// What survived validation of one `[[opd]]` table.
pub(super) struct OpdDraft {
    /// Where the `[[opd]]` table starts.
    pub(super) header: Span,
    /// The id when valid, with the span of its value.
    pub(super) id: Option<(String, Span)>,
    /// Whatever string was written as the id, valid or not, to name the OPD
    /// in messages about other problems.
    pub(super) label: Option<String>,
    pub(super) subnets: Vec<(IpNet, Span)>,
    /// Per direction, download first.
    pub(super) allocations: [AllocationDraft; 2],
    /// The group named by the `group` key, with the span of its value.
    pub(super) group: Option<(String, Span)>,
    pub(super) opd: Option<Opd>,
}

impl Checker<'_> {
    /// One `[[opd]]` table, with what the cross-checks need.
    pub(super) fn opd(&mut self, table: &DeTable<'_>, header: &Span) -> OpdDraft {
        const PLACE: &str = "this [[opd]]";
        self.unknown_keys(table, OPD_KEYS, "in [[opd]]");

        let mut label = None;
        let id = self
            .require(table, "id", header, PLACE, "\"diskominfo\"")
            .and_then(|value| {
                let id = self.string(value, "id", "\"diskominfo\"")?;
                label = Some(id.to_string());
                self.id(id, &value.span(), "id")
                    .then(|| (id.to_string(), value.span()))
            });

        let name = self.name(
            table,
            header,
            PLACE,
            "\"Dinas Komunikasi dan Informatika\"",
            "the OPD's name, e.g. \"Dinas Kesehatan\"",
        );

        let (subnets, subnets_ok) =
            match self.require(table, "subnets", header, PLACE, "[\"10.20.1.0/24\"]") {
                Some(value) => self.subnets(value),
                None => (Vec::new(), false),
            };

        let allocations = self.allocations(table, header, PLACE, "OPD");

        let probe = match table.get("probe") {
            None => Some(None),
            Some(value) => self
                .string(value, "probe", "\"10.20.1.1\"")
                .and_then(|text| self.probe(text, &value.span()))
                .map(Some),
        };

        // Whether the group exists is checked once every group is known
        // (see `group_references`).
        let group = match table.get("group") {
            None => Some(None),
            Some(value) => self
                .string(value, "group", "\"kecamatan\"")
                .map(|group| Some((group.to_string(), value.span()))),
        };

        let interface = match table.get("interface") {
            None => Some(None),
            Some(value) => self
                .string(value, "interface", "\"lan-dinkes\"")
                .and_then(|name| {
                    self.interface_name(name, &value.span())
                        .then(|| name.to_string())
                })
                .map(Some),
        };

        let hosts = match table.get("host") {
            None => Some(Vec::new()),
            Some(value) => self.host_names(value, &subnets),
        };

        let [download, upload] = &allocations;
        let opd = match (
            &id,
            name,
            subnets_ok,
            download.allocation(),
            upload.allocation(),
            probe,
            &group,
            interface,
            hosts,
        ) {
            (
                Some((id, _)),
                Some(name),
                true,
                Some(download),
                Some(upload),
                Some(probe),
                Some(group),
                Some(interface),
                Some(hosts),
            ) => Some(Opd {
                id: id.clone(),
                name,
                subnets: subnets.iter().map(|(net, _)| *net).collect(),
                download,
                upload,
                probe,
                group: group.as_ref().map(|(group, _)| group.clone()),
                interface,
                hosts,
            }),
            _ => None,
        };
        OpdDraft {
            header: header.clone(),
            id,
            label,
            subnets,
            allocations,
            group: group.flatten(),
            opd,
        }
    }

    /// The well-formed subnets, which all take part in the overlap check,
    /// and whether the list as a whole is valid (an OPD is never built from
    /// part of its address space).
    fn subnets(&mut self, value: &Value<'_>) -> (Vec<(IpNet, Span)>, bool) {
        let example = "[\"10.20.1.0/24\"]";
        let Some(array) = self.array(value, "subnets", example) else {
            return (Vec::new(), false);
        };
        if array.is_empty() {
            self.error(
                &value.span(),
                "no subnets; an OPD needs at least one, e.g. subnets = [\"10.20.1.0/24\"]",
            );
            return (Vec::new(), false);
        }
        let mut subnets = Vec::new();
        let mut ok = true;
        for item in array.iter() {
            let span = item.span();
            let Some(text) = self.string(item, "each subnet", example) else {
                ok = false;
                continue;
            };
            match self.subnet(text, &span) {
                Some(net) => subnets.push((net, span)),
                None => ok = false,
            }
        }
        (subnets, ok)
    }

    fn subnet(&mut self, text: &str, span: &Span) -> Option<IpNet> {
        match text.parse::<IpNet>() {
            Ok(net) if net.trunc() != net => {
                self.error(
                    span,
                    format!("{net}: host bits set; did you mean {}?", net.trunc()),
                );
                None
            }
            Ok(net) => Some(net),
            Err(_) => {
                let message = match text.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => format!(
                        "\"{text}\" has no prefix length; write \"{text}/32\" for a single host \
                         or the network, e.g. \"10.20.1.0/24\""
                    ),
                    Ok(IpAddr::V6(_)) => format!(
                        "\"{text}\" has no prefix length; write \"{text}/128\" for a single host \
                         or the network, e.g. \"fd00:20:1::/64\""
                    ),
                    Err(_) => format!(
                        "\"{text}\" is not a subnet; write an address and prefix length, e.g. \
                         \"10.20.1.0/24\" or \"fd00:20:1::/64\""
                    ),
                };
                self.error(span, message);
                None
            }
        }
    }

    /// `[[opd.host]]` entries: an address inside the OPD's subnets and a
    /// name, each address once.
    fn host_names(
        &mut self,
        value: &Value<'_>,
        subnets: &[(IpNet, Span)],
    ) -> Option<Vec<crate::policy::HostName>> {
        let example = "[[opd.host]] address = \"10.20.1.37\", name = \"PC Bendahara\"";
        let array = self.array(value, "host", example)?;
        if array.len() > MAX_HOST_NAMES {
            self.error(
                &value.span(),
                format!(
                    "{} host names; an OPD may name at most {MAX_HOST_NAMES}",
                    array.len()
                ),
            );
            return None;
        }
        let mut out: Vec<crate::policy::HostName> = Vec::new();
        let mut ok = true;
        for item in array.iter() {
            let span = item.span();
            let Some(table) = item.get_ref().as_table() else {
                self.error(&span, format!("each host is a table; write {example}"));
                ok = false;
                continue;
            };
            self.unknown_keys(table, &["address", "name"], "in [[opd.host]]");
            let address = table.get("address").and_then(|v| {
                let text = self.string(v, "address", "\"10.20.1.37\"")?;
                match text.parse::<IpAddr>() {
                    Ok(a) if subnets.iter().any(|(net, _)| net.contains(&a)) => Some(a),
                    Ok(a) => {
                        self.error(
                            &v.span(),
                            format!("host {a} is outside this OPD's subnets; name only its own hosts"),
                        );
                        None
                    }
                    Err(_) => {
                        self.error(
                            &v.span(),
                            format!("host address \"{text}\" is not an IP address, e.g. \"10.20.1.37\""),
                        );
                        None
                    }
                }
            });
            let name = table.get("name").and_then(|v| {
                let text = self.string(v, "name", "\"PC Bendahara\"")?;
                let len = text.chars().count();
                if text.trim().is_empty() || len > MAX_HOST_NAME_LEN || text.chars().any(char::is_control) {
                    self.error(
                        &v.span(),
                        format!("a host name is 1 to {MAX_HOST_NAME_LEN} characters of text, e.g. \"PC Bendahara\""),
                    );
                    return None;
                }
                Some(text.to_string())
            });
            match (address, name) {
                (Some(address), Some(name)) => {
                    if out.iter().any(|h| h.address == address) {
                        self.error(&span, format!("host {address} is named twice"));
                        ok = false;
                    } else {
                        out.push(crate::policy::HostName { address, name });
                    }
                }
                (a, n) => {
                    if a.is_none() && table.get("address").is_none() {
                        self.error(&span, format!("this host has no address; write {example}"));
                    }
                    if n.is_none() && table.get("name").is_none() {
                        self.error(&span, format!("this host has no name; write {example}"));
                    }
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn probe(&mut self, text: &str, span: &Span) -> Option<IpAddr> {
        if let Ok(address) = text.parse::<IpAddr>() {
            return Some(address);
        }
        let message = match text.parse::<IpNet>() {
            Ok(net) => format!(
                "probe \"{text}\" is a subnet; the probe is one address, the OPD's router: \
                 write \"{}\"",
                net.addr()
            ),
            Err(_) => format!(
                "probe \"{text}\" is not an IP address; write the OPD router's address, e.g. \
                 \"10.20.1.1\""
            ),
        };
        self.error(span, message);
        None
    }
}
