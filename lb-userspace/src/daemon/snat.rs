//! The model's source-NAT state: which addresses new full-NAT flows get,
//! and which addresses a reload removed but flows still use.
//!
//! A family's addresses are written only while some real of that family
//! belongs to a full-NAT listener (configured, or draining after a mode
//! change or a removal): without one, the data path leaves packets to those
//! addresses alone. An address a reload takes out stays recognised as a
//! source-NAT address (`SNAT_ADDRS`, not given to new flows) for the
//! longest `deregistration_delay` of the full-NAT listeners, so the replies
//! of the flows that use it are still translated while they drain.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::model::ListenerState;
use crate::config::{Config, ListenerMode, Snat};
use crate::dataplane::snat::SnatPlan;

/// Addresses a reload removed, until their flows have drained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnatState {
    /// Address → when it stops being recognised.
    pub retiring: BTreeMap<IpAddr, Instant>,
}

impl SnatState {
    /// Records the source-NAT change of a reload from `old` to `new` at
    /// `now`: addresses `old` gave to full-NAT flows and `new` lacks retire
    /// after the longest deregistration delay of `old`'s full-NAT
    /// listeners of their family; an address `new` has again is active.
    pub fn reload(&mut self, old: &Config, new: &Config, now: Instant) {
        let grace = |v4: bool| -> Option<Duration> {
            old.listeners
                .iter()
                .filter(|l| l.mode == ListenerMode::Fullnat && l.vip.is_ipv4() == v4)
                .map(|l| l.deregistration_delay)
                .max()
        };
        let kept = new.snat.all_addrs();
        for a in old.snat.all_addrs() {
            if kept.contains(&a) {
                continue;
            }
            if let Some(g) = grace(a.is_ipv4()) {
                let until = now + g;
                let e = self.retiring.entry(a).or_insert(until);
                *e = (*e).max(until);
            }
        }
        self.retiring.retain(|a, _| !kept.contains(a));
    }

    /// Forgets addresses whose drain ended by `now`; true when one went.
    pub fn tick(&mut self, now: Instant) -> bool {
        let before = self.retiring.len();
        self.retiring.retain(|_, until| now < *until);
        self.retiring.len() != before
    }

    /// The source-NAT plan of `snat` for `listeners`.
    pub fn plan(&self, snat: &Snat, listeners: &[ListenerState]) -> SnatPlan {
        let used = |v4: bool| {
            listeners
                .iter()
                .flat_map(|l| l.reals.iter())
                .any(|r| r.fullnat && r.address.is_ipv4() == v4)
        };
        SnatPlan {
            ipv4: if used(true) {
                snat.ipv4.iter().map(|a| IpAddr::V4(*a)).collect()
            } else {
                Vec::new()
            },
            ipv6: if used(false) {
                snat.ipv6.iter().map(|a| IpAddr::V6(*a)).collect()
            } else {
                Vec::new()
            },
            ports: snat.ports,
            retiring: self.retiring.keys().copied().collect(),
        }
    }
}
