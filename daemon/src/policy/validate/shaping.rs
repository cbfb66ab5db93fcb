//! The `[gateway]` keys that say how an allocation is served inside each
//! OPD's class: the interactive lane and the size of the bulk queue.

use toml::de::{DeTable, DeValue};

use super::checker::{Checker, Value};
use crate::policy::Shaping;
use crate::policy::diagnosis::parse_duration;

/// The keys read here, part of `[gateway]`'s.
pub(super) const SHAPING_KEYS: &[&str] = &[
    "interactive",
    "interactive_percent",
    "boost_new_connections",
    "queue_target",
    "queue_floor",
    "adapt",
];

impl Checker<'_> {
    /// The shaping keys of `[gateway]`, defaults for those not given;
    /// `None` when any given is invalid.
    pub(super) fn shaping(&mut self, table: &DeTable<'_>) -> Option<Shaping> {
        let mut s = Shaping::default();
        let mut ok = true;
        ok &= self.boolean(
            table,
            "interactive",
            &mut s.interactive,
            "; true gives every OPD a lane for ACKs, DNS, pings and calls ahead of its downloads",
        );
        ok &= self.boolean(
            table,
            "boost_new_connections",
            &mut s.boost_new_connections,
            "; true lets the first 32 KiB of each new connection to an office (a small web \
             object) go ahead of that office's long downloads",
        );
        ok &= self.boolean(
            table,
            "adapt",
            &mut s.adapt,
            "; true shapes to what the uplink delivers when it delivers less than the contract",
        );
        if let Some(value) = table.get("interactive_percent") {
            match self.whole(value, 1, 50) {
                Some(n) => s.interactive_percent = n,
                None => {
                    self.error(
                        &value.span(),
                        format!(
                            "interactive_percent {} must be a whole number from 1 to 50: the \
                             percent of each OPD's guarantee kept for its interactive lane \
                             (the default is 5)",
                            self.text(&value.span())
                        ),
                    );
                    ok = false;
                }
            }
        }
        if let Some(value) = table.get("queue_target") {
            let parsed = self.string(value, "queue_target", "\"10ms\"").map(|t| {
                if t.trim() == "off" {
                    Ok(0)
                } else {
                    parse_duration(t).map(|d| d.as_millis())
                }
            });
            match parsed {
                Some(Ok(ms)) if ms <= 1000 => s.queue_target_ms = ms as u32,
                Some(Ok(_)) => {
                    self.error(
                        &value.span(),
                        "queue_target must be from \"1ms\" to \"1s\", or \"off\": the longest \
                         a busy OPD's downloads wait in its queue (the default is \"off\")",
                    );
                    ok = false;
                }
                Some(Err(e)) => {
                    self.error(
                        &value.span(),
                        format!("queue_target: {e}, or \"off\" for leaf_limit packets"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        if let Some(value) = table.get("queue_floor") {
            match self.whole(value, 1514, 16 << 20) {
                Some(n) => s.queue_floor_bytes = n,
                None => {
                    self.error(
                        &value.span(),
                        format!(
                            "queue_floor {} must be a number of bytes from 1514 to 16777216; \
                             below 65536 a 64 KiB GRO packet cannot enter the queue and is \
                             dropped whole (the default is 65536)",
                            self.text(&value.span())
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(s)
    }

    /// A TOML integer within `lo..=hi`.
    fn whole(&self, value: &Value<'_>, lo: u32, hi: u32) -> Option<u32> {
        let DeValue::Integer(i) = value.get_ref() else {
            return None;
        };
        i128::from_str_radix(i.as_str(), i.radix())
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (lo..=hi).contains(n))
    }
}
