//! The single owner of the daemon's state: the model (health, drains,
//! listeners), the writer's record of the maps, the map handles and the
//! checker tasks. Check results, control commands, ticks and reloads reach
//! it as messages (see the event loop in [`super::run`]); nothing else
//! changes them.
//!
//! A reload is a transaction: the next model is computed on a copy, its
//! plan written, and only when the write succeeded does the copy become
//! the model and the checkers follow it. When the write fails, the running
//! model and checkers stay as they were, the maps are brought back to the
//! running plan, and the error is returned (and reported by the caller).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info};

use super::alarms::AlarmLog;
use super::links::{LinkTable, Observed};
use super::model::{Model, TargetKey, Timing};
use crate::config::Config;
use crate::dataplane::maps::TableMaps;
use crate::dataplane::rtnl::LinkInfo;
use crate::dataplane::snat::SnatMaps;
use crate::dataplane::tables::Written;
use crate::health::{spawn_checker, CheckOutcome, CheckSpec, Health, Probers};

/// A check result, tagged with the identity of the target it is about.
pub type Checked = (TargetKey, CheckOutcome);

/// The running checker tasks, one per target identity.
#[derive(Default)]
pub struct Checkers {
    running: BTreeMap<TargetKey, Running>,
}

/// A running checker: its timing, the fingerprint of the certificate files
/// its check was built from, and its task.
struct Running {
    timing: Timing,
    files: u64,
    handle: JoinHandle<()>,
}

impl Checkers {
    /// Makes the running checkers match `model`'s targets: a checker whose
    /// target is gone stops, a new target gets one, and one whose timing
    /// or certificate files' contents changed (a CA bundle rotated at the
    /// same path) is restarted (its target's state is kept by the model).
    pub fn follow(&mut self, model: &Model, tx: &mpsc::Sender<Checked>) {
        let files = &model.config().files;
        let mut probers = Probers::new(files.clone());
        let mut next = BTreeMap::new();
        for t in model.targets() {
            let fingerprint = files.fingerprint(t.key.check.files());
            match self.running.remove(&t.key) {
                Some(r) if r.timing == t.timing && r.files == fingerprint => {
                    next.insert(t.key.clone(), r);
                }
                old => {
                    if let Some(r) = old {
                        r.handle.abort();
                    }
                    let spec = CheckSpec {
                        prober: probers.prober(t.key.addr, &t.key.check),
                        interval: t.timing.interval,
                        timeout: t.timing.timeout,
                        jitter: t.timing.jitter,
                    };
                    let handle = spawn_checker(t.key.clone(), spec, tx.clone());
                    let r = Running {
                        timing: t.timing,
                        files: fingerprint,
                        handle,
                    };
                    next.insert(t.key.clone(), r);
                }
            }
        }
        for (_, r) in std::mem::take(&mut self.running) {
            r.handle.abort();
        }
        self.running = next;
    }

    /// The running checkers: target and timing.
    pub fn running(&self) -> impl Iterator<Item = (&TargetKey, &Timing)> {
        self.running.iter().map(|(k, r)| (k, &r.timing))
    }

    /// Stops every checker.
    pub fn stop(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.handle.abort();
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Owner of the model, the writer and the maps (`M`).
pub struct Reconciler<M: TableMaps + SnatMaps> {
    /// Health, drains, listeners and the configuration in force.
    pub model: Model,
    /// What has been written to the maps.
    pub written: Written,
    /// The maps written to.
    pub maps: M,
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

    /// Writes the current plan, then starts the checkers.
    pub fn start(&mut self) -> Result<()> {
        self.sync()?;
        self.checkers.follow(&self.model, &self.results);
        Ok(())
    }

    /// Writes the plan of the current model (only what changed).
    pub fn sync(&mut self) -> Result<()> {
        self.sync_at(Instant::now())
    }

    /// Writes the plan of the model as of `now` (drains and the grace
    /// before a down node counts as dead are measured against it).
    fn sync_at(&mut self, now: Instant) -> Result<()> {
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
        let now_ns = super::model::evidence::monotonic_ns();
        self.model.observe_evidence(seen, now_ns, now);
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
        if let Err(e) = self.sync_at(now) {
            error!(error = %format!("{e:#}"), "updating the data path failed; retried at the next tick");
        }
    }

    /// Applies `config` as one transaction: on success the model, the maps
    /// and the checkers follow it; on failure they all stay as they were
    /// (the maps are rewritten to the running plan) and the error is returned.
    pub fn reload(&mut self, config: Config) -> Result<()> {
        let mut next = self.model.clone();
        next.reload(config);
        next.check_limits()?;
        let (plan, alarms) = next.plan(Instant::now());
        match self.written.apply_to(&mut self.maps, &plan) {
            Ok(()) => {
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
            Err(e) => {
                // Back to the running plan; if that fails too, the tick retries.
                self.sync_logged();
                Err(e)
            }
        }
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
