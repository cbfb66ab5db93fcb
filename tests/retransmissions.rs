//! Retransmissions in the sampled TCP connections, judged by the kernel
//! classifiers on crafted segments (BPF_PROG_TEST_RUN): in order, a hole
//! and its fill, duplicates, reordering, wraparound, each counted for the
//! right OPD, side and direction. The lab test at the end sends real TCP
//! through the lab gateway with random loss on one side, then the other.

mod support;

use jatah::datapath::{Datapath, OpdPrefixes, Prefix, SkbContext};
use jatah::lab::netns::{BpffsMount, NetNs, require_root};
use jatah::lab::{Lab, LabOpd, LabSpec};
use jatah::policy::Direction;
use jatah_common::{DOWNLOAD, SIDE_LAN, SIDE_WAN, TcpLoss, UPLOAD, program_names};
use support::{jatah, one_lab_at_a_time};

struct Fixture {
    dp: Datapath,
    _bpffs: BpffsMount,
}

const INTERNET: [u8; 4] = [198, 51, 100, 1];
const HOST: [u8; 4] = [10, 20, 1, 5];
const HOST_V6: [u8; 16] = [0xfd, 0, 0, 0x20, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
const INTERNET_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const MSS: u32 = 1000;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYNACK: u8 = 0x12;

/// A data path with one OPD (10.20.1.0/24), retransmission counting on and
/// every connection in the sample.
fn fixture() -> Fixture {
    require_root();
    let bpffs = BpffsMount::new("jt-rtx").unwrap();
    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
    dp.set_mark_mask(0x7fff_0000).unwrap();
    dp.sync_opds(&[OpdPrefixes {
        id: "dinkes".into(),
        prefixes: vec![Prefix::V4([10, 20, 1, 0], 24), Prefix::V6(HOST_V6, 64)],
    }])
    .unwrap();
    dp.set_tcp_loss_tracking(true).unwrap();
    dp.set_rtt_sampling(0).unwrap();
    Fixture { dp, _bpffs: bpffs }
}

/// An Ethernet + IPv4 + TCP frame with `payload` bytes and sequence `seq`.
fn segment(
    src: [u8; 4],
    dst: [u8; 4],
    ports: (u16, u16),
    flags: u8,
    seq: u32,
    payload: usize,
) -> Vec<u8> {
    let total = 40 + payload;
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&ports.0.to_be_bytes());
    tcp[2..4].copy_from_slice(&ports.1.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    f.extend_from_slice(&tcp);
    f.extend(std::iter::repeat_n(0x5a, payload));
    f
}

/// One direction of one connection between the OPD host's `port` and the
/// Internet host's 443, sent through the classifier that sees it.
struct Stream<'a> {
    fx: &'a Fixture,
    download: bool,
    port: u16,
    isn: u32,
}

impl Stream<'_> {
    fn send(&self, flags: u8, seq: u32, payload: usize, gso_segs: u32) {
        let (prog, frame) = if self.download {
            (
                program_names::DOWNLOAD,
                segment(INTERNET, HOST, (443, self.port), flags, seq, payload),
            )
        } else {
            (
                program_names::UPLOAD_MARK,
                segment(HOST, INTERNET, (self.port, 443), flags, seq, payload),
            )
        };
        let ctx = SkbContext {
            gso_segs,
            ..SkbContext::forwarded()
        };
        let (ret, _, _) = self.fx.dp.test_run(prog, &frame, &ctx, 1).unwrap();
        assert_eq!(ret, -1, "never dropped");
    }
    /// The SYN (upload) or SYN-ACK (download) that starts the direction.
    fn open(&self) {
        self.send(if self.download { SYNACK } else { SYN }, self.isn, 0, 0);
    }
    /// Data segment `k` (of MSS bytes) of the direction.
    fn data(&self, k: u32) {
        self.send(ACK, self.seq(k), MSS as usize, 0);
    }
    fn seq(&self, k: u32) -> u32 {
        self.isn.wrapping_add(1).wrapping_add(k * MSS)
    }
}

