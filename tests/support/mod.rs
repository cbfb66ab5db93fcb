//! What the integration tests share: the jatah binary under test, the lock
//! that keeps a binary's lab tests from running side by side, the lab
//! fixtures several tests build, the metric names jatah exports and how
//! the diagnosis tests read verdicts through the API.
//!
//! Each test binary includes this with `mod support;` and uses only part
//! of it, hence `dead_code` is allowed here. The headless browser
//! (webdriver.rs, with its own unit test) is included by the one test that
//! drives browsers, tests/status_page.rs.
#![allow(dead_code)]

pub mod fixtures;
pub mod metrics;
pub mod net;
pub mod verdicts;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The `jatah` binary cargo built for this test run.
pub fn jatah() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_jatah"))
}

/// One per test binary: lab tests build namespaces, start daemons and
/// saturate links, so within a binary they run one at a time.
static ONE_LAB_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds the test binary's lab lock until the guard drops. A test that
/// failed while holding it does not fail the ones after it.
pub fn one_lab_at_a_time() -> MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Background clients (iperf3 and the like), ended by their PIDs when the
/// guard drops, also when a test fails: a client left running in a
/// namespace that is then deleted can spin at 100% CPU.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A directory of the test's own under the system's temporary directory,
/// removed with everything in it when the guard drops, also when the test
/// fails: a test run leaves nothing behind in /tmp.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `jatah-<what>-<pid>-<n>`, unique within this machine's running
    /// test processes; created empty.
    pub fn new(what: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("jatah-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
