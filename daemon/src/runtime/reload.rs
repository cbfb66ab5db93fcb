//! Policy reloads while traffic flows: parse, validate, diff against the
//! policy in force, apply only the difference in place (HTB classes changed,
//! prefixes added and removed, nothing torn down), restore the previous
//! state if anything fails, then publish. An invalid file changes nothing.
//!
//! Triggers: SIGHUP, a change of the policy file (polled, so an editor's
//! save-by-rename is seen), and `POST /api/v1/policy/reload`. The tokens
//! file is watched alongside, by a task of its own ([`crate::runtime::tokens`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use utoipa::ToSchema;

use crate::gateway;
use crate::policy::Policy;
use crate::policy::plan::{Plan, diff};
use crate::runtime::state::{AppState, Controller, PolicyView, ReloadStatus, lock};

/// The result of a reload, as the API and logs report it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadOutcome {
    /// applied, unchanged, rejected (invalid file or a change that needs a
    /// restart; nothing touched) or failed (applying went wrong; the
    /// previous state was restored).
    pub result: String,
    pub plan: Option<Plan>,
    /// Why it was rejected or failed (FILE:LINE:COLUMN lines for an
    /// invalid file).
    pub error: Option<String>,
    pub duration_seconds: f64,
}

impl ReloadOutcome {
    fn new(result: &str, plan: Option<Plan>, error: Option<String>, started: Instant) -> Self {
        ReloadOutcome {
            result: result.into(),
            plan,
            error,
            duration_seconds: started.elapsed().as_secs_f64(),
        }
    }

    pub fn ok(&self) -> bool {
        self.result == "applied" || self.result == "unchanged"
    }
}

/// Reloads the policy file now (blocking: netlink and BPF syscalls).
pub fn reload(state: &AppState, why: &str) -> ReloadOutcome {
    with_controller(state, why, |ctl, started| {
        match crate::policy::load(&ctl.policy_path) {
            Err(e) => ReloadOutcome::new("rejected", None, Some(e.to_string()), started),
            Ok(new) => {
                let in_force =
                    crate::policy::schedule::effective(&new, &new.schedules, chrono::Utc::now());
                let outcome = apply(state, ctl, in_force, started);
                if outcome.ok() {
                    ctl.base = new;
                }
                outcome
            }
        }
    })
}

/// Puts the allocations of the windows open now into force (at a
/// schedule's edge); the policy file is not read again.
pub fn reapply(state: &AppState, why: &str) -> ReloadOutcome {
    with_controller(state, why, |ctl, started| {
        let in_force =
            crate::policy::schedule::effective(&ctl.base, &ctl.base.schedules, chrono::Utc::now());
        apply(state, ctl, in_force, started)
    })
}

/// Runs one change with the kernel state held (one at a time), then
/// reports its outcome.
fn with_controller(
    state: &AppState,
    why: &str,
    change: impl FnOnce(&mut Controller, Instant) -> ReloadOutcome,
) -> ReloadOutcome {
    let started = Instant::now();
    let mut guard = lock(&state.control);
    let Some(ctl) = guard.as_mut() else {
        return ReloadOutcome::new(
            "rejected",
            None,
            Some("the data path is not attached yet".into()),
            started,
        );
    };
    let file = ctl.policy_path.display().to_string();
    let outcome = change(ctl, started);
    drop(guard);
    record(state, why, &file, &outcome);
    outcome
}

/// Reports a reload's outcome: the status the metrics and API show, a log line.
fn record(state: &AppState, why: &str, file: &str, outcome: &ReloadOutcome) {
    let mut status = lock(&state.reloads);
    *status = ReloadStatus {
        successful: outcome.ok(),
        at: Some(chrono::Utc::now()),
        error: outcome.error.clone(),
        duration_seconds: outcome.duration_seconds,
    };
    match outcome.result.as_str() {
        "applied" => info!(
            trigger = why,
            policy = %file,
            changes = %outcome.plan.as_ref().map(Plan::summary).unwrap_or_default(),
            seconds = outcome.duration_seconds,
            "policy reloaded"
        ),
        "unchanged" => info!(trigger = why, policy = %file, "policy reloaded: no change"),
        _ => error!(
            trigger = why,
            policy = %file,
            result = %outcome.result,
            error = %outcome.error.clone().unwrap_or_default(),
            "policy reload refused; the policy in force stays"
        ),
    }
}

