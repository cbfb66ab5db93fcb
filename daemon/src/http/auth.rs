//! API access: bearer tokens with roles, from a file the admin controls.
//! Tokens are stored only as SHA-256 hashes and compared in constant time.
//!
//! ```toml
//! # /etc/jatah/tokens.toml (create entries with `jatah token new`)
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

use std::path::Path;

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

#[derive(Debug, Clone)]
struct TokenEntry {
    name: String,
    role: Access,
    hash: [u8; 32],
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
    /// Whether requests without a token may read the summary.
    pub anonymous_summary: bool,
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

/// A new token for `role` and the tokens-file entry that accepts it.
pub fn new_entry(name: &str, role: &str) -> Result<(String, String), String> {
    parse_role(role)?;
    if name.trim().is_empty() || name.contains('"') {
        return Err("--name must be non-empty and without quotes".into());
    }
    let token = new_token().map_err(|e| format!("reading /dev/urandom: {e}"))?;
    let entry = format!(
        "[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
        hex::encode(hash_token(&token))
    );
    Ok((token, entry))
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
    /// Loads a tokens file; every problem names the file and the entry.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
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
            entries.push(TokenEntry {
                name: t.name,
                role,
                hash,
            });
        }
        Ok(Tokens {
            entries,
            anonymous_summary: file.anonymous_summary,
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
    fn opd_tokens_see_only_their_opd() {
        let a = Access::Opd("dinkes".into());
        assert!(a.can_see("dinkes"));
        assert!(!a.can_see("bappeda"));
        assert!(Access::Admin.can_see("bappeda"));
        assert!(!Access::Anonymous.can_see("dinkes"));
    }
}
