//! The listeners and their reals: ids (stable across reloads and
//! restarts), drains (by hand, by the configuration, or of what a reload
//! removed) and the reload diff ([`reload`]).
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{AllDown, Config, Listener, ListenerMode};

pub mod ids;
mod reload;

pub use ids::check_limits;

/// How long a removed or drained real keeps its tracked flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    /// When its tracked flows are cut off (deregistration delay expires).
    pub until: Instant,
}

/// A real: one backend of one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealRef {
    /// Real id in the data path (stable across reloads and restarts).
    pub id: u32,
    /// Backend (node) name.
    pub backend: String,
    /// Backend address.
    pub address: IpAddr,
    /// Backend port (the listener's target port when the real was made).
    pub port: u16,
    /// Made for a full-NAT listener (its mode when the real was made: a
    /// mode change retires the reals, as a `target_port` change does).
    pub fullnat: bool,
    /// Index into the model's targets; `None` once removed from the config.
    pub target: Option<usize>,
    /// Set while draining (removed from the config, or its node drained by hand).
    pub drain: Option<Drain>,
}

impl RealRef {
    /// A new real of backend `b` of `config` for listener `l`.
    fn new(id: u32, config: &Config, l: &Listener, b: usize) -> RealRef {
        let backend = &config.backends[b];
        RealRef {
            id,
            backend: backend.name.clone(),
            address: backend.address,
            port: l.target_port,
            fullnat: l.mode == ListenerMode::Fullnat,
            target: None,
            drain: None,
        }
    }

    /// Removed from the config: no target, and drains (if not already)
    /// until `delay` from `now`.
    fn retire(&mut self, now: Instant, delay: Duration) {
        self.target = None;
        self.drain.get_or_insert(Drain { until: now + delay });
    }

    /// Configured, not drained: may take new flows.
    pub fn eligible(&self) -> bool {
        self.target.is_some() && self.drain.is_none()
    }
}

/// A listener and its reals. Listeners removed from the config stay (retired)
/// until their reals' deregistration delay expires.
#[derive(Clone, Debug)]
pub struct ListenerState {
    /// Listener id in the data path (stable across reloads and restarts).
    pub id: u32,
    /// Listener name.
    pub name: String,
    /// VIP.
    pub vip: IpAddr,
    /// VIP port.
    pub port: u16,
    /// Backend port.
    pub target_port: u16,
    /// `dnat` or `fullnat`.
    pub mode: ListenerMode,
    /// What to do when every backend is down.
    pub all_down: AllDown,
    /// How long removed or drained reals keep their flows.
    pub deregistration_delay: Duration,
    /// Reals, in config order (removed ones last).
    pub reals: Vec<RealRef>,
    /// Removed from the config: takes no new flows.
    pub retired: bool,
}

impl ListenerState {
    /// A configured listener with id `id` and the given reals.
    fn new(id: u32, l: &Listener, reals: Vec<RealRef>) -> Self {
        ListenerState {
            id,
            name: l.name.clone(),
            vip: l.vip,
            port: l.port,
            target_port: l.target_port,
            mode: l.mode,
            all_down: l.all_down,
            deregistration_delay: l.deregistration_delay,
            reals,
            retired: false,
        }
    }
}

/// Ids a configured listener starts with (see `super::adopt`): its own
/// and each of its backends' (config order); `None` gets a fresh id.
#[derive(Clone, Debug, Default)]
pub struct StartIds {
    /// The listener's id, if adopted.
    pub listener: Option<u32>,
    /// Each backend's real id, if adopted.
    pub reals: Vec<Option<u32>>,
}

/// Every listener, configured ones first (config order), then retired
/// ones; and the nodes drained by hand.
#[derive(Clone, Debug, Default)]
pub struct Listeners {
    list: Vec<ListenerState>,
    hand_drained: BTreeSet<String>,
}

impl Listeners {
    /// The listeners of `config`, with the ids of `start` (one per
    /// configured listener); ids in `taken_l`, `taken_r` are never given out.
    pub fn start(
        config: &Config,
        start: &[StartIds],
        mut taken_l: ids::Ids,
        mut taken_r: ids::Ids,
    ) -> Listeners {
        // Adopted ids first, so fresh ids never collide with them.
        for s in start {
            s.listener.into_iter().for_each(|id| taken_l.take(id));
            s.reals.iter().flatten().for_each(|id| taken_r.take(*id));
        }
        let mut list = Vec::new();
        for (l, s) in config.listeners.iter().zip(start) {
            let id = s.listener.unwrap_or_else(|| taken_l.fresh());
            list.push(ListenerState::new(id, l, Vec::new()));
        }
        // Real ids after every listener's: fresh real ids in config order.
        for ((st, l), s) in list.iter_mut().zip(&config.listeners).zip(start) {
            for (&b, rid) in l.backends.iter().zip(&s.reals) {
                let rid = rid.unwrap_or_else(|| taken_r.fresh());
                st.reals.push(RealRef::new(rid, config, l, b));
            }
        }
        Listeners {
            list,
            hand_drained: BTreeSet::new(),
        }
    }

    /// Every listener, configured ones first.
    pub fn all(&self) -> &[ListenerState] {
        &self.list
    }

    /// Points the reals of configured listener `i` (config order) at
    /// targets: `assigned[i][j]` is the target of its `j`-th backend.
    pub fn point_at(&mut self, assigned: &[Vec<usize>]) {
        for (l, targets) in self.list.iter_mut().zip(assigned) {
            for (r, t) in l.reals.iter_mut().zip(targets) {
                r.target = Some(*t);
            }
        }
    }

    /// Nodes drained by hand (`lb drain`).
    pub fn hand_drained(&self) -> &BTreeSet<String> {
        &self.hand_drained
    }

    /// Records a drain by hand; true when it is new.
    pub fn drain_by_hand(&mut self, node: &str) -> bool {
        self.hand_drained.insert(node.to_string())
    }

    /// Ends a drain by hand; true when there was one.
    pub fn undrain_by_hand(&mut self, node: &str) -> bool {
        self.hand_drained.remove(node)
    }

    /// Drains the configured reals of `node` that are not draining yet,
    /// each until its listener's deregistration delay from `now`.
    pub fn start_drain_of(&mut self, node: &str, now: Instant) {
        for l in &mut self.list {
            let delay = l.deregistration_delay;
            for r in &mut l.reals {
                if r.backend == node && r.target.is_some() && r.drain.is_none() {
                    r.drain = Some(Drain { until: now + delay });
                }
            }
        }
    }

    /// Clears the drain of a node's configured reals.
    pub fn end_drain_of(&mut self, node: &str) {
        for l in &mut self.list {
            for r in &mut l.reals {
                if r.backend == node && r.target.is_some() {
                    r.drain = None;
                }
            }
        }
    }

    /// Forgets removed reals and retired listeners whose delay has expired.
    /// Returns true when it forgot something.
    pub fn tick(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for l in &mut self.list {
            let before = l.reals.len();
            l.reals
                .retain(|r| !(r.target.is_none() && r.drain.is_some_and(|d| now >= d.until)));
            changed |= l.reals.len() != before;
        }
        let before = self.list.len();
        self.list.retain(|l| !(l.retired && l.reals.is_empty()));
        changed | (self.list.len() != before)
    }
}
