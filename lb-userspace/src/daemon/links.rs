//! The configured interfaces as the reconciler sees them: present or not,
//! administratively up, with carrier, their MAC address, and what the
//! daemon found wrong with its XDP attachment or MAC filter on them. Pure
//! state, no I/O: observations come from rtnetlink (see
//! `dataplane::linkwatch`) through the event loop, which also does the
//! attaching and map writing (`daemon::interfaces`).
//!
//! # Why link state holds check results
//!
//! While a link the gateway reaches nodes through is missing, down or
//! without carrier, its own checks fail for a reason of its own (no
//! route, no neighbour), not the nodes'. Counting them would take every
//! node down, prove them dead, and reschedule their tracked flows onto the
//! first node that comes back, which resets them. So while any configured
//! link does not pass traffic, and for a settle time after it passes again
//! ([`LinkTable::holding`]), check results are set aside: health stays as
//! it was before the outage.
use std::time::{Duration, Instant};

use crate::dataplane::rtnl::LinkInfo;

/// How long the MAC address an interface had before a change stays
/// accepted by the data path: neighbours keep sending to it until their
/// cache entry is confirmed again or expires. Linux keeps an entry
/// reachable for up to 1.5 × `base_reachable_time` (45 s by default), then
/// waits `delay_first_probe_time` (5 s) and probes `ucast_solicit` (3)
/// times a second before asking by broadcast: 53 s, rounded up.
pub const OLD_MAC_GRACE: Duration = Duration::from_secs(60);

/// Whether a link passes traffic, as the reconciler counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Up, with carrier, and settled.
    Up,
    /// Passing traffic again, within its settle time: check results are
    /// still set aside.
    Settling,
    /// Administratively down (`ip link set … down`).
    Down,
    /// Up, but the lower layer passes nothing (cable, peer, switch port).
    NoCarrier,
    /// No such interface.
    Missing,
}

impl LinkState {
    /// Every state, in the order metrics list them.
    pub const ALL: [LinkState; 5] = [
        LinkState::Up,
        LinkState::Settling,
        LinkState::Down,
        LinkState::NoCarrier,
        LinkState::Missing,
    ];

    /// The label and status text: `up`, `settling`, `down`, `no_carrier`,
    /// `missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Settling => "settling",
            LinkState::Down => "down",
            LinkState::NoCarrier => "no_carrier",
            LinkState::Missing => "missing",
        }
    }

    /// The link passes no traffic: the gateway does not forward through it.
    pub fn is_failed(self) -> bool {
        matches!(
            self,
            LinkState::Down | LinkState::NoCarrier | LinkState::Missing
        )
    }
}

/// The destination-MAC filter of an interface (`IFACE_MACS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MacFilter {
    /// In line with the interface's addresses.
    #[default]
    Current,
    /// Could not be written and was removed: the interface is not
    /// filtered (it forwards; frames to other MACs are handled too).
    Off(String),
    /// Could not be written nor removed: it may name a MAC the interface
    /// no longer has, and frames to the new one are not balanced.
    Stale(String),
}

/// One interface as the table knows it.
#[derive(Clone, Debug)]
struct Entry {
    name: String,
    /// The last observation; `None` when the interface was missing.
    info: Option<LinkInfo>,
    /// When it last started passing traffic again after it did not, and
    /// how long it settles from then; `None` once it passed traffic from
    /// the start.
    returned: Option<(Instant, Duration)>,
    /// The MAC address it had before its last change, accepted until the
    /// given time (see [`OLD_MAC_GRACE`]).
    previous_mac: Option<([u8; 6], Instant)>,
    mac_changes: u64,
    xdp_problem: Option<String>,
    xdp_reattachments: u64,
    mac_filter: MacFilter,
}

impl Entry {
    fn state(&self, now: Instant) -> LinkState {
        match &self.info {
            None => LinkState::Missing,
            Some(i) if !i.admin_up => LinkState::Down,
            Some(i) if !i.carrier => LinkState::NoCarrier,
            Some(_) => match self.returned {
                Some((at, settle)) if now < at + settle => LinkState::Settling,
                _ => LinkState::Up,
            },
        }
    }
}

/// What an observation changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The state before and after, when it changed.
    pub state: Option<(LinkState, LinkState)>,
    /// The MAC address before and after, when it changed.
    pub mac: Option<([u8; 6], [u8; 6])>,
}

/// One interface, as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSnap {
    /// Interface name.
    pub name: String,
    /// Link state.
    pub state: LinkState,
    /// Current MAC address.
    pub mac: Option<[u8; 6]>,
    /// Time left before check results count again (while settling).
    pub settle_left: Option<Duration>,
    /// MAC address changes seen since start.
    pub mac_changes: u64,
    /// Why the XDP program is not attached as it should be, if so.
    pub xdp_problem: Option<String>,
    /// Times the program was found detached and attached again.
    pub xdp_reattachments: u64,
    /// The destination-MAC filter's state.
    pub mac_filter: MacFilter,
}

