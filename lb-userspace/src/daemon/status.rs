//! The daemon's view as served on `GET /status` and printed by `lb status`.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::model::Model;
use crate::dataplane::{counters, AttachMode, Dataplane};
use crate::health::Health;

/// Whole status document.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// Attached everywhere and every backend checked at least once.
    pub ready: bool,
    /// Per listener.
    pub listeners: Vec<ListenerStatus>,
    /// Attached interfaces.
    pub interfaces: Vec<InterfaceStatus>,
    /// Global data-path counters by reason/action name.
    pub counters: BTreeMap<String, u64>,
}

/// One listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// Listener name.
    pub name: String,
    /// VIP.
    pub vip: Ipv4Addr,
    /// VIP port.
    pub port: u16,
    /// Backend port.
    pub target_port: u16,
    /// `fail_open` or `drop`.
    pub all_down: String,
    /// Every backend is down and new flows spread over all of them.
    pub fail_open: bool,
    /// Flows assigned a backend.
    pub new_flows: u64,
    /// Packets dropped for want of a backend.
    pub rejected: u64,
    /// Tracked flows moved off a backend that stopped serving.
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
    pub address: Ipv4Addr,
    /// Health-check verdict.
    pub health: Health,
    /// Whether it takes new flows.
    pub serving: bool,
    /// Reason of the last check result.
    pub last_check: Option<String>,
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

/// One attached interface.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// Interface name.
    pub name: String,
    /// `native` or `generic`.
    pub mode: AttachMode,
}

impl Status {
    /// Collects the status from the model and the data path's counters.
    pub fn collect(model: &Model, dp: &Dataplane, attached: bool) -> Result<Status> {
        let mut listeners = Vec::new();
        for (i, l) in model.config.listeners.iter().enumerate() {
            let lc = counters::listener(dp, i as u32)?;
            let fail_open = model.failing_open[i];
            let mut backends = Vec::new();
            for r in &model.reals[i] {
                let b = &model.config.backends[r.backend];
                let rc = counters::real(dp, r.id)?;
                let health = model.health(r);
                backends.push(BackendStatus {
                    name: b.name.clone(),
                    address: b.address,
                    health,
                    serving: health == Health::Up || fail_open,
                    last_check: model.targets[r.target].last_reason.clone(),
                    new_flows: rc.new_flows,
                    fwd_packets: rc.fwd_packets,
                    fwd_bytes: rc.fwd_bytes,
                    rev_packets: rc.rev_packets,
                    rev_bytes: rc.rev_bytes,
                });
            }
            listeners.push(ListenerStatus {
                name: l.name.clone(),
                vip: l.vip,
                port: l.port,
                target_port: l.target_port,
                all_down: l.all_down.to_string(),
                fail_open,
                new_flows: lc.new_flows,
                rejected: lc.rejected,
                rescheduled: lc.rescheduled,
                backends,
            });
        }
        let interfaces = dp
            .attachments()
            .into_iter()
            .map(|(name, mode)| InterfaceStatus { name, mode })
            .collect();
        let counters = counters::global(dp)?
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Ok(Status {
            ready: attached && model.first_round_done(),
            listeners,
            interfaces,
            counters,
        })
    }

    /// A readable table for `lb status`.
    pub fn render(&self) -> String {
        let mut s = String::new();
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
        for l in &self.listeners {
            let _ = writeln!(
                s,
                "\nlistener {} {}:{} -> :{}  new_flows={} rejected={} rescheduled={}{}",
                l.name,
                l.vip,
                l.port,
                l.target_port,
                l.new_flows,
                l.rejected,
                l.rescheduled,
                if l.fail_open {
                    "  FAILING OPEN (every backend down)"
                } else {
                    ""
                }
            );
            let _ = writeln!(
                s,
                "  {:<12} {:<16} {:<6} {:<8} {:<10} {:>9} {:>10} {:>12} {:>10} {:>12}",
                "BACKEND",
                "ADDRESS",
                "HEALTH",
                "SERVING",
                "LAST",
                "FLOWS",
                "PKTS_IN",
                "BYTES_IN",
                "PKTS_OUT",
                "BYTES_OUT"
            );
            for b in &l.backends {
                let _ = writeln!(
                    s,
                    "  {:<12} {:<16} {:<6} {:<8} {:<10} {:>9} {:>10} {:>12} {:>10} {:>12}",
                    b.name,
                    b.address,
                    b.health.to_string(),
                    if b.serving { "yes" } else { "no" },
                    b.last_check.as_deref().unwrap_or("-"),
                    b.new_flows,
                    b.fwd_packets,
                    b.fwd_bytes,
                    b.rev_packets,
                    b.rev_bytes
                );
            }
        }
        s
    }
}
