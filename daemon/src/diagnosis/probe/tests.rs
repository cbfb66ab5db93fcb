use super::icmp::{
    ECHO_LEN, EchoReply, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST, checksum, echo_request, open_socket, parse_reply, send_echo,
};
use super::state::TargetState;
use super::types::Family;
use super::*;
use crate::lab::netns::{NetNs, require_root, unique_token};
use crate::sys;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn fast() -> ProbeConfig {
    ProbeConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(80),
        window: 30,
    }
}

fn target(key: &str, addr: &str) -> ProbeTarget {
    ProbeTarget::new(key, addr.parse().unwrap())
}

/// A prober running the way the daemon runs it: on a thread that entered
/// the namespace, under a current-thread runtime.
struct Running {
    prober: Prober,
    stop: CancellationToken,
    thread: Option<thread::JoinHandle<()>>,
}

impl Running {
    fn start(ns: Arc<NetNs>, config: ProbeConfig, targets: Vec<ProbeTarget>) -> Running {
        let (tx, rx) = mpsc::channel();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let thread = thread::spawn(move || {
            ns.enter_current_thread().expect("enter namespace");
            let prober = Prober::new(config).expect("open ICMP sockets");
            prober.set_targets(targets);
            tx.send(prober.clone()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(prober.run(token));
        });
        let prober = rx.recv().expect("prober thread failed to start");
        Running {
            prober,
            stop,
            thread: Some(thread),
        }
    }

    fn status(&self, key: &str) -> ProbeStatus {
        self.prober.status(key).expect(key)
    }

    /// Polls until `cond` holds, failing with the snapshot if it does not
    /// within `limit`.
    fn wait_for(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Prober) -> bool) {
        let end = Instant::now() + limit;
        while !cond(&self.prober) {
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}: {:#?}",
                self.prober.snapshot()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        self.stop.cancel();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("prober thread panicked");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Namespaces A and B joined by a veth pair, IPv4 and IPv6 on both ends.
struct Lab {
    a: Arc<NetNs>,
    b: NetNs,
    vb: String,
}

const B4: &str = "10.99.0.2";
const B6: &str = "fd00:99::2";

impl Lab {
    fn new() -> Lab {
        require_root();
        let a = NetNs::create("jt-prb").unwrap();
        let b = NetNs::create("jt-prb").unwrap();
        let token = unique_token();
        let (va, vb) = (format!("pa{token}"), format!("pb{token}"));
        a.ip([
            "link",
            "add",
            &va,
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            b.name(),
        ])
        .unwrap();
        a.ip(["addr", "add", "10.99.0.1/24", "dev", &va]).unwrap();
        a.ip(["addr", "add", "fd00:99::1/64", "dev", &va, "nodad"])
            .unwrap();
        a.ip(["link", "set", &va, "up"]).unwrap();
        let lab = Lab {
            a: Arc::new(a),
            b,
            vb,
        };
        lab.b_up();
        lab
    }

    /// (Re)configures B's end; IPv6 addresses vanish when a link goes
    /// down, so bringing it back means adding them again.
    fn b_up(&self) {
        let vb = self.vb.as_str();
        self.b.ip(["link", "set", vb, "up"]).unwrap();
        self.b
            .ip(["addr", "replace", "10.99.0.2/24", "dev", vb])
            .unwrap();
        self.b
            .ip(["addr", "replace", "fd00:99::2/64", "dev", vb, "nodad"])
            .unwrap();
    }
}

fn all_received(p: &Prober, at_least: u64) -> bool {
    p.snapshot().iter().all(|s| s.received >= at_least)
}

#[test]
fn loopback_is_answered_quickly() {
    require_root();
    let ns = Arc::new(NetNs::create("jt-prb").unwrap());
    let run = Running::start(
        ns,
        fast(),
        vec![target("lo:v4", "127.0.0.1"), target("lo:v6", "::1")],
    );
    run.wait_for("5 replies each", Duration::from_secs(5), |p| {
        all_received(p, 5)
    });
    for key in ["lo:v4", "lo:v6"] {
        let s = run.status(key);
        assert!(s.answering(), "{s:?}");
        assert_eq!(s.consecutive_lost, 0, "{s:?}");
        assert_eq!(s.loss_ratio(30), 0.0, "{s:?}");
        assert!(s.received <= s.sent && s.sent - s.received <= 1, "{s:?}");
        assert_eq!(s.completed, s.received, "{s:?}");
        assert!(
            s.median_rtt(30).unwrap() < Duration::from_millis(50),
            "{s:?}"
        );
        assert!(s.last_rtt.unwrap() < Duration::from_millis(50), "{s:?}");
        let age = SystemTime::now()
            .duration_since(s.last_reply_at.unwrap())
            .unwrap();
        assert!(age < Duration::from_secs(1), "{s:?}");
        assert!(s.recent.iter().all(Option::is_some), "{s:?}");
    }
    run.stop();
}

#[test]
fn link_down_is_lost_then_recovers() {
    let lab = Lab::new();
    let run = Running::start(
        lab.a.clone(),
        fast(),
        vec![target("opd:v4", B4), target("opd:v6", B6)],
    );
    run.wait_for("B answering", Duration::from_secs(5), |p| {
        all_received(p, 3) && p.snapshot().iter().all(ProbeStatus::answering)
    });

    lab.b.ip(["link", "set", &lab.vb, "down"]).unwrap();
    run.wait_for("total loss", Duration::from_secs(2), |p| {
        p.snapshot()
            .iter()
            .all(|s| s.loss_ratio(5) == 1.0 && s.consecutive_lost >= 5)
    });
    let first = run.prober.snapshot();
    run.wait_for("loss to keep growing", Duration::from_secs(2), |p| {
        p.snapshot()
            .iter()
            .zip(&first)
            .all(|(now, then)| now.consecutive_lost >= then.consecutive_lost + 3)
    });
    for s in run.prober.snapshot() {
        assert!(!s.answering(), "{s:?}");
        assert!(
            s.last_rtt.is_some(),
            "history of the good days is kept: {s:?}"
        );
        assert!(s.recent.len() <= 30, "{s:?}");
    }

    lab.b_up();
    run.wait_for("B answering again", Duration::from_secs(5), |p| {
        p.snapshot()
            .iter()
            .all(|s| s.answering() && s.consecutive_lost == 0)
    });
    run.stop();
}

#[test]
fn foreign_echo_replies_are_ignored() {
    let lab = Lab::new();
    let targets = vec![target("opd:v4", B4), target("opd:v6", B6)];
    let config = ProbeConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        window: 30,
    };
    // Two probers and the system ping in one namespace, all pinging the
    // same addresses: every raw socket sees every reply. B drops the
    // first prober's requests only, so its probes sit in flight while
    // ping's replies (same source, sequence numbers sweeping past ours)
    // and the second prober's replies stream in. Its targets are set
    // only once that filter is in place.
    let muted = Running::start(lab.a.clone(), config, Vec::new());
    let other = Running::start(lab.a.clone(), config, targets.clone());
    let ident = muted.prober.identifier();
    assert_ne!(ident, other.prober.identifier());
    for rule in [
        "add table inet t".to_string(),
        "add chain inet t in { type filter hook input priority 0 ; }".into(),
        format!("add rule inet t in icmp type echo-request icmp id {ident} drop"),
        format!("add rule inet t in icmpv6 type echo-request icmpv6 id {ident} drop"),
    ] {
        lab.b.run("nft", rule.split_whitespace()).unwrap();
    }
    muted.prober.set_targets(targets);

    lab.a
        .run("ping", ["-q", "-c", "100", "-i", "0.01", "-W", "1", B4])
        .unwrap();
    lab.a
        .run(
            "ping",
            ["-6", "-q", "-c", "100", "-i", "0.01", "-W", "1", B6],
        )
        .unwrap();
    let muted_seen = muted.prober.snapshot();
    let other_seen = other.prober.snapshot();
    muted.stop();
    other.stop();
    for s in muted_seen {
        assert!(s.sent >= 10, "{s:?}");
        assert_eq!(s.received, 0, "a foreign reply was counted: {s:?}");
    }
    for s in other_seen {
        assert!(s.received <= s.sent && s.sent - s.received <= 1, "{s:?}");
        assert!(s.received >= 10, "{s:?}");
    }
}

/// Sends the given ICMP messages from namespace `ns` every 5 ms for
/// `duration`, each list from its own source address.
fn inject(ns: &NetNs, to: Ipv4Addr, sources: &[(Ipv4Addr, Vec<Vec<u8>>)], duration: Duration) {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                ns.enter_current_thread().unwrap();
                let sockets: Vec<(OwnedFd, &Vec<Vec<u8>>)> = sources
                    .iter()
                    .map(|(from, packets)| {
                        let fd = open_socket(Family::V4).unwrap();
                        sys::bind_address(fd.as_fd(), IpAddr::V4(*from))
                            .unwrap_or_else(|e| panic!("bind {from}: {e}"));
                        (fd, packets)
                    })
                    .collect();
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    for (fd, packets) in &sockets {
                        for p in packets.iter() {
                            send_echo(fd.as_fd(), IpAddr::V4(to), p).unwrap();
                        }
                    }
                    thread::sleep(Duration::from_millis(5));
                }
            })
            .join()
            .unwrap();
    });
}

