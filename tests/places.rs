//! Identity by place as well as by address. Each office is bound to the
//! LAN interface that serves it (here: its own port of the gateway's LAN
//! bridge; on a trunk, its VLAN). A host on one office's network that
//! takes another office's address is not that office: its upload is not
//! counted or shaped as the other office's, and it does not get the other
//! office's status page. The gateway's own addresses are never an office's.
//!
//! VLANs: the lab's kernel has no 802.1Q, so the VLAN half (a trunk's
//! VLAN id checked like a port) is covered by the classifier's frames in
//! tests/classifier.rs; the port half runs here end to end.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use jatah::lab::netns::require_root;
use jatah::lab::{GW_STATUS_PORT, INET_ADDR, Lab};
use jatah_common::UPLOAD;
use support::fixtures::dinsos_and_bpbd_lab;
use support::{jatah, one_lab_at_a_time};

/// Runs `f` on a thread inside the namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: moves only this thread into the namespace.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .unwrap()
}

/// Sends `n` UDP datagrams of 1,000 bytes from `from` toward the Internet.
fn upload_from(ns: &str, from: &str, n: usize) {
    let from: std::net::Ipv4Addr = from.parse().unwrap();
    in_ns(ns, move || {
        let sock = support::net::udp_from(from).unwrap();
        for _ in 0..n {
            sock.send_to(&[0u8; 1000], (INET_ADDR, 9)).unwrap();
            std::thread::sleep(Duration::from_micros(500));
        }
    });
}

/// `GET path` on the status listener at `to` from source address `from`:
/// the status code.
fn status_from(ns: &str, from: &str, to: &str, path: &str) -> u16 {
    let (from, to): (std::net::Ipv4Addr, SocketAddr) = (
        from.parse().unwrap(),
        format!("{to}:{GW_STATUS_PORT}").parse().unwrap(),
    );
    let path = path.to_string();
    in_ns(ns, move || {
        let SocketAddr::V4(v4) = to else {
            unreachable!()
        };
        let mut s = support::net::connect_from(from, v4).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            v4.ip()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    })
}

fn upload_packets(lab: &Lab, opd: &str) -> u64 {
    lab.counters().unwrap()[opd].packets[UPLOAD]
}

fn misplaced(lab: &Lab, opd: &str) -> u64 {
    support::metrics::sample(
        lab,
        &format!("jatah_opd_misplaced_packets_total{{opd=\"{opd}\"}}"),
    )
}

#[test]
fn an_office_is_its_addresses_at_its_own_port_and_the_gateway_is_no_office() {
    let _one = one_lab_at_a_time();
    require_root();
    let mut lab = Lab::build(dinsos_and_bpbd_lab("jt-place", false)).unwrap();
    // The gateway's LAN becomes a bridge with each office on a port of its
    // own: the switch's ports move into the gateway.
    lab.delete_lan().unwrap();
    let gw = lab.gw.name().to_string();
    lab.gw
        .ip(["link", "add", "lan0", "type", "bridge"])
        .unwrap();
    for i in 0..2 {
        let port = format!("p{i}");
        lab.sw.ip(["link", "set", &port, "netns", &gw]).unwrap();
        lab.gw.ip(["link", "set", &port, "master", "lan0"]).unwrap();
        lab.gw.ip(["link", "set", &port, "up"]).unwrap();
        lab.gw
            .ip([
                "addr",
                "add",
                &format!("10.20.{}.1/24", i + 1),
                "dev",
                "lan0",
            ])
            .unwrap();
    }
    lab.gw.ip(["link", "set", "lan0", "up"]).unwrap();
    let policy = lab
        .spec
        .policy_toml()
        .replacen(
            "id = \"dinsos\"\n",
            "id = \"dinsos\"\ninterface = \"p0\"\n",
            1,
        )
        .replacen("id = \"bpbd\"\n", "id = \"bpbd\"\ninterface = \"p1\"\n", 1);
    lab.write_policy(&policy).unwrap();
    lab.start_daemon(jatah()).unwrap();
    let (dinsos_ns, bpbd_ns) = (
        lab.opds[0].name().to_string(),
        lab.opds[1].name().to_string(),
    );

    // dinsos from its own port: its upload, its page.
    let before = upload_packets(&lab, "dinsos");
    upload_from(&dinsos_ns, "10.20.1.2", 200);
    std::thread::sleep(Duration::from_millis(300));
    let own = upload_packets(&lab, "dinsos") - before;
    assert!(own >= 200, "dinsos's own upload counted: {own} of 200");
    assert_eq!(
        status_from(&dinsos_ns, "10.20.1.2", "10.20.1.1", "/api/v1/status"),
        200
    );

    // A host at bpbd takes dinsos's address 10.20.1.50.
    lab.opds[1]
        .ip(["addr", "add", "10.20.1.50/32", "dev", "eth0"])
        .unwrap();
    let before = upload_packets(&lab, "dinsos");
    upload_from(&bpbd_ns, "10.20.1.50", 200);
    std::thread::sleep(Duration::from_millis(300));
    let stolen = upload_packets(&lab, "dinsos") - before;
    let seen = misplaced(&lab, "dinsos");
    eprintln!(
        "from bpbd's port with dinsos's address: {stolen} counted as dinsos, {seen} misplaced"
    );
    assert_eq!(stolen, 0, "not charged to dinsos");
    assert!(seen >= 200, "counted as misplaced: {seen}");
    assert_eq!(
        status_from(&bpbd_ns, "10.20.1.50", "10.20.2.1", "/api/v1/status"),
        401,
        "no dinsos page for a host at bpbd"
    );
    // bpbd's own host still gets bpbd's page.
    assert_eq!(
        status_from(&bpbd_ns, "10.20.2.2", "10.20.2.1", "/api/v1/status"),
        200
    );

    // The gateway's own address 10.20.1.1 is inside dinsos's subnet, but
    // it is not dinsos: not its upload, not its page.
    let before = upload_packets(&lab, "dinsos");
    upload_from(&gw, "10.20.1.1", 100);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        upload_packets(&lab, "dinsos") - before,
        0,
        "the gateway's own upload"
    );
    assert_eq!(
        status_from(&gw, "10.20.1.1", "10.20.1.1", "/api/v1/status"),
        401,
        "the gateway is no office"
    );

    // dinsos's port is deleted and made again (a new ifindex): within a
    // few seconds its upload is its own again.
    lab.gw.ip(["link", "del", "p0"]).unwrap();
    lab.gw
        .ip([
            "link", "add", "p0", "type", "veth", "peer", "name", "eth0", "netns", &dinsos_ns,
        ])
        .unwrap();
    lab.gw.ip(["link", "set", "p0", "master", "lan0"]).unwrap();
    lab.gw.ip(["link", "set", "p0", "up"]).unwrap();
    lab.opds[0]
        .ip(["addr", "add", "10.20.1.2/24", "dev", "eth0"])
        .unwrap();
    lab.opds[0].ip(["link", "set", "eth0", "up"]).unwrap();
    lab.opds[0]
        .ip(["route", "add", "default", "via", "10.20.1.1"])
        .unwrap();
    let mut counted = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let before = upload_packets(&lab, "dinsos");
        upload_from(&dinsos_ns, "10.20.1.2", 20);
        std::thread::sleep(Duration::from_millis(200));
        counted = upload_packets(&lab, "dinsos") - before;
        if counted >= 20 {
            break;
        }
    }
    assert!(
        counted >= 20,
        "dinsos's port made again: {counted} of 20 counted"
    );
}
