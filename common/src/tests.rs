use super::*;

#[test]
fn lane_minors_are_distinct_from_every_other_class() {
    for s in [0, 1, MAX_OPDS / 2, MAX_OPDS - 1] {
        let (o, b, i) = (
            opd_class_minor(s),
            bulk_lane_minor(s),
            interactive_lane_minor(s),
        );
        assert!(o < GROUP_MINOR_BASE && o > DEFAULT_CLASS_MINOR);
        assert!(b > MAX_LEAF_MINOR && b < INTERACTIVE_LANE_MINOR_BASE);
        assert!((INTERACTIVE_LANE_MINOR_BASE..0xffe0).contains(&i));
        assert_eq!(b - BULK_LANE_MINOR_BASE, i - INTERACTIVE_LANE_MINOR_BASE);
        assert_eq!((lane_owner(b), lane_owner(i), lane_owner(o)), (o, o, o));
    }
}

const MSS: u32 = 1000;

/// A state that has forwarded everything below `next`.
fn at(next: u32) -> SeqState {
    seq_start(next.wrapping_sub(1), 0)
}

fn judge(s: &mut SeqState, seq: u32) -> Segment {
    judge_segment(s, seq, MSS, MSS, NO_IP_ID)
}

#[test]
fn segments_in_order_move_next_on() {
    let mut s = at(5_000);
    for k in 0..10 {
        assert_eq!(judge(&mut s, 5_000 + k * MSS), Segment::InOrder);
    }
    assert_eq!(s.next, 15_000);
    assert_eq!(s.hole_start, s.hole_end, "no hole");
}

#[test]
fn a_hole_filled_after_three_segments_is_a_loss_before_the_gateway() {
    let mut s = at(0);
    assert_eq!(judge(&mut s, 0), Segment::InOrder);
    // Segment 1000..2000 never arrives.
    assert_eq!(judge(&mut s, 2_000), Segment::Ahead);
    assert_eq!((s.hole_start, s.hole_end), (1_000, 2_000));
    for k in 3..6 {
        assert_eq!(judge(&mut s, k * MSS), Segment::InOrder);
    }
    assert_eq!(judge(&mut s, 1_000), Segment::Filled);
    assert_eq!(s.hole_start, s.hole_end, "the hole closed");
    // Sent once more: now a duplicate.
    assert_eq!(judge(&mut s, 1_000), Segment::Duplicate);
}

#[test]
fn a_segment_arriving_one_or_two_late_is_reordering() {
    let mut s = at(0);
    assert_eq!(judge(&mut s, 1_000), Segment::Ahead);
    assert_eq!(judge(&mut s, 2_000), Segment::InOrder);
    assert_eq!(judge(&mut s, 0), Segment::Reordered);
    assert_eq!(s.hole_start, s.hole_end);
}

#[test]
fn bytes_sent_again_that_the_gateway_forwarded_are_duplicates() {
    let mut s = at(0);
    for k in 0..8 {
        judge(&mut s, k * MSS);
    }
    assert_eq!(judge(&mut s, 3_000), Segment::Duplicate);
    // A retransmission that also carries new bytes moves next on.
    assert_eq!(
        judge_segment(&mut s, 7_000, 2 * MSS, MSS, NO_IP_ID),
        Segment::Duplicate
    );
    assert_eq!(s.next, 9_000);
}

#[test]
fn holes_opened_while_one_is_recorded_merge_and_each_fill_counts() {
    let mut s = at(0);
    judge(&mut s, 1_000); // hole 0..1000
    for k in 2..5 {
        judge(&mut s, k * MSS);
    }
    judge(&mut s, 6_000); // hole 5000..6000, merged: 0..6000
    assert_eq!((s.hole_start, s.hole_end), (0, 6_000));
    for k in 7..12 {
        judge(&mut s, k * MSS);
    }
    assert_eq!(judge(&mut s, 0), Segment::Filled);
    assert_eq!(judge(&mut s, 5_000), Segment::Filled);
    assert_eq!(s.hole_start, 1_000, "shrinks only from its start");
}

#[test]
fn sequence_numbers_wrap() {
    let isn = u32::MAX - 1_500;
    let mut s = seq_start(isn, 0);
    let first = isn.wrapping_add(1);
    assert_eq!(judge(&mut s, first), Segment::InOrder);
    // The next segment straddles 2^32; the one after it is lost.
    assert_eq!(judge(&mut s, first.wrapping_add(MSS)), Segment::InOrder);
    let lost = first.wrapping_add(2 * MSS);
    assert!(lost < first, "wrapped");
    assert_eq!(judge(&mut s, lost.wrapping_add(MSS)), Segment::Ahead);
    for k in 2..5 {
        assert_eq!(judge(&mut s, lost.wrapping_add(k * MSS)), Segment::InOrder);
    }
    assert_eq!(judge(&mut s, lost), Segment::Filled);
    assert_eq!(judge(&mut s, first), Segment::Duplicate);
}

