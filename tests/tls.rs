//! TLS on jatah's listeners: the real accept loop (`serve_tls` on
//! 127.0.0.1:0, the daemon's routers) with a self-signed certificate,
//! talked to by real clients (rustls, curl, plain TCP): HTTPS answers,
//! plain HTTP gets no HTTP answer, a connection that never says hello is
//! closed by the idle deadline, a renewed certificate is served without a
//! restart; and `jatah run` refusing bad TLS options before it touches
//! anything.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jatah::TlsFiles;
use jatah::http::auth::Tokens;
use jatah::http::host::ServerNames;
use jatah::http::tls::Certificate;
use jatah::runtime::state::{AppState, PolicyView};
use rustls::pki_types::{CertificateDer, ServerName};
use support::Scratch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const POLICY: &str = "[gateway]\nwan = \"jtnoexist0\"\nlan = [\"jtnoexist1\"]\n\
    download = \"100M\"\nupload = \"100M\"\n\n[[opd]]\nid = \"dinkes\"\nname = \"Dinas Kesehatan\"\n\
    subnets = [\"10.20.1.0/24\"]\ndownload = { guaranteed = \"20M\", ceiling = \"30M\" }\n\
    upload = { guaranteed = \"1M\", ceiling = \"5M\" }\n";

/// A directory of its own, removed at the end.
struct Dir(Scratch);

impl Dir {
    fn new(name: &str) -> Dir {
        Dir(Scratch::new(&format!("tls-{name}")))
    }

    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        // Written aside and renamed in, as certbot and editors do.
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

/// A self-signed certificate for `names`: its PEM, its key's PEM and its DER.
fn self_signed(names: &[&str]) -> (String, String, CertificateDer<'static>) {
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().clone())
}

/// A self-signed certificate for `names`, written as cert.pem (0644) and
/// key.pem (0600) in `dir`; its DER.
fn certificate(dir: &Dir, names: &[&str]) -> (TlsFiles, CertificateDer<'static>) {
    let (cert, key, der) = self_signed(names);
    let files = TlsFiles {
        key: dir.file("key.pem", &key, 0o600),
        cert: dir.file("cert.pem", &cert, 0o644),
    };
    (files, der)
}

/// The daemon's state for a policy, without a kernel data path: enough
/// for /healthz and the status page.
fn state() -> Arc<AppState> {
    let policy = jatah::policy::parse(POLICY, "tls-test.toml").unwrap();
    let view = PolicyView {
        policy,
        slots: [("dinkes".to_string(), 0)].into(),
        retired: Default::default(),
        source: "tls-test.toml".into(),
    };
    let state = AppState::builder(view, Tokens::default()).build();
    state
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    Arc::new(state)
}

/// A TLS listener on 127.0.0.1 serving `router`, until the token fires.
async fn serve(router: axum::Router, cert: &Arc<Certificate>) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(jatah::http::serve_tls(
        "test",
        listener,
        router,
        stop.clone(),
        Some(cert.server_config()),
    ));
    (addr, stop)
}

fn api_router() -> axum::Router {
    jatah::http::for_names(jatah::http::router(state()), &ServerNames::new(&[]))
}

