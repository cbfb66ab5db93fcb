//! What a policy says, once validated: the gateway, its OPDs and groups,
//! their allocations, the diagnosis settings and the schedules. Plain
//! data with the questions asked of it; parsing and validation are in
//! `validate/`, time windows applied in `schedule.rs`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Serialize, Serializer};

use super::diagnosis::DiagnosisSettings;
use super::rate::Rate;

/// Default [`Gateway::timezone`]: WITA, the regency's local time.
pub const DEFAULT_TIMEZONE: chrono_tz::Tz = chrono_tz::Asia::Makassar;
/// Default [`Gateway::leaf_limit`], in packets.
pub const DEFAULT_LEAF_LIMIT: u32 = 1000;
/// How each OPD's allocation is served inside its class: lanes and queue
/// sizes (`[gateway]` keys `interactive`, `interactive_percent`,
/// `boost_new_connections`, `queue_target`, `queue_floor`), and whether the capacity follows what
/// the uplink delivers (`adapt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shaping {
    /// An interactive lane beside the bulk of every OPD (default on).
    pub interactive: bool,
    /// Percent of each OPD's guarantee reserved for its interactive lane
    /// (default 5; at least 64 kbit/s, at most half the guarantee).
    pub interactive_percent: u32,
    /// The first 32 KiB of each TCP connection toward an OPD ride its
    /// interactive lane, so a small web object does not wait behind the
    /// office's own downloads (default on; needs `interactive`).
    pub boost_new_connections: bool,
    /// Longest the bulk queue may hold at the class's ceiling, in
    /// milliseconds, where no AQM qdisc (fq_codel, cake) is in use; 0,
    /// written "off" (the default): `leaf_limit` packets instead. A byte
    /// FIFO of 64 KiB made TCP lose 10-40% of an office's bytes at its
    /// ceiling in the lab (tail drops of whole GRO packets).
    pub queue_target_ms: u32,
    /// Smallest bulk queue, in bytes (default 65536: one GRO/GSO packet of
    /// 64 KiB must always fit, or it is dropped whole).
    pub queue_floor_bytes: u32,
    /// Shape to what the uplink delivers when it delivers less than the
    /// contract, guarantees scaled in proportion (default on).
    pub adapt: bool,
}

impl Default for Shaping {
    fn default() -> Self {
        Shaping {
            interactive: true,
            interactive_percent: 5,
            boost_new_connections: true,
            queue_target_ms: 0,
            queue_floor_bytes: 65_536,
            adapt: true,
        }
    }
}

/// Default [`Gateway::mark_mask`]: 15 bits, clear of the low 16 bits that
/// other tools on a gateway (e.g. firewall zones) commonly use, and of the
/// sign bit.
pub const DEFAULT_MARK_MASK: u32 = 0x7fff_0000;
/// The fewest contiguous bits [`Gateway::mark_mask`] may have: OPD slots are
/// numbered inside the mask and the datapath sizes its tables for 15 bits.
pub const MIN_MARK_BITS: u32 = 15;

/// Traffic direction, from the OPD's point of view (like MikroTik simple
/// queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Internet -> OPD, shaped on the egress of the LAN-facing interface.
    Download,
    /// OPD -> Internet, shaped on the egress of the WAN interface.
    Upload,
}

impl Direction {
    /// Both directions, download first.
    pub fn all() -> [Direction; 2] {
        [Direction::Download, Direction::Upload]
    }

    /// The policy key and metric name part: "download" or "upload".
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Download => "download",
            Direction::Upload => "upload",
        }
    }

    /// Index of this direction in every per-direction array, on both sides
    /// of the kernel boundary (`jatah_common::DOWNLOAD`/`UPLOAD`).
    pub const fn index(self) -> usize {
        match self {
            Direction::Download => jatah_common::DOWNLOAD,
            Direction::Upload => jatah_common::UPLOAD,
        }
    }

    /// The direction at an index of a per-direction array.
    pub const fn from_index(index: usize) -> Direction {
        if index == jatah_common::DOWNLOAD {
            Direction::Download
        } else {
            Direction::Upload
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One direction of an OPD's allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Allocation {
    /// Always available to the OPD (HTB `rate`).
    pub guaranteed: Rate,
    /// The most the OPD may use when others leave capacity idle (HTB `ceil`).
    pub ceiling: Rate,
}

/// The qdisc attached under each OPD's HTB class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeafQdisc {
    /// Let the shaper pick (fq_codel where available).
    #[default]
    Auto,
    /// A plain packet FIFO of `leaf_limit` packets.
    Pfifo,
    /// Flow queueing with CoDel.
    FqCodel,
    /// CAKE, unshaped (HTB does the shaping).
    Cake,
}

