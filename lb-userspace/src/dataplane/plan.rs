//! The contract between the model and the writer: what the data path
//! should hold ([`Plan`]), written by `tables::Written`, and what a previous
//! daemon left in pinned maps ([`MapState`]), adopted by the model and the
//! writer. Plain data: no map handles, no aya types, so the model (in
//! `daemon::model`) depends on this module and not on the loaded program.
use std::collections::BTreeSet;
use std::net::IpAddr;

use lb_common::{Listener, ListenerKey, Real};

use crate::config::PortRange;

/// One (listener, backend) pair as the data path sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealPlan {
    /// Real id: index into `REALS` and `REAL_STATS`.
    pub id: u32,
    /// Backend name: the Maglev key, so every listener with the same healthy
    /// set builds the same table, and two gateways agree.
    pub name: String,
    /// Backend address.
    pub addr: IpAddr,
    /// Backend port: the listener's target port, or the one it had when
    /// the real was retired (its draining flows keep going there).
    pub port: u16,
    /// Made for a full-NAT listener: its replies go to a source-NAT
    /// address, so it has no untracked-reply fallback entry.
    pub fullnat: bool,
    /// Takes new flows (is in the table).
    pub serving: bool,
    /// Keeps its tracked flows but takes no new ones.
    pub draining: bool,
    /// Not gone and not proven dead: keeps its tracked flows whatever its
    /// health, and is in the mid-flow table (see the module doc).
    pub keeps_flows: bool,
}

/// One listener as the data path sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerPlan {
    /// Listener id: index into `LISTENER_STATS`, owner of Maglev tables
    /// `4*id`, `4*id+1` (healthy) and `4*id+2`, `4*id+3` (mid-flow).
    pub id: u32,
    /// VIP.
    pub vip: IpAddr,
    /// VIP port.
    pub port: u16,
    /// Backend port.
    pub target_port: u16,
    /// Full-NAT (`LISTENER_F_FULLNAT`): new flows get a source-NAT address.
    pub fullnat: bool,
    /// Every real of the listener; the serving ones make up the table.
    pub reals: Vec<RealPlan>,
}

impl ListenerPlan {
    /// The reals of the healthy table (they take new flows).
    pub fn serving(&self) -> Vec<&RealPlan> {
        self.reals.iter().filter(|r| r.serving).collect()
    }

    /// The reals of the mid-flow table.
    pub fn keeping(&self) -> Vec<&RealPlan> {
        self.reals.iter().filter(|r| r.keeps_flows).collect()
    }
}

/// The whole desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Listeners, in id order.
    pub listeners: Vec<ListenerPlan>,
    /// Source-NAT addresses and ports.
    pub snat: SnatPlan,
}

/// What the maps held when a daemon started on pinned maps.
#[derive(Clone, Debug, Default)]
pub struct MapState {
    /// Listener entries.
    pub listeners: Vec<(ListenerKey, Listener)>,
    /// Used real slots.
    pub reals: Vec<(u32, Real)>,
    /// Addresses in `SNAT_ADDRS`.
    pub snat_addrs: Vec<IpAddr>,
}

/// What the source-NAT maps should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnatPlan {
    /// IPv4 source addresses for new full-NAT flows (empty: IPv4 full-NAT
    /// off, `count` 0).
    pub ipv4: Vec<IpAddr>,
    /// IPv6 source addresses for new full-NAT flows.
    pub ipv6: Vec<IpAddr>,
    /// Source ports.
    pub ports: PortRange,
    /// Addresses no longer given to new flows whose flows still drain:
    /// kept in `SNAT_ADDRS` so their replies are still recognised.
    pub retiring: BTreeSet<IpAddr>,
}

impl Default for SnatPlan {
    fn default() -> Self {
        SnatPlan {
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            ports: crate::config::snat::DEFAULT_SNAT_PORTS,
            retiring: BTreeSet::new(),
        }
    }
}
