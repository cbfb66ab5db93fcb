//! Network namespaces for the lab and the tests: created with a unique,
//! prefixed name and always deleted again (Drop), even when a test fails.
//!
//! Everything here drives `ip` from iproute2; it is lab plumbing, not the
//! data path (the daemon itself talks rtnetlink).

use std::ffi::OsStr;
use std::io;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted, with every process still in it
/// killed, when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

/// A short token unique to this process and call, for names of namespaces,
/// interfaces and pins (interface names hold at most 15 characters).
pub fn unique_token() -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}", std::process::id() & 0xfffff, n)
}

impl NetNs {
    /// Creates `<prefix>-<unique>` with its loopback up.
    pub fn create(prefix: &str) -> io::Result<NetNs> {
        let name = format!("{prefix}-{}", unique_token());
        run_checked(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS`, failing with ip's own message.
    pub fn ip<I, S>(&self, args: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_checked(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs inside the namespace (`ip netns exec`).
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs a program inside the namespace and fails unless it exits 0.
    pub fn run<I, S>(&self, program: &str, args: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_checked(self.command(program).args(args))
    }

    /// Starts a program inside the namespace with its output discarded.
    pub fn spawn_quiet<I, S>(&self, program: &str, args: I) -> io::Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    /// Moves the calling thread into the namespace (sockets it opens after
    /// this live there). Other threads are unaffected.
    #[cfg(any(test, feature = "testkit"))]
    pub fn enter_current_thread(&self) -> io::Result<()> {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name))?;
        crate::sys::enter_network_namespace(&f)?;
        Ok(())
    }

    /// Index of an interface inside the namespace.
    #[cfg(any(test, feature = "testkit"))]
    pub fn ifindex(&self, ifname: &str) -> io::Result<u32> {
        let out = self.run("cat", [format!("/sys/class/net/{ifname}/ifindex")])?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|e| io::Error::other(format!("ifindex of {ifname}: {e}")))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = crate::sys::send_signal(pid, libc::SIGKILL);
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A private bpffs mounted under /run/jatah-test (outside /sys, which
/// `ip netns exec` remounts), unmounted and removed on Drop.
#[derive(Debug)]
pub struct BpffsMount {
    path: std::path::PathBuf,
}

impl BpffsMount {
    pub fn new(prefix: &str) -> io::Result<BpffsMount> {
        let path = std::path::PathBuf::from("/run/jatah-test")
            .join(format!("{prefix}-{}", unique_token()));
        std::fs::create_dir_all(&path)?;
        run_checked(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&path))?;
        Ok(BpffsMount { path })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

#[cfg(any(test, feature = "testkit"))]
/// Panics with a clear message unless running as root: the tests that build
/// namespaces are meant to run as root (CI does), never to pass vacuously.
pub fn require_root() {
    let euid = crate::sys::effective_uid();
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, BPF, qdiscs)"
    );
}

/// For commands (not tests): an error explaining that root is needed.
pub fn require_root_or_explain() -> io::Result<()> {
    if crate::sys::effective_uid() != 0 {
        return Err(io::Error::other(
            "this needs root: it creates network namespaces, loads eBPF programs and changes qdiscs",
        ));
    }
    Ok(())
}

/// Runs a command and turns a non-zero exit into an error carrying its stderr.
pub fn run_checked(cmd: &mut Command) -> io::Result<Output> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_removed_on_drop() {
        require_root();
        let name;
        {
            let ns = NetNs::create("jt-nstest").unwrap();
            name = ns.name().to_string();
            assert!(std::path::Path::new(&format!("/run/netns/{name}")).exists());
            ns.ip(["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
                .unwrap();
            assert!(ns.ifindex("v0").unwrap() > 1);
        }
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }
}
