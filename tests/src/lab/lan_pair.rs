//! The LAN lab with two gateways: `{p}-gw` (A, 198.18.2.1, preferred
//! master) and `{p}-gb` (B, 198.18.2.3), each running `lb` with the same
//! full-NAT configuration, and keepalived moving the VIP and the
//! source-NAT address together (one VRRP instance, unicast adverts). The
//! switch does not flood unknown unicast to the gateways' ports, so frames
//! for a dead gateway's MAC go nowhere, as on a real switch.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::lan::{LAN_GATEWAY, LAN_SNAT, LAN_VIP};
use super::{
    ip, ns_exec, read_log, run_with_timeout, write_file, ChildId, Lab, LabOptions, LB_API,
};
use crate::client::{measure_failover, Failover};

/// Gateway B's own address on the LAN.
pub const LAN_GATEWAY_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 3);

/// One gateway of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairGw {
    /// `{p}-gw`, 198.18.2.1, priority 150.
    A,
    /// `{p}-gb`, 198.18.2.3, priority 100.
    B,
}

impl PairGw {
    /// Its short name: "a" or "b" (keepalived-{a,b}.conf, lb init's gateway names).
    pub fn name(self) -> &'static str {
        match self {
            PairGw::A => "a",
            PairGw::B => "b",
        }
    }

    /// Its own address on the LAN.
    pub fn addr(self) -> Ipv4Addr {
        match self {
            PairGw::A => LAN_GATEWAY,
            PairGw::B => LAN_GATEWAY_B,
        }
    }

    fn peer(self) -> PairGw {
        match self {
            PairGw::A => PairGw::B,
            PairGw::B => PairGw::A,
        }
    }

    /// Its port on the switch.
    fn port(self) -> &'static str {
        match self {
            PairGw::A => "gw",
            PairGw::B => "gwb2",
        }
    }
}

impl Lab {
    /// Builds the LAN lab with a pair of gateways (see the module doc);
    /// nothing is started.
    pub fn create_lan_pair(opts: LabOptions) -> Result<Lab> {
        Lab::create_with(opts, |lab| {
            let b = lab.pair_ns(PairGw::B);
            lab.build_lan_with(&[(b, PairGw::B.port().into(), LAN_GATEWAY_B)])?;
            let sw = lab.switch_ns();
            for g in [PairGw::A, PairGw::B] {
                ip([
                    "-n",
                    &sw,
                    "link",
                    "set",
                    "dev",
                    g.port(),
                    "type",
                    "bridge_slave",
                    "flood",
                    "off",
                ])?;
            }
            Ok(())
        })
    }

    /// The namespace of gateway `g`.
    pub fn pair_ns(&self, g: PairGw) -> String {
        match g {
            PairGw::A => self.gateway_ns(),
            PairGw::B => format!("{}-gb", self.prefix),
        }
    }

    /// The control socket of gateway `g`'s `lb`.
    pub fn pair_socket(&self, g: PairGw) -> std::path::PathBuf {
        match g {
            PairGw::A => self.control_socket(),
            PairGw::B => self.dir().join("lb-b.sock"),
        }
    }

