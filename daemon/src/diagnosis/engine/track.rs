//! One OPD's (or the gateway's) window of signals, its current verdict
//! and the hysteresis that moves it to a new one.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::diagnosis::baseline::Baseline;

use super::inputs::{OpdSignals, PROBES_KEPT, Probe, RTTS_KEPT, Thresholds, WINDOW_S, enter_after};
use crate::diagnosis::verdict::{Change, State, Verdict, explain};

#[derive(Debug, Default)]
pub(super) struct Track {
    pub(super) seconds: VecDeque<OpdSignals>,
    pub(super) probes: VecDeque<Probe>,
    pub(super) rtts: [VecDeque<(DateTime<Utc>, Duration)>; 2],
    pub(super) current: Option<Verdict>,
    pub(super) candidate: Option<(State, u32)>,
    /// Learned normal round trips: the router's probes, the LAN and the
    /// WAN side of handshakes.
    pub(super) baselines: Baselines,
    /// The latest outage (link down or a local fault): how long it lasted
    /// and how many seconds ago it ended. TCP repairs an outage by sending
    /// again what it lost, in bursts as late as its backed-off timers.
    pub(super) outage: Option<Outage>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outage {
    pub(super) lasted: u32,
    pub(super) ago: u32,
}

impl Outage {
    /// Seconds after an outage in which segments sent again are its
    /// repair, not loss: as long as the outage, 5 to 60 s.
    pub(super) fn settling(&self) -> u32 {
        self.lasted.clamp(5, 60)
    }
}

#[derive(Debug, Default)]
pub(super) struct Baselines {
    pub(super) probe: Baseline,
    pub(super) handshake: [Baseline; 2],
}

impl Track {
    pub(super) fn push(&mut self, at: DateTime<Utc>, s: &OpdSignals) {
        let out = s.link_up == Some(false)
            || self
                .current
                .as_ref()
                .is_some_and(|v| v.state == State::LocalFault);
        self.outage = match (self.outage, out) {
            (Some(o), true) if o.ago == 0 => Some(Outage {
                lasted: o.lasted.saturating_add(1),
                ago: 0,
            }),
            (_, true) => Some(Outage { lasted: 1, ago: 0 }),
            (Some(o), false) => Some(Outage {
                ago: o.ago.saturating_add(1),
                ..o
            }),
            (None, false) => None,
        };
        self.seconds.push_back(s.clone());
        while self.seconds.len() > WINDOW_S {
            self.seconds.pop_front();
        }
        for p in &s.probes {
            self.probes.push_back(*p);
        }
        while self.probes.len() > PROBES_KEPT {
            self.probes.pop_front();
        }
        for side in 0..2 {
            for r in &s.handshake_rtts[side] {
                self.rtts[side].push_back((at, *r));
            }
            while self.rtts[side].len() > RTTS_KEPT {
                self.rtts[side].pop_front();
            }
            while self.rtts[side]
                .front()
                .is_some_and(|(t, _)| (at - *t).num_seconds() > WINDOW_S as i64)
            {
                self.rtts[side].pop_front();
            }
        }
    }

    /// Seconds of the window since the latest outage settled: the ones
    /// whose TCP loss is the path's own.
    pub(super) fn settled(&self) -> usize {
        match self.outage {
            None => self.seconds.len(),
            Some(o) => o.ago.saturating_sub(o.settling()) as usize,
        }
    }

    pub(super) fn last(&self, n: usize) -> impl Iterator<Item = &OpdSignals> {
        self.seconds.iter().rev().take(n)
    }

    pub(super) fn packets(&self, n: usize, dir: usize) -> u64 {
        self.last(n).map(|s| s.packets[dir]).sum()
    }

    pub(super) fn mean_bps(&self, n: usize, dir: usize) -> u64 {
        let k = self.seconds.len().min(n).max(1) as u64;
        self.last(n).map(|s| s.bps[dir]).sum::<u64>() / k
    }

    /// [`Track::mean_bps`] less what its HTB class did not send: what the
    /// office received through the gateway.
    pub(super) fn mean_sent_bps(&self, n: usize, dir: usize) -> u64 {
        let k = self.seconds.len().min(n).max(1) as i64;
        let sum: i64 = self
            .last(n)
            .map(|s| {
                (s.bps[dir] as i64).saturating_sub(s.unsent_bytes[dir].unwrap_or(0).saturating_mul(8))
            })
            .sum();
        (sum / k).max(0) as u64
    }

    pub(super) fn drops(&self, n: usize) -> u64 {
        self.last(n).map(|s| s.drops[0] + s.drops[1]).sum()
    }

    pub(super) fn lost_in_a_row(&self) -> u32 {
        self.probes
            .iter()
            .rev()
            .take_while(|p| **p == Probe::Lost)
            .count() as u32
    }

    pub(super) fn loss_ratio(&self) -> Option<f64> {
        (!self.probes.is_empty()).then(|| {
            self.probes.iter().filter(|p| **p == Probe::Lost).count() as f64
                / self.probes.len() as f64
        })
    }

    pub(super) fn probe_median(&self) -> Option<Duration> {
        median(self.probes.iter().filter_map(|p| match p {
            Probe::Answered(d) => Some(*d),
            Probe::Lost => None,
        }))
    }

    pub(super) fn rtt_median(&self, side: usize) -> Option<(Duration, usize)> {
        let n = self.rtts[side].len();
        median(self.rtts[side].iter().map(|(_, d)| *d))
            .filter(|_| n >= 3)
            .map(|m| (m, n))
    }

    /// Moves toward `state` with hysteresis; returns a change when taken.
    pub(super) fn settle(
        &mut self,
        opd: Option<&str>,
        at: DateTime<Utc>,
        state: State,
        evidence: Value,
        t: &Thresholds,
    ) -> Option<Change> {
        let same = self.current.as_ref().map(|v| v.state) == Some(state);
        if same {
            self.candidate = None;
            if let Some(v) = &mut self.current {
                // The sentences quote figures (a loss share, a delivered
                // rate): they follow the evidence, not the first second.
                (v.explanation_en, v.explanation_id) = explain(opd, state, &evidence);
                v.evidence = evidence;
            }
            return None;
        }
        let held = match self.candidate {
            Some((c, n)) if c == state => n + 1,
            _ => 1,
        };
        // The first verdict is taken at once: there is nothing to flap from.
        if self.current.is_some() && held < enter_after(state, t) {
            self.candidate = Some((state, held));
            return None;
        }
        self.candidate = None;
        let since = at - chrono::Duration::seconds(i64::from(held.saturating_sub(1)));
        let (en, id) = explain(opd, state, &evidence);
        let verdict = Verdict {
            state,
            since,
            evidence,
            explanation_en: en,
            explanation_id: id,
        };
        let previous = self.current.replace(verdict.clone()).map(|v| v.state);
        Some(Change {
            opd: opd.map(str::to_string),
            previous,
            verdict,
        })
    }
}

pub(super) fn median(it: impl Iterator<Item = Duration>) -> Option<Duration> {
    let mut v: Vec<Duration> = it.collect();
    if v.is_empty() {
        return None;
    }
    v.sort();
    Some(v[v.len() / 2])
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

