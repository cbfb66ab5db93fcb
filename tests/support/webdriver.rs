//! Headless Chromium inside a lab network namespace, driven through
//! Debian's chromedriver with the W3C WebDriver HTTP API (and, for the
//! viewport and full-page screenshots, Chromium's DevTools commands that
//! chromedriver passes on). No browser library: a dozen requests over
//! jatah's own small HTTP client.
//!
//! chromedriver runs inside the namespace (`ip netns exec`), so Chromium,
//! its child, browses from there; the test talks to chromedriver on the
//! namespace's loopback over a socket opened by a thread that entered the
//! namespace. Dropping a [`Browser`] ends the session, kills chromedriver
//! and every process under it, and removes the profile directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use jatah::lab::netns::NetNs;
use serde_json::{Value, json};

/// Chromium proper (Debian's /usr/bin/chromium is a wrapper script).
const CHROMIUM: &[&str] = &["/usr/lib/chromium/chromium", "/usr/bin/chromium"];
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Panics with what to run unless Chromium and chromedriver are installed.
pub fn require_browser() -> &'static str {
    let chromium = CHROMIUM
        .iter()
        .find(|p| Path::new(p).exists())
        .copied()
        .expect("chromium is not installed: run ./scripts/setup.sh test");
    assert!(
        Path::new(CHROMEDRIVER).exists(),
        "chromedriver is not installed: run ./scripts/setup.sh test"
    );
    chromium
}

/// One headless Chromium with one WebDriver session.
pub struct Browser<'a> {
    ns: &'a NetNs,
    port: u16,
    driver: Option<Child>,
    session: String,
    profile: PathBuf,
}

impl<'a> Browser<'a> {
    /// Starts chromedriver in `ns` and opens a session; chromedriver's log
    /// goes to `log_dir/<name>-chromedriver.log`.
    pub fn start(ns: &'a NetNs, name: &str, log_dir: &Path) -> Result<Browser<'a>> {
        let chromium = require_browser();
        let port = 9515 + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 400;
        let profile = std::env::temp_dir().join(format!(
            "jatah-chromium-{name}-{}",
            jatah::lab::netns::unique_token()
        ));
        std::fs::create_dir_all(&profile)?;
        let driver = ns
            .command(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                log_dir.join(format!("{name}-chromedriver.log")).display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        let mut b = Browser {
            ns,
            port,
            driver: Some(driver),
            session: String::new(),
            profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = b.request("GET", "/status", None)
                && v["ready"] == true
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver in {} not ready after 20 s", ns.name());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            "--window-size=1366,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", b.profile.display())])
        .collect::<Vec<_>>();
        let v = b.request(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
                "timeouts": {"pageLoad": 30000, "script": 10000},
            }}})),
        )?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session: {v}"))?
            .to_string();
        Ok(b)
    }

    /// One request to chromedriver, sent from a thread inside the
    /// namespace: (status, body).
    fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        std::thread::scope(|s| {
            s.spawn(|| -> Result<(u16, String)> {
                self.ns.enter_current_thread()?;
                jatah::cli::client::request(method, &url, headers, body, Duration::from_secs(60))
            })
            .join()
            .map_err(|_| anyhow!("request thread panicked"))?
        })
    }

    /// One WebDriver request; its `value`, or the WebDriver error.
    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map(|b| b.to_string());
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("Content-Type", "application/json; charset=utf-8")]
        } else {
            &[]
        };
        let (status, text) =
            self.exchange(method, path, headers, body.as_deref().map(str::as_bytes))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: HTTP {status}: {text}"))?;
        if status != 200 {
            bail!(
                "{method} {path}: HTTP {status}: {} {}",
                v["value"]["error"],
                v["value"]["message"]
            );
        }
        Ok(v["value"].clone())
    }

    fn session_request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.request(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Navigates (a full page load).
    pub fn goto(&self, url: &str) -> Result<()> {
        self.session_request("POST", "/url", Some(json!({ "url": url })))?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn js(&self, script: &str, args: Value) -> Result<Value> {
        self.session_request(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The page's visible text.
    pub fn text(&self) -> Result<String> {
        Ok(self
            .js("return document.body.innerText;", json!([]))?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// A DevTools command.
    pub fn cdp(&self, cmd: &str, params: Value) -> Result<Value> {
        self.session_request(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
    }

    /// Sets the viewport as a phone (`mobile`) or a desktop screen has it.
    pub fn viewport(&self, width: u32, height: u32, mobile: bool) -> Result<()> {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )?;
        Ok(())
    }

    /// Saves a PNG of the whole page at the current viewport width.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let m = self.cdp("Page.getLayoutMetrics", json!({}))?;
        let w = m["cssContentSize"]["width"].as_f64().unwrap_or(1366.0);
        let h = m["cssContentSize"]["height"].as_f64().unwrap_or(900.0);
        let shot = self.cdp(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true,
                   "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}}),
        )?;
        let data = shot["data"]
            .as_str()
            .ok_or_else(|| anyhow!("no screenshot data"))?;
        std::fs::write(path, base64_decode(data)?)?;
        Ok(())
    }

    /// Polls `check` every 250 ms until it holds; the seconds it took.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Browser) -> Result<bool>,
    ) -> Result<f64> {
        let start = Instant::now();
        let mut last_err = None;
        for _ in 0..(limit.as_millis() / 100 + 1) {
            match check(self) {
                Ok(true) => return Ok(start.elapsed().as_secs_f64()),
                Ok(false) => {}
                Err(e) => last_err = Some(e),
            }
            if start.elapsed() > limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let text = self.text().unwrap_or_default();
        bail!("{what}: not within {limit:?} (last error: {last_err:?}); the page reads:\n{text}")
    }
}

/// Every process below `pid`, deepest last.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.request("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Some(mut driver) = self.driver.take() {
            for pid in descendants(driver.id()) {
                // SAFETY: signalling a process started under our chromedriver.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            let _ = driver.kill();
            let _ = driver.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => bail!("not base64: {:?}", c as char),
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
    assert!(base64_decode("a$").is_err());
}
