//! The bodies the API answers with, shared with the status page. Their
//! doc comments are the OpenAPI document's descriptions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::diagnosis::capacity::Delivered;
use crate::diagnosis::{State as DiagnosisState, Verdict};
pub use crate::history::UsagePoint;
use crate::runtime::rates::WindowRates;

/// Allocation, current rate and totals of one direction of an OPD.
#[derive(Debug, Serialize, ToSchema)]
pub struct DirectionUsage {
    pub guaranteed_bps: u64,
    pub ceiling_bps: u64,
    pub rate: WindowRates,
    /// Share of the ceiling used over the last 10 s, in percent.
    pub ceiling_percent: f64,
    /// Bytes since the OPD got its slot (offered to its HTB class).
    pub bytes_total: u64,
    pub packets_total: u64,
}

/// One OPD: who it is, its allocation and what it uses now.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpdSummary {
    pub id: String,
    pub name: String,
    /// Diagnosis state; null during the first seconds after start.
    pub state: Option<DiagnosisState>,
    pub download: DirectionUsage,
    pub upload: DirectionUsage,
}

/// Bytes in a period.
#[derive(Debug, Serialize, ToSchema)]
pub struct Volume {
    pub download_bytes: u64,
    pub upload_bytes: u64,
}

/// One OPD in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpdDetail {
    #[serde(flatten)]
    pub summary: OpdSummary,
    pub subnets: Vec<String>,
    /// The OPD router's address jatah probes, if configured.
    pub probe: Option<String>,
    /// Since local midnight (gateway timezone); null if history is unavailable.
    pub today: Option<Volume>,
    /// Since the first of the month (gateway timezone).
    pub this_month: Option<Volume>,
    pub history_available: bool,
}

/// The list of OPDs this token may see.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpdList {
    pub opds: Vec<OpdSummary>,
}

/// Usage of an OPD over a time range.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    pub opd: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// `1m`, `1h` or `1d`.
    pub step: String,
    pub timezone: String,
    pub points: Vec<UsagePoint>,
}

/// Rates and totals of one direction at the gateway.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayDirection {
    pub capacity_bps: u64,
    pub guaranteed_sum_bps: u64,
    /// Sum of every OPD's rate (unclassified traffic not included).
    pub rate: WindowRates,
    pub unclassified_bytes_total: u64,
    /// What the uplink delivers now in this direction, while an estimate
    /// holds (a flat aggregate below the contract that the OPDs share);
    /// null otherwise. A `low` confidence is evidence only and never
    /// gives a verdict.
    pub delivered: Option<Delivered>,
}

/// The policy in force and how it got there.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyStatus {
    pub source: String,
    pub opds: usize,
    pub last_reload_successful: bool,
    pub last_reload_at: Option<DateTime<Utc>>,
    pub last_reload_error: Option<String>,
}

/// The gateway as a whole.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayStatus {
    pub version: String,
    /// The uplink's diagnosis (healthy, upstream_degraded, upstream_down);
    /// null during the first seconds after start.
    pub diagnosis: Option<Verdict>,
    pub wan: String,
    pub lan: Vec<String>,
    pub timezone: String,
    pub download: GatewayDirection,
    pub upload: GatewayDirection,
    pub policy: PolicyStatus,
    /// Schedules whose window is open now (their allocations are in force).
    pub schedules_open: Vec<String>,
    pub history_available: bool,
}

/// An OPD's diagnosis with the gateway's, so a reader sees at once whether
/// the problem is local or upstream.
#[derive(Debug, Serialize, ToSchema)]
pub struct Diagnosis {
    pub opd: String,
    /// Null during the first seconds after start.
    pub verdict: Option<Verdict>,
    pub gateway: Option<Verdict>,
}

/// A change of state, as kept in the history.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    pub at: DateTime<Utc>,
    /// Null for the gateway's own state.
    pub opd: Option<String>,
    pub state: String,
    pub previous: Option<String>,
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
    pub message: String,
    /// The event's reference code (`XXXX-XXXX`), as the status page shows
    /// it; `GET /api/v1/references/{code}` finds the event again.
    pub reference: String,
}

impl From<crate::history::Event> for EventBody {
    fn from(e: crate::history::Event) -> Self {
        EventBody {
            reference: crate::diagnosis::reference::code(e.opd.as_deref(), &e.state, e.at),
            at: e.at,
            opd: e.opd,
            state: e.state,
            previous: e.previous,
            evidence: e.evidence,
            message: e.message,
        }
    }
}

/// Changes of state in a time range.
#[derive(Debug, Serialize, ToSchema)]
pub struct Events {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub events: Vec<EventBody>,
}
