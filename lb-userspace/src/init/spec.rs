//! What `lb init` generates from: the command-line flags, parsed and checked
//! for consistency before anything is rendered.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::config::DEFAULT_API_LISTEN;

/// A named host: `NAME=ADDRESS` (a control-plane node or a worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Name used in `lb.toml` (`[[backend]] name`).
    pub name: String,
    /// Its address.
    pub address: Ipv4Addr,
}

impl FromStr for Host {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, addr) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=ADDRESS, e.g. cp-01=192.0.2.11, not {s:?}"))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(is_name_char) {
            return Err(format!(
                "bad name {name:?}: use letters, digits, '-', '_' and '.'"
            ));
        }
        let address = addr
            .trim()
            .parse()
            .map_err(|_| format!("{name}: {addr:?} is not an IPv4 address"))?;
        Ok(Host {
            name: name.to_owned(),
            address,
        })
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// An IPv4 address with its prefix length, e.g. `198.18.2.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub address: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in this address's network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = self.mask();
        u32::from(self.address) & mask == u32::from(ip) & mask
    }

    /// The network, e.g. `198.18.2.0/24` for `198.18.2.1/24`.
    pub fn network(&self) -> Cidr {
        Cidr {
            address: Ipv4Addr::from(u32::from(self.address) & self.mask()),
            prefix: self.prefix,
        }
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("expected ADDRESS/PREFIX, e.g. 192.0.2.1/24, not {s:?}"))?;
        let address = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length 0..=32"))?;
        Ok(Cidr { address, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// One gateway of the pair: `NAME=CLIENT_ADDRESS,BACKEND_ADDRESS` (its own,
/// fixed addresses; keepalived's unicast adverts go between them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Name (keepalived's `router_id`, the generated file's name).
    pub name: String,
    /// Its own address on the client-side interface.
    pub client_address: Ipv4Addr,
    /// Its own address on the backend-side interface.
    pub backend_address: Ipv4Addr,
}

impl FromStr for Gateway {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!("expected NAME=CLIENT_ADDRESS,BACKEND_ADDRESS, e.g. gw-a=198.51.100.2,192.0.2.2, not {s:?}")
        };
        let (name, addrs) = s.split_once('=').ok_or_else(usage)?;
        let (client, backend) = addrs.split_once(',').ok_or_else(usage)?;
        let client: Host = format!("{name}={client}").parse()?;
        let backend: Host = format!("{name}={backend}").parse()?;
        Ok(Gateway {
            name: client.name,
            client_address: client.address,
            backend_address: backend.address,
        })
    }
}

/// Everything `lb init` needs; see [`crate::init::InitArgs`] for the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Control-plane nodes (6443, 50000 and optionally 50001 → 50000).
    pub nodes: Vec<Host>,
    /// Workers (ingress 80 and 443); may be empty.
    pub workers: Vec<Host>,
    /// Add the `talos-api-workers` listener (50001 → 50000 on the nodes).
    pub talos_workers_listener: bool,
    /// The virtual IP of every listener.
    pub vip: Ipv4Addr,
    /// Client-side NIC of the gateways.
    pub client_interface: String,
    /// Backend-side NIC of the gateways (may equal the client side).
    pub backend_interface: String,
    /// Floating client-side address (the clients' next hop to the VIP).
    pub client_floating: Cidr,
    /// Floating backend-side address (the nodes' route back to the clients).
    pub backend_floating: Cidr,
    /// This gateway: the preferred master (higher priority).
    pub this: Gateway,
    /// The other gateway of the pair; `None`: a single gateway, no keepalived.
    pub peer: Option<Gateway>,
    /// Networks the clients live in (printed routes); empty: a default route.
    pub client_networks: Vec<Cidr>,
    /// Full path of the `lb` binary keepalived runs (`lb healthz`).
    pub lb_bin: PathBuf,
    /// `[api] listen` of the generated `lb.toml` (what `lb healthz` asks).
    pub api_listen: SocketAddr,
    /// VRRP advertisement interval.
    pub advert_int: Duration,
    /// VRRP router id of the client-side instance; the backend side uses the next one.
    pub vrid: u8,
    /// The preferred master does not take the addresses back when it returns.
    pub nopreempt: bool,
    /// Check every listener with a TCP connect instead of the port's default
    /// (`https` /readyz on 6443, `tls` on 50000).
    pub tcp_checks: bool,
}

