//! The six gateways compared, each set up in the lab's gateway namespace
//! and removed again: direct routing (the kernel's ceiling), `xdp-fwd` (the
//! XDP ceiling: a trivial forwarder on the same route), `lb` (XDP, native
//! mode) with DNAT listeners and again with full-NAT listeners (see
//! [`super::fullnat`]), nftables DNAT with conntrack, and HAProxy in
//! `mode tcp`.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use aya::programs::{Xdp, XdpMode};
use lb::dataplane::{loader::ifindex, Dataplane};

use super::micro::FWD_PROGRAM;
use super::servers::{wait_for, wait_listening, BULK_PORT, HTTP_PORT};
use crate::lab::{
    ip, ns_exec, read_log, run_in_netns, write_file, ChildId, Lab, GATEWAY_INTERFACES,
};
use crate::lb::HealthSettings;

/// One way of getting the client's traffic to the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gateway {
    /// Routed, no NAT: the VIP is on every backend's loopback and the
    /// gateway has an ECMP route for it over the three backends (L4 hash).
    Direct,
    /// The same route as [`Gateway::Direct`], forwarded by `xdp_fwd` (FIB
    /// lookup, MACs, TTL, redirect; no NAT, no conntrack) attached in
    /// native mode to both veths: what any XDP program pays on this lab.
    #[serde(rename = "xdp-fwd")]
    XdpFwd,
    /// This project: `lb run`, XDP in native mode on both veths.
    Xdp,
    /// The same `lb` with its listeners in `mode = "fullnat"` (issue 18):
    /// the backends see a source-NAT address of the gateway.
    #[serde(rename = "lb-fullnat")]
    Fullnat,
    /// nftables DNAT (`numgen random mod 3`) with conntrack.
    Nftables,
    /// HAProxy `mode tcp`, `nbthread 2`, health checks; the VIP is local.
    Haproxy,
}

impl Gateway {
    /// Every gateway, in the order each round runs them.
    pub const ALL: [Gateway; 6] = [
        Gateway::Direct,
        Gateway::XdpFwd,
        Gateway::Xdp,
        Gateway::Fullnat,
        Gateway::Nftables,
        Gateway::Haproxy,
    ];

    /// Short key used in JSON and file names.
    pub fn key(self) -> &'static str {
        match self {
            Gateway::Direct => "direct",
            Gateway::XdpFwd => "xdp-fwd",
            Gateway::Xdp => "xdp",
            Gateway::Fullnat => "lb-fullnat",
            Gateway::Nftables => "nftables",
            Gateway::Haproxy => "haproxy",
        }
    }

    /// Name shown in tables and charts.
    pub fn label(self) -> &'static str {
        match self {
            Gateway::Direct => "direct routing (no NAT)",
            Gateway::XdpFwd => "xdp-fwd (trivial XDP forwarder)",
            Gateway::Xdp => "lb (XDP, native)",
            Gateway::Fullnat => "lb full-NAT (XDP, native)",
            Gateway::Nftables => "nftables DNAT",
            Gateway::Haproxy => "HAProxy mode tcp",
        }
    }

    /// Short name used in target and comparison names.
    pub fn short(self) -> &'static str {
        match self {
            Gateway::Direct => "direct routing",
            Gateway::XdpFwd => "xdp-fwd",
            Gateway::Xdp => "lb",
            Gateway::Fullnat => "lb full-NAT",
            Gateway::Nftables => "nftables DNAT",
            Gateway::Haproxy => "HAProxy",
        }
    }

    /// The gateway whose JSON/file key is `key`.
    pub fn from_key(key: &str) -> Option<Gateway> {
        Gateway::ALL.into_iter().find(|g| g.key() == key)
    }

    /// Whether an XDP program of the benchmark is attached to the
    /// gateway's veths (so bpf_stats can time it).
    pub fn runs_xdp(self) -> bool {
        matches!(self, Gateway::Xdp | Gateway::Fullnat | Gateway::XdpFwd)
    }

    /// Whether this gateway is `lb run`.
    pub fn runs_lb(self) -> bool {
        matches!(self, Gateway::Xdp | Gateway::Fullnat)
    }

    /// Whether the client reaches the backends over the routed VIP (on
    /// their loopbacks), without translation.
    fn routed(self) -> bool {
        matches!(self, Gateway::Direct | Gateway::XdpFwd)
    }
}

/// Name of the nftables table the benchmark owns in the gateway namespace.
pub const NFT_TABLE: &str = "lbbench";
/// Health-check interval of HAProxy and `lb` during the throughput runs.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A listener of a generated `lb` config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Listener name.
    pub name: String,
    /// VIP port (also the backends' port).
    pub port: u16,
    /// Backend names; `None`: every backend.
    pub backends: Option<Vec<String>>,
}