impl Fixture {
    fn stream(&self, download: bool, port: u16, isn: u32) -> Stream<'_> {
        Stream {
            fx: self,
            download,
            port,
            isn,
        }
    }
    fn loss(&self) -> TcpLoss {
        self.dp.tcp_loss(self.dp.slots()["dinkes"]).unwrap()
    }
}

/// Segments 0, 1, 3..7 in order, 2 (the hole) after four more, 4 again.
fn hole_fill_duplicate(s: &Stream) {
    s.open();
    for k in [0, 1, 3, 4, 5, 6, 7] {
        s.data(k);
    }
    s.data(2);
    s.data(4);
}

#[test]
fn download_holes_are_wan_loss_and_duplicates_lan_loss() {
    let fx = fixture();
    hole_fill_duplicate(&fx.stream(true, 40000, 1_000_000));
    let t = fx.loss();
    assert_eq!(t.segments, [9, 0], "every data segment judged");
    assert_eq!(t.retransmitted[SIDE_WAN as usize], [1, 0], "the fill");
    assert_eq!(t.retransmitted[SIDE_LAN as usize], [1, 0], "the duplicate");
}

#[test]
fn upload_holes_are_lan_loss_and_duplicates_wan_loss() {
    let fx = fixture();
    hole_fill_duplicate(&fx.stream(false, 40001, 7_777));
    let t = fx.loss();
    assert_eq!(t.segments, [0, 9]);
    assert_eq!(t.retransmitted[SIDE_LAN as usize], [0, 1], "the fill");
    assert_eq!(t.retransmitted[SIDE_WAN as usize], [0, 1], "the duplicate");
}

#[test]
fn sequence_numbers_wrap_around() {
    let fx = fixture();
    // The fourth segment straddles 2^32.
    let s = fx.stream(true, 40002, u32::MAX - 3 * MSS - 500);
    assert!(s.seq(5) < s.seq(0), "the stream wraps");
    hole_fill_duplicate(&s);
    let t = fx.loss();
    assert_eq!(t.segments[DOWNLOAD], 9);
    assert_eq!(t.retransmitted[SIDE_WAN as usize][DOWNLOAD], 1);
    assert_eq!(t.retransmitted[SIDE_LAN as usize][DOWNLOAD], 1);
}

#[test]
fn in_order_streams_reordering_and_pure_acks_are_no_loss() {
    let fx = fixture();
    let s = fx.stream(true, 40003, 5);
    s.open();
    for k in 0..20 {
        s.data(k);
    }
    // Segment 21 overtakes 20 by one segment: reordering.
    s.data(21);
    s.data(20);
    s.data(22);
    // Pure ACKs the other way, in a frame padded to Ethernet's minimum.
    let up = fx.stream(false, 40003, 9);
    for _ in 0..5 {
        let mut f = segment(HOST, INTERNET, (40003, 443), ACK, up.seq(0), 0);
        f.resize(60, 0);
        fx.dp
            .test_run(program_names::UPLOAD_MARK, &f, &SkbContext::forwarded(), 1)
            .unwrap();
    }
    let t = fx.loss();
    assert_eq!(t.segments, [23, 0], "padding is no payload");
    assert_eq!(t.retransmitted, [[0, 0], [0, 0]]);
}

/// A pure ACK from the Internet host's 443 to the OPD host's `port`,
/// acknowledging up to `ack`.
fn ack_to_opd(fx: &Fixture, port: u16, ack: u32) {
    let mut f = segment(INTERNET, HOST, (443, port), ACK, 77, 0);
    // Ethernet 14 + IPv4 20 + the ACK number's offset in TCP, 8.
    f[42..46].copy_from_slice(&ack.to_be_bytes());
    f.resize(60, 0);
    let (ret, _, _) = fx
        .dp
        .test_run(program_names::DOWNLOAD, &f, &SkbContext::forwarded(), 1)
        .unwrap();
    assert_eq!(ret, -1, "never dropped");
}

