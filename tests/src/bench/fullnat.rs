//! The full-NAT gateway of the benchmark (issue 18): the same `lb` as the
//! DNAT turn, with `[dataplane] mode = "fullnat"` so both listeners
//! translate the source too, to [`SNAT_ADDR`], an address the gateway owns
//! on the backends' link (as keepalived would give it). The backends then
//! answer that address instead of the client.
//!
//! The lab's gateway namespace normally lets its own sockets use ports
//! 1024–65535 (see `tune_load_generator`, for HAProxy's sake); `lb`
//! refuses a source-NAT range that overlaps the gateway's own ephemeral
//! ports, so for this turn the namespace gets the kernel's default range
//! back and `lb` the default `snat_ports` below it: what a user gets
//! without tuning. [`restore`] puts the lab back as it was.

use anyhow::{bail, Result};

use crate::lab::{ip, ns_exec, Lab};

/// The source-NAT address: on the backends' /24, owned by the gateway.
pub const SNAT_ADDR: &str = "198.18.2.200";
/// The gateway's own ephemeral ports during the full-NAT turn (the
/// kernel's default).
pub const TURN_PORT_RANGE: &str = "32768 60999";
/// `lb`'s source-NAT ports (its default, below [`TURN_PORT_RANGE`]).
pub const SNAT_PORTS: &str = "1024-32767";
/// The gateway's ephemeral ports outside the full-NAT turn (what the
/// benchmark sets for every gateway).
pub const LAB_PORT_RANGE: &str = "1024 65535";

/// Gives the gateway the source-NAT address and the port range of the
/// turn.
pub fn prepare(lab: &Lab) -> Result<()> {
    let gw = lab.gateway_ns();
    ip([
        "-n",
        &gw,
        "addr",
        "add",
        &format!("{SNAT_ADDR}/32"),
        "dev",
        "gwb",
    ])?;
    let range = format!("net.ipv4.ip_local_port_range={TURN_PORT_RANGE}");
    ns_exec(&gw, ["sysctl", "-qw", range.as_str()])?;
    // Packets the data path hands to the kernel (to resolve a neighbour)
    // carry the gateway's own source-NAT address as source.
    ns_exec(&gw, ["sysctl", "-qw", "net.ipv4.conf.all.accept_local=1"])?;
    Ok(())
}

/// Undoes [`prepare`].
pub fn restore(lab: &Lab) -> Result<()> {
    let gw = lab.gateway_ns();
    let range = format!("net.ipv4.ip_local_port_range={LAB_PORT_RANGE}");
    ns_exec(&gw, ["sysctl", "-qw", range.as_str()])?;
    ns_exec(&gw, ["sysctl", "-qw", "net.ipv4.conf.all.accept_local=0"])?;
    ip([
        "-n",
        &gw,
        "addr",
        "del",
        &format!("{SNAT_ADDR}/32"),
        "dev",
        "gwb",
    ])?;
    Ok(())
}

/// `config` (a [`super::gateways::lb_config`] output) with every listener
/// in full-NAT mode: `mode`, `snat_ipv4` and `snat_ports` added to its
/// `[dataplane]` table.
pub fn fullnat_config(config: &str) -> Result<String> {
    let mut out = String::new();
    let mut done = false;
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == "[dataplane]" && !done {
            out.push_str("mode = \"fullnat\"\n");
            out.push_str(&format!("snat_ipv4 = [\"{SNAT_ADDR}\"]\n"));
            out.push_str(&format!("snat_ports = \"{SNAT_PORTS}\"\n"));
            done = true;
        }
    }
    if !done {
        bail!("the lab's config has no [dataplane] table:\n{config}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fullnat_config_puts_every_listener_in_fullnat_mode() {
        let base = "[dataplane]\ninterfaces = [\"gwc\", \"gwb\"]\nxdp_mode = \"native\"\n\n\
                    [[backend]]\nname = \"cp-01\"\naddress = \"198.18.2.11\"\n\n\
                    [[listener]]\nname = \"http\"\nvip = \"198.18.100.10\"\nport = 80\n\n\
                    [[listener]]\nname = \"bulk\"\nvip = \"198.18.100.10\"\nport = 5201\n";
        let c = fullnat_config(base).unwrap();
        let cfg = lb::config::Config::from_toml_str(&c).unwrap();
        assert_eq!(cfg.listeners.len(), 2);
        for l in &cfg.listeners {
            assert_eq!(l.mode, lb::config::ListenerMode::Fullnat, "{c}");
        }
        assert!(c.contains("snat_ipv4 = [\"198.18.2.200\"]"), "{c}");
        assert!(fullnat_config("[[listener]]\n").is_err());
        // The source-NAT ports lie below the turn's own ephemeral range.
        let hi: u32 = SNAT_PORTS.split('-').nth(1).unwrap().parse().unwrap();
        let lo: u32 = TURN_PORT_RANGE.split(' ').next().unwrap().parse().unwrap();
        assert!(hi < lo);
    }
}
