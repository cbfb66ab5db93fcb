//! TLS on a listener, so a token link (`https://NAME:9477/status#token=...`)
//! reaches the status page from outside with no proxy in front of it (a
//! proxy would hide the visitor's address, which picks its OPD).
//!
//! A listener takes a certificate chain and its private key as PEM files
//! ([`TlsFiles`]). They are loaded when jatah starts, and a problem stops
//! it before the gateway is touched: a file missing or unreadable, without
//! a certificate or a key, a key group or others may read, a key that is
//! not the certificate's. They are read again on SIGHUP and when either
//! file changes (looked at every [`CHECK_EVERY`], read once they look the
//! same twice in a row), so a renewed certificate is served to the next
//! connections without a restart; a new pair that does not load leaves
//! the one in use in place.
//!
//! A connection's handshake runs in its place under the listener's caps
//! ([`crate::http::conn`]) and gets [`HANDSHAKE_TIMEOUT`]; only HTTP/1.1
//! is offered (ALPN). Plain HTTP sent to a TLS listener fails the
//! handshake and gets no HTTP answer.

mod der;

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::http::auth::{Fingerprint, check_owner_only, fingerprint};
use crate::http::conn::RefusalLog;
use crate::http::host::ServerNames;

pub use der::Facts;

/// A client gets this long, from its connection, to complete the
/// handshake; an idle connection is closed no later.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate and key files are looked at for a change.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// A certificate this close to its end is warned about.
const RENEW_WITHIN_DAYS: i64 = 14;
/// Failed handshakes are summed up in one warning per this period.
const FAILURES_LOGGED_EVERY: Duration = Duration::from_secs(60);

/// A listener's certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate, then its intermediates (as certbot's
    /// `fullchain.pem`).
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, RSA or SEC1, unencrypted),
    /// readable by its owner alone.
    pub key: PathBuf,
}

impl TlsFiles {
    /// A listener's pair from its two options (`--tls-cert`, `--tls-key`
    /// and their variables): both or neither, one alone is an error.
    pub fn from_options(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        cert_flag: &str,
        key_flag: &str,
    ) -> Result<Option<TlsFiles>, String> {
        let named = |flag: &str| {
            let var = flag.trim_start_matches('-').replace('-', "_");
            format!("{flag} (JATAH_{})", var.to_ascii_uppercase())
        };
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
            (None, None) => Ok(None),
            (Some(_), None) => Err(format!(
                "{} is given without {}: TLS needs both, the certificate chain and its \
                 private key",
                named(cert_flag),
                named(key_flag)
            )),
            (None, Some(_)) => Err(format!(
                "{} is given without {}: TLS needs both, the certificate chain and its \
                 private key",
                named(key_flag),
                named(cert_flag)
            )),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain in `path`.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let text = std::fs::read(path)
        .map_err(|e| format!("{shown}: cannot read the certificate: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{shown}: not a valid PEM file: {e}"))?;
    if chain.is_empty() {
        let hint = if contains(&text, b"PRIVATE KEY-----") {
            "; it holds a private key: are the certificate and key files swapped?"
        } else if text.first() == Some(&0x30) {
            "; it looks like binary DER: convert it with `openssl x509 -in FILE -out FILE.pem`"
        } else {
            ""
        };
        return Err(format!(
            "{shown}: no certificate in it (expected PEM \"-----BEGIN CERTIFICATE-----\" \
             blocks: the server's certificate first, then its intermediates){hint}"
        ));
    }
    Ok(chain)
}

/// The private key in `path`, refused if group or others may read or
/// write the file (the mode is read from the opened file).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("{shown}: cannot read the private key: {e}");
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    check_owner_only(path, &file.metadata().map_err(cannot)?, "the private key")?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(cannot)?;
    let key = PrivateKeyDer::from_pem_slice(&text);
    let hint = if contains(&text, b"ENCRYPTED PRIVATE KEY") || contains(&text, b"Proc-Type: 4,ENCRYPTED")
    {
        "; it is encrypted, and jatah cannot ask for a passphrase: write it out unencrypted \
         (`openssl pkey -in FILE -out KEY`, then `chmod 600 KEY`)"
    } else if contains(&text, b"BEGIN CERTIFICATE") {
        "; it holds a certificate: are the certificate and key files swapped?"
    } else {
        ""
    };
    text.fill(0);
    key.map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{shown}: no private key in it (expected PEM \"-----BEGIN PRIVATE KEY-----\", \
             \"-----BEGIN RSA PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\"){hint}"
        ),
        e => format!("{shown}: not a valid PEM file: {e}"),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads the pair and checks the key is the certificate's.
fn read_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    let signer = provider.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "{}: a private key jatah cannot use ({e}); RSA, ECDSA (P-256, P-384) and \
             Ed25519 keys are supported",
            files.key.display()
        )
    })?;
    let pair = CertifiedKey::new(chain, signer);
    match pair.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(pair)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(format!(
                "{}: not the private key of the certificate in {} (the first certificate \
                 there must be the server's own, issued for this key)",
                files.key.display(),
                files.cert.display()
            ))
        }
        Err(e) => Err(format!(
            "{}: the first certificate cannot be read: {e}",
            files.cert.display()
        )),
    }
}

