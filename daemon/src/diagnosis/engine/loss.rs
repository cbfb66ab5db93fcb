//! Loss seen as TCP sees it: the share of the sampled connections' data
//! segments sent again, per OPD, side and direction, over the last 10 s.
//!
//! The classifier runs before the OPD's own HTB class, so a segment that
//! class dropped comes back as a duplicate: on the LAN side for download,
//! on the WAN side for upload. On that side the share of its packets the
//! class dropped is taken off the ratio: an office at its ceiling drops by
//! design, and what is left is loss on the wire.

use std::collections::BTreeMap;

use jatah_common::{SIDE_LAN, SIDE_WAN};
use serde_json::{Map, Value, json};

use super::track::Track;

/// Judged segments an OPD needs in 10 s, in one direction, for its ratio
/// to count.
pub(super) const MIN_SEGMENTS: u64 = 200;
/// WAN-side share of segments sent again from which a path beyond the
/// gateway counts as lossy.
pub(super) const WAN_LOSS: f64 = 0.02;
/// LAN-side share from which an OPD's own network counts as lossy.
pub(super) const LAN_LOSS: f64 = 0.03;
/// Seconds of signals the ratios are taken over.
const WINDOW: usize = 10;

/// The side whose duplicates include the OPD's own HTB drops in `dir`.
fn own_drop_side(dir: usize) -> usize {
    if dir == 0 {
        SIDE_LAN as usize
    } else {
        SIDE_WAN as usize
    }
}

/// The seconds the ratios are taken over: the window, less any still
/// within an outage's repair (segments an office's connections lost while
/// its cable was out come again once it is back, as late as their
/// backed-off timers).
fn window(tr: &Track) -> usize {
    WINDOW.min(tr.settled())
}

/// Judged segments in `dir` and those sent again after a loss on `side`,
/// over the window; None with too few segments to judge.
fn counts(tr: &Track, side: usize, dir: usize) -> Option<(u64, u64)> {
    let n = window(tr);
    let segments: u64 = tr.last(n).map(|s| s.tcp_segments[dir]).sum();
    let lost: u64 = tr.last(n).map(|s| s.tcp_retransmitted[side][dir]).sum();
    (segments >= MIN_SEGMENTS).then_some((segments, lost))
}

/// The OPD's loss ratio on `side` in `dir`, when it can be judged.
pub(super) fn ratio(tr: &Track, side: usize, dir: usize) -> Option<f64> {
    let (segments, lost) = counts(tr, side, dir)?;
    let mut r = lost as f64 / segments as f64;
    if side == own_drop_side(dir) {
        // Less the share its own class dropped: bytes the classifier
        // counted, less bytes the class sent, less what its queues grew.
        // HTB counts a dropped GRO packet of up to 44 segments as one
        // drop, and the bulk lane's byte FIFO drops the large ones first,
        // so bytes, not packets, say how many segments TCP lost there.
        // Without byte counts, the share of packets dropped.
        let n = window(tr);
        let dropped: Option<i64> = tr
            .last(n)
            .map(|s| Some(s.unsent_bytes[dir]? - s.queue_growth_bytes[dir].unwrap_or(0)))
            .sum();
        let share = match dropped {
            Some(dropped) => {
                // Over the window, with the queue's change taken out: a
                // queue that filled before the window and drained in it
                // sent more than it took in, and without its change those
                // seconds hid the drops that filled it (their segments
                // sent again counted as lost in the office's network: an
                // office `local_degraded` at 3.5% while the gateway,
                // adapted below a 300 ms ISP queue, emptied its own).
                let dropped = dropped.max(0) as u64;
                let offered: u64 = tr.last(n).map(|s| s.bps[dir] / 8).sum();
                dropped as f64 / offered.max(dropped).max(1) as f64
            }
            None => {
                let drops: u64 = tr.last(n).map(|s| s.drops[dir]).sum();
                let packets: u64 = tr.last(n).map(|s| s.packets[dir]).sum();
                drops as f64 / packets.max(drops).max(1) as f64
            }
        };
        r = (r - share).max(0.0);
    }
    Some(r)
}

