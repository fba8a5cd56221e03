//! Metrics the daemon itself produces: health-check results, durations and
//! transitions, configuration reloads, build information. Updated as events
//! happen (atomics, no lock), encoded on every scrape.
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::health::{CheckOutcome, Health};

/// Upper bounds (seconds) of the check-duration histogram: 0.5 ms to 5 s.
pub const CHECK_DURATION_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The git commit the binary was built from (`LB_GIT_COMMIT` at build time,
/// else `git rev-parse HEAD`, else "unknown"; set by build.rs).
pub const GIT_COMMIT: &str = env!("LB_GIT_COMMIT");

/// Labels of one health-check target.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// Node name.
    pub backend: String,
    /// Address and port probed.
    pub target: String,
}

/// Labels of a check result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Node name.
    pub backend: String,
    /// Address and port probed.
    pub target: String,
    /// `success` or `failure`.
    pub result: String,
    /// The check's reason (`ok`, `refused`, `timeout`, ...).
    pub reason: String,
}

/// Labels of a health transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// Node name.
    pub backend: String,
    /// Address and port probed.
    pub target: String,
    /// The new state: `up` or `down`.
    pub to: String,
    /// Reason of the check that caused it.
    pub reason: String,
}

/// Labels of a reload count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: String,
}

/// Labels of `lb_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    git_commit: String,
}

fn check_histogram() -> Histogram {
    Histogram::new(CHECK_DURATION_BUCKETS)
}

/// The daemon's own metrics and the registry that encodes them.
#[derive(Debug)]
pub struct DaemonMetrics {
    registry: Registry,
    check_duration: Family<TargetLabels, Histogram, fn() -> Histogram>,
    checks: Family<ResultLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    last_reload: Gauge<f64, AtomicU64>,
    last_reload_ok: Gauge,
}

impl Default for DaemonMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl DaemonMetrics {
    /// Registers every family; reload counters start at 0 for both results
    /// so alerts see the series before the first reload.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let check_duration = Family::new_with_constructor(check_histogram as fn() -> Histogram);
        registry.register(
            "lb_health_check_duration_seconds",
            "Duration of health checks, per check target",
            check_duration.clone(),
        );
        let checks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "lb_health_checks",
            "Health checks completed, by result and reason",
            checks.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "lb_health_transitions",
            "Backend health changes (up to down or down to up), with the reason of the deciding check",
            transitions.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        for result in ["success", "failure"] {
            let _ = reloads.get_or_create(&ReloadLabels {
                result: result.into(),
            });
        }
        registry.register(
            "lb_config_reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        let last_reload = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "lb_config_last_reload_timestamp_seconds",
            "Unix time of the last configuration reload attempt (0: none since start)",
            last_reload.clone(),
        );
        let last_reload_ok = Gauge::default();
        last_reload_ok.set(1);
        registry.register(
            "lb_config_last_reload_successful",
            "Whether the configuration in force came from a successful load or reload (1) or the last reload failed (0)",
            last_reload_ok.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                git_commit: GIT_COMMIT.into(),
            })
            .set(1);
        registry.register(
            "lb_build_info",
            "Build of the running lb: version and git commit (always 1)",
            build,
        );
        let start = Gauge::<f64, AtomicU64>::default();
        start.set(unix_now());
        registry.register(
            "lb_start_time_seconds",
            "Unix time the daemon started",
            start,
        );
        DaemonMetrics {
            registry,
            check_duration,
            checks,
            transitions,
            reloads,
            last_reload,
            last_reload_ok,
        }
    }

    /// The registry to encode.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one check of `target` (node `backend`) and, when it changed
    /// the node's health, the transition to `changed_to`.
    pub fn record_check(
        &self,
        backend: &str,
        target: SocketAddr,
        outcome: &CheckOutcome,
        changed_to: Option<Health>,
    ) {
        let t = TargetLabels {
            backend: backend.to_string(),
            target: target.to_string(),
        };
        self.check_duration
            .get_or_create(&t)
            .observe(outcome.duration.as_secs_f64());
        self.checks
            .get_or_create(&ResultLabels {
                backend: t.backend.clone(),
                target: t.target.clone(),
                result: if outcome.success {
                    "success"
                } else {
                    "failure"
                }
                .into(),
                reason: outcome.reason.clone(),
            })
            .inc();
        if let Some(to) = changed_to {
            self.transitions
                .get_or_create(&TransitionLabels {
                    backend: t.backend,
                    target: t.target,
                    to: to.to_string(),
                    reason: outcome.reason.clone(),
                })
                .inc();
        }
    }

    /// Records a configuration reload attempt.
    pub fn record_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ReloadLabels {
                result: result.into(),
            })
            .inc();
        self.last_reload.set(unix_now());
        self.last_reload_ok.set(i64::from(ok));
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
