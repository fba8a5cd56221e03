//! The high-availability lab: two gateways running `lb` with the same
//! configuration and keepalived (as `lb init` generates it) moving a
//! client-side and a backend-side floating address between them.
//!
//! ```text
//!  {p}-cl                 {p}-sw                       {p}-ga / {p}-gb
//!  eth0 198.18.1.100 ── c-cl ┐                ┌ c-ga ── gwc 198.18.1.2 / .3  (+ 198.18.1.1 on the master)
//!                            ├ brc            ├ c-gb
//!                            │                │
//!                       b-ga ┤ brb            │         gwb 198.18.2.2 / .3  (+ 198.18.2.1 on the master)
//!                       b-gb ┤                 
//!  {p}-nN eth0 198.18.2.1N ── b-nN ┘
//! ```
//!
//! Both bridges are learning switches whose gateway ports do not flood
//! unknown unicast (`bridge link set dev X flood off`): a frame for a dead
//! gateway's MAC goes nowhere, as on a real switch once the MAC is learned
//! elsewhere or aged out, rather than reaching the other gateway. Clients
//! route to the VIP via 198.18.1.1, nodes route everything via 198.18.2.1
//! (`lb` keeps the client's address, so replies must reach the master).
//!
//! Each gateway's `lb` pins into its own directory of one bpffs mounted in
//! the host's mount namespace (`ip netns exec` gives each process a private
//! /sys, and two daemons sharing a pin path would adopt each other's maps).
//! Everything is removed on drop, also while unwinding from a panic.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

mod prober;

pub use prober::{Attempt, Outage, Prober};

use crate::client::connect_and_name;
use crate::lab::{
    ip, kill_processes_in_ns, mount_bpffs, ns_exec, read_log, run_with_timeout, terminate,
    write_file, KUBE_API_PORT, LB_API, TALOS_API_PORT, VIP,
};

/// The client's address.
pub const HA_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
/// The client-side floating address (with prefix), the clients' next hop.
pub const CLIENT_FLOATING: &str = "198.18.1.1/24";
/// The backend-side floating address (with prefix), the nodes' default route.
pub const BACKEND_FLOATING: &str = "198.18.2.1/24";
/// Number of nodes.
pub const HA_NODES: usize = 3;

/// One of the two gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gw {
    /// `ga`, the preferred master (`lb init --gateway`).
    A,
    /// `gb`, the peer.
    B,
}

impl Gw {
    /// Short name: namespace suffix, keepalived router id.
    pub fn name(self) -> &'static str {
        match self {
            Gw::A => "ga",
            Gw::B => "gb",
        }
    }

    /// Its fixed client-side and backend-side addresses.
    pub fn addresses(self) -> (Ipv4Addr, Ipv4Addr) {
        match self {
            Gw::A => (Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 2, 2)),
            Gw::B => (Ipv4Addr::new(198, 18, 1, 3), Ipv4Addr::new(198, 18, 2, 3)),
        }
    }

    /// `NAME=CLIENT,BACKEND` as `lb init` takes it.
    pub fn init_arg(self) -> String {
        let (c, b) = self.addresses();
        format!("{}={c},{b}", self.name())
    }
}

/// A process the lab started, stopped on drop.
struct Tracked {
    label: String,
    child: Child,
    log: PathBuf,
    gateway: Option<Gw>,
}

static HA_COUNTER: AtomicU32 = AtomicU32::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The HA lab; see the module documentation.
pub struct HaLab {
    prefix: String,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
    lb_bin: PathBuf,
    cp_sim: PathBuf,
    children: Mutex<Vec<Tracked>>,
}

