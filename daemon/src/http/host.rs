//! DNS rebinding: a web site a visitor opens can point its own name at the
//! gateway and then read, with the visitor's browser, whatever the gateway
//! shows that visitor (its office's page, or from a browser on the gateway
//! itself, `/metrics`). The browser still sends the site's name as `Host`.
//! So a request is answered only when its `Host` is
//! - an IP address (a browser sends one only when the address bar holds
//!   it, and then the page's origin is the gateway itself), or
//! - `localhost`, the machine's host name, or a name given with
//!   `--server-name`;
//!
//! anything else gets 421 Misdirected Request. A request without `Host`
//! (HTTP/1.0 tools; no browser sends one) is answered.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::problem::Problem;

/// The names a request's `Host` may carry besides IP addresses.
#[derive(Debug, Clone, Default)]
pub struct ServerNames {
    names: Vec<String>,
}

impl ServerNames {
    /// `localhost`, the machine's host name (if it has one) and `extra`.
    pub fn new(extra: &[String]) -> ServerNames {
        let mut names = vec!["localhost".to_string()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            names.push(h.trim().to_string());
        }
        names.extend(extra.iter().cloned());
        ServerNames {
            names: names
                .into_iter()
                .map(|n| normalize(&n))
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// The names, for logs and error messages.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether a request with this `Host` value is for us.
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = host_part(host) else {
            return false;
        };
        if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return inner.parse::<std::net::Ipv6Addr>().is_ok();
        }
        if name.parse::<std::net::Ipv4Addr>().is_ok() {
            return true;
        }
        let name = normalize(name);
        self.names.contains(&name)
    }
}

/// Lower case, without a trailing dot.
fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host of a `Host` value without its port; None when malformed.
fn host_part(host: &str) -> Option<&str> {
    let host = host.trim();
    if host.is_empty() || host.len() > 255 {
        return None;
    }
    if host.starts_with('[') {
        // [v6] or [v6]:port
        let end = host.find(']')?;
        let rest = &host[end + 1..];
        if !(rest.is_empty() || port_ok(rest.strip_prefix(':')?)) {
            return None;
        }
        return Some(&host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port_ok(port) && !name.contains(':') => Some(name),
        Some(_) => None,
        None => Some(host),
    }
}

fn port_ok(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// The middleware: 421 unless the request's `Host` is allowed.
pub async fn check(names: Arc<ServerNames>, req: Request, next: Next) -> Response {
    // HTTP/2 carries the host in the URI's authority, HTTP/1.1 in Host.
    let host = req
        .headers()
        .get(HOST)
        .map(|h| h.to_str().unwrap_or("\u{0}"))
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        Some(h) if !names.allows(h) => Problem::misdirected(h).into_response(),
        _ => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> ServerNames {
        ServerNames {
            names: vec!["localhost".into(), "gw-kominfo".into(), "jatah.kab.go.id".into()],
        }
    }

    #[test]
    fn addresses_and_our_names_are_answered() {
        let n = names();
        for ok in [
            "10.20.1.1",
            "10.20.1.1:9477",
            "127.0.0.1:9476",
            "[2001:db8::1]",
            "[2001:db8::1]:9477",
            "localhost:9476",
            "LOCALHOST",
            "gw-kominfo",
            "jatah.kab.go.id.",
            "Jatah.Kab.Go.Id:443",
        ] {
            assert!(n.allows(ok), "{ok}");
        }
    }

    #[test]
    fn other_names_and_malformed_hosts_are_misdirected() {
        let n = names();
        for bad in [
            "evil.example",
            "evil.example:9477",
            "10.20.1.1.evil.example",
            "gw-kominfo.evil.example",
            "localhost.evil.example",
            "",
            "10.20.1.1:",
            "10.20.1.1:port",
            "2001:db8::1",
            "[2001:db8::1",
            "[not-an-address]",
            "[2001:db8::1]x",
            "a:b:c",
        ] {
            assert!(!n.allows(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_given_are_normalized_and_localhost_is_always_there() {
        let n = ServerNames::new(&["Status.Kab.Go.Id.".into()]);
        assert!(n.allows("status.kab.go.id"));
        assert!(n.allows("localhost"));
        assert!(!n.allows("kab.go.id"));
    }
}