/// Builds an `lb` config from `base` (what [`Lab::config_toml_with`]
/// renders, so whatever the lab sets per lab, such as paths, is kept): the
/// part before the first `[[listener]]`, with `xdp_mode` pinned to
/// `native`, followed by `listeners` on `vip`.
pub fn lb_config(base: &str, vip: &str, listeners: &[ListenerSpec]) -> Result<String> {
    let head = base.split("[[listener]]").next().unwrap_or("");
    let mut native = false;
    let mut s = String::new();
    for line in head.lines() {
        if line.trim_start().starts_with("xdp_mode") {
            s.push_str("xdp_mode = \"native\"\n");
            native = true;
        } else {
            s.push_str(line);
            s.push('\n');
        }
    }
    if !native {
        bail!("the lab's config has no xdp_mode line to pin to native:\n{base}");
    }
    for l in listeners {
        let _ = writeln!(s, "\n[[listener]]");
        let _ = writeln!(s, "name = \"{}\"", l.name);
        let _ = writeln!(s, "vip = \"{vip}\"");
        let _ = writeln!(s, "port = {}", l.port);
        if let Some(b) = &l.backends {
            let names: Vec<String> = b.iter().map(|n| format!("\"{n}\"")).collect();
            let _ = writeln!(s, "backends = [{}]", names.join(", "));
        }
    }
    Ok(s)
}

/// The nftables ruleset of the DNAT gateway.
pub fn nft_ruleset(vip: &str, backends: &[String]) -> String {
    let map: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {b}"))
        .collect();
    format!(
        "table ip {NFT_TABLE} {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr {vip} tcp dport {HTTP_PORT} dnat to numgen random mod {n} map {{ {map} }}
        ip daddr {vip} tcp dport {BULK_PORT} dnat to {first}
    }}
}}
",
        n = backends.len(),
        map = map.join(", "),
        first = backends.first().map(String::as_str).unwrap_or("0.0.0.0"),
    )
}

/// The HAProxy configuration: `mode tcp`, two threads, round robin with
/// TCP health checks every [`CHECK_INTERVAL`].
pub fn haproxy_config(vip: &str, backends: &[(String, String)]) -> String {
    let inter = CHECK_INTERVAL.as_millis();
    let mut s = format!(
        "# Written by lb-bench.
global
    nbthread 2
    maxconn 8000

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend http
    bind {vip}:{HTTP_PORT}
    default_backend nodes

backend nodes
    balance roundrobin
"
    );
    for (name, addr) in backends {
        let _ = writeln!(
            s,
            "    server {name} {addr}:{HTTP_PORT} check inter {inter}ms"
        );
    }
    let _ = write!(
        s,
        "
frontend bulk
    bind {vip}:{BULK_PORT}
    default_backend bulk

backend bulk
"
    );
    if let Some((name, addr)) = backends.first() {
        let _ = writeln!(
            s,
            "    server {name} {addr}:{BULK_PORT} check inter {inter}ms"
        );
    }
    s
}

/// A gateway set up in the lab; [`Active::teardown`] (or dropping it)
/// removes everything it added.
pub struct Active<'a> {
    lab: &'a Lab,
    gateway: Gateway,
    haproxy: Option<ChildId>,
    /// The object holding `xdp_fwd`'s links: dropping it detaches them.
    forwarder: Option<Dataplane>,
    torn_down: bool,
}

impl std::fmt::Debug for Active<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active")
            .field("gateway", &self.gateway)
            .finish_non_exhaustive()
    }
}

