//! The other shapes full-NAT serves: a gateway pair on the nodes' LAN
//! (keepalived takeover) and the two-sided "cloud" lab.

use std::thread;
use std::time::{Duration, Instant};

use lb_tests::checks::{assert_intact, share_summary};
use lb_tests::lab::lan_pair::PairGw;
use lb_tests::{Lab, LabOptions, Stream, StreamOptions, KUBE_API_PORT};

use super::{connections, ready, serial, FAST};

/// Two gateways with the same full-NAT configuration and keepalived moving
/// the VIP and the source-NAT address together: the master crashes (link
/// down, lb and keepalived killed). The survivor rebuilds each flow from
/// the client's next packet (same node by the mid-flow table, same source
/// port by the deterministic choice), so the node sees the same 4-tuple.
#[test]
fn fullnat_ha_takeover_keeps_streams() {
    if !ready("fullnat_ha_takeover_keeps_streams") {
        return;
    }
    let _serial = serial();
    let lab = Lab::create_lan_pair(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
        .expect("creating the LAN pair lab");
    lab.start_all_backends().expect("starting the nodes");
    let config = lab.lan_config_toml(FAST, "fullnat");
    lab.start_pair_lb(PairGw::A, &config).expect("lb on A");
    lab.start_pair_lb(PairGw::B, &config).expect("lb on B");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("nodes up on A");
    let advert = Duration::from_millis(200);
    lab.start_pair_keepalived(PairGw::A, advert)
        .expect("keepalived A");
    lab.start_pair_keepalived(PairGw::B, advert)
        .expect("keepalived B");
    lab.wait_pair_master(PairGw::A, Duration::from_secs(15))
        .expect("A master");

    let vip = lab.lan_vip(KUBE_API_PORT);
    let mut open = Vec::new();
    for (who, ns) in [("worker", lab.worker_ns()), ("client", lab.client_ns())] {
        for _ in 0..4 {
            // Survival is the question, not latency: ride out the takeover.
            let opts = StreamOptions {
                timeout: Duration::from_secs(15),
                ..StreamOptions::default()
            };
            let s = Stream::open_with(&lab, &ns, vip, opts).expect("stream");
            open.push((format!("{who} -> {}", s.node()), s));
        }
    }
    thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    // New connections: a probe every 50 ms, counting failures.
    let (moved, f) = lab.takeover_by_b(vip.into(), t0).expect("B takes over");
    thread::sleep(Duration::from_secs(1));
    // The survivor's view, for the record.
    let b = lab
        .lb_ctl_at(&lab.pair_socket(PairGw::B), &["status"])
        .expect("lb status on B");
    println!(
        "gateway B after the takeover:\n{}",
        String::from_utf8_lossy(&b.stdout)
    );
    let n = open.len();
    let mut intact = 0;
    for (what, s) in open {
        let r = s.finish();
        if r.errors.is_empty() && r.bytes_echoed == r.bytes_sent && r.chunks > 10 {
            intact += 1;
        } else {
            println!("stream {what}: {} chunks, errors {:?}", r.chunks, r.errors);
        }
    }
    println!(
        "fullnat HA takeover: {intact}/{n} streams intact; addresses moved {moved:?} after the crash; new connections out for {:?}",
        f.settled_after
    );
    assert!(
        f.settled,
        "no clean second after the takeover: {:?}",
        f.bad("none")
    );
    assert_eq!(intact, n, "streams across the takeover");
}

/// The two-sided "cloud" lab: clients on the public side reach the VIP
/// through the gateway, the nodes' default route goes elsewhere. DNAT
/// fails (the node's reply leaves through its own router); full-NAT works.
#[test]
fn cloud_shape_needs_fullnat() {
    if !ready("cloud_shape_needs_fullnat") {
        return;
    }
    let _serial = serial();
    for (mode, want_ok) in [("dnat", false), ("fullnat", true)] {
        let lab = Lab::create_cloud(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
            .expect("creating the cloud lab");
        lab.start_all_backends().expect("starting the nodes");
        lab.start_lb(&lab.cloud_config_toml(FAST, mode))
            .expect("starting lb");
        lab.wait_backends_up(Duration::from_secs(10))
            .expect("nodes up");
        let n = if want_ok { 300 } else { 20 };
        let timeout = Duration::from_millis(if want_ok { 2000 } else { 500 });
        let vip = lab.vip_addr(KUBE_API_PORT).into();
        let (counts, failed) = connections(&lab, &lab.client_ns(), vip, n, timeout);
        println!(
            "cloud lab, {mode}: {}/{n} connections through the VIP ({})",
            n - failed,
            share_summary(&counts, n)
        );
        if want_ok {
            assert_eq!(failed, 0, "{counts:?}");
            assert_eq!(counts.len(), lab.backends(), "{counts:?}");
            let s = Stream::open(&lab, &lab.client_ns(), vip).expect("stream");
            thread::sleep(Duration::from_millis(700));
            assert_intact("cloud lab stream", &s.finish());
        } else {
            assert_eq!(failed, n, "DNAT cannot work when the nodes route elsewhere");
        }
    }
}