/// The certificate a TLS listener serves; [`Certificate::reload`]
/// replaces it for the handshakes that follow.
#[derive(Debug)]
pub struct Certificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Loads and checks the pair in `files`.
    pub fn load(files: &TlsFiles) -> Result<Arc<Certificate>, String> {
        let provider = provider();
        let pair = read_pair(files, &provider)?;
        Ok(Arc::new(Certificate {
            files: files.clone(),
            provider,
            current: RwLock::new(Arc::new(pair)),
        }))
    }

    /// Reads the files again; on an error the pair in use stays.
    pub fn reload(&self) -> Result<(), String> {
        let pair = read_pair(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the certificate in use says about itself.
    pub fn facts(&self) -> Facts {
        let pair = self.current();
        pair.cert
            .first()
            .and_then(|c| der::facts(c))
            .unwrap_or_default()
    }

    fn fingerprint(&self) -> Fingerprints {
        (fingerprint(&self.files.cert), fingerprint(&self.files.key))
    }

    /// A rustls configuration serving this certificate (as it is when
    /// each handshake starts), TLS 1.2 and 1.3, ALPN `http/1.1`.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The certificate in a line: the names it is for and until when.
pub fn describe(f: &Facts, now: DateTime<Utc>) -> String {
    let mut names: Vec<String> = f.dns_names.clone();
    names.extend(f.addresses.iter().map(|a| a.to_string()));
    let mut s = if names.is_empty() {
        "for no name or address".to_string()
    } else {
        format!("for {}", names.join(", "))
    };
    if let Some(cn) = &f.common_name {
        s.push_str(&format!(" (CN {cn})"));
    }
    if let Some(end) = f.not_after {
        let days = (end - now).num_days();
        s.push_str(&format!(", valid until {}", end.format("%Y-%m-%d %H:%M UTC")));
        if end < now {
            s.push_str(" (expired)");
        } else {
            s.push_str(&format!(" ({days} days from now)"));
        }
    }
    s
}

/// What an admin should hear about a certificate before a client finds
/// it: expired or about to, not yet valid, no subjectAltName, or names
/// that requests would carry and `--server-name` does not list (they get
/// 421, see [`crate::http::host`]).
pub fn warnings(f: &Facts, names: &ServerNames, now: DateTime<Utc>) -> Vec<String> {
    let mut out = Vec::new();
    let day = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    match f.not_after {
        Some(end) if end < now => out.push(format!(
            "the certificate expired on {}: clients refuse it; renew it (e.g. `certbot renew`): \
             jatah reads the files again when they change",
            day(end)
        )),
        Some(end) if end - now < chrono::Duration::days(RENEW_WITHIN_DAYS) => out.push(format!(
            "the certificate expires on {}, in {} days: renew it (e.g. `certbot renew`): \
             jatah reads the files again when they change",
            day(end),
            (end - now).num_days()
        )),
        _ => {}
    }
    if let Some(start) = f.not_before.filter(|s| *s > now) {
        out.push(format!(
            "the certificate is not valid before {}: clients refuse it until then (is this \
             machine's clock right?)",
            day(start)
        ));
    }
    if !f.has_alt_names {
        out.push(
            "the certificate has no subjectAltName: browsers and curl look for the name only \
             there and refuse it; issue one with the name in subjectAltName (openssl: \
             -addext subjectAltName=DNS:NAME)"
                .to_string(),
        );
    }
    for name in &f.dns_names {
        let served = match name.strip_prefix("*.") {
            Some(parent) => names.names().iter().any(|n| {
                n.split_once('.')
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(parent))
            }),
            None => names.allows(name),
        };
        if !served {
            out.push(format!(
                "the certificate is for {name}, which --server-name does not list: requests \
                 for it get 421 (Misdirected Request); add --server-name {}",
                if name.starts_with("*.") {
                    "with the name clients use"
                } else {
                    name
                }
            ));
        }
    }
    out
}

/// Loads a listener's pair as `jatah run` starts and says what it serves.
/// `what` names the listener in logs ("status page"), `flags` its options
/// in errors.
pub fn start(
    what: &str,
    flags: &str,
    files: &TlsFiles,
    names: &ServerNames,
) -> Result<Arc<Certificate>, String> {
    let cert = Certificate::load(files).map_err(|e| format!("{flags}: {e}"))?;
    report(what, &cert, names, " served over TLS with the certificate");
    Ok(cert)
}

fn report(what: &str, cert: &Certificate, names: &ServerNames, said: &str) {
    let now = Utc::now();
    let facts = cert.facts();
    info!(
        cert = %cert.files.cert.display(),
        key = %cert.files.key.display(),
        "{what}{said} {}",
        describe(&facts, now)
    );
    for w in warnings(&facts, names, now) {
        warn!(cert = %cert.files.cert.display(), "{what}: {w}");
    }
}

/// Reads each listener's certificate again on SIGHUP and when its files
/// change. `certs` pairs a listener's name in logs with its certificate.
pub async fn watch(
    certs: Vec<(&'static str, Arc<Certificate>)>,
    names: ServerNames,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    if certs.is_empty() {
        return;
    }
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; certificate files are still watched");
            None
        }
    };
    let mut looks: Vec<_> = certs
        .iter()
        .map(|(_, c)| Settle::new(c.fingerprint()))
        .collect();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        let hangup = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            _ = tick.tick() => false,
        };
        for ((what, cert), look) in certs.iter().zip(looks.iter_mut()) {
            // Taken before the files are read: a change while they are
            // read is seen at the next look.
            let now = cert.fingerprint();
            let trigger = if hangup {
                look.reloaded(now);
                "SIGHUP"
            } else if look.look(now) {
                "file changed"
            } else {
                continue;
            };
            match cert.reload() {
                Ok(()) => report(
                    what,
                    cert,
                    &names,
                    &format!(": certificate read again ({trigger}); served over TLS with the one"),
                ),
                Err(e) => warn!(
                    trigger,
                    error = %e,
                    "{what}: the TLS certificate was not read again; the one loaded before \
                     stays in use"
                ),
            }
        }
    }
}

