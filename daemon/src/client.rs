//! A small blocking HTTP/1.1 client for the CLI (`jatah status`) and the
//! lab: one GET with a bearer token and timeouts, nothing more.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

/// Resolves `host:port` (an `http://` prefix and trailing `/` are accepted).
pub fn resolve(api: &str) -> Result<SocketAddr> {
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
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connecting to jatah at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let content = body
        .map(|b| {
            format!(
                "Content-Type: application/toml\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content}Connection: close\r\n\r\n{}",
        body.unwrap_or("")
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response from {addr}"))?;
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
