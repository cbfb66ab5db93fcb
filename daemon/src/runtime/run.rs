//! `jatah run`: puts the policy into force and serves HTTP until told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::datapath::{CounterReader, Datapath};
use crate::http::auth::Tokens;
use crate::http::tls::{Certificate, TlsFiles};

use crate::gateway;
use crate::http;
use crate::runtime::state::{AppState, Controller, PolicyView, ReloadStatus};
use crate::shaper::Shaper;

/// Options of `jatah run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: PathBuf,
    pub listen: SocketAddr,
    /// Where the status page alone is served (reached from OPD LANs and
    /// by token links from outside); None = only on `listen`.
    pub status_listen: Option<SocketAddr>,
    pub bpffs: PathBuf,
    /// Where the per-namespace instance lock lives.
    pub run_dir: PathBuf,
    /// Where the usage history database lives.
    pub data_dir: PathBuf,
    /// API tokens file; None = no tokens (only open endpoints answer).
    pub tokens: Option<PathBuf>,
    /// Whether the status page recognises a visitor without a token by
    /// its source address (and where it came in).
    pub status_by_address: bool,
    /// DNS names requests may carry as Host besides IP addresses,
    /// `localhost` and the host name (see [`crate::http::host`]).
    pub server_names: Vec<String>,
    /// Certificate and key of `listen`; None = plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Certificate and key of `status_listen`; None = plain HTTP.
    pub status_tls: Option<TlsFiles>,
}