#[test]
fn only_exact_replies_from_the_target_count() {
    let lab = Lab::new();
    // B ignores echo requests, so every probe stays in flight for the
    // whole timeout while forged replies arrive.
    lab.b
        .run("sysctl", ["-qw", "net.ipv4.icmp_echo_ignore_all=1"])
        .unwrap();
    lab.b
        .ip(["addr", "add", "10.99.0.3/24", "dev", &lab.vb])
        .unwrap();
    let config = ProbeConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        window: 30,
    };
    let run = Running::start(lab.a.clone(), config, vec![target("opd", B4)]);
    let (ident, nonce) = (run.prober.inner.ident, run.prober.inner.nonce);
    // With one target, probe number `serial` carries sequence `serial`.
    let replies = |ident: u16, nonce: u64, serial_offset: u64| -> Vec<Vec<u8>> {
        (0..40u64)
            .map(|serial| {
                let req = echo_request(
                    Family::V4,
                    ident,
                    serial as u16,
                    nonce,
                    serial + serial_offset,
                );
                reply_to(Family::V4, &req)
            })
            .collect()
    };
    let b4: Ipv4Addr = B4.parse().unwrap();
    let a4 = Ipv4Addr::new(10, 99, 0, 1);
    let forged = [
        (b4, replies(ident ^ 1, nonce, 0)), // another pinger's identifier
        (b4, replies(ident, nonce ^ 1, 0)), // our identifier, not our payload
        (b4, replies(ident, nonce, 1000)),  // stale probe serial
        (Ipv4Addr::new(10, 99, 0, 3), replies(ident, nonce, 0)), // wrong source
    ];
    inject(&lab.b, a4, &forged, Duration::from_millis(800));
    let s = run.status("opd");
    assert!(s.sent >= 5, "{s:?}");
    assert_eq!(s.received, 0, "a forged reply was counted: {s:?}");
    assert_eq!(s.loss_ratio(30), 1.0, "{s:?}");

    // Positive control: the same path with exact replies is credited.
    let sent_before = s.sent;
    inject(
        &lab.b,
        a4,
        &[(b4, replies(ident, nonce, 0))],
        Duration::from_millis(800),
    );
    let s = run.status("opd");
    assert!(s.sent <= 40, "{s:?}");
    assert!(s.received >= 5, "{s:?}");
    assert!(s.received <= s.sent - sent_before + 1, "{s:?}");
    assert!(s.last_rtt.unwrap() <= config.timeout, "{s:?}");
    run.stop();
}

