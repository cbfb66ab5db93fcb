//! `jatah run`: puts the policy into force and serves HTTP until told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::datapath::Datapath;
use crate::gateway;
use crate::server::{self, AppState};
use crate::shaper::Shaper;

/// Options of `jatah run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: PathBuf,
    pub listen: SocketAddr,
    pub bpffs: PathBuf,
    /// Where the per-namespace instance lock lives.
    pub run_dir: PathBuf,
}

/// Runs the daemon until `shutdown` fires. A policy or interface problem is
/// reported before anything on the gateway is touched.
pub async fn run(opts: RunOptions, shutdown: CancellationToken) -> Result<()> {
    let file = opts.policy.display().to_string();
    let policy = crate::policy::load(&opts.policy).map_err(|e| anyhow::anyhow!("{e}"))?;
    info!(policy = %file, summary = %policy.summary(), "policy valid");

    let _lock = crate::instance::acquire(&opts.run_dir).map_err(anyhow::Error::msg)?;
    let ifaces = gateway::resolve_interfaces(&policy, &file)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    info!(listen = %listener.local_addr()?, "HTTP server bound");

    let state = Arc::new(AppState::default());
    let bpffs = opts.bpffs.clone();
    let policy_for_apply = policy.clone();
    let ifaces_for_apply = ifaces.clone();
    // Netlink and BPF syscalls block; keep them off the async workers. The
    // thread stays in this process's network namespace.
    let datapath = tokio::task::spawn_blocking(move || -> Result<Datapath> {
        let mut datapath = Datapath::load_pinned(&bpffs)?;
        let adopted = datapath.slots().len();
        if adopted > 0 {
            info!(opds = adopted, "adopted OPD slots pinned by an earlier run");
        }
        let mut shaper = Shaper::new()?;
        gateway::apply(&policy_for_apply, &ifaces_for_apply, &mut datapath, &mut shaper)?;
        datapath.attach(&ifaces_for_apply.attachment())?;
        Ok(datapath)
    })
    .await??;
    state.ready.store(true, Ordering::Release);
    info!(
        wan = %ifaces.wan.name,
        lan = %ifaces.lan_device.name,
        opds = policy.opds.len(),
        "data path attached; allocations in force"
    );

    let app = server::router(state);
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("HTTP server")?;
    drop(datapath);
    info!("stopped; the data path stays in force (`jatah down` removes it)");
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c and fires the token.
pub async fn shutdown_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupt received; shutting down"),
    }
    token.cancel();
}

/// Fails unless running as root (or with the capabilities jatah needs).
pub fn require_privileges() -> Result<()> {
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "jatah run needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON) to load \
             eBPF programs and change qdiscs"
        );
    }
    Ok(())
}

/// `jatah down`: removes jatah's pins (which detaches its programs) and its
/// HTB trees on the policy's interfaces. Foreign qdiscs are left alone.
pub fn down(policy_path: &std::path::Path, bpffs: &std::path::Path) -> Result<()> {
    let file = policy_path.display().to_string();
    let policy = crate::policy::load(policy_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ifaces = gateway::resolve_interfaces(&policy, &file)?;
    let removed_pins = crate::datapath::unpin_all(bpffs)?;
    let mut shaper = Shaper::new()?;
    let mut removed_trees = 0;
    for iface in [&ifaces.lan_device, &ifaces.wan] {
        if shaper.remove(iface.ifindex)? {
            removed_trees += 1;
            info!(interface = %iface.name, "HTB tree removed");
        }
    }
    info!(pins_removed = removed_pins, trees_removed = removed_trees, "jatah removed from this gateway");
    Ok(())
}