impl LeafQdisc {
    /// Every variant, in the order the policy documentation lists them.
    pub const ALL: [LeafQdisc; 4] = [
        LeafQdisc::Auto,
        LeafQdisc::Pfifo,
        LeafQdisc::FqCodel,
        LeafQdisc::Cake,
    ];

    /// The policy spelling: "auto", "pfifo", "fq_codel" or "cake".
    pub fn as_str(self) -> &'static str {
        match self {
            LeafQdisc::Auto => "auto",
            LeafQdisc::Pfifo => "pfifo",
            LeafQdisc::FqCodel => "fq_codel",
            LeafQdisc::Cake => "cake",
        }
    }
}

impl fmt::Display for LeafQdisc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LeafQdisc {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LeafQdisc::ALL
            .into_iter()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| {
                format!("unknown leaf_qdisc \"{s}\"; write one of \"auto\", \"pfifo\", \"fq_codel\" or \"cake\"")
            })
    }
}

/// The `[gateway]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gateway {
    /// Interface towards the ISP; upload is shaped on its egress.
    pub wan: String,
    /// Interfaces towards the OPDs (VLAN subinterfaces allowed); download is
    /// shaped on their egress.
    pub lan: Vec<String>,
    /// Contracted downlink capacity.
    pub download: Rate,
    /// Contracted uplink capacity.
    pub upload: Rate,
    /// Local time zone for schedules and daily totals (default Asia/Makassar).
    #[serde(serialize_with = "serialize_timezone")]
    pub timezone: chrono_tz::Tz,
    /// Qdisc under each OPD class (default auto).
    pub leaf_qdisc: LeafQdisc,
    /// Queue limit of each leaf qdisc, in packets (default 1000).
    pub leaf_limit: u32,
    /// The `skb->mark` bits that carry the OPD slot (default 0x7fff0000); one
    /// contiguous run of at least [`MIN_MARK_BITS`] bits.
    #[serde(serialize_with = "serialize_mask")]
    pub mark_mask: u32,
    /// Lanes and queue sizes inside each OPD's class.
    #[serde(flatten)]
    pub shaping: Shaping,
}

impl Gateway {
    /// How far an OPD slot is shifted left inside [`Gateway::mark_mask`].
    pub fn mark_shift(&self) -> u32 {
        self.mark_mask.trailing_zeros()
    }

    /// The contracted capacity in one direction.
    pub fn capacity(&self, direction: Direction) -> Rate {
        match direction {
            Direction::Download => self.download,
            Direction::Upload => self.upload,
        }
    }
}

fn serialize_timezone<S: Serializer>(tz: &chrono_tz::Tz, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(tz.name())
}

fn serialize_mask<S: Serializer>(mask: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    // Written as in the policy file: a mask is read in hexadecimal.
    serializer.collect_str(&format_args!("{mask:#010x}"))
}

/// The most `[[group]]` tables a policy may have. Far more than a regency
/// needs; the bound keeps every group's HTB class within the range of class
/// numbers set aside for groups (see `gateway::group_minors`).
pub const MAX_GROUPS: usize = 1024;

/// One `[[group]]` table: OPDs that share an allocation of their own (e.g.
/// the kecamatan offices sharing 50 Mbit/s), shaped as an HTB class with
/// the member OPDs' classes under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// `[a-z0-9-]{1,32}`; the label value in group metrics and the key in URLs.
    pub id: String,
    /// Human-readable name, e.g. "Kantor Kecamatan".
    pub name: String,
    /// Internet -> the group's OPDs together.
    pub download: Allocation,
    /// The group's OPDs together -> Internet.
    pub upload: Allocation,
}

impl Group {
    /// The allocation in one direction.
    pub fn allocation(&self, direction: Direction) -> &Allocation {
        match direction {
            Direction::Download => &self.download,
            Direction::Upload => &self.upload,
        }
    }
}

/// One `[[opd]]` table: a government agency and its allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opd {
    /// `[a-z0-9-]{1,32}`; the label value in metrics and the key in URLs.
    pub id: String,
    /// Human-readable name, e.g. "Dinas Komunikasi dan Informatika".
    pub name: String,
    /// The OPD's address ranges; no address belongs to two OPDs.
    pub subnets: Vec<ipnet::IpNet>,
    /// Internet -> OPD.
    pub download: Allocation,
    /// OPD -> Internet.
    pub upload: Allocation,
    /// The OPD's own router, pinged to tell a local fault from an upstream one.
    pub probe: Option<IpAddr>,
    /// The id of the [`Group`] the OPD belongs to, if any. Its allocation
    /// then comes out of the group's, not straight out of the gateway's.
    pub group: Option<String>,
    /// The LAN interface (a bridge port, or a VLAN subinterface of the
    /// LAN trunk) the OPD's network is on. When set, its addresses are
    /// its own only there: packets from them that come in elsewhere (a
    /// host on another office's network taking its addresses) are no
    /// OPD's, and its status page opens only from there.
    pub interface: Option<String>,
    /// Names for some of the OPD's hosts (`[[opd.host]]`), so the hosts
    /// list can say "PC Bendahara" beside 10.20.1.37.
    pub hosts: Vec<HostName>,
}

