//! Immutable snapshots of the daemon's state, published by the event loop
//! on a `tokio::sync::watch` channel after every change. Status, `/healthz`,
//! metrics and `lb drain --wait` read the latest snapshot, the counters
//! (through their own map handles) and the flow scanner's latest result
//! ([`FlowScanner`]): they never wait for the owner, and the owner never
//! waits for them.
//!
//! "Serving" is what the last written plan says (the maps' truth), never
//! recomputed by a reader.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::warn;

use super::links::LinkSnap;
use super::model::Model;
use super::status::ReloadOutcome;
use crate::config::ListenerMode;
use crate::dataplane::conntrack::{
    Conntrack, ConntrackScan, SCAN_REUSE_FACTOR, SCAN_TIME_LIMIT, TRACKED_WINDOW,
};
use crate::dataplane::maps::Maps;
use crate::dataplane::{AttachMode, Plan};
use crate::health::{Health, Transition};
use crate::metrics::view::{LinkView, ListenerView, RealView, View};

/// One backend of one listener.
#[derive(Clone, Debug, PartialEq)]
pub struct RealSnap {
    /// Real id in the data path.
    pub id: u32,
    /// Node name.
    pub name: String,
    /// Node address.
    pub address: IpAddr,
    /// Health-check verdict (a removed real is down).
    pub health: Health,
    /// In the table (from the written plan).
    pub serving: bool,
    /// Keeps its tracked flows but takes no new ones (from the written plan).
    pub draining: bool,
    /// Not gone and not proven dead: keeps its tracked flows and its place
    /// in the mid-flow table whatever its health (from the written plan).
    pub keeps_flows: bool,
    /// When a draining real's flows are cut off.
    pub drain_until: Option<Instant>,
    /// When a down real that keeps its flows loses them at the latest
    /// (its `deregistration_delay` from the down verdict).
    pub kept_until: Option<Instant>,
    /// Held out of new-flow choices by a refused SYN until its checks
    /// confirm or clear it.
    pub refused: bool,
    /// Removed from the config.
    pub removed: bool,
    /// Reason of the last check result.
    pub last_check: Option<String>,
    /// Last transitions, oldest first.
    pub transitions: Vec<Transition>,
}

/// One listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerSnap {
    /// Listener id in the data path.
    pub id: u32,
    /// Name.
    pub name: String,
    /// VIP.
    pub vip: IpAddr,
    /// VIP port.
    pub port: u16,
    /// Backend port.
    pub target_port: u16,
    /// `dnat` or `fullnat`.
    pub mode: String,
    /// Full-NAT: the source-NAT addresses the nodes see and their ports.
    pub snat: Option<(Vec<IpAddr>, String)>,
    /// `fail_open` or `drop`.
    pub all_down: String,
    /// Failing open.
    pub failing_open: bool,
    /// Removed from the config, draining.
    pub retired: bool,
    /// The effective check.
    pub check: Option<String>,
    /// Its reals.
    pub reals: Vec<RealSnap>,
}

/// Everything readers need, as of one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Attached to every configured interface.
    pub attached: bool,
    /// Every target checked at least once.
    pub first_round_done: bool,
    /// Interfaces the program is attached to.
    pub interfaces: Vec<(String, AttachMode)>,
    /// Configured interfaces that are missing or not attached (named by
    /// `/healthz`).
    pub missing_interfaces: Vec<String>,
    /// The configured interfaces' link state (see `daemon::links`).
    pub links: Vec<LinkSnap>,
    /// Why check results are set aside now, if they are.
    pub checks_held: Option<String>,
    /// Configured nodes (backends).
    pub nodes: Vec<String>,
    /// Drained nodes, by hand (`lb drain`) or by the configuration.
    pub drained_nodes: Vec<String>,
    /// Those drained by the configuration (`drained = true`).
    pub config_drained_nodes: Vec<String>,
    /// The last reload.
    pub last_reload: Option<ReloadOutcome>,
    /// Listeners, configured ones first.
    pub listeners: Vec<ListenerSnap>,
    /// Start-up findings about the pinned maps.
    pub dataplane_notes: Vec<String>,
    /// The last write to the maps failed (retried every tick).
    pub write_failed: bool,
    /// Standing warnings shown first by `lb status` (e.g. pins that will not
    /// survive a restart).
    pub warnings: Vec<String>,
    /// Source-NAT addresses given to new full-NAT flows (from the written
    /// plan), with the ports each offers per node endpoint.
    pub snat: Vec<(IpAddr, u32)>,
}