#[test]
fn upload_payload_and_what_the_far_end_acknowledged_are_counted() {
    let fx = fixture();
    let up = fx.stream(false, 40010, 1_000);
    up.open();
    // The SYN-ACK's ACK (the ISN + 1) is where counting starts.
    ack_to_opd(&fx, 40010, up.seq(0));
    for k in 0..10 {
        up.data(k);
    }
    up.data(4);
    ack_to_opd(&fx, 40010, up.seq(6));
    ack_to_opd(&fx, 40010, up.seq(3));
    ack_to_opd(&fx, 40010, up.seq(6));
    ack_to_opd(&fx, 40010, up.seq(10));
    let t = fx.loss();
    assert_eq!(t.payload_bytes[UPLOAD], 11 * u64::from(MSS), "the copy too");
    assert_eq!(
        t.acked_bytes[UPLOAD],
        10 * u64::from(MSS),
        "older and duplicate ACKs count nothing"
    );
    // The office's own ACKs of a download count nothing: download is
    // counted after the uplink carried it.
    let down = fx.stream(true, 40011, 5);
    down.open();
    down.data(0);
    let mut f = segment(HOST, INTERNET, (40011, 443), ACK, 9, 0);
    f[42..46].copy_from_slice(&down.seq(1).to_be_bytes());
    fx.dp
        .test_run(program_names::UPLOAD_MARK, &f, &SkbContext::forwarded(), 1)
        .unwrap();
    let t = fx.loss();
    assert_eq!(t.payload_bytes[DOWNLOAD], u64::from(MSS));
    assert_eq!(t.acked_bytes, [0, 10 * u64::from(MSS)]);
}

#[test]
fn a_connection_met_mid_stream_is_judged_from_its_second_segment() {
    let fx = fixture();
    let s = fx.stream(false, 40004, 123_456_789);
    // No SYN: the first segment seen only sets where the stream stands.
    s.data(10);
    s.data(11);
    s.data(9);
    let t = fx.loss();
    assert_eq!(t.segments[UPLOAD], 2);
    assert_eq!(
        t.retransmitted[SIDE_WAN as usize][UPLOAD], 1,
        "9 was forwarded before"
    );
}

#[test]
fn gso_packets_count_as_their_segments() {
    let fx = fixture();
    let s = fx.stream(true, 40005, 0);
    s.open();
    // Two segments in one packet (BPF_PROG_TEST_RUN takes frames up to
    // about a page), in order, then one of them sent again.
    s.send(ACK, s.seq(0), 2 * MSS as usize, 2);
    s.data(1);
    assert_eq!(fx.loss().segments[DOWNLOAD], 3);
    assert_eq!(fx.loss().retransmitted[SIDE_LAN as usize][DOWNLOAD], 1);
}

/// An Ethernet + IPv6 + TCP frame, from the Internet host to the OPD's.
fn segment_v6(flags: u8, seq: u32, payload: usize) -> Vec<u8> {
    let mut v4 = segment(INTERNET, HOST, (443, 40010), flags, seq, payload);
    let tcp = v4.split_off(14 + 20);
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    let plen = tcp.len() as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&plen.to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    f.extend_from_slice(&INTERNET_V6);
    f.extend_from_slice(&HOST_V6);
    f.extend(tcp);
    f
}

#[test]
fn ipv6_segments_are_judged_without_an_identification() {
    let fx = fixture();
    let run = |f: Vec<u8>| {
        fx.dp
            .test_run(program_names::DOWNLOAD, &f, &SkbContext::forwarded(), 1)
            .unwrap()
    };
    let seq = |k: u32| 1 + k * MSS;
    run(segment_v6(SYNACK, 0, 0));
    // 0, 1, 3, 4, 6, 7: a hole at 2 and one at 5 (merged: 2..6); 2
    // filled after four segments, 5 after two (reordering); then 0 again.
    for k in [0, 1, 3, 4, 6, 7] {
        run(segment_v6(ACK, seq(k), MSS as usize));
    }
    run(segment_v6(ACK, seq(2), MSS as usize));
    run(segment_v6(ACK, seq(5), MSS as usize));
    run(segment_v6(ACK, seq(0), MSS as usize));
    let t = fx.loss();
    assert_eq!(t.segments[DOWNLOAD], 9);
    assert_eq!(
        t.retransmitted[SIDE_WAN as usize][DOWNLOAD], 1,
        "2 filled, 5 reordered"
    );
    assert_eq!(t.retransmitted[SIDE_LAN as usize][DOWNLOAD], 1, "0 again");
}

