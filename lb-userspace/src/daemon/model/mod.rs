//! The daemon's model of the world: check targets and their health, the
//! listeners and their reals, drains, and the data-path plan derived from
//! them. Pure logic, no I/O, unit-tested.
//!
//! Each part owns its state:
//!
//! - [`targets`]: what is checked (identity, timing), its health and the
//!   evidence that a down node is dead ("down is not dead");
//! - [`listeners`]: listeners and reals, their ids, drains and the reload
//!   diff;
//! - [`adopt`]: what a start on pinned maps takes over;
//! - [`plan`]: the pure plan (`Model::plan`) and the alarms it raises;
//! - the source-NAT addresses a reload retired (`super::snat`).
//!
//! [`Model`] ties them to the configuration in force. The reconciler
//! (`super::reconciler`) is its only owner: it writes the plan and logs
//! the alarms' edges.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::snat::SnatState;
use crate::config::Config;
use crate::dataplane::plan::MapState;
use crate::health::{CheckOutcome, Health};

pub mod adopt;
pub mod evidence;
pub mod listeners;
pub mod plan;
pub mod targets;

pub use listeners::{Drain, ListenerState, RealRef};
pub use plan::{Alarm, AlarmKind, Condition};
pub use targets::{Target, TargetKey, Timing};

use adopt::Adopted;
use listeners::Listeners;
use targets::Targets;

/// Health of every target and the reals that depend on them.
#[derive(Clone, Debug)]
pub struct Model {
    config: Config,
    targets: Targets,
    listeners: Listeners,
    /// Source-NAT addresses a reload removed, kept recognised while the
    /// flows using them drain.
    snat: SnatState,
    /// The data path's evidence of life per real (read every tick).
    evidence: evidence::Evidence,
}

impl Model {
    /// Builds the model of `config` on fresh maps: every backend starts up on
    /// probation (one failed check takes it down), as HAProxy does.
    pub fn new(config: Config) -> Self {
        Self::adopt(config, &MapState::default())
    }

