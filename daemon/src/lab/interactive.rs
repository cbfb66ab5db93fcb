//! `jatah lab`: the demo lab with jatah running in it, traffic from every
//! OPD, live per-OPD rates, and a way into the gateway's status page from
//! this machine.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::{
    GW_STATUS_PORT, LAB_ADMIN_TOKEN, Lab, LabSpec, enter_netns, lab_opd_token, opd_gateway_addr,
    status_url_in_opd,
};
use crate::policy::Direction;

/// Where the lab's status page can be opened: token links through a
/// forward from this machine's loopback into the gateway namespace, and
/// the commands that show an OPD recognised by its address.
fn print_status_page(lab: &Lab) {
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], GW_STATUS_PORT));
    let local = format!("127.0.0.1:{GW_STATUS_PORT}");
    println!("Status page for OPD operators (README: \"Status page for OPD operators\"):");
    match forward_into(format!("/run/netns/{}", lab.gw.name()), &local, target) {
        Ok(addr) => {
            println!(
                "  open in a browser on this machine (forwarded into {}):",
                lab.gw.name()
            );
            for o in &lab.spec.opds {
                println!(
                    "    {:<12} http://{addr}/status#token={}",
                    o.id,
                    lab_opd_token(&o.id)
                );
            }
            println!(
                "    {:<12} http://{addr}/status/admin#token={LAB_ADMIN_TOKEN}",
                "admin grid"
            );
            println!(
                "  (over ssh: ssh -L {GW_STATUS_PORT}:127.0.0.1:{GW_STATUS_PORT} <this machine>, then the same links)"
            );
        }
        Err(e) => println!("  (no forward from {local}: {e}; use the commands below)"),
    }
    if let (Some(ns), Some(o)) = (lab.opds.first(), lab.spec.opds.first()) {
        println!(
            "  inside {}'s LAN the address alone picks the OPD:\n    ip netns exec {} curl -s {}\n    \
             ip netns exec {} curl -s http://{}:{GW_STATUS_PORT}/api/v1/status",
            o.id,
            ns.name(),
            status_url_in_opd(0),
            ns.name(),
            opd_gateway_addr(0)
        );
        println!(
            "  pull {}'s cable (its page turns red within seconds), and plug it back:\n    \
             ip -n {} link set p0 down\n    ip -n {} link set p0 up",
            o.id,
            lab.sw.name(),
            lab.sw.name()
        );
    }
    println!();
}

/// Forwards connections to `local` (in this process's namespace) to
/// `target` inside the namespace at `ns_path`, for as long as the process
/// runs.
fn forward_into(
    ns_path: String,
    local: &str,
    target: std::net::SocketAddr,
) -> io::Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind(local)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let ns = ns_path.clone();
            std::thread::spawn(move || {
                // A socket opened by a thread inside the namespace stays
                // there after the thread ends.
                let server = std::thread::spawn(move || -> Result<std::net::TcpStream> {
                    enter_netns(&ns)?;
                    Ok(std::net::TcpStream::connect_timeout(
                        &target,
                        Duration::from_secs(3),
                    )?)
                })
                .join();
                if let Ok(Ok(server)) = server {
                    pipe(client, server);
                }
            });
        }
    });
    Ok(addr)
}

/// Copies both ways until each side has closed.
fn pipe(a: std::net::TcpStream, b: std::net::TcpStream) {
    use std::net::Shutdown;
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// `jatah lab`: builds the demo lab, runs jatah in it, drives traffic and
/// prints per-OPD rates from jatah's own counters every 2 s.
pub fn run_interactive(seconds: u64) -> Result<()> {
    crate::lab::netns::require_root_or_explain()?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            stop.store(true, Ordering::SeqCst);
        });
    }
    let spec = LabSpec::demo();
    println!(
        "jatah lab: building a gateway with {} OPDs in network namespaces...",
        spec.opds.len()
    );
    let mut lab = Lab::build(spec)?;
    println!(
        "policy in force ({}):\n{}",
        lab.policy_path.display(),
        lab.spec.policy_toml()
    );
    let exe = std::env::current_exe()?;
    lab.start_daemon(&exe)?;
    println!(
        "jatah is running in namespace {} (log: {}).",
        lab.gw.name(),
        lab.dir().join("jatah.log").display()
    );
    print_status_page(&lab);
    println!(
        "Every OPD downloads as fast as it can for {seconds} s; dinkes and kec-sepaku also upload.\n\
         Watch each OPD held between its guarantee and its ceiling (ctrl-c ends early; everything is cleaned up).\n"
    );
    let secs = seconds.clamp(5, 3600) as u32;
    let mut clients = Vec::new();
    for i in 0..lab.opds.len() {
        clients.push(lab.spawn_iperf(i, Direction::Download, secs, 4)?);
    }
    for id in ["dinkes", "kec-sepaku"] {
        clients.push(lab.spawn_iperf(lab.opd_index(id)?, Direction::Upload, secs, 2)?);
    }
    let mut prev = lab.counters()?;
    let mut prev_t = Instant::now();
    let end = Instant::now() + Duration::from_secs(secs as u64 + 1);
    let policy = crate::policy::load(&lab.policy_path).map_err(|e| anyhow!("{e}"))?;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if prev_t.elapsed() < Duration::from_secs(2) {
            continue;
        }
        let now = lab.counters()?;
        let dt = prev_t.elapsed().as_secs_f64();
        println!(
            "{:<12} {:>10} {:>17} {:>10} {:>17}",
            "OPD", "down Mb/s", "(guar..ceil)", "up Mb/s", "(guar..ceil)"
        );
        for opd in &policy.opds {
            let (a, b) = (prev.get(&opd.id), now.get(&opd.id));
            let rate = |d: usize| match (a, b) {
                (Some(a), Some(b)) => (b.bytes[d] - a.bytes[d]) as f64 * 8.0 / dt / 1e6,
                _ => 0.0,
            };
            println!(
                "{:<12} {:>10.2} {:>17} {:>10.2} {:>17}",
                opd.id,
                rate(jatah_common::DOWNLOAD),
                format!("({}..{})", opd.download.guaranteed, opd.download.ceiling),
                rate(jatah_common::UPLOAD),
                format!("({}..{})", opd.upload.guaranteed, opd.upload.ceiling),
            );
        }
        println!();
        prev = now;
        prev_t = Instant::now();
    }
    // Interrupted: the clients would run on to their end; stop them now.
    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    lab.stop_daemon()?;
    println!("lab finished; removing namespaces, pins and processes.");
    Ok(())
}
