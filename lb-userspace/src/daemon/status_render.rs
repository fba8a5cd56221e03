//! `lb status` as text: the [`Status`] document rendered as tables.
use std::fmt::Write as _;
use std::net::SocketAddr;

use super::{BackendStatus, ListenerStatus, Status};
use crate::health::Transition;
use crate::table::{Align, Table};

impl Status {
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
