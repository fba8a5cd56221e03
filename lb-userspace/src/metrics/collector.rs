//! The scrape-time collector: turns one [`View`], its kernel [`Counters`]
//! and a [`ConntrackScan`] into metric families (constant counters and
//! gauges; nothing is kept between scrapes).
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::reasons::{reason_kind, ReasonKind};
use super::view::{View, LINK_STATES};
use crate::dataplane::conntrack::ConntrackScan;
use crate::dataplane::counters::Counters;
use crate::dataplane::netdev::{self, SYSFS_NET};
use crate::dataplane::AttachMode;

/// Everything one scrape encodes from the data path and the model.
#[derive(Debug)]
pub struct ScrapeCollector {
    /// Label values and health.
    pub view: View,
    /// Kernel counters.
    pub counters: Counters,
    /// Conntrack occupancy.
    pub conntrack: ConntrackScan,
}

type Labels = Vec<(&'static str, String)>;

/// Encodes one family of constant counters; a family without samples is
/// left out, a single sample without labels is written bare.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, u64)],
) -> fmt::Result {
    family(enc, name, help, MetricType::Counter, samples, |v, m| {
        ConstCounter::new(*v).encode(m)
    })
}

/// Encodes one family of constant gauges (see [`counters`]).
fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: &[(Labels, f64)],
) -> fmt::Result {
    family(enc, name, help, MetricType::Gauge, samples, |v, m| {
        ConstGauge::new(*v).encode(m)
    })
}

