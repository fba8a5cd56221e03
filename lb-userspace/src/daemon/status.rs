//! The daemon's view as served on `GET /status` and printed by `lb status`.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::snapshot::Snapshot;
use crate::dataplane::conntrack::ConntrackScan;
use crate::dataplane::maps::Maps;
use crate::dataplane::{counters, AttachMode};
use crate::health::{Health, Transition};

/// Whole status document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Attached everywhere and every backend checked at least once.
    pub ready: bool,
    /// Drained nodes: by hand (`lb drain`) or by the configuration.
    pub drained_nodes: Vec<String>,
    /// Those drained by the configuration (`drained = true`), which `lb
    /// undrain` cannot end.
    #[serde(default)]
    pub config_drained_nodes: Vec<String>,
    /// Outcome of the last reload, if any.
    pub last_reload: Option<ReloadOutcome>,
    /// Per listener.
    pub listeners: Vec<ListenerStatus>,
    /// Attached interfaces.
    pub interfaces: Vec<InterfaceStatus>,
    /// Global data-path counters by reason/action name.
    pub counters: BTreeMap<String, u64>,
    /// Configured interfaces the program is not attached to (missing).
    #[serde(default)]
    pub missing_interfaces: Vec<String>,
    /// Age of the conntrack scan the flow counts come from (`None` before
    /// the first scan ended).
    #[serde(default)]
    pub flows_scanned_secs_ago: Option<f64>,
    /// What start-up found in the pinned maps and could not use as is
    /// (e.g. a `conntrack_capacity` the adopted maps do not have).
    #[serde(default)]
    pub dataplane_notes: Vec<String>,
    /// Conditions an operator must know about (e.g. pins that will not
    /// survive a restart), shown first by `lb status`.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Every configured interface's link state.
    #[serde(default)]
    pub links: Vec<LinkStatus>,
    /// Why health-check results are set aside now (a link does not pass
    /// traffic, or settles after it came back), if they are.
    #[serde(default)]
    pub checks_held: Option<String>,
    /// Source ports held by full-NAT flows per source-NAT address (from
    /// the conntrack scan; `lb_snat_ports_in_use`).
    #[serde(default)]
    pub snat_ports_in_use: BTreeMap<IpAddr, u64>,
}

/// One listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Listener name.
    pub name: String,
    /// VIP.
    pub vip: IpAddr,
    /// VIP port.
    pub port: u16,
    /// Backend port.
    pub target_port: u16,
    /// `dnat` (the nodes see the client's address) or `fullnat` (they see
    /// a source-NAT address).
    #[serde(default = "dnat")]
    pub mode: String,
    /// Full-NAT: the source-NAT addresses the nodes see.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snat_addresses: Vec<IpAddr>,
    /// Full-NAT: the source-NAT port range (`"1024-32767"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat_ports: Option<String>,
    /// `fail_open` or `drop`.
    pub all_down: String,
    /// Every backend is down and new flows spread over all of them.
    pub fail_open: bool,
    /// Removed from the config; takes no new flows while its flows drain.
    pub retired: bool,
    /// The effective health check (e.g. `https GET /readyz expect_status=[200] …`).
    #[serde(default)]
    pub check: Option<String>,
    /// Flows assigned a backend.
    pub new_flows: u64,
    /// Packets dropped for want of a backend.
    pub rejected: u64,
    /// Tracked flows moved off a backend that is gone or proven dead.
    pub rescheduled: u64,
    /// Per backend.
    pub backends: Vec<BackendStatus>,
}