/// Runs the daemon until `shutdown` fires. A policy or interface problem is
/// reported before anything on the gateway is touched.
pub async fn run(opts: RunOptions, shutdown: CancellationToken) -> Result<()> {
    // SIGHUP's default action ends the process: take it over before
    // anything else (main ignores it until now), so `systemctl reload`
    // while jatah waits for an interface reads the policy again instead.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let file = opts.policy.display().to_string();
    // The file as it was read: a change from here on is a reload, even one
    // made before the reload watcher starts.
    let mut read_as = crate::runtime::reload::fingerprint(&opts.policy);
    let mut policy = crate::policy::load(&opts.policy).map_err(|e| anyhow::anyhow!("{e}"))?;
    info!(policy = %file, summary = %policy.summary(), "policy valid");

    let tokens = match &opts.tokens {
        Some(path) => Tokens::load(path).map_err(anyhow::Error::msg)?,
        None => {
            warn!("no --tokens file: the API answers only /healthz, /metrics and /openapi.json");
            Tokens::default()
        }
    };
    let names = http::host::ServerNames::new(&opts.server_names);
    if opts.status_tls.is_some() && opts.status_listen.is_none() {
        bail!(
            "--status-tls-cert and --status-tls-key need --status-listen: they are the \
             certificate of the status page's own listener"
        );
    }
    let api_tls = load_certificate(opts.tls.as_ref(), "API", "--tls-cert/--tls-key", &names)?;
    let status_tls = load_certificate(
        opts.status_tls.as_ref(),
        "status page",
        "--status-tls-cert/--status-tls-key",
        &names,
    )?;
    // Room for the HTTP listeners' connection caps beside the maps,
    // netlink sockets and the policy file.
    match crate::sys::raise_open_files_limit() {
        Ok((before, now)) if now > before => {
            info!("open files limit raised from {before} to {now}")
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "cannot raise the open files limit"),
    }
    let _lock = crate::runtime::instance::acquire(&opts.run_dir).map_err(anyhow::Error::msg)?;
    // What waiting cannot fix is reported at once.
    crate::datapath::ensure_bpffs(&opts.bpffs)?;
    let ifaces = loop {
        tokio::select! {
            found = wait_for_interfaces(&policy, &file, &shutdown) => match found? {
                Some(ifaces) => break ifaces,
                None => {
                    info!("stopped while waiting for interfaces; nothing was changed");
                    return Ok(());
                }
            },
            _ = hup.recv() => {}
        }
        let version = crate::runtime::reload::fingerprint(&opts.policy);
        match crate::policy::load(&opts.policy) {
            Ok(p) => {
                info!(policy = %file, summary = %p.summary(), "SIGHUP: policy read again");
                policy = p;
                read_as = version;
            }
            Err(e) => warn!(
                "SIGHUP: the policy file has errors; still waiting with the one read before:\n{e}"
            ),
        }
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let scheme = |tls: &Option<Arc<Certificate>>| if tls.is_some() { "https" } else { "http" };
    info!(listen = %listener.local_addr()?, scheme = scheme(&api_tls), "HTTP server bound");
    let status_listener = match opts.status_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr} (--status-listen)"))?;
            info!(listen = %l.local_addr()?, scheme = scheme(&status_tls), "status page bound");
            Some(l)
        }
        None => None,
    };

    let bpffs = opts.bpffs.clone();
    // The policy in force: the file's, with the schedules open now.
    let base = policy.clone();
    let policy = crate::policy::schedule::effective(&base, &base.schedules, chrono::Utc::now());
    let policy_for_apply = policy.clone();
    let started = std::time::Instant::now();
    let status_port = opts.status_listen.unwrap_or(opts.listen).port();
    let ifaces_for_apply = ifaces.clone();
    // Netlink and BPF syscalls block; keep them off the async workers. The
    // thread stays in this process's network namespace.
    let (datapath, shaper) = tokio::task::spawn_blocking(move || -> Result<(Datapath, Shaper)> {
        let mut datapath = Datapath::load_pinned(&bpffs)?;
        let adopted = datapath.slots().len();
        if adopted > 0 {
            info!(opds = adopted, "adopted OPD slots pinned by an earlier run");
        }
        let mut shaper = Shaper::new()?;
        // Connections to the status page are noted with where they came
        // in, so an office's page opens only from its own place.
        datapath.set_status_port(status_port)?;
        gateway::apply(
            &policy_for_apply,
            &ifaces_for_apply,
            &mut datapath,
            &mut shaper,
        )?;
        datapath.attach(&ifaces_for_apply.attachment())?;
        Ok((datapath, shaper))
    })
    .await??;
    let applied_in = started.elapsed();
    let view = PolicyView {
        policy: policy.clone(),
        slots: datapath.slots().clone(),
        retired: datapath.retired().clone(),
        source: opts.policy.clone(),
    };
    let mut builder = AppState::builder(view, tokens)
        .counters(CounterReader::open(&opts.bpffs)?)
        .history(crate::runtime::sampler::open_history(
            &opts.data_dir,
            policy.gateway.timezone,
        ))
        .reload_status(ReloadStatus {
            successful: true,
            at: Some(chrono::Utc::now()),
            error: None,
            duration_seconds: applied_in.as_secs_f64(),
        })
        .control(Controller {
            base,
            datapath,
            shaper,
            ifaces: ifaces.clone(),
            policy_path: opts.policy.clone(),
            effective_bps: [None, None],
        });
    let probe_config = crate::diagnosis::probe::ProbeConfig {
        interval: policy.diagnosis.probe_interval,
        timeout: policy
            .diagnosis
            .probe_interval
            .min(std::time::Duration::from_secs(1)),
        ..Default::default()
    };
    match crate::diagnosis::probe::Prober::new(probe_config) {
        Ok(prober) => {
            prober.set_targets(crate::diagnosis::signals::probe_targets(&policy));
            builder = builder.prober(prober);
        }
        Err(e) => warn!(error = %e, "ICMP probes unavailable; diagnosis uses passive signals only"),
    }
    let state = Arc::new(builder.build());
    state.by_address.store(opts.status_by_address, Ordering::Release);
    if !opts.status_by_address {
        info!("the status page recognises visitors by token links only (--status-by-address=false)");
    }
    // The SIGHUP stream taken at start goes on to the reload watcher, so
    // a reload asked for while the data path was being attached is kept.
    tokio::spawn(crate::runtime::reload::watch(
        state.clone(),
        opts.policy.clone(),
        shutdown.clone(),
        hup,
        read_as,
    ));
    tokio::spawn(crate::runtime::reload::follow_schedules(
        state.clone(),
        Arc::new(crate::policy::schedule::SystemClock),
        shutdown.clone(),
    ));
    let st = state.clone();
    tokio::spawn(crate::runtime::hosts::keep(
        move || {
            if let Some(reader) = st.counters.as_ref() {
                crate::runtime::hosts::snapshot_now(reader, &st.hosts);
            }
        },
        shutdown.clone(),
    ));
    tokio::spawn(crate::runtime::links::keep_attached(
        state.clone(),
        shutdown.clone(),
    ));
    if let Some(prober) = state.diagnosis.prober.clone() {
        let stop = shutdown.clone();
        tokio::spawn(async move { prober.run(stop).await });
    }
    state.ready.store(true, Ordering::Release);
    crate::runtime::notify::notify(&format!(
        "READY=1\nSTATUS=shaping {} OPDs on {} (download) and {} (upload)",
        policy.opds.len(),
        ifaces.lan_device.name,
        ifaces.wan.name
    ));
    info!(
        wan = %ifaces.wan.name,
        lan = %ifaces.lan_device.name,
        opds = policy.opds.len(),
        "data path attached; allocations in force"
    );

    let sampler = tokio::spawn(crate::runtime::sampler::run(
        state.clone(),
        shutdown.clone(),
    ));
    // http::serve passes every request the client's address: it
    // identifies an OPD's visitors on the status page.
    info!(names = ?names.names(), "answering requests for IP addresses and these names");
    let certificates = [("API", &api_tls), ("status page", &status_tls)]
        .into_iter()
        .filter_map(|(what, c)| Some((what, c.clone()?)))
        .collect();
    tokio::spawn(http::tls::watch(
        certificates,
        names.clone(),
        shutdown.clone(),
    ));
    let status = status_listener.map(|l| {
        tokio::spawn(http::serve_tls(
            "status",
            l,
            http::for_names(http::status_router(state.clone()), &names),
            shutdown.clone(),
            status_tls.map(|c| c.server_config()),
        ))
    });
    let app = http::for_names(http::router(state), &names);
    let api_tls = api_tls.map(|c| c.server_config());
    http::serve_tls("api", listener, app, shutdown.clone(), api_tls).await;
    crate::runtime::notify::notify("STOPPING=1");
    shutdown.cancel();
    if let Some(status) = status {
        status.await.context("status page server")?;
    }
    shutdown.cancel();
    let _ = sampler.await;
    info!("stopped; the data path stays in force (`jatah down` removes it)");
    Ok(())
}