/// The OPD's worst ratio on `side` over both directions.
pub(super) fn worst(tr: &Track, side: usize) -> Option<(f64, usize)> {
    (0..2)
        .filter_map(|d| ratio(tr, side, d).map(|r| (r, d)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// Loss beyond the gateway across the OPDs: how many can be judged and how
/// many lose at least [`WAN_LOSS`].
pub(super) struct Wan {
    pub judged: usize,
    pub lossy: usize,
    /// Pooled over the judged OPDs: segments sent again / judged, in the
    /// direction that loses more.
    pub pooled: Option<f64>,
    /// Per direction: OPDs judged in it, and those losing at least
    /// [`WAN_LOSS`] in it.
    pub toward: [(usize, usize); 2],
}

impl Wan {
    /// Half or more of at least two OPDs lose beyond the gateway: one OPD
    /// talking to one lossy server is not the uplink.
    pub fn up(&self) -> bool {
        self.judged >= 2 && self.lossy * 2 >= self.judged
    }

    /// The same test in one direction: what the adaptive capacity of that
    /// direction reads (an upload limit must not stop download's probes).
    pub fn up_toward(&self, dir: usize) -> bool {
        let (judged, lossy) = self.toward[dir];
        judged >= 2 && lossy * 2 >= judged
    }

    pub fn evidence(&self, ev: &mut Map<String, Value>) {
        if self.judged == 0 {
            return;
        }
        ev.insert("opds_with_tcp_loss_data".into(), json!(self.judged));
        ev.insert("opds_with_wan_tcp_loss".into(), json!(self.lossy));
        if let Some(p) = self.pooled {
            ev.insert("wan_tcp_loss_ratio".into(), json!(round4(p)));
        }
    }
}

pub(super) fn wan(opds: &BTreeMap<String, Track>) -> Wan {
    let side = SIDE_WAN as usize;
    let mut w = Wan {
        judged: 0,
        lossy: 0,
        pooled: None,
        toward: [(0, 0); 2],
    };
    // Pooled per direction: the upload of a download-heavy office must
    // not dilute its download's loss.
    let mut lost = [0u64; 2];
    let mut segs = [0u64; 2];
    for tr in opds.values() {
        let Some((r, _)) = worst(tr, side) else {
            continue;
        };
        w.judged += 1;
        w.lossy += usize::from(r >= WAN_LOSS);
        for dir in 0..2 {
            if let Some((n, l)) = counts(tr, side, dir) {
                segs[dir] += n;
                lost[dir] += l;
            }
            if let Some(r) = ratio(tr, side, dir) {
                w.toward[dir].0 += 1;
                w.toward[dir].1 += usize::from(r >= WAN_LOSS);
            }
        }
    }
    w.pooled = (0..2)
        .filter(|&d| segs[d] > 0)
        .map(|d| lost[d] as f64 / segs[d] as f64)
        .max_by(f64::total_cmp);
    w
}

/// The share of an OPD's counted bytes in `dir` that crossed the uplink.
/// Upload is counted where it enters the gateway: a segment dropped after
/// that (by its own class or by the ISP) is counted and never delivered,
/// and TCP sends it again, so it is counted twice. The WAN-side
/// duplicates of the sampled connections, own drops included, say how
/// much. Download is counted after the uplink carried it: all of it.
pub(super) fn delivered_share(tr: &Track, dir: usize) -> f64 {
    match counts(tr, SIDE_WAN as usize, dir) {
        Some((segments, lost)) if dir == 1 => {
            (1.0 - lost as f64 / segments as f64).clamp(0.0, 1.0)
        }
        _ => 1.0,
    }
}

/// The OPD's own network loses: its LAN-side ratio at or above
/// [`LAN_LOSS`] in a direction, with the figure for the evidence. Not in
/// a direction whose WAN side loses [`WAN_LOSS`] or more: with many gaps
/// open at once the classifier follows one per connection, so the fills
/// of the others read as duplicates, and senders under heavy loss send
/// again what was not lost. Loss beyond the gateway is judged first.
pub(super) fn lan_lossy(tr: &Track) -> Option<(f64, usize)> {
    (0..2)
        .filter(|&d| ratio(tr, SIDE_WAN as usize, d).is_none_or(|w| w < WAN_LOSS))
        .filter_map(|d| ratio(tr, SIDE_LAN as usize, d).map(|r| (r, d)))
        .filter(|(r, _)| *r >= LAN_LOSS)
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

pub(super) fn round4(r: f64) -> f64 {
    (r * 1e4).round() / 1e4
}