#[test]
fn set_targets_keeps_history_of_unchanged_targets() {
    require_root();
    let ns = Arc::new(NetNs::create("jt-prb").unwrap());
    let run = Running::start(
        ns,
        fast(),
        vec![
            target("keep", "127.0.0.1"),
            target("move", "::1"),
            target("drop", "127.0.0.3"),
        ],
    );
    run.wait_for("3 replies each", Duration::from_secs(5), |p| {
        all_received(p, 3)
    });
    let keep_before = run.status("keep");
    let move_before = run.status("move");

    run.prober.set_targets(vec![
        target("keep", "127.0.0.1"),
        target("move", "127.0.0.2"),
        target("fresh", "::1"),
    ]);
    let keys: Vec<String> = run.prober.snapshot().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, ["keep", "move", "fresh"]);
    assert!(run.prober.status("drop").is_none());
    let keep = run.status("keep");
    assert!(keep.received >= keep_before.received, "{keep:?}");
    assert!(keep.recent.len() >= keep_before.recent.len(), "{keep:?}");
    let moved = run.status("move");
    assert!(moved.received < move_before.received, "{moved:?}");
    assert!(moved.recent.len() <= 1, "{moved:?}");
    assert_eq!(moved.addr, "127.0.0.2".parse::<IpAddr>().unwrap());

    run.wait_for("new targets answered", Duration::from_secs(5), |p| {
        all_received(p, 3)
    });
    let keep = run.status("keep");
    assert!(keep.received >= keep_before.received + 3, "{keep:?}");
    for s in run.prober.snapshot() {
        assert_eq!(s.loss_ratio(30), 0.0, "{s:?}");
    }
    run.stop();
}

