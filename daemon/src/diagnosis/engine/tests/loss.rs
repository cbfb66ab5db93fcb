//! Loss seen as TCP sees it: segments sent again, by the side the first
//! copy was lost on.

use super::*;

const LAN: usize = 0;
const WAN: usize = 1;

/// `busy` with 100 judged segments a second each way, and `per_mille` of
/// them sent again after a loss on `side` in `dir`.
fn lossy(bps: u64, side: usize, dir: usize, per_mille: u64) -> OpdSignals {
    let mut s = busy(bps);
    s.tcp_segments = [100, 100];
    s.tcp_retransmitted[side][dir] = per_mille / 10;
    s
}

fn clean(bps: u64) -> OpdSignals {
    lossy(bps, WAN, 0, 0)
}

#[test]
fn wan_loss_at_every_opd_below_capacity_degrades_the_uplink_and_blames_no_opd() {
    let mut r = Run::new();
    let ok = [("a", clean(4_000_000)), ("b", clean(4_000_000)), ("c", clean(4_000_000))];
    r.feed(30, &ok, &[ISP_OK]);
    assert_eq!(r.gateway(), State::Healthy);
    // 3 % lost beyond the gateway, every ping still answered; each office
    // varies on its own (no shared plateau).
    for k in 0..25u64 {
        let bad = [
            ("a", lossy(3_000_000 + (k % 3) * 1_000_000, WAN, 0, 30)),
            ("b", lossy(3_000_000 + ((k + 1) % 5) * 800_000, WAN, 0, 30)),
            ("c", lossy(2_000_000 + (k * k % 7) * 500_000, WAN, 0, 30)),
        ];
        r.feed(1, &bad, &[ISP_OK]);
    }
    assert_eq!(r.gateway(), State::UpstreamDegraded);
    let ev = &r.engine.gateway().unwrap().evidence;
    assert_eq!(ev["reason"], "wan_tcp_loss", "{ev}");
    assert_eq!(ev["opds_with_wan_tcp_loss"], 3, "{ev}");
    assert_eq!(ev["wan_tcp_loss_ratio"], 0.03, "{ev}");
    let v = r.engine.gateway().unwrap();
    assert!(v.explanation_en.contains("loses 3.0% of packets"), "{}", v.explanation_en);
    assert!(v.explanation_id.contains("kehilangan 3,0% paket"), "{}", v.explanation_id);
    for id in ["a", "b", "c"] {
        assert_eq!(r.state(id), State::UpstreamDegraded, "{id} follows, not blamed");
    }
    r.feed(30, &ok, &[ISP_OK]);
    assert_eq!(r.gateway(), State::Healthy, "out of it once the loss ends");
}

#[test]
fn wan_loss_at_one_opd_is_one_lossy_server_not_the_uplink() {
    let mut r = Run::new();
    let opds = [
        ("a", lossy(4_000_000, WAN, 0, 80)),
        ("b", clean(4_000_000)),
        ("c", clean(4_000_000)),
    ];
    r.feed(60, &opds, &[ISP_OK]);
    assert_eq!(r.gateway(), State::Healthy);
    assert_eq!(r.state("a"), State::Healthy);
    assert!(
        !r.changes
            .iter()
            .any(|c| matches!(c.verdict.state, State::UpstreamDegraded | State::UpstreamDown))
    );
}