#[test]
fn nothing_is_counted_with_counting_off_or_outside_the_sample() {
    let mut fx = fixture();
    fx.dp.set_tcp_loss_tracking(false).unwrap();
    hole_fill_duplicate(&fx.stream(true, 40006, 0));
    assert_eq!(fx.loss(), TcpLoss::default(), "off");
    fx.dp.set_tcp_loss_tracking(true).unwrap();
    fx.dp.set_rtt_sampling(3).unwrap();
    let flags = 3 << jatah_common::RTT_SAMPLE_SHIFT_POS;
    let (out, inside) = (
        (41000..)
            .find(|p| !jatah_common::handshake_sampled(*p, 443, flags))
            .unwrap(),
        (41000..)
            .find(|p| jatah_common::handshake_sampled(*p, 443, flags))
            .unwrap(),
    );
    hole_fill_duplicate(&fx.stream(true, out, 0));
    assert_eq!(fx.loss(), TcpLoss::default(), "outside the sample");
    hole_fill_duplicate(&fx.stream(true, inside, 0));
    assert_eq!(fx.loss().segments[DOWNLOAD], 9, "inside the sample");
}

/// One sample of `name` in a /metrics body whose labels include all of
/// `labels` (`key="value"` each).
fn sample(body: &str, name: &str, labels: &[&str]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} with {labels:?} in /metrics"))
}

/// Segments judged in `dir`, and retransmitted by side (LAN, WAN), of
/// `opd` as /metrics exports them.
fn exported_loss(lab: &Lab, opd: &str, dir: Direction) -> (f64, [f64; 2]) {
    let (code, body) = lab.http_get("/metrics").expect("scraping /metrics");
    assert_eq!(code, 200);
    let opd = format!("opd=\"{opd}\"");
    let dir = format!("direction=\"{}\"", dir.as_str());
    let retx = |side: &str| {
        sample(
            &body,
            "jatah_opd_tcp_retransmissions_total",
            &[&opd, &dir, &format!("side=\"{side}\"")],
        )
    };
    (
        sample(&body, "jatah_opd_tcp_segments_sampled_total", &[&opd, &dir]),
        [retx("lan"), retx("wan")],
    )
}

/// Upload payload of `opd`'s sampled connections and what their far ends
/// acknowledged, as /metrics exports them.
fn exported_upload_acked(lab: &Lab, opd: &str) -> (f64, f64) {
    let (_, body) = lab.http_get("/metrics").expect("scraping /metrics");
    let opd = format!("opd=\"{opd}\"");
    (
        sample(
            &body,
            "jatah_opd_tcp_payload_bytes_sampled_total",
            &[&opd, "direction=\"upload\""],
        ),
        sample(&body, "jatah_opd_tcp_upload_acked_bytes_total", &[&opd]),
    )
}

/// What one transfer showed: the retransmission ratio of each side (LAN,
/// WAN), the segments judged and the segments the sender says it sent
/// again.
struct Measured {
    ratio: [f64; 2],
    segments: f64,
    sent_again: u64,
    /// Upload acknowledged by the far end over upload payload sent.
    acked_share: f64,
}

