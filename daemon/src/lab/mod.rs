//! A simulated Diskominfo gateway in network namespaces, so anyone can watch
//! jatah work without a real network, and so the tests drive the real kernel
//! data path with real traffic.
//!
//! ```text
//!  [inet] wan0 198.51.100.1 ── iperf3 servers
//!     │ veth
//!  [isp] up0 ─ bridge br0 ─ down0   (no address: the ISP's line, where
//!     │ veth                         the tests limit or drop the upload)
//!  [gw]  wan0 198.51.100.2  (jatah run; masquerade on wan0 unless nat=false)
//!        lan0 10.20.(i+1).1/24 for every OPD i
//!     │ veth
//!  [sw]  uplink ─ bridge br0 ─ p(i)
//!     │ veth per OPD (pull this cable to simulate a fault)
//!  [opd i] eth0 10.20.(i+1).2/24 (the OPD's router and hosts)
//! ```
//! The LAN is one flat segment rather than a VLAN per OPD because kernels
//! built without 802.1Q support (like this project's CI machines) cannot
//! create VLAN interfaces; jatah's parser handles tagged frames all the same
//! (tests/classifier.rs).
//! The ISP namespace is a bridge, transparent to addresses: the Internet
//! side and the gateway share 198.51.100.0/24 as before, and a qdisc on
//! its `up0` shapes what the gateway sends without touching jatah's own
//! qdiscs on the gateway's `wan0`. With the `testkit` feature a lab can
//! also grow a far server behind its own slow path and lossy links
//! (`impair.rs`).
//! Every namespace, mount and process the lab creates is removed on Drop.

mod interactive;
pub mod netns;
#[cfg(feature = "testkit")]
mod impair;
#[cfg(feature = "testkit")]
mod testkit;

pub use interactive::run_interactive;

#[cfg(feature = "testkit")]
pub use impair::FAR_ADDR;
#[cfg(feature = "testkit")]
pub use testkit::{
    IperfResult, PROMETHEUS_LISTEN, generated_policy, status_url_outside, tc_class_name,
    tc_root_handle, url_encode, wait_iperf, wait_iperf_udp,
};

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::datapath::PinnedCounters;
use crate::lab::netns::{BpffsMount, NetNs, unique_token};
use crate::policy::Direction;

/// The "Internet" side address where iperf3 servers listen.
pub const INET_ADDR: &str = "198.51.100.1";
/// The gateway's WAN address.
pub const GW_WAN_ADDR: &str = "198.51.100.2";
/// Where jatah listens inside the gateway namespace.
pub const GW_LISTEN: &str = "127.0.0.1:9476";
/// Where jatah serves the status page inside the gateway namespace: every
/// address, so browsers on the OPD LANs (10.20.(i+1).1) and outside (the
/// WAN address) reach it.
pub const GW_STATUS_LISTEN: &str = "0.0.0.0:9477";
/// The status page's port.
pub const GW_STATUS_PORT: u16 = 9477;
/// The lab's admin token (the lab's tokens file also gives every OPD a
/// token `lab-opd-<id>`). Lab-only secrets.
pub const LAB_ADMIN_TOKEN: &str = "lab-admin-token";

/// The token the lab gives OPD `id`.
pub fn lab_opd_token(id: &str) -> String {
    format!("lab-opd-{id}")
}

/// One OPD of the lab. Rates as in a policy file.
#[derive(Debug, Clone)]
pub struct LabOpd {
    pub id: String,
    pub name: String,
    pub download: (String, String),
    pub upload: (String, String),
}