impl LinkSnap {
    /// Why this interface keeps the gateway from forwarding, if it does:
    /// `interface gwb: link down`, `… no carrier`, `… missing`, `… XDP …`.
    pub fn problem(&self) -> Option<String> {
        let why = match self.state {
            LinkState::Down => Some("link down".to_string()),
            LinkState::NoCarrier => Some("no carrier".to_string()),
            LinkState::Missing => Some("missing (XDP not attached)".to_string()),
            LinkState::Up | LinkState::Settling => None,
        }
        .or_else(|| self.xdp_problem.clone())
        .or_else(|| match &self.mac_filter {
            MacFilter::Stale(e) => Some(format!("destination-MAC filter not updated: {e}")),
            MacFilter::Current | MacFilter::Off(_) => None,
        })?;
        Some(format!("interface {}: {why}", self.name))
    }
}

/// The configured interfaces' link state (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct LinkTable {
    entries: Vec<Entry>,
}

impl LinkTable {
    /// Records what the kernel says of interface `name` now (`None`: it
    /// does not exist). `settle` is asked only when the link passes
    /// traffic again after it did not: how long until checks through it
    /// are trusted (see `daemon::interfaces::settle_time`). The first
    /// observation of an interface that passes traffic does not settle.
    pub fn observe(
        &mut self,
        name: &str,
        info: Option<&LinkInfo>,
        settle: impl FnOnce() -> Duration,
        now: Instant,
    ) -> Observed {
        let i = match self.entries.iter().position(|e| e.name == name) {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    name: name.to_string(),
                    info: info.cloned(),
                    returned: None,
                    previous_mac: None,
                    mac_changes: 0,
                    xdp_problem: None,
                    xdp_reattachments: 0,
                    mac_filter: MacFilter::Current,
                });
                let e = &self.entries[self.entries.len() - 1];
                let state = e.state(now);
                return Observed {
                    state: (state != LinkState::Up).then_some((LinkState::Up, state)),
                    mac: None,
                };
            }
        };
        let e = &mut self.entries[i];
        let before = e.state(now);
        let was_usable = e.info.as_ref().is_some_and(LinkInfo::usable);
        let old_mac = e.info.as_ref().and_then(|i| i.mac);
        e.info = info.cloned();
        let usable = info.is_some_and(LinkInfo::usable);
        if usable && !was_usable {
            e.returned = Some((now, settle()));
        }
        let mut out = Observed::default();
        // A re-created interface may come with another MAC: a change too.
        if let (Some(old), Some(new)) = (old_mac, info.and_then(|i| i.mac)) {
            if old != new {
                e.previous_mac = Some((old, now + OLD_MAC_GRACE));
                e.mac_changes += 1;
                out.mac = Some((old, new));
            }
        }
        let after = e.state(now);
        out.state = (before != after).then_some((before, after));
        out
    }

    /// Why check results must be set aside at `now`, if they must: the
    /// first interface that is missing, down, without carrier or settling.
    pub fn holding(&self, now: Instant) -> Option<String> {
        self.entries.iter().find_map(|e| match e.state(now) {
            LinkState::Up => None,
            s => Some(format!("interface {} is {}", e.name, s.as_str())),
        })
    }

    /// The state of `name` at `now` (`None`: never observed).
    pub fn state(&self, name: &str, now: Instant) -> Option<LinkState> {
        self.entry(name).map(|e| e.state(now))
    }

    /// The last observation of `name` (`None`: missing or never observed).
    pub fn info(&self, name: &str) -> Option<&LinkInfo> {
        self.entry(name).and_then(|e| e.info.as_ref())
    }

    /// The MAC address `name` had before its last change, while it is
    /// still accepted (see [`OLD_MAC_GRACE`]).
    pub fn previous_mac(&self, name: &str, now: Instant) -> Option<[u8; 6]> {
        self.entry(name)
            .and_then(|e| e.previous_mac)
            .filter(|(_, until)| now < *until)
            .map(|(mac, _)| mac)
    }

    /// Records what is wrong with the XDP attachment of `name` (`None`:
    /// nothing).
    pub fn set_xdp_problem(&mut self, name: &str, problem: Option<String>) {
        if let Some(e) = self.entry_mut(name) {
            e.xdp_problem = problem;
        }
    }

    /// Counts one re-attachment of a program found detached from `name`.
    pub fn count_reattachment(&mut self, name: &str) {
        if let Some(e) = self.entry_mut(name) {
            e.xdp_reattachments += 1;
        }
    }

    /// Records the state of the MAC filter of `name`; returns whether it
    /// changed (so that a lasting condition is logged once).
    pub fn set_mac_filter(&mut self, name: &str, filter: MacFilter) -> bool {
        match self.entry_mut(name) {
            Some(e) if e.mac_filter != filter => {
                e.mac_filter = filter;
                true
            }
            _ => false,
        }
    }

    /// Every interface as of `now`, in the order first observed.
    pub fn snapshot(&self, now: Instant) -> Vec<LinkSnap> {
        self.entries
            .iter()
            .map(|e| {
                let state = e.state(now);
                LinkSnap {
                    name: e.name.clone(),
                    state,
                    mac: e.info.as_ref().and_then(|i| i.mac),
                    settle_left: match (state, e.returned) {
                        (LinkState::Settling, Some((at, settle))) => {
                            Some((at + settle).saturating_duration_since(now))
                        }
                        _ => None,
                    },
                    mac_changes: e.mac_changes,
                    xdp_problem: e.xdp_problem.clone(),
                    xdp_reattachments: e.xdp_reattachments,
                    mac_filter: e.mac_filter.clone(),
                }
            })
            .collect()
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    fn entry_mut(&mut self, name: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.name == name)
    }
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
#[path = "links_tests.rs"]
mod tests;
