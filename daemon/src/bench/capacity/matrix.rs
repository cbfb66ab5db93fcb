//! The sweep's scenarios (issue 14): what demand runs, what is broken,
//! and what jatah is expected to say.

use anyhow::Result;

use super::OPDS;
use crate::bench::ChildGuard;
use crate::lab::Lab;
use crate::policy::Direction;

/// What the OPDs ask for during a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// In one direction: bulk TCP with one, four and eight flows (each up
    /// to its ceiling: 10M down, 5M up) and one flow paced at 2M down or
    /// 1M up; about 32 Mbit/s down or 16 Mbit/s up.
    Mixed(Direction),
    /// dinkes bulk at its 10M download ceiling, the others paced at 1M.
    OneAtCeiling,
    /// A quiet night: every OPD a steady 200 kbit/s download.
    Quiet,
    /// The soak's changing demand: per OPD 0 (paced 500k), or 1 or 4 bulk
    /// download flows.
    Soak([u8; 4]),
}

impl Demand {
    /// The aggregate it asks of the uplink in `dir`, bits/s (what a limit
    /// "at x % of demand" is a fraction of).
    pub fn bps(self, dir: Direction) -> f64 {
        match (self, dir) {
            (Demand::Mixed(Direction::Download), Direction::Download) => 32e6,
            (Demand::Mixed(Direction::Upload), Direction::Upload) => 16e6,
            (Demand::OneAtCeiling, Direction::Download) => 13e6,
            (Demand::Quiet, Direction::Download) => 0.8e6,
            _ => 0.0,
        }
    }

    /// A soak demand from a random word.
    pub fn soak(word: u64) -> Demand {
        let mut flows = [0u8; 4];
        for (i, f) in flows.iter_mut().enumerate() {
            *f = [0, 1, 4][((word >> (8 * i)) % 3) as usize];
        }
        Demand::Soak(flows)
    }

    /// Starts its iperf3 clients for `seconds`.
    pub fn start(self, lab: &Lab, seconds: u32) -> Result<Vec<ChildGuard>> {
        let bulk = |i: usize, dir: Direction, flows: u8| -> Result<ChildGuard> {
            let flows = flows.to_string();
            Ok(ChildGuard::new(lab.spawn_iperf_args(
                i,
                dir,
                seconds,
                0,
                &["-P", &flows],
                false,
            )?))
        };
        let paced = |i: usize, dir: Direction, rate: &str| -> Result<ChildGuard> {
            Ok(ChildGuard::new(
                lab.spawn_iperf_paced(i, dir, seconds, rate)?,
            ))
        };
        let d = Direction::Download;
        Ok(match self {
            Demand::Mixed(dir) => vec![
                bulk(0, dir, 1)?,
                bulk(1, dir, 4)?,
                bulk(2, dir, 8)?,
                paced(3, dir, if dir == d { "2M" } else { "1M" })?,
            ],
            Demand::OneAtCeiling => vec![
                bulk(0, d, 8)?,
                paced(1, d, "1M")?,
                paced(2, d, "1M")?,
                paced(3, d, "1M")?,
            ],
            Demand::Quiet => (0..OPDS.len())
                .map(|i| paced(i, d, "200k"))
                .collect::<Result<_>>()?,
            Demand::Soak(flows) => flows
                .iter()
                .enumerate()
                .map(|(i, &f)| {
                    if f == 0 {
                        paced(i, d, "500k")
                    } else {
                        bulk(i, d, f)
                    }
                })
                .collect::<Result<_>>()?,
        })
    }
}

/// What a scenario breaks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Impairment {
    /// The uplink in `dir` policed to `pct` % of the demand.
    Police { dir: Direction, pct: u32 },
    /// The uplink in `dir` limited to `pct` % of the demand behind a queue
    /// of `ms` milliseconds.
    Queue { dir: Direction, pct: u32, ms: u32 },
    /// Random loss of `pct` % of everything on the uplink in `dir`.
    WanLoss { dir: Direction, pct: u32 },
    /// Random loss of `pct` % each way on OPD `opd`'s LAN.
    LanLoss { opd: usize, pct: u32 },
    /// disdik also downloads (four flows) from a far server behind 2 Mbit/s
    /// and a 200 ms queue; the rest of the Internet is fine.
    SlowServer,
    /// Nothing: the demand is the scenario.
    None,
}

