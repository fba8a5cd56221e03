//! Full-NAT ("one-arm") settings: a listener's `mode`, and the source-NAT
//! addresses and ports of `[dataplane]` (`mode`, `snat_ipv4`, `snat_ipv6`,
//! `snat_ports`).
//!
//! In `dnat` mode (the default) the gateway rewrites only the destination,
//! so the nodes see the client's address and must route their replies back
//! through the gateway. In `fullnat` mode the source is rewritten too, to a
//! source-NAT address and port the gateway owns: the nodes answer that
//! address, wherever their default route goes, and never see the client's.
//!
//! Validation here is pure (no file I/O); [`check_host`] compares the port
//! range with the gateway's own ephemeral ports, where a configuration is
//! applied (start-up, reload, `lb check`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::raw::RawDataplane;
use super::validate::{label, parse_ip, Checker};
use super::{Backend, Config, Listener, Problem};

/// Most source-NAT addresses per family (the data path's array size).
pub const MAX_SNAT_ADDRS: usize = lb_common::MAX_SNAT_ADDRS;
/// Default `dataplane.snat_ports`: below the kernel's default ephemeral
/// range (32768-60999), so the gateway's own connections never collide
/// with translated flows even on an address the stack also uses.
pub const DEFAULT_SNAT_PORTS: PortRange = PortRange {
    lo: 1024,
    hi: 32767,
};
/// Where the kernel keeps the gateway's own ephemeral port range (it
/// applies to IPv6 too).
pub const LOCAL_PORT_RANGE_PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// How a listener translates (`listener.mode`, default `dataplane.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Destination NAT only: the client's address is kept; the nodes must
    /// route replies through the gateway.
    #[default]
    Dnat,
    /// Destination and source NAT: the nodes see a source-NAT address of
    /// the gateway (the client's address is not preserved) and need no
    /// route through it.
    Fullnat,
}

impl fmt::Display for ListenerMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenerMode::Dnat => "dnat",
            ListenerMode::Fullnat => "fullnat",
        })
    }
}

/// An inclusive range of ports (`"1024-32767"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port (inclusive).
    pub hi: u16,
}