#[test]
fn first_segments_keepalives_and_far_jumps_are_not_judged() {
    let mut s = SeqState::default();
    assert_eq!(judge(&mut s, 123_456), Segment::Skipped, "mid-stream start");
    assert_eq!(s.next, 124_456);
    assert_eq!(judge(&mut s, 124_456), Segment::InOrder);
    assert_eq!(
        judge_segment(&mut s, 125_455, 1, MSS, NO_IP_ID),
        Segment::Skipped
    );
    assert_eq!(
        judge_segment(&mut s, 125_456, 0, MSS, NO_IP_ID),
        Segment::Skipped
    );
    // A port pair reused by a new connection the table missed.
    assert_eq!(judge(&mut s, 0x8000_0000), Segment::Skipped);
    assert_eq!(judge(&mut s, 0x8000_0000 + MSS), Segment::InOrder);
}

#[test]
fn the_ipv4_identification_tells_a_quick_retransmission_from_a_late_original() {
    let mut s = at(0);
    let ip = |s: &mut SeqState, k: u32, id: u16| judge_segment(s, k * MSS, MSS, MSS, id.into());
    assert_eq!(ip(&mut s, 0, 100), Segment::InOrder);
    // Segment 1 lost; 2 arrives; 1 is sent again at once (RACK).
    assert_eq!(ip(&mut s, 2, 102), Segment::Ahead);
    assert_eq!(ip(&mut s, 1, 103), Segment::Filled);
    // Segment 4 overtaken by 5..9: late, but sent before them.
    assert_eq!(ip(&mut s, 3, 104), Segment::InOrder);
    for k in 5..10 {
        ip(&mut s, k, 100 + k as u16);
    }
    assert_eq!(ip(&mut s, 4, 104), Segment::Reordered);
    // Identifications wrap like sequence numbers.
    let mut s = at(0);
    assert_eq!(ip(&mut s, 0, 65_535), Segment::InOrder);
    assert_eq!(ip(&mut s, 2, 1), Segment::Ahead);
    assert_eq!(ip(&mut s, 1, 2), Segment::Filled);
    // A sender that leaves the identification 0: the segment allowance.
    let mut s = at(0);
    assert_eq!(ip(&mut s, 1, 0), Segment::Ahead);
    assert_eq!(ip(&mut s, 0, 0), Segment::Reordered);
}

#[test]
fn an_ack_counts_only_the_bytes_no_earlier_ack_did() {
    let mut f = TcpFlow::default();
    assert_eq!(ack_advance(&mut f, 1_000), 0, "the first ACK is the start");
    assert_eq!(ack_advance(&mut f, 2_448), 1_448);
    assert_eq!(ack_advance(&mut f, 2_448), 0, "a duplicate ACK");
    assert_eq!(ack_advance(&mut f, 1_500), 0, "an older ACK, reordered");
    assert_eq!(f.ack, 2_448, "an older ACK does not move it back");
    assert_eq!(ack_advance(&mut f, 5_344), 2_896);
    // Across the wrap of the sequence space.
    let mut f = TcpFlow::default();
    ack_advance(&mut f, u32::MAX - 99);
    assert_eq!(ack_advance(&mut f, 100), 200);
    // A jump farther than any window: a new start, nothing counted.
    assert_eq!(ack_advance(&mut f, 100 + (1 << 30)), 0);
    assert_eq!(ack_advance(&mut f, 1_100 + (1 << 30)), 1_000);
}

#[test]
fn download_holes_are_wan_side_and_upload_holes_lan_side() {
    assert_eq!(loss_side(Segment::Filled, DOWNLOAD), Some(SIDE_WAN));
    assert_eq!(loss_side(Segment::Duplicate, DOWNLOAD), Some(SIDE_LAN));
    assert_eq!(loss_side(Segment::Filled, UPLOAD), Some(SIDE_LAN));
    assert_eq!(loss_side(Segment::Duplicate, UPLOAD), Some(SIDE_WAN));
    assert_eq!(loss_side(Segment::Reordered, DOWNLOAD), None);
    assert_eq!(loss_side(Segment::InOrder, UPLOAD), None);
}
