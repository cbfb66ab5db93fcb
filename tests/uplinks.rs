//! A WAN without a link layer (PPPoE's ppp devices, WireGuard, tun,
//! raw-IP modems): its packets start with the IP header, not Ethernet.
//! jatah reads and shapes upload there as on Ethernet, and refuses at
//! start, naming the interface and its type, an interface it cannot read.

mod support;

use std::fs::File;
use std::io::Read;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use jatah::lab::Lab;
use jatah::lab::netns::require_root;
use support::fixtures::dinsos_and_bpbd_lab;
use support::{jatah, one_lab_at_a_time};

/// dinsos's upload ceiling in the lab (bits per second).
const CEILING: f64 = 10e6;
/// What dinsos offers: twice its ceiling.
const OFFERED: f64 = 20e6;
const SECONDS: f64 = 5.0;

/// Opens the tun device `name` (made with `ip tuntap`) as its far end:
/// what the gateway routes into it is read here, one IP packet per read.
fn open_tun(name: &str) -> anyhow::Result<File> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TUN: libc::c_short = 0x0001;
    const IFF_NO_PI: libc::c_short = 0x1000;
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes the ifreq we own.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: sets a flag on our own descriptor.
    unsafe {
        let flags = libc::fcntl(tun.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(tun.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok(tun)
}

/// Reads IPv4 packets from `tun` until `until`: the bytes of those sent
/// from 10.20.1.0/24 (dinsos), after `from`.
fn read_dinsos(tun: &mut File, from: Instant, until: Instant) -> u64 {
    let mut buf = [0u8; 65536];
    let mut bytes = 0;
    for _ in 0..10_000_000u64 {
        if Instant::now() >= until {
            break;
        }
        match tun.read(&mut buf) {
            Ok(n) if n >= 20 && buf[0] >> 4 == 4 && buf[12..15] == [10, 20, 1] => {
                if Instant::now() >= from {
                    bytes += n as u64;
                }
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    bytes
}

/// dinsos sends `OFFERED` b/s of UDP toward the Internet for `SECONDS`.
fn blast(lab: &Lab) -> std::thread::JoinHandle<anyhow::Result<u64>> {
    let ns = format!("/run/netns/{}", lab.opds[0].name());
    std::thread::spawn(move || {
        let f = File::open(&ns)?;
        // SAFETY: moves only this thread into dinsos's namespace.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        let payload = [0u8; 1400];
        let per_ms = OFFERED / 8.0 / 1000.0 / payload.len() as f64;
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed().as_secs_f64() < SECONDS {
            let due = (start.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64;
            while sent < due {
                let _ = sock.send_to(&payload, "203.0.113.9:9");
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(sent)
    })
}

#[test]
fn upload_through_a_tun_wan_is_counted_and_held_to_its_ceiling() {
    let _one = one_lab_at_a_time();
    require_root();
    let mut lab = Lab::build(dinsos_and_bpbd_lab("jt-tun", false)).unwrap();
    // wan0 becomes a tun device; this test is the ISP at its far end.
    lab.delete_wan().unwrap();
    for args in [
        &["tuntap", "add", "dev", "wan0", "mode", "tun"][..],
        &["addr", "add", "198.51.100.2/24", "dev", "wan0"],
        &["link", "set", "wan0", "up"],
        &["route", "replace", "default", "dev", "wan0"],
    ] {
        lab.gw.run("ip", args).unwrap();
    }
    let mut tun = lab.in_gateway(|| open_tun("wan0")).unwrap();
    lab.start_daemon(jatah()).unwrap();
    assert!(
        lab.daemon_log().contains("the WAN has no link layer"),
        "{}",
        lab.daemon_log()
    );

    let before = lab.counters().unwrap()["dinsos"].bytes[jatah_common::UPLOAD];
    let start = Instant::now();
    let sender = blast(&lab);
    // The first second fills the queue; the rest is the shaped rate.
    let got = read_dinsos(
        &mut tun,
        start + Duration::from_secs(1),
        start + Duration::from_secs_f64(SECONDS),
    );
    let sent = sender.join().unwrap().unwrap();
    let rate = got as f64 * 8.0 / (SECONDS - 1.0);
    let counted = lab.counters().unwrap()["dinsos"].bytes[jatah_common::UPLOAD] - before;
    eprintln!(
        "tun WAN: dinsos offered {:.1} Mbit/s ({sent} packets); the ISP received {:.2} Mbit/s; \
         jatah counted {counted} bytes as dinsos's upload",
        OFFERED / 1e6,
        rate / 1e6
    );
    assert!(
        counted as f64 >= sent as f64 * 1400.0 * 0.5,
        "dinsos's upload is counted: {counted} bytes of {sent} packets"
    );
    assert!(
        (0.7 * CEILING..=1.1 * CEILING).contains(&rate),
        "held to its 10 Mbit/s ceiling: {:.2} Mbit/s",
        rate / 1e6
    );
}

#[test]
fn an_interface_of_a_type_jatah_cannot_read_is_refused_at_start() {
    let _one = one_lab_at_a_time();
    require_root();
    let mut lab = Lab::build(dinsos_and_bpbd_lab("jt-ltype", false)).unwrap();
    // The loopback device as the WAN: link type 772 (loopback).
    let policy = lab
        .spec
        .policy_toml()
        .replacen("wan = \"wan0\"", "wan = \"lo\"", 1);
    lab.write_policy(&policy).unwrap();
    lab.spawn_daemon(jatah()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lab.daemon_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = lab.daemon_log();
    assert!(!lab.daemon_running(), "jatah exits: {log}");
    assert!(
        log.contains("interface \"lo\" (gateway.wan) has link type 772"),
        "the error names the interface and its type: {log}"
    );
    // Nothing was put on the LAN.
    let out = lab.gw.run("tc", ["qdisc", "show", "dev", "lan0"]).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("htb 1:"));
}