#[test]
fn lan_loss_at_one_opd_is_local_degraded_and_nothing_upstream() {
    let mut r = Run::new();
    let opds = [
        ("a", lossy(4_000_000, LAN, 0, 50)),
        ("b", clean(4_000_000)),
        ("c", clean(4_000_000)),
    ];
    r.feed(30, &opds, &[ISP_OK]);
    assert_eq!(r.state("a"), State::LocalDegraded);
    let ev = &r.engine.opd("a").unwrap().evidence;
    assert_eq!(ev["reason"], "lan_tcp_loss", "{ev}");
    assert_eq!(ev["lan_tcp_loss_ratio"], 0.05, "{ev}");
    assert_eq!(ev["lan_tcp_loss_direction"], "download", "{ev}");
    let v = r.engine.opd("a").unwrap();
    assert!(v.explanation_en.contains("loses 5.0% of packets"), "{}", v.explanation_en);
    assert!(v.explanation_id.contains("kehilangan 5,0% paket"), "{}", v.explanation_id);
    assert_eq!(r.state("b"), State::Healthy);
    assert_eq!(r.gateway(), State::Healthy);
    // Upload loss on the LAN (holes in what the OPD sends) too.
    let mut r = Run::new();
    r.feed(30, &[("a", lossy(4_000_000, LAN, 1, 50)), ("b", clean(4_000_000))], &[ISP_OK]);
    assert_eq!(r.state("a"), State::LocalDegraded);
}

#[test]
fn duplicates_of_its_own_class_drops_are_its_own_queue() {
    // Download duplicates are LAN-side, and so are the OPD's own HTB
    // drops: 5 % of its packets dropped by its class, 5 % sent again.
    let mut r = Run::new();
    let mut s = lossy(CEIL, LAN, 0, 50);
    s.drops = [s.packets[0] / 20, 0];
    r.feed(40, &[("a", s), ("b", clean(4_000_000))], &[ISP_OK]);
    assert_eq!(r.state("a"), State::Saturated);
}

#[test]
fn loss_on_the_wire_of_an_office_at_its_ceiling_is_local_degraded() {
    // 1 % dropped by its own class, 6 % sent again: 5 % lost on its LAN.
    let mut r = Run::new();
    let mut s = lossy(CEIL, LAN, 0, 60);
    s.drops = [s.packets[0] / 100, 0];
    r.feed(40, &[("a", s), ("b", clean(4_000_000))], &[ISP_OK]);
    assert_eq!(r.state("a"), State::LocalDegraded);
    let ev = &r.engine.opd("a").unwrap().evidence;
    assert_eq!(ev["reason"], "lan_tcp_loss", "{ev}");
    assert_eq!(r.gateway(), State::Healthy);
}

#[test]
fn bytes_its_class_did_not_send_are_its_own_queue() {
    // 1 % of its packets dropped, but they were GRO packets: 4 % of its
    // bytes. 4.5 % sent again is its queue, not its LAN.
    let mut r = Run::new();
    let mut s = lossy(CEIL, LAN, 0, 45);
    s.drops = [s.packets[0] / 100, 0];
    s.unsent_bytes = [Some((CEIL / 8 * 4 / 100) as i64), Some(0)];
    r.feed(40, &[("a", s.clone()), ("b", clean(4_000_000))], &[ISP_OK]);
    assert_eq!(r.state("a"), State::Saturated);
    // The same drops in MTU-sized packets: 1 % of its bytes, 3.5 % lost
    // on its LAN.
    let mut r = Run::new();
    s.unsent_bytes = [Some((CEIL / 8 / 100) as i64), Some(0)];
    r.feed(40, &[("a", s), ("b", clean(4_000_000))], &[ISP_OK]);
    assert_eq!(r.state("a"), State::LocalDegraded);
}

#[test]
fn drops_a_draining_queue_hides_are_still_its_own() {
    // Its class drops 4 % of its bytes each second while its queue, filled
    // before, gives back 3 %: it takes in 1 % more than it sends. 4.5 %
    // sent again is its own drops, not its LAN (in the lab, an office
    // read `local_degraded` at 3.5 % while the adapted gateway emptied its
    // queues).
    let pct = |p: u64| (CEIL / 8 * p / 100) as i64;
    let mut r = Run::new();
    let mut s = lossy(CEIL, LAN, 0, 45);
    s.drops = [s.packets[0] / 100, 0];
    s.unsent_bytes = [Some(pct(1)), Some(0)];
    s.queue_growth_bytes = [Some(-pct(3)), Some(0)];
    r.feed(40, &[("a", s.clone()), ("b", clean(4_000_000))], &[ISP_OK]);
    assert_eq!(r.state("a"), State::Saturated);
    // Without the queue's change (dumps that missed it) the same seconds
    // read as 3.5 % lost on its LAN.
    let mut r = Run::new();
    s.queue_growth_bytes = [None, None];
    r.feed(40, &[("a", s), ("b", clean(4_000_000))], &[ISP_OK]);
    assert_eq!(r.state("a"), State::LocalDegraded);
}

