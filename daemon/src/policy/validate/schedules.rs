//! One `[[schedule]]` table: a weekly time window and the allocations
//! it puts in force. Whether they fit is checked later, against the whole
//! policy.

use toml::de::DeValue;

use super::checker::{Checker, Value};

const SCHEDULE_KEYS: &[&str] = &["name", "days", "from", "to", "opd"];
const SCHEDULE_OPD_KEYS: &[&str] = &["id", "download", "upload"];

impl Checker<'_> {
    /// One `[[schedule]]` table; `None` when any of it is invalid.
    pub(super) fn schedule(
        &mut self,
        item: &Value<'_>,
    ) -> Option<crate::policy::schedule::Schedule> {
        use crate::policy::schedule::{DAYS, Schedule, ScheduledAllocation, Window};
        let DeValue::Table(table) = item.get_ref() else {
            self.error(&item.span(), "each schedule is a [[schedule]] table");
            return None;
        };
        self.unknown_keys(table, SCHEDULE_KEYS, "in [[schedule]]");
        let header = item.span();
        let mut ok = true;
        let name = self
            .require(table, "name", &header, "[[schedule]]", "\"office-hours\"")
            .and_then(|v| {
                self.string(v, "name", "\"office-hours\"")
                    .map(|s| (s.to_string(), v.span()))
            });
        if let Some((n, span)) = &name
            && !self.id(n, span, "schedule name")
        {
            ok = false;
        }
        let mut days = [false; 7];
        if let Some(v) = self.require(
            table,
            "days",
            &header,
            "[[schedule]]",
            "[\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]",
        ) {
            match self.array(v, "days", "[\"mon\", \"fri\"]") {
                Some(items) if !items.is_empty() => {
                    for d in items.iter() {
                        let DeValue::String(text) = d.get_ref() else {
                            self.error(&d.span(), "each day is a string, e.g. \"mon\"");
                            ok = false;
                            continue;
                        };
                        match DAYS.iter().position(|x| *x == text.as_ref()) {
                            Some(i) => days[i] = true,
                            None => {
                                self.error(
                                    &d.span(),
                                    format!(
                                        "unknown day \"{text}\"; write one of {}",
                                        DAYS.join(", ")
                                    ),
                                );
                                ok = false;
                            }
                        }
                    }
                }
                Some(_) => {
                    self.error(&v.span(), "days must name at least one day");
                    ok = false;
                }
                None => ok = false,
            }
        }
        let mut time = |key: &str, example: &str| -> Option<chrono::NaiveTime> {
            let v = self.require(table, key, &header, "[[schedule]]", example)?;
            let text = self.string(v, key, example)?;
            match chrono::NaiveTime::parse_from_str(text, "%H:%M") {
                Ok(t) => Some(t),
                Err(_) => {
                    self.error(
                        &v.span(),
                        format!("{key} \"{text}\" is not a time of day; write HH:MM in the gateway's timezone, e.g. {example}"),
                    );
                    None
                }
            }
        };
        let from = time("from", "\"07:30\"");
        let to = time("to", "\"16:00\"");
        if let (Some(f), Some(t)) = (from, to)
            && f == t
        {
            self.error(
                &header,
                "from and to are the same time: the window would never close or never open",
            );
            ok = false;
        }
        let mut allocations = Vec::new();
        match table.get("opd") {
            None => {
                self.error(&header, "a schedule changes at least one OPD: add a [[schedule.opd]] table with its id and allocation");
                ok = false;
            }
            Some(v) => {
                match v.get_ref() {
                    DeValue::Array(items) => {
                        for it in items.iter() {
                            let DeValue::Table(t) = it.get_ref() else {
                                self.error(&it.span(), "each [[schedule.opd]] is a table with id, download and/or upload");
                                ok = false;
                                continue;
                            };
                            self.unknown_keys(t, SCHEDULE_OPD_KEYS, "in [[schedule.opd]]");
                            let id = self
                                .require(t, "id", &it.span(), "[[schedule.opd]]", "\"disdukcapil\"")
                                .and_then(|v| {
                                    self.string(v, "id", "\"disdukcapil\"").map(str::to_string)
                                });
                            let download = t.get("download").map(|v| {
                                self.allocation(v, "download", "the schedule").allocation()
                            });
                            let upload = t
                                .get("upload")
                                .map(|v| self.allocation(v, "upload", "the schedule").allocation());
                            if download.is_none() && upload.is_none() {
                                self.error(&it.span(), "give the download and/or upload allocation in force during the window");
                                ok = false;
                            }
                            match (id, download, upload) {
                                (Some(opd), Some(Some(_)) | None, Some(Some(_)) | None) => {
                                    allocations.push(ScheduledAllocation {
                                        opd,
                                        download: download.flatten(),
                                        upload: upload.flatten(),
                                    })
                                }
                                _ => ok = false,
                            }
                        }
                    }
                    _ => {
                        self.error(
                            &v.span(),
                            "write the OPDs a schedule changes as [[schedule.opd]] tables",
                        );
                        ok = false;
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        Some(Schedule {
            name: name?.0,
            window: Window {
                days,
                from: from?,
                to: to?,
            },
            allocations,
        })
    }
}
