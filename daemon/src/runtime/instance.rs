//! One jatah per network namespace: a second `jatah run` on the same
//! gateway fails before it touches anything, and says who holds the lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Held for the daemon's lifetime; the kernel releases it if the process dies.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

/// Takes the lock of the current network namespace under `run_dir`
/// (normally /run/jatah, which `ip netns exec` does not hide).
pub fn acquire(run_dir: &Path) -> Result<InstanceLock, String> {
    let netns = fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| format!("reading /proc/self/ns/net: {e}"))?;
    fs::create_dir_all(run_dir).map_err(|e| format!("creating {}: {e}", run_dir.display()))?;
    let path = run_dir.join(format!("netns-{netns}.lock"));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    if crate::sys::lock_exclusive_nonblocking(&file).is_err() {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(format!(
            "another jatah is already running on this gateway (network namespace {netns}{}); \
             it keeps running; stop it first (lock {})",
            if holder.is_empty() {
                String::new()
            } else {
                format!(", pid {holder}")
            },
            path.display()
        ));
    }
    file.set_len(0).ok();
    file.rewind().ok();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(InstanceLock { _file: file })
}