impl HaLab {
    /// Builds namespaces, bridges, addresses and routes; starts nothing.
    pub fn create(cp_sim: &Path, lb_bin: &Path) -> Result<HaLab> {
        let dir = tempfile::Builder::new().prefix("lb-ha-").tempdir()?;
        let lb_bin = lb_bin
            .canonicalize()
            .with_context(|| format!("lb binary {}", lb_bin.display()))?;
        let mut lab = HaLab {
            prefix: String::new(),
            namespaces: Vec::new(),
            dir,
            lb_bin,
            cp_sim: cp_sim.to_path_buf(),
            children: Mutex::new(Vec::new()),
        };
        for _ in 0..50 {
            let n = HA_COUNTER.fetch_add(1, Ordering::Relaxed);
            let prefix = format!("lbha{}x{n}", std::process::id() % 10000);
            if ip(["netns", "add", &format!("{prefix}-sw")]).is_ok() {
                lab.namespaces.push(format!("{prefix}-sw"));
                lab.prefix = prefix;
                break;
            }
        }
        if lab.prefix.is_empty() {
            bail!("could not claim a namespace prefix");
        }
        lab.build()
            .with_context(|| format!("building HA lab {}", lab.prefix))?;
        mount_bpffs(&lab.bpffs_dir())?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let sw = self.switch_ns();
        let cl = self.client_ns();
        let mut names = vec![cl.clone(), self.gateway_ns(Gw::A), self.gateway_ns(Gw::B)];
        names.extend((1..=HA_NODES).map(|i| self.node_ns(i)));
        for ns in names {
            ip(["netns", "add", &ns])?;
            self.namespaces.push(ns);
        }
        for ns in &self.namespaces {
            ip(["-n", ns, "link", "set", "dev", "lo", "up"])?;
        }
        for br in ["brc", "brb"] {
            ip(["-n", &sw, "link", "add", "name", br, "type", "bridge"])?;
            ip(["-n", &sw, "link", "set", "dev", br, "up"])?;
        }
        // Switch port `port` on bridge `br`, peer `dev` in namespace `ns`.
        let wire = |port: &str, br: &str, ns: &str, dev: &str| -> Result<()> {
            ip([
                "-n", &sw, "link", "add", "name", port, "type", "veth", "peer", "name", dev,
                "netns", ns,
            ])?;
            ip(["-n", &sw, "link", "set", "dev", port, "master", br])?;
            ip(["-n", &sw, "link", "set", "dev", port, "up"])?;
            ip(["-n", ns, "link", "set", "dev", dev, "up"])
        };
        wire("c-cl", "brc", &cl, "eth0")?;
        ip([
            "-n",
            &cl,
            "addr",
            "add",
            &format!("{HA_CLIENT_ADDR}/24"),
            "dev",
            "eth0",
        ])?;
        ip(["-n", &cl, "route", "add", "default", "via", "198.18.1.1"])?;
        ns_exec(&cl, ["ethtool", "-K", "eth0", "tx", "off"])?;
        ns_exec(&cl, ["ethtool", "-K", "eth0", "gro", "on"])?;
        for g in [Gw::A, Gw::B] {
            let ns = self.gateway_ns(g);
            let (c, b) = g.addresses();
            let (cport, bport) = Self::switch_ports(g);
            wire(&cport, "brc", &ns, "gwc")?;
            wire(&bport, "brb", &ns, "gwb")?;
            ip(["-n", &ns, "addr", "add", &format!("{c}/24"), "dev", "gwc"])?;
            ip(["-n", &ns, "addr", "add", &format!("{b}/24"), "dev", "gwb"])?;
            ns_exec(&ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            for port in [&cport, &bport] {
                // A learning switch: no unknown-unicast flooding to gateways.
                ns_exec(&sw, ["bridge", "link", "set", "dev", port, "flood", "off"])?;
                // XDP on veth: frames redirected into gwc/gwb are delivered
                // only when the peer has GRO on.
                ns_exec(&sw, ["ethtool", "-K", port, "gro", "on"])?;
            }
            for dev in ["gwc", "gwb"] {
                ns_exec(&ns, ["ethtool", "-K", dev, "gro", "on"])?;
            }
        }
        for i in 1..=HA_NODES {
            let ns = self.node_ns(i);
            wire(&format!("b-n{i}"), "brb", &ns, "eth0")?;
            let cidr = format!("{}/24", Self::node_addr(i));
            ip(["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(["-n", &ns, "route", "add", "default", "via", "198.18.2.1"])?;
            ns_exec(&ns, ["ethtool", "-K", "eth0", "tx", "off"])?;
        }
        Ok(())
    }

    /// The switch ports (client side, backend side) of gateway `g`.
    fn switch_ports(g: Gw) -> (String, String) {
        (format!("c-{}", g.name()), format!("b-{}", g.name()))
    }

    /// Namespace-name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// The lab's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The bpffs (host mount namespace) holding both gateways' pins.
    pub fn bpffs_dir(&self) -> PathBuf {
        self.dir().join("bpffs")
    }
    /// `{p}-sw`.
    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }
    /// `{p}-cl`.
    pub fn client_ns(&self) -> String {
        format!("{}-cl", self.prefix)
    }
    /// `{p}-ga` / `{p}-gb`.
    pub fn gateway_ns(&self, g: Gw) -> String {
        format!("{}-{}", self.prefix, g.name())
    }
    /// `{p}-nN`.
    pub fn node_ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.prefix)
    }
    /// `cp-0N`.
    pub fn node_name(i: usize) -> String {
        format!("cp-{i:02}")
    }
    /// `198.18.2.1N`.
    pub fn node_addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 2, 10 + i as u8)
    }
    /// The `lb` binary (canonical path, as keepalived runs it).
    pub fn lb_bin(&self) -> &Path {
        &self.lb_bin
    }

    /// Starts `cmd` in `ns` (via `ip netns exec`, SIGTERM on our death),
    /// output appended to `log`.
    fn spawn_in(
        &self,
        ns: &str,
        gateway: Option<Gw>,
        cmd: &mut Command,
        log: &Path,
    ) -> Result<u32> {
        let mut real = Command::new("ip");
        real.args(["netns", "exec", ns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        let f = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)?;
        real.stdin(Stdio::null()).stdout(f.try_clone()?).stderr(f);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            real.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let label = format!("{} in {ns}", cmd.get_program().to_string_lossy());
        let child = real.spawn().with_context(|| format!("spawning {label}"))?;
        let pid = child.id();
        lock(&self.children).push(Tracked {
            label,
            child,
            log: log.to_path_buf(),
            gateway,
        });
        Ok(pid)
    }

    /// Starts the three nodes (cp-sim on 6443 and 50000) and waits until
    /// each greets from its own namespace.
    pub fn start_nodes(&self) -> Result<()> {
        for i in 1..=HA_NODES {
            let name = Self::node_name(i);
            let addr = Self::node_addr(i);
            let mut cmd = Command::new(&self.cp_sim);
            cmd.args(["--name", &name, "--max-lifetime-secs", "900"]);
            for port in [KUBE_API_PORT, TALOS_API_PORT] {
                cmd.arg("--listen").arg(format!("{addr}:{port}"));
            }
            let log = self.dir().join(format!("{name}.log"));
            self.spawn_in(&self.node_ns(i), None, &mut cmd, &log)?;
        }
        for i in 1..=HA_NODES {
            let addr = SocketAddrV4::new(Self::node_addr(i), KUBE_API_PORT);
            let ok = crate::lab::run_in_netns(&self.node_ns(i), || {
                (0..250).any(|_| {
                    let ok = connect_and_name(addr, Duration::from_millis(200)).is_ok();
                    if !ok {
                        thread::sleep(Duration::from_millis(20));
                    }
                    ok
                })
            })?;
            if !ok {
                bail!("node {i} not up within 5 s");
            }
        }
        Ok(())
    }

    /// Runs `lb init` for the pair inside gateway A's namespace (where the
    /// interfaces exist, so `keepalived -t` checks everything), writing into
    /// `{dir}/init`. Returns its output; fails when it exits non-zero.
    pub fn run_init(&self, advert_int: Duration) -> Result<Output> {
        let out_dir = self.init_dir();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.gateway_ns(Gw::A)])
            .arg(&self.lb_bin)
            .arg("init");
        for i in 1..=HA_NODES {
            cmd.arg("--node")
                .arg(format!("{}={}", Self::node_name(i), Self::node_addr(i)));
        }
        cmd.args(["--vip", &VIP.to_string()])
            .args(["--client-interface", "gwc", "--backend-interface", "gwb"])
            .args(["--client-floating", CLIENT_FLOATING])
            .args(["--backend-floating", BACKEND_FLOATING])
            .args(["--gateway", &Gw::A.init_arg(), "--peer", &Gw::B.init_arg()])
            .arg("--advert-int")
            .arg(format!("{}ms", advert_int.as_millis()))
            .arg("--lb-bin")
            .arg(&self.lb_bin)
            // cp-sim speaks plain TCP where real nodes speak TLS.
            .arg("--tcp-checks")
            .arg("--output")
            .arg(&out_dir);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(30))?;
        if !out.status.success() {
            bail!(
                "lb init failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// Where [`HaLab::run_init`] writes.
    pub fn init_dir(&self) -> PathBuf {
        self.dir().join("init")
    }

    /// The control socket of gateway `g`'s lb.
    pub fn socket(&self, g: Gw) -> PathBuf {
        self.dir().join(format!("lb-{}.sock", g.name()))
    }

    /// Starts `lb run` in gateway `g` with the generated `lb.toml`, only the
    /// pin path and control socket made per gateway (both share this host),
    /// and waits (20 s at most) until `lb healthz` passes there.
    /// `reset` starts from clean pins, as after a reboot.
    pub fn start_lb(&self, g: Gw, reset: bool) -> Result<()> {
        let text = std::fs::read_to_string(self.init_dir().join("lb.toml"))?;
        let pin = self.bpffs_dir().join(g.name());
        let patched = text
            .replace(
                &format!("pin_path = \"{}\"", lb::config::DEFAULT_PIN_PATH),
                &format!("pin_path = \"{}\"", pin.display()),
            )
            .replace(
                &format!("socket = \"{}\"", lb::config::DEFAULT_SOCKET),
                &format!("socket = \"{}\"", self.socket(g).display()),
            );
        if !patched.contains(&pin.display().to_string()) || !patched.contains("lb-") {
            bail!("generated lb.toml has no pin_path/socket line to adapt:\n{text}");
        }
        let cfg = self.dir().join(format!("lb-{}.toml", g.name()));
        write_file(&cfg, &patched)?;
        let log = self.dir().join(format!("lb-{}.log", g.name()));
        let mut cmd = Command::new(&self.lb_bin);
        cmd.arg("run").arg("--config").arg(&cfg);
        if reset {
            cmd.arg("--reset");
        }
        self.spawn_in(&self.gateway_ns(g), Some(g), &mut cmd, &log)?;
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(20) {
            match self.healthz(g) {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) => last = String::from_utf8_lossy(&out.stderr).into_owned(),
                Err(e) => last = format!("{e:#}"),
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "lb in {} not healthy within 20 s ({last}); log:\n{}",
            g.name(),
            read_log(&log)
        )
    }

    /// Runs `lb healthz --api 127.0.0.1:9542` in gateway `g`.
    pub fn healthz(&self, g: Gw) -> Result<Output> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.gateway_ns(g)])
            .arg(&self.lb_bin)
            .args(["healthz", "--api", LB_API, "--timeout", "1s"]);
        run_with_timeout(&mut cmd, Duration::from_secs(5))
    }

    /// Starts keepalived in gateway `g` with its generated configuration,
    /// in the foreground, VRRP only, logging to the console (a log file),
    /// with pid files of its own.
    pub fn start_keepalived(&self, g: Gw) -> Result<()> {
        let conf = self
            .init_dir()
            .join(format!("keepalived-{}.conf", g.name()));
        let d = self.dir();
        let mut cmd = Command::new("keepalived");
        cmd.args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            "--vrrp",
        ])
        .arg("--use-file")
        .arg(&conf)
        .arg("--pid")
        .arg(d.join(format!("keepalived-{}.pid", g.name())))
        .arg("--vrrp_pid")
        .arg(d.join(format!("keepalived-vrrp-{}.pid", g.name())));
        let log = d.join(format!("keepalived-{}.log", g.name()));
        self.spawn_in(&self.gateway_ns(g), Some(g), &mut cmd, &log)?;
        Ok(())
    }

    /// Whether gateway `g` holds (client-side, backend-side) floating addresses.
    pub fn holds_floating(&self, g: Gw) -> Result<(bool, bool)> {
        let ns = self.gateway_ns(g);
        let has = |dev: &str, cidr: &str| -> Result<bool> {
            let out = ns_exec(&ns, ["ip", "-4", "-o", "addr", "show", "dev", dev])?;
            let addr = cidr.split('/').next().unwrap_or(cidr);
            Ok(String::from_utf8_lossy(&out.stdout).contains(&format!("inet {addr}/")))
        };
        Ok((has("gwc", CLIENT_FLOATING)?, has("gwb", BACKEND_FLOATING)?))
    }

    /// Waits until `master` holds both floating addresses and `other` none;
    /// returns how long that took.
    pub fn wait_master(&self, master: Gw, limit: Duration) -> Result<Duration> {
        let other = if master == Gw::A { Gw::B } else { Gw::A };
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < limit {
            let m = self.holds_floating(master)?;
            let o = self.holds_floating(other).unwrap_or((false, false));
            if m == (true, true) && o == (false, false) {
                return Ok(start.elapsed());
            }
            last = format!("{}: {m:?}, {}: {o:?}", master.name(), other.name());
            thread::sleep(Duration::from_millis(10));
        }
        bail!("{} not master within {limit:?} ({last})", master.name())
    }

    /// A crash of gateway `g`: its switch ports go down (links cut), then
    /// every process in its namespace (lb, keepalived and its children) is
    /// killed with SIGKILL: no cleanup runs.
    pub fn crash(&self, g: Gw) -> Result<()> {
        let sw = self.switch_ns();
        let (c, b) = Self::switch_ports(g);
        ip(["-n", &sw, "link", "set", "dev", &c, "down"])?;
        ip(["-n", &sw, "link", "set", "dev", &b, "down"])?;
        let ns = self.gateway_ns(g);
        let out = Command::new("ip").args(["netns", "pids", &ns]).output()?;
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<libc::pid_t>() {
                // SAFETY: plain kill(2) on a process inside our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let mut children = lock(&self.children);
        for t in children.iter_mut().filter(|t| t.gateway == Some(g)) {
            let _ = t.child.kill();
            let _ = t.child.wait();
        }
        children.retain(|t| t.gateway != Some(g));
        Ok(())
    }

    /// Stops gateway `g`'s lb with SIGTERM (keepalived keeps running; with
    /// `keep_attached` the data path stays attached) and waits for it to exit.
    pub fn stop_lb(&self, g: Gw) -> Result<()> {
        let prefix = self.lb_bin.to_string_lossy().into_owned();
        let mut children = lock(&self.children);
        let i = children
            .iter()
            .position(|t| t.gateway == Some(g) && t.label.starts_with(&prefix))
            .ok_or_else(|| anyhow!("no lb running in {}", g.name()))?;
        let mut t = children.remove(i);
        drop(children);
        terminate(&mut t.child, Duration::from_secs(10))?;
        Ok(())
    }

    /// Gateway `g` comes back as after a reboot: the floating addresses a
    /// killed keepalived left behind are gone, then its links come up.
    pub fn reboot(&self, g: Gw) -> Result<()> {
        let ns = self.gateway_ns(g);
        for (dev, cidr) in [("gwc", CLIENT_FLOATING), ("gwb", BACKEND_FLOATING)] {
            if self.has_addr(&ns, dev, cidr)? {
                ip(["-n", &ns, "addr", "del", cidr, "dev", dev])?;
            }
        }
        let sw = self.switch_ns();
        let (c, b) = Self::switch_ports(g);
        ip(["-n", &sw, "link", "set", "dev", &c, "up"])?;
        ip(["-n", &sw, "link", "set", "dev", &b, "up"])?;
        Ok(())
    }

    fn has_addr(&self, ns: &str, dev: &str, cidr: &str) -> Result<bool> {
        let out = ns_exec(ns, ["ip", "-4", "-o", "addr", "show", "dev", dev])?;
        let addr = cidr.split('/').next().unwrap_or(cidr);
        Ok(String::from_utf8_lossy(&out.stdout).contains(&format!("inet {addr}/")))
    }

    /// Drops gateway `g`'s health checks to node `i` inside the node (only
    /// packets from `g`'s fixed backend-side address; traffic it forwards
    /// keeps the clients' addresses and passes): `g`'s checks time out
    /// while the node serves, so the two gateways' views differ.
    pub fn filter_checks(&self, g: Gw, i: usize) -> Result<()> {
        self.filter_checks_with(g, i, "drop")
    }

    /// [`HaLab::filter_checks`] with another nft verdict: `reject with tcp
    /// reset`, `reject with icmp type admin-prohibited` (what host
    /// firewalls answer by default): `g`'s checks are refused or find the
    /// node unreachable while it serves.
    pub fn filter_checks_with(&self, g: Gw, i: usize, verdict: &str) -> Result<()> {
        let ns = self.node_ns(i);
        let (_, from) = g.addresses();
        ns_exec(&ns, ["nft", "add", "table", "inet", "lbha"])?;
        ns_exec(
            &ns,
            [
                "nft",
                "add chain inet lbha input { type filter hook input priority 0; }",
            ],
        )?;
        let rule = format!(
            "add rule inet lbha input ip saddr {from} tcp dport {{ {KUBE_API_PORT}, {TALOS_API_PORT} }} {verdict}"
        );
        ns_exec(&ns, ["nft", &rule])?;
        Ok(())
    }

    /// The health (`up`/`down`) gateway `g`'s lb reports for `node` under
    /// `listener` (`lb status --json` over its control socket).
    pub fn backend_health(&self, g: Gw, listener: &str, node: &str) -> Result<String> {
        let b = self.backend_status(g, listener, node)?;
        b.get("health")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no health for {listener}/{node} in {b}"))
    }

    /// What gateway `g`'s lb reports for `node` under `listener` (its
    /// backend object in `lb status --json`).
    pub fn backend_status(&self, g: Gw, listener: &str, node: &str) -> Result<serde_json::Value> {
        let mut cmd = Command::new(&self.lb_bin);
        cmd.args(["status", "--json", "--socket"])
            .arg(self.socket(g));
        let out = run_with_timeout(&mut cmd, Duration::from_secs(5))?;
        if !out.status.success() {
            bail!("lb status: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let st: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        crate::lb::status_backend(&st, listener, node)
            .cloned()
            .ok_or_else(|| anyhow!("no backend {listener}/{node} in {st}"))
    }

    /// The state changes keepalived logged in gateway `g` so far (lines
    /// with `Entering ... STATE`, e.g. `(lb_client) Entering MASTER STATE`).
    pub fn vrrp_transitions(&self, g: Gw) -> Vec<String> {
        let log = read_log(&self.dir().join(format!("keepalived-{}.log", g.name())));
        log.lines()
            .filter(|l| l.contains("Entering") && l.contains("STATE"))
            .map(|l| l.trim().to_owned())
            .collect()
    }

    /// Every log (lb, keepalived, nodes), for a failing test.
    pub fn dump_logs(&self) {
        for t in lock(&self.children).iter() {
            eprintln!("===== {} =====\n{}", t.label, read_log(&t.log));
        }
        for g in [Gw::A, Gw::B] {
            for kind in ["lb", "keepalived"] {
                let p = self.dir().join(format!("{kind}-{}.log", g.name()));
                if p.exists() {
                    eprintln!("===== {} (file) =====\n{}", p.display(), read_log(&p));
                }
            }
        }
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("HA lab {}: test failed; logs follow", self.prefix);
            self.dump_logs();
        }
        let children = std::mem::take(&mut *lock(&self.children));
        for mut t in children {
            let _ = terminate(&mut t.child, Duration::from_secs(3));
        }
        for ns in self.namespaces.iter().rev() {
            kill_processes_in_ns(ns);
            let _ = ip(["netns", "del", ns]);
        }
        if let Ok(c) = std::ffi::CString::new(self.bpffs_dir().as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated path; a failure is harmless here.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
