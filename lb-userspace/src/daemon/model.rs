//! The daemon's model of the world: check targets and their health, and the
//! data-path plan derived from them. Pure logic, no I/O, unit-tested.
//!
//! # Down is not dead
//!
//! A node that fails this gateway's checks leaves the table of new flows at
//! once, but it keeps its tracked flows and its place in the mid-flow table
//! (see `dataplane::tables`) until it is *proven dead* ([`Model::proven_dead`]):
//! down, and either the data path saw it leave the traffic it was sent
//! unanswered for `SILENCE_BOUND` (see `super::evidence`), or it has been
//! down for longer than the listener's `deregistration_delay`. What the
//! checks meet proves nothing by itself: a filter between this gateway and
//! a node that serves the other gateway's clients times out, or rejects
//! with a RST or an ICMP error, exactly like a dead node, while the node
//! keeps answering its flows. That is what lets the streams of such a node
//! survive a takeover by a gateway whose checks disagree with the old
//! master's, and what gets a node that died without a word (power cut) its
//! streams reset within seconds of its checks failing.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use lb_common::{ip_from_words, ListenerKey, LISTENER_F_FULLNAT, REAL_F_DRAINING, REAL_F_SERVING};

use tracing::{error, info, warn};

use super::evidence::{self, Evidence};
use super::snat::SnatState;
use crate::config::{AllDown, Check, Config, ListenerMode};
use crate::dataplane::{tables::MapState, ListenerPlan, Plan, RealPlan};
use crate::health::{CheckOutcome, Health, HealthState, Transition};

/// A health target's identity: what is probed and how (address, port,
/// kind of check and the settings that define it: path, SNI, CA, expected
/// statuses). Listeners that share it (e.g. Talos 50000 and 50001 → 50000)
/// share one check. Timing is not part of it: changing the interval,
/// timeout, thresholds or jitter restarts the checker and keeps the state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetKey {
    /// Backend address and target port.
    pub addr: SocketAddr,
    /// The kind of check and its settings.
    pub check: Check,
}

/// How often and how strictly a target is checked: attributes of a target,
/// not part of its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Time between two checks.
    pub interval: Duration,
    /// Limit on one check.
    pub timeout: Duration,
    /// Successes that bring a down backend up.
    pub healthy_threshold: u32,
    /// Failures that take an up backend down.
    pub unhealthy_threshold: u32,
    /// Random extra delay before each check.
    pub jitter: Duration,
}

impl Timing {
    fn of(l: &crate::config::Listener) -> Timing {
        let h = &l.health;
        Timing {
            interval: h.interval,
            timeout: h.timeout,
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            jitter: h.jitter,
        }
    }
}

/// One health-check target and what is known of it.
#[derive(Clone, Debug)]
pub struct Target {
    /// What is probed.
    pub key: TargetKey,
    /// How often and how strictly (the first listener using the target,
    /// in config order, decides).
    pub timing: Timing,
    /// Name of the backend (node) probed.
    pub backend: String,
    /// Threshold state machine.
    pub state: HealthState,
    /// Reason of the last result ("ok", "refused", "timeout", ...).
    pub last_reason: Option<String>,
    /// Checks completed so far.
    pub checks: u64,
    /// When the target went down (as this daemon knows it); `None` while up.
    pub down_since: Option<Instant>,
    /// A failure of the current failure streak was the node's own answer
    /// (refused, unreachable; see [`CheckOutcome::proves_dead`]). Shown,
    /// no longer decisive: a firewall answers the same way.
    pub dead_evidence: bool,
    /// The data path saw the node refuse a SYN (see `super::evidence`):
    /// out of new-flow choices until a check confirms or clears it.
    pub refused_at: Option<Instant>,
}

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
    /// Index into `Model::targets`; `None` once removed from the config.
    pub target: Option<usize>,
    /// Set while draining (removed from the config, or its node drained by hand).
    pub drain: Option<Drain>,
}

impl RealRef {
    /// Removed from the config: no target, and drains (if not already)
    /// until `delay` from `now`.
    fn retire(&mut self, now: Instant, delay: Duration) {
        self.target = None;
        self.drain.get_or_insert(Drain { until: now + delay });
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
    /// Every eligible backend is down and new flows spread over all of them.
    pub failing_open: bool,
    /// Removed from the config: takes no new flows.
    pub retired: bool,
    /// Every eligible backend is down and `all_down = "drop"`.
    pub dropping: bool,
    /// Failing open after checks said every backend is down (logged once).
    pub fail_open_alarm: bool,
}

impl ListenerState {
    /// A configured listener with id `id` and the given reals.
    fn new(id: u32, l: &crate::config::Listener, reals: Vec<RealRef>) -> Self {
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
            failing_open: false,
            retired: false,
            dropping: false,
            fail_open_alarm: false,
        }
    }
}