impl<'a> Active<'a> {
    /// Sets `gateway` up in `lab` and waits until it forwards.
    pub fn bring_up(lab: &'a Lab, gateway: Gateway) -> Result<Active<'a>> {
        let mut a = Active {
            lab,
            gateway,
            haproxy: None,
            forwarder: None,
            torn_down: false,
        };
        a.setup()
            .with_context(|| format!("setting up {}", gateway.label()))?;
        Ok(a)
    }

    /// Which gateway this is.
    pub fn gateway(&self) -> Gateway {
        self.gateway
    }

    /// The URL wrk loads.
    pub fn http_url(&self) -> String {
        format!("http://{}:{HTTP_PORT}/", self.lab.vip())
    }

    /// Where iperf3 connects: the VIP, except on the routed gateways
    /// (direct, xdp-fwd), where backend 1 is addressed directly (ECMP could
    /// split iperf3's control and data connections over two backends).
    pub fn bulk_target(&self) -> (String, u16) {
        let addr = if self.gateway.routed() {
            self.lab.backend_addr(1)
        } else {
            self.lab.vip()
        };
        (addr.to_string(), BULK_PORT)
    }

    fn gw(&self) -> String {
        self.lab.gateway_ns()
    }

    fn backend_addrs(&self) -> Vec<String> {
        (1..=self.lab.backends())
            .map(|i| self.lab.backend_addr(i).to_string())
            .collect()
    }

    fn setup(&mut self) -> Result<()> {
        let vip = self.lab.vip().to_string();
        match self.gateway {
            Gateway::Direct => self.route_vip()?,
            Gateway::XdpFwd => {
                self.route_vip()?;
                self.forwarder = Some(attach_forwarder(self.lab)?);
            }
            Gateway::Xdp | Gateway::Fullnat => {
                let base = self.lab.config_toml_with(HealthSettings {
                    interval: CHECK_INTERVAL,
                    timeout: Duration::from_millis(500),
                    healthy_threshold: 2,
                    unhealthy_threshold: 2,
                });
                let listeners = [
                    ListenerSpec {
                        name: "http".into(),
                        port: HTTP_PORT,
                        backends: None,
                    },
                    ListenerSpec {
                        name: "bulk".into(),
                        port: BULK_PORT,
                        backends: Some(vec![self.lab.backend_name(1)]),
                    },
                ];
                let mut config = lb_config(&base, &vip, &listeners)?;
                if self.gateway == Gateway::Fullnat {
                    super::fullnat::prepare(self.lab)?;
                    config = super::fullnat::fullnat_config(&config)?;
                }
                self.lab.start_lb(&config)?;
                wait_lb_backends_up(self.lab, Duration::from_secs(15))?;
            }
            Gateway::Nftables => {
                let file = self.lab.dir().join("nftables.conf");
                write_file(&file, &nft_ruleset(&vip, &self.backend_addrs()))?;
                ns_exec(&self.gw(), ["nft", "-f", &file.display().to_string()])?;
            }
            Gateway::Haproxy => {
                vip_on_lo(&self.gw(), "add", &format!("{vip}/32"))?;
                let backends: Vec<(String, String)> = (1..=self.lab.backends())
                    .map(|i| {
                        (
                            self.lab.backend_name(i),
                            self.lab.backend_addr(i).to_string(),
                        )
                    })
                    .collect();
                let file = self.lab.dir().join("haproxy.cfg");
                write_file(&file, &haproxy_config(&vip, &backends))?;
                let log = self.lab.dir().join("haproxy.log");
                let mut cmd = Command::new("haproxy");
                cmd.arg("-f").arg(&file).arg("-db");
                let id = self.lab.spawn_in(&self.gw(), &cmd, Some(&log))?;
                self.haproxy = Some(id);
                let vip_http = std::net::SocketAddrV4::new(self.lab.vip(), HTTP_PORT);
                wait_listening(
                    self.lab,
                    &self.lab.client_ns(),
                    vip_http,
                    Duration::from_secs(5),
                )
                .with_context(|| format!("haproxy log:\n{}", read_log(&log)))?;
            }
        }
        Ok(())
    }

    /// The routed VIP of direct routing (and xdp-fwd): the VIP on every
    /// backend's loopback and an ECMP route over the backends with the L4
    /// hash.
    fn route_vip(&self) -> Result<()> {
        let vip = self.lab.vip().to_string();
        for i in 1..=self.lab.backends() {
            vip_on_lo(&self.lab.backend_ns(i), "add", &format!("{vip}/32"))?;
        }
        ns_exec(
            &self.gw(),
            ["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"],
        )?;
        let mut args = vec![
            "-n".to_string(),
            self.gw(),
            "route".into(),
            "add".into(),
            format!("{vip}/32"),
        ];
        for b in self.backend_addrs() {
            args.extend([
                "nexthop".into(),
                "via".into(),
                b,
                "dev".into(),
                "gwb".into(),
            ]);
        }
        ip(args)?;
        Ok(())
    }

    /// Removes what [`Active::bring_up`] added.
    pub fn teardown(mut self) -> Result<()> {
        self.torn_down = true;
        self.remove()
    }

    fn remove(&mut self) -> Result<()> {
        let vip = format!("{}/32", self.lab.vip());
        let mut errors = Vec::new();
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                errors.push(format!("{e:#}"));
            }
        };
        // Detach xdp_fwd (its links close with the object) before the
        // route goes.
        drop(self.forwarder.take());
        if self.gateway.routed() {
            note(ip(["-n", &self.gw(), "route", "del", &vip]));
            for i in 1..=self.lab.backends() {
                note(vip_on_lo(&self.lab.backend_ns(i), "del", &vip));
            }
            note(
                ns_exec(
                    &self.gw(),
                    ["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=0"],
                )
                .map(|_| ()),
            );
        }
        match self.gateway {
            Gateway::Direct | Gateway::XdpFwd => {}
            Gateway::Xdp | Gateway::Fullnat => {
                let log = self.lab.lb_state().map(|(_, log)| log);
                note(self.lab.stop_lb().and_then(|st| {
                    if st.success() {
                        Ok(())
                    } else {
                        let text = log.as_deref().map(read_log).unwrap_or_default();
                        Err(anyhow!("lb exited with {st}; log:\n{}", tail(&text, 30)))
                    }
                }));
                if self.gateway == Gateway::Fullnat {
                    note(super::fullnat::restore(self.lab));
                }
            }
            Gateway::Nftables => {
                note(ns_exec(&self.gw(), ["nft", "delete", "table", "ip", NFT_TABLE]).map(|_| ()))
            }
            Gateway::Haproxy => {
                if let Some(id) = self.haproxy.take() {
                    note(self.lab.stop_child(id, Duration::from_secs(5)).map(|_| ()));
                }
                note(ip(["-n", &self.gw(), "addr", "del", &vip, "dev", "lo"]));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("removing {}: {}", self.gateway.label(), errors.join("; "))
        }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if !self.torn_down {
            if let Err(e) = self.remove() {
                eprintln!("lb-bench: {e:#}");
            }
        }
    }
}

