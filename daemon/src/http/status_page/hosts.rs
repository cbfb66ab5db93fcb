//! The office's top hosts on its status page: from the snapshots the hosts
//! task keeps (the newest, at most 15 s old, against the one about five
//! minutes before it), never a walk of the kernel's table per page view.

use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use crate::policy::Opd;
use crate::runtime::hosts;
use crate::runtime::state::AppState;

/// Hosts shown on the page.
const SHOWN: usize = 5;
/// The window the page shows.
const WINDOW: Duration = Duration::from_secs(300);

/// One host on the page.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageHost {
    pub address: String,
    /// Its name from the policy (`[[opd.host]]`).
    pub name: Option<String>,
    pub download_bytes: u64,
    pub upload_bytes: u64,
    /// Share of the office's bytes each way over the window, 0..1.
    pub download_share: f64,
    pub upload_share: f64,
}

/// The office's top hosts over about the last five minutes.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopHosts {
    /// How long the window really was, seconds.
    pub window_seconds: f64,
    /// Hosts of the office that moved any byte in it.
    pub active_hosts: usize,
    /// Most bytes first, at most five.
    pub hosts: Vec<PageHost>,
}

/// The office's top hosts; None until two snapshots exist or without a
/// slot.
pub fn top_hosts(state: &AppState, opd: &Opd) -> Option<TopHosts> {
    let slot = *state.view().slots.get(&opd.id)?;
    let now = Instant::now();
    let (newest_age, newest) = state.hosts.base(now, Duration::ZERO)?;
    let (base_age, base) = state.hosts.base(now, WINDOW + newest_age)?;
    let seconds = base_age.saturating_sub(newest_age).as_secs_f64();
    if seconds <= 0.0 {
        return None;
    }
    let used = hosts::Window::of(&base, &newest, slot);
    Some(TopHosts {
        window_seconds: (seconds * 10.0).round() / 10.0,
        active_hosts: used.hosts.len(),
        hosts: used
            .hosts
            .iter()
            .take(SHOWN)
            .map(|h| PageHost {
                address: h.address.to_string(),
                name: opd.host_name(h.address).map(str::to_string),
                download_bytes: h.bytes[0],
                upload_bytes: h.bytes[1],
                download_share: used.share(h, 0),
                upload_share: used.share(h, 1),
            })
            .collect(),
    })
}
