//! `jatah status`: a table of OPDs from a running jatah's API (or its JSON,
//! or the table redrawn every few seconds); `jatah plan`: what a reload of
//! a policy file would change.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cli::client::Api;

/// How to reach the API: address, token, the certificate to trust.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// jatah's API: host:port (plain HTTP), http://host:port or
    /// https://host:port (a listener started with --tls-cert).
    #[arg(long, env = "JATAH_API", default_value = "127.0.0.1:9476")]
    pub api: String,
    /// An admin or opd:<id> token.
    #[arg(long, env = "JATAH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM file of the certificate (or its CA) to trust for https://,
    /// e.g. the gateway's self-signed certificate. Without it, the
    /// certificate must chain to one of Mozilla's root CAs.
    #[arg(long, env = "JATAH_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl Connection {
    fn api(&self) -> Result<Api> {
        Api::new(&self.api, self.ca.as_deref())
    }
}

/// `jatah status`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Print the API's JSON for the OPDs (GET /api/v1/opds), indented,
    /// instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Redraw every SECONDS (default 2) until ctrl-c. A failed fetch shows
    /// the error and tries again at the next turn.
    #[arg(
        long,
        value_name = "SECONDS",
        num_args = 0..=1,
        default_missing_value = "2",
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub watch: Option<u64>,
    /// Instead of the OPDs, who in this OPD uses its allocation: its top
    /// hosts by bytes over --window, with rate and share each way
    /// (GET /api/v1/opds/OPD/hosts). Example: `jatah status --hosts dinkes
    /// --window 1h`.
    #[arg(long, value_name = "OPD")]
    pub hosts: Option<String>,
    /// The window for --hosts: 1m, 5m or 1h.
    #[arg(long, default_value = "5m", value_parser = ["1m", "5m", "1h"], requires = "hosts")]
    pub window: String,
}

/// `jatah plan`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// The new policy file.
    pub file: PathBuf,
    #[command(flatten)]
    pub connection: Connection,
}

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

/// The longest name shown; longer ones end in "…".
const NAME_WIDTH: usize = 40;

fn shorten(name: &str) -> String {
    if name.chars().count() <= NAME_WIDTH {
        return name.to_string();
    }
    let mut s: String = name.chars().take(NAME_WIDTH - 1).collect();
    s.push('…');
    s
}

/// GET `path` as JSON; a non-200 answer is an error quoting the problem's
/// detail.
fn get_json(api: &Api, path: &str, token: Option<&str>) -> Result<Value> {
    let (status, body) = api.get(path, token)?;
    if status != 200 {
        bail!("{path}: HTTP {status}: {}", detail(&body));
    }
    serde_json::from_str(&body).with_context(|| format!("{path}: not JSON"))
}

/// An RFC 9457 problem's `detail`, or the whole body.
fn detail(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string())
}