#[test]
fn a_queue_that_fills_and_drains_hides_no_loss_on_the_wire() {
    // 5 % sent again, nothing dropped by its class: its queue took in a
    // tenth of a second's bytes more than it sent in one second and sent
    // them the next. Summed over the window that is nothing unsent; read
    // second by second (each clamped at zero) it would be 5 % and hide
    // the loss.
    let mut r = Run::new();
    let s = lossy(CEIL, LAN, 0, 50);
    let swing = (CEIL / 8 / 10) as i64;
    let (mut fill, mut drain) = (s.clone(), s);
    fill.unsent_bytes = [Some(swing), Some(0)];
    drain.unsent_bytes = [Some(-swing), Some(0)];
    for _ in 0..20 {
        r.feed(1, &[("a", fill.clone()), ("b", clean(4_000_000))], &[ISP_OK]);
        r.feed(1, &[("a", drain.clone()), ("b", clean(4_000_000))], &[ISP_OK]);
    }
    assert_eq!(r.state("a"), State::LocalDegraded);
    let ev = &r.engine.opd("a").unwrap().evidence;
    assert_eq!(ev["reason"], "lan_tcp_loss", "{ev}");
}

#[test]
fn too_few_segments_are_not_judged() {
    let mut r = Run::new();
    let mut s = lossy(4_000_000, LAN, 0, 200);
    s.tcp_segments = [15, 15];
    s.tcp_retransmitted[LAN][0] = 3;
    r.feed(40, &[("a", s), ("b", clean(4_000_000))], &[ISP_OK]);
    assert_eq!(r.state("a"), State::Healthy, "150 segments in 10 s");
}

#[test]
fn upload_dropped_beyond_the_gateway_does_not_count_as_delivered() {
    // Upload is counted where it enters the gateway; 40 % of it is sent
    // again after a loss beyond (a policer): 10 Mbit/s counted, 6 delivered.
    let mut r = Run::new();
    let mut s = busy(4_000_000);
    s.bps[1] = 10_000_000;
    s.tcp_segments = [100, 1000];
    s.tcp_retransmitted[WAN][1] = 400;
    s.tcp_retransmitted[LAN][0] = 50;
    r.feed(12, &[("a", s.clone())], &[ISP_OK]);
    let tick = Tick {
        opds: [("a".to_string(), s)].into(),
        ..Default::default()
    };
    let t = Thresholds::default();
    assert_eq!(r.engine.sources(&tick, 1, &t)[0].bps, 6_000_000);
    assert_eq!(
        r.engine.sources(&tick, 0, &t)[0].bps,
        4_000_000,
        "download is counted after the uplink carried it"
    );
}

#[test]
fn upload_acknowledged_is_what_crossed_the_uplink_whatever_the_duplicates_say() {
    // A policer passes 60 % of the upload the gateway counted; the far
    // ends acknowledge that much. The duplicates read 10 % (a lost copy
    // sent again can be lost again, and count once): the ACKs decide.
    let mut r = Run::new();
    let mut s = busy(4_000_000);
    s.bps[1] = 10_000_000;
    s.tcp_segments = [100, 1000];
    s.tcp_retransmitted[WAN][1] = 100;
    s.tcp_payload_bytes[1] = 1_200_000;
    s.tcp_acked_bytes[1] = 720_000;
    r.feed(12, &[("a", s.clone())], &[ISP_OK]);
    let tick = Tick {
        opds: [("a".to_string(), s.clone())].into(),
        ..Default::default()
    };
    let t = Thresholds::default();
    assert_eq!(r.engine.sources(&tick, 1, &t)[0].bps, 6_000_000);
    // Too little sent for the ACKs to say (under 64 KiB in 10 s): the
    // duplicates.
    let mut r = Run::new();
    s.tcp_payload_bytes[1] = 6_000;
    s.tcp_acked_bytes[1] = 600;
    r.feed(12, &[("a", s.clone())], &[ISP_OK]);
    assert_eq!(r.engine.sources(&tick, 1, &t)[0].bps, 9_000_000);
}

