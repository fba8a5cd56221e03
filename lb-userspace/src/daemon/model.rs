//! The daemon's model of the world: check targets and their health, and the
//! data-path plan derived from them. Pure logic, no I/O, unit-tested.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::config::{AllDown, Config};
use crate::dataplane::{ListenerPlan, Plan, RealPlan};
use crate::health::{CheckOutcome, Health, HealthState};

/// What a health check probes. Listeners that share a backend port and
/// health parameters (e.g. Talos 50000 and 50001 → 50000) share one check.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetKey {
    /// Backend address and target port.
    pub addr: SocketAddr,
    /// Interval, timeout, healthy and unhealthy thresholds, jitter.
    pub params: (Duration, Duration, u32, u32, Duration),
}

/// One health-check target and what is known of it.
#[derive(Debug)]
pub struct Target {
    /// What is probed.
    pub key: TargetKey,
    /// Name of the backend (node) probed.
    pub backend: String,
    /// Threshold state machine.
    pub state: HealthState,
    /// Reason of the last result ("ok", "refused", "timeout", ...).
    pub last_reason: Option<String>,
    /// Checks completed so far.
    pub checks: u64,
}

/// A real: one backend of one listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealRef {
    /// Real id in the data path.
    pub id: u32,
    /// Index into `Config::backends`.
    pub backend: usize,
    /// Index into `Model::targets`.
    pub target: usize,
}

/// Health of every target and the reals that depend on them.
#[derive(Debug)]
pub struct Model {
    /// The configuration in force.
    pub config: Config,
    /// Health-check targets.
    pub targets: Vec<Target>,
    /// Reals per listener (same order as `config.listeners`).
    pub reals: Vec<Vec<RealRef>>,
    /// Listeners currently failing open (every backend down).
    pub failing_open: Vec<bool>,
}

impl Model {
    /// Builds the model of `config`: every backend starts up on probation
    /// (one failed check takes it down), as HAProxy does.
    pub fn new(config: Config) -> Self {
        let mut targets: Vec<Target> = Vec::new();
        let mut index: BTreeMap<TargetKey, usize> = BTreeMap::new();
        let mut reals = Vec::new();
        let mut next_id = 0u32;
        for l in &config.listeners {
            let h = &l.health;
            let mut lr = Vec::new();
            for &b in &l.backends {
                let key = TargetKey {
                    addr: SocketAddr::new(config.backends[b].address.into(), l.target_port),
                    params: (
                        h.interval,
                        h.timeout,
                        h.healthy_threshold,
                        h.unhealthy_threshold,
                        h.jitter,
                    ),
                };
                let target = *index.entry(key.clone()).or_insert_with(|| {
                    targets.push(Target {
                        key,
                        backend: config.backends[b].name.clone(),
                        state: HealthState::new(h.healthy_threshold, h.unhealthy_threshold),
                        last_reason: None,
                        checks: 0,
                    });
                    targets.len() - 1
                });
                lr.push(RealRef {
                    id: next_id,
                    backend: b,
                    target,
                });
                next_id += 1;
            }
            reals.push(lr);
        }
        let failing_open = vec![false; config.listeners.len()];
        Model {
            config,
            targets,
            reals,
            failing_open,
        }
    }

    /// Records a check result. Returns true when the target's health changed
    /// (the plan must be rewritten). Logs every transition with its reason.
    pub fn record(&mut self, target: usize, outcome: &CheckOutcome) -> bool {
        let t = &mut self.targets[target];
        t.checks += 1;
        t.last_reason = Some(outcome.reason.clone());
        match t.state.record(outcome.success) {
            Some(Health::Down) => {
                warn!(backend = %t.backend, target = %t.key.addr, reason = %outcome.reason, "backend down");
                true
            }
            Some(Health::Up) => {
                info!(backend = %t.backend, target = %t.key.addr, "backend up");
                true
            }
            None => false,
        }
    }

    /// True once every target has been checked at least once.
    pub fn first_round_done(&self) -> bool {
        self.targets.iter().all(|t| t.checks > 0)
    }

    /// Health of a real.
    pub fn health(&self, real: &RealRef) -> Health {
        self.targets[real.target].state.health()
    }

    /// The data-path plan for the current health. A listener whose backends
    /// are all down fails open (spreads new flows over all of them, as an NLB
    /// does) unless `all_down = "drop"`; entering and leaving that state is logged loudly.
    pub fn plan(&mut self) -> Plan {
        let mut listeners = Vec::new();
        for (i, l) in self.config.listeners.iter().enumerate() {
            let up: Vec<bool> = self.reals[i]
                .iter()
                .map(|r| self.health(r) == Health::Up)
                .collect();
            let none_up = !up.iter().any(|u| *u);
            let fail_open = none_up && l.all_down == AllDown::FailOpen;
            if fail_open != self.failing_open[i] {
                if fail_open {
                    error!(listener = %l.name, "every backend is down: failing open, new flows spread over all configured backends");
                } else {
                    info!(listener = %l.name, "a backend is up again: no longer failing open");
                }
                self.failing_open[i] = fail_open;
            }
            if none_up && l.all_down == AllDown::Drop {
                warn!(listener = %l.name, "every backend is down: new flows are dropped (all_down = \"drop\")");
            }
            let reals = self.reals[i]
                .iter()
                .zip(&up)
                .map(|(r, up)| RealPlan {
                    id: r.id,
                    name: self.config.backends[r.backend].name.clone(),
                    addr: self.config.backends[r.backend].address,
                    serving: *up || fail_open,
                })
                .collect();
            listeners.push(ListenerPlan {
                id: i as u32,
                vip: l.vip,
                port: l.port,
                target_port: l.target_port,
                reals,
            });
        }
        Plan { listeners }
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
        assert_eq!(m.reals[1][0].target, m.reals[2][0].target);
        let ids: Vec<u32> = m.reals.iter().flatten().map(|r| r.id).collect();
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
        let t0 = m.reals[0][0].target;
        assert!(
            m.record(t0, &outcome(false)),
            "probation: one failure takes it down"
        );
        assert_eq!(serving(&m.plan(), 0), vec![false, true]);
        let t1 = m.reals[0][1].target;
        assert!(m.record(t1, &outcome(false)));
        let p = m.plan();
        assert_eq!(
            serving(&p, 0),
            vec![true, true],
            "fail open: every backend serves"
        );
        assert!(m.failing_open[0]);
        // Recovery needs healthy_threshold successes.
        assert!(!m.record(t1, &outcome(true)));
        assert!(m.record(t1, &outcome(true)));
        assert_eq!(serving(&m.plan(), 0), vec![false, true]);
        assert!(!m.failing_open[0]);
    }

    #[test]
    fn all_down_drop_serves_nothing() {
        let mut m = Model::new(Config::from_toml_str(CONFIG).unwrap());
        for r in m.reals[1].clone() {
            m.record(r.target, &outcome(false));
        }
        let p = m.plan();
        assert_eq!(serving(&p, 1), vec![false, false]);
        assert_eq!(
            serving(&p, 2),
            vec![false, false],
            "shared checks: 50001 follows 50000"
        );
        assert_eq!(serving(&p, 0), vec![true, true], "6443 checks are separate");
        assert!(!m.failing_open[1]);
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
}
