//! What a scrape needs to know of the daemon's model: the label values of
//! every series (listener and backend names, addresses, real ids) and the
//! health-derived gauges. The daemon builds it from its published snapshot
//! (see `daemon::snapshot`), so metrics never import the daemon's model.
use std::net::IpAddr;

use crate::dataplane::AttachMode;

/// The model as of one scrape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Attached everywhere and every backend checked at least once.
    pub ready: bool,
    /// Attached interfaces and how.
    pub interfaces: Vec<(String, AttachMode)>,
    /// Configured interfaces the program is not attached to (gone).
    pub missing_interfaces: Vec<String>,
    /// The configured interfaces' link state.
    pub links: Vec<LinkView>,
    /// Check results are set aside (a link is down or settling).
    pub checks_held: bool,
    /// Per listener, in listener-id order.
    pub listeners: Vec<ListenerView>,
    /// Source-NAT addresses new full-NAT flows get, with the ports each
    /// offers per node endpoint.
    pub snat: Vec<(IpAddr, u32)>,
}

/// One configured interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkView {
    /// Interface name (`interface` label).
    pub interface: String,
    /// Link state: `up`, `settling`, `down`, `no_carrier` or `missing`.
    pub state: &'static str,
    /// MAC address changes seen since the daemon started.
    pub mac_changes: u64,
    /// Times the XDP program was found detached and attached again.
    pub xdp_reattachments: u64,
}

/// Every link state, in the order the one-hot `lb_interface_state`
/// series are written (the daemon's `LinkState` names).
pub const LINK_STATES: [&str; 5] = ["up", "settling", "down", "no_carrier", "missing"];

/// One listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerView {
    /// Listener id in the data path (index into `LISTENER_STATS`).
    pub id: u32,
    /// Listener name (`listener` label).
    pub name: String,
    /// Every backend is down and new flows spread over all of them.
    pub fail_open: bool,
    /// Its reals.
    pub reals: Vec<RealView>,
}

/// One backend of one listener (a real).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealView {
    /// Real id in the data path (index into `REALS`, `REAL_STATS`).
    pub id: u32,
    /// Node name (`backend` label).
    pub backend: String,
    /// Node address (`address` label).
    pub address: IpAddr,
    /// The health checks' verdict.
    pub up: bool,
}

impl View {
    /// Every real id named by the view.
    pub fn real_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.listeners
            .iter()
            .flat_map(|l| l.reals.iter().map(|r| r.id))
    }
}
