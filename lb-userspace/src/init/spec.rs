//! What `lb init` generates from: the command-line flags, parsed and checked
//! for consistency before anything is rendered.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::config::{XdpMode, DEFAULT_API_LISTEN};

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

/// One gateway of the pair: `NAME=CLIENT_ADDRESS,BACKEND_ADDRESS` in the
/// routed layout, `NAME=ADDRESS` with `--one-arm` (its own, fixed
/// addresses; keepalived's unicast adverts go between them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Name (keepalived's `router_id`, the generated file's name).
    pub name: String,
    /// Its own address on the client-side interface (one-arm: its address).
    pub client_address: Ipv4Addr,
    /// Its own address on the backend-side interface (one-arm: the same).
    pub backend_address: Ipv4Addr,
}

impl Gateway {
    /// Whether it was given one address (`NAME=ADDRESS`, the one-arm form).
    pub fn one_address(&self) -> bool {
        self.client_address == self.backend_address
    }
}

impl FromStr for Gateway {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || {
            format!(
                "expected NAME=CLIENT_ADDRESS,BACKEND_ADDRESS (e.g. gw-a=198.51.100.2,192.0.2.2) \
                 or, with --one-arm, NAME=ADDRESS (e.g. gw-a=192.168.2.2), not {s:?}"
            )
        };
        let (name, addrs) = s.split_once('=').ok_or_else(usage)?;
        let (client, backend) = addrs.split_once(',').unwrap_or((addrs, addrs));
        let client: Host = format!("{name}={client}").parse()?;
        let backend: Host = format!("{name}={backend}").parse()?;
        Ok(Gateway {
            name: client.name,
            client_address: client.address,
            backend_address: backend.address,
        })
    }
}

/// Where the gateways sit and how listeners are balanced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The gateways route between the clients and the nodes (DNAT: the
    /// nodes see the clients' addresses and must route replies back
    /// through the backend-side floating address).
    Routed(Routed),
    /// `--one-arm`: one interface on the nodes' LAN, full-NAT listeners;
    /// nothing changes on the nodes or the clients.
    OneArm(OneArm),
}

/// The routed (two-arm, DNAT) layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Client-side NIC of the gateways.
    pub client_interface: String,
    /// Backend-side NIC of the gateways (may equal the client side).
    pub backend_interface: String,
    /// Floating client-side address (the clients' next hop to the VIP).
    pub client_floating: Cidr,
    /// Floating backend-side address (the nodes' route back to the clients).
    pub backend_floating: Cidr,
    /// Networks the clients live in (printed routes); empty: a default route.
    pub client_networks: Vec<Cidr>,
}

/// The one-arm (full-NAT) layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneArm {
    /// The gateways' one NIC, on the nodes' LAN.
    pub interface: String,
    /// The source-NAT address the nodes see, floating with the VIP.
    pub snat: Ipv4Addr,
}

/// Commands keepalived runs on a gateway's transitions (`--notify-*`);
/// `{gateway}` in a command stands for the gateway's name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    /// Run on becoming master (e.g. `hcloud floating-ip assign IP {gateway}`).
    pub master: Option<String>,
    /// Run on becoming backup.
    pub backup: Option<String>,
    /// Run on entering FAULT (`lb healthz` failing, interface down).
    pub fault: Option<String>,
}

impl Notify {
    /// `(keepalived state, command)` of each command given.
    pub fn commands(&self) -> Vec<(&'static str, &str)> {
        [
            ("MASTER", &self.master),
            ("BACKUP", &self.backup),
            ("FAULT", &self.fault),
        ]
        .into_iter()
        .filter_map(|(state, c)| c.as_deref().map(|c| (state, c)))
        .collect()
    }