/// Sends TCP through the lab in `dir` for `seconds` (two paced flows, well
/// below every ceiling, so HTB drops nothing).
fn measure(lab: &Lab, dir: Direction, seconds: u32) -> Measured {
    let (seg0, retx0) = exported_loss(lab, "dinsos", dir);
    let (sent0, acked0) = exported_upload_acked(lab, "dinsos");
    let client = lab
        .spawn_iperf_args(0, dir, seconds, 0, &["-b", "40M", "-P", "2"], true)
        .expect("starting iperf3");
    let out = client.wait_with_output().expect("waiting for iperf3");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    assert!(out.status.success(), "iperf3 failed: {report}");
    let sent_again = report["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .expect("iperf3 reports the sender's retransmissions");
    let (seg1, retx1) = exported_loss(lab, "dinsos", dir);
    let (sent1, acked1) = exported_upload_acked(lab, "dinsos");
    let segments = seg1 - seg0;
    assert!(
        segments > 10_000.0,
        "the transfer was followed: {segments} segments"
    );
    Measured {
        ratio: [0, 1].map(|s| (retx1[s] - retx0[s]) / segments),
        segments,
        sent_again,
        acked_share: (acked1 - acked0) / (sent1 - sent0).max(1.0),
    }
}

/// Where a test drops 3 % of TCP: a namespace, an nftables family and
/// hook, and what else the packets must match.
struct Dropper<'a> {
    ns: &'a NetNs,
    family: &'static str,
    hook: &'static str,
    only: &'static str,
}

impl Dropper<'_> {
    const TABLE: &'static str = "jatah_test_loss";

    fn start(&self, lab: &Lab) {
        let (family, hook, only) = (self.family, self.hook, self.only);
        let rules = format!(
            "table {family} {} {{\n chain {hook} {{\n  type filter hook {hook} priority 0; policy accept;\n  \
             {only} numgen random mod 100 < 3 counter drop\n }}\n}}\n",
            Self::TABLE
        );
        let path = lab.dir().join(format!("loss-{family}-{hook}.nft"));
        std::fs::write(&path, rules).unwrap();
        self.ns
            .run("nft", ["-f", &path.display().to_string()])
            .unwrap();
    }

    fn stop(&self) {
        self.ns
            .run("nft", ["delete", "table", self.family, Self::TABLE])
            .unwrap();
    }
}

/// A lab with one OPD far below its ceilings, jatah following every TCP
/// connection, and hosts that send one segment per packet, as across a
/// real path (no TSO/GSO super-packets on their veths).
fn lab() -> Lab {
    require_root();
    let spec = LabSpec {
        prefix: "jrtx".into(),
        download: "1000M".into(),
        upload: "1000M".into(),
        nat: true,
        mtu: 1500,
        opds: vec![LabOpd::new(
            "dinsos",
            "Dinas Sosial",
            ("100M", "500M"),
            ("100M", "500M"),
        )],
    };
    let mut lab = Lab::build(spec).expect("building the lab");
    lab.start_daemon(jatah()).expect("starting jatah");
    // The lab's policy follows every connection (`rtt_sampling = 1`).
    assert!(lab.spec.policy_toml().contains("rtt_sampling = 1\n"));
    lab.inet
        .ip(["link", "set", "dev", "wan0", "gso_max_segs", "1"])
        .unwrap();
    lab.opds[0]
        .ip(["link", "set", "dev", "eth0", "gso_max_segs", "1"])
        .unwrap();
    lab
}