/// Health of every target and the reals that depend on them.
#[derive(Clone, Debug)]
pub struct Model {
    /// The configuration in force.
    pub config: Config,
    /// Health-check targets; the index is the checker id within `generation`.
    pub targets: Vec<Target>,
    /// Configured listeners (config order), then retired ones.
    pub listeners: Vec<ListenerState>,
    /// Nodes drained by hand (`lb drain`).
    pub drained_nodes: BTreeSet<String>,
    /// Bumped when targets are rebuilt (start, reload).
    pub generation: u64,
    /// Source-NAT addresses a reload removed, kept recognised while the
    /// flows using them drain.
    pub snat: SnatState,
    /// The data path's evidence of life per real (read every tick).
    pub evidence: Evidence,
}

fn target_key(config: &Config, l: &crate::config::Listener, b: usize) -> TargetKey {
    TargetKey {
        addr: SocketAddr::new(config.backends[b].address, l.target_port),
        check: l.check.clone(),
    }
}

/// Lowest id not in `used`.
fn free_id(used: &BTreeSet<u32>) -> u32 {
    (0..)
        .find(|i| !used.contains(i))
        .expect("ids are bounded by config limits")
}

impl Model {
    /// Builds the model of `config` on fresh maps: every backend starts up on
    /// probation (one failed check takes it down), as HAProxy does.
    pub fn new(config: Config) -> Self {
        Self::build(config, &MapState::default(), Instant::now())
    }

    /// Builds the model of `config` on maps a previous daemon left: listener
    /// and real ids found there are kept (tracked flows stay valid), and each
    /// backend keeps its last known health (serving or not) until checks say
    /// otherwise, so start-up never black-holes new flows.
    pub fn adopt(config: Config, maps: &MapState) -> Self {
        Self::build(config, maps, Instant::now())
    }