impl LabOpd {
    pub fn new(id: &str, name: &str, download: (&str, &str), upload: (&str, &str)) -> Self {
        LabOpd {
            id: id.into(),
            name: name.into(),
            download: (download.0.into(), download.1.into()),
            upload: (upload.0.into(), upload.1.into()),
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Prefix of every namespace name (unique suffixes are added).
    pub prefix: String,
    /// Contracted uplink capacity, as in a policy.
    pub download: String,
    pub upload: String,
    /// Masquerade OPD addresses on the WAN side (as most gateways do).
    pub nat: bool,
    /// MTU of every lab link (1500 like a real LAN; larger to make header
    /// overhead negligible where a test compares payload with wire bytes).
    pub mtu: u32,
    pub opds: Vec<LabOpd>,
}

impl LabSpec {
    /// The lab `jatah lab` shows: a 60/30 Mbit/s uplink shared by four OPDs.
    pub fn demo() -> Self {
        LabSpec {
            prefix: "jlab".into(),
            download: "60M".into(),
            upload: "30M".into(),
            nat: true,
            mtu: 1500,
            opds: vec![
                LabOpd::new("dinkes", "Dinas Kesehatan", ("20M", "40M"), ("8M", "15M")),
                LabOpd::new("disdukcapil", "Disdukcapil", ("15M", "30M"), ("6M", "12M")),
                LabOpd::new("bappeda", "Bappeda", ("5M", "10M"), ("3M", "6M")),
                LabOpd::new(
                    "kec-sepaku",
                    "Kecamatan Sepaku",
                    ("10M", "60M"),
                    ("4M", "30M"),
                ),
            ],
        }
    }

    /// The policy file jatah runs with in this lab.
    pub fn policy_toml(&self) -> String {
        let mut s = format!(
            "# Generated by the jatah lab.\n[gateway]\nwan = \"wan0\"\nlan = [\"lan0\"]\n\
             download = \"{}\"\nupload = \"{}\"\n",
            self.download, self.upload
        );
        // The Internet side's address stands in for the ISP's router. A lab
        // has a handful of connections where an office has hundreds:
        // every one is followed, so round trips and retransmissions show.
        let _ = write!(
            s,
            "\n[diagnosis]\nprobe_interval = \"1s\"\nrtt_sampling = 1\n\n[[diagnosis.upstream]]\nname = \"isp\"\naddress = \"{INET_ADDR}\"\n"
        );
        for (i, o) in self.opds.iter().enumerate() {
            let _ = write!(
                s,
                "\n[[opd]]\nid = \"{}\"\nname = \"{}\"\nsubnets = [\"10.20.{}.0/24\"]\n\
                 download = {{ guaranteed = \"{}\", ceiling = \"{}\" }}\n\
                 upload = {{ guaranteed = \"{}\", ceiling = \"{}\" }}\nprobe = \"{}\"\n",
                o.id,
                o.name,
                i + 1,
                o.download.0,
                o.download.1,
                o.upload.0,
                o.upload.1,
                opd_addr(i)
            );
        }
        s
    }
}

/// Address of OPD `i`'s router/host inside its namespace.
pub fn opd_addr(i: usize) -> String {
    format!("10.20.{}.2", i + 1)
}

/// The gateway's address on OPD `i`'s LAN (its default route).
pub fn opd_gateway_addr(i: usize) -> String {
    format!("10.20.{}.1", i + 1)
}

/// The status page as a browser in OPD `i`'s LAN opens it.
pub fn status_url_in_opd(i: usize) -> String {
    format!("http://{}:{GW_STATUS_PORT}/status", opd_gateway_addr(i))
}

/// iperf3 server port for OPD `i`, a direction, and a lane: an iperf3
/// server runs one test at a time, so steady (paced) traffic has its own
/// lane (1) beside the bulk transfers (lane 0).
fn iperf_port(i: usize, dir: Direction, lane: u16) -> u16 {
    5200 + 4 * i as u16 + 2 * lane + u16::from(dir == Direction::Upload)
}

/// A running lab.
pub struct Lab {
    pub spec: LabSpec,
    dir: PathBuf,
    bpffs: Option<BpffsMount>,
    pub policy_path: PathBuf,
    daemon: Option<Child>,
    pub inet: NetNs,
    /// The ISP's line between the Internet side and the gateway (a bridge).
    pub isp: NetNs,
    pub gw: NetNs,
    pub sw: NetNs,
    pub opds: Vec<NetNs>,
    /// More options for `jatah run` (e.g. the status page's certificate),
    /// after the lab's own.
    pub run_args: Vec<String>,
    /// A server behind its own slow path, made on demand (testkit).
    #[cfg(feature = "testkit")]
    far: Option<NetNs>,
}

impl Lab {
    /// Builds the namespaces, links, addresses, NAT and iperf3 servers.
    pub fn build(spec: LabSpec) -> Result<Lab> {
        let token = unique_token();
        let dir = PathBuf::from("/run/jatah-lab").join(format!("{}-{token}", spec.prefix));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let inet = NetNs::create(&format!("{}-inet", spec.prefix))?;
        let isp = NetNs::create(&format!("{}-isp", spec.prefix))?;
        let gw = NetNs::create(&format!("{}-gw", spec.prefix))?;
        let sw = NetNs::create(&format!("{}-sw", spec.prefix))?;
        let mut opds = Vec::new();
        for i in 0..spec.opds.len() {
            opds.push(NetNs::create(&format!("{}-o{i}", spec.prefix))?);
        }
        let policy_path = dir.join("policy.toml");
        let mut lab = Lab {
            bpffs: None,
            policy_path,
            daemon: None,
            dir,
            spec,
            inet,
            isp,
            gw,
            sw,
            opds,
            run_args: Vec::new(),
            #[cfg(feature = "testkit")]
            far: None,
        };
        lab.wire()?;
        std::fs::write(&lab.policy_path, lab.spec.policy_toml())?;
        let mut tokens = String::new();
        let mut add = |name: &str, role: &str, token: &str| {
            let _ = write!(
                tokens,
                "[[token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
                hex::encode(crate::http::auth::hash_token(token))
            );
        };
        add("lab-admin", "admin", LAB_ADMIN_TOKEN);
        for o in &lab.spec.opds {
            add(
                &format!("lab-{}", o.id),
                &format!("opd:{}", o.id),
                &lab_opd_token(&o.id),
            );
        }
        // Readable by its owner alone, as jatah requires of a tokens file.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(lab.dir.join("tokens.toml"))?
            .write_all(tokens.as_bytes())?;
        Ok(lab)
    }

    fn wire(&mut self) -> Result<()> {
        let (gw, sw) = (&self.gw, &self.sw);
        self.wire_isp()?;
        self.create_wan()?;
        gw.run("sysctl", ["-qw", "net.ipv4.ip_forward=1"])?;
        sw.ip(["link", "add", "br0", "type", "bridge"])?;
        sw.ip(["link", "set", "br0", "up"])?;
        self.create_lan()?;
        for (i, ns) in self.opds.iter().enumerate() {
            let port = format!("p{i}");
            sw.ip([
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ])?;
            sw.ip(["link", "set", &port, "master", "br0"])?;
            sw.ip(["link", "set", &port, "up"])?;
            ns.ip(["addr", "add", &format!("{}/24", opd_addr(i)), "dev", "eth0"])?;
            ns.ip(["link", "set", "eth0", "up"])?;
            ns.ip([
                "route",
                "add",
                "default",
                "via",
                &format!("10.20.{}.1", i + 1),
            ])?;
        }
        if self.spec.mtu != 1500 {
            let mtu = self.spec.mtu.to_string();
            sw.ip(["link", "set", "br0", "mtu", &mtu])?;
            for (i, ns) in self.opds.iter().enumerate() {
                sw.ip(["link", "set", &format!("p{i}"), "mtu", &mtu])?;
                ns.ip(["link", "set", "eth0", "mtu", &mtu])?;
            }
        }
        if self.spec.nat {
            let rules = "table ip jatah_lab {\n chain postrouting {\n  type nat hook postrouting priority srcnat;\n  oifname \"wan0\" masquerade\n }\n}\n";
            let rules_path = self.dir.join("nat.nft");
            std::fs::write(&rules_path, rules)?;
            gw.run("nft", ["-f", &rules_path.display().to_string()])?;
        }
        for i in 0..self.opds.len() {
            for dir in Direction::all() {
                for lane in 0..2 {
                    let port = iperf_port(i, dir, lane).to_string();
                    self.inet
                        .spawn_quiet("iperf3", ["-s", "-p", &port, "-B", INET_ADDR])?;
                }
            }
        }
        Ok(())
    }

    /// The ISP's bridge and the Internet side's `wan0` (a veth to the
    /// bridge's `up0`), with its address and, without NAT, the route back
    /// to the OPDs.
    fn wire_isp(&self) -> Result<()> {
        let (inet, isp) = (&self.inet, &self.isp);
        isp.ip(["link", "add", "br0", "type", "bridge"])?;
        isp.ip([
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "wan0",
            "netns",
            inet.name(),
        ])?;
        if self.spec.mtu != 1500 {
            let mtu = self.spec.mtu.to_string();
            isp.ip(["link", "set", "br0", "mtu", &mtu])?;
            isp.ip(["link", "set", "up0", "mtu", &mtu])?;
            inet.ip(["link", "set", "wan0", "mtu", &mtu])?;
        }
        isp.ip(["link", "set", "up0", "master", "br0"])?;
        isp.ip(["link", "set", "up0", "up"])?;
        isp.ip(["link", "set", "br0", "up"])?;
        inet.ip(["addr", "add", &format!("{INET_ADDR}/24"), "dev", "wan0"])?;
        inet.ip(["link", "set", "wan0", "up"])?;
        if !self.spec.nat {
            // Without NAT the Internet must route OPD subnets back.
            inet.ip(["route", "add", "10.20.0.0/16", "via", GW_WAN_ADDR])?;
        }
        Ok(())
    }

    /// Creates the gateway's WAN interface `wan0` (a veth to the ISP's
    /// bridge, port `down0`) with its address and default route: at build
    /// time, and again after [`Lab::delete_wan`].
    pub fn create_wan(&self) -> Result<()> {
        let (isp, gw) = (&self.isp, &self.gw);
        gw.ip([
            "link",
            "add",
            "wan0",
            "type",
            "veth",
            "peer",
            "name",
            "down0",
            "netns",
            isp.name(),
        ])?;
        if self.spec.mtu != 1500 {
            let mtu = self.spec.mtu.to_string();
            gw.ip(["link", "set", "wan0", "mtu", &mtu])?;
            isp.ip(["link", "set", "down0", "mtu", &mtu])?;
        }
        isp.ip(["link", "set", "down0", "master", "br0"])?;
        isp.ip(["link", "set", "down0", "up"])?;
        gw.ip(["addr", "add", &format!("{GW_WAN_ADDR}/24"), "dev", "wan0"])?;
        gw.ip(["link", "set", "wan0", "up"])?;
        gw.ip(["route", "add", "default", "via", INET_ADDR])?;
        Ok(())
    }

    /// Creates the gateway's LAN interface `lan0` (a veth to the switch's
    /// bridge) with every OPD's gateway address: at build time, and again
    /// after [`Lab::delete_lan`], when it gets a new ifindex as a recreated
    /// interface does.
    pub fn create_lan(&self) -> Result<()> {
        let (gw, sw) = (&self.gw, &self.sw);
        gw.ip([
            "link",
            "add",
            "lan0",
            "type",
            "veth",
            "peer",
            "name",
            "uplink",
            "netns",
            sw.name(),
        ])?;
        if self.spec.mtu != 1500 {
            let mtu = self.spec.mtu.to_string();
            gw.ip(["link", "set", "lan0", "mtu", &mtu])?;
            sw.ip(["link", "set", "uplink", "mtu", &mtu])?;
        }
        for i in 0..self.opds.len() {
            gw.ip([
                "addr",
                "add",
                &format!("10.20.{}.1/24", i + 1),
                "dev",
                "lan0",
            ])?;
        }
        sw.ip(["link", "set", "uplink", "master", "br0"])?;
        sw.ip(["link", "set", "uplink", "up"])?;
        gw.ip(["link", "set", "lan0", "up"])?;
        Ok(())
    }

    /// The bpffs jatah pins under (mounted outside /sys: `ip netns exec`
    /// remounts /sys, see `jatah run --help`).
    pub fn bpffs(&self) -> Result<&Path> {
        self.bpffs
            .as_ref()
            .map(BpffsMount::path)
            .ok_or_else(|| anyhow!("jatah has not been started in this lab"))
    }

    /// Directory holding the lab's policy, logs and bpffs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn mount_bpffs(&mut self) -> Result<()> {
        if self.bpffs.is_none() {
            self.bpffs = Some(BpffsMount::new(&self.spec.prefix)?);
        }
        Ok(())
    }

    /// Starts `jatah run` in the gateway namespace without waiting for it
    /// (the lab stops it on Drop like one [`Lab::start_daemon`] started).
    pub fn spawn_daemon(&mut self, jatah: &Path) -> Result<()> {
        self.mount_bpffs()?;
        let child = self.spawn_jatah(jatah, "jatah.log")?;
        self.daemon = Some(child);
        Ok(())
    }

    /// Starts `jatah run` in the gateway namespace and waits until /healthz
    /// answers 200 (at most 30 s).
    pub fn start_daemon(&mut self, jatah: &Path) -> Result<()> {
        self.spawn_daemon(jatah)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.http_get("/healthz") {
                return Ok(());
            }
            if let Some(status) = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "jatah exited ({status}) before it was ready:\n{}",
                    self.daemon_log()
                );
            }
            if Instant::now() > deadline {
                bail!("jatah not ready after 30 s:\n{}", self.daemon_log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts another `jatah run` against this lab (e.g. to prove a second
    /// instance is refused), logging to `log_name` in the lab directory.
    pub fn spawn_jatah(&self, jatah: &Path, log_name: &str) -> Result<Child> {
        let log = std::fs::File::create(self.dir.join(log_name))?;
        let child = self
            .gw
            .command(jatah)
            .args(["run", "--policy"])
            .arg(&self.policy_path)
            .arg("--bpffs")
            .arg(self.bpffs()?)
            .args(["--listen", GW_LISTEN, "--status-listen", GW_STATUS_LISTEN])
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--tokens")
            .arg(self.dir.join("tokens.toml"))
            .args(&self.run_args)
            .env(
                "RUST_LOG",
                // The daemon's log level in a lab: `JATAH_LAB_LOG` (a
                // `RUST_LOG` filter) to see more, e.g. in a bench run.
                std::env::var("JATAH_LAB_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(
                // A test standing in for systemd binds this socket first.
                Some(self.dir.join("notify.sock"))
                    .filter(|p| p.exists())
                    .map(|p| ("NOTIFY_SOCKET", p)),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting jatah in the gateway namespace")?;
        Ok(child)
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("jatah.log")).unwrap_or_default()
    }

    /// Stops the daemon with SIGTERM and waits (at most 10 s).
    pub fn stop_daemon(&mut self) -> Result<()> {
        if let Some(mut child) = self.daemon.take() {
            // `ip netns exec` execs jatah, so the child pid is jatah's.
            let _ = crate::sys::send_signal(child.id() as i32, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    bail!("jatah did not stop within 10 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Runs `f` on a thread inside the gateway namespace.
    pub fn in_gateway<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        in_namespace(&self.gw, f)
    }

    /// Runs `f` on a thread inside OPD `i`'s namespace (its router).
    #[cfg(feature = "testkit")]
    pub fn in_opd<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        in_namespace(&self.opds[i], f)
    }

    /// An HTTP GET to jatah inside the gateway: (status, body).
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        self.http_get_as(path, None)
    }

    /// An HTTP GET with a bearer token.
    pub fn http_get_as(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        let path = path.to_string();
        let token = token.map(str::to_string);
        self.in_gateway(move || {
            crate::cli::client::get(GW_LISTEN.parse()?, &path, token.as_deref())
        })
    }

    /// Per-OPD counters as jatah's pinned maps hold them.
    pub fn counters(&self) -> Result<std::collections::BTreeMap<String, jatah_common::Counters>> {
        Ok(PinnedCounters::open(self.bpffs()?)?.by_opd()?)
    }

    /// Index of an OPD by id.
    pub fn opd_index(&self, id: &str) -> Result<usize> {
        self.spec
            .opds
            .iter()
            .position(|o| o.id == id)
            .ok_or_else(|| anyhow!("no OPD {id} in this lab"))
    }

    /// An iperf3 client in OPD `i` against its server of `lane` (0: bulk,
    /// 1: steady), JSON output; download uses reverse mode so the Internet
    /// side sends. Callers add what the test needs (`-P`, `-u`, `-b`, ...).
    pub fn iperf_command(
        &self,
        i: usize,
        dir: Direction,
        seconds: u32,
        lane: u16,
    ) -> std::process::Command {
        self.iperf_command_to(INET_ADDR, i, dir, seconds, lane)
    }

    /// [`Lab::iperf_command`] against the servers at `server` (the
    /// Internet side's, or the far server's).
    pub fn iperf_command_to(
        &self,
        server: &str,
        i: usize,
        dir: Direction,
        seconds: u32,
        lane: u16,
    ) -> std::process::Command {
        let port = iperf_port(i, dir, lane).to_string();
        let mut cmd = self.opds[i].command("iperf3");
        cmd.args([
            "-c",
            server,
            "-p",
            &port,
            "-J",
            "--connect-timeout",
            "3000",
        ])
        .args(["-t", &seconds.to_string()])
        .stdin(Stdio::null());
        if dir == Direction::Download {
            cmd.arg("-R");
        }
        cmd
    }

    /// Starts a bulk iperf3 TCP transfer with `streams` parallel flows;
    /// `wait_iperf` (testkit) reads its result.
    pub fn spawn_iperf(
        &self,
        i: usize,
        dir: Direction,
        seconds: u32,
        streams: u32,
    ) -> Result<Child> {
        self.spawn_iperf_args(i, dir, seconds, 0, &["-P", &streams.to_string()], true)
    }

    /// Starts [`Lab::iperf_command`] with `args` added. With `report` its
    /// JSON report and errors are piped (to be read when it ends),
    /// otherwise discarded. Every iperf3 client the lab, the tests and the
    /// benchmarks start goes through here.
    pub fn spawn_iperf_args(
        &self,
        i: usize,
        dir: Direction,
        seconds: u32,
        lane: u16,
        args: &[&str],
        report: bool,
    ) -> Result<Child> {
        let output = || {
            if report {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        Ok(self
            .iperf_command(i, dir, seconds, lane)
            .args(args)
            .stdout(output())
            .stderr(output())
            .spawn()?)
    }
}

/// Runs `f` on a thread inside `ns` and waits for it.
fn in_namespace<T: Send + 'static>(
    ns: &NetNs,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns_path = format!("/run/netns/{}", ns.name());
    let name = ns.name().to_string();
    std::thread::spawn(move || -> Result<T> {
        enter_netns(&ns_path)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("thread in namespace {name} panicked"))?
}

pub(crate) fn enter_netns(path: &str) -> Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    crate::sys::enter_network_namespace(&f).context("setns")?;
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The bpffs unmounts when its field drops.
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespaces (and every process left in them) go when the
        // NetNs fields drop, right after this.
    }
}
