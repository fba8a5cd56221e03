//! Adoption of the maps a previous daemon left ([`MapState`]): which ids
//! the configured listeners and reals continue, what health each target
//! had, and which nodes were drained.
//!
//! A listener continues the pinned listener with its (VIP, port); a real
//! continues the pinned real of that listener with its address and target
//! port, unless the listener was pinned in the other mode (a restart that
//! changes a listener's mode, like one that changes its target port,
//! starts it with new reals). Every id found in the maps is taken, matched
//! or not: an entry the configuration no longer has is cleared at the
//! first write, and its id must not name a new real before that (its flows
//! would follow it).
use std::collections::{BTreeMap, BTreeSet};

use lb_common::{
    ip_from_words, ListenerKey, Real, LISTENER_F_FULLNAT, REAL_F_DRAINING, REAL_F_SERVING,
};

use super::listeners::ids::Ids;
use super::listeners::StartIds;
use super::targets::TargetKey;
use crate::config::{Config, Listener, ListenerMode};
use crate::dataplane::plan::MapState;
use crate::health::Health;

/// What the configuration takes over from the maps.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Per configured listener (config order): the ids it continues.
    pub ids: Vec<StartIds>,
    /// Every listener id in the maps.
    pub taken_listeners: Ids,
    /// Every real id in the maps.
    pub taken_reals: Ids,
    /// Health of each target with an adopted real (serving: up; any
    /// serving listener of the target counts).
    pub known: BTreeMap<TargetKey, Health>,
    /// Nodes whose adopted reals were draining and the configuration does
    /// not drain: drained by hand before the restart.
    pub hand_drained: BTreeSet<String>,
}

impl Adopted {
    /// What `config` takes over from `maps` (nothing from fresh maps).
    pub fn from(config: &Config, maps: &MapState) -> Adopted {
        let mut a = Adopted {
            taken_listeners: Ids::taken(maps.listeners.iter().map(|(_, l)| l.id)),
            taken_reals: Ids::taken(maps.reals.iter().map(|(id, _)| *id)),
            ..Adopted::default()
        };
        for l in &config.listeners {
            let key = ListenerKey::tcp(l.vip, l.port);
            let pinned = maps.listeners.iter().find(|(k, _)| *k == key);
            let listener = pinned.map(|(_, v)| v.id);
            let mode_kept = pinned.is_some_and(|(_, v)| {
                (v.flags & LISTENER_F_FULLNAT != 0) == (l.mode == ListenerMode::Fullnat)
            });
            let reals = l
                .backends
                .iter()
                .map(|&b| {
                    let lid = listener.filter(|_| mode_kept)?;
                    let (rid, r) = pinned_real(maps, config, l, b, lid)?;
                    a.found(config, l, b, r);
                    Some(rid)
                })
                .collect();
            a.ids.push(StartIds { listener, reals });
        }
        a
    }

    /// Records the health and drain of adopted real `r` of backend `b`.
    fn found(&mut self, config: &Config, l: &Listener, b: usize, r: &Real) {
        let up = r.flags & REAL_F_SERVING != 0;
        let h = if up { Health::Up } else { Health::Down };
        let e = self.known.entry(TargetKey::of(config, l, b)).or_insert(h);
        if up {
            *e = Health::Up;
        }
        let backend = &config.backends[b];
        if r.flags & REAL_F_DRAINING != 0 && !backend.drained {
            self.hand_drained.insert(backend.name.clone());
        }
    }
}

/// The pinned real of listener id `lid` for backend `b` of `l`.
fn pinned_real<'m>(
    maps: &'m MapState,
    config: &Config,
    l: &Listener,
    b: usize,
    lid: u32,
) -> Option<(u32, &'m Real)> {
    let address = config.backends[b].address;
    maps.reals
        .iter()
        .find(|(_, r)| {
            r.listener == lid
                && ip_from_words(r.family, r.addr) == Some(address)
                && u16::from_be(r.port) == l.target_port
        })
        .map(|(id, r)| (*id, r))
}
