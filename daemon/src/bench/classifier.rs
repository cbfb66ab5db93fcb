//! The classifier's cost per packet, measured with BPF_PROG_TEST_RUN
//! against an empty classifier (`jatah_empty`, which only returns) loaded
//! from the same object: the difference is what jatah's lookup, counting
//! and class selection cost, without the noise of real traffic.

use anyhow::{Result, ensure};
use jatah_common::{DEFAULT_CLASS_MINOR, MAX_OPDS, htb_priority, program_names};

use super::median;
use crate::datapath::{Datapath, OpdPrefixes, Prefix, SkbContext};

/// Runs per measurement: long enough that the per-call overhead of
/// BPF_PROG_TEST_RUN is spread thin.
pub const REPEAT: u32 = 1_000_000;

/// `n` prefixes, /24s under 10.0.0.0/8, one per OPD while there are slots
/// (more prefixes than slots are spread over the OPDs).
pub fn prefixes(n: usize) -> Vec<OpdPrefixes> {
    let per_opd = n.div_ceil(MAX_OPDS as usize - 1).max(1);
    let mut opds: Vec<OpdPrefixes> = Vec::new();
    for i in 0..n {
        let p = Prefix::V4([10, (i >> 8) as u8, i as u8, 0], 24);
        if i % per_opd == 0 {
            opds.push(OpdPrefixes {
                id: format!("o{}", opds.len()),
                prefixes: Vec::new(),
            });
        }
        if let Some(last) = opds.last_mut() {
            last.prefixes.push(p);
        }
    }
    opds
}

/// An address inside the last of [`prefixes`]`(n)`: the deepest trie path.
pub fn last_address(n: usize) -> [u8; 4] {
    let last = n.saturating_sub(1);
    [10, (last >> 8) as u8, last as u8, 7]
}

/// An untagged IPv4 TCP frame from 198.51.100.1 to `dst`, 20 bytes of
/// zero payload.
pub fn frame(dst: [u8; 4]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 198, 51, 100, 1]);
    f.extend_from_slice(&dst);
    let mut tcp = [0u8; 20];
    tcp[12] = 5 << 4;
    f.extend_from_slice(&tcp);
    f.extend_from_slice(&[0u8; 20]);
    f
}

/// A TCP frame to (or, `from_opd`, from) 10.0.0.7 with the given flags and
/// `payload` zero bytes after the TCP header, between the OPD host's port
/// `opd_port` and the Internet host's port 443.
pub fn tcp_frame(from_opd: bool, flags: u8, payload: usize, opd_port: u16) -> Vec<u8> {
    let mut f = frame([10, 0, 0, 7]);
    let (sport, dport) = if from_opd {
        let (src, dst) = (f[26..30].to_vec(), f[30..34].to_vec());
        f[26..30].copy_from_slice(&dst);
        f[30..34].copy_from_slice(&src);
        (opd_port, 443)
    } else {
        (443, opd_port)
    };
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[47] = flags;
    f.truncate(54);
    f.extend(std::iter::repeat_n(0u8, payload));
    f
}

/// Nanoseconds per run of `prog` on `frame`, `repeat` runs.
pub fn ns_per_packet(dp: &Datapath, prog: &str, frame: &[u8], repeat: u32) -> Result<f64> {
    let (_, _, d) = dp.test_run(prog, frame, &SkbContext::forwarded(), repeat)?;
    Ok(d.as_nanos() as f64)
}

/// The classifier's cost with `prefixes` OPD prefixes in the tries.
#[derive(Debug, Clone, Copy)]
pub struct ClassifierCost {
    pub prefixes: usize,
    /// Median ns per packet of the empty classifier.
    pub empty_ns: f64,
    /// Median ns per packet of `jatah_dl` (download, LAN egress).
    pub jatah_ns: f64,
    /// Median of the per-round ratios jatah/empty.
    pub ratio: f64,
}

/// Loads the programs on a private bpffs (under /run/jatah-test, removed
/// afterwards) and measures [`ClassifierCost`] at each size, `rounds`
/// rounds of `repeat` runs each, the empty classifier and jatah
/// alternating inside every round. The frame's destination lies in the
/// last prefix inserted; every run hits the per-CPU cache after the first,
/// as a flow's packets do.
pub fn costs(sizes: &[usize], rounds: usize, repeat: u32) -> Result<Vec<ClassifierCost>> {
    let bpffs = crate::lab::netns::BpffsMount::new("jt-bench")?;
    let mut dp = Datapath::load_pinned(bpffs.path())?;
    sizes
        .iter()
        .map(|&n| cost(&mut dp, n, rounds, repeat))
        .collect()
}

/// [`ClassifierCost`] at one size on a loaded data path (its OPDs are
/// replaced by [`prefixes`]`(n)`).
pub fn cost(dp: &mut Datapath, n: usize, rounds: usize, repeat: u32) -> Result<ClassifierCost> {
    dp.sync_opds(&prefixes(n))?;
    let f = frame(last_address(n));
    let (_, out, _) = dp.test_run(program_names::DOWNLOAD, &f, &SkbContext::forwarded(), 1)?;
    ensure!(
        out.priority != htb_priority(DEFAULT_CLASS_MINOR),
        "the frame was not classified into an OPD's class"
    );
    let (mut empty, mut jatah, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let e = ns_per_packet(dp, "jatah_empty", &f, repeat)?;
        let j = ns_per_packet(dp, program_names::DOWNLOAD, &f, repeat)?;
        empty.push(e);
        jatah.push(j);
        ratios.push(j / e);
    }
    Ok(ClassifierCost {
        prefixes: n,
        empty_ns: median(&empty),
        jatah_ns: median(&jatah),
        ratio: median(&ratios),
    })
}
