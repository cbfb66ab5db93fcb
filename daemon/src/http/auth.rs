//! API access: bearer tokens with roles, from a file the admin controls.
//! Tokens are stored only as SHA-256 hashes and compared in constant time.
//! The file must be readable by its owner alone (mode 0600): a file group
//! or others may read or write is refused, by the daemon and the CLI.
//!
//! ```toml
//! # /etc/jatah/tokens.toml (add entries with `jatah token new --append`)
//! anonymous_summary = false   # let anyone read /api/v1/opds and /api/v1/gateway
//!
//! [[token]]
//! name = "noc"                # who holds it; appears in logs, never the token
//! role = "admin"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!
//! [[token]]
//! name = "dinkes-operator"
//! role = "opd:dinkes"         # only that OPD's data
//! sha256 = "..."
//! ```

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Everything, including policy reloads.
    Admin,
    /// Only this OPD's data; other OPDs look as if they did not exist.
    Opd(String),
    /// No token: only the summary, and only if the admin allowed it.
    Anonymous,
}

impl Access {
    /// Whether this access may see OPD `id`.
    pub fn can_see(&self, id: &str) -> bool {
        match self {
            Access::Admin => true,
            Access::Opd(own) => own == id,
            Access::Anonymous => false,
        }
    }
}

impl std::fmt::Display for Access {
    /// As the tokens file spells the role (`admin`, `opd:<id>`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Admin => f.write_str("admin"),
            Access::Opd(id) => write!(f, "opd:{id}"),
            Access::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// One token as the file names it: who holds it, its role and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub role: Access,
    pub hash: [u8; 32],
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
    /// Whether requests without a token may read the summary.
    pub anonymous_summary: bool,
    /// The file they were loaded from (None: built in memory).
    source: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    anonymous_summary: bool,
    #[serde(default)]
    token: Vec<TokenFileEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFileEntry {
    name: String,
    role: String,
    sha256: String,
}

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("unknown or revoked token")]
    UnknownToken,
}

/// SHA-256 of a token, as stored in the tokens file.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token (32 bytes from the kernel, hex).
pub fn new_token() -> std::io::Result<String> {
    let mut buf = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut buf)?;
    Ok(hex::encode(buf))
}

/// A new token for `role` and the tokens-file entry that accepts it. The
/// entry holds the token's hash only, never the token.
pub fn new_entry(name: &str, role: &str) -> Result<(String, String), String> {
    parse_role(role)?;
    if name.trim().is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err("--name must be 1 to 64 characters, without line breaks".into());
    }
    let token = new_token().map_err(|e| format!("reading /dev/urandom: {e}"))?;
    let entry = format!(
        "[[token]]\nname = {}\nrole = \"{role}\"\nsha256 = \"{}\"\n",
        toml::Value::String(name.into()),
        hex::encode(hash_token(&token))
    );
    Ok((token, entry))
}

/// Refuses a tokens file that group or others may read or write: a reader
/// learns who holds which role and can try guessed tokens against the
/// hashes offline; a writer can let anyone in.
pub fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    check_owner_only(path, meta, "the tokens file")
}

