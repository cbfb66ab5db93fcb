//! The status page in real browsers against the lab: headless Chromium in
//! OPD A's LAN, in OPD B's LAN and outside (the Internet namespace, as a
//! phone on mobile data). A's cable is pulled while the outside browser
//! holds A's token link open: the page turns to the local fault and its
//! checklist without a reload. B's browser sees B alone. With the uplink
//! policed, an office held back by it reads what the ISP delivers, and so
//! does the admin grid. Screenshots at phone and desktop widths go to
//! target/test-artefacts/status-page/.

mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{
    LAB_ADMIN_TOKEN, Lab, LabOpd, LabSpec, lab_opd_token, status_url_in_opd, status_url_outside,
};
use jatah::policy::Direction;
use serde_json::{Value, json};
use support::{jatah, one_lab_at_a_time};
use webdriver::{Browser, require_browser};

/// (id, name, its LAN's prefix): A, B and a third OPD for the grid.
const OPDS: [(&str, &str, &str); 3] = [
    ("dinkes", "Dinas Kesehatan", "10.20.1."),
    ("bappeda", "Badan Perencanaan", "10.20.2."),
    ("disdik", "Dinas Pendidikan", "10.20.3."),
];

fn artefacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artefacts/status-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A day of past usage in the store jatah will open, as if the gateway had
/// run all day: busy in office hours (WITA), quiet at night.
fn seed_history(lab: &Lab) {
    let tz = chrono_tz::Asia::Makassar;
    let mut store = jatah::history::HistoryStore::open(&lab.dir().join("data"), tz).unwrap();
    let now = chrono::Utc::now();
    let first = now - chrono::Duration::hours(25);
    let first = chrono::DateTime::from_timestamp(first.timestamp() / 600 * 600, 0).unwrap();
    let mut totals = [0u64; 3];
    let mut t = first;
    while t < now - chrono::Duration::minutes(5) {
        let hour = chrono::Timelike::hour(&t.with_timezone(&tz));
        let busy = (8..16).contains(&hour);
        let readings: Vec<_> = OPDS
            .iter()
            .enumerate()
            .map(|(i, (id, _, _))| {
                totals[i] += if busy { 250_000_000 } else { 15_000_000 } / (i as u64 + 1);
                jatah::history::CounterReading {
                    opd: id.to_string(),
                    download_bytes_total: totals[i],
                    upload_bytes_total: totals[i] / 5,
                    peak_download_bps: 8_000_000,
                    peak_upload_bps: 2_000_000,
                }
            })
            .collect();
        store.record_minute(t, &readings).unwrap();
        t += chrono::Duration::minutes(10);
    }
}

