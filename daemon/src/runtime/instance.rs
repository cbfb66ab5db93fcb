//! One jatah per network namespace: a second `jatah run` on the same
//! gateway fails before it touches anything, and says who holds the lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Held for the daemon's lifetime; the kernel releases it if the process dies.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// Why the lock of this network namespace could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// Another process holds it: a jatah runs (or waits for its
    /// interfaces) in this network namespace.
    Held {
        /// The holder's pid as it wrote it, when it did.
        pid: Option<u32>,
        /// The network namespace's inode number.
        netns: u64,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock could not even be looked at (no /proc, an unwritable
    /// run directory).
    Failed(String),
}

/// Takes the lock of the current network namespace under `run_dir`
/// (normally /run/jatah, which `ip netns exec` does not hide).
pub fn acquire(run_dir: &Path) -> Result<InstanceLock, String> {
    match take(run_dir) {
        Ok(lock) => Ok(lock),
        Err(Busy::Failed(e)) => Err(e),
        Err(Busy::Held { pid, netns, lock }) => Err(format!(
            "another jatah is already running on this gateway (network namespace {netns}{}); \
             it keeps running; stop it first (lock {})",
            pid.map(|p| format!(", pid {p}")).unwrap_or_default(),
            lock.display()
        )),
    }
}

/// Takes the lock, or says who holds it without disturbing them: a held
/// lock is only read (its pid), never written. `jatah run` holds it for
/// its lifetime; `jatah down` holds it while it removes things, so no
/// jatah starts meanwhile, and refuses to start beside one.
pub fn take(run_dir: &Path) -> Result<InstanceLock, Busy> {
    let netns = fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| Busy::Failed(format!("reading /proc/self/ns/net: {e}")))?;
    fs::create_dir_all(run_dir)
        .map_err(|e| Busy::Failed(format!("creating {}: {e}", run_dir.display())))?;
    let path = run_dir.join(format!("netns-{netns}.lock"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Busy::Failed(format!("opening {}: {e}", path.display())))?;
    if crate::sys::lock_exclusive_nonblocking(&file).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(Busy::Held {
            pid: holder.trim().parse().ok(),
            netns,
            lock: path,
        });
    }
    // Ours now: whatever a dead holder wrote gives way to our pid.
    file.set_len(0).ok();
    file.rewind().ok();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(InstanceLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "jatah-instance-{name}-{}",
            crate::lab::netns::unique_token()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_held_lock_names_its_holder_and_stays_held() {
        let dir = run_dir("held");
        let held = acquire(&dir).unwrap();
        let pid = std::process::id();
        match take(&dir) {
            Err(Busy::Held { pid: Some(p), .. }) => assert_eq!(p, pid),
            other => panic!("expected the lock held by {pid}: {other:?}"),
        }
        // Asking twice changed nothing: still held, still naming us.
        assert!(matches!(take(&dir), Err(Busy::Held { pid: Some(p), .. }) if p == pid));
        let message = acquire(&dir).unwrap_err();
        assert!(message.contains(&format!("pid {pid}")), "{message}");
        drop(held);
        let again = take(&dir).expect("free once the holder is gone");
        drop(again);
        fs::remove_dir_all(&dir).unwrap();
    }
}