    /// Whether no command is given.
    pub fn is_empty(&self) -> bool {
        self.commands().is_empty()
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
    /// Routed (DNAT) or one-arm (full-NAT).
    pub layout: Layout,
    /// This gateway: the preferred master (higher priority).
    pub this: Gateway,
    /// The other gateway of the pair; `None`: a single gateway, no keepalived.
    pub peer: Option<Gateway>,
    /// Full path of the `lb` binary keepalived runs (`lb healthz`).
    pub lb_bin: PathBuf,
    /// `[api] listen` of the generated `lb.toml` (what `lb healthz` asks).
    pub api_listen: SocketAddr,
    /// `[dataplane] xdp_mode` of the generated `lb.toml`.
    pub xdp_mode: XdpMode,
    /// VRRP advertisement interval.
    pub advert_int: Duration,
    /// VRRP router id of the (client-side) instance; the routed layout's
    /// backend side uses the next one.
    pub vrid: u8,
    /// The preferred master does not take the addresses back when it returns.
    pub nopreempt: bool,
    /// Check every listener with a TCP connect instead of the port's default
    /// (`https` /readyz on 6443, `tls` on 50000).
    pub tcp_checks: bool,
    /// Commands keepalived runs on transitions (written as notify scripts).
    pub notify: Notify,
    /// Where the notify scripts are installed on the gateways.
    pub script_dir: PathBuf,
}

/// Default VRRP advertisement interval. In the namespace lab 100 ms was
/// stable too (2 cores at a load of 7-8), but a gateway busy with XDP
/// softirq work can starve keepalived for a moment; 200 ms keeps twice that
/// margin and still moves the addresses in about 0.65 s (see docs/ha.md).
pub const DEFAULT_ADVERT_INT: Duration = Duration::from_millis(200);
/// Shortest accepted advertisement interval (VRRP v3 counts in centiseconds;
/// below this a busy host misses adverts and the pair flaps).
pub const MIN_ADVERT_INT: Duration = Duration::from_millis(100);
/// Default VRRP router id of the client-side instance.
pub const DEFAULT_VRID: u8 = 51;
/// Default directory of the notify scripts on the gateways.
pub const DEFAULT_SCRIPT_DIR: &str = "/etc/keepalived";

impl Spec {
    /// A spec with the defaults for everything the flags may leave out.
    pub fn new(
        nodes: Vec<Host>,
        vip: Ipv4Addr,
        layout: Layout,
        this: Gateway,
        peer: Option<Gateway>,
        lb_bin: PathBuf,
    ) -> Spec {
        Spec {
            nodes,
            workers: Vec::new(),
            talos_workers_listener: false,
            vip,
            layout,
            this,
            peer,
            lb_bin,
            api_listen: DEFAULT_API_LISTEN,
            xdp_mode: XdpMode::Auto,
            advert_int: DEFAULT_ADVERT_INT,
            vrid: DEFAULT_VRID,
            nopreempt: false,
            tcp_checks: false,
            notify: Notify::default(),
            script_dir: PathBuf::from(DEFAULT_SCRIPT_DIR),
        }
    }

    /// The gateways: this one, then the peer if any.
    pub fn gateways(&self) -> Vec<&Gateway> {
        std::iter::once(&self.this).chain(&self.peer).collect()
    }

    /// Every inconsistency between the flags, and every layout the chosen
    /// mode cannot serve, each as one line. `lb.toml` validation (names,
    /// duplicates, the VIP) comes on top of this.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.nodes.is_empty() {
            out.push("at least one --node NAME=ADDRESS is needed".to_owned());
        }
        let interfaces: Vec<(&str, &str)> = match &self.layout {
            Layout::Routed(r) => vec![
                ("--client-interface", &r.client_interface),
                ("--backend-interface", &r.backend_interface),
            ],
            Layout::OneArm(o) => vec![("--interface", &o.interface)],
        };
        for (flag, name) in interfaces {
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
        let max_vrid = match self.layout {
            Layout::Routed(_) => 253,
            Layout::OneArm(_) => 254,
        };
        if self.vrid == 0 || self.vrid > max_vrid {
            out.push(format!("--vrid {} must be 1..={max_vrid}", self.vrid));
        }
        let gateways = self.gateways();
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
        out.extend(super::notify::problems(self));
        match &self.layout {
            Layout::Routed(r) => out.extend(super::layout::routed_problems(self, r)),
            Layout::OneArm(o) => out.extend(super::layout::one_arm_problems(self, o)),
        }
        out
    }

    /// The interfaces `lb` attaches to (one when both sides share a NIC).
    pub fn interfaces(&self) -> Vec<&str> {
        match &self.layout {
            Layout::Routed(r) => {
                let mut v = vec![r.client_interface.as_str()];
                if r.backend_interface != r.client_interface {
                    v.push(r.backend_interface.as_str());
                }
                v
            }
            Layout::OneArm(o) => vec![o.interface.as_str()],
        }
    }
}
