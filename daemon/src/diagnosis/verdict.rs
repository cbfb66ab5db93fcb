//! What a verdict is and how it reads: the states, a decided verdict with
//! its evidence, a change of state, and the sentences in English and
//! Indonesian that an OPD operator reads. Kept apart from the engine that
//! decides them so each file holds one concern.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Diagnosis state of an OPD (the README's "Is it the OPD or the network?").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Healthy,
    Idle,
    Saturated,
    LocalFault,
    LocalDegraded,
    UpstreamDegraded,
    UpstreamDown,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Healthy,
        State::Idle,
        State::Saturated,
        State::LocalFault,
        State::LocalDegraded,
        State::UpstreamDegraded,
        State::UpstreamDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Idle => "idle",
            State::Saturated => "saturated",
            State::LocalFault => "local_fault",
            State::LocalDegraded => "local_degraded",
            State::UpstreamDegraded => "upstream_degraded",
            State::UpstreamDown => "upstream_down",
        }
    }
}

/// A decided state with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Verdict {
    pub state: State,
    pub since: DateTime<Utc>,
    /// The numbers that decided it.
    #[schema(value_type = Object)]
    pub evidence: Value,
    pub explanation_en: String,
    pub explanation_id: String,
}

/// A change of state (an event).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// None for the gateway itself.
    pub opd: Option<String>,
    pub previous: Option<State>,
    pub verdict: Verdict,
}

/// One sentence an OPD operator understands, in English and Indonesian.
pub fn explain(opd: Option<&str>, state: State, evidence: &Value) -> (String, String) {
    explain_since(opd, state, evidence, None)
}