    /// Builds the model of `config` on maps a previous daemon left: listener
    /// and real ids found there are kept (tracked flows stay valid), and each
    /// backend keeps its last known health (serving or not) until checks say
    /// otherwise, so start-up never black-holes new flows.
    pub fn adopt(config: Config, maps: &MapState) -> Self {
        let now = Instant::now();
        let a = Adopted::from(&config, maps);
        let mut listeners = Listeners::start(&config, &a.ids, a.taken_listeners, a.taken_reals);
        for node in &a.hand_drained {
            listeners.drain_by_hand(node);
        }
        let mut m = Model {
            config,
            targets: Targets::default(),
            listeners,
            snat: SnatState::default(),
            evidence: evidence::Evidence::default(),
        };
        m.rebuild_targets(&BTreeMap::new(), &a.known, now);
        for node in m.all_drained() {
            m.listeners.start_drain_of(&node, now);
        }
        m
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Health-check targets; the index is the checker id within the
    /// targets' generation.
    pub fn targets(&self) -> &[Target] {
        self.targets.all()
    }

    /// Configured listeners (config order), then retired ones.
    pub fn listeners(&self) -> &[ListenerState] {
        self.listeners.all()
    }

    /// Refuses a model whose ids do not fit the data path.
    pub fn check_limits(&self) -> anyhow::Result<()> {
        listeners::check_limits(self.listeners.all())
    }

    fn rebuild_targets(
        &mut self,
        old: &BTreeMap<TargetKey, Target>,
        known: &BTreeMap<TargetKey, Health>,
        now: Instant,
    ) {
        let assigned = self.targets.rebuild(&self.config, old, known, now);
        self.listeners.point_at(&assigned);
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
        let old_targets = self.targets.by_key();
        let inherited = self.listeners.reload(&config, &self.targets, now);
        self.snat.reload(&self.config, &config, now);
        self.config = config;
        self.rebuild_targets(&old_targets, &inherited, now);
        let drained = self.all_drained();
        for node in &drained {
            self.listeners.start_drain_of(node, now);
        }
        // `drained = true` taken out of the file ends that drain (unless the
        // node is also drained by hand).
        for node in was_config_drained.difference(&drained) {
            info!(node = %node, "no longer drained by the configuration: takes new flows again");
            self.listeners.end_drain_of(node);
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
        all.extend(self.listeners.hand_drained().iter().cloned());
        all
    }

    /// Drains a node across all its listeners: no new flows; tracked flows
    /// continue until the deregistration delay expires. Errors on an unknown node.
    pub fn drain(&mut self, node: &str) -> Result<(), String> {
        if !self.config.backends.iter().any(|b| b.name == node) {
            return Err(format!("no backend named {node:?}"));
        }
        if self.listeners.drain_by_hand(node) {
            warn!(node, "draining: no new flows");
        }
        self.listeners.start_drain_of(node, Instant::now());
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
        if self.listeners.undrain_by_hand(node) {
            info!(node, "undrained: takes new flows again");
        }
        self.listeners.end_drain_of(node);
        Ok(())
    }

    /// Forgets removed reals, retired listeners and retired source-NAT
    /// addresses whose delay has expired. Returns true when it forgot something.
    pub fn tick(&mut self, now: Instant) -> bool {
        let listeners = self.listeners.tick(now);
        listeners | self.snat.tick(now)
    }

    /// Records a check result of the current generation. Returns true when
    /// the target's health changed, or evidence that a down node is dead
    /// came or went (the plan must be rewritten). Logs every transition
    /// with its reason.
    pub fn record(&mut self, target: usize, outcome: &CheckOutcome) -> bool {
        self.targets.record(target, outcome)
    }

    /// Index of the target with identity `key`, if the configuration has it.
    pub fn target_index(&self, key: &TargetKey) -> Option<usize> {
        self.targets.index(key)
    }

    /// Records a result of the checker of `key` (see [`Model::record`]);
    /// a result for a target the configuration no longer has is ignored.
    pub fn record_key(&mut self, key: &TargetKey, outcome: &CheckOutcome) -> bool {
        match self.target_index(key) {
            Some(i) => self.record(i, outcome),
            None => false,
        }
    }

    /// Whether `real` is proven dead to this gateway at `now` (see
    /// [`targets`]): down, and silent in the data path for
    /// `evidence::SILENCE_BOUND`, or down for longer than `grace` (the
    /// listener's deregistration delay). A removed real counts as dead
    /// here: whether it keeps flows is decided by its drain.
    pub fn proven_dead(&self, real: &RealRef, grace: Duration, now: Instant) -> bool {
        let silent = self.evidence.is_silent(real.id);
        self.targets.proven_dead(real.target, grace, now, silent)
    }

    /// When a down real that keeps its flows loses them at the latest (its
    /// grace ends), for the status countdown; `None` when it is not down.
    pub fn kept_until(&self, real: &RealRef, grace: Duration) -> Option<Instant> {
        self.targets.kept_until(real.target, grace)
    }

    /// True while the data path's refusal mark holds `real` out of the
    /// new-flow table (see [`evidence`]).
    pub fn refused(&self, real: &RealRef) -> bool {
        self.targets.refused(real.target)
    }

    /// The data path's evidence of life, as last read.
    pub fn evidence(&self) -> &evidence::Evidence {
        &self.evidence
    }

    /// Every real id of every listener (for reading the evidence).
    pub fn real_ids(&self) -> Vec<u32> {
        self.listeners()
            .iter()
            .flat_map(|l| l.reals.iter().map(|r| r.id))
            .collect()
    }

    /// Takes a reading of the data path's evidence (`seen` per real id, at
    /// its clock's `now_ns`); a real that started a refusal episode takes
    /// its target out of new-flow choices (see [`evidence`]).
    pub fn observe_evidence(
        &mut self,
        seen: BTreeMap<u32, lb_common::RealSeen>,
        now_ns: u64,
        now: Instant,
    ) {
        for id in self.evidence.update(seen, now_ns) {
            let target = self
                .listeners()
                .iter()
                .flat_map(|l| &l.reals)
                .find(|r| r.id == id)
                .and_then(|r| r.target);
            if let Some(t) = target {
                self.targets.mark_refused(t, now);
            }
        }
    }

    /// The reals whose flows `plan` cut since the last plan (see
    /// [`evidence::Evidence::cuts`]).
    pub fn cuts(&mut self, plan: &crate::dataplane::Plan) -> Vec<evidence::Cut> {
        let down: BTreeSet<u32> = self
            .listeners()
            .iter()
            .flat_map(|l| &l.reals)
            .filter(|r| self.health(r) == Health::Down)
            .map(|r| r.id)
            .collect();
        self.evidence.cuts(plan, |id| down.contains(&id))
    }

    /// True once every target has been checked at least once.
    pub fn first_round_done(&self) -> bool {
        self.targets.first_round_done()
    }

    /// Health of a real (a removed real is down).
    pub fn health(&self, real: &RealRef) -> Health {
        self.targets.health(real.target)
    }
}

#[cfg(test)]
mod tests;