/// A listener's certificate, loaded and checked: a file missing,
/// unreadable or invalid, a key others may read or that is not the
/// certificate's stops jatah here, before the gateway is touched. `what`
/// names the listener in logs, `flags` its options in errors.
fn load_certificate(
    files: Option<&TlsFiles>,
    what: &str,
    flags: &str,
    names: &http::host::ServerNames,
) -> Result<Option<Arc<Certificate>>> {
    files
        .map(|f| http::tls::start(what, flags, f, names).map_err(anyhow::Error::msg))
        .transpose()
}

/// Resolves the policy's interfaces, waiting for any that do not exist
/// yet (a VLAN subinterface or bridge the network configuration creates
/// after jatah starts): they are looked for every second, and jatah
/// attaches as soon as all exist. Other problems (LAN interfaces on
/// different devices) stop jatah at once. None if shutdown came first.
async fn wait_for_interfaces(
    policy: &crate::policy::Policy,
    file: &str,
    shutdown: &CancellationToken,
) -> Result<Option<gateway::Interfaces>> {
    let started = std::time::Instant::now();
    let mut last_said: Option<std::time::Instant> = None;
    loop {
        match gateway::resolve_interfaces(policy, file) {
            Ok(ifaces) => {
                if last_said.is_some() {
                    info!(
                        waited_seconds = started.elapsed().as_secs_f64(),
                        "every interface the policy names exists now"
                    );
                }
                return Ok(Some(ifaces));
            }
            Err(gateway::GatewayError::NoSuchInterface { name, key, .. }) => {
                if last_said.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                    warn!(
                        interface = %name,
                        key,
                        policy = %file,
                        "waiting for the interface to appear; nothing is shaped until it does                          (a typo? `ip link` lists this host's interfaces)"
                    );
                    last_said = Some(std::time::Instant::now());
                }
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(crate::runtime::links::CHECK_EVERY) => {}
        }
    }
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
    if crate::sys::effective_uid() != 0 {
        bail!(
            "jatah run needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON) to load \
             eBPF programs and change qdiscs"
        );
    }
    Ok(())
}

/// `jatah down` with the instance lock in /run/jatah, as `jatah run` keeps
/// it by default (see [`down_in`]).
pub fn down(policy_path: &std::path::Path, bpffs: &std::path::Path) -> Result<()> {
    down_in(policy_path, bpffs, std::path::Path::new("/run/jatah"))
}

/// `jatah down`: removes jatah's pins (which detaches its programs) and its
/// HTB trees on the policy's interfaces. Foreign qdiscs are left alone.
///
/// Nothing is removed beside a running jatah (one holding the instance
/// lock under `run_dir`, as `jatah run --run-dir` keeps it), which would
/// put everything back or fail at its next reload; nor under a `bpffs`
/// path that is not a bpffs, where the pins cannot be and whatever is
/// there is someone else's. The lock is held until the end, so no jatah
/// starts while things are removed.
pub fn down_in(
    policy_path: &std::path::Path,
    bpffs: &std::path::Path,
    run_dir: &std::path::Path,
) -> Result<()> {
    let file = policy_path.display().to_string();
    let policy = crate::policy::load(policy_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _lock = crate::runtime::instance::take(run_dir).map_err(refuse_running)?;
    crate::datapath::bpffs_or_what(bpffs).map_err(|what| {
        anyhow::anyhow!(
            "{} is not a bpffs mount ({what}); nothing was removed. Pass the --bpffs that \
             `jatah run` was given (jatah pins under <bpffs>/jatah)",
            bpffs.display()
        )
    })?;
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
    info!(
        pins_removed = removed_pins,
        trees_removed = removed_trees,
        "jatah removed from this gateway"
    );
    Ok(())
}

/// `jatah down`'s refusal while a jatah runs, or why it could not tell.
fn refuse_running(busy: crate::runtime::instance::Busy) -> anyhow::Error {
    use crate::runtime::instance::Busy;
    match busy {
        Busy::Held { pid, lock, .. } => anyhow::anyhow!(
            "a jatah is running ({}); stop it first: systemctl stop jatah. Nothing was \
             removed (it holds {})",
            pid.map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "its pid is not recorded".into()),
            lock.display()
        ),
        Busy::Failed(e) => anyhow::anyhow!(
            "cannot tell whether a jatah is running ({e}); nothing was removed"
        ),
    }
}

#[cfg(test)]
mod tests;
