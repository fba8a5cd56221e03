//! The daemon's view as served on `GET /status` and printed by `lb status`.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::snapshot::Snapshot;
use crate::dataplane::maps::Maps;
use crate::dataplane::{counters, AttachMode};
use crate::health::{Health, Transition};
use crate::metrics::kernel::ConntrackScan;
use crate::table::{Align, Table};

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
        let now_ns = super::model::evidence::monotonic_ns();
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

    /// A readable table for `lb status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for w in &self.warnings {
            let _ = writeln!(s, "WARNING: {w}");
        }
        let _ = writeln!(s, "ready: {}", self.ready);
        let ifs: Vec<String> = self
            .interfaces
            .iter()
            .map(|i| {
                format!(
                    "{} ({})",
                    i.name,
                    serde_json::to_string(&i.mode)
                        .unwrap_or_default()
                        .trim_matches('"')
                )
            })
            .collect();
        let _ = writeln!(s, "interfaces: {}", ifs.join(", "));
        self.render_links(&mut s);
        if !self.missing_interfaces.is_empty() {
            let _ = writeln!(
                s,
                "NOT ATTACHED (interface missing): {}",
                self.missing_interfaces.join(", ")
            );
        }
        for n in &self.dataplane_notes {
            let _ = writeln!(s, "note: {n}");
        }
        if !self.drained_nodes.is_empty() {
            let nodes: Vec<String> = self
                .drained_nodes
                .iter()
                .map(|n| match self.config_drained_nodes.contains(n) {
                    true => format!("{n} (configuration)"),
                    false => n.clone(),
                })
                .collect();
            let _ = writeln!(s, "drained nodes: {}", nodes.join(", "));
        }
        if let Some(r) = &self.last_reload {
            match &r.error {
                None => {
                    let _ = writeln!(s, "last reload: ok ({:.1} ms)", r.apply_ms.unwrap_or(0.0));
                }
                Some(e) => {
                    let _ = writeln!(s, "last reload: REJECTED, previous config kept: {e}");
                }
            }
        }
        for l in &self.listeners {
            let _ = writeln!(
                s,
                "\nlistener {} {} -> :{}  mode={}{}  new_flows={} rejected={} rescheduled={}{}",
                l.name,
                SocketAddr::new(l.vip, l.port),
                l.target_port,
                l.mode,
                self.snat_text(l),
                l.new_flows,
                l.rejected,
                l.rescheduled,
                if l.fail_open {
                    "  FAILING OPEN (every backend down)"
                } else {
                    ""
                }
            );
            s.push_str(&backend_table(&l.backends).render("  "));
            render_checks(&mut s, l);
        }
        s
    }
}

fn dnat() -> String {
    "dnat".into()
}

impl Status {
    /// ` (snat 198.18.0.100 ports 1024-32767, 12 in use)` for a full-NAT
    /// listener, empty otherwise.
    fn snat_text(&self, l: &ListenerStatus) -> String {
        let Some(ports) = &l.snat_ports else {
            return String::new();
        };
        let addrs: Vec<String> = l.snat_addresses.iter().map(|a| a.to_string()).collect();
        let in_use: u64 = l
            .snat_addresses
            .iter()
            .filter_map(|a| self.snat_ports_in_use.get(a))
            .sum();
        format!(" (snat {} ports {ports}, {in_use} in use)", addrs.join(","))
    }
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

/// The per-backend table of one listener. The last check's reason comes
/// last: it is free text (`tls: invalid peer certificate: UnknownIssuer`).
fn backend_table(backends: &[BackendStatus]) -> Table {
    let mut t = Table::new(&[
        ("BACKEND", Align::Left),
        ("ADDRESS", Align::Left),
        ("HEALTH", Align::Left),
        ("STATE", Align::Left),
        ("FLOWS", Align::Right),
        ("LAST_ANSWER", Align::Left),
        ("NEW_FLOWS", Align::Right),
        ("PKTS_IN", Align::Right),
        ("BYTES_IN", Align::Right),
        ("PKTS_OUT", Align::Right),
        ("BYTES_OUT", Align::Right),
        ("LAST_CHECK", Align::Left),
    ]);
    for b in backends {
        t.row(vec![
            b.name.clone(),
            b.address.to_string(),
            b.health.to_string(),
            b.state(),
            b.tracked_flows.to_string(),
            b.evidence.cell(),
            b.new_flows.to_string(),
            b.fwd_packets.to_string(),
            b.fwd_bytes.to_string(),
            b.rev_packets.to_string(),
            b.rev_bytes.to_string(),
            b.last_check.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// The listener's check and every backend's transitions (oldest first).
fn render_checks(s: &mut String, l: &ListenerStatus) {
    if let Some(check) = &l.check {
        let _ = writeln!(s, "  check: {check}");
    }
    let mut rows: Vec<(&str, &Transition)> = l
        .backends
        .iter()
        .flat_map(|b| b.transitions.iter().map(move |t| (b.name.as_str(), t)))
        .collect();
    if rows.is_empty() {
        return;
    }
    rows.sort_by_key(|(_, t)| t.unix_ms);
    let _ = writeln!(s, "  transitions:");
    for (name, t) in rows {
        let _ = writeln!(
            s,
            "    {:<24} {:<12} {:>4} -> {:<4}  {}",
            t.at, name, t.from, t.to, t.reason
        );
    }
}

#[path = "status_links.rs"]
mod links;
pub use links::LinkStatus;

#[cfg(test)]
#[path = "status_table_tests.rs"]
mod table_tests;
