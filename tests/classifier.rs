//! The kernel classifiers, run on crafted frames with BPF_PROG_TEST_RUN:
//! which OPD a packet is attributed to, which HTB class it is put in, what is
//! counted, and that nothing, however malformed, is dropped.

use jatah::datapath::{Datapath, OpdPrefixes, Prefix, SkbContext};
use jatah::lab::netns::{BpffsMount, require_root};
use jatah_common::{
    DEFAULT_CLASS_MINOR, DOWNLOAD, Stat, UPLOAD, htb_priority, opd_class_minor, program_names,
};

const TC_ACT_SHOT: i32 = 2;
const MASK: u32 = 0x7fff_0000;

struct Fixture {
    dp: Datapath,
    _bpffs: BpffsMount,
}

fn v4(a: [u8; 4], len: u32) -> Prefix {
    Prefix::V4(a, len)
}

fn fixture() -> Fixture {
    require_root();
    let bpffs = BpffsMount::new("jt-cls").unwrap();
    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
    dp.set_mark_mask(MASK).unwrap();
    dp.sync_opds(&[
        OpdPrefixes {
            id: "dinkes".into(),
            prefixes: vec![
                v4([10, 20, 1, 0], 24),
                Prefix::V6([0xfd, 0, 0, 0x20, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 64),
            ],
        },
        OpdPrefixes {
            id: "bappeda".into(),
            prefixes: vec![v4([10, 20, 2, 0], 24), v4([172, 16, 9, 0], 28)],
        },
    ])
    .unwrap();
    Fixture { dp, _bpffs: bpffs }
}

impl Fixture {
    fn slot(&self, id: &str) -> u32 {
        self.dp.slots()[id]
    }
    /// Runs a program on a forwarded frame (one that arrived on an
    /// interface), as every frame jatah classifies is.
    fn run(&self, prog: &str, frame: &[u8], mut ctx: SkbContext) -> SkbContext {
        if ctx.ingress_ifindex == 0 {
            ctx.ingress_ifindex = 1;
        }
        let (ret, out, _) = self
            .dp
            .test_run(prog, frame, &ctx, 1)
            .unwrap_or_else(|e| panic!("{prog} on a {}-byte frame: {e}", frame.len()));
        assert_ne!(ret, TC_ACT_SHOT, "{prog} dropped a frame");
        assert_eq!(
            ret, -1,
            "{prog} must return TC_ACT_UNSPEC so later programs run"
        );
        out
    }
    fn down(&self, frame: &[u8]) -> SkbContext {
        self.run(program_names::DOWNLOAD, frame, SkbContext::default())
    }
    /// Upload at WAN egress (after NAT), tagged at LAN ingress for `slot`.
    fn up_tagged(&self, slot: u32, frame: &[u8]) -> SkbContext {
        let mark = (slot + 1) << MASK.trailing_zeros();
        let ctx = SkbContext {
            mark,
            ..Default::default()
        };
        self.run(program_names::UPLOAD, frame, ctx)
    }
}

const ETH_IP: [u8; 2] = [0x08, 0x00];
const ETH_IP6: [u8; 2] = [0x86, 0xdd];

fn eth(ethertype: [u8; 2]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype);
    f
}

fn vlan(outer_tpid: [u8; 2], vid: u16, inner: [u8; 2]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&outer_tpid);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&inner);
    f
}

/// IPv4 + TCP (20-byte header) + payload.
fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], payload: usize) -> Vec<u8> {
    let total = 20 + 20 + payload;
    let mut p = vec![
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
    ];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&tcp_header());
    p.extend(std::iter::repeat_n(0xab, payload));
    p
}

fn tcp_header() -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&443u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x10;
    t
}

fn ipv6_tcp(src: [u8; 16], dst: [u8; 16], payload: usize) -> Vec<u8> {
    let plen = 20 + payload;
    let mut p = vec![0x60, 0, 0, 0, (plen >> 8) as u8, plen as u8, 6, 64];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&tcp_header());
    p.extend(std::iter::repeat_n(0xcd, payload));
    p
}

fn frame(mut l2: Vec<u8>, l3: Vec<u8>) -> Vec<u8> {
    l2.extend(l3);
    l2
}