/// One backend of one listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackendStatus {
    /// Node name.
    pub name: String,
    /// Node address.
    pub address: IpAddr,
    /// Health-check verdict.
    pub health: Health,
    /// Whether it takes new flows.
    pub serving: bool,
    /// Keeps its tracked flows but takes no new ones.
    pub draining: bool,
    /// Not gone and not proven dead: keeps its tracked flows and its place
    /// in the mid-flow table, even while down (see docs/ha.md, "Down is
    /// not dead").
    #[serde(default)]
    pub keeps_flows: bool,
    /// Seconds until a draining backend's flows are cut off.
    pub drain_remaining_secs: Option<f64>,
    /// What the data path saw of the backend (see `super::evidence`).
    #[serde(default)]
    pub evidence: BackendEvidence,
    /// Removed from the config (draining until its delay expires).
    pub removed: bool,
    /// Active tracked flows (no FIN/RST seen, traffic within 5 minutes).
    pub tracked_flows: u64,
    /// Reason of the last check result.
    pub last_check: Option<String>,
    /// The last health transitions (time, from, to, reason), oldest first.
    #[serde(default)]
    pub transitions: Vec<Transition>,
    /// Flows assigned.
    pub new_flows: u64,
    /// Packets client → backend.
    pub fwd_packets: u64,
    /// Bytes client → backend.
    pub fwd_bytes: u64,
    /// Packets backend → client.
    pub rev_packets: u64,
    /// Bytes backend → client.
    pub rev_bytes: u64,
}

/// What the data path saw of one backend, and what a kept backend waits for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendEvidence {
    /// Seconds since the backend last sent a packet the data path
    /// translated (`None`: none seen).
    pub last_reply_secs: Option<f64>,
    /// Seconds the backend has left traffic it was sent unanswered (0 when
    /// it answered the last of it).
    pub unanswered_secs: f64,
    /// Seconds of silence that prove a down backend dead.
    pub silence_bound_secs: f64,
    /// Down here and keeping its flows: seconds until they are cut at the
    /// latest (`deregistration_delay`), unless silence proves it dead first.
    pub kept_remaining_secs: Option<f64>,
    /// Out of new-flow choices after refusing a SYN, until its checks
    /// confirm or clear it.
    pub refused: bool,
}

impl BackendEvidence {
    /// The LAST_ANSWER cell: how long ago the backend last answered, and
    /// how long it has left traffic unanswered when it has.
    pub fn cell(&self) -> String {
        let last = match self.last_reply_secs {
            Some(s) => format!("{s:.1}s ago"),
            None => "never".into(),
        };
        if self.unanswered_secs > 0.0 {
            format!("{last} (unanswered {:.1}s)", self.unanswered_secs)
        } else {
            last
        }
    }
}

/// How the last reload went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReloadOutcome {
    /// Unix time of the reload, in seconds.
    pub at_unix: u64,
    /// Applied (true) or rejected (false, the previous config stays).
    pub ok: bool,
    /// Why it was rejected.
    pub error: Option<String>,
    /// Time from the request to the new config being active in the maps, ms.
    pub apply_ms: Option<f64>,
}

/// One attached interface.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// Interface name.
    pub name: String,
    /// `native` or `generic`.
    pub mode: AttachMode,
}

impl BackendStatus {
    /// One word for the table: serving, draining (with time left), removed,
    /// kept (down here but not proven dead: no new flows, keeps its flows
    /// and mid-flow packets), out.
    pub fn state(&self) -> String {
        match (self.serving, self.draining, self.drain_remaining_secs) {
            (true, _, _) => "serving".into(),
            _ if self.evidence.refused && self.health == Health::Up => "refused".into(),
            (false, true, Some(left)) => format!("draining {left:.0}s"),
            _ if self.removed => "removed".into(),
            _ if self.keeps_flows => match self.evidence.kept_remaining_secs {
                // What a kept node waits for: an answer (silence for the
                // bound cuts its flows) or, at the latest, the grace.
                Some(left) => format!(
                    "kept {left:.0}s, cut after {:.0}s silent",
                    self.evidence.silence_bound_secs
                ),
                None => "kept".into(),
            },
            _ => "out".into(),
        }
    }
}

