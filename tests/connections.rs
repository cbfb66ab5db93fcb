//! Connections that send nothing: a host on an OPD's LAN (or on the
//! gateway) that opens thousands of them must not take the listeners from
//! everyone else. Each listener caps connections per source and closes
//! silent ones; `/healthz` and the status page answer meanwhile.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use jatah::lab::netns::require_root;
use jatah::lab::{GW_LISTEN, GW_STATUS_PORT, Lab, opd_gateway_addr};
use support::fixtures::dinsos_and_bpbd_lab;
use support::{jatah, one_lab_at_a_time};

/// Connections the attacker opens to each listener.
const IDLE: usize = 2_000;
/// The idle ones must be gone this long after the last was opened.
const CLOSED_WITHIN: Duration = Duration::from_secs(15);

/// Raises this process's open files limit to its hard limit: the test
/// holds thousands of sockets.
fn room_for_sockets() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur as usize > 2 * IDLE + 256,
        "the hard open files limit ({}) leaves no room for the test",
        lim.rlim_cur
    );
}

/// Opens `n` connections to `to` from `from` (port chosen by the kernel)
/// and sends nothing on them; those refused or failed are not kept.
fn open_idle(from: &str, to: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..n {
        if Instant::now() > deadline {
            break;
        }
        let sock = socket2_free_connect(from, to);
        if let Ok(s) = sock {
            s.set_nonblocking(true)?;
            held.push(s);
        }
    }
    Ok(held)
}

/// A TCP connection from a chosen source address.
fn socket2_free_connect(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        unreachable!("the lab listens on IPv4")
    };
    support::net::connect_from(from.parse().unwrap(), to)
}

/// Whether the server has closed `s` (EOF or reset); false while open.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Polls until every socket in `held` is closed: how long it took, or
/// None after `limit`; also how many were still open at the end.
fn until_all_closed(held: &mut [TcpStream], limit: Duration) -> (Option<Duration>, usize) {
    let start = Instant::now();
    let mut gone = vec![false; held.len()];
    for _ in 0..(limit.as_millis() / 250 + 2) {
        for (s, g) in held.iter_mut().zip(gone.iter_mut()) {
            if !*g && closed(s) {
                *g = true;
            }
        }
        let open = gone.iter().filter(|g| !**g).count();
        if open == 0 {
            return (Some(start.elapsed()), 0);
        }
        if start.elapsed() >= limit {
            return (None, open);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    (None, gone.iter().filter(|g| !**g).count())
}

/// A GET answered within a second: its status and how long it took.
fn timed_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Duration)> {
    let t = Instant::now();
    let (status, _) = jatah::cli::client::get(addr, path, None)?;
    Ok((status, t.elapsed()))
}

#[test]
fn thousands_of_idle_connections_to_each_listener_neither_block_others_nor_stay() {
    let _one = one_lab_at_a_time();
    require_root();
    room_for_sockets();
    let mut lab = Lab::build(dinsos_and_bpbd_lab("jt-conn", false)).unwrap();
    lab.start_daemon(jatah()).unwrap();
    let api: SocketAddr = GW_LISTEN.parse().unwrap();
    let status_at = |i: usize| -> SocketAddr {
        format!("{}:{GW_STATUS_PORT}", opd_gateway_addr(i))
            .parse()
            .unwrap()
    };
    let (status, status_0) = (status_at(1), status_at(0));

    // The API listener: 2,000 from another loopback address on the
    // gateway. The status listener: 2,000 from the OPD dinsos's router.
    let mut at_api = lab
        .in_gateway(move || open_idle("127.0.0.2", api, IDLE))
        .unwrap();
    let mut at_status = lab
        .in_opd(0, move || {
            open_idle(&jatah::lab::opd_addr(0), status_0, IDLE)
        })
        .unwrap();
    let opened = Instant::now();
    eprintln!(
        "connections opened: {} to the API, {} to the status page",
        at_api.len(),
        at_status.len()
    );
    assert!(
        at_api.len() >= IDLE * 9 / 10 && at_status.len() >= IDLE * 9 / 10,
        "the kernel accepted the attacker's connections"
    );

    // Meanwhile, others are answered at once: the gateway's own health
    // check, and a browser at bpbd.
    let (health, took_h) = lab.in_gateway(move || timed_get(api, "/healthz")).unwrap();
    let (page, took_p) = lab.in_opd(1, move || timed_get(status, "/status")).unwrap();
    eprintln!("while held: /healthz {health} in {took_h:?}, /status {page} in {took_p:?}");
    assert_eq!(health, 200);
    assert_eq!(page, 200);
    assert!(took_h < Duration::from_secs(1), "/healthz took {took_h:?}");
    assert!(took_p < Duration::from_secs(1), "/status took {took_p:?}");

    // Every idle connection is closed: most at once (over the source's
    // share), the rest when their silence runs out.
    let left = CLOSED_WITHIN.saturating_sub(opened.elapsed());
    let (api_all, api_open) = until_all_closed(&mut at_api, left);
    let left = CLOSED_WITHIN.saturating_sub(opened.elapsed());
    let (status_all, status_open) = until_all_closed(&mut at_status, left);
    eprintln!(
        "all closed: API after {api_all:?} ({api_open} open), status after {status_all:?} \
         ({status_open} open); since opened {:?}",
        opened.elapsed()
    );
    assert_eq!(api_open, 0, "idle API connections still open");
    assert_eq!(status_open, 0, "idle status connections still open");
    let log = lab.daemon_log();
    assert!(
        log.contains("closing new HTTP connections") && log.contains("the limit per source"),
        "refusals are logged: {log}"
    );
    // And after it all, a fresh visitor from the attacker's own address is
    // served again.
    let (again, _) = lab
        .in_opd(0, move || timed_get(status_0, "/status"))
        .unwrap();
    assert_eq!(again, 200);
}

/// A GET with the given `Host` header: the status code.
fn status_with_host(addr: SocketAddr, path: &str, host: &str) -> anyhow::Result<u16> {
    use std::io::Write;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {answer:?}"))?;
    Ok(code)
}

#[test]
fn a_rebound_dns_name_gets_421_on_each_listener() {
    let _one = one_lab_at_a_time();
    require_root();
    let mut lab = Lab::build(dinsos_and_bpbd_lab("jt-host", false)).unwrap();
    lab.start_daemon(jatah()).unwrap();
    let api: SocketAddr = GW_LISTEN.parse().unwrap();
    let status: SocketAddr = format!("{}:{GW_STATUS_PORT}", opd_gateway_addr(0))
        .parse()
        .unwrap();
    // A site's page in a browser on the gateway, its name rebound to
    // 127.0.0.1, asks for /metrics; the gateway by address or as
    // localhost is answered.
    let codes = lab
        .in_gateway(move || {
            Ok([
                status_with_host(api, "/metrics", "evil.example")?,
                status_with_host(api, "/metrics", "evil.example:9476")?,
                status_with_host(api, "/metrics", "127.0.0.1:9476")?,
                status_with_host(api, "/metrics", "localhost:9476")?,
            ])
        })
        .unwrap();
    assert_eq!(codes, [421, 421, 200, 200], "/metrics on the API listener");
    // The same at an office: its own page through a rebound name.
    let codes = lab
        .in_opd(0, move || {
            Ok([
                status_with_host(status, "/api/v1/status", "evil.example")?,
                status_with_host(status, "/status", "evil.example")?,
                status_with_host(status, "/status", "10.20.1.1:9477")?,
            ])
        })
        .unwrap();
    assert_eq!(codes, [421, 421, 200], "the status listener");
}
