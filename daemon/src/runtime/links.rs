//! Keeps jatah on the gateway's interfaces when one goes away and comes
//! back: a VLAN subinterface or bridge recreated by the network
//! configuration, a USB NIC plugged in again, a veth rebuilt. Deleting an
//! interface takes its classifier links and HTB tree with it; the new one
//! (same name, new ifindex) gets both again within a second or two of
//! appearing. Attaching that fails is logged with the interface and the
//! operation, counted in `jatah_kernel_errors_total`, and retried with
//! backoff (1, 2, 4 ... 30 s).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::gateway::{self, Interface};
use crate::policy::Direction;
use crate::runtime::state::{AppState, Controller, lock};
use crate::shaper::Missing;

/// The keeper's entry for OPDs' bound interfaces (no interface has this
/// name: it has a space).
const PLACES_KEY: &str = "opd places";

/// How often interfaces are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to re-attach.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Wait before attempt `failures + 1` after `failures` failed ones.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// What the keeper remembers of one interface between checks.
#[derive(Debug, Default)]
struct Watched {
    /// When it was last seen missing (None while present).
    missing_since: Option<Instant>,
    failures: u32,
    next_try: Option<Instant>,
}

/// Looks at the shaped interfaces every [`CHECK_EVERY`] until shutdown.
pub async fn keep_attached(state: Arc<AppState>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keeper = Arc::new(std::sync::Mutex::new(BTreeMap::<String, Watched>::new()));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (st, k) = (state.clone(), keeper.clone());
        let _ = tokio::task::spawn_blocking(move || {
            check_once(&st, &mut k.lock().unwrap_or_else(|p| p.into_inner()));
        })
        .await;
    }
}

#[derive(Clone, Copy)]
enum Role {
    Lan,
    Wan,
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Role::Lan => "gateway.lan",
            Role::Wan => "gateway.wan",
        }
    }

    fn direction(self) -> Direction {
        match self {
            Role::Lan => Direction::Download,
            Role::Wan => Direction::Upload,
        }
    }

    fn of(self, ctl: &mut Controller) -> &mut Interface {
        match self {
            Role::Lan => &mut ctl.ifaces.lan_device,
            Role::Wan => &mut ctl.ifaces.wan,
        }
    }
}

fn check_once(state: &AppState, keeper: &mut BTreeMap<String, Watched>) {
    let now = Instant::now();
    let mut guard = lock(&state.control);
    let Some(ctl) = guard.as_mut() else {
        return;
    };
    // The gateway's own addresses are kept out of the OPDs; when they
    // change (DHCP, an admin), the tries follow within a second.
    let own = crate::sys::interface_addresses().into_iter().map(|(_, a)| a);
    if ctl.datapath.set_own_addresses(own) {
        let policy = state.view().policy.clone();
        match ctl.datapath.sync_opds(&gateway::opd_prefixes(&policy)) {
            Ok(()) => info!("the gateway's addresses changed: its own stay out of every OPD"),
            Err(e) => {
                warn!(error = %e, "keeping the gateway's new addresses out of the OPDs failed");
                state.kernel.count_error("prefixes", "");
            }
        }
    }
    let mut attached = BTreeMap::new();
    let mut moved = false;
    for role in [Role::Lan, Role::Wan] {
        let iface = role.of(ctl).clone();
        let w = keeper.entry(iface.name.clone()).or_default();
        let up = match gateway::ifindex(&iface.name) {
            None => {
                if w.missing_since.is_none() {
                    warn!(
                        interface = %iface.name,
                        key = role.key(),
                        "interface is gone: nothing is shaped or counted there until it returns; \
                         jatah re-attaches as soon as it does"
                    );
                    w.missing_since = Some(now);
                }
                false
            }
            Some(idx) if idx == iface.ifindex && w.failures == 0 => {
                w.missing_since = None;
                keep_in_place(state, ctl, role, idx)
            }
            Some(idx) => {
                if w.next_try.is_some_and(|t| now < t) {
                    false
                } else {
                    match reattach(state, ctl, role, idx) {
                        Ok(()) => {
                            info!(
                                interface = %iface.name,
                                ifindex = idx,
                                missing_seconds = w.missing_since.map(|t| now.duration_since(t).as_secs_f64()),
                                "interface back: classifiers and HTB tree attached again"
                            );
                            *w = Watched::default();
                            moved = true;
                            true
                        }
                        Err((operation, e)) => {
                            w.failures += 1;
                            let wait = backoff(w.failures);
                            w.next_try = Some(now + wait);
                            error!(
                                interface = %iface.name,
                                operation,
                                error = %e,
                                attempt = w.failures,
                                retry_in_seconds = wait.as_secs(),
                                "attaching to the interface failed"
                            );
                            state.kernel.count_error(operation, &iface.name);
                            false
                        }
                    }
                }
            }
        };
        attached.insert(iface.name.clone(), up);
    }
    if moved {
        state.kernel.set_shaping(ctl.ifaces.clone());
    }
    // OPDs bound to a port: a port deleted and created again gets its
    // classifier and its place back.
    let policy = state.view().policy.clone();
    if policy.opds.iter().any(|o| o.interface.is_some()) {
        let now_ok = match gateway::put_places(&policy, &ctl.ifaces, &mut ctl.datapath) {
            Ok(()) => true,
            Err(e) => {
                if keeper.get(PLACES_KEY).is_none_or(|w| w.failures == 0) {
                    warn!(error = %e, "an OPD's interface is missing or cannot be read: its upload is judged at the LAN device alone until it is back");
                    state.kernel.count_error("places", &ctl.ifaces.lan_device.name);
                }
                false
            }
        };
        let w = keeper.entry(PLACES_KEY.to_string()).or_default();
        if now_ok && w.failures > 0 {
            info!("every OPD's interface is back: upload is judged where it comes in again");
        }
        w.failures = u32::from(!now_ok);
    }
    state.kernel.set_attached(attached);
}