/// Rows of cells under a header, each column as wide as its widest cell;
/// `left` columns are aligned left, the others right.
fn table(header: &[&str], left: usize, rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i < left {
                out.push_str(&format!("{cell:<w$}"));
            } else {
                out.push_str(&format!("{cell:>w$}"));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// Fetches the OPDs (and each one's detail for today's volume) and renders
/// the table.
pub fn render(api: &Api, token: Option<&str>) -> Result<String> {
    let list = get_json(api, "/api/v1/opds", token)?;
    let mut out = String::new();
    if let Ok(g) = get_json(api, "/api/v1/gateway", token)
        && let Some(state) = g["diagnosis"]["state"].as_str()
    {
        out.push_str(&format!(
            "uplink: {state}: {}\n\n",
            g["diagnosis"]["explanation_en"].as_str().unwrap_or("")
        ));
    }
    let mut rows = Vec::new();
    let empty = Vec::new();
    for o in list["opds"].as_array().unwrap_or(&empty) {
        let id = o["id"].as_str().unwrap_or("?");
        let detail = get_json(api, &format!("/api/v1/opds/{id}"), token).ok();
        let today = |k: &str| detail.as_ref().and_then(|d| d["today"][k].as_u64());
        let dir = |d: &Value| {
            [
                format!(
                    "{}/{}",
                    mbit(d["guaranteed_bps"].as_u64().unwrap_or(0)),
                    mbit(d["ceiling_bps"].as_u64().unwrap_or(0))
                ),
                mbit(d["rate"]["last_10s_bps"].as_u64().unwrap_or(0)),
                format!("{:.0}", d["ceiling_percent"].as_f64().unwrap_or(0.0)),
            ]
        };
        let mut row = vec![
            id.to_string(),
            shorten(o["name"].as_str().unwrap_or("")),
            o["state"].as_str().unwrap_or("-").to_string(),
        ];
        row.extend(dir(&o["download"]));
        row.extend(dir(&o["upload"]));
        row.push(volume(today("download_bytes")));
        row.push(volume(today("upload_bytes")));
        rows.push(row);
    }
    out.push_str(&table(
        &[
            "OPD",
            "name",
            "state",
            "down guar/ceil",
            "now",
            "%ceil",
            "up guar/ceil",
            "now",
            "%ceil",
            "today down",
            "today up",
        ],
        3,
        &rows,
    ));
    out.push_str("(rates in Mbit/s over the last 10 s; guar/ceil in Mbit/s)\n");
    Ok(out)
}

/// An OPD's top hosts over `window`: address and name, bytes, rate and
/// share each way, and how many hosts were active. JSON as the API gives
/// it with `json`.
pub fn render_hosts(
    api: &Api,
    token: Option<&str>,
    opd: &str,
    window: &str,
    json: bool,
) -> Result<String> {
    let path = format!(
        "/api/v1/opds/{}/hosts?window={window}&limit=20",
        path_segment(opd)
    );
    let v = get_json(api, &path, token)?;
    if json {
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let share = |d: &Value| format!("{:.0}%", d["share"].as_f64().unwrap_or(0.0) * 100.0);
    let rows: Vec<Vec<String>> = v["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            vec![
                h["address"].as_str().unwrap_or("?").to_string(),
                shorten(h["name"].as_str().unwrap_or("")),
                volume(h["download"]["bytes"].as_u64()),
                mbit(h["download"]["rate_bps"].as_u64().unwrap_or(0)),
                share(&h["download"]),
                volume(h["upload"]["bytes"].as_u64()),
                mbit(h["upload"]["rate_bps"].as_u64().unwrap_or(0)),
                share(&h["upload"]),
            ]
        })
        .collect();
    let mut out = format!(
        "{opd}: top hosts over the last {:.0} s ({} active)\n\n",
        v["window_seconds"].as_f64().unwrap_or(0.0),
        v["active_hosts"].as_u64().unwrap_or(0)
    );
    if rows.is_empty() {
        out.push_str("no host moved a byte in the window\n");
    } else {
        out.push_str(&table(
            &["host", "name", "down", "Mbit/s", "share", "up", "Mbit/s", "share"],
            2,
            &rows,
        ));
    }
    Ok(out)
}

/// An OPD id for a URL path (ids are `[a-z0-9-]`; anything else is
/// escaped so it cannot change the path).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The OPDs as the API gives them, indented.
pub fn render_json(api: &Api, token: Option<&str>) -> Result<String> {
    let list = get_json(api, "/api/v1/opds", token)?;
    Ok(serde_json::to_string_pretty(&list)? + "\n")
}

/// `jatah status`: prints the table (or the JSON) once, or redraws it
/// every `--watch` seconds until interrupted.
pub fn run(args: &StatusArgs) -> ExitCode {
    let api = match args.connection.api() {
        Ok(api) => api,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let token = args.connection.token.as_deref();
    let once = || {
        if let Some(opd) = &args.hosts {
            render_hosts(&api, token, opd, &args.window, args.json)
        } else if args.json {
            render_json(&api, token)
        } else {
            render(&api, token)
        }
    };
    let Some(seconds) = args.watch else {
        return match once() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    };
    let clear = std::io::stdout().is_terminal();
    let mut last_good: Option<(String, String)> = None;
    loop {
        let now = chrono::Local::now().format("%H:%M:%S").to_string();
        let mut screen = String::new();
        if clear {
            // Home and clear, so the table redraws in place.
            screen.push_str("\x1b[H\x1b[2J");
        }
        screen.push_str(&format!(
            "{} every {seconds} s, {now} (ctrl-c to stop)\n\n",
            api.base()
        ));
        match once() {
            Ok(text) => {
                screen.push_str(&text);
                last_good = Some((now, text));
            }
            Err(e) => {
                screen.push_str(&format!(
                    "error: {e:#}\n(trying again in {seconds} s)\n"
                ));
                if let Some((at, text)) = &last_good {
                    screen.push_str(&format!("\nas of {at}:\n{text}"));
                }
            }
        }
        if !clear {
            screen.push('\n');
        }
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (`| head`) ends the watch.
        if stdout
            .write_all(screen.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::SUCCESS;
        }
        drop(stdout);
        std::thread::sleep(Duration::from_secs(seconds));
    }
}

/// `jatah plan`: validates FILE here (so its problems come with lines and
/// columns even without a daemon), then asks the running jatah what it
/// would change.
pub fn plan(args: &PlanArgs) -> Result<String> {
    let file = &args.file;
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    crate::policy::parse(&text, &file.display().to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let api = args.connection.api()?;
    let token = args.connection.token.as_deref();
    let (status, body) = api.post("/api/v1/policy/plan", token, &text)?;
    if status != 200 {
        bail!(
            "jatah at {} answered HTTP {status}: {}",
            args.connection.api,
            detail(&body)
        );
    }
    let plan: crate::policy::plan::Plan =
        serde_json::from_str(&body).context("the plan is not JSON")?;
    Ok(plan.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let id = "a".repeat(32);
        let rows = vec![
            vec![id.clone(), "Dinas Łódź".into(), "1.5".into()],
            vec!["b".into(), "B".into(), "120.0".into()],
        ];
        let t = table(&["OPD", "name", "now"], 2, &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], format!("{:<32}  name          now", "OPD"));
        assert_eq!(lines[1], format!("{id}  Dinas Łódź    1.5"));
        assert_eq!(lines[2], format!("{:<32}  B           120.0", "b"));
    }

    #[test]
    fn long_names_end_in_an_ellipsis() {
        let long = "Dinas Komunikasi, Informatika, Statistik dan Persandian Kabupaten";
        let s = shorten(long);
        assert_eq!(s.chars().count(), NAME_WIDTH);
        assert!(s.ends_with('…') && long.starts_with(s.trim_end_matches('…')));
        assert_eq!(shorten("Dinkes"), "Dinkes");
    }
}
