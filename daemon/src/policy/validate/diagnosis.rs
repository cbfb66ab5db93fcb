//! The optional `[diagnosis]` table: probe timing, RTT thresholds and
//! upstream targets.

use std::net::IpAddr;

use toml::de::{DeTable, DeValue};

use super::checker::{Checker, with_article};
use super::entries::MAX_ID_LEN;
use crate::policy::diagnosis::{
    DIAGNOSIS_KEYS, DiagnosisSettings, UPSTREAM_KEYS, UpstreamTarget, parse_duration,
};

impl Checker<'_> {
    /// The `[diagnosis]` table; `None` when any of it is invalid.
    pub(super) fn diagnosis(&mut self, table: &DeTable<'_>) -> Option<DiagnosisSettings> {
        self.unknown_keys(table, DIAGNOSIS_KEYS, "in [diagnosis]");
        let mut d = DiagnosisSettings::default();
        let mut ok = true;
        for (key, slot) in [
            ("probe_interval", &mut d.probe_interval),
            ("lan_rtt", &mut d.lan_rtt),
            ("wan_rtt", &mut d.wan_rtt),
            ("silence", &mut d.silence),
        ] {
            let Some(value) = table.get(key) else {
                continue;
            };
            let Some(text) = self.string(value, key, "\"1s\"") else {
                ok = false;
                continue;
            };
            match parse_duration(text) {
                Ok(v) => *slot = v,
                Err(e) => {
                    self.error(&value.span(), format!("{key}: {e}"));
                    ok = false;
                }
            }
        }
        ok &= self.boolean(table, "rtt_tracking", &mut d.rtt_tracking, "");
        if let Some(value) = table.get("rtt_sampling") {
            let n = match value.get_ref() {
                DeValue::Integer(i) => i.as_str().parse::<u32>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.is_power_of_two() && n <= 1 << jatah_common::RTT_SAMPLE_SHIFT_MAX => {
                    d.rtt_sampling = n
                }
                _ => {
                    self.error(
                        &value.span(),
                        "rtt_sampling is how many TCP connections share one timed handshake: \
                         1, 2, 4, 8, 16, 32, 64 or 128 (the default is 8)",
                    );
                    ok = false;
                }
            }
        }
        if let Some(value) = table.get("probe_lost_in_a_row") {
            match value.get_ref() {
                DeValue::Integer(i) => match i.as_str().parse::<u32>() {
                    Ok(n) if (1..=60).contains(&n) => d.probe_lost_in_a_row = n,
                    _ => {
                        self.error(
                            &value.span(),
                            "probe_lost_in_a_row must be between 1 and 60 (the default is 3)",
                        );
                        ok = false;
                    }
                },
                other => {
                    self.error(
                        &value.span(),
                        format!(
                            "probe_lost_in_a_row is a number, not {}; e.g. probe_lost_in_a_row = 3",
                            with_article(other)
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let Some(value) = table.get("upstream") {
            match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        let DeValue::Table(t) = item.get_ref() else {
                            self.error(
                                &item.span(),
                                "each upstream target is a [[diagnosis.upstream]] table with \
                                 name and address",
                            );
                            ok = false;
                            continue;
                        };
                        self.unknown_keys(t, UPSTREAM_KEYS, "in [[diagnosis.upstream]]");
                        let name = self
                            .require(t, "name", &item.span(), "[[diagnosis.upstream]]", "\"isp\"")
                            .and_then(|v| self.string(v, "name", "\"isp\"").map(|s| (s, v.span())));
                        let address = self
                            .require(
                                t,
                                "address",
                                &item.span(),
                                "[[diagnosis.upstream]]",
                                "\"203.0.113.1\"",
                            )
                            .and_then(|v| {
                                self.string(v, "address", "\"203.0.113.1\"")
                                    .map(|s| (s, v.span()))
                            });
                        match (name, address) {
                            (Some((name, nspan)), Some((addr, aspan))) => {
                                let good_name = !name.is_empty()
                                    && name.len() <= MAX_ID_LEN
                                    && name.bytes().all(|b| {
                                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
                                    });
                                if !good_name {
                                    self.error(
                                        &nspan,
                                        format!(
                                            "upstream name \"{name}\" must be 1 to 32 characters \
                                             of a-z, 0-9 and '-' (it is a metric label)"
                                        ),
                                    );
                                    ok = false;
                                } else if d.upstream.iter().any(|u| u.name == name) {
                                    self.error(
                                        &nspan,
                                        format!("upstream name \"{name}\" is used twice"),
                                    );
                                    ok = false;
                                }
                                match addr.parse::<IpAddr>() {
                                    Ok(address) if good_name => d.upstream.push(UpstreamTarget {
                                        name: name.to_string(),
                                        address,
                                    }),
                                    Ok(_) => {}
                                    Err(_) => {
                                        self.error(
                                            &aspan,
                                            format!(
                                                "upstream address \"{addr}\" is not an IP address"
                                            ),
                                        );
                                        ok = false;
                                    }
                                }
                            }
                            _ => ok = false,
                        }
                    }
                }
                other => {
                    self.error(
                        &value.span(),
                        format!(
                            "upstream is a list of [[diagnosis.upstream]] tables, not {}",
                            with_article(other)
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(d)
    }
}