const INTERNET: [u8; 4] = [198, 51, 100, 1];
const DINKES_HOST: [u8; 4] = [10, 20, 1, 5];
const BAPPEDA_HOST: [u8; 4] = [10, 20, 2, 9];
const DINKES_V6: [u8; 16] = [0xfd, 0, 0, 0x20, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
const INTERNET_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

#[test]
fn ipv4_download_goes_to_the_opds_class_and_is_counted() {
    let fx = fixture();
    let f = frame(eth(ETH_IP), ipv4_tcp(INTERNET, DINKES_HOST, 1000));
    let out = fx.down(&f);
    let slot = fx.slot("dinkes");
    assert_eq!(out.priority, htb_priority(opd_class_minor(slot)));
    let c = fx.dp.counters(slot).unwrap();
    assert_eq!(c.bytes[DOWNLOAD], f.len() as u64);
    assert_eq!(c.packets[DOWNLOAD], 1);
    assert_eq!(c.packets[UPLOAD], 0);
    assert_eq!(
        fx.dp.counters(fx.slot("bappeda")).unwrap().packets[DOWNLOAD],
        0
    );
    assert_eq!(fx.dp.unclassified().unwrap().packets[DOWNLOAD], 0);
}

#[test]
fn ipv6_download_is_classified_by_its_prefix() {
    let fx = fixture();
    let f = frame(eth(ETH_IP6), ipv6_tcp(INTERNET_V6, DINKES_V6, 500));
    let out = fx.down(&f);
    assert_eq!(
        out.priority,
        htb_priority(opd_class_minor(fx.slot("dinkes")))
    );
    assert_eq!(
        fx.dp.counters(fx.slot("dinkes")).unwrap().bytes[DOWNLOAD],
        f.len() as u64
    );
}

#[test]
fn single_and_double_vlan_tags_are_parsed() {
    let fx = fixture();
    let single = frame(
        vlan([0x81, 0x00], 100, ETH_IP),
        ipv4_tcp(INTERNET, BAPPEDA_HOST, 100),
    );
    let out = fx.down(&single);
    assert_eq!(
        out.priority,
        htb_priority(opd_class_minor(fx.slot("bappeda")))
    );

    // 802.1ad outer tag, 802.1Q inner tag (QinQ), then IPv6.
    let mut qinq = vlan([0x88, 0xa8], 7, [0x81, 0x00]);
    qinq.extend_from_slice(&200u16.to_be_bytes());
    qinq.extend_from_slice(&ETH_IP6);
    let double = frame(qinq, ipv6_tcp(INTERNET_V6, DINKES_V6, 100));
    let out = fx.down(&double);
    assert_eq!(
        out.priority,
        htb_priority(opd_class_minor(fx.slot("dinkes")))
    );
    assert_eq!(
        fx.dp.counters(fx.slot("bappeda")).unwrap().packets[DOWNLOAD],
        1
    );
    assert_eq!(
        fx.dp.counters(fx.slot("dinkes")).unwrap().packets[DOWNLOAD],
        1
    );
}

#[test]
fn traffic_of_no_opd_goes_to_the_default_class_and_is_counted_unclassified() {
    let fx = fixture();
    let f = frame(eth(ETH_IP), ipv4_tcp(INTERNET, [10, 99, 0, 1], 64));
    let out = fx.down(&f);
    assert_eq!(out.priority, htb_priority(DEFAULT_CLASS_MINOR));
    let u = fx.dp.unclassified().unwrap();
    assert_eq!(u.packets[DOWNLOAD], 1);
    assert_eq!(u.bytes[DOWNLOAD], f.len() as u64);
}

#[test]
fn non_ip_frames_pass_unshaped_and_are_counted() {
    let fx = fixture();
    let mut arp = eth([0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    let out = fx.down(&arp);
    assert_eq!(out.priority, htb_priority(DEFAULT_CLASS_MINOR));
    assert_eq!(fx.dp.stats().unwrap()[Stat::NonIp as usize], 1);
    assert_eq!(fx.dp.unclassified().unwrap().packets[DOWNLOAD], 1);
}

#[test]
fn every_truncation_of_real_frames_passes_and_is_never_misattributed() {
    let fx = fixture();
    // (frame, shortest length BPF_PROG_TEST_RUN accepts): the kernel refuses
    // an untagged IP frame shorter than its IP header, but not a tagged one,
    // so the VLAN frames exercise every truncation inside the IP header.
    let mut qinq = vlan([0x88, 0xa8], 7, [0x81, 0x00]);
    qinq.extend_from_slice(&200u16.to_be_bytes());
    qinq.extend_from_slice(&ETH_IP6);
    let frames = [
        (
            frame(eth(ETH_IP), ipv4_tcp(INTERNET, DINKES_HOST, 40)),
            14 + 20,
        ),
        (
            frame(eth(ETH_IP6), ipv6_tcp(INTERNET_V6, DINKES_V6, 40)),
            14 + 40,
        ),
        (
            frame(
                vlan([0x81, 0x00], 100, ETH_IP),
                ipv4_tcp(INTERNET, DINKES_HOST, 40),
            ),
            15,
        ),
        (frame(qinq, ipv6_tcp(INTERNET_V6, DINKES_V6, 40)), 15),
    ];
    let dinkes = htb_priority(opd_class_minor(fx.slot("dinkes")));
    let default = htb_priority(DEFAULT_CLASS_MINOR);
    let mut runs = 0;
    for (f, shortest) in &frames {
        for len in *shortest..=f.len() {
            let out = fx.down(&f[..len]);
            assert!(
                out.priority == dinkes || out.priority == default,
                "truncated to {len}: priority {:#x}",
                out.priority
            );
            runs += 1;
        }
    }
    let malformed = fx.dp.stats().unwrap()[Stat::MalformedDownload as usize];
    assert!(
        malformed > 0,
        "truncated headers must be counted as malformed"
    );
    let total: u64 = fx.dp.counters(fx.slot("dinkes")).unwrap().packets[DOWNLOAD]
        + fx.dp.unclassified().unwrap().packets[DOWNLOAD];
    assert_eq!(total, runs, "every frame is counted exactly once");
}

#[test]
fn bad_header_lengths_and_versions_are_malformed_not_dropped() {
    let fx = fixture();
    let mut bad_ihl = ipv4_tcp(INTERNET, DINKES_HOST, 20);
    bad_ihl[0] = 0x43; // IHL 3 (< 5)
    let mut bad_version = ipv4_tcp(INTERNET, DINKES_HOST, 20);
    bad_version[0] = 0x65; // version 6 in an IPv4 ethertype
    let mut long_options = ipv4_tcp(INTERNET, DINKES_HOST, 0);
    long_options[0] = 0x4f; // IHL 15 = 60 bytes, longer than the packet holds
    long_options.truncate(44);
    for l3 in [bad_ihl, bad_version, long_options] {
        let out = fx.down(&frame(eth(ETH_IP), l3));
        assert_eq!(out.priority, htb_priority(DEFAULT_CLASS_MINOR));
    }
    assert_eq!(fx.dp.stats().unwrap()[Stat::MalformedDownload as usize], 3);
    assert_eq!(
        fx.dp.counters(fx.slot("dinkes")).unwrap().packets[DOWNLOAD],
        0
    );
}

#[test]
fn ipv4_options_do_not_confuse_the_parser() {
    let fx = fixture();
    let mut p = ipv4_tcp(INTERNET, DINKES_HOST, 0);
    // Insert 8 bytes of options (NOPs) after the fixed header: IHL 7.
    p[0] = 0x47;
    p.splice(20..20, [1u8; 8]);
    let out = fx.down(&frame(eth(ETH_IP), p));
    assert_eq!(
        out.priority,
        htb_priority(opd_class_minor(fx.slot("dinkes")))
    );
}

#[test]
fn upload_is_marked_at_lan_ingress_and_classified_by_mark_after_nat() {
    let fx = fixture();
    let slot = fx.slot("bappeda");
    // LAN ingress: source 10.20.2.9 -> mark carries slot + 1; bits outside
    // the mask (someone else's) are kept.
    let before_nat = frame(eth(ETH_IP), ipv4_tcp(BAPPEDA_HOST, INTERNET, 200));
    let marked = fx.run(
        program_names::UPLOAD_MARK,
        &before_nat,
        SkbContext {
            mark: 0x0000_0042,
            ..Default::default()
        },
    );
    assert_eq!(marked.mark, 0x42 | ((slot + 1) << MASK.trailing_zeros()));

    // WAN egress after masquerade: the source is now the gateway's address,
    // yet the packet is bappeda's because of the mark.
    let after_nat = frame(eth(ETH_IP), ipv4_tcp([198, 51, 100, 2], INTERNET, 200));
    let out = fx.run(
        program_names::UPLOAD,
        &after_nat,
        SkbContext {
            mark: marked.mark,
            ..Default::default()
        },
    );
    assert_eq!(out.priority, htb_priority(opd_class_minor(slot)));
    let c = fx.dp.counters(slot).unwrap();
    assert_eq!(c.packets[UPLOAD], 1);
    assert_eq!(c.bytes[UPLOAD], after_nat.len() as u64);
    assert_eq!(c.packets[DOWNLOAD], 0);
}

#[test]
fn upload_without_nat_is_classified_by_source_address() {
    let fx = fixture();
    let f = frame(eth(ETH_IP), ipv4_tcp(DINKES_HOST, INTERNET, 300));
    let out = fx.run(program_names::UPLOAD, &f, SkbContext::default());
    assert_eq!(
        out.priority,
        htb_priority(opd_class_minor(fx.slot("dinkes")))
    );
    // The gateway's own traffic is unclassified.
    let own = frame(eth(ETH_IP), ipv4_tcp([198, 51, 100, 2], INTERNET, 300));
    let out = fx.run(program_names::UPLOAD, &own, SkbContext::default());
    assert_eq!(out.priority, htb_priority(DEFAULT_CLASS_MINOR));
    assert_eq!(fx.dp.unclassified().unwrap().packets[UPLOAD], 1);
}

#[test]
fn gso_packets_count_the_headers_of_every_segment() {
    let fx = fixture();
    // BPF_PROG_TEST_RUN takes frames up to about a page.
    let f = frame(eth(ETH_IP), ipv4_tcp(INTERNET, DINKES_HOST, 1448 * 2));
    // gso_size stays 0: this kernel's test run rejects a GSO size on a
    // frame without a GSO type, and the program only reads gso_segs.
    let ctx = SkbContext {
        gso_segs: 2,
        ..Default::default()
    };
    fx.run(program_names::DOWNLOAD, &f, ctx);
    // 14 Ethernet + 20 IPv4 + 20 TCP, repeated for the second segment.
    let expected = f.len() as u64 + 54;
    assert_eq!(
        fx.dp.counters(fx.slot("dinkes")).unwrap().bytes[DOWNLOAD],
        expected
    );
}

#[test]
fn moving_a_subnet_takes_effect_despite_the_address_cache() {
    let mut fx = fixture();
    let f = frame(eth(ETH_IP), ipv4_tcp(INTERNET, [172, 16, 9, 3], 10));
    // Warm the cache: 172.16.9.0/28 belongs to bappeda.
    let out = fx.down(&f);
    assert_eq!(
        out.priority,
        htb_priority(opd_class_minor(fx.slot("bappeda")))
    );
    let bappeda_slot = fx.slot("bappeda");
    let dinkes_slot = fx.slot("dinkes");
    // Move it to dinkes.
    fx.dp
        .sync_opds(&[
            OpdPrefixes {
                id: "dinkes".into(),
                prefixes: vec![v4([10, 20, 1, 0], 24), v4([172, 16, 9, 0], 28)],
            },
            OpdPrefixes {
                id: "bappeda".into(),
                prefixes: vec![v4([10, 20, 2, 0], 24)],
            },
        ])
        .unwrap();
    assert_eq!(
        fx.slot("bappeda"),
        bappeda_slot,
        "an OPD that stays keeps its slot"
    );
    assert_eq!(fx.slot("dinkes"), dinkes_slot);
    let out = fx.down(&f);
    assert_eq!(out.priority, htb_priority(opd_class_minor(dinkes_slot)));
}

#[test]
fn a_removed_opds_slot_is_retired_until_released_and_never_inherited() {
    let mut fx = fixture();
    let f = frame(eth(ETH_IP), ipv4_tcp(INTERNET, BAPPEDA_HOST, 10));
    fx.down(&f);
    let old = fx.slot("bappeda");
    assert_eq!(fx.dp.counters(old).unwrap().packets[DOWNLOAD], 1);
    let dinkes = || OpdPrefixes {
        id: "dinkes".into(),
        prefixes: vec![v4([10, 20, 1, 0], 24)],
    };
    let bpkad = || OpdPrefixes {
        id: "bpkad".into(),
        prefixes: vec![v4([10, 20, 3, 0], 24)],
    };
    fx.dp.sync_opds(&[dinkes()]).unwrap();
    assert!(!fx.dp.slots().contains_key("bappeda"));
    assert_eq!(fx.dp.retired().get("bappeda"), Some(&old));
    // bappeda's address now matches nothing.
    assert_eq!(fx.down(&f).priority, htb_priority(DEFAULT_CLASS_MINOR));
    // A new OPD does not take the retired slot.
    fx.dp.sync_opds(&[dinkes(), bpkad()]).unwrap();
    assert_ne!(fx.slot("bpkad"), old);
    // Once released (its counters were scraped), the slot is reused, zeroed.
    fx.dp.release(&[old].into_iter().collect());
    fx.dp
        .sync_opds(&[
            dinkes(),
            bpkad(),
            OpdPrefixes {
                id: "bapenda".into(),
                prefixes: vec![v4([10, 20, 4, 0], 24)],
            },
        ])
        .unwrap();
    assert_eq!(fx.slot("bapenda"), old, "the lowest free slot is reused");
    assert_eq!(
        fx.dp.counters(old).unwrap().packets[DOWNLOAD],
        0,
        "a new OPD never inherits counters"
    );
}

#[test]
fn an_opd_removed_and_added_back_before_release_keeps_its_counters() {
    let mut fx = fixture();
    let f = frame(eth(ETH_IP), ipv4_tcp(INTERNET, BAPPEDA_HOST, 10));
    fx.down(&f);
    let slot = fx.slot("bappeda");
    let all = [
        OpdPrefixes {
            id: "dinkes".into(),
            prefixes: vec![v4([10, 20, 1, 0], 24)],
        },
        OpdPrefixes {
            id: "bappeda".into(),
            prefixes: vec![v4([10, 20, 2, 0], 24)],
        },
    ];
    fx.dp.sync_opds(&all[..1]).unwrap();
    fx.dp.sync_opds(&all).unwrap();
    assert_eq!(fx.slot("bappeda"), slot);
    assert!(fx.dp.retired().is_empty());
    assert_eq!(fx.dp.counters(slot).unwrap().packets[DOWNLOAD], 1);
}

#[test]
fn a_restarted_daemon_adopts_slots_and_counters_from_the_pins() {
    require_root();
    let bpffs = BpffsMount::new("jt-cls").unwrap();
    let slot;
    {
        let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
        dp.sync_opds(&[
            OpdPrefixes {
                id: "rsud".into(),
                prefixes: vec![v4([10, 30, 0, 0], 16)],
            },
            OpdPrefixes {
                id: "dinkes".into(),
                prefixes: vec![v4([10, 20, 1, 0], 24)],
            },
        ])
        .unwrap();
        slot = dp.slots()["dinkes"];
        let f = frame(eth(ETH_IP), ipv4_tcp(INTERNET, DINKES_HOST, 100));
        dp.test_run(program_names::DOWNLOAD, &f, &SkbContext::forwarded(), 5)
            .unwrap();
    }
    let dp = Datapath::load_pinned(bpffs.path()).unwrap();
    assert_eq!(dp.slots()["dinkes"], slot);
    assert_eq!(dp.counters(slot).unwrap().packets[DOWNLOAD], 5);
}

#[test]
fn addresses_sharing_a_cache_entry_are_never_confused() {
    let fx = fixture();
    // Two addresses, one in each OPD, that the direct-mapped cache puts in
    // the same entry.
    let index = |a: [u8; 4]| {
        let mut k = jatah_common::AddrKey::default();
        k.addr[10] = 0xff;
        k.addr[11] = 0xff;
        k.addr[12..].copy_from_slice(&a);
        jatah_common::cache_index(&k)
    };
    let a = [10, 20, 1, 1];
    // 10.20.2.0/24 has 256 addresses for 4,096 entries: search a /16 of
    // bappeda's instead by giving it one for this test.
    let mut fx = fx;
    fx.dp
        .sync_opds(&[
            OpdPrefixes {
                id: "dinkes".into(),
                prefixes: vec![v4([10, 20, 1, 0], 24)],
            },
            OpdPrefixes {
                id: "bappeda".into(),
                prefixes: vec![v4([10, 30, 0, 0], 16)],
            },
        ])
        .unwrap();
    let b = (0..=0xffffu32)
        .map(|x| [10, 30, (x >> 8) as u8, x as u8])
        .find(|b| index(*b) == index(a))
        .expect("a colliding address in 10.30.0.0/16");
    let dinkes = htb_priority(opd_class_minor(fx.slot("dinkes")));
    let bappeda = htb_priority(opd_class_minor(fx.slot("bappeda")));
    for _ in 0..3 {
        assert_eq!(
            fx.down(&frame(eth(ETH_IP), ipv4_tcp(INTERNET, a, 10)))
                .priority,
            dinkes
        );
        assert_eq!(
            fx.down(&frame(eth(ETH_IP), ipv4_tcp(INTERNET, b, 10)))
                .priority,
            bappeda
        );
    }
}

/// An IPv4 TCP frame with the given ports and flags.
fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut p = ipv4_tcp(src, dst, payload);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[33] = flags;
    frame(eth(ETH_IP), p)
}

const SYN: u8 = 0x02;
const SYNACK: u8 = 0x12;
const ACK: u8 = 0x10;

#[test]
fn handshakes_give_lan_and_wan_round_trips_per_opd() {
    use jatah_common::{SIDE_LAN, SIDE_WAN};
    let mut fx = fixture();
    fx.dp.set_rtt_tracking(true).unwrap();
    let slot = fx.slot("dinkes");
    let ul = |fx: &Fixture, f: &[u8]| fx.run(program_names::UPLOAD_MARK, f, SkbContext::default());
    // An OPD host opens a connection: SYN out, SYN-ACK back, ACK out.
    ul(&fx, &tcp4(DINKES_HOST, INTERNET, 40000, 443, SYN, 0));
    std::thread::sleep(std::time::Duration::from_millis(3));
    fx.down(&tcp4(INTERNET, DINKES_HOST, 443, 40000, SYNACK, 0));
    std::thread::sleep(std::time::Duration::from_millis(1));
    ul(&fx, &tcp4(DINKES_HOST, INTERNET, 40000, 443, ACK, 0));
    let wan = fx.dp.rtt(slot, SIDE_WAN).unwrap();
    let lan = fx.dp.rtt(slot, SIDE_LAN).unwrap();
    assert_eq!((wan.count, lan.count), (1, 1), "one round trip per side");
    assert!(
        wan.sum_ns >= 3_000_000,
        "WAN leg includes the 3 ms wait: {}",
        wan.sum_ns
    );
    assert!(
        lan.sum_ns >= 1_000_000 && lan.sum_ns < wan.sum_ns,
        "LAN leg: {}",
        lan.sum_ns
    );
    assert_eq!(wan.buckets.iter().sum::<u64>(), 1);
    // The 3 ms WAN leg lands in the 2..4 ms (or, if slow, a later) bucket.
    assert!(wan.buckets[..4].iter().sum::<u64>() == 0);
    assert_eq!((wan.started, lan.started), (1, 1));

    // Data and further ACKs of the connection change nothing.
    for _ in 0..5 {
        ul(&fx, &tcp4(DINKES_HOST, INTERNET, 40000, 443, ACK, 100));
        fx.down(&tcp4(INTERNET, DINKES_HOST, 443, 40000, ACK, 1000));
    }
    assert_eq!(fx.dp.rtt(slot, SIDE_WAN).unwrap().count, 1);
    assert_eq!(fx.dp.rtt(slot, SIDE_LAN).unwrap().count, 1);

    // A SYN sent again is a retransmission: the first went unanswered.
    ul(&fx, &tcp4(DINKES_HOST, INTERNET, 40001, 443, SYN, 0));
    ul(&fx, &tcp4(DINKES_HOST, INTERNET, 40001, 443, SYN, 0));
    let wan = fx.dp.rtt(slot, SIDE_WAN).unwrap();
    assert_eq!((wan.started, wan.retransmits), (2, 1));

    // A connection opened from the Internet: SYN in, SYN-ACK out, ACK in.
    fx.down(&tcp4(INTERNET, DINKES_HOST, 50000, 80, SYN, 0));
    ul(&fx, &tcp4(DINKES_HOST, INTERNET, 80, 50000, SYNACK, 0));
    fx.down(&tcp4(INTERNET, DINKES_HOST, 50000, 80, ACK, 0));
    assert_eq!(fx.dp.rtt(slot, SIDE_LAN).unwrap().count, 2);
    assert_eq!(fx.dp.rtt(slot, SIDE_WAN).unwrap().count, 2);
    // Nothing was attributed to the other OPD.
    let other = fx.slot("bappeda");
    assert_eq!(fx.dp.rtt(other, SIDE_LAN).unwrap().count, 0);
    assert_eq!(fx.dp.rtt(other, SIDE_WAN).unwrap().count, 0);
}

#[test]
fn handshake_timing_is_off_unless_enabled_and_ignores_resets() {
    use jatah_common::SIDE_WAN;
    let mut fx = fixture();
    let slot = fx.slot("dinkes");
    let ul = |fx: &Fixture, f: &[u8]| fx.run(program_names::UPLOAD_MARK, f, SkbContext::default());
    ul(&fx, &tcp4(DINKES_HOST, INTERNET, 40000, 443, SYN, 0));
    fx.down(&tcp4(INTERNET, DINKES_HOST, 443, 40000, SYNACK, 0));
    assert_eq!(
        fx.dp.rtt(slot, SIDE_WAN).unwrap().started,
        0,
        "tracking is off by default"
    );
    fx.dp.set_rtt_tracking(true).unwrap();
    ul(&fx, &tcp4(DINKES_HOST, INTERNET, 40002, 443, SYN | 0x04, 0));
    assert_eq!(
        fx.dp.rtt(slot, SIDE_WAN).unwrap().started,
        0,
        "RST-flagged SYNs are ignored"
    );
}

#[test]
fn batch_map_reads_give_what_entry_by_entry_reads_give() {
    use jatah_common::{SIDE_LAN, SIDE_WAN};
    let mut fx = fixture();
    fx.dp.set_rtt_tracking(true).unwrap();
    let ul = |fx: &Fixture, f: &[u8]| fx.run(program_names::UPLOAD_MARK, f, SkbContext::default());
    for port in 43000..43010u16 {
        ul(&fx, &tcp4(DINKES_HOST, INTERNET, port, 443, SYN, 0));
        fx.down(&tcp4(INTERNET, DINKES_HOST, 443, port, SYNACK, 100));
        ul(&fx, &tcp4(DINKES_HOST, INTERNET, port, 443, ACK, 0));
    }
    let reader = jatah::datapath::CounterReader::open(fx._bpffs.path()).unwrap();
    let n = fx.dp.slots().values().max().unwrap() + 1;
    let counters = reader.read_first(n).unwrap();
    let rtts = reader.rtt_first(n).unwrap();
    assert_eq!((counters.len(), rtts.len()), (n as usize, 2 * n as usize));
    for slot in 0..n {
        assert_eq!(counters[slot as usize], reader.read(slot).unwrap());
        for side in [SIDE_LAN, SIDE_WAN] {
            assert_eq!(
                rtts[jatah_common::rtt_index(slot, side) as usize],
                reader.rtt(slot, side).unwrap()
            );
        }
    }
    let dinkes = fx.slot("dinkes");
    assert!(counters[dinkes as usize].packets[jatah_common::DOWNLOAD] >= 10);
    assert_eq!(rtts[(dinkes * 2 + SIDE_WAN) as usize].count, 10);
}

#[test]
fn only_sampled_connections_are_timed_and_all_their_packets_agree() {
    use jatah_common::{SIDE_LAN, SIDE_WAN, handshake_sampled};
    let mut fx = fixture();
    fx.dp.set_rtt_tracking(true).unwrap();
    // One connection in 8.
    fx.dp.set_rtt_sampling(3).unwrap();
    let flags = 3 << jatah_common::RTT_SAMPLE_SHIFT_POS;
    let slot = fx.slot("dinkes");
    let ul = |fx: &Fixture, f: &[u8]| fx.run(program_names::UPLOAD_MARK, f, SkbContext::default());
    let mut sampled = 0;
    for port in 41000..41064u16 {
        sampled += u64::from(handshake_sampled(port, 443, flags));
        ul(&fx, &tcp4(DINKES_HOST, INTERNET, port, 443, SYN, 0));
        fx.down(&tcp4(INTERNET, DINKES_HOST, 443, port, SYNACK, 0));
        ul(&fx, &tcp4(DINKES_HOST, INTERNET, port, 443, ACK, 0));
    }
    assert!(
        (2..=20).contains(&sampled),
        "about 8 of 64 connections are in the sample: {sampled}"
    );
    let (wan, lan) = (
        fx.dp.rtt(slot, SIDE_WAN).unwrap(),
        fx.dp.rtt(slot, SIDE_LAN).unwrap(),
    );
    // Every sampled handshake is timed on both legs, and no other.
    assert_eq!((wan.started, wan.count), (sampled, sampled));
    assert_eq!((lan.started, lan.count), (sampled, sampled));
    assert_eq!(wan.retransmits + lan.retransmits, 0);

    // Sampling off again (shift 0): every connection is timed.
    fx.dp.set_rtt_sampling(0).unwrap();
    ul(&fx, &tcp4(DINKES_HOST, INTERNET, 42000, 443, SYN, 0));
    fx.down(&tcp4(INTERNET, DINKES_HOST, 443, 42000, SYNACK, 0));
    assert_eq!(fx.dp.rtt(slot, SIDE_WAN).unwrap().count, sampled + 1);
}

#[test]
fn what_the_gateway_itself_sends_an_opd_is_not_the_opds_usage() {
    let fx = fixture();
    let f = frame(eth(ETH_IP), ipv4_tcp([10, 20, 1, 1], DINKES_HOST, 56));
    // ingress_ifindex 0: sent by the gateway (a probe, its own service).
    let (ret, out, _) = fx
        .dp
        .test_run(program_names::DOWNLOAD, &f, &SkbContext::default(), 1)
        .unwrap();
    assert_eq!(ret, -1);
    assert_eq!(out.priority, htb_priority(DEFAULT_CLASS_MINOR));
    assert_eq!(
        fx.dp.counters(fx.slot("dinkes")).unwrap().packets[DOWNLOAD],
        0
    );
    assert_eq!(fx.dp.unclassified().unwrap().packets[DOWNLOAD], 1);
    // The same frame forwarded from the Internet is dinkes'.
    fx.down(&f);
    assert_eq!(
        fx.dp.counters(fx.slot("dinkes")).unwrap().packets[DOWNLOAD],
        1
    );
}

#[test]
fn pins_of_another_layout_are_replaced_not_misread() {
    require_root();
    let bpffs = BpffsMount::new("jt-cls").unwrap();
    // An older jatah's layout: a directory with a pinned map in it.
    let old = bpffs.path().join("jatah/v0");
    std::fs::create_dir_all(&old).unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(old.join("JATAH_COUNTERS"))
        .args([
            "type",
            "array",
            "key",
            "4",
            "value",
            "8",
            "entries",
            "1",
            "name",
            "old_counters",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(old.join("JATAH_COUNTERS").exists());
    let dp = Datapath::load_pinned(bpffs.path()).unwrap();
    assert!(!old.exists(), "the old layout's pins are removed");
    assert!(dp.slots().is_empty(), "nothing was read from them");
    assert!(
        bpffs
            .path()
            .join(format!("jatah/v{}", jatah_common::LAYOUT_VERSION))
            .exists()
    );
}

/// An IPv4 UDP frame of `payload` bytes between the given ports.
fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let mut p = ipv4_tcp(src, dst, 0);
    p.truncate(20);
    p[9] = 17;
    let total = 20 + 8 + payload;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend(std::iter::repeat_n(0x11, payload));
    frame(eth(ETH_IP), p)
}

#[test]
fn with_lanes_small_and_urgent_packets_take_the_interactive_lane() {
    use jatah_common::{IPPROTO_ICMP, bulk_lane_minor, interactive_lane_minor};
    let mut fx = fixture();
    let slot = fx.slot("dinkes");
    let fast = htb_priority(interactive_lane_minor(slot));
    let bulk = htb_priority(bulk_lane_minor(slot));
    let down = |fx: &Fixture, f: &[u8]| fx.down(f).priority;
    let data = tcp4(INTERNET, DINKES_HOST, 443, 40000, ACK, 1000);
    let ack = tcp4(INTERNET, DINKES_HOST, 443, 40000, ACK, 0);
    assert_eq!(
        down(&fx, &ack),
        htb_priority(opd_class_minor(slot)),
        "lanes off"
    );

    fx.dp.set_lanes(true).unwrap();
    assert_eq!(down(&fx, &data), bulk);
    assert_eq!(down(&fx, &ack), fast, "a pure ACK");
    assert_eq!(
        down(&fx, &tcp4(INTERNET, DINKES_HOST, 443, 40000, SYNACK, 0)),
        fast
    );
    assert_eq!(
        down(&fx, &tcp4(INTERNET, DINKES_HOST, 443, 40000, ACK, 1)),
        bulk
    );
    assert_eq!(
        down(&fx, &tcp4(INTERNET, DINKES_HOST, 53, 40000, ACK, 900)),
        fast,
        "DNS"
    );
    let mut ef = data.clone();
    ef[15] = 46 << 2;
    assert_eq!(down(&fx, &ef), fast, "DSCP EF");
    let mut cs1 = data.clone();
    cs1[15] = 8 << 2;
    assert_eq!(down(&fx, &cs1), bulk, "DSCP CS1");
    let mut icmp = ack.clone();
    icmp[14 + 9] = IPPROTO_ICMP;
    assert_eq!(down(&fx, &icmp), fast, "ICMP");
    assert_eq!(
        down(&fx, &udp4(INTERNET, DINKES_HOST, 5004, 5004, 160)),
        fast,
        "a voice frame"
    );
    assert_eq!(
        down(&fx, &udp4(INTERNET, DINKES_HOST, 443, 50000, 1200)),
        bulk,
        "QUIC data"
    );
    assert_eq!(
        down(&fx, &udp4(INTERNET, DINKES_HOST, 53, 50000, 1200)),
        fast,
        "DNS over UDP"
    );
    // A GSO packet of data is data, even if one segment were small.
    let gso = fx.run(
        program_names::DOWNLOAD,
        &data,
        SkbContext {
            gso_segs: 2,
            gso_size: 500,
            ..Default::default()
        },
    );
    assert_eq!(gso.priority, bulk);
    // IPv6: a pure ACK and data.
    let v6 = |payload| frame(eth(ETH_IP6), ipv6_tcp(INTERNET_V6, DINKES_V6, payload));
    assert_eq!(down(&fx, &v6(0)), fast);
    assert_eq!(down(&fx, &v6(1000)), bulk);
    // Truncated after the IP header: counted and sent on, as bulk.
    let cut = &data[..14 + 20 + 4];
    assert_eq!(down(&fx, cut), bulk);

    // Upload, after NAT, by the mark: ACKs of a download go first.
    let up = |f: &[u8]| fx.up_tagged(slot, f).priority;
    let gw = [198, 51, 100, 2];
    assert_eq!(up(&tcp4(gw, INTERNET, 40000, 443, ACK, 0)), fast);
    assert_eq!(up(&tcp4(gw, INTERNET, 40000, 443, ACK, 1400)), bulk);

    fx.dp.set_lanes(false).unwrap();
    assert_eq!(down(&fx, &ack), htb_priority(opd_class_minor(slot)));
    // Unclassified traffic never takes a lane.
    let other = tcp4(INTERNET, [10, 99, 0, 1], 443, 40000, ACK, 0);
    fx.dp.set_lanes(true).unwrap();
    assert_eq!(down(&fx, &other), htb_priority(DEFAULT_CLASS_MINOR));
}

/// A TCP frame toward or from an OPD with sequence number `seq`.
fn tcp4_seq(
    src: [u8; 4],
    dst: [u8; 4],
    ports: [u16; 2],
    flags: u8,
    seq: u32,
    payload: usize,
) -> Vec<u8> {
    let mut f = tcp4(src, dst, ports[0], ports[1], flags, payload);
    f[14 + 24..14 + 28].copy_from_slice(&seq.to_be_bytes());
    f
}

#[test]
fn a_new_connections_first_bytes_take_the_interactive_lane_and_the_rest_bulk() {
    use jatah_common::{FIRST_BYTES, bulk_lane_minor, interactive_lane_minor};
    let mut fx = fixture();
    let slot = fx.slot("dinkes");
    let fast = htb_priority(interactive_lane_minor(slot));
    let bulk = htb_priority(bulk_lane_minor(slot));
    fx.dp.set_lanes(true).unwrap();
    let ports = [443, 40001];
    let isn = u32::MAX - 100; // its first bytes wrap around zero
    let synack = tcp4_seq(INTERNET, DINKES_HOST, ports, SYNACK, isn, 0);
    let data = |offset: u32| {
        let seq = isn.wrapping_add(1).wrapping_add(offset);
        tcp4_seq(INTERNET, DINKES_HOST, ports, ACK, seq, 1400)
    };
    // Off: a connection's data is bulk from its first byte.
    fx.dp.set_first_bytes(false).unwrap();
    assert_eq!(fx.down(&synack).priority, fast);
    assert_eq!(fx.down(&data(0)).priority, bulk, "off");

    fx.dp.set_first_bytes(true).unwrap();
    assert_eq!(
        fx.down(&data(0)).priority,
        bulk,
        "its SYN-ACK passed while off"
    );
    assert_eq!(fx.down(&synack).priority, fast);
    assert_eq!(fx.down(&data(0)).priority, fast, "the first segment");
    assert_eq!(fx.down(&data(FIRST_BYTES - 1400)).priority, fast);
    assert_eq!(
        fx.down(&data(FIRST_BYTES)).priority,
        bulk,
        "past its first bytes"
    );
    assert_eq!(
        fx.down(&data(5 << 20)).priority,
        bulk,
        "a long download's middle"
    );
    assert_eq!(
        fx.down(&data(0)).priority,
        fast,
        "its first bytes sent again"
    );
    // Another connection of the same host, whose start was not seen.
    let other = tcp4_seq(
        INTERNET,
        DINKES_HOST,
        [443, 40002],
        ACK,
        isn.wrapping_add(1),
        1400,
    );
    assert_eq!(fx.down(&other).priority, bulk);
    // A connection the office accepts: the Internet host's SYN starts it.
    let syn = tcp4_seq(INTERNET, DINKES_HOST, [50000, 8080], SYN, 7, 0);
    assert_eq!(fx.down(&syn).priority, fast);
    let request = tcp4_seq(INTERNET, DINKES_HOST, [50000, 8080], ACK, 8, 600);
    assert_eq!(fx.down(&request).priority, fast);
    // Upload is judged as before: its data is bulk.
    let gw = [198, 51, 100, 2];
    let up = |f: &[u8]| fx.up_tagged(slot, f).priority;
    assert_eq!(up(&tcp4_seq(gw, INTERNET, [40003, 443], SYN, 99, 0)), fast);
    assert_eq!(
        up(&tcp4_seq(gw, INTERNET, [40003, 443], ACK, 100, 1400)),
        bulk
    );
    // IPv6: a SYN-ACK, then its data (sequence
    // numbers at the TCP header's offset 4, after the 40-byte IPv6 header).
    let v6 = |flags: u8, seq: u32, payload: usize| {
        let mut f = frame(eth(ETH_IP6), ipv6_tcp(INTERNET_V6, DINKES_V6, payload));
        f[14 + 40 + 13] = flags;
        f[14 + 40 + 4..14 + 40 + 8].copy_from_slice(&seq.to_be_bytes());
        f
    };
    assert_eq!(
        fx.down(&v6(ACK, 501, 1000)).priority,
        bulk,
        "IPv6, start not seen"
    );
    assert_eq!(fx.down(&v6(SYNACK, 500, 0)).priority, fast);
    assert_eq!(
        fx.down(&v6(ACK, 501, 1000)).priority,
        fast,
        "IPv6, its first bytes"
    );
    let past = 501 + FIRST_BYTES;
    assert_eq!(
        fx.down(&v6(ACK, past, 1000)).priority,
        bulk,
        "IPv6, past them"
    );
    // Without lanes there is no lane to take.
    fx.dp.set_lanes(false).unwrap();
    assert_eq!(
        fx.down(&data(0)).priority,
        htb_priority(opd_class_minor(slot))
    );
}

#[test]
fn a_later_ipv4_fragment_is_never_read_as_a_tcp_header() {
    use jatah_common::{SIDE_WAN, bulk_lane_minor, interactive_lane_minor};
    let mut fx = fixture();
    fx.dp.set_lanes(true).unwrap();
    fx.dp.set_rtt_tracking(true).unwrap();
    let slot = fx.slot("dinkes");
    // The middle of someone's payload that happens to look like a TCP
    // header from port 53 (DNS), and like a SYN.
    let later = |mut f: Vec<u8>| {
        f[14 + 6..14 + 8].copy_from_slice(&0x00b9u16.to_be_bytes()); // offset 185 * 8
        f
    };
    let dns_like = tcp4(INTERNET, DINKES_HOST, 53, 40000, ACK, 900);
    assert_eq!(
        fx.down(&dns_like).priority,
        htb_priority(interactive_lane_minor(slot)),
        "as a first fragment it is DNS"
    );
    assert_eq!(
        fx.down(&later(dns_like)).priority,
        htb_priority(bulk_lane_minor(slot)),
        "a later fragment is bulk: its ports are payload"
    );
    // Still counted as dinkes's.
    assert!(fx.dp.counters(slot).unwrap().packets[jatah_common::DOWNLOAD] >= 2);
    // Nor timed as a handshake.
    let syn = tcp4(DINKES_HOST, INTERNET, 40000, 443, SYN, 0);
    fx.run(
        program_names::UPLOAD_MARK,
        &later(syn),
        SkbContext::default(),
    );
    assert_eq!(fx.dp.rtt(slot, SIDE_WAN).unwrap().started, 0);
}

#[test]
fn on_a_trunk_an_opd_bound_to_its_vlan_is_its_addresses_only_there() {
    use jatah_common::{DEFAULT_CLASS_MINOR, NO_OPD_TAG, Place};
    let mut fx = fixture();
    let slot = fx.slot("dinkes");
    // dinkes is VLAN 20 of the trunk with ifindex 7.
    let bound = Place {
        ifindex: 7,
        vlan: 20,
        _pad: 0,
    };
    fx.dp
        .set_places(&[(slot, bound)].into_iter().collect())
        .unwrap();
    let tagged = |vid| {
        frame(
            vlan([0x81, 0x00], vid, ETH_IP),
            ipv4_tcp(DINKES_HOST, INTERNET, 100),
        )
    };
    let tag_at = |fx: &Fixture, vid, ifindex| {
        let out = fx.run(
            program_names::UPLOAD_MARK,
            &tagged(vid),
            SkbContext {
                ingress_ifindex: ifindex,
                ..Default::default()
            },
        );
        (out.mark & MASK) >> MASK.trailing_zeros()
    };
    assert_eq!(tag_at(&fx, 20, 7), slot + 1, "its own VLAN");
    assert_eq!(tag_at(&fx, 30, 7), NO_OPD_TAG, "another VLAN of the trunk");
    assert_eq!(tag_at(&fx, 20, 8), NO_OPD_TAG, "another interface");
    // Decided at LAN ingress: on the WAN side it stays no OPD's, though its
    // source address is dinkes's.
    let wan = fx.run(
        program_names::UPLOAD,
        &frame(eth(ETH_IP), ipv4_tcp(DINKES_HOST, INTERNET, 100)),
        SkbContext {
            mark: NO_OPD_TAG << MASK.trailing_zeros(),
            ..Default::default()
        },
    );
    assert_eq!(wan.priority, htb_priority(DEFAULT_CLASS_MINOR));
    let reader = jatah::datapath::CounterReader::open(fx._bpffs.path()).unwrap();
    assert_eq!(reader.misplaced(slot).unwrap(), 2);
    // Unbound again: anywhere.
    fx.dp.set_places(&Default::default()).unwrap();
    assert_eq!(tag_at(&fx, 30, 9), slot + 1);
}
