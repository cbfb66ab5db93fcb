//! Gateway-wide data as an OPD sees it: an `opd:` token, or a visitor of
//! the status page, reads the uplink's verdict, its delivered figures and
//! the gateway's events, but never another OPD's id or name in them.
//!
//! Where gateway-wide data names OPDs:
//! - the OPDs a delivered-capacity estimate held (`held`, in
//!   [`Delivered`]'s evidence and copied into the gateway verdict's and
//!   events' evidence as `*_delivered_evidence`): kept to the caller's own;
//! - the last reload's error, which quotes the policy file (OPD ids,
//!   names, subnets): replaced by a sentence saying where the admin finds
//!   it.
//!
//! The admin sees everything as it is.

use serde_json::Value;

use super::body::EventBody;
use crate::diagnosis::Verdict;
use crate::diagnosis::capacity::Delivered;
use crate::http::auth::Access;

/// Which OPDs gateway-wide data may name for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names<'a> {
    /// Every OPD: the admin (or an anonymous caller where the admin opened
    /// the summary, which lists every OPD anyway).
    All,
    /// This OPD alone: an `opd:` token, or the status page of one OPD.
    Only(&'a str),
}

impl<'a> Names<'a> {
    /// What `access` may see named.
    pub fn of(access: &'a Access) -> Names<'a> {
        match access {
            Access::Opd(own) => Names::Only(own),
            Access::Admin | Access::Anonymous => Names::All,
        }
    }

    fn keeps(self, id: &str) -> bool {
        match self {
            Names::All => true,
            Names::Only(own) => own == id,
        }
    }

    /// Evidence with every list of held OPDs (at any depth) cut to those
    /// the caller may see.
    pub fn evidence(self, evidence: &mut Value) {
        if self == Names::All {
            return;
        }
        match evidence {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    match value {
                        Value::Array(ids) if key == "held" => {
                            ids.retain(|id| id.as_str().is_some_and(|id| self.keeps(id)))
                        }
                        other => self.evidence(other),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.evidence(v)),
            _ => {}
        }
    }

    pub fn verdict(self, verdict: &mut Option<Verdict>) {
        if let Some(v) = verdict {
            self.evidence(&mut v.evidence);
        }
    }

    pub fn delivered(self, delivered: &mut Option<Delivered>) {
        if let Some(d) = delivered {
            d.evidence.held.retain(|id| self.keeps(id));
        }
    }

    pub fn event(self, event: &mut EventBody) {
        self.evidence(&mut event.evidence);
    }

    /// The last reload's error, or where the admin reads it.
    pub fn reload_error(self, error: Option<String>) -> Option<String> {
        match self {
            Names::All => error,
            Names::Only(_) => error.map(|_| {
                "the last reload did not take effect; the policy in force stays. The admin \
                 reads why in jatah's log or in GET /api/v1/gateway with the admin token"
                    .to_string()
            }),
        }
    }
}