#[test]
fn upload_carried_beyond_the_gateway_leaves_out_what_its_own_classes_did_not_send() {
    let mut r = Run::new();
    assert_eq!(r.engine.upload_carried_share(), None, "nothing sent yet");
    // Office a: its class drops a tenth of what it counted (1 Mbit/s of
    // 10), so 900 kB of its 1 MB payload a second left the gateway, and
    // 720 kB arrived. Office b: nothing dropped, 300 of 500 kB arrived.
    let mut a = busy(4_000_000);
    a.bps[1] = 10_000_000;
    a.unsent_bytes[1] = Some(125_000);
    a.queue_growth_bytes[1] = Some(0);
    a.tcp_payload_bytes[1] = 1_000_000;
    a.tcp_acked_bytes[1] = 720_000;
    let mut b = busy(4_000_000);
    b.bps[1] = 5_000_000;
    b.unsent_bytes[1] = Some(0);
    b.queue_growth_bytes[1] = Some(0);
    b.tcp_payload_bytes[1] = 500_000;
    b.tcp_acked_bytes[1] = 300_000;
    r.feed(5, &[("a", a.clone()), ("b", b.clone())], &[ISP_OK]);
    let share = r.engine.upload_carried_share().unwrap();
    assert!((share - 1_020_000.0 / 1_400_000.0).abs() < 1e-9, "{share}");
    // Queued instead of dropped, it has not left either: its ACKs come
    // a round trip after it leaves.
    a.queue_growth_bytes[1] = Some(125_000);
    r.feed(5, &[("a", a.clone()), ("b", b.clone())], &[ISP_OK]);
    let share = r.engine.upload_carried_share().unwrap();
    assert!((share - 1_020_000.0 / 1_400_000.0).abs() < 1e-9, "{share}");
    // A queue that drains sends more than came in: more left than the
    // classifier counted in those seconds, and all of it arrived.
    a.unsent_bytes[1] = Some(-125_000);
    a.queue_growth_bytes[1] = Some(-125_000);
    a.tcp_acked_bytes[1] = 1_000_000;
    b.tcp_acked_bytes[1] = 500_000;
    r.feed(5, &[("a", a), ("b", b)], &[ISP_OK]);
    assert_eq!(r.engine.upload_carried_share(), Some(1.0));
}

#[test]
fn heavy_loss_beyond_the_gateway_is_not_read_as_a_lossy_lan() {
    // 25 % of download lost before the gateway; 4 % read as LAN-side
    // duplicates (fills of gaps the classifier did not follow, and
    // needless sends): the uplink, not the offices.
    let mut r = Run::new();
    let mut s = lossy(4_000_000, WAN, 0, 250);
    s.tcp_retransmitted[LAN][0] = 4;
    r.feed(40, &[("a", s.clone()), ("b", s)], &[ISP_OK]);
    assert_eq!(r.gateway(), State::UpstreamDegraded);
    assert_eq!(r.state("a"), State::UpstreamDegraded);
    assert!(
        !r.changes
            .iter()
            .any(|c| c.verdict.state == State::LocalDegraded),
        "{:?}",
        r.changes
    );
}

