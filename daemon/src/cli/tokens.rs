//! `jatah token`: the tokens file's upkeep. New entries are appended to a
//! file only its owner may read (created mode 0600), the token itself goes
//! to the terminal only; `list` shows names and roles, `revoke` removes one
//! entry and leaves the rest of the file (comments, other entries) as it
//! was, replacing the file in one rename so a running jatah never reads
//! half of it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::http::auth::{Tokens, check_private, hash_token, new_entry, read_private};

/// Appends a new token for `role`, held by `name`, to the tokens file at
/// `path` (created mode 0600 if missing) and returns the token, which is
/// stored nowhere. Refused: a file group or others may read or write, a
/// file that does not parse, a name already in the file.
pub fn append(path: &Path, name: &str, role: &str) -> Result<String, String> {
    let (token, entry) = new_entry(name, role)?;
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: cannot open for appending: {e}", path.display()))?;
    check_private(path, &file.metadata().map_err(io)?)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    let tokens = Tokens::parse(&text)
        .map_err(|e| format!("{}: {e}; fix the file before adding to it", path.display()))?;
    if tokens.get(name).is_some() {
        return Err(format!(
            "{}: a token named {name:?} is in the file already; choose another --name, \
             or revoke the old one first (`jatah token revoke {name:?} --tokens {}`)",
            path.display(),
            path.display()
        ));
    }
    let mut addition = String::new();
    if !text.is_empty() && !text.ends_with('\n') {
        addition.push('\n');
    }
    if !text.trim().is_empty() {
        addition.push('\n');
    }
    addition.push_str(&entry);
    Tokens::parse(&format!("{text}{addition}")).map_err(|e| {
        format!(
            "{}: the file would not parse with the new entry ({e}); nothing was written",
            path.display()
        )
    })?;
    file.write_all(addition.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(token)
}

/// The tokens file at `path` as a table (name, role, the hash's first 8
/// hex digits), and notes for the admin (plaintext tokens left in
/// comments by an older `jatah token new >> FILE`).
pub fn list(path: &Path) -> Result<(String, Vec<String>), String> {
    let text = read_private(path)?;
    let tokens = Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let rows: Vec<[String; 3]> = tokens
        .entries()
        .iter()
        .map(|e| {
            [
                e.name.clone(),
                e.role.to_string(),
                hex::encode(&e.hash[..4]),
            ]
        })
        .collect();
    let header = ["NAME".to_string(), "ROLE".into(), "SHA256".into()];
    let width = |i: usize| {
        rows.iter()
            .chain([&header])
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    let mut out = String::new();
    for r in [&header].into_iter().chain(&rows) {
        out.push_str(&format!("{:<w0$}  {:<w1$}  {}\n", r[0], r[1], r[2]));
    }
    out.push_str(&format!(
        "{} token{}; anonymous summary {}\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        if tokens.anonymous_summary {
            "allowed (anyone may read the OPD list and gateway)"
        } else {
            "not allowed"
        }
    ));
    Ok((out, notes(path, &text, &tokens)))
}

/// Loads the tokens file as `jatah run` will (mode checked), and returns
/// notes for the admin (see [`list`]).
pub fn check(path: &Path) -> Result<Vec<String>, String> {
    let text = read_private(path)?;
    let tokens = Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(notes(path, &text, &tokens))
}

fn notes(path: &Path, text: &str, tokens: &Tokens) -> Vec<String> {
    plaintext_lines(text, tokens)
        .into_iter()
        .map(|(line, name)| {
            format!(
                "{}:{line}: this comment holds the token of {name:?} in plain text; \
                 delete the line (or revoke and reissue the token)",
                path.display()
            )
        })
        .collect()
}

/// Removes the entry named `name` from the tokens file at `path`, keeping
/// everything else, and returns its role. The file is replaced in one
/// rename (a temporary file, mode 0600, in the same directory, synced to
/// disk first). An unknown name is refused with the names the file holds.
pub fn revoke(path: &Path, name: &str) -> Result<String, String> {
    let text = read_private(path)?;
    let tokens = Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let Some(entry) = tokens.get(name) else {
        let known: Vec<String> = tokens
            .entries()
            .iter()
            .map(|e| format!("{:?}", e.name))
            .collect();
        return Err(format!(
            "{}: no token named {name:?}; the file holds {}",
            path.display(),
            if known.is_empty() {
                "no tokens".to_string()
            } else {
                known.join(", ")
            }
        ));
    };
    let edited = remove_entry(&text, name)?;
    // The edit is checked against the file's meaning: the same tokens but
    // this one, the same settings.
    let after = Tokens::parse(&edited).ok();
    let expected: Vec<_> = tokens.entries().iter().filter(|e| e.name != name).collect();
    let same = after.as_ref().is_some_and(|a| {
        a.anonymous_summary == tokens.anonymous_summary
            && a.entries().iter().eq(expected.iter().copied())
    });
    if !same {
        return Err(format!(
            "{}: cannot remove {name:?} safely by editing the text; delete its [[token]] \
             table by hand",
            path.display()
        ));
    }
    write_atomically(path, &edited)
        .map_err(|e| format!("{}: writing the file: {e}", path.display()))?;
    Ok(entry.role.to_string())
}

/// `text` without the `[[token]]` table named `name`: its header and keys,
/// the blank lines after it, and comments jatah itself wrote for it (the
/// line above the header an older `jatah token new` printed, and that
/// token in plain text). Other comments and entries stay as they are.
pub fn remove_entry(text: &str, name: &str) -> Result<String, String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let blank = |l: &str| l.trim().is_empty();
    let comment = |l: &str| l.trim_start().starts_with('#');
    let headers: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with('['))
        .collect();
    let mut found = None;
    for (k, &start) in headers.iter().enumerate() {
        let end = headers.get(k + 1).copied().unwrap_or(lines.len());
        let table: toml::Table = match toml::from_str(&lines[start..end].concat()) {
            Ok(t) => t,
            Err(_) => continue,
        };
        let named = table
            .get("token")
            .and_then(|t| t.as_array())
            .and_then(|a| a.first())
            .and_then(|t| t.get("name"))
            .and_then(|n| n.as_str());
        if named == Some(name) {
            if found.is_some() {
                return Err(format!("more than one token is named {name:?}"));
            }
            found = Some((start, end));
        }
    }
    let Some((start, end)) = found else {
        return Err(format!("no [[token]] table named {name:?}"));
    };
    let hash = Tokens::parse(&lines[start..end].concat())
        .ok()
        .and_then(|t| t.get(name).map(|e| e.hash));
    let mut keep = vec![true; lines.len()];
    // The header and its keys (comments between them included).
    let last_key = (start..end)
        .rev()
        .find(|&i| !blank(lines[i]) && !comment(lines[i]))
        .unwrap_or(start);
    let mut stop = last_key + 1;
    while stop < end && blank(lines[stop]) {
        stop += 1;
    }
    let mut from = start;
    if start > 0 && lines[start - 1].starts_with("# Add to the tokens file") {
        from = start - 1;
    }
    if stop == lines.len() {
        // At the end of the file: no blank lines left trailing.
        while from > 0 && blank(lines[from - 1]) {
            from -= 1;
        }
    }
    keep[from..stop].iter_mut().for_each(|k| *k = false);
    // The token in plain text, where an older `jatah token new >> FILE`
    // left it, and the line that introduced it.
    for i in 0..lines.len() {
        if hash.is_some_and(|h| plaintext_token(lines[i]).is_some_and(|t| hash_token(t) == h)) {
            keep[i] = false;
            if i > 0 && lines[i - 1].starts_with("# Hand this token to ") {
                keep[i - 1] = false;
            }
        }
    }
    Ok(lines
        .iter()
        .zip(keep)
        .filter_map(|(l, k)| k.then_some(*l))
        .collect())
}