/// The same sentence, saying since when a problem lasts (`since` is a local
/// time as the reader reads it, e.g. "10:02 WITA"): "... tidak merespons
/// sejak 10:02 WITA: periksa ...". Normal states do not mention the time.
pub fn explain_since(
    opd: Option<&str>,
    state: State,
    evidence: &Value,
    since: Option<&str>,
) -> (String, String) {
    let reason = evidence.get("reason").and_then(Value::as_str).unwrap_or("");
    let who_en = opd
        .map(|o| format!("OPD {o}"))
        .unwrap_or_else(|| "The gateway".into());
    let en_since = since.map(|t| format!(" (since {t})")).unwrap_or_default();
    let id_since = since.map(|t| format!(" sejak {t}")).unwrap_or_default();
    // The uplink delivering less, with the figure a reader can check
    // against the contract.
    if opd.is_none()
        && state == State::UpstreamDegraded
        && let Some((en, id)) = delivered_figures(evidence, true)
    {
        return (
            format!(
                "The ISP delivers {en}{en_since}; Diskominfo is on it, nothing to fix at the OPDs."
            ),
            format!(
                "Penyedia layanan hanya mengirim {id}{id_since}; Diskominfo sedang menangani, tidak ada yang perlu diperbaiki di kantor Anda."
            ),
        );
    }
    // An office under an uplink verdict reads the uplink's figure too: the
    // office is never blamed, and the number says how short the ISP is.
    if opd.is_some()
        && state == State::UpstreamDegraded
        && let Some((en, id)) = delivered_figures(evidence, false)
    {
        let en_since = since.map(|t| format!(" since {t}")).unwrap_or_default();
        return (
            format!(
                "{who_en} is fine; the ISP delivers only {en} to all offices{en_since}; Diskominfo is on it."
            ),
            format!(
                "Jaringan kantor Anda normal; penyedia layanan (ISP) hanya mengirim {id} untuk semua kantor{id_since}; Diskominfo sedang menanganinya."
            ),
        );
    }
    // Loss measured in TCP retransmissions, with its share.
    let pct = |key: &str| {
        evidence
            .get(key)
            .and_then(Value::as_f64)
            .map(|r| format!("{:.1}%", r * 100.0))
    };
    if let (true, State::UpstreamDegraded, "wan_tcp_loss", Some(p)) =
        (opd.is_none(), state, reason, pct("wan_tcp_loss_ratio"))
    {
        let id_p = p.replace('.', ",");
        return (
            format!(
                "The Internet uplink loses {p} of packets beyond the gateway (TCP sends them again){en_since}; Diskominfo is on it, nothing to fix at the OPDs."
            ),
            format!(
                "Koneksi Internet dari penyedia layanan kehilangan {id_p} paket di luar gateway{id_since}; Diskominfo sedang menangani, tidak ada yang perlu diperbaiki di kantor Anda."
            ),
        );
    }
    if let (false, State::LocalDegraded, "lan_tcp_loss", Some(p)) =
        (opd.is_none(), state, reason, pct("lan_tcp_loss_ratio"))
    {
        let id_p = p.replace('.', ",");
        return (
            format!(
                "{who_en}: the office's own network loses {p} of packets while other offices are fine{en_since}; check the office router, switch and cabling."
            ),
            format!(
                "Jaringan Diskominfo normal; jaringan di kantor Anda kehilangan {id_p} paket{id_since}: periksa router, switch dan kabel di kantor Anda."
            ),
        );
    }
    match (opd.is_none(), state, reason) {
        (true, State::Healthy, _) => (
            "The Internet uplink delivers normally.".into(),
            "Jaringan Diskominfo normal: koneksi Internet berjalan baik.".into(),
        ),
        (true, State::UpstreamDegraded, _) => (
            format!(
                "The Internet uplink delivers less than contracted (slow or losing){en_since}; Diskominfo is on it, nothing to fix at the OPDs."
            ),
            format!(
                "Koneksi Internet dari penyedia layanan sedang menurun{id_since}; Diskominfo sedang menangani, tidak ada yang perlu diperbaiki di kantor Anda."
            ),
        ),
        (true, State::UpstreamDown, _) => (
            format!(
                "The Internet uplink is down{en_since}; Diskominfo is on it, nothing to fix at the OPDs."
            ),
            format!(
                "Koneksi Internet dari penyedia layanan terputus{id_since}; Diskominfo sedang menangani, tidak ada yang perlu diperbaiki di kantor Anda."
            ),
        ),
        (_, State::Healthy, _) => (
            format!("{who_en}: the network is working normally."),
            "Jaringan normal: koneksi kantor Anda berjalan baik.".into(),
        ),
        (_, State::Idle, _) => (
            format!("{who_en}: no traffic right now, and nothing is wrong."),
            "Tidak ada lalu lintas saat ini, dan tidak ada gangguan.".into(),
        ),
        (_, State::Saturated, _) => (
            format!(
                "{who_en} is using its whole allocation{en_since}; the network is fine, the office's own use fills it."
            ),
            format!(
                "Kuota bandwidth kantor Anda sedang terpakai penuh{id_since}; jaringan normal, pemakaian di kantor Anda sendiri yang memenuhinya."
            ),
        ),
        (_, State::LocalFault, "link_down") => (
            format!(
                "{who_en}: the link to the office is down{en_since}; check the cable and connector."
            ),
            format!(
                "Jaringan Diskominfo normal; sambungan ke kantor Anda terputus{id_since}: periksa kabel dan konektor."
            ),
        ),
        (_, State::LocalFault, "one_way_traffic") => (
            format!(
                "{who_en}: traffic reaches the office but nothing comes back{en_since}; check the office router and its cables."
            ),
            format!(
                "Jaringan Diskominfo normal; data sampai ke kantor Anda tetapi tidak ada balasan{id_since}: periksa router dan kabel di kantor Anda."
            ),
        ),
        (_, State::LocalFault, _) => (
            format!(
                "{who_en}: the office router does not answer and nothing comes from the office{en_since}; check its power cable and connector."
            ),
            format!(
                "Jaringan Diskominfo normal; perangkat di kantor Anda tidak merespons{id_since}: periksa kabel daya dan konektor router."
            ),
        ),
        (_, State::LocalDegraded, _) => (
            format!(
                "{who_en}: the office's own network is slow or losing packets while other offices are fine{en_since}; check the office router and cabling."
            ),
            format!(
                "Jaringan Diskominfo normal; jaringan di kantor Anda lambat atau putus-putus{id_since}: periksa router dan kabel di kantor Anda."
            ),
        ),
        (_, State::UpstreamDegraded, _) => (
            format!(
                "{who_en} is fine; the Internet uplink is degraded for everyone{en_since} and Diskominfo is on it."
            ),
            format!(
                "Jaringan kantor Anda normal; koneksi Internet dari penyedia layanan sedang menurun untuk semua kantor{id_since} dan Diskominfo sedang menangani."
            ),
        ),
        (_, State::UpstreamDown, _) => (
            format!(
                "{who_en} is fine; the Internet uplink is down for everyone{en_since} and Diskominfo is on it."
            ),
            format!(
                "Jaringan kantor Anda normal; koneksi Internet dari penyedia layanan terputus untuk semua kantor{id_since} dan Diskominfo sedang menangani."
            ),
        ),
    }
}

