//! The command line's HTTP(S) client (`jatah status`, `jatah plan`) and the
//! lab's: ureq over rustls with ring, the same TLS stack the daemon serves
//! with. Every request has deadlines, so the command line never hangs on a
//! gateway that stopped answering.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ureq::Agent;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

/// How long a connection may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one whole request may take (a plan of thousands of OPDs, or
/// a 503 after the plan's 5 s wait, fits well within it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest body read (a scrape of 10,000 OPDs is about 24 MB).
const BODY_LIMIT: u64 = 256 * 1024 * 1024;

/// One jatah API: its base URL and an agent that trusts the `--ca`
/// certificates, or Mozilla's roots (webpki-roots) without one.
pub struct Api {
    agent: Agent,
    base: String,
    ca: Option<String>,
}

impl Api {
    /// `api` is `host:port`, `http://host:port` or `https://host:port` (a
    /// trailing `/` is accepted); `ca` a PEM file of certificates to trust
    /// instead of the usual roots (a self-signed gateway certificate).
    pub fn new(api: &str, ca: Option<&Path>) -> Result<Api> {
        let base = base_url(api)?;
        let roots = match ca {
            Some(file) => RootCerts::new_with_certs(&read_ca(file)?),
            None => RootCerts::WebPki,
        };
        Ok(Api {
            agent: agent(roots, REQUEST_TIMEOUT, 4),
            base,
            ca: ca.map(|p| p.display().to_string()),
        })
    }

    /// The base URL requests go to (`https://host:port`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// GET `path`: (status, body).
    pub fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        finish(req.call(), &url, self.ca.as_deref())
    }

    /// POST `body` (TOML) to `path`: (status, body).
    pub fn post(&self, path: &str, token: Option<&str>, body: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/toml");
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        finish(req.send(body), &url, self.ca.as_deref())
    }
}

/// `http://host:port` for a bare `host:port`; an `http://` or `https://`
/// URL as given, without a trailing `/`.
pub fn base_url(api: &str) -> Result<String> {
    let api = api.trim().trim_end_matches('/');
    let (scheme, rest) = match api.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        Some((other, _)) => bail!("{api}: unknown scheme {other}://; use http:// or https://"),
        None => ("http", api),
    };
    if rest.is_empty() || rest.contains('/') {
        bail!("{api}: give host:port, http://host:port or https://host:port (no path)");
    }
    Ok(format!("{scheme}://{rest}"))
}

/// The certificates in a PEM file.
fn read_ca(file: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => bail!("{}: not a PEM certificate: {e}", file.display()),
        }
    }
    if certs.is_empty() {
        bail!(
            "{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            file.display()
        );
    }
    Ok(certs)
}

fn agent(roots: RootCerts, timeout: Duration, idle: usize) -> Agent {
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(roots)
        .build();
    Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .max_redirects(0)
        // The gateway is reached directly, never through an HTTP(S)_PROXY
        // from the environment (the lab's requests stay in their namespace).
        .proxy(None)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(timeout))
        .max_idle_connections(idle)
        .user_agent(format!("jatah/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Status and body of a response, or the failure in words an admin can act
/// on.
fn finish(
    res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
    ca: Option<&str>,
) -> Result<(u16, String)> {
    let (status, bytes) = finish_bytes(res, url, ca)?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Status and body as sent (a compressed one stays compressed).
fn finish_bytes(
    res: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
    ca: Option<&str>,
) -> Result<(u16, Vec<u8>)> {
    let mut res = res.map_err(|e| explain(e, url, ca))?;
    let status = res.status().as_u16();
    let bytes = res
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_vec()
        .map_err(|e| explain(e, url, ca))?;
    Ok((status, bytes))
}

/// The TLS error inside a ureq error, if that is what it is.
fn tls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(t) => Some(t),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

fn explain(e: ureq::Error, url: &str, ca: Option<&str>) -> anyhow::Error {
    let https = url.starts_with("https://");
    match (tls_error(&e), &e) {
        (Some(rustls::Error::InvalidCertificate(why)), _) => match ca {
            Some(file) => anyhow!(
                "{url}: certificate not trusted ({why:?}): it is not the certificate in {file} nor \
                 signed by it"
            ),
            None => anyhow!(
                "{url}: certificate not trusted ({why:?}): for a self-signed gateway \
                 certificate, give it with --ca FILE (or JATAH_CA)"
            ),
        },
        (Some(t), _) if https => anyhow!(
            "{url}: TLS failed ({t}); if that listener serves plain HTTP (no --tls-cert), use \
             --api http://..."
        ),
        (_, ureq::Error::Timeout(t)) => anyhow!("{url}: no answer in time ({t})"),
        (_, ureq::Error::Io(io)) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            anyhow!("{url}: connection refused: is jatah running and listening there?")
        }
        (_, ureq::Error::Protocol(_) | ureq::Error::Io(_)) if !https => anyhow!(
            "{url}: no HTTP answer ({e}); if that listener is served over HTTPS (--tls-cert), \
             use --api https://..."
        ),
        _ => anyhow!("{url}: {e}"),
    }
}

/// Plain HTTP to `addr`, from the calling thread's network namespace
/// (the lab's helpers run in the gateway's): no connection is kept.
fn plain(timeout: Duration) -> Agent {
    agent(RootCerts::WebPki, timeout, 0)
}

/// GET `path` over plain HTTP from `addr`: (status, body).
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(
        "GET",
        &format!("http://{addr}{path}"),
        &headers,
        None,
        REQUEST_TIMEOUT,
    )
}

/// POST `body` (TOML) over plain HTTP to `path` at `addr`: (status, body).
/// The lab's (tests and benchmarks).
#[cfg(any(test, feature = "testkit"))]
pub fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/toml")];
    headers.extend(auth.iter().map(|a| ("Authorization", a.as_str())));
    request(
        "POST",
        &format!("http://{addr}{path}"),
        &headers,
        Some(body.as_bytes()),
        REQUEST_TIMEOUT,
    )
}