fn apply(state: &AppState, ctl: &mut Controller, new: Policy, started: Instant) -> ReloadOutcome {
    let old = state.view().policy.clone();
    let plan = diff(&old, &new);
    if !plan.restart_needed.is_empty() {
        return ReloadOutcome::new(
            "rejected",
            Some(plan.clone()),
            Some(format!(
                "{}: interfaces cannot change on a reload; restart jatah",
                plan.restart_needed.join("; ")
            )),
            started,
        );
    }
    if plan.is_empty() {
        return ReloadOutcome::new("unchanged", Some(plan), None, started);
    }
    // Slots whose final counters were scraped may now be reused.
    let scraped: BTreeSet<u32> = state.policy.take_reusable();
    ctl.datapath.release(&scraped);
    // An adapted capacity stays in force across the reload (the sampler
    // takes it back to the contract if the new policy turns adapt off).
    let effective = ctl.effective_bps;
    if let Err(e) =
        gateway::apply_scaled(&new, &ctl.ifaces, &mut ctl.datapath, &mut ctl.shaper, effective)
    {
        warn!(error = %e, "applying the new policy failed; restoring the previous one");
        let restored =
            gateway::apply_scaled(&old, &ctl.ifaces, &mut ctl.datapath, &mut ctl.shaper, effective);
        let msg = match restored {
            Ok(()) => format!("{e}; the previous policy was restored"),
            Err(r) => format!("{e}; restoring the previous policy also failed: {r}"),
        };
        publish(state, ctl, old);
        return ReloadOutcome::new("failed", Some(plan), Some(msg), started);
    }
    publish(state, ctl, new);
    ReloadOutcome::new("applied", Some(plan), None, started)
}

/// Makes a policy the one in force for everything outside the kernel:
/// the API and metrics view, the verdict thresholds, the probe targets.
fn publish(state: &AppState, ctl: &Controller, policy: Policy) {
    lock(&state.diagnosis.engine)
        .set_thresholds(crate::diagnosis::Thresholds::from_policy(&policy));
    if let Some(p) = &state.diagnosis.prober {
        p.set_targets(crate::diagnosis::signals::probe_targets(&policy));
    }
    let view = PolicyView {
        slots: ctl.datapath.slots().clone(),
        retired: ctl.datapath.retired().clone(),
        source: ctl.policy_path.clone(),
        policy,
    };
    state.policy.publish(view);
}

/// What identifies a version of the file on disk.
pub(crate) fn fingerprint(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// Reloads on SIGHUP (`hup`: the stream taken when jatah started, so none
/// since is lost) and when the policy file changes from `read_as`, the
/// version in force (checked every second; a change must hold still for
/// one check, so a half-written file is not read). Starts the tokens
/// file's watcher beside it.
pub async fn watch(
    state: Arc<AppState>,
    path: PathBuf,
    shutdown: CancellationToken,
    hup: tokio::signal::unix::Signal,
    read_as: Option<(SystemTime, u64, u64)>,
) {
    // The tokens file, on the same triggers, in its own task: a slow policy
    // reload must not hold up a revocation.
    tokio::spawn(crate::runtime::tokens::watch(
        state.clone(),
        shutdown.clone(),
    ));
    let mut hup = Some(hup);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seen = read_as;
    let mut pending: Option<(SystemTime, u64, u64)> = None;
    loop {
        let trigger = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick() => {
                let now = fingerprint(&path);
                if now == seen {
                    pending = None;
                    continue;
                }
                if pending != now {
                    pending = now;
                    continue;
                }
                "file changed"
            }
        };
        seen = fingerprint(&path);
        pending = None;
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || reload(&st, trigger)).await;
    }
}

/// Applies the schedules' allocations at every window edge: sleeps until
/// the next edge (at most a minute, so a changed policy or a clock that
/// jumped is noticed), then puts the allocations in force.
pub async fn follow_schedules(
    state: Arc<AppState>,
    clock: Arc<dyn crate::policy::schedule::Clock>,
    shutdown: CancellationToken,
) {
    loop {
        let now = clock.now();
        let next = {
            let guard = lock(&state.control);
            guard.as_ref().and_then(|c| {
                crate::policy::schedule::next_edge(&c.base.schedules, now, c.base.gateway.timezone)
            })
        };
        let wait = next
            .map(|n| (n - now).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if next.is_some_and(|n| clock.now() >= n) {
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || reapply(&st, "schedule")).await;
        }
    }
}