/// A name for one host of an OPD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostName {
    pub address: IpAddr,
    pub name: String,
}

impl Opd {
    /// The name the policy gives host `address` (`[[opd.host]]`).
    pub fn host_name(&self, address: IpAddr) -> Option<&str> {
        self.hosts
            .iter()
            .find(|h| h.address == address)
            .map(|h| h.name.as_str())
    }

    /// The allocation in one direction.
    pub fn allocation(&self, direction: Direction) -> &Allocation {
        match direction {
            Direction::Download => &self.download,
            Direction::Upload => &self.upload,
        }
    }
}

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The `[gateway]` table.
    pub gateway: Gateway,
    /// The `[[opd]]` tables, in file order.
    pub opds: Vec<Opd>,
    /// The `[[group]]` tables, in file order (none when the file has none).
    pub groups: Vec<Group>,
    /// The `[diagnosis]` table (defaults when absent).
    pub diagnosis: DiagnosisSettings,
    /// `[[schedule]]` tables: windows that change some OPDs' allocations.
    pub schedules: Vec<Schedule>,
}

impl Policy {
    /// The gateway's contracted capacity in one direction.
    pub fn capacity(&self, direction: Direction) -> Rate {
        self.gateway.capacity(direction)
    }

    /// The OPD with this id.
    pub fn opd(&self, id: &str) -> Option<&Opd> {
        self.opds.iter().find(|opd| opd.id == id)
    }