impl Impairment {
    pub fn direction(self) -> Direction {
        match self {
            Impairment::Police { dir, .. }
            | Impairment::Queue { dir, .. }
            | Impairment::WanLoss { dir, .. } => dir,
            _ => Direction::Download,
        }
    }

    fn rate(dir: Direction, pct: u32, demand: Demand) -> String {
        format!("{:.0}kbit", Self::rate_of(dir, pct, demand) / 1e3)
    }

    fn rate_of(dir: Direction, pct: u32, demand: Demand) -> f64 {
        demand.bps(dir) * f64::from(pct) / 100.0
    }

    /// The rate a limit is set to, bits/s (None for what is no limit).
    pub fn limit_bps(self, demand: Demand) -> Option<f64> {
        match self {
            Impairment::Police { dir, pct } | Impairment::Queue { dir, pct, .. } => {
                Some(Self::rate_of(dir, pct, demand))
            }
            _ => None,
        }
    }

    /// Breaks the lab; the clients it starts run until they are dropped.
    pub fn apply(self, lab: &mut Lab, demand: Demand, seconds: u32) -> Result<Vec<ChildGuard>> {
        match self {
            Impairment::Police { dir, pct } => {
                lab.police_uplink_toward(dir, &Self::rate(dir, pct, demand))?
            }
            Impairment::Queue { dir, pct, ms } => {
                lab.queue_uplink_toward(dir, &Self::rate(dir, pct, demand), &format!("{ms}ms"))?
            }
            Impairment::WanLoss { dir, pct } => lab.wan_loss_toward(dir, pct, false)?,
            Impairment::LanLoss { opd, pct } => lab.lan_loss(opd, pct)?,
            Impairment::SlowServer => {
                lab.start_far_server("2mbit", "200ms")?;
                let c = lab.spawn_iperf_far(1, Direction::Download, seconds, &["-R", "-P", "4"])?;
                return Ok(vec![ChildGuard::new(c)]);
            }
            Impairment::None => {}
        }
        Ok(Vec::new())
    }

    /// Undoes [`Impairment::apply`] (the far server stays, idle).
    pub fn lift(self, lab: &Lab) -> Result<()> {
        match self {
            Impairment::Police { dir, .. } | Impairment::Queue { dir, .. } => {
                lab.restore_uplink_toward(dir)
            }
            Impairment::WanLoss { .. } => lab.clear_wan_loss_both(),
            Impairment::LanLoss { opd, .. } => lab.clear_lan_loss(opd),
            Impairment::SlowServer | Impairment::None => Ok(()),
        }
    }

    /// Whether it is a rate limit (a tbf whose sent bytes are the truth
    /// for the delivered estimate).
    pub fn is_limit(self) -> bool {
        matches!(self, Impairment::Police { .. } | Impairment::Queue { .. })
    }

    /// Whether it is random loss on the uplink (which may leave more than
    /// 70 % of the demand: then no verdict is asked).
    pub fn is_loss(self) -> bool {
        matches!(self, Impairment::WanLoss { .. })
    }

    /// What the limit has sent, or the loss let through, so far (None
    /// for what is neither).
    pub fn sent_bytes(self, lab: &Lab) -> Result<Option<u64>> {
        match self {
            Impairment::Police { dir, .. } | Impairment::Queue { dir, .. } => {
                lab.uplink_sent_bytes_toward(dir)
            }
            Impairment::WanLoss { dir, .. } => lab.wan_loss_passed_bytes(dir),
            _ => Ok(None),
        }
    }
}

/// What jatah should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `upstream_degraded`, no OPD `local_*`.
    Upstream,
    /// This OPD `local_degraded`, nothing `upstream_*`, no other OPD `local_*`.
    LocalDegraded(usize),
    /// Nothing `upstream_*` (a false positive if it does).
    Nothing,
}