/// One request to `url` with `headers`, over a new connection from the
/// calling thread (so from its network namespace), within `timeout`:
/// (status, body).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let (status, bytes) = request_bytes(method, url, headers, body, timeout)?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// [`request`], the body as sent: a body the server compressed
/// (`Accept-Encoding` in `headers`) stays compressed.
pub fn request_bytes(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let agent = plain(timeout);
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let res = match body {
        Some(b) => agent.run(builder.body(b.to_vec())?),
        None => agent.run(builder.body(())?),
    };
    finish_bytes(res, url, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// Serves one response made of `chunks` (chunked transfer encoding),
    /// written one at a time with a flush and a pause between them so each
    /// arrives in its own read, to one connection on 127.0.0.1.
    fn chunked_server(chunks: Vec<Vec<u8>>) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let mut s = s;
            s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                  Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
            for c in chunks {
                s.write_all(format!("{:x}\r\n", c.len()).as_bytes()).unwrap();
                s.write_all(&c).unwrap();
                s.write_all(b"\r\n").unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            s.write_all(b"0\r\n\r\n").unwrap();
            let _ = s.read(&mut [0u8; 1]);
            head
        });
        (addr, handle)
    }

    #[test]
    fn a_chunk_boundary_inside_a_multibyte_character_keeps_the_text_whole() {
        let name = "Dinas Pendapatan — Kab. Łódź 東京";
        let body = serde_json::json!({"opds": [{"id": "dinkes", "name": name}]}).to_string();
        let bytes = body.as_bytes();
        // Split inside the em dash (3 bytes) and inside 東 (3 bytes).
        let dash = body.find('—').unwrap() + 1;
        let east = body.find('東').unwrap() + 2;
        assert!(!body.is_char_boundary(dash) && !body.is_char_boundary(east));
        let chunks = vec![
            bytes[..dash].to_vec(),
            bytes[dash..east].to_vec(),
            bytes[east..].to_vec(),
        ];
        let (addr, server) = chunked_server(chunks);
        let api = Api::new(&addr.to_string(), None).unwrap();
        let (status, text) = api.get("/api/v1/opds", Some("t")).unwrap();
        assert_eq!(status, 200);
        assert_eq!(text, body);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["opds"][0]["name"], name);
        let head = server.join().unwrap();
        assert!(head.starts_with("GET /api/v1/opds HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("authorization: Bearer t\r\n") || head.contains("Authorization: Bearer t\r\n"), "{head}");
    }

    #[test]
    fn api_addresses_take_a_scheme_or_none() {
        assert_eq!(base_url("127.0.0.1:9476").unwrap(), "http://127.0.0.1:9476");
        assert_eq!(base_url("http://gw:9476/").unwrap(), "http://gw:9476");
        assert_eq!(base_url("https://gw.example:443").unwrap(), "https://gw.example:443");
        assert!(base_url("ftp://gw").unwrap_err().to_string().contains("unknown scheme"));
        assert!(base_url("https://gw/api").is_err());
        assert!(base_url("").is_err());
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("jatah-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("empty.pem");
        std::fs::write(&f, "not a certificate\n").unwrap();
        let err = Api::new("https://127.0.0.1:1", Some(&f)).err().unwrap().to_string();
        assert!(err.contains("empty.pem") && err.contains("no certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