    fn build(config: Config, maps: &MapState, now: Instant) -> Self {
        let mut m = Model {
            config: config.clone(),
            targets: Vec::new(),
            listeners: Vec::new(),
            drained_nodes: BTreeSet::new(),
            generation: 0,
            snat: SnatState::default(),
            evidence: Evidence::default(),
        };
        // Every id found in the maps is taken, matched or not: an entry the
        // config no longer has is cleared at the first write, and its id must
        // not name a new real before that (its flows would follow it).
        let mut used_l: BTreeSet<u32> = maps.listeners.iter().map(|(_, l)| l.id).collect();
        let mut used_r: BTreeSet<u32> = maps.reals.iter().map(|(id, _)| *id).collect();
        // Ids first from the maps, so fresh ids never collide with adopted ones.
        let mut adopted_l: Vec<Option<u32>> = Vec::new();
        let mut mode_kept: Vec<bool> = Vec::new();
        for l in &config.listeners {
            let key = ListenerKey::tcp(l.vip, l.port);
            let id = maps
                .listeners
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.id);
            // Pinned in the other mode: its reals are not adopted (a
            // restart that changes a listener's mode, like one that
            // changes its target port, starts it with new reals).
            mode_kept.push(maps.listeners.iter().any(|(k, v)| {
                *k == key
                    && (v.flags & LISTENER_F_FULLNAT != 0) == (l.mode == ListenerMode::Fullnat)
            }));
            if let Some(id) = id {
                used_l.insert(id);
            }
            adopted_l.push(id);
        }
        let mut known: BTreeMap<TargetKey, Health> = BTreeMap::new();
        for (li, l) in config.listeners.iter().enumerate() {
            let id = adopted_l[li].unwrap_or_else(|| {
                let id = free_id(&used_l);
                used_l.insert(id);
                id
            });
            let mut reals = Vec::new();
            for &b in &l.backends {
                let backend = &config.backends[b];
                let found = adopted_l[li].filter(|_| mode_kept[li]).and_then(|lid| {
                    maps.reals.iter().find(|(_, r)| {
                        r.listener == lid
                            && ip_from_words(r.family, r.addr) == Some(backend.address)
                            && u16::from_be(r.port) == l.target_port
                    })
                });
                let rid = match found {
                    Some((rid, r)) => {
                        let up = r.flags & REAL_F_SERVING != 0;
                        let key = target_key(&config, l, b);
                        let h = if up { Health::Up } else { Health::Down };
                        // Any serving listener of the target counts as up.
                        let e = known.entry(key).or_insert(h);
                        if up {
                            *e = Health::Up;
                        }
                        if r.flags & REAL_F_DRAINING != 0 && !backend.drained {
                            m.drained_nodes.insert(backend.name.clone());
                        }
                        *rid
                    }
                    None => u32::MAX,
                };
                used_r.insert(rid);
                reals.push(RealRef {
                    id: rid,
                    backend: backend.name.clone(),
                    address: backend.address,
                    port: l.target_port,
                    fullnat: l.mode == ListenerMode::Fullnat,
                    target: None,
                    drain: None,
                });
            }
            m.listeners.push(ListenerState::new(id, l, reals));
        }
        for l in &mut m.listeners {
            for r in &mut l.reals {
                if r.id == u32::MAX {
                    r.id = free_id(&used_r);
                    used_r.insert(r.id);
                }
            }
        }
        used_r.remove(&u32::MAX);
        m.rebuild_targets(&BTreeMap::new(), &known, now);
        for node in m.all_drained() {
            m.start_drain_of(&node, now);
        }
        m
    }

    /// Rebuilds `targets` from the config and points every configured real at
    /// its target. State (health, streaks, history, last result) carries over
    /// from `old` (same identity, whatever its timing), else health from
    /// `known` (adopted maps, or the target a listener's `target_port`
    /// change replaced: up means up on probation); a brand-new target starts
    /// up on probation on a fresh start, down after a reload (it must pass
    /// checks before taking flows).
    fn rebuild_targets(
        &mut self,
        old: &BTreeMap<TargetKey, Target>,
        known: &BTreeMap<TargetKey, Health>,
        now: Instant,
    ) {
        self.generation += 1;
        let fresh_start = self.generation == 1 && known.is_empty();
        let mut targets: Vec<Target> = Vec::new();
        let mut index: BTreeMap<TargetKey, usize> = BTreeMap::new();
        let config = self.config.clone();
        for (li, l) in config.listeners.iter().enumerate() {
            let h = &l.health;
            for (ri, &b) in l.backends.iter().enumerate() {
                let key = target_key(&config, l, b);
                let t = *index.entry(key.clone()).or_insert_with(|| {
                    let timing = Timing::of(l);
                    if let Some(o) = old.get(&key) {
                        let mut t = o.clone();
                        t.state
                            .set_thresholds(h.healthy_threshold, h.unhealthy_threshold);
                        t.timing = timing;
                        t.backend = config.backends[b].name.clone();
                        targets.push(t);
                        return targets.len() - 1;
                    }
                    let state = match known.get(&key) {
                        Some(Health::Up) if self.generation > 1 => {
                            HealthState::new(h.healthy_threshold, h.unhealthy_threshold)
                        }
                        Some(known) => HealthState::with_state(
                            *known,
                            h.healthy_threshold,
                            h.unhealthy_threshold,
                        ),
                        None if fresh_start => {
                            HealthState::new(h.healthy_threshold, h.unhealthy_threshold)
                        }
                        None => HealthState::with_state(
                            Health::Down,
                            h.healthy_threshold,
                            h.unhealthy_threshold,
                        ),
                    };
                    // Down from the start (adopted, or added by a reload):
                    // the grace before it counts as dead starts now.
                    let down_since = (state.health() == Health::Down).then_some(now);
                    targets.push(Target {
                        key,
                        timing,
                        backend: config.backends[b].name.clone(),
                        state,
                        last_reason: None,
                        checks: 0,
                        down_since,
                        dead_evidence: false,
                        refused_at: None,
                    });
                    targets.len() - 1
                });
                self.listeners[li].reals[ri].target = Some(t);
            }
        }
        self.targets = targets;
    }

    /// Applies a new configuration: listeners and backends added or removed,
    /// health parameters changed. Reals that remain keep their ids (their
    /// flows keep their backend); removed ones drain for the listener's
    /// deregistration delay; removed listeners take no new flows and drain too.
    pub fn reload(&mut self, config: Config) {
        self.reload_at(config, Instant::now())
    }

    fn reload_at(&mut self, config: Config, now: Instant) {
        let was_config_drained = self.config_drained();
        let old_targets: BTreeMap<TargetKey, Target> = self
            .targets
            .iter()
            .map(|t| (t.key.clone(), t.clone()))
            .collect();
        // Health handed from a replaced target to its successor (a
        // listener's target_port changed): the backend does not drop out
        // of the table while its new port is checked.
        let mut inherited: BTreeMap<TargetKey, Health> = BTreeMap::new();
        let mut old: Vec<ListenerState> = std::mem::take(&mut self.listeners);
        let mut used_l: BTreeSet<u32> = old.iter().map(|l| l.id).collect();
        let mut used_r: BTreeSet<u32> = old
            .iter()
            .flat_map(|l| l.reals.iter().map(|r| r.id))
            .collect();
        let mut next = Vec::new();
        for l in &config.listeners {
            // A listener is its (VIP, port), as in the data path: a rename
            // or a new target port updates it in place. A retired one with
            // the same key comes back (its draining reals stay draining).
            let pos = old
                .iter()
                .position(|o| !o.retired && (o.vip, o.port) == (l.vip, l.port))
                .or_else(|| old.iter().position(|o| (o.vip, o.port) == (l.vip, l.port)));
            let mut st = match pos {
                Some(p) => old.remove(p),
                None => {
                    let id = free_id(&used_l);
                    used_l.insert(id);
                    ListenerState::new(id, l, vec![])
                }
            };
            if st.name != l.name {
                info!(from = %st.name, to = %l.name, "listener renamed");
                st.name = l.name.clone();
            }
            st.retired = false;
            st.all_down = l.all_down;
            st.deregistration_delay = l.deregistration_delay;
            let mode_changed = st.mode != l.mode;
            if mode_changed {
                info!(listener = %l.name, from = %st.mode, to = %l.mode,
                    "mode changed: tracked flows drain in the old mode, new flows use the new one");
                st.mode = l.mode;
            }
            if st.target_port != l.target_port || mode_changed {
                if st.target_port != l.target_port {
                    info!(listener = %l.name, from = st.target_port, to = l.target_port,
                        "target port changed: tracked flows drain on the old port, new flows go to the new one");
                }
                for r in &mut st.reals {
                    if let Some(t) = r.target {
                        let h = self.targets[t].state.health();
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
            let mut reals = Vec::new();
            for &b in &l.backends {
                let backend = &config.backends[b];
                let keep = st.reals.iter().position(|r| {
                    r.target.is_some() && r.backend == backend.name && r.address == backend.address
                });
                let real = match keep {
                    Some(p) => st.reals.remove(p),
                    None => {
                        let id = free_id(&used_r);
                        used_r.insert(id);
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
                };
                reals.push(real);
            }
            // Whatever is left was removed from this listener: drain it.
            for mut r in st.reals.drain(..) {
                if r.target.is_some() || r.drain.is_some() {
                    r.retire(now, st.deregistration_delay);
                    reals.push(r);
                }
            }
            st.reals = reals;
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
        self.listeners = next;
        self.drained_nodes
            .retain(|n| config.backends.iter().any(|b| &b.name == n));
        self.snat.reload(&self.config, &config, now);
        self.config = config;
        self.rebuild_targets(&old_targets, &inherited, now);
        let drained = self.all_drained();
        for node in &drained {
            self.start_drain_of(node, now);
        }
        // `drained = true` taken out of the file ends that drain (unless the
        // node is also drained by hand).
        for node in was_config_drained.difference(&drained) {
            info!(node = %node, "no longer drained by the configuration: takes new flows again");
            self.end_drain_of(node);
        }
    }

    /// Nodes drained by the configuration (`drained = true`).
    pub fn config_drained(&self) -> BTreeSet<String> {
        self.config
            .backends
            .iter()
            .filter(|b| b.drained)
            .map(|b| b.name.clone())
            .collect()
    }

    /// Every drained node: by hand (`lb drain`) or by the configuration.
    pub fn all_drained(&self) -> BTreeSet<String> {
        let mut all = self.config_drained();
        all.extend(self.drained_nodes.iter().cloned());
        all
    }

    /// Drains a node across all its listeners: no new flows; tracked flows
    /// continue until the deregistration delay expires. Errors on an unknown node.
    pub fn drain(&mut self, node: &str) -> Result<(), String> {
        if !self.config.backends.iter().any(|b| b.name == node) {
            return Err(format!("no backend named {node:?}"));
        }
        if self.drained_nodes.insert(node.to_string()) {
            warn!(node, "draining: no new flows");
        }
        self.start_drain_of(node, Instant::now());
        Ok(())
    }

    /// Ends a drain: the node's reals take new flows again once healthy.
    pub fn undrain(&mut self, node: &str) -> Result<(), String> {
        if !self.config.backends.iter().any(|b| b.name == node) {
            return Err(format!("no backend named {node:?}"));
        }
        if self.config_drained().contains(node) {
            return Err(format!(
                "{node} is drained by the configuration (drained = true): remove that line and \
                 reload (on every gateway of a pair)"
            ));
        }
        if self.drained_nodes.remove(node) {
            info!(node, "undrained: takes new flows again");
        }
        self.end_drain_of(node);
        Ok(())
    }

    /// Clears the drain of a node's configured reals.
    fn end_drain_of(&mut self, node: &str) {
        for l in &mut self.listeners {
            for r in &mut l.reals {
                if r.backend == node && r.target.is_some() {
                    r.drain = None;
                }
            }
        }
    }

    fn start_drain_of(&mut self, node: &str, now: Instant) {
        for l in &mut self.listeners {
            let delay = l.deregistration_delay;
            for r in &mut l.reals {
                if r.backend == node && r.target.is_some() && r.drain.is_none() {
                    r.drain = Some(Drain { until: now + delay });
                }
            }
        }
    }

    /// Forgets removed reals and retired listeners whose delay has expired.
    /// Returns true when it forgot something.
    pub fn tick(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for l in &mut self.listeners {
            let before = l.reals.len();
            l.reals
                .retain(|r| !(r.target.is_none() && r.drain.is_some_and(|d| now >= d.until)));
            changed |= l.reals.len() != before;
        }
        let before = self.listeners.len();
        self.listeners
            .retain(|l| !(l.retired && l.reals.is_empty()));
        changed |= self.listeners.len() != before;
        changed |= self.snat.tick(now);
        changed
    }

    /// Records a check result of the current generation. Returns true when
    /// the target's health changed (the plan must be rewritten). Logs every
    /// transition with its reason.
    pub fn record(&mut self, target: usize, outcome: &CheckOutcome) -> bool {
        let Some(t) = self.targets.get_mut(target) else {
            return false;
        };
        Self::record_into(t, outcome)
    }

    /// Index of the target with identity `key`, if the configuration has it.
    pub fn target_index(&self, key: &TargetKey) -> Option<usize> {
        self.targets.iter().position(|t| &t.key == key)
    }

    /// Records a result of the checker of `key` (see [`Model::record`]);
    /// a result for a target the configuration no longer has is ignored.
    pub fn record_key(&mut self, key: &TargetKey, outcome: &CheckOutcome) -> bool {
        match self.target_index(key) {
            Some(i) => self.record(i, outcome),
            None => false,
        }
    }

    fn record_into(t: &mut Target, outcome: &CheckOutcome) -> bool {
        t.checks += 1;
        t.last_reason = Some(outcome.reason.clone());
        let from = t.state.health();
        let changed = t.state.record(outcome.success);
        let refusal_ended = evidence::on_check(t, outcome, Instant::now());
        let was_dead = t.state.health() == Health::Down && t.dead_evidence;
        t.dead_evidence = !outcome.success && (t.dead_evidence || outcome.proves_dead);
        match changed {
            Some(Health::Down) => t.down_since = Some(Instant::now()),
            Some(Health::Up) => t.down_since = None,
            None => {}
        }
        // Evidence that a down node is dead changes the plan (its flows are
        // rescheduled, it leaves the mid-flow table) without a transition.
        let now_dead = t.state.health() == Health::Down && t.dead_evidence;
        if let Some(to) = changed {
            t.state.push_transition(Transition::new(
                SystemTime::now(),
                from,
                to,
                &outcome.reason,
            ));
        }
        let check = t.key.check.kind();
        match changed {
            Some(Health::Down) => {
                warn!(backend = %t.backend, target = %t.key.addr, %check, reason = %outcome.reason, "backend down");
                true
            }
            Some(Health::Up) => {
                info!(backend = %t.backend, target = %t.key.addr, %check, reason = %outcome.reason, "backend up");
                true
            }
            None => was_dead != now_dead || refusal_ended,
        }
    }

    /// Whether `real` is proven dead to this gateway at `now` (see the
    /// module doc): down, and silent in the data path for
    /// `evidence::SILENCE_BOUND`, or down for longer than `grace` (the
    /// listener's deregistration delay). A removed real counts as dead
    /// here: whether it keeps flows is decided by its drain.
    pub fn proven_dead(&self, real: &RealRef, grace: Duration, now: Instant) -> bool {
        let Some(t) = real.target.and_then(|t| self.targets.get(t)) else {
            return true;
        };
        t.state.health() == Health::Down
            && (self.evidence.is_silent(real.id) || t.down_since.is_some_and(|s| now >= s + grace))
    }

    /// When a down real that keeps its flows loses them at the latest (its
    /// grace ends), for the status countdown; `None` when it is not down.
    pub fn kept_until(&self, real: &RealRef, grace: Duration) -> Option<Instant> {
        let t = real.target.and_then(|t| self.targets.get(t))?;
        (t.state.health() == Health::Down)
            .then_some(t.down_since)
            .flatten()
            .map(|s| s + grace)
    }

    /// True once every target has been checked at least once.
    pub fn first_round_done(&self) -> bool {
        self.targets.iter().all(|t| t.checks > 0)
    }

    /// True while the data path's refusal mark holds `real` out of the
    /// new-flow table (see `super::evidence`).
    pub fn refused(&self, real: &RealRef) -> bool {
        real.target
            .and_then(|t| self.targets.get(t))
            .is_some_and(|t| t.refused_at.is_some())
    }

    /// Health of a real (a removed real is down).
    pub fn health(&self, real: &RealRef) -> Health {
        match real.target {
            Some(t) => self.targets[t].state.health(),
            None => Health::Down,
        }
    }

    /// The data-path plan for the current health and drains. A listener whose
    /// eligible backends are all down fails open (spreads new flows over all
    /// of them, as an NLB does) unless `all_down = "drop"`; entering and
    /// leaving that state is logged loudly.
    pub fn plan(&mut self) -> Plan {
        self.plan_at(Instant::now())
    }

    /// The plan as of `now` (see [`Model::plan`]).
    pub fn plan_at(&mut self, now: Instant) -> Plan {
        let mut listeners = Vec::new();
        for i in 0..self.listeners.len() {
            let l = &self.listeners[i];
            let eligible: Vec<bool> = l
                .reals
                .iter()
                .map(|r| !l.retired && r.target.is_some() && r.drain.is_none())
                .collect();
            let up: Vec<bool> = l
                .reals
                .iter()
                .zip(&eligible)
                .map(|(r, e)| *e && self.health(r) == Health::Up && !self.refused(r))
                .collect();
            let none_up = !up.iter().any(|u| *u) && eligible.iter().any(|e| *e);
            // A listener added by a reload starts with every backend down
            // until its first checks: that is not an outage worth an ERROR.
            let unchecked = l
                .reals
                .iter()
                .zip(&eligible)
                .filter(|(_, e)| **e)
                .all(|(r, _)| r.target.is_some_and(|t| self.targets[t].checks == 0));
            let fail_open = none_up && l.all_down == AllDown::FailOpen;
            let dropping = none_up && l.all_down == AllDown::Drop;
            // Failing open is an alarm once the checks have spoken (logged
            // once); before a new listener's first checks it is expected.
            let alarm = fail_open && !unchecked;
            if fail_open && !l.failing_open && unchecked {
                info!(listener = %l.name, "no backend checked yet: new flows spread over all configured backends until the first checks");
            }
            if alarm && !l.fail_open_alarm {
                error!(listener = %l.name, "every backend is down: failing open, new flows spread over all configured backends");
            }
            if !fail_open && l.failing_open {
                info!(listener = %l.name, "no longer failing open");
            }
            // Logged once per transition, not on every tick.
            if dropping != l.dropping {
                match (dropping, unchecked) {
                    (true, true) => {
                        info!(listener = %l.name, "no backend checked yet: new flows are dropped until the first checks (all_down = \"drop\")")
                    }
                    (true, false) => {
                        warn!(listener = %l.name, "every backend is down: new flows are dropped (all_down = \"drop\")")
                    }
                    (false, _) => {
                        info!(listener = %l.name, "a backend is up again: new flows accepted")
                    }
                }
            }
            let reals = l
                .reals
                .iter()
                .zip(up.iter().zip(&eligible))
                .map(|(r, (up, eligible))| {
                    let draining = r.drain.is_some_and(|d| now < d.until);
                    let configured = !l.retired && r.target.is_some();
                    RealPlan {
                        id: r.id,
                        name: r.backend.clone(),
                        addr: r.address,
                        port: r.port,
                        fullnat: r.fullnat,
                        serving: *up || (fail_open && *eligible),
                        draining,
                        // Down is not dead: see the module doc.
                        keeps_flows: (*eligible || (configured && draining))
                            && !self.proven_dead(r, l.deregistration_delay, now),
                    }
                })
                .collect();
            listeners.push(ListenerPlan {
                id: l.id,
                vip: l.vip,
                port: l.port,
                target_port: l.target_port,
                fullnat: l.mode == ListenerMode::Fullnat,
                reals,
            });
            self.listeners[i].failing_open = fail_open;
            self.listeners[i].dropping = dropping;
            self.listeners[i].fail_open_alarm = alarm;
        }
        listeners.sort_by_key(|l| l.id);
        let snat = self.snat.plan(&self.config.snat, &self.listeners);
        Plan { listeners, snat }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[dataplane]
interfaces = ["eth1"]
[health]
interval = "2s"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 2
[[backend]]
name = "cp-01"
address = "192.168.30.31"
[[backend]]
name = "cp-02"
address = "192.168.30.32"
[[listener]]
name = "kubernetes-api"
vip = "192.168.30.30"
port = 6443
[[listener]]
name = "talos-api"
vip = "192.168.30.30"
port = 50000
all_down = "drop"
[[listener]]
name = "talos-api-workers"
vip = "192.168.30.30"
port = 50001
target_port = 50000
all_down = "drop"
"#;

    fn outcome(success: bool) -> CheckOutcome {
        CheckOutcome {
            success,
            reason: if success { "ok" } else { "refused" }.into(),
            proves_dead: !success,
            duration: Duration::from_millis(1),
        }
    }

    fn serving(plan: &Plan, listener: usize) -> Vec<bool> {
        plan.listeners[listener]
            .reals
            .iter()
            .map(|r| r.serving)
            .collect()
    }

    #[test]
    fn listeners_sharing_a_backend_port_share_checks() {
        let m = Model::new(Config::from_toml_str(CONFIG).unwrap());
        // 2 backends × (6443, 50000); 50001 → 50000 reuses the 50000 checks.
        assert_eq!(m.targets.len(), 4);
        assert_eq!(
            m.listeners[1].reals[0].target.unwrap(),
            m.listeners[2].reals[0].target.unwrap()
        );
        let ids: Vec<u32> = m
            .listeners
            .iter()
            .flat_map(|l| l.reals.iter())
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5], "real ids are dense and stable");
    }

    #[test]
    fn down_backend_leaves_the_table_and_all_down_fails_open_or_drops() {
        let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
        assert_eq!(
            serving(&m.plan(), 0),
            vec![true, true],
            "start up on probation"
        );
        let t0 = m.listeners[0].reals[0].target.unwrap();
        assert!(
            m.record(t0, &outcome(false)),
            "probation: one failure takes it down"
        );
        assert_eq!(serving(&m.plan(), 0), vec![false, true]);
        let t1 = m.listeners[0].reals[1].target.unwrap();
        assert!(m.record(t1, &outcome(false)));
        let p = m.plan();
        assert_eq!(
            serving(&p, 0),
            vec![true, true],
            "fail open: every backend serves"
        );
        assert!(m.listeners[0].failing_open);
        // Recovery needs healthy_threshold successes. (The first one
        // already changes the plan: a node that answers is no longer
        // proven dead, so it keeps flows again.)
        m.record(t1, &outcome(true));
        assert_eq!(m.targets[t1].state.health(), Health::Down);
        assert!(m.record(t1, &outcome(true)));
        assert_eq!(serving(&m.plan(), 0), vec![false, true]);
        assert!(!m.listeners[0].failing_open);
    }

    /// Issue 12: a down node is proven dead only by its own answer (refused,
    /// unreachable) during the current failure streak, or by staying down
    /// for longer than the grace; until then it keeps flows.
    #[test]
    fn proven_dead_needs_the_nodes_answer_or_the_grace() {
        let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
        let r = m.listeners[0].reals[0].clone();
        let t = r.target.unwrap();
        let grace = m.listeners[0].deregistration_delay;
        let keeps = |m: &mut Model, at: Instant| m.plan_at(at).listeners[0].reals[0].keeps_flows;
        let timeout = CheckOutcome {
            success: false,
            reason: "timeout".into(),
            proves_dead: false,
            duration: Duration::from_millis(1),
        };
        assert!(!m.proven_dead(&r, grace, Instant::now()), "up");
        assert!(
            m.record(t, &timeout),
            "probation: down at the first failure"
        );
        let now = Instant::now();
        assert!(!m.proven_dead(&r, grace, now), "a timeout proves nothing");
        assert!(keeps(&mut m, now));
        assert!(!m.plan_at(now).listeners[0].reals[0].serving);
        let later = now + grace + Duration::from_secs(1);
        assert!(
            m.proven_dead(&r, grace, later),
            "down for longer than the grace"
        );
        assert!(!keeps(&mut m, later));

        // A refused check is what a host firewall answers too: by itself
        // it proves nothing (issue 20; data-path silence does, see
        // `evidence_tests`).
        m.record(t, &outcome(false));
        assert!(!m.proven_dead(&r, grace, Instant::now()));
        assert!(keeps(&mut m, Instant::now()));
    }

    #[test]
    fn all_down_drop_serves_nothing() {
        let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
        for r in m.listeners[1].reals.clone() {
            m.record(r.target.unwrap(), &outcome(false));
        }
        let p = m.plan();
        assert_eq!(serving(&p, 1), vec![false, false]);
        assert_eq!(
            serving(&p, 2),
            vec![false, false],
            "shared checks: 50001 follows 50000"
        );
        assert_eq!(serving(&p, 0), vec![true, true], "6443 checks are separate");
        assert!(!m.listeners[1].failing_open);
    }

    #[test]
    fn first_round_needs_every_target() {
        let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
        for t in 0..m.targets.len() - 1 {
            m.record(t, &outcome(true));
        }
        assert!(!m.first_round_done());
        let last = m.targets.len() - 1;
        m.record(last, &outcome(true));
        assert!(m.first_round_done());
    }

    fn with_backends(listeners_backends: &str) -> Config {
        let text = CONFIG.replace(
            "port = 6443\n",
            &format!("port = 6443\nbackends = [{listeners_backends}]\n"),
        );
        Config::from_toml_str(&text).unwrap()
    }

    #[test]
    fn reload_keeps_ids_and_new_backends_wait_for_checks() {
        let mut m = Model::new(with_backends("\"cp-01\""));
        for t in 0..m.targets.len() {
            m.record(t, &outcome(true));
        }
        let before: Vec<u32> = m.listeners[0].reals.iter().map(|r| r.id).collect();
        m.reload(with_backends("\"cp-01\", \"cp-02\""));
        let p = m.plan();
        assert_eq!(
            p.listeners[0].reals[0].id, before[0],
            "cp-01 keeps its real id"
        );
        assert_eq!(
            serving(&p, 0),
            vec![true, false],
            "a backend added by reload waits for healthy_threshold successes"
        );
        let t = m.listeners[0].reals[1].target.unwrap();
        assert!(!m.record(t, &outcome(true)));
        assert!(m.record(t, &outcome(true)));
        assert_eq!(serving(&m.plan(), 0), vec![true, true]);
    }

    #[test]
    fn removed_backend_drains_then_goes() {
        let mut m = Model::new(with_backends("\"cp-01\", \"cp-02\""));
        let t0 = Instant::now();
        m.reload_at(with_backends("\"cp-01\""), t0);
        let p = m.plan_at(t0);
        let r = &p.listeners[0].reals[1];
        assert!(!r.serving && r.draining, "removed backend drains: {r:?}");
        let later = t0 + Duration::from_secs(31);
        assert!(m.tick(later), "after deregistration_delay it is forgotten");
        assert_eq!(m.plan_at(later).listeners[0].reals.len(), 1);
    }

    /// [`CONFIG`] with `drained = true` on cp-02.
    fn cp02_drained_in_config() -> Config {
        let text = CONFIG.replace(
            "address = \"192.168.30.32\"\n",
            "address = \"192.168.30.32\"\ndrained = true\n",
        );
        Config::from_toml_str(&text).unwrap()
    }

    #[test]
    fn drained_in_the_configuration_is_a_drain_undrain_cannot_end() {
        // At start-up: cp-02 takes no new flows on any listener.
        let mut m = Model::new(cp02_drained_in_config());
        for l in &m.plan().listeners {
            let r = &l.reals[1];
            assert!(!r.serving && r.draining, "{r:?}");
        }
        assert!(m.all_drained().contains("cp-02"));
        let err = m.undrain("cp-02").unwrap_err();
        assert!(err.contains("drained = true"), "{err}");
        assert!(!m.plan().listeners[0].reals[1].serving);

        // Taking the line out and reloading ends the drain.
        m.reload(Config::from_toml_str(CONFIG).unwrap());
        assert_eq!(serving(&m.plan(), 0), vec![true, true]);
        assert!(m.all_drained().is_empty());

        // Putting it in by reload drains again; a drain by hand on top
        // outlives the configuration's.
        m.reload(cp02_drained_in_config());
        assert!(!m.plan().listeners[0].reals[1].serving);
        m.drain("cp-02").unwrap();
        m.reload(Config::from_toml_str(CONFIG).unwrap());
        assert!(
            !m.plan().listeners[0].reals[1].serving,
            "still drained by hand"
        );
        m.undrain("cp-02").unwrap();
        assert_eq!(serving(&m.plan(), 0), vec![true, true]);
    }

    #[test]
    fn drain_and_undrain_a_node() {
        let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
        m.drain("cp-02").unwrap();
        let p = m.plan();
        for l in &p.listeners {
            let r = &l.reals[1];
            assert!(!r.serving && r.draining, "{r:?}");
        }
        assert!(m.drain("cp-09").is_err());
        m.undrain("cp-02").unwrap();
        assert_eq!(serving(&m.plan(), 0), vec![true, true]);
    }

    /// Captures what `f` logs.
    fn logs_of(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// Issue 10, finding 7: `all_down = "drop"` warns once per transition,
    /// not on every tick.
    #[test]
    fn all_down_drop_is_logged_once_per_transition() {
        let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
        for r in m.listeners[1].reals.clone() {
            m.record(r.target.unwrap(), &outcome(false));
        }
        let logs = logs_of(|| {
            for _ in 0..10 {
                m.plan();
            }
        });
        let talos = logs
            .lines()
            .filter(|l| {
                l.contains("new flows are dropped") && l.trim_end().ends_with("listener=talos-api")
            })
            .count();
        assert_eq!(talos, 1, "{logs}");
        let t = m.listeners[1].reals[0].target.unwrap();
        m.record(t, &outcome(true));
        m.record(t, &outcome(true));
        let logs = logs_of(|| {
            for _ in 0..10 {
                m.plan();
            }
        });
        assert!(logs.contains("new flows accepted"), "{logs}");
        assert!(!logs.contains("new flows are dropped"), "{logs}");
    }
}