    /// The OPD whose subnets hold `addr`: the longest matching prefix wins
    /// (a validated policy has no overlaps, so there is at most one). An
    /// IPv4 address written as IPv6 (`::ffff:10.20.1.7`, as a dual-stack
    /// socket reports it) is read as IPv4.
    pub fn opd_for_address(&self, addr: IpAddr) -> Option<&Opd> {
        let addr = addr.to_canonical();
        self.opds
            .iter()
            .flat_map(|opd| opd.subnets.iter().map(move |net| (net, opd)))
            .filter(|(net, _)| net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, opd)| opd)
    }

    /// The group with this id.
    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|group| group.id == id)
    }

    /// The OPDs of a group, in file order.
    pub fn members<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a Opd> + 'a {
        self.opds
            .iter()
            .filter(move |opd| opd.group.as_deref() == Some(group))
    }

    /// What the gateway's capacity holds in one direction: the guarantee of
    /// every group and of every OPD outside a group (a member's guarantee
    /// comes out of its group's). Without groups, the sum of all OPDs'
    /// guarantees. Never more than [`Policy::capacity`] in a validated
    /// policy.
    pub fn guaranteed_sum(&self, direction: Direction) -> Rate {
        let groups = self
            .groups
            .iter()
            .map(|group| group.allocation(direction).guaranteed.0);
        let ungrouped = self
            .opds
            .iter()
            .filter(|opd| opd.group.is_none())
            .map(|opd| opd.allocation(direction).guaranteed.0);
        Rate(groups.chain(ungrouped).fold(0u64, u64::saturating_add))
    }

    /// Every way the allocations break the rules a policy file is held to
    /// (a ceiling below its guarantee, or above its group's ceiling or the
    /// gateway's capacity; guarantees that do not fit their group's or the
    /// capacity; an OPD naming a group that does not exist), one sentence
    /// each. Empty for a policy [`parse`] returned; meant for allocations
    /// changed afterwards, e.g. by the schedules open at some moment.
    pub fn allocation_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for direction in Direction::all() {
            let capacity = self.capacity(direction);
            let mut check = |what: String, a: &Allocation, limit: Rate, holder: &str| {
                if a.ceiling < a.guaranteed {
                    problems.push(format!(
                        "{what}'s {direction} ceiling {} is below its guarantee {}",
                        a.ceiling, a.guaranteed
                    ));
                }
                if a.ceiling > limit {
                    problems.push(format!(
                        "{what}'s {direction} ceiling {} exceeds {holder} {limit}",
                        a.ceiling
                    ));
                }
            };
            for group in &self.groups {
                let what = format!("group {}", group.id);
                check(
                    what,
                    group.allocation(direction),
                    capacity,
                    "the gateway's capacity",
                );
            }
            for opd in &self.opds {
                let group = opd.group.as_deref().map(|id| (id, self.group(id)));
                let (limit, holder) = match group {
                    Some((id, Some(group))) if group.allocation(direction).ceiling <= capacity => {
                        let holder = format!("the ceiling of its group {id}");
                        (group.allocation(direction).ceiling, holder)
                    }
                    _ => (capacity, "the gateway's capacity".to_string()),
                };
                check(
                    format!("OPD {}", opd.id),
                    opd.allocation(direction),
                    limit,
                    &holder,
                );
            }
            for group in &self.groups {
                let sum = Rate(
                    self.members(&group.id)
                        .map(|opd| opd.allocation(direction).guaranteed.0)
                        .fold(0u64, u64::saturating_add),
                );
                let guaranteed = group.allocation(direction).guaranteed;
                if sum > guaranteed {
                    problems.push(format!(
                        "the {direction} guarantees of group {}'s OPDs sum to {sum}, more than \
                         its guarantee {guaranteed}",
                        group.id
                    ));
                }
            }
            let sum = self.guaranteed_sum(direction);
            if sum > capacity {
                problems.push(format!(
                    "the {direction} guarantees the gateway holds (groups and OPDs outside \
                     groups) sum to {sum}, more than its capacity {capacity}"
                ));
            }
        }
        for opd in &self.opds {
            if let Some(id) = &opd.group
                && self.group(id).is_none()
            {
                problems.push(format!("OPD {} names unknown group {id}", opd.id));
            }
        }
        problems
    }

    /// One line for logs and `jatah check`, e.g.
    /// "26 OPDs; download: guaranteed 250M of 300M; upload: guaranteed 180M of 300M",
    /// or "26 OPDs, 1 group; ..." when the policy has groups.
    pub fn summary(&self) -> String {
        let count = self.opds.len();
        let mut line = format!("{count} OPD{}", if count == 1 { "" } else { "s" });
        let groups = self.groups.len();
        if groups > 0 {
            line.push_str(&format!(
                ", {groups} group{}",
                if groups == 1 { "" } else { "s" }
            ));
        }
        for direction in Direction::all() {
            line.push_str(&format!(
                "; {direction}: guaranteed {} of {}",
                self.guaranteed_sum(direction),
                self.capacity(direction)
            ));
        }
        line
    }
}

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Diagnostic {
    /// The file name as given to [`parse`] or [`load`].
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file (e.g. it
    /// cannot be read).
    pub line: usize,
    /// 1-based column, counted in characters; 0 together with `line`.
    pub column: usize,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// A rejected policy: every problem found, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyError {
    /// At least one diagnostic.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// A weekly time window. `to` before `from` runs past midnight into the
/// next day (it belongs to the day it starts on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Monday first.
    pub days: [bool; 7],
    pub from: NaiveTime,
    pub to: NaiveTime,
}

impl Window {
    /// Whether the window is open at minute `m` of the week (0 = Monday
    /// 00:00 local).
    pub(super) fn open_at_minute(&self, m: u32) -> bool {
        let day = (m / 1440) as usize;
        let t = m % 1440;
        let from = self.from.num_seconds_from_midnight() / 60;
        let to = self.to.num_seconds_from_midnight() / 60;
        if from < to {
            self.days[day] && t >= from && t < to
        } else {
            // Past midnight: the evening part on its own day, the morning
            // part on the next.
            let yesterday = (day + 6) % 7;
            (self.days[day] && t >= from) || (self.days[yesterday] && t < to)
        }
    }

    /// Whether the window is open at `at` in `tz`.
    pub fn is_open(&self, at: DateTime<Utc>, tz: Tz) -> bool {
        self.open_at_minute(minute_of_week(at, tz))
    }

    /// Whether two windows share any minute of the week.
    pub fn overlaps(&self, other: &Window) -> bool {
        (0..7 * 1440).any(|m| self.open_at_minute(m) && other.open_at_minute(m))
    }
}

pub(super) fn minute_of_week(at: DateTime<Utc>, tz: Tz) -> u32 {
    let local = at.with_timezone(&tz);
    local.weekday().num_days_from_monday() * 1440 + local.hour() * 60 + local.minute()
}

/// An OPD's allocations while a window is open (a direction left out keeps
/// its base allocation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledAllocation {
    pub opd: String,
    pub download: Option<Allocation>,
    pub upload: Option<Allocation>,
}

/// A named window and what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    pub name: String,
    pub window: Window,
    pub allocations: Vec<ScheduledAllocation>,
}