impl PortRange {
    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }

    /// Never empty (`lo <= hi`); here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.hi < self.lo
    }

    /// Whether the two ranges share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }

    /// Parses `"lo-hi"` (or one port), each in 1..=65535, `lo <= hi`.
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let bad = || format!("{text:?} is not a port range (write e.g. \"1024-32767\")");
        let (lo, hi) = match text.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (text.trim(), text.trim()),
        };
        let port = |s: &str| -> Result<u16, String> {
            let n: u64 = s.parse().map_err(|_| bad())?;
            match u16::try_from(n) {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(format!("port {n} is out of range 1..=65535")),
            }
        };
        let (lo, hi) = (port(lo)?, port(hi)?);
        if lo > hi {
            return Err(format!(
                "the first port {lo} is above the last {hi} (write \"{hi}-{lo}\")"
            ));
        }
        Ok(PortRange { lo, hi })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The source-NAT settings of `[dataplane]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snat {
    /// `dataplane.mode`: the mode of listeners that do not set one.
    pub default_mode: ListenerMode,
    /// `dataplane.snat_ipv4`: source addresses of full-NAT flows to IPv4 nodes.
    pub ipv4: Vec<Ipv4Addr>,
    /// `dataplane.snat_ipv6`: source addresses of full-NAT flows to IPv6 nodes.
    pub ipv6: Vec<Ipv6Addr>,
    /// `dataplane.snat_ports`: the source ports given to full-NAT flows.
    pub ports: PortRange,
}

impl Default for Snat {
    fn default() -> Self {
        Snat {
            default_mode: ListenerMode::Dnat,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            ports: DEFAULT_SNAT_PORTS,
        }
    }
}

impl Snat {
    /// The source-NAT addresses of `vip`'s family.
    pub fn addrs_for(&self, vip: IpAddr) -> Vec<IpAddr> {
        match vip {
            IpAddr::V4(_) => self.ipv4.iter().map(|a| IpAddr::V4(*a)).collect(),
            IpAddr::V6(_) => self.ipv6.iter().map(|a| IpAddr::V6(*a)).collect(),
        }
    }

    /// Every source-NAT address, IPv4 first.
    pub fn all_addrs(&self) -> Vec<IpAddr> {
        let v4 = self.ipv4.iter().map(|a| IpAddr::V4(*a));
        v4.chain(self.ipv6.iter().map(|a| IpAddr::V6(*a))).collect()
    }

    /// Concurrent full-NAT flows one node endpoint (address and port) can
    /// take through listeners of `vip`'s family: a port is unique per
    /// (source address, node address, node port).
    pub fn capacity_for(&self, vip: IpAddr) -> u64 {
        self.addrs_for(vip).len() as u64 * u64::from(self.ports.len())
    }
}

impl Config {
    /// Whether any listener is in full-NAT mode.
    pub fn any_fullnat(&self) -> bool {
        self.listeners
            .iter()
            .any(|l| l.mode == ListenerMode::Fullnat)
    }

    /// The `lb check` line of a full-NAT listener: the client's address
    /// is not preserved, what the nodes see instead, and the capacity.
    pub fn fullnat_line(&self, l: &Listener) -> Option<String> {
        if l.mode != ListenerMode::Fullnat {
            return None;
        }
        let addrs: Vec<String> = self
            .snat
            .addrs_for(l.vip)
            .iter()
            .map(|a| a.to_string())
            .collect();
        Some(format!(
            "    fullnat: client IP not preserved (nodes see {} ports {}); capacity {} address(es) × {} ports = {} concurrent flows per node endpoint\n",
            addrs.join(", "),
            self.snat.ports,
            addrs.len(),
            self.snat.ports.len(),
            self.snat.capacity_for(l.vip),
        ))
    }
}

/// Reads the source-NAT keys of `[dataplane]`.
pub(crate) fn snat(c: &mut Checker, raw: &RawDataplane) -> Snat {
    let ipv4 = addresses(c, "dataplane.snat_ipv4", raw.snat_ipv4.as_deref(), true)
        .into_iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
        .collect();
    let ipv6 = addresses(c, "dataplane.snat_ipv6", raw.snat_ipv6.as_deref(), false)
        .into_iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
        .collect();
    let ports = match raw.snat_ports.as_deref() {
        None => DEFAULT_SNAT_PORTS,
        Some(text) => PortRange::parse(text).unwrap_or_else(|message| {
            c.report("dataplane.snat_ports", message);
            DEFAULT_SNAT_PORTS
        }),
    };
    Snat {
        default_mode: raw.mode.unwrap_or_default(),
        ipv4,
        ipv6,
        ports,
    }
}

/// One `snat_ipv4` / `snat_ipv6` list: 1 to [`MAX_SNAT_ADDRS`] unicast
/// addresses of the key's family, no duplicates.
fn addresses(c: &mut Checker, key: &str, list: Option<&[String]>, v4: bool) -> Vec<IpAddr> {
    let Some(list) = list else {
        return Vec::new();
    };
    if list.is_empty() {
        c.report(key, "must list at least one address (or leave the key out)");
    }
    if list.len() > MAX_SNAT_ADDRS {
        c.report(
            key,
            format!(
                "{} addresses exceed the data path limit of {MAX_SNAT_ADDRS}",
                list.len()
            ),
        );
    }
    let family = if v4 { "IPv4" } else { "IPv6" };
    let mut out: Vec<IpAddr> = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let k = format!("{key}[{i}]");
        match parse_ip(text, "a source-NAT address") {
            Err(message) => c.report(k, message),
            Ok(a) if a.is_ipv4() != v4 => {
                c.report(k, format!("{a} is not an {family} address"));
            }
            Ok(a) => match out.iter().position(|o| *o == a) {
                Some(j) => c.report(k, format!("duplicate address {a} (also {key}[{j}])")),
                None => out.push(a),
            },
        }
    }
    out
}

/// Relations between the source-NAT settings and the listeners and
/// backends: a full-NAT listener needs an address of its VIP's family; a
/// source-NAT address is neither a VIP nor a backend's address.
/// `explicit[i]`: listener `i` sets `mode` itself (else `dataplane.mode`
/// or the default decided).
pub(crate) fn relations(
    c: &mut Checker,
    snat: &Snat,
    listeners: &[Listener],
    explicit: &[bool],
    backends: &[Backend],
) {
    for (i, l) in listeners.iter().enumerate() {
        if l.mode != ListenerMode::Fullnat || !snat.addrs_for(l.vip).is_empty() {
            continue;
        }
        let (family, key) = match l.vip {
            IpAddr::V4(_) => ("IPv4", "snat_ipv4"),
            IpAddr::V6(_) => ("IPv6", "snat_ipv6"),
        };
        let from = if explicit.get(i).copied().unwrap_or(true) {
            ""
        } else {
            " (from dataplane.mode)"
        };
        c.report(
            format!("{}.mode", label("listener", i, &l.name)),
            format!(
                "mode = \"fullnat\"{from} needs a source-NAT address of the VIP's family ({family}): set dataplane.{key} = [\"…\"], a dedicated address the gateway owns (in an HA pair, floating with the VIP)"
            ),
        );
    }
    let keyed = snat
        .ipv4
        .iter()
        .map(|a| ("dataplane.snat_ipv4", IpAddr::V4(*a)))
        .enumerate()
        .chain(
            snat.ipv6
                .iter()
                .map(|a| ("dataplane.snat_ipv6", IpAddr::V6(*a)))
                .enumerate(),
        );
    for (i, (key, a)) in keyed {
        let key = format!("{key}[{i}]");
        if let Some((j, l)) = listeners.iter().enumerate().find(|(_, l)| l.vip == a) {
            c.report(
                &key,
                format!(
                    "{a} is also the VIP of {}; a source-NAT address must be an address of its own",
                    label("listener", j, &l.name)
                ),
            );
        }
        if let Some((j, b)) = backends.iter().enumerate().find(|(_, b)| b.address == a) {
            c.report(
                &key,
                format!(
                    "{a} is also the address of {}; a source-NAT address must not be a backend's",
                    label("backend", j, &b.name)
                ),
            );
        }
    }
}

/// Parses the text of `ip_local_port_range` (`"32768\t60999\n"`).
pub fn parse_local_port_range(text: &str) -> Option<PortRange> {
    let mut it = text.split_whitespace().map(|s| s.parse::<u16>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    (lo <= hi).then_some(PortRange { lo, hi })
}

/// The source-NAT port range must not overlap the gateway's own ephemeral
/// ports: its own connections (health checks, SSH) from an address it
/// shares with translated flows would collide with them. `local` is the
/// content of `ip_local_port_range`. Only matters with a full-NAT listener.
pub fn check_local_ports(config: &Config, local: &str) -> Result<(), Problem> {
    if !config.any_fullnat() {
        return Ok(());
    }
    let Some(range) = parse_local_port_range(local) else {
        return Err(Problem {
            key: "dataplane.snat_ports".into(),
            message: format!(
                "cannot read net.ipv4.ip_local_port_range ({:?}) to check it against {}",
                local.trim(),
                config.snat.ports
            ),
        });
    };
    if config.snat.ports.overlaps(&range) {
        return Err(Problem {
            key: "dataplane.snat_ports".into(),
            message: format!(
                "{} overlaps this gateway's net.ipv4.ip_local_port_range {}: its own connections (health checks, SSH) would collide with translated flows; choose ports outside it (e.g. \"{}\") or move the kernel's range (sysctl -w net.ipv4.ip_local_port_range=…)",
                config.snat.ports,
                range,
                suggestion(&range),
            ),
        });
    }
    Ok(())
}

/// A range next to the kernel's, for the error message.
fn suggestion(local: &PortRange) -> PortRange {
    if local.lo > 1025 {
        PortRange {
            lo: 1024,
            hi: local.lo - 1,
        }
    } else {
        PortRange {
            lo: local.hi.saturating_add(1),
            hi: 65535,
        }
    }
}

/// [`check_local_ports`] against this host's `ip_local_port_range`: run
/// where a configuration is applied (start-up, reload, `lb check`).
pub fn check_host(config: &Config) -> Result<(), Problem> {
    if !config.any_fullnat() {
        return Ok(());
    }
    let text = std::fs::read_to_string(LOCAL_PORT_RANGE_PATH).map_err(|e| Problem {
        key: "dataplane.snat_ports".into(),
        message: format!("reading {LOCAL_PORT_RANGE_PATH}: {e}"),
    })?;
    check_local_ports(config, &text)
}

/// Why a full-NAT gateway needs `accept_local`, for [`accept_local_warnings`].
const ACCEPT_LOCAL_WHY: &str = "replies the data path hands to the kernel to resolve a neighbour (a client this gateway has not talked to yet, e.g. after a takeover) carry the VIP, a local address, as source and are dropped for seconds; set net.ipv4.conf.all.accept_local=1";

/// The warnings of [`accept_local_warnings`] given each interface's and
/// `all`'s `accept_local` (`read(name)`, `None` when unreadable).
pub fn accept_local_warnings_with(
    config: &Config,
    read: impl Fn(&str) -> Option<bool>,
) -> Vec<String> {
    if !config.any_fullnat() || read("all") == Some(true) {
        return Vec::new();
    }
    config
        .dataplane
        .interfaces
        .iter()
        .filter(|i| read(i) != Some(true))
        .map(|i| {
            format!("net.ipv4.conf.{i}.accept_local is 0 on a full-NAT gateway: {ACCEPT_LOCAL_WHY}")
        })
        .collect()
}

/// With a full-NAT listener, the interfaces where the kernel would drop a
/// reply the data path passes to it for neighbour resolution (its source
/// is the VIP, a local address of the gateway that owns it): one warning
/// each (logged at start-up and reload; not an error, a VIP only routed to
/// the gateway does not need it).
pub fn accept_local_warnings(config: &Config) -> Vec<String> {
    accept_local_warnings_with(config, |iface| {
        let path = format!("/proc/sys/net/ipv4/conf/{iface}/accept_local");
        std::fs::read_to_string(path).ok().map(|v| v.trim() == "1")
    })
}
