//! What tests and benchmarks read of a loaded data path: its programs, a
//! slot's counters and round trips, its statistics. Not in the shipped
//! build: the daemon reads counters through `CounterReader` alone.

use std::path::Path;

use aya::programs::SchedClassifier;
use jatah_common::{Counters, RttHistogram, SLOT_UNCLASSIFIED, STAT_COUNT, TcpLoss};

use super::{DatapathError, prog_err};
use super::load::Datapath;

impl Datapath {
    /// A loaded classifier by name (tests run them with BPF_PROG_TEST_RUN).
    pub fn classifier(&self, name: &str) -> Result<&SchedClassifier, DatapathError> {
        self.ebpf
            .program(name)
            .ok_or_else(|| DatapathError::Other(format!("program {name} missing from object")))?
            .try_into()
            .map_err(prog_err(format!("program {name}")))
    }

    /// Handshake round trips of a slot on a side.
    pub fn rtt(&self, slot: u32, side: u32) -> Result<RttHistogram, DatapathError> {
        self.reader.rtt(slot, side)
    }

    /// Retransmissions in the sampled TCP connections of a slot, summed
    /// over CPUs.
    pub fn tcp_loss(&self, slot: u32) -> Result<TcpLoss, DatapathError> {
        self.reader.tcp_loss(slot)
    }

    /// Counters of one slot, summed over CPUs.
    pub fn counters(&self, slot: u32) -> Result<Counters, DatapathError> {
        self.reader.read(slot)
    }

    /// Counters of traffic that matched no OPD.
    pub fn unclassified(&self) -> Result<Counters, DatapathError> {
        self.reader.read(SLOT_UNCLASSIFIED)
    }

    /// Data path statistics ([`jatah_common::Stat`] order), summed over CPUs.
    pub fn stats(&self) -> Result<[u64; STAT_COUNT as usize], DatapathError> {
        self.reader.stats()
    }

    /// The bpffs this data path pins under.
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }
}