/// Default VRRP advertisement interval. In the namespace lab 100 ms was
/// stable too (2 cores at a load of 7-8), but a gateway busy with XDP
/// softirq work can starve keepalived for a moment; 200 ms keeps twice that
/// margin and still moves the addresses in about 0.65 s (see README, "High
/// availability").
pub const DEFAULT_ADVERT_INT: Duration = Duration::from_millis(200);
/// Shortest accepted advertisement interval (VRRP v3 counts in centiseconds;
/// below this a busy host misses adverts and the pair flaps).
pub const MIN_ADVERT_INT: Duration = Duration::from_millis(100);
/// Default VRRP router id of the client-side instance.
pub const DEFAULT_VRID: u8 = 51;

impl Spec {
    /// A spec with the defaults for everything the flags may leave out.
    pub fn new(
        nodes: Vec<Host>,
        vip: Ipv4Addr,
        interfaces: (String, String),
        floating: (Cidr, Cidr),
        this: Gateway,
        peer: Option<Gateway>,
        lb_bin: PathBuf,
    ) -> Spec {
        Spec {
            nodes,
            workers: Vec::new(),
            talos_workers_listener: false,
            vip,
            client_interface: interfaces.0,
            backend_interface: interfaces.1,
            client_floating: floating.0,
            backend_floating: floating.1,
            this,
            peer,
            client_networks: Vec::new(),
            lb_bin,
            api_listen: DEFAULT_API_LISTEN,
            advert_int: DEFAULT_ADVERT_INT,
            vrid: DEFAULT_VRID,
            nopreempt: false,
            tcp_checks: false,
        }
    }

    /// Every inconsistency between the flags, each as one line. `lb.toml`
    /// validation (names, duplicates, the VIP) comes on top of this.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.nodes.is_empty() {
            out.push("at least one --node NAME=ADDRESS is needed".to_owned());
        }
        for (flag, name) in [
            ("--client-interface", &self.client_interface),
            ("--backend-interface", &self.backend_interface),
        ] {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '"']) {
                out.push(format!("{flag} {name:?} is not an interface name"));
            }
        }
        if !self.lb_bin.is_absolute() {
            out.push(format!(
                "--lb-bin {} must be an absolute path (keepalived runs it)",
                self.lb_bin.display()
            ));
        }
        if self.advert_int < MIN_ADVERT_INT || self.advert_int > Duration::from_secs(40) {
            out.push(format!(
                "--advert-int {:?} is outside {MIN_ADVERT_INT:?}..=40s",
                self.advert_int
            ));
        }
        if !self.advert_int.as_millis().is_multiple_of(10) {
            out.push(format!(
                "--advert-int {:?} is not a whole number of centiseconds (VRRP v3's unit)",
                self.advert_int
            ));
        }
        if self.vrid == 0 || self.vrid == 255 {
            out.push(format!("--vrid {} must be 1..=254", self.vrid));
        }
        if self.client_floating.address == self.backend_floating.address {
            out.push("the client-side and backend-side floating addresses are equal".to_owned());
        }
        let gateways: Vec<&Gateway> = std::iter::once(&self.this).chain(&self.peer).collect();
        if let [a, b] = gateways[..] {
            if a.name == b.name {
                out.push(format!("both gateways are named {}", a.name));
            }
            if a.client_address == b.client_address || a.backend_address == b.backend_address {
                out.push(format!(
                    "gateways {} and {} share an address",
                    a.name, b.name
                ));
            }
        }
        for g in &gateways {
            for (side, addr, floating) in [
                ("client", g.client_address, self.client_floating),
                ("backend", g.backend_address, self.backend_floating),
            ] {
                if !floating.contains(addr) {
                    out.push(format!(
                        "{}'s {side}-side address {addr} is not in the {side}-side floating address's network {}",
                        g.name,
                        floating.network()
                    ));
                }
                if addr == floating.address {
                    out.push(format!(
                        "{}'s {side}-side address {addr} is the floating address itself",
                        g.name
                    ));
                }
            }
        }
        out
    }

    /// The interfaces `lb` attaches to (one when both sides share a NIC).
    pub fn interfaces(&self) -> Vec<&str> {
        let mut v = vec![self.client_interface.as_str()];
        if self.backend_interface != self.client_interface {
            v.push(self.backend_interface.as_str());
        }
        v
    }
}