#[test]
fn unowned_address_is_always_lost_and_bounded() {
    let lab = Lab::new();
    let config = ProbeConfig {
        window: 5,
        ..fast()
    };
    let run = Running::start(
        lab.a.clone(),
        config,
        vec![
            target("nobody:v4", "10.99.0.77"),
            target("nobody:v6", "fd00:99::77"),
            target("opd:v4", B4),
        ],
    );
    run.wait_for("12 probes each", Duration::from_secs(5), |p| {
        p.snapshot().iter().all(|s| s.sent >= 12)
    });
    assert!(
        run.prober.in_flight() <= 2 * 3,
        "{}",
        run.prober.in_flight()
    );
    for key in ["nobody:v4", "nobody:v6"] {
        let s = run.status(key);
        assert_eq!(s.received, 0, "{s:?}");
        assert_eq!(s.recent, vec![None; 5], "{s:?}");
        assert_eq!(s.loss_ratio(100), 1.0, "{s:?}");
        assert_eq!(s.median_rtt(5), None, "{s:?}");
        assert!(!s.answering(), "{s:?}");
        assert!(u64::from(s.consecutive_lost) + 1 >= s.sent, "{s:?}");
        assert_eq!(u64::from(s.consecutive_lost), s.completed, "{s:?}");
        assert_eq!((s.last_rtt, s.last_reply_at), (None, None), "{s:?}");
    }
    let ok = run.status("opd:v4");
    assert!(ok.answering() && ok.recent.len() == 5, "{ok:?}");
    run.stop();
}

#[test]
fn a_thousand_targets_are_all_answered() {
    require_root();
    let ns = Arc::new(NetNs::create("jt-prb").unwrap());
    let targets = (0..1000u32)
        .map(|i| {
            let addr = IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8));
            ProbeTarget::new(format!("opd:{i}"), addr)
        })
        .collect();
    let config = ProbeConfig {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(300),
        window: 10,
    };
    let run = Running::start(ns, config, targets);
    run.wait_for("3 replies each", Duration::from_secs(10), |p| {
        all_received(p, 3)
    });
    let snapshot = run.prober.snapshot();
    assert_eq!(snapshot.len(), 1000);
    for s in &snapshot {
        assert_eq!(s.loss_ratio(10), 0.0, "{s:?}");
    }
    assert!(run.prober.in_flight() <= 2000);
    run.stop();
}

#[test]
fn run_can_be_dropped_and_restarted() {
    require_root();
    let ns = NetNs::create("jt-prb").unwrap();
    thread::scope(|scope| {
        scope
            .spawn(|| {
                ns.enter_current_thread().unwrap();
                let prober = Prober::new(fast()).unwrap();
                prober.set_targets(vec![target("lo", "127.0.0.1")]);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    // Dropping the future is a valid way to stop it too.
                    let never = CancellationToken::new();
                    let _ =
                        tokio::time::timeout(Duration::from_millis(350), prober.run(never)).await;
                    let first = prober.status("lo").unwrap().received;
                    assert!(first >= 2, "first run: {first}");
                    assert_eq!(prober.in_flight(), 0);

                    let stop = CancellationToken::new();
                    let runner = prober.clone();
                    let task = tokio::spawn({
                        let stop = stop.clone();
                        async move { runner.run(stop).await }
                    });
                    tokio::time::sleep(Duration::from_millis(350)).await;
                    stop.cancel();
                    task.await.unwrap();
                    let second = prober.status("lo").unwrap().received;
                    assert!(second >= first + 2, "second run: {first} -> {second}");
                });
            })
            .join()
            .unwrap();
    });
}