/// Drops 3 % on `side` with `dropper`, sends TCP in `dir` and checks the
/// loss is counted on that side, near 3 % and near what the sender
/// retransmitted, and not on the other.
fn loss_on_one_side(lab: &Lab, dir: Direction, side: u32, dropper: &Dropper) {
    dropper.start(lab);
    let m = measure(lab, dir, 8);
    dropper.stop();
    let (on, off) = (m.ratio[side as usize], m.ratio[1 - side as usize]);
    let name = ["LAN", "WAN"][side as usize];
    eprintln!(
        "{dir:?}, {name} loss 3 %: {:.0} segments, retransmitted lan {:.4} wan {:.4}; the sender retransmitted {}",
        m.segments, m.ratio[0], m.ratio[1], m.sent_again
    );
    assert!(
        (0.02..0.045).contains(&on),
        "{name}-side ratio near the 3 % set: {on:.4}"
    );
    assert!(off < 0.003, "the other side stays near 0: {off:.4}");
    // Loss before the gateway: retransmissions lost once more never reach
    // it.
    let before_gateway = (side == SIDE_WAN) == (dir == Direction::Download);
    let truth = m.sent_again as f64 * if before_gateway { 0.97 } else { 1.0 };
    assert!(
        (0.8..1.2).contains(&(on * m.segments / truth)),
        "{:.0} counted for {truth:.0} retransmissions",
        on * m.segments
    );
    if dir == Direction::Upload {
        // What reached the Internet host, as its ACKs say: 3 % short of
        // what the gateway forwarded when the loss is beyond it, all of
        // it when the loss came before.
        eprintln!("  upload acknowledged / sent: {:.4}", m.acked_share);
        let expected = if side == SIDE_WAN {
            0.94..0.99
        } else {
            0.985..1.001
        };
        assert!(
            expected.contains(&m.acked_share),
            "acknowledged share {:.4}, expected {expected:?}",
            m.acked_share
        );
    }
    // HTB dropped nothing: the duplicates were the link's losses alone.
    let (_, body) = lab.http_get("/metrics").unwrap();
    let dropped = format!("jatah_opd_{}_dropped_packets_total", dir.as_str());
    assert_eq!(sample(&body, &dropped, &["opd=\"dinsos\""]), 0.0);
}

#[test]
fn download_loss_is_counted_on_the_side_it_happens() {
    let _one = one_lab_at_a_time();
    let lab = lab();
    // WAN: lost before the classifier, as it enters the gateway. (A drop
    // in the sending host's own output path is no loss to TCP: it sees
    // the error and sends again as if nothing had left.)
    let wan = Dropper {
        ns: &lab.gw,
        family: "inet",
        hook: "prerouting",
        only: "iifname \"wan0\" meta l4proto tcp",
    };
    loss_on_one_side(&lab, Direction::Download, SIDE_WAN, &wan);
    // LAN: lost between the gateway and the OPD's host, as it arrives.
    let lan = Dropper {
        ns: &lab.opds[0],
        family: "inet",
        hook: "input",
        only: "meta l4proto tcp",
    };
    loss_on_one_side(&lab, Direction::Download, SIDE_LAN, &lan);
}

#[test]
fn upload_loss_is_counted_on_the_side_it_happens() {
    let _one = one_lab_at_a_time();
    let lab = lab();
    // WAN: lost after the gateway, as it arrives at the Internet host.
    let wan = Dropper {
        ns: &lab.inet,
        family: "inet",
        hook: "input",
        only: "meta l4proto tcp",
    };
    loss_on_one_side(&lab, Direction::Upload, SIDE_WAN, &wan);
    // LAN: lost in the OPD's switch, before the gateway.
    let lan = Dropper {
        ns: &lab.sw,
        family: "bridge",
        hook: "forward",
        only: "ip saddr 10.20.1.0/24 ip protocol tcp",
    };
    loss_on_one_side(&lab, Direction::Upload, SIDE_LAN, &lan);
}

#[test]
fn a_new_opd_in_a_released_slot_starts_from_zero() {
    let mut fx = fixture();
    hole_fill_duplicate(&fx.stream(true, 40020, 0));
    let old = fx.dp.slots()["dinkes"];
    assert_ne!(fx.loss(), TcpLoss::default());
    fx.dp.sync_opds(&[]).unwrap();
    fx.dp.release(&[old].into_iter().collect());
    fx.dp
        .sync_opds(&[OpdPrefixes {
            id: "bapenda".into(),
            prefixes: vec![Prefix::V4([10, 20, 4, 0], 24)],
        }])
        .unwrap();
    assert_eq!(fx.dp.slots()["bapenda"], old, "the slot is reused");
    assert_eq!(fx.dp.tcp_loss(old).unwrap(), TcpLoss::default());
}