/// A rustls client trusting `root` alone, offering h2 and http/1.1.
fn connector(root: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// GET `path` over TLS as `localhost`: the response, the certificate the
/// server showed and the protocol it chose.
async fn get_tls(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    path: &str,
) -> std::io::Result<(String, CertificateDer<'static>, Option<Vec<u8>>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector(root).connect(name, tcp).await?;
    let (_, session) = tls.get_ref();
    let shown = session.peer_certificates().unwrap()[0].clone().into_owned();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .expect("response within 10 s")?;
    Ok((String::from_utf8_lossy(&response).into_owned(), shown, alpn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_answered_and_plain_http_gets_no_http_answer() {
    let dir = Dir::new("answer");
    let (files, der) = certificate(&dir, &["localhost", "127.0.0.1"]);
    let cert = Certificate::load(&files).unwrap();
    let (addr, stop) = serve(api_router(), &cert).await;

    let (response, shown, alpn) = get_tls(addr, &der, "/healthz").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("ok\n"), "{response}");
    assert_eq!(shown, der);
    // Offered h2 and http/1.1, the client gets http/1.1.
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

    // Plain HTTP to the TLS port: no HTTP answer, and the connection ends.
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        // A reset is an ending too.
        let _ = s.read_to_end(&mut got);
        got
    })
    .await
    .unwrap();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // A client that does not trust the certificate fails its handshake.
    let (_, other) = certificate(&Dir::new("other"), &["localhost"]);
    let e = get_tls(addr, &other, "/healthz").await.unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
    // And the server still answers afterwards.
    assert!(
        get_tls(addr, &der, "/healthz")
            .await
            .unwrap()
            .0
            .starts_with("HTTP/1.1 200")
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_the_status_page_over_https() {
    if !Path::new("/usr/bin/curl").exists() {
        eprintln!("curl is not installed: this test checks with rustls only (see the others)");
        return;
    }
    let dir = Dir::new("curl");
    let (files, _) = certificate(&dir, &["localhost", "127.0.0.1"]);
    let cert = Certificate::load(&files).unwrap();
    let router =
        jatah::http::for_names(jatah::http::status_router(state()), &ServerNames::new(&[]));
    let (addr, stop) = serve(router, &cert).await;
    let ca = files.cert.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(["--write-out", "\n%{http_code} %{scheme} %{http_version}"])
            .arg(format!("https://127.0.0.1:{}/status", addr.port()))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("\n200 HTTPS 1.1"), "{stdout}");
    assert!(stdout.contains("<html"), "{stdout}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_says_hello_is_closed_by_the_deadline() {
    let dir = Dir::new("silent");
    let (files, der) = certificate(&dir, &["localhost"]);
    let cert = Certificate::load(&files).unwrap();
    let (addr, stop) = serve(api_router(), &cert).await;
    let started = Instant::now();
    let got = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 64];
        s.read(&mut buf)
    })
    .await
    .unwrap();
    let waited = started.elapsed();
    // Closed (end of stream or reset), not timed out on our side.
    match got {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_secs(5) && waited <= Duration::from_secs(15),
        "closed after {waited:?}"
    );
    // Others are served meanwhile and after.
    assert!(
        get_tls(addr, &der, "/healthz")
            .await
            .unwrap()
            .0
            .starts_with("HTTP/1.1 200")
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = Dir::new("renew");
    let (files, first) = certificate(&dir, &["localhost"]);
    let cert = Certificate::load(&files).unwrap();
    let (addr, stop) = serve(api_router(), &cert).await;
    tokio::spawn(jatah::http::tls::watch(
        vec![("test", cert.clone())],
        ServerNames::new(&[]),
        stop.clone(),
    ));
    assert_eq!(get_tls(addr, &first, "/healthz").await.unwrap().1, first);

    // A key others may read is not taken: the first pair stays in use.
    let (cert_pem, key_pem, _) = self_signed(&["localhost"]);
    dir.file("key.pem", &key_pem, 0o644);
    dir.file("cert.pem", &cert_pem, 0o644);
    tokio::time::sleep(jatah::http::tls::CHECK_EVERY * 3).await;
    assert_eq!(get_tls(addr, &first, "/healthz").await.unwrap().1, first);

    // Renewed (cert and key replaced, as certbot does): served within a
    // few seconds, to new connections.
    let (_, renewed) = certificate(&dir, &["localhost"]);
    let deadline = Instant::now() + jatah::http::tls::CHECK_EVERY * 5;
    loop {
        match get_tls(addr, &renewed, "/healthz").await {
            Ok((response, shown, _)) => {
                assert_eq!(shown, renewed);
                assert!(response.starts_with("HTTP/1.1 200"), "{response}");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the renewed certificate was not served: {e}"),
        }
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jatah_status_says_the_api_speaks_tls() {
    let dir = Dir::new("client");
    let (files, _) = certificate(&dir, &["localhost", "127.0.0.1"]);
    let cert = Certificate::load(&files).unwrap();
    let (addr, stop) = serve(api_router(), &cert).await;
    let out = tokio::task::spawn_blocking(move || {
        run_jatah(&["status", "--api", &addr.to_string()], &[])
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("http://{addr}/api/v1/opds: no HTTP answer"))
            && err.contains("use --api https://"),
        "{err}"
    );
    // Over https:// with the certificate trusted, it reaches the API
    // (which wants a token here).
    let ca = files.cert.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        run_jatah(
            &["status", "--api", &format!("https://{addr}"), "--ca", &ca],
            &[],
        )
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/api/v1/opds: HTTP 401"), "{err}");
    stop.cancel();
}

fn run_jatah(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_jatah"))
        .args(args)
        .env_remove("JATAH_TLS_CERT")
        .env_remove("JATAH_TLS_KEY")
        .env_remove("JATAH_STATUS_TLS_CERT")
        .env_remove("JATAH_STATUS_TLS_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn a_key_without_its_certificate_is_a_usage_error() {
    let dir = Dir::new("flags");
    let policy = dir.file("policy.toml", POLICY, 0o644);
    let p = policy.to_str().unwrap();
    for (args, env, missing) in [
        (vec!["--tls-key", "/k.pem"], vec![], "--tls-cert <FILE>"),
        (vec!["--tls-cert", "/c.pem"], vec![], "--tls-key <FILE>"),
        // The variables count as the options.
        (
            vec!["--status-listen", "127.0.0.1:0"],
            vec![("JATAH_STATUS_TLS_KEY", "/k.pem")],
            "--status-tls-cert <FILE>",
        ),
        (
            vec![],
            vec![("JATAH_TLS_CERT", "/c.pem")],
            "--tls-key <FILE>",
        ),
        (
            vec!["--status-tls-cert", "/c.pem", "--status-tls-key", "/k.pem"],
            vec![],
            "--status-listen <STATUS_LISTEN>",
        ),
    ] {
        let mut all = vec!["run", "--policy", p];
        all.extend(args.iter().copied());
        let out = run_jatah(&all, &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(
            err.contains("required arguments were not provided") && err.contains(missing),
            "{args:?} {env:?}: {err}"
        );
    }
}

#[test]
fn run_refuses_a_bad_certificate_or_key_before_touching_the_gateway() {
    jatah::lab::netns::require_root();
    let dir = Dir::new("run");
    let (files, _) = certificate(&dir, &["localhost"]);
    let policy = dir.file("policy.toml", POLICY, 0o644);
    let loose_key = dir.file(
        "loose.pem",
        &std::fs::read_to_string(&files.key).unwrap(),
        0o644,
    );
    let run = |cert: &str, key: &str| {
        run_jatah(
            &[
                "run",
                "--policy",
                policy.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--status-listen",
                "127.0.0.1:0",
                "--status-tls-cert",
                cert,
                "--status-tls-key",
                key,
                // Were the certificate checked later, this would fail first.
                "--bpffs",
                "/nonexistent",
                "--run-dir",
                &dir.path("run"),
            ],
            &[],
        )
    };
    let cert = files.cert.to_str().unwrap();
    let missing = dir.path("missing.pem");
    for (cert, key, says) in [
        (
            missing.as_str(),
            files.key.to_str().unwrap(),
            format!("{missing}: cannot read the certificate"),
        ),
        (
            cert,
            loose_key.to_str().unwrap(),
            format!("{}: mode 0644", loose_key.display()),
        ),
        (
            files.key.to_str().unwrap(),
            files.key.to_str().unwrap(),
            format!("{}: no certificate in it", files.key.display()),
        ),
    ] {
        let out = run(cert, key);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--status-tls-cert/--status-tls-key: ") && err.contains(&says),
            "{err}"
        );
        assert!(!err.contains("bpffs"), "{err}");
    }
}

#[test]
fn run_says_which_certificate_the_status_page_is_served_with() {
    jatah::lab::netns::require_root();
    let dir = Dir::new("says");
    let (files, _) = certificate(&dir, &["status.example.go.id"]);
    let policy = dir.file("policy.toml", POLICY, 0o644);
    let bpffs = jatah::lab::netns::BpffsMount::new("jt-tls").unwrap();
    let log = std::fs::File::create(dir.0.join("log")).unwrap();
    // The policy's interfaces do not exist: jatah checks everything, then
    // waits for them, having changed nothing.
    let mut child = Command::new(env!("CARGO_BIN_EXE_jatah"))
        .args(["run", "--policy"])
        .arg(&policy)
        .args(["--listen", "127.0.0.1:0", "--status-listen", "127.0.0.1:0"])
        .arg("--status-tls-cert")
        .arg(&files.cert)
        .arg("--status-tls-key")
        .arg(&files.key)
        .arg("--bpffs")
        .arg(bpffs.path())
        .arg("--run-dir")
        .arg(dir.0.join("run"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(dir.0.join("log")).unwrap();
        if text.contains("waiting for the interface") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let served = text
        .lines()
        .find(|l| l.contains("status page served over TLS"))
        .unwrap_or_else(|| panic!("no TLS line in:\n{text}"));
    assert!(
        served.contains("certificate for status.example.go.id")
            && served.contains("valid until 4096-01-01"),
        "{served}"
    );
    // The name is not given with --server-name: the admin hears of the 421.
    assert!(
        text.contains("--server-name status.example.go.id"),
        "{text}"
    );
    assert!(text.contains("waiting for the interface"), "{text}");
}

#[test]
fn keys_written_by_openssl_load_rsa_pkcs1_and_ec_sec1() {
    if !Path::new("/usr/bin/openssl").exists() {
        eprintln!("openssl is not installed: key formats are covered by rustls-pki-types");
        return;
    }
    let dir = Dir::new("openssl");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // RSA, written the traditional way ("BEGIN RSA PRIVATE KEY").
    openssl(&["genrsa", "-traditional", "-out", "rsa.pem", "2048"]);
    // EC P-256 in SEC1 ("BEGIN EC PRIVATE KEY").
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "ec.pem",
    ]);
    for (key, begins) in [
        ("rsa.pem", "-----BEGIN RSA PRIVATE KEY-----"),
        ("ec.pem", "-----BEGIN EC PRIVATE KEY-----"),
    ] {
        let cert = format!("{key}.crt");
        openssl(&[
            "req",
            "-x509",
            "-key",
            key,
            "-out",
            &cert,
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ]);
        let text = std::fs::read_to_string(dir.0.join(key)).unwrap();
        assert!(text.starts_with(begins), "{text}");
        std::fs::set_permissions(dir.0.join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
        let files = TlsFiles {
            cert: dir.0.join(&cert),
            key: dir.0.join(key),
        };
        let c = Certificate::load(&files).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(c.facts().common_name.as_deref(), Some("localhost"));
        assert_eq!(c.facts().dns_names, ["localhost"]);
    }
}

/// `curl ARGS` in a namespace: (exit code, stdout, stderr).
fn curl(ns: &jatah::lab::netns::NetNs, args: &[&str]) -> (i32, String, String) {
    let out = ns
        .command("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn jatah_run_serves_the_status_page_over_https_to_offices_and_token_links() {
    use jatah::lab::{GW_STATUS_PORT, GW_WAN_ADDR, Lab, LabOpd, LabSpec, lab_opd_token};
    jatah::lab::netns::require_root();
    if !Path::new("/usr/bin/curl").exists() {
        eprintln!("curl is not installed: the status page over HTTPS is checked without a lab");
        return;
    }
    let mut lab = Lab::build(LabSpec {
        prefix: "jt-tls".into(),
        download: "100M".into(),
        upload: "100M".into(),
        nat: false,
        mtu: 1500,
        opds: vec![LabOpd::new(
            "dinkes",
            "Dinas Kesehatan",
            ("5M", "10M"),
            ("5M", "10M"),
        )],
    })
    .expect("building the lab");
    // The gateway's public name, its WAN address and its address on the
    // office LAN.
    const NAME: &str = "status.lab.example";
    let params = rcgen::CertificateParams::new(vec![
        NAME.to_string(),
        GW_WAN_ADDR.to_string(),
        "10.20.1.1".to_string(),
    ])
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ca = lab.dir().join("status-cert.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let key_file = lab.dir().join("status-key.pem");
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    lab.run_args = vec![
        "--status-tls-cert".into(),
        ca.to_str().unwrap().into(),
        "--status-tls-key".into(),
        key_file.to_str().unwrap().into(),
        "--server-name".into(),
        NAME.into(),
    ];
    lab.start_daemon(Path::new(env!("CARGO_BIN_EXE_jatah")))
        .unwrap();
    let ca = ca.to_str().unwrap();
    let office = &lab.opds[0];
    let status_code = ["--write-out", "\n%{http_code}"];

    // From the office LAN: the page, and the office recognised by address.
    let page = format!("https://10.20.1.1:{GW_STATUS_PORT}/status");
    let (code, out, err) = curl(
        office,
        &[&["--cacert", ca, &page][..], &status_code].concat(),
    );
    assert_eq!(code, 0, "{err}\n{}", lab.daemon_log());
    assert!(out.ends_with("\n200") && out.contains("<html"), "{out}");
    let api = format!("https://10.20.1.1:{GW_STATUS_PORT}/api/v1/status");
    let (code, out, err) = curl(office, &["--cacert", ca, &api]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"dinkes\""), "{out}");

    // A token link from outside, by the gateway's public name.
    let resolve = format!("{NAME}:{GW_STATUS_PORT}:{GW_WAN_ADDR}");
    let link_api = format!("https://{NAME}:{GW_STATUS_PORT}/api/v1/status");
    let bearer = format!("Authorization: Bearer {}", lab_opd_token("dinkes"));
    let (code, out, err) = curl(
        &lab.inet,
        &[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-H",
            &bearer,
            &link_api,
        ],
    );
    assert_eq!(code, 0, "{err}\n{}", lab.daemon_log());
    assert!(out.contains("\"dinkes\""), "{out}");

    // Plain HTTP to the status port gets no page.
    let plain = format!("http://10.20.1.1:{GW_STATUS_PORT}/status");
    let (code, out, _) = curl(office, &[plain.as_str(), status_code[0], status_code[1]]);
    assert!(code != 0 && !out.contains("<html"), "{code} {out}");

    // The API listener stays plain HTTP, and the log says what is served.
    assert_eq!(lab.http_get("/healthz").unwrap().0, 200);
    let log = lab.daemon_log();
    assert!(
        log.contains(&format!(
            "status page served over TLS with the certificate for {NAME}, {GW_WAN_ADDR}, 10.20.1.1"
        )),
        "{log}"
    );
    assert!(
        log.contains("scheme=\"https\"") || log.contains("scheme=https"),
        "{log}"
    );

    // `systemctl reload` (SIGHUP) serves a replaced certificate at once.
    let params = rcgen::CertificateParams::new(vec!["10.20.1.1".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let renewed = params.self_signed(&key).unwrap();
    let renewed_ca = lab.dir().join("renewed-cert.pem");
    std::fs::write(&renewed_ca, renewed.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::copy(&renewed_ca, ca).unwrap();
    let pid = lab.daemon_pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while !lab.daemon_log().contains("certificate read again (SIGHUP)") && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = lab.daemon_log();
    assert!(
        log.contains("status page: certificate read again (SIGHUP); served over TLS with the one for 10.20.1.1"),
        "{log}"
    );
    let renewed_ca = renewed_ca.to_str().unwrap();
    let (code, out, err) = curl(
        office,
        &[&["--cacert", renewed_ca, &page][..], &status_code].concat(),
    );
    assert_eq!(code, 0, "{err}\n{log}");
    assert!(out.ends_with("\n200"), "{out}");
}
