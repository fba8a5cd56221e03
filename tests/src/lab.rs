//! The network-namespace lab: a client, a gateway (where `lb` runs), a switch
//! and a few backend "control-plane nodes", all wired with veth pairs.
//!
//! ```text
//!  {p}-cl                {p}-gw                    {p}-sw (bridge br0)       {p}-bN
//!  eth0 198.18.1.2 ── gwc 198.18.1.1                ┌─ b1 ── eth0 198.18.2.11
//!                        gwb 198.18.2.1 ── gw ──────┼─ b2 ── eth0 198.18.2.12
//!                                                   └─ b3 ── eth0 198.18.2.13
//! ```
//!
//! The VIP (198.18.100.10) is assigned nowhere: the client reaches it through
//! its default route to the gateway, where the XDP program picks it up.
//!
//! The lab is dual-stack: every interface above also has an address in the
//! ULA prefix fd00:198:18::/48 mirroring its IPv4 one (client
//! `fd00:198:18:1::2`, gateway `fd00:198:18:1::1` and `fd00:198:18:2::1`,
//! backend N `fd00:198:18:2::1N`), and the IPv6 VIP is `fd00:198:18:100::10`.
//! Addresses are added with `nodad` (and DAD is off in every namespace) so
//! they are usable at once; the gateway forwards IPv6 too, which the XDP
//! program's IPv6 FIB lookup requires.
//!
//! Only 198.18.0.0/15 and fd00:198:18::/48 addresses inside namespaces this
//! module creates are used. Every namespace, and every process started in it, is removed when
//! the [`Lab`] is dropped, also while unwinding from a panic.
//!
//! # Requirements for XDP on veth (see [`Lab::create`])
//! * A frame that XDP redirects or `XDP_TX`es into a veth is only delivered if
//!   the veth's *peer* has GRO enabled or an XDP program attached. So GRO is
//!   turned on for the client's `eth0` (peer of `gwc`) and for the switch's
//!   `gw` port (peer of `gwb`), and, harmlessly, on `gwc`/`gwb` themselves.
//! * veth hands packets over as `CHECKSUM_PARTIAL` when tx checksum offload is
//!   on. Once XDP rewrites addresses/ports on such a packet, the receiver sees
//!   a bad checksum and drops it. So tx checksumming is turned off on `eth0` in
//!   the client and in every backend, making them send complete checksums.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::client::connect_and_name;

pub mod cloud;
pub mod lan;
pub mod lan_pair;

/// The virtual IP the lab's listeners use; assigned to no interface.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
/// The IPv6 VIP (a ULA address); assigned to no interface either.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0x100, 0, 0, 0, 0x10);
/// The client's IPv6 address.
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 1, 0, 0, 0, 2);
/// The gateway's IPv6 address on the client side (`gwc`).
pub const GATEWAY_CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 1, 0, 0, 0, 1);
/// The gateway's IPv6 address on the backend side (`gwb`).
pub const GATEWAY_BACKEND_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 2, 0, 0, 0, 1);
/// The Kubernetes API port (a listener on the VIP, and a backend port).
pub const KUBE_API_PORT: u16 = 6443;
/// The Talos API port (a listener on the VIP, and a backend port).
pub const TALOS_API_PORT: u16 = 50000;
/// Where `lb run` serves its API inside the gateway namespace.
pub const LB_API: &str = "127.0.0.1:9542";
/// Client address (the client's `eth0`).
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// Gateway address on the client side (`gwc`).
pub const GATEWAY_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// Gateway address on the backend side (`gwb`).
pub const GATEWAY_BACKEND_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The gateway's interfaces, in the order `lb` is configured with them.
pub const GATEWAY_INTERFACES: [&str; 2] = ["gwc", "gwb"];

/// Most backends a lab may have (addresses stay within 198.18.2.11–.19 and
/// switch port names within `b1`–`b9`).
pub const MAX_BACKENDS: usize = 9;

