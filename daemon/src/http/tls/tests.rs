use std::os::unix::fs::PermissionsExt;
use std::time::SystemTime;

use super::*;

/// A directory of its own for each test, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("jatah-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    /// Writes `text` to `name` with `mode`.
    fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `names` and its key (PKCS#8), PEM.
fn pair(names: &[&str]) -> (String, String) {
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn files(dir: &Dir, cert: &str, key: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.file("cert.pem", cert, 0o644),
        key: dir.file("key.pem", key, 0o600),
    }
}

fn load_err(files: &TlsFiles) -> String {
    Certificate::load(files).unwrap_err()
}

#[test]
fn a_certificate_and_its_key_load_and_say_what_they_are_for() {
    let dir = Dir::new("ok");
    let (cert, key) = pair(&["status.example.go.id", "203.0.113.7"]);
    let c = Certificate::load(&files(&dir, &cert, &key)).unwrap();
    let f = c.facts();
    assert_eq!(f.dns_names, ["status.example.go.id"]);
    let line = describe(&f, Utc::now());
    assert!(
        line.starts_with("for status.example.go.id, 203.0.113.7 (CN ")
            && line.contains("), valid until 4096-01-01 00:00 UTC ("),
        "{line}"
    );
    // Only HTTP/1.1 is offered.
    assert_eq!(c.server_config().alpn_protocols, [b"http/1.1".to_vec()]);
}

#[test]
fn a_missing_file_is_named() {
    let dir = Dir::new("missing");
    let (cert, key) = pair(&["localhost"]);
    let mut f = files(&dir, &cert, &key);
    f.cert = dir.0.join("nope.pem");
    let e = load_err(&f);
    assert!(
        e.starts_with(&format!("{}: cannot read the certificate: ", f.cert.display())),
        "{e}"
    );
    let mut f = files(&dir, &cert, &key);
    f.key = dir.0.join("nokey.pem");
    let e = load_err(&f);
    assert!(
        e.starts_with(&format!("{}: cannot read the private key: ", f.key.display())),
        "{e}"
    );
}

#[test]
fn a_key_without_its_certificate_is_refused() {
    let dir = Dir::new("nocert");
    let (cert, key) = pair(&["localhost"]);
    // Both files given the key: the certificate file holds no certificate.
    let f = TlsFiles {
        cert: dir.file("cert.pem", &key, 0o600),
        key: dir.file("key.pem", &key, 0o600),
    };
    let e = load_err(&f);
    assert!(
        e.starts_with(&format!("{}: no certificate in it", f.cert.display()))
            && e.contains("swapped"),
        "{e}"
    );
    // An empty certificate file.
    let f = files(&dir, "", &key);
    assert!(load_err(&f).contains("no certificate in it"));
    // And the other way round: no key in the key file.
    let f = TlsFiles {
        cert: dir.file("cert.pem", &cert, 0o644),
        key: dir.file("key.pem", &cert, 0o600),
    };
    let e = load_err(&f);
    assert!(
        e.starts_with(&format!("{}: no private key in it", f.key.display()))
            && e.contains("swapped"),
        "{e}"
    );
}

#[test]
fn garbage_is_refused_with_the_file_named() {
    let dir = Dir::new("garbage");
    let (cert, key) = pair(&["localhost"]);
    let broken = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    let f = files(&dir, broken, &key);
    let e = load_err(&f);
    assert!(
        e.starts_with(&format!("{}: not a valid PEM file", f.cert.display())),
        "{e}"
    );
    // Valid PEM around bytes that are no certificate.
    let junk = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let f = files(&dir, junk, &key);
    let e = load_err(&f);
    assert!(
        e.starts_with(&format!("{}: the first certificate cannot be read", f.cert.display())),
        "{e}"
    );
    let f = files(&dir, &cert, "just text\n");
    let e = load_err(&f);
    assert!(
        e.starts_with(&format!("{}: no private key in it", f.key.display())),
        "{e}"
    );
    let f = files(
        &dir,
        &cert,
        "-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n",
    );
    let e = load_err(&f);
    assert!(
        e.starts_with(&format!("{}: a private key jatah cannot use", f.key.display())),
        "{e}"
    );
    let f = files(
        &dir,
        &cert,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let e = load_err(&f);
    assert!(e.contains("it is encrypted"), "{e}");
}

#[test]
fn a_key_group_or_others_may_read_is_refused() {
    let dir = Dir::new("mode");
    let (cert, key) = pair(&["localhost"]);
    for mode in [0o644, 0o640, 0o604, 0o660] {
        let f = TlsFiles {
            cert: dir.file("cert.pem", &cert, 0o644),
            key: dir.file("key.pem", &key, mode),
        };
        let e = load_err(&f);
        assert!(
            e.starts_with(&format!("{}: mode {mode:04o}", f.key.display()))
                && e.contains("the private key")
                && e.contains("chmod 600"),
            "{e}"
        );
    }
    let f = TlsFiles {
        cert: dir.file("cert.pem", &cert, 0o644),
        key: dir.file("key.pem", &key, 0o400),
    };
    assert!(Certificate::load(&f).is_ok());
}

#[test]
fn the_key_of_another_certificate_is_refused() {
    let dir = Dir::new("mismatch");
    let (cert, _) = pair(&["localhost"]);
    let (_, other_key) = pair(&["localhost"]);
    let f = files(&dir, &cert, &other_key);
    let e = load_err(&f);
    assert!(
        e.starts_with(&format!(
            "{}: not the private key of the certificate in {}",
            f.key.display(),
            f.cert.display()
        )),
        "{e}"
    );
}

#[test]
fn a_reload_takes_a_good_pair_and_keeps_the_old_one_on_a_bad_one() {
    let dir = Dir::new("reload");
    let (cert, key) = pair(&["one.example"]);
    let f = files(&dir, &cert, &key);
    let c = Certificate::load(&f).unwrap();
    let before = c.fingerprint();
    // A new certificate with the old key: the pair does not match.
    let (cert2, key2) = pair(&["two.example"]);
    dir.file("cert.pem", &cert2, 0o644);
    assert_ne!(c.fingerprint(), before);
    assert!(c.reload().unwrap_err().contains("not the private key"));
    assert_eq!(c.facts().dns_names, ["one.example"]);
    dir.file("key.pem", &key2, 0o600);
    c.reload().unwrap();
    assert_eq!(c.facts().dns_names, ["two.example"]);
}

#[test]
fn an_admin_hears_of_expiry_missing_names_and_names_that_get_421() {
    let now = Utc::now();
    let names = ServerNames::new(&["status.example.go.id".to_string()]);
    let good = Facts {
        has_alt_names: true,
        dns_names: vec!["status.example.go.id".into()],
        not_before: Some(now - chrono::Duration::days(10)),
        not_after: Some(now + chrono::Duration::days(80)),
        ..Facts::default()
    };
    assert!(warnings(&good, &names, now).is_empty());

    let w = |f: Facts| warnings(&f, &names, now).join("\n");
    let expired = w(Facts {
        not_after: Some(now - chrono::Duration::days(1)),
        ..good.clone()
    });
    assert!(expired.contains("expired on"), "{expired}");
    let soon = w(Facts {
        not_after: Some(now + chrono::Duration::days(3) + chrono::Duration::hours(1)),
        ..good.clone()
    });
    assert!(soon.contains("in 3 days"), "{soon}");
    let early = w(Facts {
        not_before: Some(now + chrono::Duration::days(1)),
        ..good.clone()
    });
    assert!(early.contains("not valid before"), "{early}");
    let no_san = w(Facts {
        has_alt_names: false,
        dns_names: vec![],
        common_name: Some("status.example.go.id".into()),
        ..good.clone()
    });
    assert!(no_san.contains("no subjectAltName"), "{no_san}");
    let unlisted = w(Facts {
        dns_names: vec!["other.example.go.id".into()],
        ..good.clone()
    });
    assert!(
        unlisted.contains("--server-name other.example.go.id"),
        "{unlisted}"
    );
    // A wildcard covering a listed name is fine; one covering none is not.
    assert_eq!(
        w(Facts {
            dns_names: vec!["*.example.go.id".into()],
            ..good.clone()
        }),
        ""
    );
    let wild = w(Facts {
        dns_names: vec!["*.other.go.id".into()],
        ..good.clone()
    });
    assert!(wild.contains("*.other.go.id"), "{wild}");
}

#[test]
fn a_certificate_or_key_alone_is_refused_naming_what_is_missing() {
    let p = |s: &str| Some(PathBuf::from(s));
    let pair = |c, k| TlsFiles::from_options(c, k, "--status-tls-cert", "--status-tls-key");
    assert_eq!(pair(None, None), Ok(None));
    assert_eq!(
        pair(p("/c"), p("/k")),
        Ok(Some(TlsFiles {
            cert: "/c".into(),
            key: "/k".into()
        }))
    );
    let e = pair(None, p("/k")).unwrap_err();
    assert!(
        e.starts_with(
            "--status-tls-key (JATAH_STATUS_TLS_KEY) is given without --status-tls-cert \
             (JATAH_STATUS_TLS_CERT)"
        ),
        "{e}"
    );
    let e = pair(p("/c"), None).unwrap_err();
    assert!(
        e.starts_with("--status-tls-cert (JATAH_STATUS_TLS_CERT) is given without --status-tls-key"),
        "{e}"
    );
}

#[test]
fn changed_files_are_read_again_once_they_have_settled() {
    let t = |s: u64| Some((SystemTime::UNIX_EPOCH + Duration::from_secs(s), 1, 1, 0o600));
    let mut look = Settle::new((t(1), t(1)));
    assert!(!look.look((t(1), t(1))));
    // The certificate is replaced, then the key: read once both stand still.
    assert!(!look.look((t(2), t(1))));
    assert!(!look.look((t(2), t(3))));
    assert!(look.look((t(2), t(3))));
    assert!(!look.look((t(2), t(3))));
    // A file that goes away is a change too (and fails to load, once).
    assert!(!look.look((None, t(3))));
    assert!(look.look((None, t(3))));
    // A SIGHUP read takes the files as they are.
    look.reloaded((t(4), t(4)));
    assert!(!look.look((t(4), t(4))));
}