impl Snapshot {
    /// The snapshot of `model` with the serving flags of `written` (the
    /// last plan written completely).
    pub fn of(model: &Model, written: Option<&Plan>) -> Snapshot {
        let listeners = model
            .listeners()
            .iter()
            .map(|l| ListenerSnap {
                id: l.id,
                name: l.name.clone(),
                vip: l.vip,
                port: l.port,
                target_port: l.target_port,
                mode: l.mode.to_string(),
                snat: (l.mode == ListenerMode::Fullnat).then(|| {
                    let s = &model.config().snat;
                    (s.addrs_for(l.vip), s.ports.to_string())
                }),
                all_down: l.all_down.to_string(),
                failing_open: model.condition(l).failing_open,
                retired: l.retired,
                check: model
                    .config()
                    .listeners
                    .iter()
                    .find(|c| (c.vip, c.port) == (l.vip, l.port))
                    .filter(|_| !l.retired)
                    .map(|c| c.check.to_string()),
                reals: l
                    .reals
                    .iter()
                    .map(|r| {
                        let planned = written
                            .and_then(|p| p.listeners.iter().find(|pl| pl.id == l.id))
                            .and_then(|pl| pl.reals.iter().find(|pr| pr.id == r.id));
                        let target = r.target.and_then(|t| model.targets().get(t));
                        RealSnap {
                            id: r.id,
                            name: r.backend.clone(),
                            address: r.address,
                            health: model.health(r),
                            serving: planned.is_some_and(|p| p.serving),
                            draining: planned.is_some_and(|p| p.draining),
                            keeps_flows: planned.is_some_and(|p| p.keeps_flows),
                            drain_until: r.drain.map(|d| d.until),
                            kept_until: model.kept_until(r, l.deregistration_delay),
                            refused: model.refused(r),
                            removed: r.target.is_none(),
                            last_check: target.and_then(|t| t.last_reason.clone()),
                            transitions: target
                                .map(|t| t.state.history().to_vec())
                                .unwrap_or_default(),
                        }
                    })
                    .collect(),
            })
            .collect();
        Snapshot {
            first_round_done: model.first_round_done(),
            nodes: model
                .config()
                .backends
                .iter()
                .map(|b| b.name.clone())
                .collect(),
            drained_nodes: model.all_drained().into_iter().collect(),
            config_drained_nodes: model.config_drained().into_iter().collect(),
            listeners,
            snat: written
                .map(|p| {
                    let ports = p.snat.ports.len();
                    p.snat
                        .ipv4
                        .iter()
                        .chain(&p.snat.ipv6)
                        .map(|a| (*a, ports))
                        .collect()
                })
                .unwrap_or_default(),
            ..Snapshot::default()
        }
    }

    /// Attached everywhere, every link passing traffic, and every backend
    /// checked at least once.
    pub fn ready(&self) -> bool {
        self.attached
            && self.missing_interfaces.is_empty()
            && self.link_problems().is_empty()
            && self.first_round_done
    }

    /// Why interfaces keep the gateway from forwarding: a link missing,
    /// down or without carrier, an XDP program not where it should be, a
    /// destination-MAC filter that could not be updated (one line each,
    /// naming the interface and the state).
    pub fn link_problems(&self) -> Vec<String> {
        self.links.iter().filter_map(LinkSnap::problem).collect()
    }

    /// What `/healthz` answers: `Ok` or why not.
    pub fn healthz(&self) -> Result<(), String> {
        let mut problems = self.link_problems();
        for i in &self.missing_interfaces {
            if !problems
                .iter()
                .any(|p| p.starts_with(&format!("interface {i}:")))
            {
                problems.push(format!("XDP not attached to {i}"));
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if !self.attached {
            return Err("not attached".into());
        }
        for l in self.listeners.iter().filter(|l| !l.retired) {
            if !l.reals.iter().any(|r| r.serving) {
                return Err(format!("listener {} has no healthy backend", l.name));
            }
        }
        Ok(())
    }

    /// The labels and health gauges a scrape needs.
    pub fn view(&self) -> View {
        let mut listeners: Vec<ListenerView> = self
            .listeners
            .iter()
            .map(|l| ListenerView {
                id: l.id,
                name: l.name.clone(),
                fail_open: l.failing_open,
                reals: l
                    .reals
                    .iter()
                    .map(|r| RealView {
                        id: r.id,
                        backend: r.name.clone(),
                        address: r.address,
                        up: r.health == Health::Up,
                    })
                    .collect(),
            })
            .collect();
        listeners.sort_by_key(|l| l.id);
        View {
            ready: self.ready(),
            interfaces: self.interfaces.clone(),
            missing_interfaces: self.missing_interfaces.clone(),
            links: self
                .links
                .iter()
                .map(|l| LinkView {
                    interface: l.name.clone(),
                    state: l.state.as_str(),
                    mac_changes: l.mac_changes,
                    xdp_reattachments: l.xdp_reattachments,
                })
                .collect(),
            checks_held: self.checks_held.is_some(),
            listeners,
            snat: self.snat.clone(),
        }
    }
}

/// Shortest pause between two conntrack scans.
const SCAN_MIN_PAUSE: Duration = Duration::from_secs(1);

/// The one conntrack scanner: scans in the background on a blocking thread,
/// bounded in time and entries, pausing `max(1 s, 20 × its duration)`
/// between scans, and publishes each result. Readers take the latest.
pub struct FlowScanner;

impl FlowScanner {
    /// Starts scanning `ct`; the receiver holds the latest scan (empty and
    /// `complete = false` until the first one ends).
    pub fn spawn(
        ct: Conntrack,
    ) -> (
        watch::Receiver<Arc<ConntrackScan>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = watch::channel(Arc::new(ConntrackScan::default()));
        let ct = Arc::new(ct);
        let task = tokio::spawn(async move {
            loop {
                let c = ct.clone();
                let scan = match tokio::task::spawn_blocking(move || {
                    c.scan(TRACKED_WINDOW, SCAN_TIME_LIMIT)
                })
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "conntrack scan failed");
                        return;
                    }
                };
                let pause = (scan.duration * SCAN_REUSE_FACTOR).max(SCAN_MIN_PAUSE);
                if tx.send(Arc::new(scan)).is_err() {
                    return;
                }
                tokio::time::sleep(pause).await;
            }
        });
        (rx, task)
    }
}

/// What every reader holds: the latest snapshot, the latest flow scan and
/// map handles of its own for counters.
#[derive(Clone)]
pub struct Readers {
    /// Latest snapshot.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Latest conntrack scan.
    pub flows: watch::Receiver<Arc<ConntrackScan>>,
    /// Map handles for counters (never written).
    pub maps: Arc<Maps>,
    /// The daemon's metrics registry.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Readers {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The latest flow scan.
    pub fn flows(&self) -> Arc<ConntrackScan> {
        self.flows.borrow().clone()
    }
}
