//! Man pages and shell completions, generated from the command line's own
//! clap definition (main.rs), so they can never describe options the binary
//! does not have. `jatah generate-docs DIR` (hidden) writes them;
//! scripts/package.sh puts them into the Debian package.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Command;
use clap_complete::Shell;

/// Writes `DIR/man/jatah.1` and one page per (nested) subcommand
/// (`jatah-check.1`, `jatah-token-new.1`, ...), and `DIR/completions/`
/// for bash (`jatah.bash`), zsh (`_jatah`) and fish (`jatah.fish`).
/// Hidden subcommands (this one) appear in neither. Returns the files
/// written, sorted.
pub fn generate(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>> {
    let cmd = without_hidden_subcommands(cmd);
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    let mut cmd = cmd;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "jatah", &completions).with_context(|| {
            format!(
                "writing {shell} completions into {}",
                completions.display()
            )
        })?;
    }
    let mut written = Vec::new();
    for d in [&man, &completions] {
        for entry in fs::read_dir(d)? {
            written.push(entry?.path());
        }
    }
    written.sort();
    Ok(written)
}

/// The root command with its visible subcommands only: the man pages skip
/// hidden ones, the completion generators do not, and clap cannot remove a
/// subcommand, so the root is made again around the visible ones.
fn without_hidden_subcommands(cmd: Command) -> Command {
    let mut root = Command::new("jatah")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = cmd.get_about() {
        root = root.about(about.clone());
    }
    if let Some(about) = cmd.get_long_about() {
        root = root.long_about(about.clone());
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_cover_the_visible_subcommands_only() {
        let cmd = Command::new("jatah")
            .about("the daemon")
            .subcommand(
                Command::new("token")
                    .about("tokens")
                    .subcommand(Command::new("new").about("a new token")),
            )
            .subcommand(Command::new("secret").hide(true));
        let dir = std::env::temp_dir().join(format!("jatah-docs-{}", std::process::id()));
        let files = generate(cmd, &dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "_jatah",
                "jatah.bash",
                "jatah.fish",
                "jatah-token-new.1",
                "jatah-token.1",
                "jatah.1",
            ]
        );
        for f in &files {
            let text = fs::read_to_string(f).unwrap();
            assert!(!text.contains("secret"), "{} names a hidden subcommand", f.display());
        }
        let page = fs::read_to_string(dir.join("man/jatah.1")).unwrap();
        assert!(page.contains("the daemon") && page.contains(env!("CARGO_PKG_VERSION")));
        fs::remove_dir_all(&dir).unwrap();
    }
}