#[test]
fn segments_resent_after_a_cable_outage_are_its_repair_not_a_lossy_lan() {
    // Cable out for 10 s; once back, the office's connections send again
    // what they lost (6 % of the first seconds, as their timers fire).
    let mut r = Run::new();
    let b = ("b", clean(4_000_000));
    r.feed(30, &[("a", clean(4_000_000)), b.clone()], &[ISP_OK]);
    let mut down = clean(0);
    down.link_up = Some(false);
    down.tcp_segments = [0, 0];
    r.feed(10, &[("a", down), b.clone()], &[ISP_OK]);
    assert_eq!(r.state("a"), State::LocalFault);
    let mut back = lossy(4_000_000, LAN, 0, 60);
    back.link_up = Some(true);
    r.feed(8, &[("a", back), b.clone()], &[ISP_OK]);
    r.feed(30, &[("a", clean(4_000_000)), b.clone()], &[ISP_OK]);
    assert_eq!(r.state("a"), State::Healthy);
    assert!(
        !r.changes
            .iter()
            .any(|c| c.verdict.state == State::LocalDegraded),
        "{:?}",
        r.changes
    );
    // Loss that goes on past the repair is the LAN's own again.
    let mut lossy_lan = lossy(4_000_000, LAN, 0, 60);
    lossy_lan.link_up = Some(true);
    r.feed(30, &[("a", lossy_lan), b], &[ISP_OK]);
    assert_eq!(r.state("a"), State::LocalDegraded);
    let v = r.engine.opd("a").unwrap();
    assert!(v.explanation_en.contains("loses 6.0%"), "{}", v.explanation_en);
}

#[test]
fn a_sentence_with_a_figure_follows_the_figure() {
    let mut r = Run::new();
    let b = ("b", clean(4_000_000));
    r.feed(30, &[("a", lossy(4_000_000, LAN, 0, 50)), b.clone()], &[ISP_OK]);
    assert_eq!(r.state("a"), State::LocalDegraded);
    r.feed(15, &[("a", lossy(4_000_000, LAN, 0, 80)), b], &[ISP_OK]);
    let v = r.engine.opd("a").unwrap();
    assert_eq!(v.evidence["lan_tcp_loss_ratio"], 0.08);
    assert!(v.explanation_en.contains("loses 8.0%"), "{}", v.explanation_en);
    assert!(v.explanation_id.contains("kehilangan 8,0%"), "{}", v.explanation_id);
}

#[test]
fn wan_loss_is_judged_against_what_the_offices_received_not_what_was_offered() {
    // Capacity 100M. Three offices offered 36M each (108M) but their own
    // classes sent 24M each (72M): the uplink is not full, and 3 % is
    // lost beyond the gateway.
    let mut r = Run::new();
    let mut s = lossy(36_000_000, WAN, 0, 30);
    s.unsent_bytes = [Some(12_000_000 / 8), Some(0)];
    let opds = [("a", s.clone()), ("b", s.clone()), ("c", s)];
    r.feed(30, &opds, &[ISP_OK]);
    assert_eq!(r.gateway(), State::UpstreamDegraded);
    let ev = &r.engine.gateway().unwrap().evidence;
    assert_eq!(ev["download_bps_10s"], 72_000_000, "{ev}");
}

/// Loss beyond the gateway in one direction is congestion for that
/// direction's adaptive capacity only: an upload limit must not hold
/// download's probes and its return to the contract.
#[test]
fn wan_loss_congests_only_the_direction_that_loses() {
    let mut r = Run::new();
    let up = [
        ("a", lossy(4_000_000, WAN, 1, 50)),
        ("b", lossy(4_000_000, WAN, 1, 50)),
        ("c", clean(4_000_000)),
    ];
    r.feed(15, &up, &[ISP_OK]);
    assert_eq!(r.engine.uplink_congested(), [false, true]);
    let down = [
        ("a", lossy(4_000_000, WAN, 0, 50)),
        ("b", lossy(4_000_000, WAN, 0, 50)),
        ("c", clean(4_000_000)),
    ];
    r.feed(15, &down, &[ISP_OK]);
    assert_eq!(r.engine.uplink_congested(), [true, false]);
}
