//! The single owner of the daemon's state: the model (health, drains,
//! listeners), the writer's record of the maps, the map handles and the
//! checker tasks. Check results, control commands, ticks and reloads reach
//! it as [`super::events::Event`]s (see the event loop in [`super::run`]);
//! nothing else changes them, and its fields are private.
//!
//! # The hold
//!
//! While a configured interface is missing, down or without carrier, and
//! until its settle time has passed after it returns, the reconciler
//! *holds*: check results are set aside and nothing is written to the
//! maps. Every write path honours it: check results and ticks wait, and
//! drain, undrain and reload are refused with the reason (nothing
//! changes; the operator retries once the links pass traffic). The one
//! exception is the first write at start-up ([`Reconciler::write_initial`]),
//! made before anything is attached.
//!
//! A reload is a transaction: the next model is computed on a copy, its
//! plan written, and only when the write succeeded does the copy become
//! the model and the checkers follow it. When the write fails, the running
//! model and checkers stay as they were, the maps are brought back to the
//! running plan, and the error is returned (and reported by the caller).
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::mpsc;
use tracing::{error, info};

use super::alarms::AlarmLog;
pub use super::checkers::{Checked, Checkers};
use super::links::{LinkTable, Observed};
use super::model::{Model, TargetKey};
use super::snapshot::Snapshot;
use crate::config::Config;
use crate::dataplane::maps::TableMaps;
use crate::dataplane::rtnl::LinkInfo;
use crate::dataplane::snat::SnatMaps;
use crate::dataplane::tables::Written;
use crate::dataplane::Dataplane;
use crate::health::{CheckOutcome, Health};

impl Reconciler<Dataplane> {
    /// The snapshot of what the reconciler knows: model, written plan,
    /// attachments, links and the hold (the loop adds its own state).
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::of(&self.model, self.written.current());
        snap.interfaces = self.maps.attachments();
        let configured = &self.model.config().dataplane.interfaces;
        snap.missing_interfaces = configured
            .iter()
            .filter(|i| !snap.interfaces.iter().any(|(a, _)| a == *i))
            .cloned()
            .collect();
        snap.links = self.links.snapshot(Instant::now());
        snap.checks_held = self.held.clone();
        snap.dataplane_notes = self.maps.layout_notes.clone();
        snap.write_failed = self.written.is_dirty();
        snap
    }

    /// At shutdown: leaves the data path attached (`keep`, for the next
    /// run) or detaches it.
    pub fn leave_dataplane(&mut self, keep: bool) {
        match keep {
            true => self.maps.keep_attached(),
            false => self.maps.detach_all(),
        }
    }
}

/// Owner of the model, the writer and the maps (`M`).
pub struct Reconciler<M: TableMaps + SnatMaps> {
    /// Health, drains, listeners and the configuration in force.
    model: Model,
    /// What has been written to the maps.
    written: Written,
    /// The maps written to.
    maps: M,
    checkers: Checkers,
    results: mpsc::Sender<Checked>,
    /// The configured interfaces' link state (see [`super::links`]).
    links: LinkTable,
    /// Why check results are set aside, while they are (see
    /// [`Reconciler::observe_link`]).
    held: Option<String>,
    /// When the last hold ended: results of checks that started before
    /// then are set aside too (they ran while the path was not usable).
    released_at: Option<Instant>,
    /// The alarms of the last plan, to log their edges.
    alarms: AlarmLog,
}

impl<M: TableMaps + SnatMaps> Reconciler<M> {
    /// Takes ownership of `model`, `written` and `maps`; checker results go
    /// to `results`. Call [`Reconciler::start`] to write and start checking.
    pub fn new(model: Model, written: Written, maps: M, results: mpsc::Sender<Checked>) -> Self {
        Reconciler {
            model,
            written,
            maps,
            checkers: Checkers::default(),
            results,
            links: LinkTable::default(),
            held: None,
            released_at: None,
            alarms: AlarmLog::default(),
        }
    }