/// On an interface that stayed: puts back what was removed behind jatah's
/// back (its root qdisc replaced, classes deleted, a classifier link
/// detached), counting and logging each repair. Whether all of it is in
/// place afterwards.
fn keep_in_place(state: &AppState, ctl: &mut Controller, role: Role, ifindex: u32) -> bool {
    let name = role.of(ctl).name.clone();
    let mut whole = true;
    match ctl.datapath.detached_on(&ctl.ifaces.attachment(), &name) {
        Ok(gone) if gone.is_empty() => {}
        Ok(gone) => match ctl.datapath.attach_on(&ctl.ifaces.attachment(), Some(&name)) {
            Ok(()) => {
                for prog in &gone {
                    warn!(
                        interface = %name,
                        program = prog,
                        "jatah's classifier was detached by someone else: traffic there went \
                         unclassified and unshaped; attached again"
                    );
                    state.kernel.count_repair("classifier", &name);
                }
            }
            Err(e) => {
                error!(interface = %name, error = %e, "re-attaching a detached classifier failed");
                state.kernel.count_error("attach", &name);
                whole = false;
            }
        },
        Err(e) => {
            warn!(interface = %name, error = %e, "cannot check jatah's classifiers");
            state.kernel.count_error("query", &name);
        }
    }
    let gone = match ctl.shaper.missing(ifindex) {
        Ok(gone) => gone,
        Err(e) => {
            warn!(interface = %name, error = %e, "cannot check jatah's HTB tree");
            state.kernel.count_error("dump", &name);
            None
        }
    };
    if let Some(gone) = gone {
        let (what, told) = match gone {
            Missing::Root => (
                "root_qdisc",
                "jatah's root qdisc was replaced by someone else: nothing was shaped there"
                    .to_string(),
            ),
            Missing::Classes(n) => (
                "class",
                format!("{n} of jatah's HTB classes were deleted by someone else"),
            ),
        };
        ctl.shaper.forget(ifindex);
        match put_tree(state, ctl, role, ifindex) {
            Ok(()) => {
                warn!(interface = %name, key = role.key(), "{told}; HTB tree put back");
                state.kernel.count_repair(what, &name);
            }
            Err((operation, e)) => {
                error!(interface = %name, operation, error = %e, "{told}; putting it back failed");
                state.kernel.count_error(operation, &name);
                whole = false;
            }
        }
    }
    whole
}

/// Puts the classifiers and the HTB tree of `role` on the interface's new
/// ifindex. Returns the failed operation and why.
fn reattach(
    state: &AppState,
    ctl: &mut Controller,
    role: Role,
    ifindex: u32,
) -> Result<(), (&'static str, String)> {
    role.of(ctl).ifindex = ifindex;
    let name = role.of(ctl).name.clone();
    ctl.datapath
        .attach_on(&ctl.ifaces.attachment(), Some(&name))
        .map_err(|e| ("attach", e.to_string()))?;
    put_tree(state, ctl, role, ifindex)
}

/// Brings the HTB tree of `role` on `ifindex` to what the policy (and
/// the capacity in force) wants.
fn put_tree(
    state: &AppState,
    ctl: &mut Controller,
    role: Role,
    ifindex: u32,
) -> Result<(), (&'static str, String)> {
    let policy = state.view().policy.clone();
    let pref = gateway::leaf_preference(policy.gateway.leaf_qdisc);
    let leaf = ctl.shaper.resolve_leaf(ifindex, &pref);
    let mut tree = gateway::htb_tree(&policy, &ctl.datapath, role.direction(), leaf);
    if let Some(cap) = ctl.effective_bps[role.direction().index()] {
        gateway::scale_tree(&mut tree, cap, &policy.gateway.shaping);
    }
    ctl.shaper
        .apply_changed(ifindex, &tree)
        .map_err(|e| ("htb", e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_thirty() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(0).as_secs(), 1);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