/// Per-process counter making automatic prefixes unique.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Options for [`Lab::create`].
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Explicit namespace-name prefix (e.g. `lbdemo`). Stale namespaces with
    /// this prefix, and the processes in them, are removed first. `None`
    /// picks a unique prefix `lbt<pid%10000><counter>`.
    pub prefix: Option<String>,
    /// Number of backends (1..=9).
    pub backends: usize,
    /// Path of the `cp-sim` binary. Integration tests pass
    /// `env!("CARGO_BIN_EXE_cp-sim")`; `None` looks next to the current
    /// executable (and in its parent directory when that is `deps/`).
    pub cp_sim: Option<PathBuf>,
    /// Path of the `lb` binary; `None` uses [`default_lb_bin`].
    pub lb_bin: Option<PathBuf>,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            prefix: None,
            backends: 3,
            cp_sim: None,
            lb_bin: None,
        }
    }
}

impl LabOptions {
    /// Default options with the given `cp-sim` binary, as integration tests
    /// use them: `LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim"))`.
    pub fn with_cp_sim(cp_sim: impl Into<PathBuf>) -> Self {
        Self {
            cp_sim: Some(cp_sim.into()),
            ..Self::default()
        }
    }
}

/// Identifies a process started by [`Lab::spawn_in`] (its pid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChildId(pub u32);

/// A tracked child process.
struct Tracked {
    label: String,
    child: Child,
    log: Option<PathBuf>,
}

/// The running `lb` daemon of a lab.
struct LbState {
    id: ChildId,
    log: PathBuf,
}

