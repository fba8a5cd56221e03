//! The check targets: identity, timing, health and death evidence.
//!
//! # Down is not dead
//!
//! A node that fails this gateway's checks leaves the table of new flows at
//! once, but it keeps its tracked flows and its place in the mid-flow table
//! (see `dataplane::tables`) until it is *proven dead* ([`Targets::proven_dead`]):
//! down, and either silent in the data path (it left the traffic it was
//! sent unanswered for `evidence::SILENCE_BOUND`, see `super::evidence`) or
//! down for longer than the listener's `deregistration_delay`. What the
//! checks meet proves nothing by itself: a filter between this gateway and
//! a node that serves the other gateway's clients times out, or rejects
//! with a RST or an ICMP error, exactly like a dead node, while the node
//! keeps answering its flows. That is what lets the streams of such a node
//! survive a takeover by a gateway whose checks disagree with the old
//! master's, and what gets a node that died without a word (power cut) its
//! streams reset within seconds of its checks failing.
//!
//! A target also carries the data path's refusal mark
//! ([`Target::refused_at`]): out of new-flow choices until a check
//! confirms or clears it.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use crate::config::{Check, Config, Listener};
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

impl TargetKey {
    /// The target of backend `b` (index into `config.backends`) for listener `l`.
    pub fn of(config: &Config, l: &Listener, b: usize) -> TargetKey {
        TargetKey {
            addr: SocketAddr::new(config.backends[b].address, l.target_port),
            check: l.check.clone(),
        }
    }
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
    fn of(l: &Listener) -> Timing {
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

impl Target {
    /// Records one result. Returns true when the plan must be rewritten:
    /// the health changed, or evidence that a down node is dead came or went.
    fn record(&mut self, outcome: &CheckOutcome) -> bool {
        self.checks += 1;
        self.last_reason = Some(outcome.reason.clone());
        let from = self.state.health();
        let changed = self.state.record(outcome.success);
        let refusal_ended = super::evidence::on_check(self, outcome, Instant::now());
        let was_dead = self.is_dead_by_evidence();
        self.dead_evidence = !outcome.success && (self.dead_evidence || outcome.proves_dead);
        match changed {
            Some(Health::Down) => self.down_since = Some(Instant::now()),
            Some(Health::Up) => self.down_since = None,
            None => {}
        }
        let Some(to) = changed else {
            // Evidence that a down node is dead changes the plan (its flows
            // are rescheduled, it leaves the mid-flow table) without a
            // transition.
            return was_dead != self.is_dead_by_evidence() || refusal_ended;
        };
        let t = Transition::new(SystemTime::now(), from, to, &outcome.reason);
        self.state.push_transition(t);
        let check = self.key.check.kind();
        let (backend, target, reason) = (&self.backend, self.key.addr, &outcome.reason);
        match to {
            Health::Down => warn!(%backend, %target, %check, %reason, "backend down"),
            Health::Up => info!(%backend, %target, %check, %reason, "backend up"),
        }
        true
    }

    fn is_dead_by_evidence(&self) -> bool {
        self.state.health() == Health::Down && self.dead_evidence
    }

    /// Down, and proven dead by its silence in the data path (`silent`)
    /// or by staying down longer than `grace` (see the module doc).
    fn proven_dead(&self, grace: Duration, now: Instant, silent: bool) -> bool {
        self.state.health() == Health::Down
            && (silent || self.down_since.is_some_and(|s| now >= s + grace))
    }
}

/// Every check target of the configuration in force; the index of a target
/// is its checker id within [`Targets::generation`].
#[derive(Clone, Debug, Default)]
pub struct Targets {
    list: Vec<Target>,
    generation: u64,
}

impl Targets {
    /// The targets, in config order (first use).
    pub fn all(&self) -> &[Target] {
        &self.list
    }

    /// Target `i`.
    pub fn get(&self, i: usize) -> Option<&Target> {
        self.list.get(i)
    }

    /// Bumped when targets are rebuilt (start, reload).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Index of the target with identity `key`, if the configuration has it.
    pub fn index(&self, key: &TargetKey) -> Option<usize> {
        self.list.iter().position(|t| &t.key == key)
    }

    /// Health of target `i` (`None`, a removed real: down).
    pub fn health(&self, i: Option<usize>) -> Health {
        match i.and_then(|i| self.list.get(i)) {
            Some(t) => t.state.health(),
            None => Health::Down,
        }
    }

    /// True once every target has been checked at least once.
    pub fn first_round_done(&self) -> bool {
        self.list.iter().all(|t| t.checks > 0)
    }

    /// Whether the real checked by target `i` is proven dead at `now` (see
    /// the module doc); `grace` is its listener's deregistration delay,
    /// `silent` what the data path says of the real. A removed real
    /// (`None`) counts as dead here: whether it keeps flows is decided by
    /// its drain.
    pub fn proven_dead(
        &self,
        i: Option<usize>,
        grace: Duration,
        now: Instant,
        silent: bool,
    ) -> bool {
        match i.and_then(|i| self.list.get(i)) {
            Some(t) => t.proven_dead(grace, now, silent),
            None => true,
        }
    }

    /// When a down target's reals lose their flows at the latest (`grace`
    /// after the down verdict); `None` while up.
    pub fn kept_until(&self, i: Option<usize>, grace: Duration) -> Option<Instant> {
        let t = i.and_then(|i| self.list.get(i))?;
        (t.state.health() == Health::Down)
            .then_some(t.down_since)
            .flatten()
            .map(|s| s + grace)
    }

    /// True while target `i` is out of new-flow choices after a refusal.
    pub fn refused(&self, i: Option<usize>) -> bool {
        i.and_then(|i| self.list.get(i))
            .is_some_and(|t| t.refused_at.is_some())
    }

    /// Marks target `i` refused by the data path at `now` (see
    /// `super::evidence::mark_refused`). True when newly marked.
    pub fn mark_refused(&mut self, i: usize, now: Instant) -> bool {
        self.list
            .get_mut(i)
            .is_some_and(|t| super::evidence::mark_refused(t, now))
    }

    /// Records a result for target `i`. Returns true when the plan must be
    /// rewritten (see [`Target::record`]). Logs every transition.
    pub fn record(&mut self, i: usize, outcome: &CheckOutcome) -> bool {
        self.list.get_mut(i).is_some_and(|t| t.record(outcome))
    }

    /// The targets by identity, to carry their state over a rebuild.
    pub fn by_key(&self) -> BTreeMap<TargetKey, Target> {
        self.list
            .iter()
            .map(|t| (t.key.clone(), t.clone()))
            .collect()
    }

    /// Rebuilds the targets of `config`; returns, for each configured
    /// listener, the target index of each of its backends (config order).
    ///
    /// State (health, streaks, history, last result, evidence) carries over
    /// from `old` (same identity, whatever its timing), else health from
    /// `known` (adopted maps, or the target a listener's `target_port`
    /// change replaced: up means up on probation); a brand-new target starts
    /// up on probation on a fresh start, down after a reload (it must pass
    /// checks before taking flows).
    pub fn rebuild(
        &mut self,
        config: &Config,
        old: &BTreeMap<TargetKey, Target>,
        known: &BTreeMap<TargetKey, Health>,
        now: Instant,
    ) -> Vec<Vec<usize>> {
        self.generation += 1;
        let fresh_start = self.generation == 1 && known.is_empty();
        let mut list: Vec<Target> = Vec::new();
        let mut index: BTreeMap<TargetKey, usize> = BTreeMap::new();
        let mut assigned = Vec::new();
        for l in &config.listeners {
            let mut of_listener = Vec::new();
            for &b in &l.backends {
                let key = TargetKey::of(config, l, b);
                let t = *index.entry(key.clone()).or_insert_with(|| {
                    let name = &config.backends[b].name;
                    list.push(match old.get(&key) {
                        Some(o) => carried(o, l, name),
                        None => self.fresh(key, l, name, known, fresh_start, now),
                    });
                    list.len() - 1
                });
                of_listener.push(t);
            }
            assigned.push(of_listener);
        }
        self.list = list;
        assigned
    }

    /// A target not in the previous generation (see [`Targets::rebuild`]).
    fn fresh(
        &self,
        key: TargetKey,
        l: &Listener,
        backend: &str,
        known: &BTreeMap<TargetKey, Health>,
        fresh_start: bool,
        now: Instant,
    ) -> Target {
        let (hh, uh) = (l.health.healthy_threshold, l.health.unhealthy_threshold);
        let state = match known.get(&key) {
            Some(Health::Up) if self.generation > 1 => HealthState::new(hh, uh),
            Some(known) => HealthState::with_state(*known, hh, uh),
            None if fresh_start => HealthState::new(hh, uh),
            None => HealthState::with_state(Health::Down, hh, uh),
        };
        // Down from the start (adopted, or added by a reload): the grace
        // before it counts as dead starts now.
        let down_since = (state.health() == Health::Down).then_some(now);
        Target {
            key,
            timing: Timing::of(l),
            backend: backend.to_string(),
            state,
            last_reason: None,
            checks: 0,
            down_since,
            dead_evidence: false,
            refused_at: None,
        }
    }
}

/// Target `o` of the previous generation with the timing and thresholds of
/// listener `l` (the first in config order that uses it).
fn carried(o: &Target, l: &Listener, backend: &str) -> Target {
    let mut t = o.clone();
    let h = &l.health;
    t.state
        .set_thresholds(h.healthy_threshold, h.unhealthy_threshold);
    t.timing = Timing::of(l);
    t.backend = backend.to_string();
    t
}