    /// Records what the kernel says of configured interface `name` (see
    /// [`LinkTable::observe`]; `settle` is asked when the link passes
    /// traffic again) and holds or releases check results accordingly.
    ///
    /// While a configured interface is missing, down or without carrier,
    /// and until its settle time has passed after it returns, checks fail
    /// for a reason of the gateway's own (its path to the nodes is gone or
    /// not yet usable), and taking nodes out of the tables would
    /// reschedule tracked flows that can survive a short outage onto nodes
    /// that reset them. Check results are then set aside (health stays as
    /// it was before the outage) and nothing is written; results of checks
    /// that started before the hold ended are set aside as well.
    pub fn observe_link(
        &mut self,
        name: &str,
        info: Option<&LinkInfo>,
        settle: impl FnOnce() -> Duration,
        now: Instant,
    ) -> Observed {
        let observed = self.links.observe(name, info, settle, now);
        self.update_hold(now);
        observed
    }

    /// The configured interfaces' link state.
    pub fn links(&self) -> &LinkTable {
        &self.links
    }

    /// The link table, for recording attachment and MAC-filter problems
    /// (these do not hold check results: the gateway's own path works).
    pub fn links_mut(&mut self) -> &mut LinkTable {
        &mut self.links
    }

    /// Why check results are set aside now, if they are.
    pub fn held(&self) -> Option<&str> {
        self.held.as_deref()
    }

    fn update_hold(&mut self, now: Instant) {
        let why = self.links.holding(now);
        if why == self.held {
            return;
        }
        match (&self.held, &why) {
            (None, Some(w)) => {
                tracing::warn!(reason = %w, "check results are set aside until every interface passes traffic and has settled")
            }
            (Some(_), Some(w)) => info!(reason = %w, "check results still set aside"),
            (Some(_), None) => {
                info!("every interface passes traffic and has settled: check results count again")
            }
            (None, None) => {}
        }
        let released = self.held.is_some() && why.is_none();
        self.held = why;
        if released {
            self.released_at = Some(now);
            self.sync_logged_at(now);
        }
    }

    /// The first write at start-up, before anything is attached (maps
    /// complete before the program sees its first packet): the only write
    /// made whatever the hold (links have not been looked at yet).
    pub fn write_initial(&mut self) -> Result<()> {
        self.write_at(Instant::now())
    }

    /// Writes the current plan (unless holding), then starts the checkers.
    pub fn start(&mut self) -> Result<()> {
        if self.held.is_none() {
            self.write_at(Instant::now())?;
        }
        self.checkers.follow(&self.model, &self.results);
        Ok(())
    }

    /// Refuses a change asked while holding (see the module doc).
    fn refuse_if_held(&self) -> Result<(), String> {
        match &self.held {
            None => Ok(()),
            Some(why) => Err(format!(
                "refused, nothing changed: {why}; nothing is written to the data path until \
                 every interface passes traffic and has settled (see `lb status`), try again then"
            )),
        }
    }

    /// Writes the plan of the model as of `now` (drains and the grace
    /// before a down node counts as dead are measured against it), and
    /// logs the edges of its alarms. Callers check the hold.
    fn write_at(&mut self, now: Instant) -> Result<()> {
        let (plan, alarms) = self.model.plan(now);
        self.alarms.observe(self.model.listeners(), &alarms);
        self.written.apply_to(&mut self.maps, &plan)?;
        self.log_cuts(&plan);
        Ok(())
    }

    /// Logs the reals whose flows the plan just cut (down, and silent or
    /// past their grace), with their tracked flows.
    fn log_cuts(&mut self, plan: &crate::dataplane::Plan) {
        for c in self.model.cuts(plan) {
            let flows = self.maps.tracked_flows(c.real);
            let flows = flows.map_or("?".to_string(), |n| n.to_string());
            let why = if c.silent >= super::model::evidence::SILENCE_BOUND {
                "backend down and silent: its tracked flows are rescheduled on their next packet (the new node resets them, clients reconnect at once)"
            } else {
                "backend down past deregistration_delay: its tracked flows are rescheduled on their next packet (the new node resets them, clients reconnect at once)"
            };
            tracing::warn!(
                backend = %c.backend,
                listener = c.listener,
                silent_ms = c.silent.as_millis() as u64,
                %flows,
                "{why}"
            );
        }
    }

    /// Reads the data path's evidence of life into the model (see
    /// `super::model::evidence`).
    fn read_evidence(&mut self, now: Instant) {
        let seen = self.maps.real_seen(&self.model.real_ids());
        let now_ns = crate::dataplane::clock::monotonic_ns();
        self.model.observe_evidence(seen, now_ns, now);
    }