/// A namespace lab; see the module documentation for its layout.
///
/// All methods take `&self`, so a lab can be shared with helper threads.
/// Children are started with a parent-death signal (SIGTERM) so that they do
/// not outlive the test process; since Linux ties that signal to the
/// *thread* that spawned them, start processes from a thread that lives as
/// long as the lab (normally the test's own thread).
pub struct Lab {
    prefix: String,
    backends: usize,
    /// Namespaces created so far, deleted in reverse order on drop.
    namespaces: Vec<String>,
    cp_sim: PathBuf,
    lb_bin: PathBuf,
    dir: tempfile::TempDir,
    children: Mutex<BTreeMap<ChildId, Tracked>>,
    backend_children: Mutex<BTreeMap<usize, ChildId>>,
    lb: Mutex<Option<LbState>>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("backends", &self.backends)
            .field("namespaces", &self.namespaces)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, also when a panicking thread poisoned it (the data is still
/// fine for our purposes, and `Drop` must not panic).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lab {
    /// Builds the lab: namespaces, veth pairs, bridge, addresses, routes,
    /// forwarding and the offload settings XDP on veth needs (see the module
    /// documentation). Backends are not started; see [`Lab::start_backend`].
    ///
    /// On error everything created so far is removed again.
    pub fn create(opts: LabOptions) -> Result<Lab> {
        Self::create_with(opts, Lab::build)
    }

    /// [`Lab::create`] with another wiring (`build` adds the namespaces
    /// after the client's, the links and the addresses).
    fn create_with(opts: LabOptions, build: fn(&mut Lab) -> Result<()>) -> Result<Lab> {
        if opts.backends == 0 || opts.backends > MAX_BACKENDS {
            bail!("backends must be 1..={MAX_BACKENDS}, not {}", opts.backends);
        }
        let cp_sim = match opts.cp_sim {
            Some(p) => p,
            None => find_next_to_exe("cp-sim")?,
        };
        let lb_bin = opts.lb_bin.unwrap_or_else(default_lb_bin);
        let dir = tempfile::Builder::new()
            .prefix("lb-lab-")
            .tempdir()
            .context("creating the lab's temporary directory")?;

        let mut lab = Lab {
            prefix: String::new(),
            backends: opts.backends,
            namespaces: Vec::new(),
            cp_sim,
            lb_bin,
            dir,
            children: Mutex::new(BTreeMap::new()),
            backend_children: Mutex::new(BTreeMap::new()),
            lb: Mutex::new(None),
        };

        // Claim a prefix by creating its first namespace (the client).
        match opts.prefix {
            Some(prefix) => {
                validate_prefix(&prefix)?;
                remove_stale_namespaces(&prefix)?;
                lab.prefix = prefix;
                lab.add_ns(&format!("{}-cl", lab.prefix))?;
            }
            None => {
                let pid = std::process::id() % 10000;
                let mut claimed = false;
                for _ in 0..50 {
                    let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
                    let prefix = format!("lbt{pid}x{n}");
                    if ip(["netns", "add", &format!("{prefix}-cl")]).is_ok() {
                        lab.prefix = prefix;
                        lab.namespaces.push(lab.client_ns());
                        claimed = true;
                        break;
                    }
                }
                if !claimed {
                    bail!("could not claim a unique namespace prefix in 50 tries");
                }
            }
        }
        build(&mut lab).with_context(|| format!("building lab {}", lab.prefix))?;
        mount_bpffs(&lab.bpffs_dir())?;
        Ok(lab)
    }

    /// A bpffs of the lab's own where its `lb` pins maps and links. bpffs is
    /// shared by every network namespace, so each lab needs its own (and
    /// `ip netns exec` remounts /sys, hiding /sys/fs/bpf).
    pub fn bpffs_dir(&self) -> PathBuf {
        self.dir().join("bpffs")
    }

    /// Creates a namespace and records it for deletion.
    fn add_ns(&mut self, ns: &str) -> Result<()> {
        ip(["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        Ok(())
    }

    fn build(&mut self) -> Result<()> {
        let cl = self.client_ns();
        let gw = self.gateway_ns();
        let sw = self.switch_ns();
        self.add_ns(&gw)?;
        self.add_ns(&sw)?;
        for i in 1..=self.backends {
            self.add_ns(&self.backend_ns(i))?;
        }
        for ns in &self.namespaces {
            ip(["-n", ns, "link", "set", "dev", "lo", "up"])?;
            // IPv6 addresses (link-local ones included) usable at once:
            // duplicate address detection would hold them back ~2 s.
            for key in [
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ] {
                ns_exec(ns, ["sysctl", "-qw", key])?;
            }
        }

        // Note: always spell out `name`/`dev`; iproute2 would read a bare
        // short interface name such as `a` as an abbreviated keyword.

        // Client <-> gateway.
        ip([
            "-n", &gw, "link", "add", "name", "gwc", "type", "veth", "peer", "name", "eth0",
            "netns", &cl,
        ])?;
        // Gateway <-> switch.
        ip([
            "-n", &gw, "link", "add", "name", "gwb", "type", "veth", "peer", "name", "gw", "netns",
            &sw,
        ])?;
        // The switch: a plain bridge (STP off, so ports forward at once).
        ip(["-n", &sw, "link", "add", "name", "br0", "type", "bridge"])?;
        ip(["-n", &sw, "link", "set", "dev", "br0", "up"])?;
        ip(["-n", &sw, "link", "set", "dev", "gw", "master", "br0"])?;
        ip(["-n", &sw, "link", "set", "dev", "gw", "up"])?;
        for i in 1..=self.backends {
            let b = self.backend_ns(i);
            let port = format!("b{i}");
            ip([
                "-n", &sw, "link", "add", "name", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &b,
            ])?;
            ip(["-n", &sw, "link", "set", "dev", &port, "master", "br0"])?;
            ip(["-n", &sw, "link", "set", "dev", &port, "up"])?;
        }

        // Client.
        ip(["-n", &cl, "addr", "add", "198.18.1.2/24", "dev", "eth0"])?;
        ip(["-n", &cl, "link", "set", "dev", "eth0", "up"])?;
        ip(["-n", &cl, "route", "add", "default", "via", "198.18.1.1"])?;
        add_addr6(&cl, CLIENT_ADDR6, "eth0")?;
        ip6_default_route(&cl, GATEWAY_CLIENT_ADDR6)?;

        // Gateway: a router between 198.18.1.0/24 and 198.18.2.0/24.
        ip(["-n", &gw, "addr", "add", "198.18.1.1/24", "dev", "gwc"])?;
        ip(["-n", &gw, "addr", "add", "198.18.2.1/24", "dev", "gwb"])?;
        ip(["-n", &gw, "link", "set", "dev", "gwc", "up"])?;
        ip(["-n", &gw, "link", "set", "dev", "gwb", "up"])?;
        ns_exec(&gw, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        add_addr6(&gw, GATEWAY_CLIENT_ADDR6, "gwc")?;
        add_addr6(&gw, GATEWAY_BACKEND_ADDR6, "gwb")?;
        // bpf_fib_lookup(AF_INET6) answers FWD_DISABLED without it.
        ns_exec(&gw, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;

        // Backends.
        for i in 1..=self.backends {
            let b = self.backend_ns(i);
            let cidr = format!("{}/24", self.backend_addr(i));
            ip(["-n", &b, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(["-n", &b, "link", "set", "dev", "eth0", "up"])?;
            ip(["-n", &b, "route", "add", "default", "via", "198.18.2.1"])?;
            add_addr6(&b, self.backend_addr6(i), "eth0")?;
            ip6_default_route(&b, GATEWAY_BACKEND_ADDR6)?;
        }

        // XDP on veth: GRO on the peers of the gateway's interfaces, so that
        // frames XDP redirects / XDP_TXes into gwc/gwb get delivered.
        ns_exec(&cl, ["ethtool", "-K", "eth0", "gro", "on"])?;
        ns_exec(&sw, ["ethtool", "-K", "gw", "gro", "on"])?;
        // Harmless, and symmetric should the program redirect the other way.
        ns_exec(&gw, ["ethtool", "-K", "gwc", "gro", "on"])?;
        ns_exec(&gw, ["ethtool", "-K", "gwb", "gro", "on"])?;
        // XDP on veth: complete checksums from the endpoints, since a
        // CHECKSUM_PARTIAL packet rewritten by XDP would be dropped.
        ns_exec(&cl, ["ethtool", "-K", "eth0", "tx", "off"])?;
        for i in 1..=self.backends {
            ns_exec(&self.backend_ns(i), ["ethtool", "-K", "eth0", "tx", "off"])?;
        }
        Ok(())
    }

    /// The namespace-name prefix of this lab.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Number of backends.
    pub fn backends(&self) -> usize {
        self.backends
    }

    /// The lab's temporary directory (configs and logs live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client namespace, `{p}-cl`.
    pub fn client_ns(&self) -> String {
        format!("{}-cl", self.prefix)
    }

    /// The gateway namespace, `{p}-gw`, where `lb` runs.
    pub fn gateway_ns(&self) -> String {
        format!("{}-gw", self.prefix)
    }

    /// The switch namespace, `{p}-sw`, holding bridge `br0`.
    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// The namespace of backend `i` (1-based), `{p}-b{i}`.
    ///
    /// # Panics
    /// If `i` is not in `1..=backends()`.
    pub fn backend_ns(&self, i: usize) -> String {
        self.check_backend(i);
        format!("{}-b{i}", self.prefix)
    }

    /// The address of backend `i` (1-based): 198.18.2.(10+i).
    ///
    /// # Panics
    /// If `i` is not in `1..=backends()`.
    pub fn backend_addr(&self, i: usize) -> Ipv4Addr {
        self.check_backend(i);
        Ipv4Addr::new(198, 18, 2, 10 + i as u8)
    }

    /// The IPv6 address of backend `i` (1-based): `fd00:198:18:2::1{i}`
    /// (the digits of its IPv4 address's last byte, as hex digits).
    ///
    /// # Panics
    /// If `i` is not in `1..=backends()`.
    pub fn backend_addr6(&self, i: usize) -> Ipv6Addr {
        self.check_backend(i);
        Ipv6Addr::new(0xfd00, 0x198, 0x18, 2, 0, 0, 0, 0x10 + i as u16)
    }

    /// The node name of backend `i` (1-based): `cp-0{i}`.
    ///
    /// # Panics
    /// If `i` is not in `1..=backends()`.
    pub fn backend_name(&self, i: usize) -> String {
        self.check_backend(i);
        format!("cp-{i:02}")
    }

    /// The VIP, 198.18.100.10.
    pub fn vip(&self) -> Ipv4Addr {
        VIP
    }

    /// `VIP:port`.
    pub fn vip_addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(VIP, port)
    }

    /// The IPv6 VIP, fd00:198:18:100::10.
    pub fn vip6(&self) -> Ipv6Addr {
        VIP6
    }

    /// `[VIP6]:port`.
    pub fn vip6_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(VIP6.into(), port)
    }

    /// The gateway's interfaces `["gwc", "gwb"]`.
    pub fn gateway_interfaces(&self) -> [&'static str; 2] {
        GATEWAY_INTERFACES
    }

    /// Path of the `cp-sim` binary in use.
    pub fn cp_sim_bin(&self) -> &Path {
        &self.cp_sim
    }

    /// Path of the `lb` binary in use.
    pub fn lb_bin(&self) -> &Path {
        &self.lb_bin
    }

    fn check_backend(&self, i: usize) {
        assert!(
            (1..=self.backends).contains(&i),
            "backend index {i} out of range 1..={}",
            self.backends
        );
    }

    /// Runs `f` on a fresh thread that has first entered network namespace
    /// `ns`, and returns its result. Sockets created inside `f` belong to
    /// `ns` (and keep belonging to it when used from other threads later).
    /// A panic inside `f` is propagated.
    pub fn in_ns<T, F>(&self, ns: &str, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        run_in_netns(ns, f)
    }

    /// Starts `cmd` (program, arguments, environment and working directory
    /// are taken from it) inside namespace `ns` via `ip netns exec`, tracked
    /// so that dropping the lab stops it. Stdin is null; stdout and stderr go
    /// to `log` when given (appended), otherwise to null.
    pub fn spawn_in(&self, ns: &str, cmd: &Command, log: Option<&Path>) -> Result<ChildId> {
        let mut real = Command::new("ip");
        real.args(["netns", "exec", ns]);
        real.arg(cmd.get_program());
        real.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => real.env(k, v),
                None => real.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            real.current_dir(d);
        }
        real.stdin(Stdio::null());
        match log {
            Some(path) => {
                let f = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening log {}", path.display()))?;
                real.stdout(f.try_clone()?);
                real.stderr(f);
            }
            None => {
                real.stdout(Stdio::null());
                real.stderr(Stdio::null());
            }
        }
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            real.pre_exec(|| {
                // `ip netns exec` execs the command in place, so the signal
                // reaches the real program when the test process dies.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let label = format!(
            "{} in {ns}",
            Path::new(cmd.get_program())
                .file_name()
                .unwrap_or(OsStr::new("?"))
                .to_string_lossy()
        );
        let child = real.spawn().with_context(|| format!("spawning {label}"))?;
        let id = ChildId(child.id());
        lock(&self.children).insert(
            id,
            Tracked {
                label,
                child,
                log: log.map(Path::to_path_buf),
            },
        );
        Ok(id)
    }

    /// Whether tracked child `id` is still running.
    pub fn child_running(&self, id: ChildId) -> bool {
        match lock(&self.children).get_mut(&id) {
            Some(t) => matches!(t.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The exit status of tracked child `id` if it has exited.
    pub fn child_exit_status(&self, id: ChildId) -> Option<ExitStatus> {
        lock(&self.children)
            .get_mut(&id)
            .and_then(|t| t.child.try_wait().ok().flatten())
    }

    /// Stops tracked child `id`: SIGTERM, then SIGKILL if it has not exited
    /// within `grace`. Returns its exit status and forgets it.
    pub fn stop_child(&self, id: ChildId, grace: Duration) -> Result<ExitStatus> {
        let tracked = lock(&self.children).remove(&id);
        let mut tracked = tracked.ok_or_else(|| anyhow!("no tracked child {id:?}"))?;
        terminate(&mut tracked.child, grace)
    }

    /// Kills a child with SIGKILL at once and reaps it.
    pub fn kill_child(&self, id: ChildId) -> Result<ExitStatus> {
        let tracked = lock(&self.children).remove(&id);
        let mut tracked = tracked.ok_or_else(|| anyhow!("no tracked child {id:?}"))?;
        tracked.child.kill().context("SIGKILL")?;
        tracked.child.wait().context("reaping")
    }

    /// Starts the simulated control-plane node of backend `i`
    /// (`cp-sim --name cp-0{i} --listen 198.18.2.(10+i):6443 --listen
    /// 198.18.2.(10+i):50000`, and the same ports on its IPv6 address, in
    /// `{p}-b{i}`) and waits (at most 5 s) until every one accepts
    /// connections and greets with the right name.
    pub fn start_backend(&self, i: usize) -> Result<ChildId> {
        let ns = self.backend_ns(i);
        let name = self.backend_name(i);
        let addrs: Vec<SocketAddr> = [
            IpAddr::from(self.backend_addr(i)),
            IpAddr::from(self.backend_addr6(i)),
        ]
        .into_iter()
        .flat_map(|ip| [KUBE_API_PORT, TALOS_API_PORT].map(|port| SocketAddr::new(ip, port)))
        .collect();
        if let Some(id) = lock(&self.backend_children).get(&i).copied() {
            if self.child_running(id) {
                bail!("backend {i} is already running");
            }
        }
        let mut cmd = Command::new(&self.cp_sim);
        cmd.arg("--name").arg(&name);
        for addr in &addrs {
            cmd.arg("--listen").arg(addr.to_string());
        }
        let log = self.dir().join(format!("{name}.log"));
        let id = self.spawn_in(&ns, &cmd, Some(&log))?;
        lock(&self.backend_children).insert(i, id);

        let deadline = Instant::now() + Duration::from_secs(5);
        let ready = self.in_ns(&ns, || {
            let mut last = String::from("not tried");
            for _ in 0..500 {
                if Instant::now() >= deadline {
                    break;
                }
                let all_up = addrs.iter().all(|&addr| {
                    match connect_and_name(addr, Duration::from_millis(200)) {
                        Ok(n) if n == name => true,
                        Ok(n) => {
                            last = format!("{addr} greeted as {n:?}");
                            false
                        }
                        Err(e) => {
                            last = format!("{addr}: {e:#}");
                            false
                        }
                    }
                });
                if all_up {
                    return Ok(());
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(anyhow!("backend {name} not ready within 5 s: {last}"))
        })?;
        if let Err(e) = ready {
            let _ = self.stop_backend(i);
            return Err(e.context(format!("log:\n{}", read_log(&log))));
        }
        Ok(id)
    }

    /// Stops backend `i`'s node (SIGTERM, SIGKILL after 2 s) and waits for it
    /// to exit. Returns when its sockets are gone.
    pub fn stop_backend(&self, i: usize) -> Result<()> {
        self.check_backend(i);
        let id = lock(&self.backend_children)
            .remove(&i)
            .ok_or_else(|| anyhow!("backend {i} is not running"))?;
        self.stop_child(id, Duration::from_secs(2))?;
        Ok(())
    }

    /// A lab (cp-sim at `cp_sim`) with every backend serving; panics on
    /// failure, as the tests that use it would.
    pub fn serving(cp_sim: &str) -> Lab {
        let lab = Lab::create(LabOptions::with_cp_sim(cp_sim)).expect("creating the lab");
        lab.start_all_backends().expect("starting backends");
        lab
    }

    /// Starts every backend.
    pub fn start_all_backends(&self) -> Result<()> {
        for i in 1..=self.backends {
            self.start_backend(i)?;
        }
        Ok(())
    }

    /// Records a running `lb` (used by the lb helpers).
    pub(crate) fn set_lb(&self, id: ChildId, log: PathBuf) {
        *lock(&self.lb) = Some(LbState { id, log });
    }

    /// The running `lb`'s child id and log path, if any.
    pub(crate) fn lb_state(&self) -> Option<(ChildId, PathBuf)> {
        lock(&self.lb).as_ref().map(|s| (s.id, s.log.clone()))
    }

    /// Forgets the running `lb`.
    pub(crate) fn clear_lb(&self) -> Option<ChildId> {
        lock(&self.lb).take().map(|s| s.id)
    }

    /// Prints every tracked log (lb and backends) to stderr.
    pub fn dump_logs(&self) {
        let lb_log = self.lb_state().map(|(_, log)| log);
        if let Some(log) = &lb_log {
            eprintln!(
                "===== lb log ({}) =====\n{}\n===== end of lb log =====",
                log.display(),
                read_log(log)
            );
        }
        let children = lock(&self.children);
        for t in children.values() {
            match &t.log {
                Some(log) if Some(log) != lb_log.as_ref() => {
                    eprintln!("===== {} log =====\n{}", t.label, read_log(log));
                }
                _ => {}
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("lab {}: test failed; logs follow", self.prefix);
            self.dump_logs();
        }
        // lb first and gracefully, so that it detaches XDP.
        if let Some(id) = self.clear_lb() {
            if let Some(mut t) = lock(&self.children).remove(&id) {
                let _ = terminate(&mut t.child, Duration::from_secs(5));
            }
        }
        let children = std::mem::take(&mut *lock(&self.children));
        // Signal everyone at once, then reap each with a short grace.
        for t in children.values() {
            // SAFETY: plain kill(2) on a pid we spawned and have not reaped.
            unsafe {
                libc::kill(t.child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        for (_, mut t) in children {
            let _ = terminate(&mut t.child, Duration::from_secs(1));
        }
        for ns in self.namespaces.iter().rev() {
            kill_processes_in_ns(ns);
            let _ = ip(["netns", "del", ns]);
        }
        // Releases whatever lb left pinned (a test may kill it with -9).
        if let Ok(c) = std::ffi::CString::new(self.bpffs_dir().as_os_str().as_encoded_bytes()) {
            // SAFETY: valid NUL-terminated path; a failure is harmless here.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Mounts a fresh bpffs at `dir` (the daemon's own helper).
pub(crate) fn mount_bpffs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    lb::dataplane::pins::mount_bpffs(dir)
}

/// SIGTERM, wait up to `grace` (polling), then SIGKILL and reap.
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    if let Some(st) = child.try_wait()? {
        return Ok(st);
    }
    // SAFETY: plain kill(2) on a pid we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    Ok(child.wait()?)
}

/// Runs `f` on a fresh thread inside network namespace `ns` (a name under
/// `/var/run/netns`) and returns its result; see [`Lab::in_ns`].
pub fn run_in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let path = netns_path(ns);
    thread::scope(|s| {
        let handle = thread::Builder::new()
            .name(format!("netns {ns}"))
            .spawn_scoped(s, move || -> Result<T> {
                enter_netns(&path)?;
                Ok(f())
            })
            .context("spawning a namespace thread")?;
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening namespace {}", path.display()))?;
    // SAFETY: setns(2) on a valid fd we own; affects only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setns into {}", path.display()));
    }
    Ok(())
}

/// `/var/run/netns/{ns}`.
pub fn netns_path(ns: &str) -> PathBuf {
    Path::new("/var/run/netns").join(ns)
}

/// Returns true when running as root. Otherwise: with `CI=true` panics
/// ("integration tests need root in CI"); else prints a skip line for `test`
/// and returns false.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if is_ci() {
        panic!("{test}: integration tests need root in CI");
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces, XDP)");
    false
}

/// Whether the environment says we run in CI (`CI=true`).
pub fn is_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// Finds an executable named `name` next to the current executable, or in
/// its parent directory when the current executable lives in `deps/`.
pub fn find_next_to_exe(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("current executable has no directory"))?;
    let mut candidates = vec![dir.join(name)];
    if dir.file_name() == Some(OsStr::new("deps")) {
        if let Some(parent) = dir.parent() {
            candidates.push(parent.join(name));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| anyhow!("{name} not found; looked at {candidates:?}"))
}

/// The `lb` binary: `$LB_BIN` if set, else `lb` next to the current
/// executable (or its parent when that is `deps/`), else
/// `<workspace>/target/debug/lb`.
pub fn default_lb_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LB_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(p) = find_next_to_exe("lb") {
        return p;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("debug")
        .join("lb")
}

/// Reads a log file for display; never fails.
pub fn read_log(path: &Path) -> String {
    let mut s = String::new();
    match File::open(path) {
        Ok(mut f) => {
            let mut bytes = Vec::new();
            if let Err(e) = f.read_to_end(&mut bytes) {
                s = format!("<cannot read {}: {e}>", path.display());
            } else {
                s = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
        Err(e) => s.push_str(&format!("<cannot open {}: {e}>", path.display())),
    }
    s
}

/// Writes `contents` to `path`, creating or truncating it.
pub(crate) fn write_file(path: &Path, contents: &str) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Namespace prefixes become part of `ip netns` names; keep them simple.
fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 16
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!("bad namespace prefix {prefix:?}: use 1-16 of [A-Za-z0-9_]");
    }
    Ok(())
}

/// Deletes namespaces named `{prefix}-*` left over from an earlier run,
/// killing the processes still inside them first.
fn remove_stale_namespaces(prefix: &str) -> Result<()> {
    let out = run(Command::new("ip").args(["netns", "list"]))?;
    let want = format!("{prefix}-");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // Lines look like "name" or "name (id: 3)".
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(&want) {
            eprintln!("removing stale namespace {name}");
            kill_processes_in_ns(name);
            let _ = ip(["netns", "del", name]);
        }
    }
    Ok(())
}

/// Kills (SIGTERM, then SIGKILL) every process still inside namespace `ns`.
pub(crate) fn kill_processes_in_ns(ns: &str) {
    let pids = |ns: &str| -> Vec<libc::pid_t> {
        Command::new("ip")
            .args(["netns", "pids", ns])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = pids(ns);
    if first.is_empty() {
        return;
    }
    for &p in &first {
        // SAFETY: plain kill(2).
        unsafe {
            libc::kill(p, libc::SIGTERM);
        }
    }
    for _ in 0..50 {
        if pids(ns).is_empty() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    for p in pids(ns) {
        // SAFETY: plain kill(2).
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
}

/// Runs `ip ARGS...`, failing with its stderr when it exits non-zero.
pub fn ip<I, S>(args: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new("ip").args(args)).map(|_| ())
}

/// Runs `ip netns exec NS ARGS...`, failing when it exits non-zero.
pub fn ns_exec<I, S>(ns: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// Runs a command to completion with output captured; non-zero exit is an
/// error carrying its stderr.
fn run(cmd: &mut Command) -> Result<Output> {
    let desc = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {desc}"))?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Runs a command with output captured, killing it if it takes longer than
/// `timeout`. Returns its output whatever the exit status.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let desc = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {desc}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{desc} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Adds `addr/64` to `dev` in `ns`, usable at once (`nodad`).
fn add_addr6(ns: &str, addr: Ipv6Addr, dev: &str) -> Result<()> {
    let cidr = format!("{addr}/64");
    ip(["-n", ns, "-6", "addr", "add", &cidr, "dev", dev, "nodad"])
}

/// An IPv6 default route in `ns` via `gateway` (on the connected /64).
fn ip6_default_route(ns: &str, gateway: Ipv6Addr) -> Result<()> {
    let via = gateway.to_string();
    ip(["-n", ns, "-6", "route", "add", "default", "via", &via])
}