/// What a comment line holds if it looks like a token (64 hex digits).
fn plaintext_token(line: &str) -> Option<&str> {
    let t = line.trim_start().strip_prefix('#')?.trim();
    (t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())).then_some(t)
}

/// Comment lines (1-based numbers) that hold one of `tokens` in plain
/// text, with that token's name.
pub fn plaintext_lines(text: &str, tokens: &Tokens) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let hash = hash_token(plaintext_token(l)?);
            let e = tokens.entries().iter().find(|e| e.hash == hash)?;
            Some((i + 1, e.name.clone()))
        })
        .collect()
}

/// Replaces the file at `path` (a symlink's target) with `text`: written
/// to a temporary file (mode 0600, the old file's owner where allowed) in
/// the same directory, synced, renamed over it, the directory synced.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let path = std::fs::canonicalize(path)?;
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{file_name}.jatah-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Ok(old) = std::fs::metadata(&path) {
            // Root editing a file another account owns gives it back.
            let _ = std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()));
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory for one test.
    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("jatah-token-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn append_creates_the_file_mode_0600_with_the_hash_only() {
        let d = dir("append");
        let path = d.join("tokens.toml");
        let token = append(&path, "noc", "admin").unwrap();
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&token), "no plaintext token in {text}");
        assert!(text.contains(&hex::encode(hash_token(&token))));
        let second = append(&path, "operator dinkes", "opd:dinkes").unwrap();
        let t = Tokens::load(&path).unwrap();
        assert_eq!(t.entries().len(), 2);
        assert!(t.authenticate(Some(&format!("Bearer {second}"))).is_ok());
        assert_eq!(mode(&path), 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn append_refuses_a_duplicate_name_a_shared_file_and_a_broken_one() {
        let d = dir("refuse");
        let path = d.join("tokens.toml");
        append(&path, "noc", "admin").unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        let e = append(&path, "noc", "opd:dinkes").unwrap_err();
        assert!(e.contains("\"noc\" is in the file already"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = append(&path, "other", "admin").unwrap_err();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

        let broken = d.join("broken.toml");
        std::fs::write(&broken, "[[token]]\nname = \"x\"\n").unwrap();
        std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = append(&broken, "y", "admin").unwrap_err();
        assert!(e.contains("fix the file"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    fn entry(name: &str, token: &str) -> String {
        format!(
            "[[token]]\nname = \"{name}\"\nrole = \"admin\"\nsha256 = \"{}\"\n",
            hex::encode(hash_token(token))
        )
    }

    #[test]
    fn remove_entry_takes_only_the_named_table_and_keeps_comments() {
        let dinkes = format!(
            "[[token]]\nname = \"dinkes\"  # its operator\nrole = \"opd:dinkes\"\nsha256 = \"{}\"\n",
            hex::encode(hash_token("b"))
        );
        let text = format!(
            "# jatah API tokens\nanonymous_summary = true\n\n# the NOC\n{}\n# a note that stays\n{dinkes}\n{}# the end\n",
            entry("noc", "a"),
            entry("bappeda", "c"),
        );
        let out = remove_entry(&text, "dinkes").unwrap();
        assert_eq!(
            out,
            format!(
                "# jatah API tokens\nanonymous_summary = true\n\n# the NOC\n{}\n# a note that stays\n{}# the end\n",
                entry("noc", "a"),
                entry("bappeda", "c"),
            )
        );
        let t = Tokens::parse(&out).unwrap();
        let names: Vec<&str> = t.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["noc", "bappeda"]);
        assert!(t.anonymous_summary);
        // The last table: no blank lines left trailing.
        let out = remove_entry(&format!("{}\n{}", entry("a", "1"), entry("b", "2")), "b").unwrap();
        assert_eq!(out, entry("a", "1"));
        assert!(remove_entry(&text, "nobody").is_err());
    }

    #[test]
    fn remove_entry_also_takes_that_token_left_in_plain_text_by_older_versions() {
        let token = "ab".repeat(32);
        let other = "cd".repeat(32);
        let text = format!(
            "# Add to the tokens file (e.g. /etc/jatah/tokens.toml):\n{}\n# Hand this token to old (it is not stored anywhere):\n# {token}\n\
             # Add to the tokens file (e.g. /etc/jatah/tokens.toml):\n{}\n# Hand this token to keep (it is not stored anywhere):\n# {other}\n",
            entry("old", &token),
            entry("keep", &other)
        );
        let t = Tokens::parse(&text).unwrap();
        assert_eq!(
            plaintext_lines(&text, &t),
            [(8, "old".to_string()), (16, "keep".to_string())]
        );
        let out = remove_entry(&text, "old").unwrap();
        assert!(!out.contains(&token), "{out}");
        assert!(out.contains(&other) && out.contains("to keep"), "{out}");
        assert!(out.starts_with("# Add to the tokens file"), "{out}");
        assert_eq!(Tokens::parse(&out).unwrap().entries().len(), 1);
    }

    #[test]
    fn revoke_rewrites_the_file_and_refuses_an_unknown_name() {
        let d = dir("revoke");
        let path = d.join("tokens.toml");
        let text = format!("# kept\n{}\n{}", entry("noc", "a"), entry("dinkes", "b"));
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = revoke(&path, "bappeda").unwrap_err();
        assert!(e.contains("no token named \"bappeda\"") && e.contains("\"noc\", \"dinkes\""), "{e}");
        assert_eq!(revoke(&path, "noc").unwrap(), "admin");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("# kept\n{}", entry("dinkes", "b"))
        );
        assert_eq!(mode(&path), 0o600);
        let leftovers = std::fs::read_dir(&d).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
        let (table, _) = list(&path).unwrap();
        assert!(table.contains("dinkes") && !table.contains("noc"), "{table}");
        assert!(!table.contains(&hex::encode(hash_token("b"))), "{table}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
