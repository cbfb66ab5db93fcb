//! Tokens file reloads: a revoked token stops working within two seconds,
//! without a restart. The file is read again when it changes (its mtime,
//! size, inode or mode, checked every second) and on SIGHUP. A file that
//! cannot be read, does not parse or has a mode group or others may read
//! or write changes nothing: the tokens loaded before stay in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::http::auth::{Tokens, fingerprint};
use crate::runtime::state::{AppState, TokenCell};

/// How often the file is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a reload changed, by token name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TokensChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, another token or role.
    pub replaced: Vec<String>,
}

/// The names added, removed and replaced from `old` to `new`.
pub fn change(old: &Tokens, new: &Tokens) -> TokensChange {
    let mut c = TokensChange::default();
    for e in new.entries() {
        match old.get(&e.name) {
            None => c.added.push(e.name.clone()),
            Some(o) if o != e => c.replaced.push(e.name.clone()),
            Some(_) => {}
        }
    }
    for e in old.entries() {
        if new.get(&e.name).is_none() {
            c.removed.push(e.name.clone());
        }
    }
    c
}

/// Reads the tokens file again and puts it in force; on any problem the
/// tokens in force stay and the problem is logged. Logs name tokens,
/// never show them.
pub fn reload(cell: &TokenCell, path: &Path, why: &str) -> Result<TokensChange, String> {
    match Tokens::load(path) {
        Ok(new) => {
            let count = new.entries().len();
            let anonymous_summary = new.anonymous_summary;
            let old = cell.replace(new);
            let c = change(&old, &cell.current());
            let replaced = if c.replaced.is_empty() {
                String::new()
            } else {
                format!(", replaced: {:?}", c.replaced)
            };
            info!(
                trigger = why,
                tokens = %path.display(),
                anonymous_summary,
                "tokens reloaded: {count} tokens (added: {:?}, removed: {:?}{replaced})",
                c.added,
                c.removed,
            );
            Ok(c)
        }
        Err(e) => {
            warn!(
                trigger = why,
                tokens = %path.display(),
                error = %e,
                "tokens file not reloaded; the tokens loaded before stay in force"
            );
            Err(e)
        }
    }
}

/// Reloads the tokens the daemon started with when their file changes
/// and on SIGHUP; returns at once if they came from no file.
pub async fn watch(state: Arc<AppState>, shutdown: CancellationToken) {
    let Some(path) = state.tokens.current().source().map(PathBuf::from) else {
        return;
    };
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; the tokens file is still watched");
            None
        }
    };
    let mut tick = tokio::time::interval(CHECK_EVERY);
    let mut seen = fingerprint(&path);
    loop {
        // The fingerprint is taken before the file is read: a change while
        // it is read is seen at the next check.
        let (trigger, now) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => ("SIGHUP", fingerprint(&path)),
            _ = tick.tick() => {
                let now = fingerprint(&path);
                if now == seen {
                    continue;
                }
                // Replaced by rename (`jatah token revoke`, most editors)
                // the file is whole at once; a half-written one fails to
                // parse, keeps the old tokens, and is read again when the
                // writer finishes and changes it once more.
                ("file changed", now)
            }
        };
        seen = now;
        let _ = reload(&state.tokens, &path, trigger);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::auth::{Access, hash_token};
    use std::os::unix::fs::PermissionsExt;

    fn entry(name: &str, role: &str, token: &str) -> String {
        format!(
            "[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
            hex::encode(hash_token(token))
        )
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_reload_swaps_the_tokens_and_a_bad_file_keeps_the_old_ones() {
        let dir = std::env::temp_dir().join(format!("jatah-tokens-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokens.toml");
        write(
            &path,
            &(entry("noc", "admin", "t-noc") + &entry("op", "opd:dinkes", "t-op")),
            0o600,
        );
        let cell = TokenCell::new(Tokens::load(&path).unwrap());
        let ok = |t: &str| cell.authenticate(Some(&format!("Bearer {t}"))).is_ok();
        assert!(ok("t-noc") && ok("t-op"));

        // op revoked, dinkes added, noc's token replaced.
        write(
            &path,
            &(entry("noc", "admin", "t-noc2") + &entry("dinkes", "opd:dinkes", "t-dinkes")),
            0o600,
        );
        let c = reload(&cell, &path, "test").unwrap();
        assert_eq!(
            c,
            TokensChange {
                added: vec!["dinkes".into()],
                removed: vec!["op".into()],
                replaced: vec!["noc".into()],
            }
        );
        assert!(!ok("t-op") && !ok("t-noc") && ok("t-noc2") && ok("t-dinkes"));

        // A file that does not parse, or that others may read: nothing changes.
        write(&path, "[[token]]\nname = \"x\"\n", 0o600);
        assert!(reload(&cell, &path, "test").is_err());
        write(&path, &entry("other", "admin", "t-other"), 0o644);
        let e = reload(&cell, &path, "test").unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::remove_file(&path).unwrap();
        assert!(reload(&cell, &path, "test").is_err());
        assert!(ok("t-noc2") && ok("t-dinkes") && !ok("t-other"));
        assert_eq!(
            cell.authenticate(Some("Bearer t-dinkes")).unwrap().0,
            Access::Opd("dinkes".into())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
