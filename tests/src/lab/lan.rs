//! The kubeadm-guide shape: one LAN (bridge `br0`) with a client, a
//! worker, the gateway on one arm, the control-plane nodes and a separate
//! router that is every host's default route. The gateway owns the VIP and
//! the source-NAT address on the LAN, as keepalived would give them.
//!
//! ```text
//!  {p}-sw: bridge br0, LAN 198.18.2.0/24 (fd00:198:18:2::/64 for the nodes)
//!   ├─ gw ── {p}-gw  gwb 198.18.2.1, VIP 198.18.2.100, SNAT 198.18.2.101
//!   ├─ c  ── {p}-cl  eth0 198.18.2.2      default via 198.18.2.254
//!   ├─ w  ── {p}-wk  eth0 198.18.2.21     default via 198.18.2.254
//!   ├─ r  ── {p}-rt  eth0 198.18.2.254    (the nodes' router, not the gateway)
//!   └─ bN ── {p}-bN  eth0 198.18.2.1N     default via 198.18.2.254
//! ```
//!
//! Through the VIP in DNAT mode a node answers an on-link client straight
//! from its own address, and the client resets the connection: that is the
//! failure full-NAT mode fixes without touching the nodes.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use anyhow::Result;

use super::{add_addr6, ip, ns_exec, Lab, LabOptions, KUBE_API_PORT, LB_API, TALOS_API_PORT};
use crate::lb::{config_duration, HealthSettings};

/// The gateway's own address on the LAN.
pub const LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// The VIP, on the LAN (owned by the gateway).
pub const LAN_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 100);
/// The source-NAT address, on the LAN (owned by the gateway).
pub const LAN_SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 101);
/// The client (an admin's machine on the segment).
pub const LAN_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
/// The worker (its kubelet uses the control-plane endpoint).
pub const LAN_WORKER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 21);
/// The router every host's default route points to.
pub const LAN_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
/// The gateway's IPv6 address on the LAN (see [`Lab::add_lan_ipv6`]).
pub const LAN_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 2, 0, 0, 0, 1);
/// The IPv6 VIP, on the LAN (owned by the gateway).
pub const LAN_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 2, 0, 0, 0, 0x100);
/// The IPv6 source-NAT address, on the LAN (owned by the gateway).
pub const LAN_SNAT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 2, 0, 0, 0, 0x101);
/// The client's IPv6 address.
pub const LAN_CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 2, 0, 0, 0, 2);
/// The worker's IPv6 address.
pub const LAN_WORKER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 2, 0, 0, 0, 0x21);

impl Lab {
    /// Builds the LAN lab (see the module doc) with `opts.backends` nodes;
    /// backends are not started. Removed entirely on drop.
    pub fn create_lan(opts: LabOptions) -> Result<Lab> {
        Lab::create_with(opts, Lab::build_lan)
    }

    /// The worker namespace, `{p}-wk`.
    pub fn worker_ns(&self) -> String {
        format!("{}-wk", self.prefix)
    }

    /// The router namespace, `{p}-rt`.
    pub fn router_ns(&self) -> String {
        format!("{}-rt", self.prefix)
    }

    /// `LAN_VIP:port`.
    pub fn lan_vip(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(LAN_VIP, port)
    }

    fn build_lan(&mut self) -> Result<()> {
        self.build_lan_with(&[])?;
        // The one gateway owns the VIP and the source-NAT address (in a
        // pair, keepalived moves them; see `lan_pair`).
        let gw = self.gateway_ns();
        for cidr in [format!("{LAN_VIP}/32"), format!("{LAN_SNAT}/32")] {
            ip(["-n", &gw, "addr", "add", &cidr, "dev", "gwb"])?;
        }
        Ok(())
    }