/// An OPD's evidence with the uplink's delivered figures added (the
/// `{dir}_delivered_bps` and `{dir}_capacity_bps` of each direction whose
/// estimate the gateway's evidence carries), so the sentence of an office
/// under an `upstream_*` verdict can say what the ISP delivers. Other
/// states, and a gateway without a figure, leave it as it is.
pub fn with_uplink_figures(state: State, opd_evidence: &Value, gateway_evidence: &Value) -> Value {
    let mut ev = opd_evidence.clone();
    if !matches!(state, State::UpstreamDegraded | State::UpstreamDown) {
        return ev;
    }
    let Some(map) = ev.as_object_mut() else {
        return ev;
    };
    for dir in ["download", "upload"] {
        let delivered = format!("{dir}_delivered_bps");
        let capacity = format!("{dir}_capacity_bps");
        if let (Some(d), Some(c)) = (
            gateway_evidence.get(&delivered),
            gateway_evidence.get(&capacity),
        ) {
            map.insert(delivered, d.clone());
            map.insert(capacity, c.clone());
        }
    }
    ev
}

/// The uplink's figure alone, for a tile of the admin grid: "ISP delivers
/// 30 of 200 Mbit/s download since 10:02 WITA" / "ISP mengirim 30 dari 200
/// Mbit/s (unduh) sejak 10:02 WITA"; None without a figure.
pub fn uplink_figure(evidence: &Value, since: Option<&str>) -> Option<(String, String)> {
    let (en, id) = delivered_figures(evidence, false)?;
    let en_since = since.map(|t| format!(" since {t}")).unwrap_or_default();
    let id_since = since.map(|t| format!(" sejak {t}")).unwrap_or_default();
    Some((
        format!("ISP delivers {en}{en_since}"),
        format!("ISP mengirim {id}{id_since}"),
    ))
}

/// "30 of 200 Mbit/s download" and "30 dari 200 Mbit/s (unduh)", for each
/// direction whose delivered figure the evidence carries; None without one.
/// "12 of 40 Mbit/s download"; `scaling` adds, for the uplink's own
/// sentence, what jatah shares among the offices while it adapts (an
/// office's page says that on a line of its own).
fn delivered_figures(evidence: &Value, scaling: bool) -> Option<(String, String)> {
    let mut en = Vec::new();
    let mut id = Vec::new();
    for (dir, dir_en, dir_id) in [("download", "download", "unduh"), ("upload", "upload", "unggah")] {
        let number = |key: String| evidence.get(key).and_then(Value::as_u64);
        let Some(delivered) = number(format!("{dir}_delivered_bps")) else {
            continue;
        };
        let contract = number(format!("{dir}_capacity_bps")).unwrap_or(0);
        let (d_en, c_en) = (mbit(delivered, '.'), mbit(contract, '.'));
        let (d_id, c_id) = (mbit(delivered, ','), mbit(contract, ','));
        // Where jatah shapes to less than the contract, the offices share
        // that in proportion to their guarantees.
        let scaled = number(format!("{dir}_effective_capacity_bps")).filter(|_| scaling);
        let (held_en, held_id) = match scaled {
            Some(e) => (
                format!(
                    " (jatah shares {} Mbit/s among the offices, guarantees scaled to {}%)",
                    mbit(e, '.'),
                    (e * 100).checked_div(contract).unwrap_or(100)
                ),
                format!(
                    " (jatah membagi {} Mbit/s ke semua kantor, jaminan disesuaikan menjadi {}%)",
                    mbit(e, ','),
                    (e * 100).checked_div(contract).unwrap_or(100)
                ),
            ),
            None => (String::new(), String::new()),
        };
        en.push(format!("{d_en} of {c_en} Mbit/s {dir_en}{held_en}"));
        id.push(format!("{d_id} dari {c_id} Mbit/s ({dir_id}){held_id}"));
    }
    (!en.is_empty()).then(|| (en.join(" and "), id.join(" dan ")))
}

