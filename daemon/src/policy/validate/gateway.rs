//! The `[gateway]` table: interfaces, capacities, timezone and the
//! shaping settings that apply to every class.

use super::checker::{Checker, Span, Value, with_article};
use super::shaping::SHAPING_KEYS;
use crate::policy::{
    DEFAULT_LEAF_LIMIT, DEFAULT_MARK_MASK, DEFAULT_TIMEZONE, Gateway, LeafQdisc, MIN_MARK_BITS,
    Rate,
};
use toml::de::{DeTable, DeValue};

/// Keys allowed in `[gateway]`; also used to hint at a missing header.
pub(super) const GATEWAY_KEYS: &[&str] = &[
    "wan",
    "lan",
    "download",
    "upload",
    "timezone",
    "leaf_qdisc",
    "leaf_limit",
    "mark_mask",
];

/// IFNAMSIZ (16) minus the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

/// What survived validation of the `[gateway]` table, with spans for the
/// cross-checks against the OPDs.
pub(super) struct GatewayDraft {
    /// (capacity, span of its value) per direction, download first.
    pub(super) capacity: [Option<(Rate, Span)>; 2],
    pub(super) gateway: Option<Gateway>,
}

impl Checker<'_> {
    /// The `[gateway]` table, with what the cross-checks need.
    pub(super) fn gateway(&mut self, table: &DeTable<'_>, header: &Span) -> GatewayDraft {
        const PLACE: &str = "[gateway]";
        let keys: Vec<&str> = GATEWAY_KEYS.iter().chain(SHAPING_KEYS).copied().collect();
        self.unknown_keys(table, &keys, "in [gateway]");

        let wan = self
            .require(table, "wan", header, PLACE, "\"eth0\"")
            .and_then(|value| {
                let name = self.string(value, "wan", "\"eth0\"")?;
                self.interface_name(name, &value.span())
                    .then(|| (name.to_string(), value.span()))
            });

        let lan = self
            .require(table, "lan", header, PLACE, "[\"eth1\"]")
            .and_then(|value| self.lan(value, wan.as_ref().map(|(name, _)| name.as_str())));

        let download = self
            .require(table, "download", header, PLACE, "\"300M\"")
            .and_then(|value| self.rate(value));
        let upload = self
            .require(table, "upload", header, PLACE, "\"300M\"")
            .and_then(|value| self.rate(value));

        let timezone = match table.get("timezone") {
            None => Some(DEFAULT_TIMEZONE),
            Some(value) => self
                .string(value, "timezone", "\"Asia/Makassar\"")
                .and_then(|name| self.timezone(name, &value.span())),
        };

        let leaf_qdisc = match table.get("leaf_qdisc") {
            None => Some(LeafQdisc::default()),
            Some(value) => self
                .string(value, "leaf_qdisc", "\"fq_codel\"")
                .and_then(|name| match name.parse::<LeafQdisc>() {
                    Ok(qdisc) => Some(qdisc),
                    Err(message) => {
                        self.error(&value.span(), message);
                        None
                    }
                }),
        };

        let leaf_limit = match table.get("leaf_limit") {
            None => Some(DEFAULT_LEAF_LIMIT),
            Some(value) => self.leaf_limit(value),
        };

        let mark_mask = match table.get("mark_mask") {
            None => Some(DEFAULT_MARK_MASK),
            Some(value) => self.mark_mask(value),
        };

        let shaping = self.shaping(table);

        let gateway = match (wan, lan, &download, &upload, shaping) {
            (Some((wan, _)), Some(lan), Some((download, _)), Some((upload, _)), Some(shaping)) => {
                match (timezone, leaf_qdisc, leaf_limit, mark_mask) {
                    (Some(timezone), Some(leaf_qdisc), Some(leaf_limit), Some(mark_mask)) => {
                        Some(Gateway {
                            wan,
                            lan,
                            download: *download,
                            upload: *upload,
                            timezone,
                            leaf_qdisc,
                            leaf_limit,
                            mark_mask,
                            shaping,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        GatewayDraft {
            capacity: [download, upload],
            gateway,
        }
    }

    fn lan(&mut self, value: &Value<'_>, wan: Option<&str>) -> Option<Vec<String>> {
        let array = self.array(value, "lan", "[\"eth1\"]")?;
        if array.is_empty() {
            self.error(
                &value.span(),
                "lan is empty; list the interfaces towards the OPDs, e.g. lan = [\"eth1\"]",
            );
            return None;
        }
        let mut names: Vec<String> = Vec::new();
        let mut ok = true;
        for item in array.iter() {
            let span = item.span();
            let Some(name) = self.string(item, "each lan interface", "[\"eth1\"]") else {
                ok = false;
                continue;
            };
            if !self.interface_name(name, &span) {
                ok = false;
            } else if Some(name) == wan {
                self.error(
                    &span,
                    format!(
                        "\"{name}\" is the wan interface; an interface is either wan (towards \
                         the ISP) or lan (towards the OPDs), not both"
                    ),
                );
                ok = false;
            } else if names.iter().any(|n| n == name) {
                self.error(&span, format!("\"{name}\" is listed twice in lan"));
                ok = false;
            } else {
                names.push(name.to_string());
            }
        }
        ok.then_some(names)
    }

    /// Checks what Linux itself would refuse; whether the interface exists
    /// is checked by the daemon at run time, so `jatah check` works anywhere.
    pub(super) fn interface_name(&mut self, name: &str, span: &Span) -> bool {
        let problem = if name.is_empty() {
            Some("interface name is empty; write a Linux interface name, e.g. \"eth1\" or \"eth1.10\"".to_string())
        } else if name.len() > MAX_IFNAME_LEN {
            Some(format!(
                "interface name \"{name}\" is {} bytes; Linux allows at most {MAX_IFNAME_LEN}",
                name.len()
            ))
        } else if name == "." || name == ".." {
            Some(format!("\"{name}\" is not a valid interface name"))
        } else if name.contains(':') {
            Some(format!(
                "interface name \"{name}\" contains ':'; \"eth0:1\" style aliases are \
                 addresses, not interfaces: write the interface itself, e.g. \"{}\"",
                name.split(':').next().unwrap_or_default()
            ))
        } else if name.contains('/') || name.chars().any(char::is_whitespace) {
            Some(format!(
                "interface name \"{name}\" contains '/' or whitespace, which Linux does not \
                 allow in interface names"
            ))
        } else {
            None
        };
        match problem {
            Some(message) => {
                self.error(span, message);
                false
            }
            None => true,
        }
    }

    fn timezone(&mut self, name: &str, span: &Span) -> Option<chrono_tz::Tz> {
        if let Ok(tz) = name.parse::<chrono_tz::Tz>() {
            return Some(tz);
        }
        // Indonesian admins think in WIB/WITA/WIT; the IANA database does not.
        let suggestion = match name.to_ascii_uppercase().as_str() {
            "WIB" => Some("Asia/Jakarta"),
            "WITA" => Some("Asia/Makassar"),
            "WIT" => Some("Asia/Jayapura"),
            _ => chrono_tz::TZ_VARIANTS
                .iter()
                .map(|tz| tz.name())
                .find(|candidate| candidate.eq_ignore_ascii_case(name)),
        };
        let message = match suggestion {
            Some(suggestion) => {
                format!("\"{name}\" is not an IANA time zone name; write \"{suggestion}\"")
            }
            None => format!(
                "\"{name}\" is not an IANA time zone name; write e.g. \"Asia/Makassar\" (WITA), \
                 \"Asia/Jakarta\" (WIB) or \"Asia/Jayapura\" (WIT)"
            ),
        };
        self.error(span, message);
        None
    }

    fn leaf_limit(&mut self, value: &Value<'_>) -> Option<u32> {
        let span = value.span();
        let DeValue::Integer(integer) = value.get_ref() else {
            self.error(
                &span,
                format!(
                    "leaf_limit is a number of packets, not {}; e.g. leaf_limit = 1000 (no \
                     quotes)",
                    with_article(value.get_ref())
                ),
            );
            return None;
        };
        match i128::from_str_radix(integer.as_str(), integer.radix()) {
            Ok(packets) if packets >= 1 => match u32::try_from(packets) {
                Ok(packets) => Some(packets),
                Err(_) => {
                    self.error(
                        &span,
                        format!("leaf_limit {packets} is too large; the default is 1000 packets"),
                    );
                    None
                }
            },
            _ => {
                self.error(
                    &span,
                    format!(
                        "leaf_limit {} would drop every packet; write at least 1 (the default is \
                         1000 packets)",
                        self.text(&span)
                    ),
                );
                None
            }
        }
    }

    fn mark_mask(&mut self, value: &Value<'_>) -> Option<u32> {
        let span = value.span();
        let parsed = match value.get_ref() {
            // The documented form is a string; a TOML hex integer reads the
            // same to an admin, so accept it too.
            DeValue::Integer(integer) => {
                u32::from_str_radix(integer.as_str(), integer.radix()).ok()
            }
            DeValue::String(text) => {
                let text = text.trim().replace('_', "");
                match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => text.parse::<u32>().ok(),
                }
            }
            _ => None,
        };
        let text = self.text(&span);
        let Some(mask) = parsed else {
            self.error(
                &span,
                format!(
                    "mark_mask {text} is not a 32-bit mask; write it in hexadecimal, e.g. \
                     mark_mask = \"0x7fff0000\""
                ),
            );
            return None;
        };
        let bits = mask.count_ones();
        // Shifted down to bit 0, a contiguous run is 2^n - 1.
        let run = mask.checked_shr(mask.trailing_zeros()).unwrap_or(0);
        let contiguous = run != 0 && run & run.wrapping_add(1) == 0;
        if !contiguous {
            self.error(
                &span,
                format!(
                    "mark_mask {mask:#010x} is not one contiguous run of bits; OPD slots are \
                     numbered inside the mask, e.g. \"0x7fff0000\""
                ),
            );
            return None;
        }
        if bits < MIN_MARK_BITS {
            self.error(
                &span,
                format!(
                    "mark_mask {mask:#010x} has {bits} bits; OPD slots need a contiguous run of \
                     at least {MIN_MARK_BITS} bits, e.g. \"0x7fff0000\""
                ),
            );
            return None;
        }
        Some(mask)
    }
}
