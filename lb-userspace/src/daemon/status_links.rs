//! The link part of the status: every configured interface's state and
//! what keeps the gateway from forwarding (see `daemon::links`).
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::Status;
use crate::daemon::links::{mac_text, LinkSnap, LinkState, MacFilter};

/// One configured interface's link.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkStatus {
    /// Interface name.
    pub name: String,
    /// `up`, `settling`, `down`, `no_carrier` or `missing`.
    pub state: LinkState,
    /// Its MAC address.
    pub mac: Option<String>,
    /// Seconds left before check results count again (while settling).
    pub settle_remaining_secs: Option<f64>,
    /// Why it keeps the gateway from forwarding (what `/healthz` says).
    pub problem: Option<String>,
    /// MAC address changes seen since the daemon started.
    pub mac_changes: u64,
    /// Times the XDP program was found gone and attached again.
    pub xdp_reattachments: u64,
    /// Why the interface's destination-MAC check is off, if it is (it then
    /// forwards unfiltered).
    #[serde(default)]
    pub mac_filter_off: Option<String>,
}

impl LinkStatus {
    /// The status of one interface as published.
    pub fn of(l: &LinkSnap) -> LinkStatus {
        LinkStatus {
            name: l.name.clone(),
            state: l.state,
            mac: l.mac.as_ref().map(mac_text),
            settle_remaining_secs: l.settle_left.map(|d| d.as_secs_f64()),
            problem: l.problem(),
            mac_changes: l.mac_changes,
            xdp_reattachments: l.xdp_reattachments,
            mac_filter_off: match &l.mac_filter {
                MacFilter::Off(e) => Some(e.clone()),
                MacFilter::Current | MacFilter::Stale(_) => None,
            },
        }
    }
}

impl Status {
    /// `links: gwc up, gwb down`, then one line per interface that keeps
    /// the gateway from forwarding, and whether check results are held.
    pub(super) fn render_links(&self, s: &mut String) {
        if self.links.is_empty() {
            return;
        }
        let links: Vec<String> = self
            .links
            .iter()
            .map(|l| {
                let mut t = format!("{} {}", l.name, l.state.as_str());
                if let Some(left) = l.settle_remaining_secs {
                    let _ = write!(t, " ({left:.1}s left)");
                }
                if l.mac_changes > 0 {
                    let _ = write!(t, ", {} MAC changes", l.mac_changes);
                }
                if l.xdp_reattachments > 0 {
                    let _ = write!(t, ", XDP re-attached {}x", l.xdp_reattachments);
                }
                if let Some(why) = &l.mac_filter_off {
                    let _ = write!(t, ", destination-MAC check off ({why})");
                }
                t
            })
            .collect();
        let _ = writeln!(s, "links: {}", links.join(", "));
        for p in self.links.iter().filter_map(|l| l.problem.as_ref()) {
            let _ = writeln!(s, "NOT FORWARDING: {p}");
        }
        if let Some(h) = &self.checks_held {
            let _ = writeln!(s, "CHECK RESULTS SET ASIDE: {h}");
        }
    }
}
