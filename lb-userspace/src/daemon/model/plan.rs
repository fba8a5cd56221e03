//! The data-path plan of the model: pure, logs nothing.
//!
//! A listener whose eligible backends (configured, not drained) are all
//! down fails open (spreads new flows over all of them, as an NLB does)
//! unless `all_down = "drop"`, in which case it drops new flows. Both are
//! returned as [`Alarm`]s; the reconciler logs their edges (entering and
//! leaving), once per transition.
use std::time::Instant;

use super::{ListenerState, Model};
use crate::config::{AllDown, ListenerMode};
use crate::dataplane::plan::{ListenerPlan, Plan, RealPlan};
use crate::health::Health;

/// A listener's fail-open state, as of its reals' health and drains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Condition {
    /// Every eligible backend is down and new flows spread over all of them.
    pub failing_open: bool,
    /// Every eligible backend is down and `all_down = "drop"`.
    pub dropping: bool,
    /// No eligible backend has been checked yet (a listener a reload
    /// added): all down is expected, not an outage.
    pub unchecked: bool,
}

/// What a listener in an all-down state does with new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlarmKind {
    /// Spreads them over every eligible backend.
    FailingOpen,
    /// Drops them (`all_down = "drop"`).
    Dropping,
}

/// A listener whose eligible backends are all down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    /// Listener id.
    pub listener: u32,
    /// Listener name.
    pub name: String,
    /// Failing open or dropping.
    pub kind: AlarmKind,
    /// No eligible backend checked yet: expected, not an outage.
    pub unchecked: bool,
}

impl Model {
    /// The fail-open state of listener `l` (one of [`Model::listeners`]).
    pub fn condition(&self, l: &ListenerState) -> Condition {
        let eligible = |r: &&super::RealRef| !l.retired && r.eligible();
        let mut reals = l.reals.iter().filter(eligible).peekable();
        let any_eligible = reals.peek().is_some();
        let none_up = any_eligible
            && !l
                .reals
                .iter()
                .filter(eligible)
                .any(|r| self.health(r) == Health::Up);
        // A listener added by a reload starts with every backend down
        // until its first checks: that is not an outage worth an ERROR.
        let unchecked = reals.all(|r| {
            r.target
                .is_some_and(|t| self.targets.get(t).is_some_and(|t| t.checks == 0))
        });
        Condition {
            failing_open: none_up && l.all_down == AllDown::FailOpen,
            dropping: none_up && l.all_down == AllDown::Drop,
            unchecked,
        }
    }

    /// The data-path plan as of `now` (drains and the grace before a down
    /// node counts as dead are measured against it), and the listeners in
    /// an all-down state. Pure: changes nothing, logs nothing.
    pub fn plan(&self, now: Instant) -> (Plan, Vec<Alarm>) {
        let mut listeners = Vec::new();
        let mut alarms = Vec::new();
        for l in self.listeners() {
            let c = self.condition(l);
            let kind = match (c.failing_open, c.dropping) {
                (true, _) => Some(AlarmKind::FailingOpen),
                (_, true) => Some(AlarmKind::Dropping),
                _ => None,
            };
            if let Some(kind) = kind {
                alarms.push(Alarm {
                    listener: l.id,
                    name: l.name.clone(),
                    kind,
                    unchecked: c.unchecked,
                });
            }
            listeners.push(self.listener_plan(l, c.failing_open, now));
        }
        listeners.sort_by_key(|l| l.id);
        let snat = self.snat.plan(&self.config.snat, self.listeners());
        (Plan { listeners, snat }, alarms)
    }

    /// The plan of listener `l`.
    fn listener_plan(&self, l: &ListenerState, fail_open: bool, now: Instant) -> ListenerPlan {
        // A node that refused a SYN leaves the new-flow table while
        // another up node can take the flows (see `super::evidence`).
        let up_clear = |r: &super::RealRef| {
            !l.retired && r.eligible() && self.health(r) == Health::Up && !self.refused(r)
        };
        let any_clear = l.reals.iter().any(up_clear);
        let reals = l
            .reals
            .iter()
            .map(|r| {
                let eligible = !l.retired && r.eligible();
                let up =
                    eligible && self.health(r) == Health::Up && (!self.refused(r) || !any_clear);
                let draining = r.drain.is_some_and(|d| now < d.until);
                let configured = !l.retired && r.target.is_some();
                RealPlan {
                    id: r.id,
                    name: r.backend.clone(),
                    addr: r.address,
                    port: r.port,
                    fullnat: r.fullnat,
                    serving: up || (fail_open && eligible),
                    draining,
                    // Down is not dead: see `super::targets`.
                    keeps_flows: (eligible || (configured && draining))
                        && !self.proven_dead(r, l.deregistration_delay, now),
                }
            })
            .collect();
        ListenerPlan {
            id: l.id,
            vip: l.vip,
            port: l.port,
            target_port: l.target_port,
            fullnat: l.mode == ListenerMode::Fullnat,
            reals,
        }
    }
}
