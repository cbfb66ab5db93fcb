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

use super::inputs::OpdSignals;
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
        r = (r - own_drop_share(tr, dir, window(tr))).max(0.0);
    }
    Some(r)
}

/// The share of what the classifier counted of an OPD in `dir` over the
/// last `n` seconds that its own HTB classes dropped: bytes the classifier
/// counted, less bytes the classes sent, less what their queues grew.
/// HTB counts a dropped GRO packet of up to 44 segments as one drop, and
/// the bulk lane's byte FIFO drops the large ones first, so bytes, not
/// packets, say how many segments TCP lost there.
///
/// Over the window, with the queue's change taken out: a queue that
/// filled before the window and drained in it sent more than it took in,
/// and without its change those seconds hid the drops that filled it
/// (their segments sent again counted as lost in the office's network: an
/// office `local_degraded` at 3.5% while the gateway, adapted below a
/// 300 ms ISP queue, emptied its own).
fn own_drop_share(tr: &Track, dir: usize, n: usize) -> f64 {
    not_passed_on(tr, dir, n, |s| {
        Some(s.unsent_bytes[dir]? - s.queue_growth_bytes[dir].unwrap_or(0))
    })
}

/// The share of what the classifier counted of an OPD in `dir` over the
/// last `n` seconds that its classes did not pass on: `bytes` of each
/// second (None where a dump missed the classes) summed over the window
/// against the bytes counted, a negative sum taken as none. Without byte
/// counts, the share of packets the classes dropped.
fn not_passed_on(
    tr: &Track,
    dir: usize,
    n: usize,
    bytes: impl Fn(&OpdSignals) -> Option<i64>,
) -> f64 {
    match tr.last(n).map(bytes).sum::<Option<i64>>() {
        Some(b) => {
            let b = b.max(0) as u64;
            let counted: u64 = tr.last(n).map(|s| s.bps[dir] / 8).sum();
            b as f64 / counted.max(b).max(1) as f64
        }
        None => {
            let drops: u64 = tr.last(n).map(|s| s.drops[dir]).sum();
            let packets: u64 = tr.last(n).map(|s| s.packets[dir]).sum();
            drops as f64 / packets.max(drops).max(1) as f64
        }
    }
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

/// Payload an OPD's sampled upload connections must have sent over the
/// window for what their far ends acknowledged to say how much arrived.
pub(super) const MIN_SENT_BYTES: u64 = 64 * 1024;
/// Seconds over which the adaptive capacity's share of upload carried is
/// taken: a probe lasts a few seconds, and an ACK comes a round trip (and
/// the ISP's queue) after its segment.
pub(super) const CARRIED_SHARE_S: usize = 2;

/// Payload the OPD's sampled connections sent in `dir` over the last `n`
/// seconds, and how much of it their far ends acknowledged.
fn sent_and_acked(tr: &Track, dir: usize, n: usize) -> (u64, u64) {
    tr.last(n).fold((0, 0), |(sent, acked), s| {
        (sent + s.tcp_payload_bytes[dir], acked + s.tcp_acked_bytes[dir])
    })
}

/// An OPD's rate in `dir` this second (`bps`, as the classifier counted
/// it) as it crossed the uplink. Download is counted after the uplink
/// carried it: all of it. Upload is counted where it enters the gateway:
/// a segment dropped after that (by its own class or by the ISP) is
/// counted and never delivered, and TCP sends it again, so it is counted
/// twice. So upload is what the far ends of the sampled connections
/// acknowledged this second, scaled from their payload to what the
/// classifier counted over the window (headers, and the connections
/// outside the sample): behind a policer the offices' sum of it is flat
/// at the policer's rate, however unevenly TCP offers it. With too little
/// sampled payload for that, this second's rate less the share of WAN-side
/// duplicates (own drops included), which errs either way each second (a
/// needless copy counts, a copy lost again does not).
pub(super) fn delivered_bps(tr: &Track, bps: u64, dir: usize) -> u64 {
    if dir == 0 {
        return bps;
    }
    let n = window(tr);
    let (sent, _) = sent_and_acked(tr, dir, n);
    if sent >= MIN_SENT_BYTES {
        let counted: u64 = tr.last(n).map(|s| s.bps[dir] / 8).sum();
        let acked = tr.seconds.back().map_or(0, |s| s.tcp_acked_bytes[dir]);
        return (acked as f64 * 8.0 * counted as f64 / sent as f64) as u64;
    }
    let share = match counts(tr, SIDE_WAN as usize, dir) {
        Some((segments, lost)) => (1.0 - lost as f64 / segments as f64).clamp(0.0, 1.0),
        None => 1.0,
    };
    (bps as f64 * share) as u64
}

/// Of the upload that left the gateway over the last [`CARRIED_SHARE_S`]
/// seconds, the share the far ends acknowledged, pooled over these OPDs:
/// each OPD's sampled payload times the share of its counted bytes its
/// classes sent (what they dropped never left, what they still queue has
/// not left yet, and an ACK comes a round trip after its segment left,
/// not after it arrived), against what was acknowledged. None with less
/// than [`MIN_SENT_BYTES`] sent in all.
pub(super) fn carried_share<'a>(tracks: impl Iterator<Item = &'a Track>) -> Option<f64> {
    let (left, acked) = tracks.fold((0.0, 0u64), |(left, acked), tr| {
        let n = CARRIED_SHARE_S.min(tr.settled());
        let (s, a) = sent_and_acked(tr, 1, n);
        (left + s as f64 * sent_by_classes(tr, 1, n), acked + a)
    });
    (left >= MIN_SENT_BYTES as f64).then(|| (acked as f64 / left).clamp(0.0, 1.0))
}

/// The share of what the classifier counted of an OPD in `dir` over the
/// last `n` seconds that its classes sent on: what they dropped never
/// left, what they still queue has not left yet.
fn sent_by_classes(tr: &Track, dir: usize, n: usize) -> f64 {
    1.0 - not_passed_on(tr, dir, n, |s| s.unsent_bytes[dir])
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
