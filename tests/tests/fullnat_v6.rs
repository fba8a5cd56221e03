//! Issue 18 over IPv6: the kubeadm-guide LAN (see `lb_tests::lab::lan`)
//! with IPv6 on every host, everything on-link, and both listeners on an
//! IPv6 VIP in full-NAT mode with an IPv6 source-NAT address. A client, a
//! worker and a node itself (hairpin) reach the VIP, spread over the
//! nodes; a node stopped leaves and rejoins within the health-check
//! window while streams on the other nodes keep every byte.
//!
//! They need root and a built `lb`; without them they skip (and fail under
//! `CI=true`). A failing test prints the lb log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lb_tests::checks::{assert_intact, ctl_ok, share_summary, NodeOutage};
use lb_tests::lab::lan::LAN_SNAT6;
use lb_tests::{
    connect_and_name, lb_or_skip, root_or_skip, HealthSettings, Lab, LabOptions, Stream,
    KUBE_API_PORT, TALOS_API_PORT,
};

const FAST: HealthSettings = HealthSettings {
    interval: Duration::from_millis(500),
    timeout: Duration::from_millis(250),
    healthy_threshold: 2,
    unhealthy_threshold: 2,
};

/// The LAN lab with IPv6, every node serving and lb running in full-NAT
/// mode on the IPv6 VIP.
fn lan6_with_lb() -> Lab {
    let lab = Lab::create_lan(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
        .expect("creating the LAN lab");
    lab.add_lan_ipv6().expect("IPv6 on the LAN");
    lab.start_all_backends().expect("starting the nodes");
    lab.start_lb(&lab.lan_config_toml_v6(FAST))
        .expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("nodes up");
    lab
}

/// Who connects: (label, namespace).
fn clients(lab: &Lab) -> Vec<(String, String)> {
    vec![
        ("client".into(), lab.client_ns()),
        ("worker".into(), lab.worker_ns()),
        ("node cp-01".into(), lab.backend_ns(1)),
    ]
}

/// `n` connections from `ns` to `addr`: which node greeted each, and how
/// many failed (giving up after 5 failures without a success).
fn connections(
    lab: &Lab,
    ns: &str,
    addr: SocketAddr,
    n: usize,
) -> (BTreeMap<String, usize>, usize) {
    lab.in_ns(ns, || {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut failed = 0;
        for _ in 0..n {
            match connect_and_name(addr, Duration::from_secs(2)) {
                Ok(node) => *counts.entry(node).or_default() += 1,
                Err(_) => failed += 1,
            }
            if counts.is_empty() && failed >= 5 {
                return (counts, n);
            }
        }
        (counts, failed)
    })
    .expect("running in the namespace")
}

#[test]
fn fullnat_ipv6_vip_spreads_fails_over_and_keeps_streams() {
    if !(root_or_skip("fullnat_ipv6_vip_spreads_fails_over_and_keeps_streams")
        && lb_or_skip("fullnat_ipv6_vip_spreads_fails_over_and_keeps_streams"))
    {
        return;
    }
    let lab = lan6_with_lb();
    let n = 150;
    for port in [KUBE_API_PORT, TALOS_API_PORT] {
        let vip = lab.lan_vip6(port).into();
        for (who, ns) in clients(&lab) {
            let (counts, failed) = connections(&lab, &ns, vip, n);
            println!(
                "fullnat [{}]:{port} from the {who}: {n} connections: {}; failures {failed}",
                lab.lan_vip6(port).ip(),
                share_summary(&counts, n)
            );
            assert_eq!(
                failed,
                0,
                "from the {who} to :{port}; status {}; lb log:\n{}",
                lab.lb_status().map(|s| s.to_string()).unwrap_or_default(),
                lab.lb_log()
            );
            for i in 1..=lab.backends() {
                let c = counts.get(&lab.backend_name(i)).copied().unwrap_or(0);
                assert!(
                    (n * 18 / 100..=n * 50 / 100).contains(&c),
                    "from the {who} to :{port}: {} got {c} of {n}: {counts:?}",
                    lab.backend_name(i)
                );
            }
        }
    }
    // The nodes see the IPv6 source-NAT address.
    let text = ctl_ok(&lab, &["status"]);
    println!("{text}");
    assert!(
        text.contains(&format!("mode=fullnat (snat {LAN_SNAT6} ports 1024-32767")),
        "{text}"
    );

    // A node stopped and restarted, probed from the worker; streams from
    // every client on the other nodes keep every byte.
    let victim = lab.backend_name(2);
    let mut kept = Vec::new();
    for (who, ns) in clients(&lab) {
        for _ in 0..3 {
            let s = Stream::open(&lab, &ns, lab.lan_vip6(KUBE_API_PORT)).expect("stream");
            if s.node() != victim {
                kept.push((format!("{who} -> {}", s.node()), s));
            } else {
                s.finish();
            }
        }
    }
    assert!(!kept.is_empty(), "every stream landed on {victim}");
    let worker = lab.worker_ns();
    let outage = NodeOutage {
        lab: &lab,
        ns: &worker,
        addr: lab.lan_vip6(KUBE_API_PORT).into(),
        victim: &victim,
        h: &FAST,
    };
    let t_stop = Instant::now();
    lab.stop_backend(2).expect("stopping cp-02");
    outage.assert_failover("fullnat IPv6, worker", t_stop);
    let t_start = Instant::now();
    lab.start_backend(2).expect("restarting cp-02");
    outage.assert_recovery("fullnat IPv6, worker", t_start);
    for (what, s) in kept {
        assert_intact(
            &format!("IPv6 stream {what} across cp-02's outage"),
            &s.finish(),
        );
    }
}
