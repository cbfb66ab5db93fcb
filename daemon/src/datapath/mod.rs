//! The kernel data path: loads jatah's TC programs, keeps their maps in step
//! with the policy (OPD slots, prefix tries), attaches the programs with TCX
//! and pins everything under the bpffs so the next start adopts it.
//!
//! Pin layout under `<bpffs>/jatah/v<LAYOUT_VERSION>/`:
//! - one file per map, named as in [`jatah_common::map_names`];
//! - `links/<program>@<interface>`: the TCX links (kernel >= 6.6).

#[cfg(any(test, feature = "testkit"))]
mod inspect;
mod load;
mod maps;
#[cfg(feature = "testkit")]
mod test_run;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use jatah_common::{COUNTER_SLOTS, LAYOUT_VERSION, MAX_OPDS};

pub use load::Datapath;
pub use maps::{CounterReader, PinnedCounters, SlotTable};
#[cfg(feature = "testkit")]
pub use test_run::SkbContext;

/// The compiled eBPF object (built by build.rs from ebpf/).
pub static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/jatah"));

/// bpffs superblock magic (`statfs.f_type`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Errors of the data path, each naming what jatah was doing.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "{0} is not a bpffs mount ({1}); mount one with `mount -t bpf bpf {0}` \
         (or pass --bpffs DIR naming a bpffs mount)"
    )]
    NotBpffs(PathBuf, String),
    #[error("loading jatah's eBPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{what}: {source}")]
    Map {
        what: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("all {MAX_OPDS} OPD slots are in use")]
    SlotsExhausted,
    #[error("{0}")]
    Other(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Io { what, source }
}

fn map_err(what: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Map { what, source }
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Program { what, source }
}

/// Directory under a bpffs mount where this layout version pins its objects.
pub fn pin_dir(bpffs: &Path) -> PathBuf {
    bpffs.join("jatah").join(format!("v{LAYOUT_VERSION}"))
}

/// Fails with a clear message unless `dir` is a bpffs mount.
pub fn ensure_bpffs(dir: &Path) -> Result<(), DatapathError> {
    match crate::sys::filesystem_magic(dir) {
        Ok(BPF_FS_MAGIC) => Ok(()),
        found => Err(DatapathError::NotBpffs(dir.to_path_buf(), describe(found))),
    }
}

/// Whether `dir` is on a bpffs, and if not, what it is instead, e.g. "it
/// is on tmpfs" or "it does not exist", for a message that refuses it.
pub fn bpffs_or_what(dir: &Path) -> Result<(), String> {
    match crate::sys::filesystem_magic(dir) {
        Ok(BPF_FS_MAGIC) => Ok(()),
        found => Err(describe(found)),
    }
}

/// What a path that is not a bpffs is: its file system by name where
/// jatah knows it, else its magic number.
fn describe(found: io::Result<i64>) -> String {
    let magic = match found {
        Ok(magic) => magic,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return "it does not exist".into(),
        Err(e) => return format!("it cannot be examined: {e}"),
    };
    let name = match magic {
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0xef53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683e => "btrfs",
        0x2fc1_2fc1 => "zfs",
        0x794c_7630 => "overlayfs",
        0x6969 => "nfs",
        0x0102_1997 => "9p",
        0x6265_6572 => "sysfs",
        0x9fa0 => "proc",
        0x6367_7270 => "cgroup2",
        0x0027_e0eb => "cgroup",
        0x6e73_6673 => "nsfs",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x1cd1 => "devpts",
        _ => return format!("it is on a file system with magic number {magic:#x}, not bpffs"),
    };
    format!("it is on {name}")
}

/// One prefix of an OPD, as the tries hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prefix {
    V4([u8; 4], u32),
    V6([u8; 16], u32),
}

impl From<&IpNet> for Prefix {
    fn from(net: &IpNet) -> Self {
        match net.trunc() {
            IpNet::V4(n) => Prefix::V4(n.addr().octets(), n.prefix_len() as u32),
            IpNet::V6(n) => Prefix::V6(n.addr().octets(), n.prefix_len() as u32),
        }
    }
}

/// What the data path is told about one OPD: its id and its prefixes.
#[derive(Debug, Clone)]
pub struct OpdPrefixes {
    pub id: String,
    pub prefixes: Vec<Prefix>,
}

/// Where the programs go.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// LAN-facing shaping device (download HTB; `jatah_dl` on egress,
    /// `jatah_ul_mark` on ingress). For VLAN subinterfaces, their trunk.
    pub lan: String,
    /// WAN interface (upload HTB; `jatah_ul` on egress).
    pub wan: String,
    /// The WAN has no link layer: `jatah_ul_l3` instead of `jatah_ul`.
    pub wan_l3: bool,
}

impl Attachment {
    /// Each classifier jatah puts on these interfaces: (program, interface,
    /// hook).
    pub fn programs(&self) -> [(&'static str, &str, aya::programs::TcAttachType); 3] {
        use aya::programs::TcAttachType;
        use jatah_common::program_names;
        let upload = if self.wan_l3 {
            program_names::UPLOAD_L3
        } else {
            program_names::UPLOAD
        };
        [
            (program_names::DOWNLOAD, &self.lan, TcAttachType::Egress),
            (program_names::UPLOAD_MARK, &self.lan, TcAttachType::Ingress),
            (upload, &self.wan, TcAttachType::Egress),
        ]
    }
}

/// Removes everything jatah pinned under `bpffs` (links first, which
/// detaches the programs). Returns whether anything was there.
pub fn unpin_all(bpffs: &Path) -> Result<bool, DatapathError> {
    let dir = bpffs.join("jatah");
    if !dir.exists() {
        return Ok(false);
    }
    fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
    Ok(true)
}

/// Turns an OPD's subnets into trie prefixes.
pub fn prefixes_of(subnets: &[IpNet]) -> Vec<Prefix> {
    subnets.iter().map(Prefix::from).collect()
}

const _: () = assert!(COUNTER_SLOTS == MAX_OPDS + 1);

/// An address as the classifiers key it: IPv6, or IPv4 mapped as
/// `::ffff:a.b.c.d`.
pub(crate) fn addr_key(ip: std::net::IpAddr) -> jatah_common::AddrKey {
    let v6 = match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    jatah_common::AddrKey { addr: v6.octets() }
}
