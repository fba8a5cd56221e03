//! Prometheus metrics for `GET /metrics`.
//!
//! Three sources:
//! - the data path (read by [`crate::dataplane::counters`] and
//!   [`crate::dataplane::conntrack`]): per-CPU counters summed across CPUs and the
//!   real flags, read at scrape time through the readers' own map handles,
//!   plus the latest result of the daemon's one conntrack scanner, turned
//!   into constant counters and gauges by [`collector::ScrapeCollector`],
//!   labelled from a [`View`] the daemon hands over (metrics never see the
//!   daemon's model);
//! - the configured interfaces' own drop counters (`dataplane::netdev`), read from
//!   sysfs at scrape time: losses below the XDP program;
//! - the daemon ([`daemon::DaemonMetrics`]): health-check durations, results
//!   and transitions, configuration reloads, build information.
//!
//! The metric names and their meaning are listed in docs/metrics.md (a
//! test, `doc_tests`, keeps that list and a scrape in step).

pub mod collector;
pub mod daemon;
pub mod reasons;
pub mod text;
pub mod view;

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;

use std::net::SocketAddr;

use crate::dataplane::conntrack::ConntrackScan;
use crate::dataplane::counters::{Counters, KernelError};
use crate::dataplane::maps::Maps;
use crate::health::{CheckOutcome, Health};
pub use collector::ScrapeCollector;
pub use daemon::DaemonMetrics;
pub use text::Format;
pub use view::View;

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Reading the data path's maps failed.
    #[error("reading the data path")]
    Kernel(#[from] KernelError),
    /// Encoding failed (only a formatter error; not expected).
    #[error("encoding the metrics")]
    Encode(#[from] std::fmt::Error),
}

/// The daemon's metrics: what it records as events happen, and how a scrape
/// is rendered.
#[derive(Debug, Default)]
pub struct Metrics {
    daemon: DaemonMetrics,
}

impl Metrics {
    /// Fresh metrics: counters at zero, build info and start time set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The daemon-side metrics.
    pub fn daemon(&self) -> &DaemonMetrics {
        &self.daemon
    }

    /// Records a check result of node `backend` at `target`: its duration,
    /// result and reason, and the transition when the health changed to
    /// `changed_to`.
    pub fn record_check(
        &self,
        backend: &str,
        target: SocketAddr,
        outcome: &CheckOutcome,
        changed_to: Option<Health>,
    ) {
        self.daemon
            .record_check(backend, target, outcome, changed_to);
    }

    /// Records a configuration reload attempt and its result.
    pub fn record_reload(&self, ok: bool) {
        self.daemon.record_reload(ok);
    }
}

/// One scrape: the daemon's view, the counters and the latest flow scan.
pub struct Scrape {
    view: View,
    counters: Counters,
    conntrack: ConntrackScan,
}

impl Scrape {
    /// Reads the counters of `view`'s listeners and reals through `maps`
    /// (a few map lookups per listener and backend).
    pub fn take(view: View, maps: &Maps, conntrack: ConntrackScan) -> Result<Scrape, MetricsError> {
        let listeners = view.listeners.iter().map(|l| l.id);
        let counters = Counters::read(maps, listeners, view.real_ids())?;
        Ok(Scrape {
            view,
            counters,
            conntrack,
        })
    }

    /// Encodes everything in `format`.
    pub fn render(self, metrics: &Metrics, format: Format) -> Result<String, MetricsError> {
        let collector = ScrapeCollector {
            view: self.view,
            counters: self.counters,
            conntrack: self.conntrack,
        };
        Ok(encode(collector, metrics.daemon(), format)?)
    }
}

/// Encodes a collector's families and the daemon's registry.
pub fn encode(
    collector: ScrapeCollector,
    daemon: &DaemonMetrics,
    format: Format,
) -> Result<String, std::fmt::Error> {
    let mut scrape = Registry::default();
    scrape.register_collector(Box::new(collector));
    let mut om = String::new();
    encode_registry(&mut om, &scrape)?;
    encode_registry(&mut om, daemon.registry())?;
    encode_eof(&mut om)?;
    Ok(match format {
        Format::OpenMetrics => om,
        Format::Prometheus => text::openmetrics_to_prometheus(&om),
    })
}

#[cfg(test)]
mod doc_tests;
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use lb_common::Reason;

    use super::view::{LinkView, ListenerView, RealView};
    use super::*;
    use crate::dataplane::counters::RealSample;
    use crate::dataplane::counters::{ListenerCounters, RealCounters};
    use crate::dataplane::{netdev, AttachMode};
    use crate::health::Health;

    /// A scrape of one listener with two reals (also used by `doc_tests`).
    pub(super) fn collector() -> ScrapeCollector {
        let real = |id, backend: &str, last, up| RealView {
            id,
            backend: backend.into(),
            address: Ipv4Addr::new(198, 18, 2, last).into(),
            up,
        };
        let view = View {
            ready: true,
            interfaces: vec![("gwc".into(), AttachMode::Native)],
            missing_interfaces: vec!["gwb".into()],
            links: vec![LinkView {
                interface: "gwb".into(),
                state: "no_carrier",
                mac_changes: 2,
                xdp_reattachments: 1,
            }],
            checks_held: true,
            listeners: vec![ListenerView {
                id: 3,
                name: "kubernetes-api".into(),
                fail_open: false,
                reals: vec![real(7, "cp-01", 11, true), real(9, "cp-02", 12, false)],
            }],
            snat: vec![(Ipv4Addr::new(198, 18, 0, 100).into(), 31744)],
        };
        let mut reals = BTreeMap::new();
        reals.insert(
            7,
            RealSample {
                counters: RealCounters {
                    fwd_packets: 10,
                    fwd_bytes: 600,
                    rev_packets: 8,
                    rev_bytes: 520,
                    new_flows: 2,
                },
                serving: true,
                draining: false,
                keeps_flows: true,
                // Answered at 9 s, sent data at 10 s, unanswered since.
                seen: lb_common::RealSeen {
                    sent_ns: 10_000_000_000,
                    reply_ns: 9_000_000_000,
                    waiting_ns: 10_000_000_000,
                    refused_ns: 0,
                },
            },
        );
        reals.insert(
            9,
            RealSample {
                draining: true,
                ..RealSample::default()
            },
        );
        let mut listeners = BTreeMap::new();
        listeners.insert(
            3,
            ListenerCounters {
                new_flows: 2,
                rejected: 4,
                rescheduled: 1,
            },
        );
        let global = Reason::ALL.iter().map(|r| (*r, 100 + *r as u64)).collect();
        let mut tracked = BTreeMap::new();
        tracked.insert((3, 7), 5);
        ScrapeCollector {
            view,
            counters: Counters {
                global,
                listeners,
                reals,
                now_ns: 12_000_000_000,
            },
            conntrack: ConntrackScan {
                entries: 6,
                capacity: 1024,
                tracked,
                snat_in_use: [(Ipv4Addr::new(198, 18, 0, 100).into(), 3)].into(),
                complete: true,
                duration: Duration::from_millis(1),
                age: Duration::ZERO,
                at: None,
            },
        }
    }

    /// Sample lines as `name{labels}` → value.
    fn samples(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CP01: &str = r#"listener="kubernetes-api",backend="cp-01",address="198.18.2.11""#;
    const CP02: &str = r#"listener="kubernetes-api",backend="cp-02",address="198.18.2.12""#;

    /// An IPv6 node's `address` label is its usual text form (no brackets,
    /// no port), so it joins with other tools' labels.
    #[test]
    fn ipv6_address_label_is_plain_text_form() {
        let mut c = collector();
        c.view.listeners[0].reals[1].address = "fd00:198:18:2::12".parse().unwrap();
        let text = encode(c, &DaemonMetrics::new(), Format::OpenMetrics).unwrap();
        let labels = r#"listener="kubernetes-api",backend="cp-02",address="fd00:198:18:2::12""#;
        assert_eq!(
            samples(&text).get(&format!("lb_backend_up{{{labels}}}")),
            Some(&"0.0".to_string()),
            "{text}"
        );
    }

    /// The interfaces' own drop counters (losses below the XDP program)
    /// are exported for every configured interface that exists, read from
    /// sysfs at scrape time; a missing one has no such series.
    #[test]
    fn interface_drop_counters_come_from_sysfs() {
        let mut c = collector();
        c.view.links.push(LinkView {
            interface: "lo".into(),
            state: "up",
            mac_changes: 0,
            xdp_reattachments: 0,
        });
        let lo = netdev::drop_counters(std::path::Path::new(netdev::SYSFS_NET), "lo").unwrap();
        let text = encode(c, &DaemonMetrics::new(), Format::OpenMetrics).unwrap();
        let got = samples(&text);
        for (counter, before) in lo {
            let k = format!(
                r#"lb_interface_dropped_packets_total{{interface="lo",counter="{counter}"}}"#
            );
            let v: u64 = got
                .get(&k)
                .unwrap_or_else(|| panic!("{k} missing:\n{text}"))
                .parse()
                .unwrap();
            assert!(v >= before, "{k}: a counter only goes up");
        }
        assert!(
            !text.contains(r#"lb_interface_dropped_packets_total{interface="gwb""#),
            "gwb does not exist here: no series"
        );
    }

    #[test]
    fn backend_and_listener_series_carry_labels_and_map_values() {
        let text = encode(collector(), &DaemonMetrics::new(), Format::OpenMetrics).unwrap();
        let s = samples(&text);
        let get = |k: String| {
            s.get(&k)
                .cloned()
                .unwrap_or_else(|| panic!("{k} missing:\n{text}"))
        };
        assert_eq!(
            get(format!(
                r#"lb_backend_packets_total{{{CP01},direction="in"}}"#
            )),
            "10"
        );
        assert_eq!(
            get(format!(
                r#"lb_backend_packets_total{{{CP01},direction="out"}}"#
            )),
            "8"
        );
        assert_eq!(
            get(format!(
                r#"lb_backend_bytes_total{{{CP01},direction="in"}}"#
            )),
            "600"
        );
        assert_eq!(
            get(format!(
                r#"lb_backend_bytes_total{{{CP01},direction="out"}}"#
            )),
            "520"
        );
        assert_eq!(get(format!("lb_backend_new_flows_total{{{CP01}}}")), "2");
        assert_eq!(get(format!("lb_backend_up{{{CP01}}}")), "1.0");
        assert_eq!(get(format!("lb_backend_up{{{CP02}}}")), "0.0");
        assert_eq!(get(format!("lb_backend_draining{{{CP02}}}")), "1.0");
        assert_eq!(get(format!("lb_backend_serving{{{CP02}}}")), "0.0");
        assert_eq!(get(format!("lb_backend_keeps_flows{{{CP01}}}")), "1.0");
        assert_eq!(get(format!("lb_backend_keeps_flows{{{CP02}}}")), "0.0");
        assert_eq!(get(format!("lb_backend_tracked_flows{{{CP01}}}")), "5.0");
        assert_eq!(get(format!("lb_backend_tracked_flows{{{CP02}}}")), "0.0");
        // Issue 20: the data path's evidence of life.
        assert_eq!(
            get(format!("lb_backend_last_reply_seconds{{{CP01}}}")),
            "3.0"
        );
        assert_eq!(
            get(format!("lb_backend_unanswered_seconds{{{CP01}}}")),
            "2.0"
        );
        assert_eq!(
            get(format!("lb_backend_unanswered_seconds{{{CP02}}}")),
            "0.0"
        );
        assert_eq!(
            get(format!("lb_backend_last_reply_seconds{{{CP02}}}")),
            "inf",
            "never answered: +Inf (Prometheus parses `inf`)"
        );
        let l = r#"{listener="kubernetes-api"}"#;
        assert_eq!(get(format!("lb_listener_new_flows_total{l}")), "2");
        assert_eq!(get(format!("lb_listener_rejected_packets_total{l}")), "4");
        assert_eq!(get(format!("lb_listener_rescheduled_flows_total{l}")), "1");
        assert_eq!(get(format!("lb_listener_fail_open{l}")), "0.0");
        assert_eq!(
            get(r#"lb_xdp_actions_total{action="redirect"}"#.into()),
            "104"
        );
        assert_eq!(
            get(r#"lb_xdp_dropped_packets_total{reason="no_backend"}"#.into()),
            "115"
        );
        assert_eq!(
            get(r#"lb_xdp_passed_packets_total{reason="not_ipv4"}"#.into()),
            "105"
        );
        assert_eq!(
            get(r#"lb_xdp_events_total{event="new_flow"}"#.into()),
            "117"
        );
        assert_eq!(get("lb_conntrack_entries".into()), "6.0");
        assert_eq!(get("lb_conntrack_capacity".into()), "1024.0");
        assert!(!text.contains("{}"), "bare series have no empty label set");
        assert_eq!(
            get(r#"lb_xdp_attached{interface="gwc",mode="native"}"#.into()),
            "1.0"
        );
        assert_eq!(
            get(r#"lb_xdp_attached{interface="gwb",mode="none"}"#.into()),
            "0.0",
            "a configured interface that is gone shows 0"
        );
        assert_eq!(get("lb_ready".into()), "1.0");
        for state in super::view::LINK_STATES {
            let want = if state == "no_carrier" { "1.0" } else { "0.0" };
            let k = format!(r#"lb_interface_state{{interface="gwb",state="{state}"}}"#);
            assert_eq!(get(k), want, "one-hot link state");
        }
        assert_eq!(
            get(r#"lb_interface_mac_changes_total{interface="gwb"}"#.into()),
            "2"
        );
        assert_eq!(
            get(r#"lb_interface_xdp_reattachments_total{interface="gwb"}"#.into()),
            "1"
        );
        assert_eq!(get("lb_health_results_held".into()), "1.0");
        let snat = r#"{address="198.18.0.100"}"#;
        assert_eq!(get(format!("lb_snat_ports_in_use{snat}")), "3.0");
        assert_eq!(get(format!("lb_snat_port_capacity{snat}")), "31744.0");
        assert_eq!(
            get(r#"lb_xdp_dropped_packets_total{reason="snat_exhausted"}"#.into()),
            (100 + Reason::DropSnatExhausted as u64).to_string(),
            "exhaustion is a drop reason"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Every reason is in exactly one family.
        let reason_series = s
            .keys()
            .filter(|k| k.starts_with("lb_xdp_") && !k.starts_with("lb_xdp_attached"))
            .count();
        assert_eq!(reason_series, Reason::ALL.len());
    }

    #[test]
    fn classic_format_names_counter_families_with_total() {
        let daemon = DaemonMetrics::new();
        let text = encode(collector(), &daemon, Format::Prometheus).unwrap();
        assert!(
            text.contains("# TYPE lb_backend_packets_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE lb_config_reloads_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE lb_backend_up gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        let om = encode(collector(), &daemon, Format::OpenMetrics).unwrap();
        assert_eq!(samples(&text), samples(&om), "same samples in both formats");
    }

    #[test]
    fn check_results_transitions_and_reloads_are_counted() {
        let d = DaemonMetrics::new();
        let target = "198.18.2.12:6443".parse().unwrap();
        let failed = CheckOutcome {
            success: false,
            reason: "refused".into(),
            proves_dead: true,
            duration: Duration::from_millis(3),
        };
        d.record_check("cp-02", target, &failed, None);
        d.record_check("cp-02", target, &failed, Some(Health::Down));
        d.record_reload(false);
        let s = samples(&encode(collector(), &d, Format::Prometheus).unwrap());
        let t = r#"backend="cp-02",target="198.18.2.12:6443""#;
        assert_eq!(
            s[&format!(r#"lb_health_checks_total{{{t},result="failure",reason="refused"}}"#)],
            "2"
        );
        assert_eq!(
            s[&format!(r#"lb_health_transitions_total{{{t},to="down",reason="refused"}}"#)],
            "1"
        );
        assert_eq!(
            s[&format!("lb_health_check_duration_seconds_count{{{t}}}")],
            "2"
        );
        assert_eq!(
            s[&format!(r#"lb_health_check_duration_seconds_bucket{{le="0.005",{t}}}"#)],
            "2"
        );
        assert_eq!(
            s[&format!(r#"lb_health_check_duration_seconds_bucket{{le="0.0025",{t}}}"#)],
            "0"
        );
        assert_eq!(s[r#"lb_config_reloads_total{result="failure"}"#], "1");
        assert_eq!(s[r#"lb_config_reloads_total{result="success"}"#], "0");
        assert_eq!(s["lb_config_last_reload_successful"], "0");
        assert_ne!(s["lb_config_last_reload_timestamp_seconds"], "0.0");
        let build = s
            .keys()
            .find(|k| k.starts_with("lb_build_info{"))
            .expect("build info");
        assert!(build.contains(r#"git_commit=""#), "{build}");
        assert_eq!(s[build], "1");
    }
}