impl Status {
    /// The status of `snap`, with the counters read through `maps` and the
    /// tracked flows of the latest conntrack scan (never scanned here: a
    /// status costs a few map lookups per listener and backend).
    pub fn collect(snap: &Snapshot, maps: &Maps, flows: &ConntrackScan) -> Result<Status> {
        let now = Instant::now();
        let now_ns = crate::dataplane::clock::monotonic_ns();
        let mut listeners = Vec::new();
        for l in &snap.listeners {
            let lc = counters::listener(maps, l.id)?;
            let mut backends = Vec::new();
            for r in &l.reals {
                let rc = counters::real(maps, r.id)?;
                let drain_left = r
                    .drain_until
                    .filter(|_| r.draining)
                    .map(|u| u.saturating_duration_since(now).as_secs_f64());
                backends.push(BackendStatus {
                    name: r.name.clone(),
                    address: r.address,
                    health: r.health,
                    serving: r.serving,
                    draining: r.draining,
                    keeps_flows: r.keeps_flows,
                    drain_remaining_secs: drain_left,
                    evidence: evidence_of(maps, r, now, now_ns),
                    removed: r.removed,
                    tracked_flows: flows.tracked.get(&(l.id, r.id)).copied().unwrap_or(0),
                    last_check: r.last_check.clone(),
                    transitions: r.transitions.clone(),
                    new_flows: rc.new_flows,
                    fwd_packets: rc.fwd_packets,
                    fwd_bytes: rc.fwd_bytes,
                    rev_packets: rc.rev_packets,
                    rev_bytes: rc.rev_bytes,
                });
            }
            listeners.push(ListenerStatus {
                check: l.check.clone(),
                name: l.name.clone(),
                vip: l.vip,
                port: l.port,
                target_port: l.target_port,
                mode: l.mode.clone(),
                snat_addresses: l.snat.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
                snat_ports: l.snat.as_ref().map(|s| s.1.clone()),
                all_down: l.all_down.clone(),
                fail_open: l.failing_open,
                retired: l.retired,
                new_flows: lc.new_flows,
                rejected: lc.rejected,
                rescheduled: lc.rescheduled,
                backends,
            });
        }
        let interfaces = snap
            .interfaces
            .iter()
            .map(|(name, mode)| InterfaceStatus {
                name: name.clone(),
                mode: *mode,
            })
            .collect();
        let counters = counters::global(maps)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Ok(Status {
            ready: snap.ready(),
            drained_nodes: snap.drained_nodes.clone(),
            config_drained_nodes: snap.config_drained_nodes.clone(),
            last_reload: snap.last_reload.clone(),
            listeners,
            interfaces,
            missing_interfaces: snap.missing_interfaces.clone(),
            counters,
            dataplane_notes: snap.dataplane_notes.clone(),
            flows_scanned_secs_ago: flows.age_at(now).map(|d| d.as_secs_f64()),
            warnings: snap.warnings.clone(),
            links: snap.links.iter().map(LinkStatus::of).collect(),
            checks_held: snap.checks_held.clone(),
            snat_ports_in_use: flows.snat_in_use.clone(),
        })
    }
}

fn dnat() -> String {
    "dnat".into()
}

/// What the data path saw of real `r` (nothing when it cannot be read).
fn evidence_of(
    maps: &Maps,
    r: &super::snapshot::RealSnap,
    now: Instant,
    now_ns: u64,
) -> BackendEvidence {
    let seen = maps.real_seen.get(&r.id, 0).unwrap_or_default();
    BackendEvidence {
        last_reply_secs: (seen.reply_ns != 0)
            .then(|| now_ns.saturating_sub(seen.reply_ns) as f64 / 1e9),
        unanswered_secs: seen.silent_ns(now_ns) as f64 / 1e9,
        silence_bound_secs: super::model::evidence::SILENCE_BOUND.as_secs_f64(),
        kept_remaining_secs: r
            .kept_until
            .filter(|_| r.keeps_flows && !r.serving)
            .map(|u| u.saturating_duration_since(now).as_secs_f64()),
        refused: r.refused,
    }
}

#[path = "status_links.rs"]
mod links;
#[path = "status_render.rs"]
mod render;
pub use links::LinkStatus;

#[cfg(test)]
#[path = "status_table_tests.rs"]
mod table_tests;