/// Loads the XDP object in the gateway's namespace and attaches `xdp_fwd`
/// in native mode to both gateway veths, with redirects allowed between
/// them. The links live as long as the returned object.
fn attach_forwarder(lab: &Lab) -> Result<Dataplane> {
    run_in_netns(&lab.gateway_ns(), || -> Result<Dataplane> {
        // Conntrack maps are unused by xdp_fwd: keep them small.
        let mut dp = Dataplane::load(1024)?;
        for iface in GATEWAY_INTERFACES {
            dp.allow_redirect(ifindex(iface)?)?;
        }
        let prog: &mut Xdp = dp
            .ebpf
            .program_mut(FWD_PROGRAM)
            .with_context(|| format!("{FWD_PROGRAM} missing from the XDP object (rebuild it)"))?
            .try_into()?;
        prog.load().context("loading xdp_fwd")?;
        for iface in GATEWAY_INTERFACES {
            prog.attach(iface, XdpMode::Driver)
                .with_context(|| format!("attaching xdp_fwd to {iface} (native)"))?;
        }
        Ok(dp)
    })?
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits until `lb status` shows every backend of every listener up (each
/// listener may have its own backend set).
pub fn wait_lb_backends_up(lab: &Lab, limit: Duration) -> Result<()> {
    let mut last = String::new();
    wait_for(limit, || {
        let st = lab.lb_status()?;
        last = st.to_string();
        Ok(all_listener_backends_up(&st))
    })
    .with_context(|| format!("lb backends not all up; last status: {last}"))
}

/// Whether a `lb status --json` document has listeners and every backend
/// of each is `"up"`.
pub fn all_listener_backends_up(status: &Value) -> bool {
    let Some(listeners) = status.get("listeners").and_then(Value::as_array) else {
        return false;
    };
    !listeners.is_empty()
        && listeners.iter().all(|l| {
            l.get("backends")
                .and_then(Value::as_array)
                .is_some_and(|bs| {
                    !bs.is_empty()
                        && bs
                            .iter()
                            .all(|b| b.get("health").and_then(Value::as_str) == Some("up"))
                })
        })
}

/// `ip -n NS addr add|del ADDR dev lo`: a VIP held locally (HAProxy's
/// listener, or a direct-routing backend).
fn vip_on_lo(ns: &str, op: &str, addr: &str) -> Result<()> {
    ip(["-n", ns, "addr", op, addr, "dev", "lo"])
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "# Generated by lb-tests for lab x.
[dataplane]
interfaces = [\"gwc\", \"gwb\"]
xdp_mode = \"auto\"

[api]
listen = \"127.0.0.1:9542\"

[health]
interval = \"1000ms\"
timeout = \"500ms\"
healthy_threshold = 2
unhealthy_threshold = 2

[[backend]]
name = \"cp-01\"
address = \"198.18.2.11\"

[[backend]]
name = \"cp-02\"
address = \"198.18.2.12\"

[[listener]]
name = \"kubernetes-api\"
vip = \"198.18.100.10\"
port = 6443
";

    #[test]
    fn lb_config_replaces_listeners_and_pins_native_mode() {
        let c = lb_config(
            BASE,
            "198.18.100.10",
            &[
                ListenerSpec {
                    name: "http".into(),
                    port: 80,
                    backends: None,
                },
                ListenerSpec {
                    name: "bulk".into(),
                    port: 5201,
                    backends: Some(vec!["cp-01".into()]),
                },
            ],
        )
        .unwrap();
        assert!(!c.contains("6443"), "{c}");
        assert!(!c.contains("auto"), "{c}");
        // The daemon's own validation accepts it and sees what we meant.
        let cfg = lb::config::Config::from_toml_str(&c).unwrap();
        assert_eq!(cfg.dataplane.xdp_mode, lb::config::XdpMode::Native);
        let ports: Vec<u16> = cfg.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [80, 5201]);
        assert_eq!(cfg.listeners[0].backends, [0, 1]);
        assert_eq!(cfg.listeners[1].backends, [0]);
        assert_eq!(cfg.backends.len(), 2);
    }

    #[test]
    fn gateway_keys_match_their_json_names() {
        for g in Gateway::ALL {
            let json = serde_json::to_value(g).unwrap();
            assert_eq!(json, g.key(), "{g:?}");
            assert_eq!(Gateway::from_key(g.key()), Some(g));
            assert_eq!(serde_json::from_value::<Gateway>(json).unwrap(), g);
        }
        assert_eq!(Gateway::from_key("ipvs"), None);
        // The two routed gateways share the VIP route; only XDP ones carry
        // a program for bpf_stats.
        let routed: Vec<Gateway> = Gateway::ALL.into_iter().filter(|g| g.routed()).collect();
        assert_eq!(routed, [Gateway::Direct, Gateway::XdpFwd]);
        let xdp: Vec<Gateway> = Gateway::ALL.into_iter().filter(|g| g.runs_xdp()).collect();
        assert_eq!(xdp, [Gateway::XdpFwd, Gateway::Xdp, Gateway::Fullnat]);
    }

    #[test]
    fn lb_config_needs_an_xdp_mode_line() {
        let base = BASE.replace("xdp_mode = \"auto\"\n", "");
        assert!(lb_config(&base, "198.18.100.10", &[]).is_err());
    }

    #[test]
    fn nft_ruleset_spreads_http_and_pins_bulk() {
        let r = nft_ruleset(
            "198.18.100.10",
            &[
                "198.18.2.11".into(),
                "198.18.2.12".into(),
                "198.18.2.13".into(),
            ],
        );
        assert!(r.contains("table ip lbbench {"));
        assert!(r.contains("type nat hook prerouting priority dstnat; policy accept;"));
        assert!(r.contains(
            "ip daddr 198.18.100.10 tcp dport 80 dnat to numgen random mod 3 map \
             { 0 : 198.18.2.11, 1 : 198.18.2.12, 2 : 198.18.2.13 }"
        ));
        assert!(r.contains("ip daddr 198.18.100.10 tcp dport 5201 dnat to 198.18.2.11"));
        assert_eq!(r.matches('{').count(), r.matches('}').count());
    }

    #[test]
    fn haproxy_config_checks_every_server() {
        let c = haproxy_config(
            "198.18.100.10",
            &[
                ("cp-01".into(), "198.18.2.11".into()),
                ("cp-02".into(), "198.18.2.12".into()),
            ],
        );
        assert!(c.contains("nbthread 2"));
        assert!(c.contains("mode tcp"));
        assert!(c.contains("bind 198.18.100.10:80"));
        assert!(c.contains("server cp-01 198.18.2.11:80 check inter 1000ms"));
        assert!(c.contains("server cp-02 198.18.2.12:80 check inter 1000ms"));
        assert!(c.contains("bind 198.18.100.10:5201"));
        assert!(c.contains("server cp-01 198.18.2.11:5201 check"));
        assert!(!c.contains("server cp-02 198.18.2.12:5201"));
    }

    #[test]
    fn lb_status_all_up_needs_every_backend_of_every_listener() {
        let up = serde_json::json!({"listeners": [
            {"name": "http", "backends": [{"health": "up"}, {"health": "up"}]},
            {"name": "bulk", "backends": [{"health": "up"}]}]});
        assert!(all_listener_backends_up(&up));
        let one_down = serde_json::json!({"listeners": [
            {"name": "http", "backends": [{"health": "up"}, {"health": "down"}]}]});
        assert!(!all_listener_backends_up(&one_down));
        assert!(!all_listener_backends_up(
            &serde_json::json!({"listeners": []})
        ));
        assert!(!all_listener_backends_up(
            &serde_json::json!({"ready": true})
        ));
    }
}