    /// Drains `node` (see [`Model::drain`]) and writes the plan; refused
    /// while holding.
    pub fn drain(&mut self, node: &str) -> Result<(), String> {
        self.refuse_if_held()?;
        self.model.drain(node)?;
        self.write_for_command()
    }

    /// Ends the drain of `node` (see [`Model::undrain`]) and writes the
    /// plan; refused while holding.
    pub fn undrain(&mut self, node: &str) -> Result<(), String> {
        self.refuse_if_held()?;
        self.model.undrain(node)?;
        self.write_for_command()
    }

    /// The write after a command changed the model: a failure is
    /// reported, and retried at the next tick.
    fn write_for_command(&mut self) -> Result<(), String> {
        self.write_at(Instant::now())
            .map_err(|e| format!("updating the data path failed: {e:#}"))
    }

    /// Records a check result; rewrites the maps when the plan changed
    /// (health, or evidence that a down node is dead). Returns the health
    /// transition it caused, if any. A result is set aside while check
    /// results are held, and when its check started before the last hold
    /// ended.
    pub fn record(&mut self, key: &TargetKey, outcome: &CheckOutcome) -> Option<Health> {
        if self.held.is_some() {
            return None;
        }
        let started = Instant::now().checked_sub(outcome.duration);
        if let (Some(released), Some(started)) = (self.released_at, started) {
            if started < released {
                return None;
            }
        }
        let i = self.model.target_index(key)?;
        let before = self.model.targets()[i].state.health();
        if self.model.record(i, outcome) {
            self.sync_logged();
        }
        let after = self.model.targets()[i].state.health();
        (before != after).then_some(after)
    }

    /// Time passes: drains expire, and a write that failed is retried.
    pub fn tick(&mut self, now: Instant) {
        // A settle time may have passed.
        self.update_hold(now);
        self.model.tick(now);
        self.read_evidence(now);
        self.sync_logged_at(now);
    }

    fn sync_logged(&mut self) {
        self.sync_logged_at(Instant::now());
    }

    fn sync_logged_at(&mut self, now: Instant) {
        if self.held.is_some() {
            return;
        }
        if let Err(e) = self.write_at(now) {
            error!(error = %format!("{e:#}"), "updating the data path failed; retried at the next tick");
        }
    }

    /// Applies `config` as one transaction: on success the model, the maps
    /// and the checkers follow it; on failure they all stay as they were
    /// (the maps are rewritten to the running plan) and the error is
    /// returned. Refused while holding.
    pub fn reload(&mut self, config: Config) -> Result<(), String> {
        self.refuse_if_held()?;
        let failed = |e: anyhow::Error| format!("updating the data path failed: {e:#}");
        let mut next = self.model.clone();
        next.reload(config);
        next.check_limits().map_err(failed)?;
        let (plan, alarms) = next.plan(Instant::now());
        if let Err(e) = self.written.apply_to(&mut self.maps, &plan) {
            // Back to the running plan; if that fails too, the tick retries.
            self.sync_logged();
            return Err(failed(e));
        }
        self.model = next;
        self.alarms.observe(self.model.listeners(), &alarms);
        self.checkers.follow(&self.model, &self.results);
        info!(
            listeners = self.model.config().listeners.len(),
            backends = self.model.config().backends.len(),
            checks = self.model.targets().len(),
            "health checks running"
        );
        Ok(())
    }

    /// The model: health, drains, listeners and the configuration in force.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// What has been written to the maps.
    pub fn written(&self) -> &Written {
        &self.written
    }

    /// The maps written to.
    pub fn maps(&self) -> &M {
        &self.maps
    }

    /// The maps, for attaching interfaces and their MAC filters (see
    /// [`super::interfaces`]); the tables are written only by the
    /// reconciler.
    pub(super) fn maps_mut(&mut self) -> &mut M {
        &mut self.maps
    }

    /// The running checkers (target identity and timing).
    pub fn checkers(&self) -> &Checkers {
        &self.checkers
    }

    /// Stops every checker.
    pub fn stop_checkers(&mut self) {
        self.checkers.stop();
    }
}

#[cfg(test)]
#[path = "reconciler_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "midflow_tests.rs"]
mod midflow_tests;

#[cfg(test)]
#[path = "hold_tests.rs"]
mod hold_tests;

#[cfg(test)]
#[path = "snat_tests.rs"]
mod snat_tests;
