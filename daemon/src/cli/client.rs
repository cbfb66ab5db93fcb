//! A small blocking HTTP/1.1 client for the CLI (`jatah status`) and the
//! lab: one request with a bearer token and timeouts, nothing more.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

/// Resolves `host:port` (an `http://` prefix and trailing `/` are accepted).
pub fn resolve(api: &str) -> Result<SocketAddr> {
    if api.starts_with("https://") {
        bail!("{api}: this command speaks plain HTTP only; give host:port of a listener without TLS");
    }
    let hostport = api.trim_start_matches("http://").trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .ok_or_else(|| anyhow!("{hostport} resolves to no address"))
}

/// GET `path`: (status, body).
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    request(addr, "GET", path, token, None)
}

/// POST `body` (TOML) to `path`: (status, body).
pub fn post(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    request(addr, "POST", path, token, Some(body))
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String)> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connecting to jatah at {addr}"))?;
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/toml"));
    }
    exchange(
        s,
        &addr.to_string(),
        method,
        path,
        &headers,
        body.map(str::as_bytes),
        Duration::from_secs(15),
    )
}

/// One request on an open connection, which is closed afterwards:
/// (status, body). The caller opens the connection, so it may come from
/// another network namespace (the lab's browsers' WebDriver servers).
pub fn exchange(
    mut s: TcpStream,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, String)> {
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes())?;
    if let Some(b) = body {
        s.write_all(b)?;
    }
    let raw = read_response(&mut s)?;
    // A TLS record (an alert) instead of an HTTP status line.
    if raw.len() >= 2 && (raw[0] == 0x15 || raw[0] == 0x16) && raw[1] == 0x03 {
        bail!(
            "{host} answered with TLS: that listener is served over HTTPS (--tls-cert), and \
             this command speaks plain HTTP only"
        );
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response from {host}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

/// Reads one response: to its Content-Length, to the last chunk, or to
/// the end of the connection (some servers keep it open despite
/// `Connection: close`).
fn read_response(s: &mut TcpStream) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            let chunked = head
                .lines()
                .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
            let body = raw.len() - end - 4;
            if length.is_some_and(|n| body >= n) || (chunked && raw.ends_with(b"\r\n0\r\n\r\n")) {
                return Ok(raw);
            }
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(raw);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