    /// Starts `lb` on gateway `g` with `config` (the LAN config; B gets a
    /// pin path and control socket of its own) and waits (20 s at most)
    /// until its `/healthz` passes.
    pub fn start_pair_lb(&self, g: PairGw, config: &str) -> Result<ChildId> {
        if g == PairGw::A {
            return self.start_lb(config);
        }
        let pin_a = self.bpffs_dir().join("lb");
        let config = config
            .replace(
                &pin_a.display().to_string(),
                &self.bpffs_dir().join("lb-b").display().to_string(),
            )
            .replace(
                &self.control_socket().display().to_string(),
                &self.pair_socket(g).display().to_string(),
            );
        let cfg = self.dir().join("lb-b.toml");
        write_file(&cfg, &config)?;
        let log = self.dir().join("lb-b.log");
        let mut cmd = Command::new(self.lb_bin());
        cmd.arg("run").arg("--config").arg(&cfg);
        let id = self.spawn_in(&self.pair_ns(g), &cmd, Some(&log))?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let mut h = Command::new("ip");
            h.args(["netns", "exec", &self.pair_ns(g)])
                .arg(self.lb_bin())
                .args(["healthz", "--api", LB_API, "--timeout", "1s"]);
            if run_with_timeout(&mut h, Duration::from_secs(5)).is_ok_and(|o| o.status.success()) {
                return Ok(id);
            }
            thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "lb on gateway B not healthy within 20 s; log:\n{}",
            read_log(&log)
        )
    }

    /// Writes gateway `g`'s keepalived configuration and starts it (VRRP
    /// only, in the foreground, pid files of its own).
    pub fn start_pair_keepalived(&self, g: PairGw, advert: Duration) -> Result<ChildId> {
        let mut c = String::new();
        let _ = writeln!(
            c,
            "global_defs {{\n  router_id lb_{}\n  vrrp_version 3\n}}",
            g.name()
        );
        let _ = writeln!(c, "vrrp_instance lb_lan {{");
        let _ = writeln!(c, "  state BACKUP\n  interface gwb\n  virtual_router_id 51");
        let prio = if g == PairGw::A { 150 } else { 100 };
        let _ = writeln!(
            c,
            "  priority {prio}\n  advert_int {}",
            advert.as_secs_f64()
        );
        let _ = writeln!(c, "  unicast_src_ip {}", g.addr());
        let _ = writeln!(c, "  unicast_peer {{\n    {}\n  }}", g.peer().addr());
        let _ = writeln!(
            c,
            "  virtual_ipaddress {{\n    {LAN_VIP}/32 dev gwb\n    {LAN_SNAT}/32 dev gwb\n  }}"
        );
        let _ = writeln!(c, "}}");
        let conf = self.dir().join(format!("keepalived-{}.conf", g.name()));
        write_file(&conf, &c)?;
        self.start_pair_keepalived_with(g, &conf)
    }

    /// Starts keepalived on gateway `g` with the configuration file `conf`
    /// as it is (e.g. one `lb init` generated): VRRP only, in the
    /// foreground, logging to `keepalived-{a,b}.log`, pid files of its own.
    pub fn start_pair_keepalived_with(&self, g: PairGw, conf: &Path) -> Result<ChildId> {
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
        .arg(conf)
        .arg("--pid")
        .arg(d.join(format!("keepalived-{}.pid", g.name())))
        .arg("--vrrp_pid")
        .arg(d.join(format!("keepalived-vrrp-{}.pid", g.name())));
        let log = d.join(format!("keepalived-{}.log", g.name()));
        self.spawn_in(&self.pair_ns(g), &cmd, Some(&log))
    }

    /// Runs the lb CLI (`ARGS... --socket SOCKET`) against the daemon of
    /// `socket`, bounded to 30 s.
    pub fn lb_ctl_at(
        &self,
        socket: &std::path::Path,
        args: &[&str],
    ) -> Result<std::process::Output> {
        let mut cmd = Command::new(self.lb_bin());
        cmd.args(args).arg("--socket").arg(socket);
        run_with_timeout(&mut cmd, Duration::from_secs(30))
    }

    /// Whether gateway `g` holds the VIP and the source-NAT address.
    pub fn pair_holds(&self, g: PairGw) -> Result<(bool, bool)> {
        let out = ns_exec(
            &self.pair_ns(g),
            ["ip", "-4", "-o", "addr", "show", "dev", "gwb"],
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok((
            text.contains(&format!("inet {LAN_VIP}/")),
            text.contains(&format!("inet {LAN_SNAT}/")),
        ))
    }

    /// Waits until `g` holds both floating addresses and its peer none.
    pub fn wait_pair_master(&self, g: PairGw, limit: Duration) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let me = self.pair_holds(g)?;
            let peer = self.pair_holds(g.peer()).unwrap_or((true, true));
            if me == (true, true) && peer == (false, false) {
                return Ok(start.elapsed());
            }
            thread::sleep(Duration::from_millis(10));
        }
        bail!("gateway {} not master within {limit:?}", g.name())
    }

    /// Crashes gateway A at `crash` (the caller's clock, so streams can be
    /// timed from it), waits up to 10 s for B to be master, and probes new
    /// connections from the client to `vip` every 50 ms for up to 15 s
    /// ("none" is no node's name: only failures count). Returns how long B
    /// took and the probes' outcome.
    pub fn takeover_by_b(&self, vip: SocketAddr, crash: Instant) -> Result<(Duration, Failover)> {
        self.crash_pair_gateway(PairGw::A)?;
        let moved = self.wait_pair_master(PairGw::B, Duration::from_secs(10))?;
        let f = measure_failover(
            self,
            &self.client_ns(),
            vip,
            "none",
            crash,
            Duration::from_secs(1),
            Duration::from_secs(15),
        )?;
        Ok((moved, f))
    }

    /// A crash of gateway `g`: its switch port goes down, then every
    /// process in its namespace (lb, keepalived) gets SIGKILL.
    pub fn crash_pair_gateway(&self, g: PairGw) -> Result<()> {
        ip([
            "-n",
            &self.switch_ns(),
            "link",
            "set",
            "dev",
            g.port(),
            "down",
        ])?;
        if g == PairGw::A {
            let _ = self.clear_lb();
        }
        let out = Command::new("ip")
            .args(["netns", "pids", &self.pair_ns(g)])
            .output()?;
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<libc::pid_t>() {
                // SAFETY: plain kill(2) on a process inside the lab's namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        Ok(())
    }
}
