//! The two-sided "cloud" shape: the routed lab (client side `gwc`, node
//! side `gwb`), except that the nodes' default route goes to a separate
//! router on their LAN, as a cloud VM's goes to the provider's router, not
//! to the load balancer VM. The gateway owns a source-NAT address on the
//! node side.
//!
//! ```text
//!  {p}-cl eth0 198.18.1.2 ── gwc 198.18.1.1  {p}-gw  gwb 198.18.2.1 (+ SNAT 198.18.2.101) ── br0
//!                                                                 {p}-rt eth0 198.18.2.254 ──┤
//!                                      {p}-bN eth0 198.18.2.1N, default via 198.18.2.254 ──┘
//! ```
//!
//! In DNAT mode a node's reply to the client leaves through the router and
//! never reaches the client as the VIP; in full-NAT mode it goes to the
//! source-NAT address on the LAN.

use std::net::Ipv4Addr;

use anyhow::Result;

use super::{ip, ns_exec, Lab, LabOptions};
use crate::lb::HealthSettings;

/// The source-NAT address on the node side.
pub const CLOUD_SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 101);
/// The nodes' router.
pub const CLOUD_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);

impl Lab {
    /// Builds the cloud lab (see the module doc); nothing is started.
    pub fn create_cloud(opts: LabOptions) -> Result<Lab> {
        Lab::create_with(opts, |lab| {
            lab.build()?;
            let rt = lab.router_ns();
            let sw = lab.switch_ns();
            lab.add_ns(&rt)?;
            ip(["-n", &rt, "link", "set", "dev", "lo", "up"])?;
            ip([
                "-n", &sw, "link", "add", "name", "r", "type", "veth", "peer", "name", "eth0",
                "netns", &rt,
            ])?;
            ip(["-n", &sw, "link", "set", "dev", "r", "master", "br0"])?;
            ip(["-n", &sw, "link", "set", "dev", "r", "up"])?;
            ip(["-n", &rt, "link", "set", "dev", "eth0", "up"])?;
            ip([
                "-n",
                &rt,
                "addr",
                "add",
                &format!("{CLOUD_ROUTER}/24"),
                "dev",
                "eth0",
            ])?;
            ns_exec(&rt, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            let via = CLOUD_ROUTER.to_string();
            for i in 1..=lab.backends {
                let b = lab.backend_ns(i);
                ip(["-n", &b, "route", "replace", "default", "via", &via])?;
            }
            let gw = lab.gateway_ns();
            ip([
                "-n",
                &gw,
                "addr",
                "add",
                &format!("{CLOUD_SNAT}/32"),
                "dev",
                "gwb",
            ])?;
            Ok(())
        })
    }

    /// The routed lab's config (both interfaces, the VIP's two listeners)
    /// with every listener in `mode` and [`CLOUD_SNAT`] as source-NAT address.
    pub fn cloud_config_toml(&self, h: HealthSettings, mode: &str) -> String {
        self.config_toml_with(h).replacen(
            "[dataplane]\n",
            &format!("[dataplane]\nmode = \"{mode}\"\nsnat_ipv4 = [\"{CLOUD_SNAT}\"]\n"),
            1,
        )
    }
}
