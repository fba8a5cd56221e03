//! The reload diff: which listeners and reals a new configuration keeps,
//! adds and retires.
//!
//! A listener is its (VIP, port), as in the data path: a rename or a new
//! target port updates it in place. A real is its (backend name, address)
//! within its listener. What stays keeps its id (its tracked flows keep
//! their backend); what is removed drains for its listener's
//! deregistration delay, and comes back with its id if a reload adds it
//! again meanwhile (a quick revert); a changed `target_port` or mode retires every
//! real of the listener (tracked flows drain on the old port or in the
//! old mode) and makes new ones, which inherit the old ones' health.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use tracing::info;

use super::ids::Ids;
use super::{ListenerState, Listeners, RealRef};
use crate::config::{Config, Listener, ListenerMode};
use crate::daemon::model::targets::{TargetKey, Targets};
use crate::health::Health;

/// Health handed from a replaced target to its successor (a listener's
/// `target_port` changed): the backend does not drop out of the table
/// while its new port is checked.
pub type Inherited = BTreeMap<TargetKey, Health>;

impl Listeners {
    /// Applies the listeners of `config` at `now`; `targets` are the
    /// targets the current reals point at. Returns the health new targets
    /// inherit. Reals are left pointing nowhere: the caller rebuilds the
    /// targets and calls [`Listeners::point_at`].
    pub fn reload(&mut self, config: &Config, targets: &Targets, now: Instant) -> Inherited {
        let mut inherited = Inherited::new();
        let mut old: Vec<ListenerState> = std::mem::take(&mut self.list);
        let mut ids_l = Ids::taken(old.iter().map(|l| l.id));
        let mut ids_r = Ids::taken(old.iter().flat_map(|l| l.reals.iter().map(|r| r.id)));
        let mut next = Vec::new();
        for l in &config.listeners {
            let mut st = match take_match(&mut old, l) {
                Some(st) => st,
                None => ListenerState::new(ids_l.fresh(), l, vec![]),
            };
            update_in_place(&mut st, l);
            retarget(&mut st, l, targets, &mut inherited, now);
            diff_reals(&mut st, config, l, &mut ids_r, now);
            next.push(st);
        }
        for mut o in old {
            if !o.retired {
                info!(listener = %o.name, "listener removed: no new flows, tracked flows drain");
            }
            o.retired = true;
            for r in &mut o.reals {
                r.retire(now, o.deregistration_delay);
            }
            next.push(o);
        }
        self.list = next;
        self.hand_drained
            .retain(|n| config.backends.iter().any(|b| &b.name == n));
        inherited
    }
}

/// Takes the listener `l` continues out of `old`: a configured one with
/// its (VIP, port), else a retired one (it comes back; its reals still
/// draining come back with it, see [`diff_reals`]).
fn take_match(old: &mut Vec<ListenerState>, l: &Listener) -> Option<ListenerState> {
    let pos = old
        .iter()
        .position(|o| !o.retired && (o.vip, o.port) == (l.vip, l.port))
        .or_else(|| old.iter().position(|o| (o.vip, o.port) == (l.vip, l.port)))?;
    Some(old.remove(pos))
}

/// The settings a listener takes over in place: name, fail-open policy,
/// deregistration delay (and it is configured again).
fn update_in_place(st: &mut ListenerState, l: &Listener) {
    if st.name != l.name {
        info!(from = %st.name, to = %l.name, "listener renamed");
        st.name = l.name.clone();
    }
    st.retired = false;
    st.all_down = l.all_down;
    st.deregistration_delay = l.deregistration_delay;
}

/// A changed mode or target port retires every real of the listener (new
/// ones are made by [`diff_reals`]); their health goes to `inherited`
/// under the new target's identity (any up one counts as up).
fn retarget(
    st: &mut ListenerState,
    l: &Listener,
    targets: &Targets,
    inherited: &mut Inherited,
    now: Instant,
) {
    let mode_changed = st.mode != l.mode;
    if mode_changed {
        info!(listener = %l.name, from = %st.mode, to = %l.mode,
            "mode changed: tracked flows drain in the old mode, new flows use the new one");
        st.mode = l.mode;
    }
    if st.target_port == l.target_port && !mode_changed {
        return;
    }
    if st.target_port != l.target_port {
        info!(listener = %l.name, from = st.target_port, to = l.target_port,
            "target port changed: tracked flows drain on the old port, new flows go to the new one");
    }
    for r in &mut st.reals {
        if r.target.is_some() {
            let h = targets.health(r.target);
            let key = TargetKey {
                addr: SocketAddr::new(r.address, l.target_port),
                check: l.check.clone(),
            };
            let e = inherited.entry(key).or_insert(h);
            if h == Health::Up {
                *e = Health::Up;
            }
        }
        r.retire(now, st.deregistration_delay);
    }
    st.target_port = l.target_port;
}

/// The reals of `l`: a configured real of the same backend (name and
/// address) is kept, else one a reload removed that still drains (same
/// port and mode) is revived, else a new one made; what is left was
/// removed from this listener and drains (after the configured ones).
fn diff_reals(st: &mut ListenerState, config: &Config, l: &Listener, ids: &mut Ids, now: Instant) {
    let mut reals = Vec::new();
    let fullnat = l.mode == ListenerMode::Fullnat;
    for &b in &l.backends {
        let backend = &config.backends[b];
        let same = |r: &RealRef| r.backend == backend.name && r.address == backend.address;
        let keep = st.reals.iter().position(|r| r.target.is_some() && same(r));
        // A real removed by an earlier reload and still draining, on the
        // same port and in the same mode, comes back with its identity: a
        // quick revert keeps its flows (they would otherwise be cut at the
        // first removal's deadline).
        let revive = || {
            st.reals.iter().position(|r| {
                r.target.is_none()
                    && same(r)
                    && (r.port, r.fullnat) == (l.target_port, fullnat)
                    && r.drain.is_some_and(|d| now < d.until)
            })
        };
        reals.push(match keep.or_else(revive) {
            Some(p) => {
                let mut r = st.reals.remove(p);
                if r.target.is_none() {
                    info!(listener = %l.name, backend = %r.backend, "re-added while draining: keeps its identity and flows");
                    r.drain = None;
                }
                r
            }
            None => RealRef::new(ids.fresh(), config, l, b),
        });
    }
    for mut r in st.reals.drain(..) {
        if r.target.is_some() || r.drain.is_some() {
            r.retire(now, st.deregistration_delay);
            reals.push(r);
        }
    }
    st.reals = reals;
}