/// The certificate's and the key's [`Fingerprint`]; None for a file that
/// cannot be looked at.
type Fingerprints = (Option<Fingerprint>, Option<Fingerprint>);

/// When a pair whose files change is read again: once they have looked
/// the same at two looks in a row, so a renewal that replaces the
/// certificate and then the key is read once, whole.
#[derive(Debug)]
struct Settle {
    seen: Fingerprints,
    changed: Option<Fingerprints>,
}

impl Settle {
    fn new(seen: Fingerprints) -> Settle {
        Settle {
            seen,
            changed: None,
        }
    }

    /// A look finding `now`: whether to read the files again now.
    fn look(&mut self, now: Fingerprints) -> bool {
        if now == self.seen {
            self.changed = None;
            false
        } else if self.changed == Some(now) {
            self.reloaded(now);
            true
        } else {
            self.changed = Some(now);
            false
        }
    }

    /// The files were read again as they are `now`.
    fn reloaded(&mut self, now: Fingerprints) {
        self.seen = now;
        self.changed = None;
    }
}

/// Why a connection's handshake did not complete.
#[derive(Debug)]
pub enum HandshakeFailed {
    /// The client sent something else than a TLS handshake jatah accepts
    /// (plain HTTP, an unknown protocol version, a certificate alert) or
    /// went away.
    Error(std::io::Error),
    /// Not complete within [`HANDSHAKE_TIMEOUT`].
    TimedOut,
    /// jatah is stopping.
    Stopped,
}

impl std::fmt::Display for HandshakeFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailed::Error(e) => write!(f, "{e}"),
            HandshakeFailed::TimedOut => write!(f, "not complete within {HANDSHAKE_TIMEOUT:?}"),
            HandshakeFailed::Stopped => write!(f, "jatah is stopping"),
        }
    }
}

/// Runs the server side of the handshake on `io`, at most
/// [`HANDSHAKE_TIMEOUT`], ending early when `stop` fires.
pub async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: IO,
    stop: &CancellationToken,
) -> Result<tokio_rustls::server::TlsStream<IO>, HandshakeFailed> {
    tokio::select! {
        _ = stop.cancelled() => Err(HandshakeFailed::Stopped),
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)) => match done {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => Err(HandshakeFailed::Error(e)),
            Err(_) => Err(HandshakeFailed::TimedOut),
        },
    }
}

/// Failed handshakes of one listener: each at debug level (scanners and
/// plain-HTTP clients cause them all day), and a warning at most once per
/// minute with how many failed since the last one.
#[derive(Debug)]
pub struct Failures {
    listener: &'static str,
    log: RefusalLog,
}

impl Failures {
    pub fn new(listener: &'static str) -> Failures {
        Failures {
            listener,
            log: RefusalLog::new(FAILURES_LOGGED_EVERY),
        }
    }

    pub fn note(&self, peer: SocketAddr, why: &HandshakeFailed) {
        if matches!(why, HandshakeFailed::Stopped) {
            return;
        }
        debug!(listener = self.listener, client = %peer, error = %why, "TLS handshake failed");
        if let Some(n) = self.log.note(Instant::now()) {
            warn!(
                listener = self.listener,
                failed = n,
                "{n} TLS handshakes failed since the last such line, the last from {peer}: \
                 {why} (plain HTTP sent to this HTTPS port, a client that does not trust the \
                 certificate, or a scanner; each is logged at debug level)"
            );
        }
    }
}

#[cfg(test)]
mod tests;