fn api(lab: &Lab, path: &str) -> Value {
    let (status, body) = lab.http_get_as(path, Some(LAB_ADMIN_TOKEN)).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn all_healthy(lab: &Lab) -> bool {
    OPDS.iter().all(|(id, _, _)| {
        api(lab, &format!("/api/v1/opds/{id}/diagnosis"))["verdict"]["state"] == "healthy"
    })
}

/// The page's DOM (markup and text) holds OPD `own` and no other OPD's
/// id, name or addresses.
/// The text of the page's top-hosts row for `address` ("" if absent).
fn top_host_row(b: &Browser, address: &str) -> anyhow::Result<String> {
    Ok(b.js(
        "const r = document.querySelector(`#top-hosts tr[data-address=\"${arguments[0]}\"]`); \
         return r ? r.innerText : '';",
        json!([address]),
    )?
    .as_str()
    .unwrap_or_default()
    .to_string())
}

fn shows_only(b: &Browser, own: usize) {
    let html = b
        .js("return document.documentElement.outerHTML;", json!([]))
        .unwrap();
    let html = html.as_str().unwrap();
    let text = b.text().unwrap();
    assert!(text.contains(OPDS[own].1), "own name missing:\n{text}");
    for (i, (id, name, prefix)) in OPDS.iter().enumerate() {
        if i == own {
            continue;
        }
        for leak in [id, name, prefix] {
            assert!(
                !html.contains(leak),
                "{leak:?} (another OPD) is in the page of {}",
                OPDS[own].0
            );
        }
    }
}

/// Accessibility basics, measured in the browser: every control has a
/// label, every image a text alternative, the light is named in words,
/// and every piece of visible text has a WCAG contrast ratio of 4.5 or
/// more against what is behind it.
const A11Y: &str = r#"
const problems = [];
const parse = (c) => {
  const m = /rgba?\(([^)]+)\)/.exec(c || '');
  if (!m) return null;
  const p = m[1].split(/[ ,\/]+/).filter(Boolean).map(Number);
  return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
};
const blend = (top, under) => ({
  r: top.r * top.a + under.r * (1 - top.a),
  g: top.g * top.a + under.g * (1 - top.a),
  b: top.b * top.a + under.b * (1 - top.a),
  a: 1,
});
const lum = (c) => {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
  return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
};
const background = (el) => {
  const layers = [];
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const c = parse(getComputedStyle(e).backgroundColor);
    if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
  }
  let out = { r: 255, g: 255, b: 255, a: 1 };
  for (const c of layers.reverse()) out = blend(c, out);
  return out;
};
let checked = 0;
let worst = 99;
for (const el of document.querySelectorAll('body *')) {
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!own || el.closest('[hidden], [aria-hidden="true"], script, style, noscript, title, desc')) continue;
  if (el.getClientRects().length === 0) continue;
  const cs = getComputedStyle(el);
  if (cs.visibility !== 'visible' || Number(cs.opacity) === 0) continue;
  let fg = parse(el instanceof SVGElement ? cs.fill : cs.color);
  if (!fg) { problems.push('no colour: ' + el.tagName); continue; }
  const bg = background(el);
  fg = blend(fg, bg);
  const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
  const ratio = (hi + 0.05) / (lo + 0.05);
  worst = Math.min(worst, ratio);
  checked++;
  if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)} < 4.5: <${el.tagName.toLowerCase()} class="${el.getAttribute('class') || ''}"> ${el.textContent.trim().slice(0, 40)}`);
}
for (const el of document.querySelectorAll('input, select, textarea, button')) {
  const named = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
    || (el.tagName === 'BUTTON' && el.textContent.trim());
  if (!named) problems.push('control without a label: ' + el.outerHTML.slice(0, 80));
}
for (const el of document.querySelectorAll('img')) {
  if (!el.hasAttribute('alt')) problems.push('img without alt: ' + el.outerHTML.slice(0, 80));
}
for (const el of document.querySelectorAll('svg, [role="img"]')) {
  if (el.closest('[aria-hidden="true"]')) continue;
  const name = el.getAttribute('aria-label') || (el.getAttribute('aria-labelledby') || '').split(' ')
    .map((id) => (document.getElementById(id) || {}).textContent || '').join(' ');
  if (!name.trim()) problems.push('image without a text alternative: ' + el.outerHTML.slice(0, 80));
}
for (const a of document.querySelectorAll('a')) {
  if (!(a.textContent.trim() || a.getAttribute('aria-label'))) problems.push('link without text');
}
if (!['id', 'en'].includes(document.documentElement.lang)) problems.push('html lang is ' + document.documentElement.lang);
const light = document.getElementById('light');
const label = document.getElementById('state-label');
const lit = light && light.querySelector('.lamp.on');
return {
  problems, checked, worst,
  light: light && light.getAttribute('aria-label'),
  symbol: lit && lit.textContent,
  label: label && label.innerText,
};
"#;

/// Runs the accessibility checks; returns (light's name, lit symbol, label).
fn accessible(b: &Browser, page: &str) -> (String, String, String) {
    let r = b.js(A11Y, json!([])).unwrap();
    let problems: Vec<String> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_string())
        .collect();
    assert!(problems.is_empty(), "{page}: {problems:#?}");
    assert!(
        r["checked"].as_u64().unwrap() >= 8,
        "{page}: too little text checked: {r}"
    );
    eprintln!(
        "{page}: {} text elements, lowest contrast {:.2}",
        r["checked"], r["worst"]
    );
    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
    (s("light"), s("symbol"), s("label"))
}

/// Screenshots at phone (390x844) and desktop (1366x900) widths, and the
/// page fits a 320 px screen without sideways scrolling.
fn screenshots(b: &Browser, name: &str) {
    let dir = artefacts();
    b.viewport(320, 640, true).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let fit = b
        .js(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            json!([]),
        )
        .unwrap();
    assert!(
        fit[0].as_u64() <= fit[1].as_u64() && fit[1] == 320,
        "{name}: wider than a 320 px screen: {fit}"
    );
    for (suffix, w, h, mobile) in [("phone", 390, 844, true), ("desktop", 1366, 900, false)] {
        b.viewport(w, h, mobile).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let path = dir.join(format!("{name}-{suffix}.png"));
        b.screenshot(&path).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > 5_000, "{path:?}");
    }
}

fn state_label(b: &Browser) -> String {
    b.js(
        "const e = document.getElementById('state-label'); return e ? e.innerText : '';",
        json!([]),
    )
    .unwrap()
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn shows_healthy(b: &Browser, name: &str) -> anyhow::Result<bool> {
    Ok(b.text()?.contains(name) && state_label(b) == "✓ Normal")
}

#[test]
fn an_operator_tells_a_pulled_cable_from_the_network_in_a_browser() {
    let _one = one_lab_at_a_time();
    require_root();
    require_browser();
    let dir = artefacts();
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-status".into(),
        download: "40M".into(),
        upload: "20M".into(),
        nat: true,
        mtu: 1500,
        opds: OPDS
            .iter()
            .map(|(id, name, _)| LabOpd::new(id, name, ("5M", "10M"), ("2M", "5M")))
            .collect(),
    })
    .expect("building the lab");
    seed_history(&lab);
    lab.start_daemon(jatah()).expect("starting jatah");
    let _traffic = support::Children(
        (0..OPDS.len())
            .map(|i| {
                lab.spawn_iperf_paced(i, Direction::Download, 400, "2M")
                    .unwrap()
            })
            .collect(),
    );
    let start = Instant::now();
    while !all_healthy(&lab) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the lab's OPDs did not all become healthy"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A browser in OPD A's office: its address is enough.
    let office = Browser::start(&lab.opds[0], "office-a", &dir).unwrap();
    office.goto(&status_url_in_opd(0)).unwrap();
    office
        .wait_for("A's page, healthy", Duration::from_secs(30), |b| {
            shows_healthy(b, OPDS[0].1)
        })
        .unwrap();
    let text = office.text().unwrap();
    assert!(
        text.contains("Dikenali dari alamat komputer Anda (10.20.1.2)"),
        "{text}"
    );
    assert!(text.contains("Tidak ada yang perlu dilakukan"), "{text}");
    assert!(text.contains("Jaringan normal"), "{text}");
    // Today's volume and the day's chart, from the history.
    let chart = office
        .js(
            "return [...document.querySelectorAll('svg.chart rect.dl')].map((r) => r.getBBox().height);",
            json!([]),
        )
        .unwrap();
    let bars: Vec<f64> = chart
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        bars.len() >= 23 && bars.iter().filter(|h| **h > 1.0).count() >= 20,
        "24 hourly bars: {bars:?}"
    );
    let today = office
        .js(
            "return document.querySelector('dl.vol dd').textContent;",
            json!([]),
        )
        .unwrap();
    let today = today.as_str().unwrap_or_default();
    assert!(
        today.starts_with('↓') && (today.contains(" MB") || today.contains(" GB")),
        "today's volume: {today:?}"
    );
    shows_only(&office, 0);
    // Who in the office uses it: its host, from the per-host counts.
    office
        .wait_for("A's top hosts", Duration::from_secs(40), |b| {
            Ok(top_host_row(b, "10.20.1.2")?.contains('%'))
        })
        .unwrap();
    let (light, symbol, label) = accessible(&office, "A healthy");
    assert!(
        light.contains("hijau") && light.contains("Normal"),
        "{light}"
    );
    assert_eq!((symbol.as_str(), label.as_str()), ("✓", "✓ Normal"));
    screenshots(&office, "a-office-healthy");

    // The operator's phone, outside, holds A's token link open.
    let phone = Browser::start(&lab.inet, "outside", &dir).unwrap();
    phone
        .goto(&status_url_outside(&format!(
            "/status#token={}",
            lab_opd_token("dinkes")
        )))
        .unwrap();
    phone
        .wait_for("A's token page, healthy", Duration::from_secs(30), |b| {
            shows_healthy(b, OPDS[0].1)
        })
        .unwrap();
    assert!(phone.text().unwrap().contains("Dibuka dengan tautan token"));
    let href = phone.js("return location.href;", json!([])).unwrap();
    assert!(
        !href.as_str().unwrap_or_default().contains("token"),
        "the token is gone from the address bar: {href}"
    );
    // Reloading the tab keeps it (the tab holds it for this address).
    phone
        .js(
            "setTimeout(() => location.reload(), 0); return true;",
            json!([]),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    phone
        .wait_for(
            "A's token page after a reload",
            Duration::from_secs(30),
            |b| Ok(b.text()?.contains("Dibuka dengan tautan token")),
        )
        .unwrap();
    shows_only(&phone, 0);
    phone
        .js("window.loadedOnce = 'still here'; return true;", json!([]))
        .unwrap();

    // A's cable is pulled: A's own LAN no longer reaches the gateway.
    let pulled = Instant::now();
    lab.set_opd_link(0, false).unwrap();
    let fault_sentence =
        "Jaringan Diskominfo normal; perangkat di kantor Anda tidak merespons sejak";
    phone
        .wait_for(
            "the local fault on A's token page",
            Duration::from_secs(15).saturating_sub(pulled.elapsed()),
            |b| {
                let t = b.text()?;
                Ok(t.contains(fault_sentence)
                    && t.contains("Kabel daya")
                    && t.contains("Konektor")
                    && t.contains("Lampu router"))
            },
        )
        .unwrap();
    let took = pulled.elapsed().as_secs_f64();
    eprintln!("cable pulled: the token page showed the local fault after {took:.1} s");
    assert_eq!(
        phone.js("return window.loadedOnce;", json!([])).unwrap(),
        "still here",
        "the page reloaded"
    );
    let text = phone.text().unwrap();
    assert!(
        text.contains("WITA: periksa kabel daya dan konektor router."),
        "{text}"
    );
    let code = phone
        .js(
            "return document.getElementById('ref-code').textContent;",
            json!([]),
        )
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        code.len() == 9 && code.as_bytes()[4] == b'-',
        "reference code {code:?}"
    );
    assert!(
        text.contains(&format!("sebutkan kode referensi {code}")),
        "the checklist says whom to call with which code:\n{text}"
    );
    let (light, symbol, label) = accessible(&phone, "A local fault");
    assert!(light.contains("merah"), "{light}");
    assert_eq!(
        (symbol.as_str(), label.as_str()),
        ("✕", "✕ Gangguan di kantor Anda")
    );
    shows_only(&phone, 0);
    screenshots(&phone, "a-outside-local-fault");
    // Diskominfo looks the code up.
    let found = api(&lab, &format!("/api/v1/references/{code}"));
    let m = &found["matches"][0];
    assert_eq!(
        (
            m["opd"].as_str(),
            m["state"].as_str(),
            m["current"].as_bool()
        ),
        (Some("dinkes"), Some("local_fault"), Some(true)),
        "{found}"
    );
    // English, without a reload.
    phone
        .js(
            "document.getElementById('lang').click(); return true;",
            json!([]),
        )
        .unwrap();
    phone
        .wait_for("the page in English", Duration::from_secs(5), |b| {
            Ok(b.text()?.contains("Fault at your office")
                && b.text()?.contains("Power cable")
                && b.js("return document.documentElement.lang;", json!([]))? == "en")
        })
        .unwrap();
    accessible(&phone, "A local fault, English");
    phone
        .js(
            "document.getElementById('lang').click(); return window.loadedOnce;",
            json!([]),
        )
        .map(|v| assert_eq!(v, "still here"))
        .unwrap();

    // In A's office the page says it lost the gateway.
    office
        .wait_for(
            "A's office page notices it cannot reach the gateway",
            Duration::from_secs(20),
            |b| {
                Ok(b.text()?
                    .contains("tidak dapat menghubungi gateway Diskominfo sejak"))
            },
        )
        .unwrap();
    // From the office that is the office's own link: the cable checklist,
    // and no stale green light.
    let text = office.text().unwrap();
    assert_eq!(
        state_label(&office),
        "? Tidak terhubung ke gateway",
        "{text}"
    );
    for step in [
        "Kabel daya",
        "Konektor",
        "Lampu router",
        "buka tautan token OPD Anda dari ponsel",
    ] {
        assert!(text.contains(step), "{step} missing:\n{text}");
    }
    let (light, symbol, _) = accessible(&office, "A office offline");
    assert!(light.contains("abu-abu: Tidak terhubung"), "{light}");
    assert_eq!(symbol, "?");
    screenshots(&office, "a-office-offline");
    drop(office);

    // A browser in OPD B's office sees B, healthy, and nothing of A.
    let b_office = Browser::start(&lab.opds[1], "office-b", &dir).unwrap();
    b_office.goto(&status_url_in_opd(1)).unwrap();
    b_office
        .wait_for("B's page, healthy", Duration::from_secs(30), |b| {
            shows_healthy(b, OPDS[1].1)
        })
        .unwrap();
    shows_only(&b_office, 1);
    accessible(&b_office, "B healthy");
    screenshots(&b_office, "b-office-healthy");
    // B fills its ceiling: the checklist names the host that uses it.
    let _b_bulk = support::Children(vec![
        lab.spawn_iperf_args(1, Direction::Download, 90, 0, &["-P", "4"], false)
            .unwrap(),
    ]);
    b_office
        .wait_for(
            "B saturated, its top host named",
            Duration::from_secs(60),
            |b| Ok(b.text()?.contains("Pemakai terbesar: 10.20.2.2 memakai")),
        )
        .unwrap();
    let text = b_office.text().unwrap();
    assert_eq!(
        b_office
            .js(
                "return document.getElementById('checklist').dataset.checklist;",
                json!([])
            )
            .unwrap(),
        "saturated",
        "{text}"
    );
    assert!(
        text.contains("dari unduhan kantor dalam 5 menit terakhir"),
        "{text}"
    );
    assert!(top_host_row(&b_office, "10.20.2.2").unwrap().contains('%'));
    shows_only(&b_office, 1);
    accessible(&b_office, "B saturated");
    screenshots(&b_office, "b-office-saturated");
    drop(b_office);

    // Diskominfo's grid: every OPD, A red.
    phone
        .goto(&status_url_outside(&format!(
            "/status/admin#token={LAB_ADMIN_TOKEN}"
        )))
        .unwrap();
    phone
        .wait_for("the admin grid", Duration::from_secs(20), |b| {
            Ok(b.js(
                "const t = document.querySelectorAll('#tiles > li'); \
                 const a = document.querySelector('#tiles > li[data-opd=dinkes]'); \
                 return t.length === 3 && !!a && a.innerText.includes('Gangguan di kantor OPD');",
                json!([]),
            )? == true)
        })
        .unwrap();
    let text = phone.text().unwrap();
    for (_, name, _) in OPDS {
        assert!(text.contains(name), "{name} missing from the grid");
    }
    assert!(text.contains(&code), "A's tile shows its reference code");
    phone
        .js(
            "document.getElementById('ref-input').value = arguments[0]; \
             document.getElementById('lookup').requestSubmit(); return true;",
            json!([code.to_lowercase()]),
        )
        .unwrap();
    phone
        .wait_for("the code looked up", Duration::from_secs(10), |b| {
            Ok(b.js(
                "const m = document.getElementById('lookup-matches'); return m ? m.innerText : '';",
                json!([]),
            )?
            .as_str()
            .is_some_and(|t| t.contains("Dinas Kesehatan") && t.contains("masih berlangsung")))
        })
        .unwrap();
    accessible(&phone, "admin grid");
    screenshots(&phone, "admin-grid");

    // From outside without a token: a page that says so, and no OPD.
    phone.goto(&status_url_outside("/status")).unwrap();
    phone
        .wait_for("the unknown visitor's page", Duration::from_secs(20), |b| {
            Ok(b.text()?.contains("Alamat Anda bukan jaringan OPD"))
        })
        .unwrap();
    let html = phone
        .js("return document.documentElement.outerHTML;", json!([]))
        .unwrap();
    for (id, name, prefix) in OPDS {
        for leak in [id, name, prefix] {
            assert!(
                !html.as_str().unwrap().contains(leak),
                "{leak} shown to a stranger"
            );
        }
    }
    assert!(phone.text().unwrap().contains("198.51.100.1"));
    screenshots(&phone, "outside-unknown-visitor");
    drop(phone);
    lab.stop_daemon().unwrap();
    eprintln!("screenshots in {}", dir.display());
}

/// The uplink policed to 12 of its 40 Mbit/s contract while four offices
/// download (the demand of tests/capacity.rs): an office's page says the
/// ISP delivers so much of the contract since when, in Indonesian and in
/// English, with nothing to fix at the office; the admin grid says it for
/// the uplink and on the tiles of the offices it holds back.
#[test]
fn an_office_reads_what_the_isp_delivers_while_the_uplink_is_policed() {
    use support::fixtures::{DIAGNOSIS_OPDS, diagnosis_lab};
    use support::verdicts::{gateway_state, state, within};
    let _one = one_lab_at_a_time();
    require_root();
    require_browser();
    let dir = artefacts();
    let mut lab = Lab::build(diagnosis_lab("jt-stisp")).expect("building the lab");
    lab.start_daemon(jatah()).expect("starting jatah");
    let up = Instant::now();
    let seconds = 170;
    let bulk = |i: usize, flows: &str| {
        lab.spawn_iperf_args(i, Direction::Download, seconds, 0, &["-P", flows], false)
            .expect("starting iperf3")
    };
    let _clients = support::Children(vec![
        bulk(0, "1"),
        bulk(1, "4"),
        bulk(2, "8"),
        lab.spawn_iperf_paced(3, Direction::Download, seconds, "2M")
            .expect("starting iperf3"),
    ]);
    std::thread::sleep(Duration::from_secs(35).saturating_sub(up.elapsed()));
    lab.police_uplink("12mbit").unwrap();
    within(Duration::from_secs(40), "gateway upstream_degraded", || {
        gateway_state(&lab).as_deref() == Some("upstream_degraded")
    });
    // An office the uplink holds back (it takes the uplink's state).
    let mut held = None;
    within(
        Duration::from_secs(20),
        "an office under the uplink verdict",
        || {
            held = (0..DIAGNOSIS_OPDS.len())
                .find(|&i| state(&lab, DIAGNOSIS_OPDS[i]).as_deref() == Some("upstream_degraded"));
            held.is_some()
        },
    );
    let i = held.unwrap();

    let office = Browser::start(&lab.opds[i], "office-isp", &dir).unwrap();
    office.goto(&status_url_in_opd(i)).unwrap();
    let id_figure = " dari 40 Mbit/s (unduh) untuk semua kantor sejak ";
    office
        .wait_for(
            "the ISP's figure on the office page",
            Duration::from_secs(30),
            |b| {
                let t = b.text()?;
                Ok(t.contains("penyedia layanan (ISP) hanya mengirim ") && t.contains(id_figure))
            },
        )
        .unwrap();
    let text = office.text().unwrap();
    let sentence = text
        .lines()
        .find(|l| l.contains(id_figure))
        .unwrap()
        .to_string();
    eprintln!("office page: {sentence}");
    // "... hanya mengirim 12 dari 40 Mbit/s ...": the figure is the policer's.
    let figure: f64 = sentence
        .split("hanya mengirim ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.replace(',', ".").parse().ok())
        .unwrap_or_else(|| panic!("no figure in {sentence:?}"));
    assert!(
        (figure - 12.0).abs() <= 1.5,
        "{figure} Mbit/s in {sentence:?}"
    );
    assert!(
        sentence.contains("WITA; Diskominfo sedang menanganinya."),
        "{sentence}"
    );
    assert!(text.contains("Jaringan kantor Anda normal"), "{text}");
    let checklist = office
        .js(
            "return document.getElementById('checklist').dataset.checklist;",
            json!([]),
        )
        .unwrap();
    assert_eq!(checklist, "upstream", "nothing to fix at the office");
    accessible(&office, "office, ISP short");
    screenshots(&office, "office-isp-delivers-less");
    office
        .js(
            "document.getElementById('lang').click(); return true;",
            json!([]),
        )
        .unwrap();
    office
        .wait_for("the figure in English", Duration::from_secs(5), |b| {
            let t = b.text()?;
            Ok(t.contains("the ISP delivers only ")
                && t.contains(" of 40 Mbit/s download to all offices since ")
                && t.contains("; Diskominfo is on it."))
        })
        .unwrap();
    drop(office);

    // Diskominfo's grid: the uplink's sentence with the figure, and the
    // held-back office's tile says the same.
    let phone = Browser::start(&lab.inet, "outside-isp", &dir).unwrap();
    phone
        .goto(&status_url_outside(&format!(
            "/status/admin#token={LAB_ADMIN_TOKEN}"
        )))
        .unwrap();
    phone
        .wait_for("the grid with the ISP's figure", Duration::from_secs(20), |b| {
            Ok(b.js(
                "const s = document.getElementById('sentence'); \
                 const a = document.querySelector('#tiles > li[data-opd=' + arguments[0] + '] .tile-figure'); \
                 return !!s && s.innerText.includes('Penyedia layanan hanya mengirim') \
                   && s.innerText.includes('dari 40 Mbit/s (unduh)') \
                   && !!a && /^ISP mengirim [0-9,]+ dari 40 Mbit\\/s \\(unduh\\) sejak /.test(a.innerText);",
                json!([DIAGNOSIS_OPDS[i]]),
            )? == true)
        })
        .unwrap();
    accessible(&phone, "admin grid, ISP short");
    screenshots(&phone, "admin-grid-isp-delivers-less");
    drop(phone);
    lab.restore_uplink().unwrap();
    lab.stop_daemon().unwrap();
}