#[test]
fn refuses_without_cap_net_raw() {
    require_root();
    const CAP_NET_RAW: u32 = 13;

    // Capabilities are per thread: only this helper thread loses one.
    let result = thread::spawn(|| {
        sys::drop_effective_capability(CAP_NET_RAW).expect("dropping CAP_NET_RAW");
        Prober::new(ProbeConfig::default()).map(|_| ())
    })
    .join()
    .unwrap();
    let err = result.expect_err("raw sockets must be refused without CAP_NET_RAW");
    assert!(
        matches!(err, ProbeError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("root or CAP_NET_RAW"), "{err}");
}

#[test]
fn checksum_matches_rfc1071_example() {
    // RFC 1071 section 3: the sum of these words is ddf2, so the
    // checksum is its complement.
    let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(checksum(&data), !0xddf2);
    assert_eq!(checksum(&[0xab]), !0xab00);
}

/// An IPv4 datagram carrying `icmp`, as a raw socket returns it.
fn ipv4(icmp: &[u8]) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ];
    p.extend_from_slice(icmp);
    p
}

/// Turns our request into the reply a host would send back.
fn reply_to(family: Family, request: &[u8]) -> Vec<u8> {
    let mut r = request.to_vec();
    r[0] = match family {
        Family::V4 => ICMP_ECHO_REPLY,
        Family::V6 => ICMPV6_ECHO_REPLY,
    };
    r[2..4].fill(0);
    if family == Family::V4 {
        let sum = checksum(&r);
        r[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    r
}

#[test]
fn echo_request_round_trips_through_the_parser() {
    let req = echo_request(Family::V4, 0xbeef, 7, 0x0123_4567_89ab_cdef, 42);
    assert_eq!(req[0], ICMP_ECHO_REQUEST);
    assert_eq!(checksum(&req), 0, "request checksum must verify");
    let expected = EchoReply {
        ident: 0xbeef,
        seq: 7,
        nonce: 0x0123_4567_89ab_cdef,
        serial: 42,
    };
    let reply = ipv4(&reply_to(Family::V4, &req));
    assert_eq!(parse_reply(Family::V4, &reply), Some(expected));

    let req6 = echo_request(Family::V6, 1, 2, 3, 4);
    assert_eq!(req6[0], ICMPV6_ECHO_REQUEST);
    assert_eq!(&req6[2..4], &[0, 0], "the kernel fills the ICMPv6 checksum");
    let parsed = parse_reply(Family::V6, &reply_to(Family::V6, &req6)).unwrap();
    assert_eq!(
        (parsed.ident, parsed.seq, parsed.nonce, parsed.serial),
        (1, 2, 3, 4)
    );
}

#[test]
fn parser_rejects_what_is_not_our_kind_of_reply() {
    let req = echo_request(Family::V4, 9, 9, 9, 9);
    let good = reply_to(Family::V4, &req);
    assert!(parse_reply(Family::V4, &ipv4(&good)).is_some());
    // The request itself (seen on loopback), a corrupted reply, a
    // truncated one, a non-ICMP datagram and garbage.
    assert_eq!(parse_reply(Family::V4, &ipv4(&req)), None);
    let mut corrupt = good.clone();
    corrupt[20] ^= 1;
    assert_eq!(parse_reply(Family::V4, &ipv4(&corrupt)), None);
    assert_eq!(parse_reply(Family::V4, &ipv4(&good[..ECHO_LEN - 1])), None);
    let mut udp = ipv4(&good);
    udp[9] = 17;
    assert_eq!(parse_reply(Family::V4, &udp), None);
    assert_eq!(parse_reply(Family::V4, &[0x45, 0, 0]), None);
    assert_eq!(parse_reply(Family::V4, &[]), None);
    let mut code = good.clone();
    code[1] = 1;
    let sum = {
        code[2..4].fill(0);
        checksum(&code)
    };
    code[2..4].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(parse_reply(Family::V4, &ipv4(&code)), None);

    let req6 = echo_request(Family::V6, 9, 9, 9, 9);
    assert_eq!(parse_reply(Family::V6, &req6), None);
    assert_eq!(
        parse_reply(Family::V6, &reply_to(Family::V6, &req6)[..10]),
        None
    );
}

fn status_with(recent: Vec<Option<Duration>>) -> ProbeStatus {
    ProbeStatus {
        key: "t".into(),
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        sent: recent.len() as u64,
        received: recent.iter().flatten().count() as u64,
        completed: recent.len() as u64,
        last_rtt: None,
        last_reply_at: None,
        consecutive_lost: 0,
        recent,
    }
}

#[test]
fn status_statistics() {
    let ms = |n| Some(Duration::from_millis(n));
    let s = status_with(vec![ms(10), None, ms(30), ms(20), None, ms(40)]);
    assert_eq!(s.loss_ratio(6), 2.0 / 6.0);
    assert_eq!(s.loss_ratio(100), 2.0 / 6.0);
    assert_eq!(s.loss_ratio(2), 0.5);
    assert_eq!(s.loss_ratio(1), 0.0);
    assert_eq!(s.loss_ratio(0), 0.0);
    assert_eq!(s.median_rtt(6), Some(Duration::from_millis(25)));
    assert_eq!(s.median_rtt(3), Some(Duration::from_millis(30)));
    assert_eq!(s.median_rtt(2), Some(Duration::from_millis(40)));
    assert_eq!(s.median_rtt(0), None);
    assert!(s.answering());
    let lost = status_with(vec![ms(1), None]);
    assert!(!lost.answering());
    assert_eq!(lost.median_rtt(1), None);
    let empty = status_with(vec![]);
    assert!(!empty.answering());
    assert_eq!(empty.loss_ratio(30), 0.0);
    assert_eq!(empty.median_rtt(30), None);
}

#[test]
fn window_keeps_only_the_last_results() {
    let mut t = TargetState {
        uid: 1,
        key: "t".into(),
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        sent: 0,
        received: 0,
        completed: 0,
        last_rtt: None,
        last_reply_at: None,
        consecutive_lost: 0,
        recent: VecDeque::new(),
    };
    let now = SystemTime::now();
    for i in 0..10 {
        t.record(Some(Duration::from_millis(i)), now, 3);
    }
    t.record(None, now, 3);
    t.record(None, now, 3);
    let s = t.status();
    assert_eq!(s.recent, vec![Some(Duration::from_millis(9)), None, None]);
    assert_eq!((s.received, s.consecutive_lost), (10, 2));
    assert_eq!(s.completed, 12);
    assert_eq!(s.last_rtt, Some(Duration::from_millis(9)));
    t.record(Some(Duration::from_millis(5)), now, 3);
    assert_eq!(t.status().consecutive_lost, 0);
}

#[test]
fn config_is_validated() {
    assert!(ProbeConfig::default().validate().is_ok());
    let bad = [
        ProbeConfig {
            timeout: Duration::from_secs(2),
            ..ProbeConfig::default()
        },
        ProbeConfig {
            window: 0,
            ..ProbeConfig::default()
        },
        ProbeConfig {
            interval: Duration::ZERO,
            ..ProbeConfig::default()
        },
        ProbeConfig {
            timeout: Duration::ZERO,
            ..ProbeConfig::default()
        },
    ];
    for config in bad {
        assert!(
            matches!(Prober::new(config), Err(ProbeError::InvalidConfig(_))),
            "{config:?}"
        );
    }
}

#[test]
fn status_serializes_durations_as_seconds() {
    let mut s = status_with(vec![Some(Duration::from_millis(1500)), None]);
    s.last_rtt = Some(Duration::from_millis(250));
    s.last_reply_at = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["last_rtt"], 0.25);
    assert_eq!(json["last_reply_at"], 1_700_000_000.0);
    assert_eq!(json["recent"], serde_json::json!([1.5, null]));
    assert_eq!(json["addr"], "127.0.0.1");
}

/// Compile-time check: the daemon hands the handle around and spawns
/// `run` on a multi-thread runtime.
#[allow(dead_code)]
fn handle_and_run_future_are_send(p: &Prober) {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    send_sync(p);
    send(&p.run(CancellationToken::new()));
}
