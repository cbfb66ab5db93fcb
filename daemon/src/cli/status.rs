//! `jatah status`: a table of OPDs from a running jatah's API.

use anyhow::{Context, Result, bail};
use serde_json::Value;

fn mbit(bps: u64) -> String {
    format!("{:.1}", bps as f64 / 1e6)
}

fn volume(bytes: Option<u64>) -> String {
    match bytes {
        None => "-".into(),
        Some(b) if b >= 1_000_000_000 => format!("{:.2} GB", b as f64 / 1e9),
        Some(b) => format!("{:.1} MB", b as f64 / 1e6),
    }
}

/// Fetches the OPDs (and each one's detail for today's volume) and renders
/// the table.
pub fn render(api: &str, token: Option<&str>) -> Result<String> {
    let addr = crate::cli::client::resolve(api)?;
    let get = |path: &str| -> Result<Value> {
        let (status, body) = crate::cli::client::get(addr, path, token)?;
        if status != 200 {
            let detail = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["detail"].as_str().map(str::to_string))
                .unwrap_or(body);
            bail!("{path}: HTTP {status}: {detail}");
        }
        serde_json::from_str(&body).with_context(|| format!("{path}: not JSON"))
    };
    let list = get("/api/v1/opds")?;
    let mut out = String::new();
    if let Ok(g) = get("/api/v1/gateway")
        && let Some(state) = g["diagnosis"]["state"].as_str()
    {
        out.push_str(&format!(
            "uplink: {state}: {}\n\n",
            g["diagnosis"]["explanation_en"].as_str().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "{:<18} {:<17} {:>15} {:>8} {:>6} {:>15} {:>8} {:>6} {:>11} {:>11}\n",
        "OPD",
        "state",
        "down guar/ceil",
        "now",
        "%ceil",
        "up guar/ceil",
        "now",
        "%ceil",
        "today down",
        "today up"
    ));
    let empty = Vec::new();
    for o in list["opds"].as_array().unwrap_or(&empty) {
        let id = o["id"].as_str().unwrap_or("?");
        let detail = get(&format!("/api/v1/opds/{id}")).ok();
        let today = |k: &str| detail.as_ref().and_then(|d| d["today"][k].as_u64());
        let dir = |d: &Value| {
            (
                format!(
                    "{}/{}",
                    mbit(d["guaranteed_bps"].as_u64().unwrap_or(0)),
                    mbit(d["ceiling_bps"].as_u64().unwrap_or(0))
                ),
                mbit(d["rate"]["last_10s_bps"].as_u64().unwrap_or(0)),
                format!("{:.0}", d["ceiling_percent"].as_f64().unwrap_or(0.0)),
            )
        };
        let (dg, dn, dp) = dir(&o["download"]);
        let (ug, un, up) = dir(&o["upload"]);
        out.push_str(&format!(
            "{:<18} {:<17} {:>15} {:>8} {:>6} {:>15} {:>8} {:>6} {:>11} {:>11}\n",
            id,
            o["state"].as_str().unwrap_or("-"),
            dg,
            dn,
            dp,
            ug,
            un,
            up,
            volume(today("download_bytes")),
            volume(today("upload_bytes"))
        ));
    }
    out.push_str("(rates in Mbit/s over the last 10 s; guar/ceil in Mbit/s)\n");
    Ok(out)
}

/// Prints the table.
pub fn print(api: &str, token: Option<&str>) -> Result<()> {
    print!("{}", render(api, token)?);
    Ok(())
}

/// `jatah plan`: validates FILE here (so its problems come with lines and
/// columns even without a daemon), then asks the running jatah what it
/// would change.
pub fn plan(file: &std::path::Path, api: &str, token: Option<&str>) -> Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    crate::policy::parse(&text, &file.display().to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let addr = crate::cli::client::resolve(api)?;
    let (status, body) = crate::cli::client::post(addr, "/api/v1/policy/plan", token, &text)?;
    if status != 200 {
        let detail = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!("jatah at {api} answered HTTP {status}: {detail}");
    }
    let plan: crate::policy::plan::Plan =
        serde_json::from_str(&body).context("the plan is not JSON")?;
    Ok(plan.render())
}