impl Expect {
    pub fn describe(self) -> String {
        match self {
            Expect::Upstream => "upstream_degraded".into(),
            Expect::LocalDegraded(i) => format!("{} local_degraded", OPDS[i]),
            Expect::Nothing => "no upstream_*".into(),
        }
    }

    /// Whether an event (of `opd`, or the gateway's) is one this scenario
    /// must not produce.
    pub fn is_false(self, opd: Option<&str>, state: &str) -> bool {
        match self {
            Expect::Upstream => opd.is_some() && state.starts_with("local_"),
            Expect::Nothing => state.starts_with("upstream_"),
            Expect::LocalDegraded(i) => {
                state.starts_with("upstream_")
                    || (state.starts_with("local_") && opd != Some(OPDS[i]))
            }
        }
    }
}

/// One scenario of the sweep.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub demand: Demand,
    pub impairment: Impairment,
    pub expect: Expect,
}

/// The issue's matrix, in the order the sweep runs it (grouped by demand,
/// so it changes rarely): per direction, policing at 15, 40 and 70 % of
/// demand, queues of 50, 100 and 300 ms at the same fractions, 1, 3 and
/// 10 % random loss; then the false positives.
pub fn matrix() -> Vec<Scenario> {
    let mut m = Vec::new();
    let mut add = |name: String, demand, impairment, expect| {
        m.push(Scenario {
            name,
            demand,
            impairment,
            expect,
        })
    };
    for dir in Direction::all() {
        let d = dir.as_str();
        let demand = Demand::Mixed(dir);
        for pct in [15, 40, 70] {
            add(
                format!("{d} policed to {pct}%"),
                demand,
                Impairment::Police { dir, pct },
                Expect::Upstream,
            );
        }
        for ms in [50, 100, 300] {
            for pct in [15, 40, 70] {
                add(
                    format!("{d} {ms} ms queue at {pct}%"),
                    demand,
                    Impairment::Queue { dir, pct, ms },
                    Expect::Upstream,
                );
            }
        }
        for pct in [1, 3, 10] {
            add(
                format!("{d} {pct}% WAN loss"),
                demand,
                Impairment::WanLoss { dir, pct },
                Expect::Upstream,
            );
        }
    }
    let mixed = Demand::Mixed(Direction::Download);
    add(
        "one slow remote server".into(),
        mixed,
        Impairment::SlowServer,
        Expect::Nothing,
    );
    add(
        "disdik's LAN 5% loss".into(),
        mixed,
        Impairment::LanLoss { opd: 1, pct: 5 },
        Expect::LocalDegraded(1),
    );
    add(
        "one OPD at its ceiling".into(),
        Demand::OneAtCeiling,
        Impairment::None,
        Expect::Nothing,
    );
    add(
        "quiet night".into(),
        Demand::Quiet,
        Impairment::None,
        Expect::Nothing,
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matrix_has_every_scenario_of_the_issue_once() {
        let m = matrix();
        // 2 directions x (3 policed + 9 queues + 3 losses) + 4 false positives.
        assert_eq!(m.len(), 34);
        let mut names: Vec<&str> = m.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), m.len());
        assert_eq!(
            Impairment::rate(Direction::Download, 40, Demand::Mixed(Direction::Download)),
            "12800kbit"
        );
        assert_eq!(
            Impairment::rate(Direction::Upload, 15, Demand::Mixed(Direction::Upload)),
            "2400kbit"
        );
    }

    #[test]
    fn false_verdicts_depend_on_the_scenario() {
        assert!(Expect::Upstream.is_false(Some("dinkes"), "local_degraded"));
        assert!(!Expect::Upstream.is_false(None, "upstream_degraded"));
        assert!(!Expect::Upstream.is_false(Some("dinkes"), "upstream_degraded"));
        assert!(Expect::Nothing.is_false(None, "upstream_degraded"));
        assert!(!Expect::Nothing.is_false(Some("dinkes"), "saturated"));
        let lan = Expect::LocalDegraded(1);
        assert!(!lan.is_false(Some("disdik"), "local_degraded"));
        assert!(lan.is_false(Some("dinkes"), "local_degraded"));
        assert!(lan.is_false(None, "upstream_degraded"));
    }
}