/// Refuses a secret file (`what`: "the tokens file", "the private key")
/// that group or others may read or write.
pub fn check_owner_only(path: &Path, meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    if mode & 0o066 != 0 {
        return Err(format!(
            "{}: mode {mode:04o} lets group or others read or write {what}; \
             it must be readable by its owner alone: run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// What identifies a version of a secret file on disk: its mtime, size,
/// inode and mode. The mode counts because a chmod that lets group or
/// others read the file must be noticed, so the file is read again and
/// refused ([`check_owner_only`]).
pub type Fingerprint = (SystemTime, u64, u64, u32);

/// The [`Fingerprint`] of the file at `path`; None if it cannot be looked
/// at. The tokens watcher and the TLS watcher both use this one, so a
/// chmod counts the same for every secret file.
pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino(), m.mode()))
}

/// Reads a tokens file, refusing it unless only its owner may read it
/// ([`check_private`]). The mode is read from the opened file, so it is
/// the mode of the text that is read.
pub fn read_private(path: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("{}: cannot read: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(cannot)?;
    check_private(path, &file.metadata().map_err(cannot)?)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(cannot)?;
    Ok(text)
}

fn parse_role(role: &str) -> Result<Access, String> {
    if role == "admin" {
        return Ok(Access::Admin);
    }
    match role.strip_prefix("opd:") {
        Some(id)
            if !id.is_empty()
                && id.len() <= 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Ok(Access::Opd(id.to_string()))
        }
        _ => Err(format!(
            "role {role:?} is neither \"admin\" nor \"opd:<id>\""
        )),
    }
}

impl Tokens {
    /// Loads a tokens file; every problem names the file and the entry. A
    /// file group or others may read or write is refused.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = read_private(path)?;
        let mut tokens = Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        tokens.source = Some(path.to_path_buf());
        Ok(tokens)
    }

    /// The file these tokens were loaded from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The entries, in file order.
    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&TokenEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for (i, t) in file.token.into_iter().enumerate() {
            let role =
                parse_role(&t.role).map_err(|e| format!("token #{} ({}): {e}", i + 1, t.name))?;
            let raw = hex::decode(t.sha256.trim()).ok().filter(|b| b.len() == 32).ok_or_else(|| {
                format!(
                    "token #{} ({}): sha256 must be 64 hex digits (create one with `jatah token new`)",
                    i + 1,
                    t.name
                )
            })?;
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&raw);
            if let Some(j) = entries.iter().position(|e: &TokenEntry| e.name == t.name) {
                return Err(format!(
                    "token #{} ({}): the name is already used by token #{}; names must be \
                     unique (logs and `jatah token revoke` name tokens by them)",
                    i + 1,
                    t.name,
                    j + 1
                ));
            }
            entries.push(TokenEntry {
                name: t.name,
                role,
                hash,
            });
        }
        Ok(Tokens {
            entries,
            anonymous_summary: file.anonymous_summary,
            source: None,
        })
    }

    /// A token set with one admin token (tests, the lab).
    #[cfg(any(test, feature = "testkit"))]
    pub fn with_admin(token: &str) -> Tokens {
        let mut t = Tokens::default();
        t.add("admin", Access::Admin, token);
        t
    }

    /// Adds a token (held in memory as its hash only).
    #[cfg(any(test, feature = "testkit"))]
    pub fn add(&mut self, name: &str, role: Access, token: &str) {
        self.entries.push(TokenEntry {
            name: name.into(),
            role,
            hash: hash_token(token),
        });
    }

    /// The access an `Authorization` header value grants, and the token's
    /// name for logs. Every entry is compared (in constant time), so timing
    /// tells nothing about which entry nearly matched.
    pub fn authenticate(
        &self,
        header: Option<&str>,
    ) -> Result<(Access, Option<String>), AuthError> {
        let Some(header) = header else {
            return Ok((Access::Anonymous, None));
        };
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        let hash = hash_token(token);
        let mut found: Option<&TokenEntry> = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&hash)) && found.is_none() {
                found = Some(e);
            }
        }
        found
            .map(|e| (e.role.clone(), Some(e.name.clone())))
            .ok_or(AuthError::UnknownToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_maps_tokens_to_roles() {
        let file = format!(
            "anonymous_summary = true\n[[token]]\nname = \"noc\"\nrole = \"admin\"\nsha256 = \"{}\"\n\
             [[token]]\nname = \"op\"\nrole = \"opd:dinkes\"\nsha256 = \"{}\"\n",
            hex::encode(hash_token("secret-admin")),
            hex::encode(hash_token("secret-dinkes"))
        );
        let t = Tokens::parse(&file).unwrap();
        assert!(t.anonymous_summary);
        assert_eq!(
            t.authenticate(Some("Bearer secret-admin")).unwrap().0,
            Access::Admin
        );
        assert_eq!(
            t.authenticate(Some("Bearer secret-dinkes")).unwrap().0,
            Access::Opd("dinkes".into())
        );
        assert_eq!(
            t.authenticate(Some("Bearer nope")),
            Err(AuthError::UnknownToken)
        );
        assert_eq!(t.authenticate(Some("Basic abc")), Err(AuthError::Malformed));
        assert_eq!(t.authenticate(None).unwrap().0, Access::Anonymous);
    }

    #[test]
    fn bad_entries_are_rejected_with_the_entry_named() {
        let e = Tokens::parse("[[token]]\nname = \"x\"\nrole = \"root\"\nsha256 = \"00\"\n")
            .unwrap_err();
        assert!(e.contains("token #1 (x)") && e.contains("role"), "{e}");
        let e = Tokens::parse("[[token]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"zz\"\n")
            .unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        let e =
            Tokens::parse("[[token]]\nname = \"x\"\nrole = \"admin\"\nsha = \"zz\"\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_new_entry_accepts_exactly_its_token() {
        let (token, entry) = new_entry("noc", "opd:dinkes").unwrap();
        let t = Tokens::parse(&entry).unwrap();
        assert_eq!(
            t.authenticate(Some(&format!("Bearer {token}"))).unwrap().0,
            Access::Opd("dinkes".into())
        );
        assert!(
            !entry.contains(&token),
            "the file holds the hash, never the token"
        );
        assert!(new_entry("x", "superuser").is_err());
    }

    #[test]
    fn names_are_unique_and_quoted_as_toml() {
        let (_, a) = new_entry("noc", "admin").unwrap();
        let (_, b) = new_entry("noc", "opd:dinkes").unwrap();
        let e = Tokens::parse(&format!("{a}{b}")).unwrap_err();
        assert!(e.contains("token #2 (noc)") && e.contains("already used by token #1"), "{e}");
        let (token, entry) = new_entry("operator \"dinkes\" \\ 2", "opd:dinkes").unwrap();
        let t = Tokens::parse(&entry).unwrap();
        assert_eq!(t.entries()[0].name, "operator \"dinkes\" \\ 2");
        assert!(t.authenticate(Some(&format!("Bearer {token}"))).is_ok());
        assert!(new_entry("two\nlines", "admin").is_err());
        assert!(new_entry(" ", "admin").is_err());
    }

    #[test]
    fn a_tokens_file_group_or_others_may_read_or_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("jatah-auth-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.toml");
        let (_, entry) = new_entry("noc", "admin").unwrap();
        std::fs::write(&path, entry).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o666] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Tokens::load(&path).unwrap_err();
            let file = path.display().to_string();
            assert!(
                e.starts_with(&format!("{file}: mode {mode:04o}"))
                    && e.contains(&format!("`chmod 600 {file}`")),
                "{e}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let t = Tokens::load(&path).unwrap();
            assert_eq!(t.entries().len(), 1);
            assert_eq!(t.source(), Some(path.as_path()));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn opd_tokens_see_only_their_opd() {
        let a = Access::Opd("dinkes".into());
        assert!(a.can_see("dinkes"));
        assert!(!a.can_see("bappeda"));
        assert!(Access::Admin.can_see("bappeda"));
        assert!(!Access::Anonymous.can_see("dinkes"));
    }
}