/// Megabits per second as a person reads them: whole above 10, one
/// decimal below (with the language's decimal mark).
fn mbit(bps: u64, decimal_mark: char) -> String {
    let m = bps as f64 / 1e6;
    if m >= 10.0 {
        format!("{}", m.round() as u64)
    } else {
        format!("{m:.1}").replace('.', &decimal_mark.to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{State, explain, explain_since, uplink_figure, with_uplink_figures};

    fn gateway_evidence() -> serde_json::Value {
        json!({
            "reason": "delivers_less",
            "download_delivered_bps": 30_000_000u64,
            "download_capacity_bps": 200_000_000u64,
            "download_bps_10s": 29_000_000u64,
        })
    }

    #[test]
    fn an_office_under_the_uplink_reads_the_figure_in_both_languages() {
        let opd = json!({ "reason": "uplink", "download_bps_10s": 9_000_000u64 });
        let ev = with_uplink_figures(State::UpstreamDegraded, &opd, &gateway_evidence());
        assert_eq!(ev["reason"], "uplink", "the office's own evidence stays");
        assert!(ev.get("upload_delivered_bps").is_none());
        let (en, id) = explain_since(Some("dinkes"), State::UpstreamDegraded, &ev, Some("10:02 WITA"));
        assert_eq!(
            en,
            "OPD dinkes is fine; the ISP delivers only 30 of 200 Mbit/s download to all offices \
             since 10:02 WITA; Diskominfo is on it."
        );
        assert_eq!(
            id,
            "Jaringan kantor Anda normal; penyedia layanan (ISP) hanya mengirim 30 dari 200 Mbit/s \
             (unduh) untuk semua kantor sejak 10:02 WITA; Diskominfo sedang menanganinya."
        );
    }

    #[test]
    fn a_tile_reads_the_figure_alone() {
        assert_eq!(
            uplink_figure(&gateway_evidence(), Some("10:02 WITA")),
            Some((
                "ISP delivers 30 of 200 Mbit/s download since 10:02 WITA".into(),
                "ISP mengirim 30 dari 200 Mbit/s (unduh) sejak 10:02 WITA".into()
            ))
        );
        assert_eq!(uplink_figure(&json!({ "reason": "uplink" }), None), None);
    }

    #[test]
    fn only_upload_short_names_upload_and_both_name_both() {
        let gw = json!({
            "download_capacity_bps": 40_000_000u64,
            "upload_delivered_bps": 4_560_000u64,
            "upload_capacity_bps": 20_000_000u64,
        });
        let ev = with_uplink_figures(State::UpstreamDegraded, &json!({}), &gw);
        assert!(ev.get("download_capacity_bps").is_none(), "no download figure: {ev}");
        let (en, id) = explain(Some("dinkes"), State::UpstreamDegraded, &ev);
        assert_eq!(
            en,
            "OPD dinkes is fine; the ISP delivers only 4.6 of 20 Mbit/s upload to all offices; \
             Diskominfo is on it."
        );
        assert!(id.contains("hanya mengirim 4,6 dari 20 Mbit/s (unggah) untuk semua kantor;"), "{id}");
        let mut both = gateway_evidence();
        both["upload_delivered_bps"] = json!(4_560_000u64);
        both["upload_capacity_bps"] = json!(20_000_000u64);
        let ev = with_uplink_figures(State::UpstreamDegraded, &json!({}), &both);
        let (en, id) = explain(Some("dinkes"), State::UpstreamDegraded, &ev);
        assert!(
            en.contains("only 30 of 200 Mbit/s download and 4.6 of 20 Mbit/s upload to all offices"),
            "{en}"
        );
        assert!(id.contains("30 dari 200 Mbit/s (unduh) dan 4,6 dari 20 Mbit/s (unggah)"), "{id}");
    }

    #[test]
    fn without_a_figure_or_outside_the_uplink_the_sentence_is_unchanged() {
        let plain = json!({ "reason": "uplink" });
        let (en, _) = explain(Some("dinkes"), State::UpstreamDegraded, &plain);
        assert_eq!(
            en,
            "OPD dinkes is fine; the Internet uplink is degraded for everyone and Diskominfo is on it."
        );
        // A local verdict never takes the uplink's figure.
        let local = with_uplink_figures(State::LocalFault, &plain, &gateway_evidence());
        assert_eq!(local, plain);
        // The uplink down: the office is told so, not a figure.
        let down = with_uplink_figures(State::UpstreamDown, &plain, &gateway_evidence());
        let (en, _) = explain(Some("dinkes"), State::UpstreamDown, &down);
        assert!(en.contains("the Internet uplink is down for everyone"), "{en}");
    }
}