    /// The LAN with gateway `{p}-gw` at [`LAN_GATEWAY`] and one more
    /// gateway per `(namespace, switch port, address)` of `more`.
    pub(super) fn build_lan_with(&mut self, more: &[(String, String, Ipv4Addr)]) -> Result<()> {
        let cl = self.client_ns();
        let gw = self.gateway_ns();
        let sw = self.switch_ns();
        let wk = self.worker_ns();
        let rt = self.router_ns();
        for ns in [&gw, &sw, &wk, &rt] {
            self.add_ns(ns)?;
        }
        for (ns, _, _) in more {
            self.add_ns(ns)?;
        }
        for i in 1..=self.backends {
            self.add_ns(&self.backend_ns(i))?;
        }
        for ns in &self.namespaces {
            ip(["-n", ns, "link", "set", "dev", "lo", "up"])?;
            for key in [
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ] {
                ns_exec(ns, ["sysctl", "-qw", key])?;
            }
        }
        ip(["-n", &sw, "link", "add", "name", "br0", "type", "bridge"])?;
        ip(["-n", &sw, "link", "set", "dev", "br0", "up"])?;
        // One port per host: (switch port, host namespace, host interface).
        let mut ports = vec![
            ("gw".to_string(), gw.clone(), "gwb"),
            ("c".to_string(), cl.clone(), "eth0"),
            ("w".to_string(), wk.clone(), "eth0"),
            ("r".to_string(), rt.clone(), "eth0"),
        ];
        for i in 1..=self.backends {
            ports.push((format!("b{i}"), self.backend_ns(i), "eth0"));
        }
        for (ns, port, _) in more {
            ports.push((port.clone(), ns.clone(), "gwb"));
        }
        for (port, ns, dev) in &ports {
            ip([
                "-n", &sw, "link", "add", "name", port, "type", "veth", "peer", "name", dev,
                "netns", ns,
            ])?;
            ip(["-n", &sw, "link", "set", "dev", port, "master", "br0"])?;
            ip(["-n", &sw, "link", "set", "dev", port, "up"])?;
            ip(["-n", ns, "link", "set", "dev", dev, "up"])?;
        }

        // The gateways: one arm each, on the LAN, routing via the router.
        let mut gateways = vec![(gw.clone(), "gw".to_string(), LAN_GATEWAY)];
        gateways.extend(more.iter().cloned());
        for (ns, port, addr) in &gateways {
            ip(["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", "gwb"])?;
            ns_exec(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            // Replies the data path hands to the kernel to resolve a
            // neighbour carry the VIP, a local address, as source: without
            // accept_local the kernel drops them (see docs/fullnat.md).
            ns_exec(ns, ["sysctl", "-qw", "net.ipv4.conf.all.accept_local=1"])?;
            ip([
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &LAN_ROUTER.to_string(),
            ])?;
            // Frames XDP_TXes out of gwb reach its peer only with GRO there.
            ns_exec(&sw, ["ethtool", "-K", port, "gro", "on"])?;
            ns_exec(ns, ["ethtool", "-K", "gwb", "gro", "on"])?;
        }

        // The router: on the LAN, forwarding, nothing else.
        ip([
            "-n",
            &rt,
            "addr",
            "add",
            &format!("{LAN_ROUTER}/24"),
            "dev",
            "eth0",
        ])?;
        ns_exec(&rt, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;

        // Hosts whose default route is the router, not the gateway.
        let mut hosts = vec![(cl.clone(), LAN_CLIENT), (wk.clone(), LAN_WORKER)];
        for i in 1..=self.backends {
            hosts.push((self.backend_ns(i), self.backend_addr(i)));
        }
        for (ns, addr) in &hosts {
            ip([
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip([
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &LAN_ROUTER.to_string(),
            ])?;
            // XDP rewrites what they send: complete checksums (see lab.rs).
            ns_exec(ns, ["ethtool", "-K", "eth0", "tx", "off"])?;
        }
        // cp-sim also listens on the node's IPv6 address.
        for i in 1..=self.backends {
            let a = self.backend_addr6(i);
            add_addr6(&self.backend_ns(i), a, "eth0")?;
        }
        Ok(())
    }

    /// `[LAN_VIP6]:port`.
    pub fn lan_vip6(&self, port: u16) -> SocketAddrV6 {
        SocketAddrV6::new(LAN_VIP6, port, 0, 0)
    }

    /// IPv6 on the LAN beyond the nodes' own addresses (which
    /// [`Lab::create_lan`] always sets): the gateway's ([`LAN_GATEWAY6`],
    /// with the VIP [`LAN_VIP6`] and the source-NAT address [`LAN_SNAT6`]),
    /// the client's and the worker's. Everything is on-link: no IPv6
    /// route goes through the gateway.
    pub fn add_lan_ipv6(&self) -> Result<()> {
        let gw = self.gateway_ns();
        add_addr6(&gw, LAN_GATEWAY6, "gwb")?;
        for a in [LAN_VIP6, LAN_SNAT6] {
            ip([
                "-n",
                &gw,
                "-6",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "gwb",
                "nodad",
            ])?;
        }
        ns_exec(&gw, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        add_addr6(&self.client_ns(), LAN_CLIENT6, "eth0")?;
        add_addr6(&self.worker_ns(), LAN_WORKER6, "eth0")?;
        Ok(())
    }

    /// An IPv6-only `lb` config for the LAN lab (after
    /// [`Lab::add_lan_ipv6`]): as [`Lab::lan_config_toml`] in full-NAT mode,
    /// with the nodes' IPv6 addresses as backends, both listeners on
    /// [`LAN_VIP6`] and [`LAN_SNAT6`] as the source-NAT address.
    pub fn lan_config_toml_v6(&self, h: HealthSettings) -> String {
        let v4 = self.lan_config_toml(h, "fullnat");
        let head = v4.split("\n[[backend]]").next().unwrap_or_default();
        let mut s = head.replace(
            &format!("snat_ipv4 = [\"{LAN_SNAT}\"]"),
            &format!("snat_ipv6 = [\"{LAN_SNAT6}\"]"),
        );
        for i in 1..=self.backends() {
            let _ = writeln!(s, "\n[[backend]]");
            let _ = writeln!(s, "name = \"{}\"", self.backend_name(i));
            let _ = writeln!(s, "address = \"{}\"", self.backend_addr6(i));
        }
        for (name, port) in [
            ("kubernetes-api", KUBE_API_PORT),
            ("talos-api", TALOS_API_PORT),
        ] {
            let _ = writeln!(s, "\n[[listener]]");
            let _ = writeln!(s, "name = \"{name}\"");
            let _ = writeln!(s, "vip = \"{LAN_VIP6}\"");
            let _ = writeln!(s, "port = {port}");
            let _ = writeln!(s, "mode = \"fullnat\"");
            let _ = writeln!(s, "deregistration_delay = \"5s\"");
        }
        s
    }

    /// An `lb` config for the LAN lab: the one interface `gwb` (generic XDP),
    /// every node,
    /// `kubernetes-api` (6443) and `talos-api` (50000) on [`LAN_VIP`] in
    /// `mode` (`"dnat"` or `"fullnat"`), source-NAT address [`LAN_SNAT`],
    /// TCP checks with `h`.
    pub fn lan_config_toml(&self, h: HealthSettings, mode: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Generated by lb-tests for LAN lab {}.", self.prefix());
        let _ = writeln!(s, "[dataplane]");
        let _ = writeln!(s, "interfaces = [\"gwb\"]");
        // Native XDP_TX out of a veth whose peer is a bridge port was not
        // delivered to the peer in this lab (kernel 6.18: counted as
        // xdp_tx on gwb, never received on the bridge side, GRO on or
        // off); generic mode transmits the same rewritten frame through
        // the stack. Real NICs run native.
        let _ = writeln!(s, "xdp_mode = \"generic\"");
        let _ = writeln!(
            s,
            "pin_path = \"{}\"",
            self.bpffs_dir().join("lb").display()
        );
        let _ = writeln!(s, "snat_ipv4 = [\"{LAN_SNAT}\"]");
        let _ = writeln!(s, "\n[api]\nlisten = \"{LB_API}\"");
        let _ = writeln!(s, "socket = \"{}\"", self.control_socket().display());
        let _ = writeln!(s, "\n[health]");
        let _ = writeln!(s, "interval = \"{}\"", config_duration(h.interval));
        let _ = writeln!(s, "timeout = \"{}\"", config_duration(h.timeout));
        let _ = writeln!(s, "healthy_threshold = {}", h.healthy_threshold);
        let _ = writeln!(s, "unhealthy_threshold = {}", h.unhealthy_threshold);
        let _ = writeln!(s, "kind = \"tcp\"");
        for i in 1..=self.backends() {
            let _ = writeln!(s, "\n[[backend]]");
            let _ = writeln!(s, "name = \"{}\"", self.backend_name(i));
            let _ = writeln!(s, "address = \"{}\"", self.backend_addr(i));
        }
        for (name, port) in [
            ("kubernetes-api", KUBE_API_PORT),
            ("talos-api", TALOS_API_PORT),
        ] {
            let _ = writeln!(s, "\n[[listener]]");
            let _ = writeln!(s, "name = \"{name}\"");
            let _ = writeln!(s, "vip = \"{LAN_VIP}\"");
            let _ = writeln!(s, "port = {port}");
            let _ = writeln!(s, "mode = \"{mode}\"");
            let _ = writeln!(s, "deregistration_delay = \"5s\"");
        }
        s
    }
}