fn family<V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[(Labels, V)],
    write: impl Fn(&V, MetricEncoder) -> fmt::Result,
) -> fmt::Result {
    let mut m = match samples {
        [] => return Ok(()),
        _ => enc.encode_descriptor(name, help, None, kind)?,
    };
    if let [(labels, v)] = samples {
        if labels.is_empty() {
            return write(v, m);
        }
    }
    for (labels, v) in samples {
        write(v, m.encode_family(labels)?)?;
    }
    Ok(())
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

impl ScrapeCollector {
    fn backend_families(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        let mut new_flows = Vec::new();
        let mut up = Vec::new();
        let mut serving = Vec::new();
        let mut draining = Vec::new();
        let mut keeps_flows = Vec::new();
        let mut tracked = Vec::new();
        let mut last_reply = Vec::new();
        let mut unanswered = Vec::new();
        for l in &self.view.listeners {
            for r in &l.reals {
                let labels: Labels = vec![
                    ("listener", l.name.clone()),
                    ("backend", r.backend.clone()),
                    ("address", r.address.to_string()),
                ];
                let with_dir = |d: &str| {
                    let mut v = labels.clone();
                    v.push(("direction", d.to_string()));
                    v
                };
                let s = self.counters.reals.get(&r.id).copied().unwrap_or_default();
                packets.push((with_dir("in"), s.counters.fwd_packets));
                packets.push((with_dir("out"), s.counters.rev_packets));
                bytes.push((with_dir("in"), s.counters.fwd_bytes));
                bytes.push((with_dir("out"), s.counters.rev_bytes));
                new_flows.push((labels.clone(), s.counters.new_flows));
                up.push((labels.clone(), flag(r.up)));
                serving.push((labels.clone(), flag(s.serving)));
                draining.push((labels.clone(), flag(s.draining)));
                keeps_flows.push((labels.clone(), flag(s.keeps_flows)));
                let now_ns = self.counters.now_ns;
                // Never seen: +Inf (as long ago as can be), so a node that
                // never answered the traffic it gets still trips alerts.
                let age = match s.seen.reply_ns {
                    0 => f64::INFINITY,
                    t => now_ns.saturating_sub(t) as f64 / 1e9,
                };
                last_reply.push((labels.clone(), age));
                unanswered.push((labels.clone(), s.seen.silent_ns(now_ns) as f64 / 1e9));
                let t = self
                    .conntrack
                    .tracked
                    .get(&(l.id, r.id))
                    .copied()
                    .unwrap_or(0);
                tracked.push((labels, t as f64));
            }
        }
        counters(
            enc,
            "lb_backend_packets",
            "Packets forwarded per backend: direction=in client to backend, out backend to client.",
            &packets,
        )?;
        counters(
            enc,
            "lb_backend_bytes",
            "IP bytes (header included) forwarded per backend: direction=in client to backend, out backend to client.",
            &bytes,
        )?;
        counters(
            enc,
            "lb_backend_new_flows",
            "Flows assigned to the backend (new, or rescheduled onto it).",
            &new_flows,
        )?;
        gauges(
            enc,
            "lb_backend_up",
            "Health-check verdict of the backend (1 up, 0 down).",
            &up,
        )?;
        gauges(
            enc,
            "lb_backend_serving",
            "Whether the data path gives the backend new flows (in the Maglev table; also while the listener fails open).",
            &serving,
        )?;
        gauges(
            enc,
            "lb_backend_draining",
            "Whether the backend is draining: keeps its flows, gets no new ones.",
            &draining,
        )?;
        gauges(
            enc,
            "lb_backend_keeps_flows",
            "Whether the backend keeps its tracked flows and its slots in the mid-flow table (not gone, not proven dead), even while down.",
            &keeps_flows,
        )?;
        gauges(
            enc,
            "lb_backend_tracked_flows",
            "Open flows (no FIN or RST seen) pinned to the backend that saw a packet in the last 5 minutes.",
            &tracked,
        )?;
        gauges(
            enc,
            "lb_backend_last_reply_seconds",
            "Seconds since the data path last saw a packet from the backend (to a 0.25 s tick; +Inf until it has seen one).",
            &last_reply,
        )?;
        gauges(
            enc,
            "lb_backend_unanswered_seconds",
            "Seconds the backend has left traffic it was sent (data, SYN, FIN) unanswered; 0 once it answered. A down backend unanswered for 2 s is dead: its flows are rescheduled.",
            &unanswered,
        )
    }

    fn listener_families(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut new_flows = Vec::new();
        let mut rejected = Vec::new();
        let mut rescheduled = Vec::new();
        let mut fail_open = Vec::new();
        for l in &self.view.listeners {
            let labels: Labels = vec![("listener", l.name.clone())];
            let c = self
                .counters
                .listeners
                .get(&l.id)
                .copied()
                .unwrap_or_default();
            new_flows.push((labels.clone(), c.new_flows));
            rejected.push((labels.clone(), c.rejected));
            rescheduled.push((labels.clone(), c.rescheduled));
            fail_open.push((labels, flag(l.fail_open)));
        }
        counters(
            enc,
            "lb_listener_new_flows",
            "Flows the listener assigned a backend.",
            &new_flows,
        )?;
        counters(
            enc,
            "lb_listener_rejected_packets",
            "Packets of new flows dropped because no backend could take them (all_down = \"drop\"); retransmitted SYNs count again.",
            &rejected,
        )?;
        counters(
            enc,
            "lb_listener_rescheduled_flows",
            "Tracked flows moved off a backend that is gone or proven dead.",
            &rescheduled,
        )?;
        gauges(
            enc,
            "lb_listener_fail_open",
            "Whether every backend is down and new flows spread over all of them (all_down = \"fail_open\").",
            &fail_open,
        )
    }

    fn datapath_families(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut actions = Vec::new();
        let mut passed = Vec::new();
        let mut dropped = Vec::new();
        let mut events = Vec::new();
        for (r, v) in &self.counters.global {
            let sample = |key: &'static str| (vec![(key, r.name().to_string())], *v);
            match reason_kind(*r) {
                ReasonKind::Action => actions.push(sample("action")),
                ReasonKind::Passed => passed.push(sample("reason")),
                ReasonKind::Dropped => dropped.push(sample("reason")),
                ReasonKind::Event => events.push(sample("event")),
            }
        }
        counters(
            enc,
            "lb_xdp_actions",
            "Packets the XDP program handled, by the action it returned.",
            &actions,
        )?;
        counters(
            enc,
            "lb_xdp_passed_packets",
            "Packets passed to the kernel, by reason.",
            &passed,
        )?;
        counters(
            enc,
            "lb_xdp_dropped_packets",
            "Packets dropped, by reason.",
            &dropped,
        )?;
        counters(
            enc,
            "lb_xdp_events",
            "Data-path events (new flows, conntrack hits, reschedules, translated replies, ...).",
            &events,
        )?;
        let none: Labels = Vec::new();
        let ct = &self.conntrack;
        gauges(
            enc,
            "lb_conntrack_entries",
            "Entries in the client-to-VIP conntrack table (LRU: entries leave only when evicted).",
            &[(none.clone(), ct.entries as f64)],
        )?;
        gauges(
            enc,
            "lb_conntrack_capacity",
            "Capacity of each conntrack table ([dataplane] conntrack_capacity).",
            &[(none.clone(), f64::from(ct.capacity))],
        )?;
        gauges(
            enc,
            "lb_conntrack_scan_complete",
            "Whether the conntrack scan finished within its bounds (0: counts are partial).",
            &[(none.clone(), flag(ct.complete))],
        )?;
        gauges(
            enc,
            "lb_conntrack_scan_duration_seconds",
            "How long the conntrack scan behind lb_conntrack_entries and lb_backend_tracked_flows took.",
            &[(none.clone(), ct.duration.as_secs_f64())],
        )?;
        gauges(
            enc,
            "lb_conntrack_scan_age_seconds",
            "Age of that scan (a scan is reused until 20 times its duration old).",
            &[(none, ct.age.as_secs_f64())],
        )?;
        self.snat_families(enc)
    }

    /// Source-port use of full-NAT flows per source-NAT address (from the
    /// conntrack scan) and what each address offers.
    fn snat_families(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut addrs: Vec<std::net::IpAddr> = self.view.snat.iter().map(|(a, _)| *a).collect();
        for a in self.conntrack.snat_in_use.keys() {
            if !addrs.contains(a) {
                addrs.push(*a);
            }
        }
        let label = |a: &std::net::IpAddr| -> Labels { vec![("address", a.to_string())] };
        let in_use: Vec<(Labels, f64)> = addrs
            .iter()
            .map(|a| {
                let n = self.conntrack.snat_in_use.get(a).copied().unwrap_or(0);
                (label(a), n as f64)
            })
            .collect();
        gauges(
            enc,
            "lb_snat_ports_in_use",
            "Source ports held by full-NAT flows, per source-NAT address (from the conntrack scan).",
            &in_use,
        )?;
        let capacity: Vec<(Labels, f64)> = self
            .view
            .snat
            .iter()
            .map(|(a, ports)| (label(a), f64::from(*ports)))
            .collect();
        gauges(
            enc,
            "lb_snat_port_capacity",
            "Source ports per source-NAT address: concurrent full-NAT flows it can carry to one node endpoint.",
            &capacity,
        )
    }

    fn daemon_families(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut attached: Vec<(Labels, f64)> = self
            .view
            .interfaces
            .iter()
            .map(|(iface, mode)| {
                let mode = match mode {
                    AttachMode::Native => "native",
                    AttachMode::Generic => "generic",
                };
                (
                    vec![("interface", iface.clone()), ("mode", mode.to_string())],
                    1.0,
                )
            })
            .collect();
        attached.extend(self.view.missing_interfaces.iter().map(|iface| {
            (
                vec![("interface", iface.clone()), ("mode", "none".to_string())],
                0.0,
            )
        }));
        gauges(
            enc,
            "lb_xdp_attached",
            "XDP program attached to the interface, in the given mode (native or generic).",
            &attached,
        )?;
        gauges(
            enc,
            "lb_ready",
            "Attached everywhere, every link passing traffic, and every backend checked at least once.",
            &[(Labels::new(), flag(self.view.ready))],
        )?;
        self.link_families(enc)
    }

    fn link_families(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let links = &self.view.links;
        let iface = |l: &super::view::LinkView| vec![("interface", l.interface.clone())];
        let states: Vec<(Labels, f64)> = links
            .iter()
            .flat_map(|l| {
                LINK_STATES.iter().map(move |s| {
                    let mut labels = iface(l);
                    labels.push(("state", s.to_string()));
                    (labels, flag(l.state == *s))
                })
            })
            .collect();
        gauges(
            enc,
            "lb_interface_state",
            "Link state of each configured interface (1 for the current one): up, settling (passing traffic again, check results still set aside), down (administratively), no_carrier, missing.",
            &states,
        )?;
        let macs: Vec<(Labels, u64)> = links.iter().map(|l| (iface(l), l.mac_changes)).collect();
        let drops: Vec<(Labels, u64)> = links
            .iter()
            .filter_map(|l| {
                let c = netdev::drop_counters(std::path::Path::new(SYSFS_NET), &l.interface)?;
                Some(c.into_iter().map(move |(name, v)| {
                    let mut labels = iface(l);
                    labels.push(("counter", name.to_string()));
                    (labels, v)
                }))
            })
            .flatten()
            .collect();
        counters(
            enc,
            "lb_interface_dropped_packets",
            "The interface's own drop counters (sysfs statistics: rx_dropped, rx_missed_errors, rx_fifo_errors, tx_dropped): packets lost before the XDP program ran (a receive ring overflowing under a flood) or after it redirected them (a full transmit queue), which lb_xdp_* cannot count.",
            &drops,
        )?;
        counters(
            enc,
            "lb_interface_mac_changes",
            "MAC address changes of the interface seen since the daemon started (the destination-MAC filter follows each).",
            &macs,
        )?;
        let again: Vec<(Labels, u64)> = links
            .iter()
            .map(|l| (iface(l), l.xdp_reattachments))
            .collect();
        counters(
            enc,
            "lb_interface_xdp_reattachments",
            "Times the XDP program was found gone from the interface (detached through the bpf syscall, replaced) and attached again.",
            &again,
        )?;
        gauges(
            enc,
            "lb_health_results_held",
            "1 while health-check results are set aside because a configured link does not pass traffic or is settling.",
            &[(Labels::new(), flag(self.view.checks_held))],
        )
    }
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.backend_families(&mut enc)?;
        self.listener_families(&mut enc)?;
        self.datapath_families(&mut enc)?;
        self.daemon_families(&mut enc)
    }
}
