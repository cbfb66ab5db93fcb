//! Hostile input: random and adversarial frames through the classifiers
//! (BPF_PROG_TEST_RUN), and mangled policy files through the parser. The
//! programs never drop and always return; a well-formed packet is never
//! misattributed; the parser never panics and every error has a place.

use jatah::datapath::{Datapath, OpdPrefixes, Prefix, SkbContext};
use jatah::lab::netns::{BpffsMount, require_root};
use jatah_common::{DEFAULT_CLASS_MINOR, htb_priority, opd_class_minor, program_names};

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const TC_ACT_UNSPEC: i32 = -1;

fn datapath() -> (Datapath, BpffsMount) {
    require_root();
    let bpffs = BpffsMount::new("jt-hostile").unwrap();
    let mut dp = Datapath::load_pinned(bpffs.path()).unwrap();
    dp.set_mark_mask(0x7fff_0000).unwrap();
    dp.set_rtt_tracking(true).unwrap();
    dp.sync_opds(&[
        OpdPrefixes {
            id: "a".into(),
            prefixes: vec![
                Prefix::V4([10, 1, 0, 0], 16),
                Prefix::V6([0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 48),
            ],
        },
        OpdPrefixes {
            id: "b".into(),
            prefixes: vec![Prefix::V4([10, 2, 0, 0], 16)],
        },
    ])
    .unwrap();
    (dp, bpffs)
}

#[test]
fn random_frames_are_never_dropped_and_always_classified_somewhere() {
    let (dp, _bpffs) = datapath();
    let mut rng = Rng(0x6a61_7461_6821);
    let allowed = [
        htb_priority(DEFAULT_CLASS_MINOR),
        htb_priority(opd_class_minor(dp.slots()["a"])),
        htb_priority(opd_class_minor(dp.slots()["b"])),
    ];
    let progs = [
        program_names::DOWNLOAD,
        program_names::UPLOAD_MARK,
        program_names::UPLOAD,
    ];
    let (mut ran, mut refused) = (0, 0);
    for i in 0..20_000 {
        let len = 15 + rng.below(1500) as usize;
        let mut f = rng.bytes(len);
        // Half of them with a plausible ethertype, to get past the first check.
        if i % 2 == 0 {
            let types: [[u8; 2]; 5] = [[8, 0], [0x86, 0xdd], [0x81, 0], [0x88, 0xa8], [8, 6]];
            f[12..14].copy_from_slice(&types[rng.below(5) as usize]);
        }
        let prog = progs[i % 3];
        match dp.test_run(prog, &f, &SkbContext::forwarded(), 1) {
            Ok((ret, out, _)) => {
                ran += 1;
                assert_eq!(ret, TC_ACT_UNSPEC, "{prog} returned {ret} for frame {i}");
                if prog != program_names::UPLOAD_MARK {
                    assert!(
                        allowed.contains(&out.priority),
                        "{prog}: priority {:#x}",
                        out.priority
                    );
                }
            }
            // The kernel refuses some frames before the program runs (an IP
            // ethertype with less than an IP header).
            Err(_) => refused += 1,
        }
    }
    eprintln!("{ran} random frames ran, {refused} refused by the kernel before the program");
    assert!(ran > 15_000);
}

/// A well-formed frame to `dst` with the given number of VLAN tags, L4
/// protocol and IPv4 option words.
fn ipv4_frame(rng: &mut Rng, dst: [u8; 4], tags: usize, proto: u8, option_words: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    for t in 0..tags {
        f.extend_from_slice(if t == 0 && tags == 2 {
            &[0x88, 0xa8]
        } else {
            &[0x81, 0x00]
        });
        f.extend_from_slice(&(rng.below(4095) as u16 + 1).to_be_bytes());
    }
    f.extend_from_slice(&[0x08, 0x00]);
    let ihl = 5 + option_words;
    let payload = 8 + rng.below(200) as usize;
    let total = ihl * 4 + payload;
    f.extend_from_slice(&[
        0x40 | ihl as u8,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        proto,
        0,
        0,
    ]);
    f.extend_from_slice(&[198, 51, 100, rng.below(250) as u8 + 1]);
    f.extend_from_slice(&dst);
    f.extend(std::iter::repeat_n(1u8, option_words * 4)); // NOP options
    let mut l4 = rng.bytes(payload);
    if proto == 6 && payload >= 20 {
        l4[12] = 5 << 4;
    }
    f.extend(l4);
    f
}

/// IPv6 with a chain of extension headers (hop-by-hop, routing,
/// destination options) before the transport header.
fn ipv6_frame(rng: &mut Rng, dst: [u8; 16], ext: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    let chain = [0u8, 43, 60];
    let mut payload = Vec::new();
    for k in 0..ext {
        let next = if k + 1 < ext { chain[k + 1] } else { 17 };
        payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    let tail = 8 + rng.below(100) as usize;
    payload.extend(rng.bytes(tail));
    let first = if ext > 0 { chain[0] } else { 17 };
    f.extend_from_slice(&[
        0x60,
        0,
        0,
        0,
        (payload.len() >> 8) as u8,
        payload.len() as u8,
        first,
        64,
    ]);
    f.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&dst);
    f.extend(payload);
    f
}

#[test]
fn well_formed_packets_are_never_misattributed_whatever_their_headers() {
    let (dp, _bpffs) = datapath();
    let mut rng = Rng(42);
    let a = htb_priority(opd_class_minor(dp.slots()["a"]));
    let b = htb_priority(opd_class_minor(dp.slots()["b"]));
    let default = htb_priority(DEFAULT_CLASS_MINOR);
    for i in 0..5_000 {
        let which = rng.below(3);
        let second = [10, 1 + which as u8, 0, 0][1];
        let dst = [10, second, rng.below(256) as u8, rng.below(256) as u8];
        let want = match which {
            0 => a,
            1 => b,
            _ => default, // 10.3.x.x belongs to nobody
        };
        let proto = [6u8, 17, 1, 47][rng.below(4) as usize];
        let (tags, words) = (rng.below(3) as usize, rng.below(11) as usize);
        let f = ipv4_frame(&mut rng, dst, tags, proto, words);
        let (ret, out, _) = dp
            .test_run(program_names::DOWNLOAD, &f, &SkbContext::forwarded(), 1)
            .unwrap();
        assert_eq!(ret, TC_ACT_UNSPEC);
        assert_eq!(out.priority, want, "frame {i} to {dst:?}: {f:02x?}");
    }
    for i in 0..2_000 {
        let mut dst = [0u8; 16];
        dst[..6].copy_from_slice(&[0xfd, 0, 0, 1, 0, 0]);
        dst[6..].copy_from_slice(&rng.bytes(10));
        let ext = rng.below(4) as usize;
        let f = ipv6_frame(&mut rng, dst, ext);
        let (_, out, _) = dp
            .test_run(program_names::DOWNLOAD, &f, &SkbContext::forwarded(), 1)
            .unwrap();
        assert_eq!(out.priority, a, "IPv6 frame {i} with extension headers");
    }
}

#[test]
fn mangled_policies_never_panic_and_every_error_has_a_place() {
    let base = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/penajam-paser-utara.toml"
    ))
    .unwrap();
    let tokens = [
        "=",
        "[",
        "]",
        "{",
        "}",
        "\"",
        ",",
        "\n",
        "[[opd]]",
        "\"10M\"",
        "\"-5M\"",
        "\"1.5GB\"",
        "0x",
        "#",
        "\u{fffd}",
        "[gateway]",
        "id = \"x\"",
    ];
    let mut rng = Rng(7);
    let lines = base.lines().count();
    for i in 0..3_000 {
        let mut text: Vec<char> = base.chars().collect();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(text.len() as u64) as usize;
            match rng.below(3) {
                0 => {
                    text.remove(at);
                }
                1 => {
                    let t = tokens[rng.below(tokens.len() as u64) as usize];
                    for (k, c) in t.chars().enumerate() {
                        text.insert(at + k, c);
                    }
                }
                _ => text[at] = char::from(rng.below(96) as u8 + 32),
            }
        }
        let text: String = text.into_iter().collect();
        let result = std::panic::catch_unwind(|| jatah::policy::parse(&text, "mangled.toml"));
        let Ok(result) = result else {
            panic!("the parser panicked on mutation {i}:\n{text}");
        };
        if let Err(e) = result {
            assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                assert!(
                    d.line >= 1 && d.line <= lines + 40 && d.column >= 1,
                    "mutation {i}: {d}"
                );
                assert!(!d.message.is_empty());
            }
        }
    }
}
