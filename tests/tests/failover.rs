//! Integration tests in the namespace lab: the lab itself, then `lb`
//! spreading connections, failing over and recovering, and letting non-VIP
//! traffic through.
//!
//! They need root; without it they skip (and fail under `CI=true`). The lb
//! tests also need a built `lb` (`$LB_BIN`, else `target/debug/lb`); without
//! one they skip (and fail under `CI=true`). If the lab or a test fails, the
//! lab prints the lb and backend logs while unwinding.

use std::net::SocketAddrV4;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::checks::{share_summary, NodeOutage};
use lb_tests::{
    connect_and_name, lb_or_skip, root_or_skip, spread, HealthSettings, Lab, LabOptions, Stream,
    KUBE_API_PORT, TALOS_API_PORT,
};

/// The lb tests measure timings; running them one at a time keeps a busy
/// neighbour (1000 connections through another lab) from skewing those.
static LB_TESTS: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    LB_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_lab() -> Lab {
    Lab::create(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim"))).expect("creating the lab")
}

/// A lab with every backend serving and lb running with health settings `h`.
fn lab_with_lb(h: HealthSettings) -> Lab {
    let lab = new_lab();
    lab.start_all_backends().expect("starting backends");
    lab.start_lb(&lab.config_toml_with(h)).expect("starting lb");
    lab
}

/// Connects from `ns` to `addr` and returns the greeting node name.
fn name_via(lab: &Lab, ns: &str, addr: SocketAddrV4) -> anyhow::Result<String> {
    lab.in_ns(ns, || connect_and_name(addr, Duration::from_secs(2)))?
}

#[test]
fn lab_routes_without_lb() {
    if !root_or_skip("lab_routes_without_lb") {
        return;
    }
    let lab = new_lab();
    lab.start_all_backends().expect("starting backends");
    let client = lab.client_ns();
    let gw = lab.gateway_ns();

    // Client -> each backend, routed by the gateway (no NAT, no lb).
    for i in 1..=lab.backends() {
        for port in [KUBE_API_PORT, TALOS_API_PORT] {
            let addr = SocketAddrV4::new(lab.backend_addr(i), port);
            let name = name_via(&lab, &client, addr).expect("client -> backend");
            assert_eq!(name, lab.backend_name(i), "{addr} from the client");
            let name = name_via(&lab, &gw, addr).expect("gateway -> backend");
            assert_eq!(name, lab.backend_name(i), "{addr} from the gateway");
        }
    }

    // Echo through the gateway works and keeps order.
    let addr = SocketAddrV4::new(lab.backend_addr(1), KUBE_API_PORT);
    let stream = Stream::open(&lab, &client, addr).expect("opening a stream");
    assert_eq!(stream.node(), lab.backend_name(1));
    thread::sleep(Duration::from_millis(300));
    let report = stream.finish();
    assert!(
        report.errors.is_empty(),
        "stream errors: {:?}",
        report.errors
    );
    assert!(report.chunks >= 5, "only {} chunks", report.chunks);
    assert_eq!(report.bytes_echoed, report.bytes_sent);

    // The VIP is assigned nowhere: without lb nobody answers it.
    let vip = lab.vip_addr(KUBE_API_PORT);
    assert!(
        name_via(&lab, &client, vip).is_err(),
        "VIP answered without lb"
    );

    // Stopping a backend makes it refuse; starting it again works.
    lab.stop_backend(2).expect("stopping backend 2");
    let addr2 = SocketAddrV4::new(lab.backend_addr(2), KUBE_API_PORT);
    assert!(
        name_via(&lab, &client, addr2).is_err(),
        "stopped backend answered"
    );
    lab.start_backend(2).expect("restarting backend 2");
    assert_eq!(
        name_via(&lab, &client, addr2).expect("restarted backend"),
        lab.backend_name(2)
    );
    println!("lab {} routes client <-> backends", lab.prefix());
}

#[test]
fn spreads_over_all_backends() {
    if !root_or_skip("spreads_over_all_backends") || !lb_or_skip("spreads_over_all_backends") {
        return;
    }
    let _serial = serial();
    let lab = lab_with_lb(HealthSettings::default());
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");
    let client = lab.client_ns();

    let n = 1000;
    let started = Instant::now();
    let s = spread(&lab, &client, lab.vip_addr(KUBE_API_PORT), n).expect("spread 6443");
    println!(
        "VIP:{KUBE_API_PORT}: {n} connections in {:?}: {}; failures {}",
        started.elapsed(),
        share_summary(&s.counts, n),
        s.failures
    );
    assert_eq!(s.failures, 0, "failed connections: {:?}", s.errors);
    for i in 1..=lab.backends() {
        let name = lab.backend_name(i);
        let c = s.count(&name);
        assert!(
            (n * 25 / 100..=n * 42 / 100).contains(&c),
            "{name} got {c} of {n} (want 25%..42%): {:?}",
            s.counts
        );
    }
    assert_eq!(
        s.counts.len(),
        lab.backends(),
        "unexpected nodes: {:?}",
        s.counts
    );

    let m = 300;
    let s = spread(&lab, &client, lab.vip_addr(TALOS_API_PORT), m).expect("spread 50000");
    println!(
        "VIP:{TALOS_API_PORT}: {m} connections: {}; failures {}",
        share_summary(&s.counts, m),
        s.failures
    );
    assert_eq!(s.failures, 0, "failed connections: {:?}", s.errors);
    for i in 1..=lab.backends() {
        assert!(s.count(&lab.backend_name(i)) > 0, "{:?}", s.counts);
    }

    let status = lab.lb_status().expect("lb status");
    println!("lb status: {status}");

    // SIGTERM: lb detaches and exits 0; the VIP is dead again, routing is not.
    let st = lab.stop_lb().expect("stopping lb");
    assert!(st.success(), "lb exited with {st}");
    assert!(
        name_via(&lab, &client, lab.vip_addr(KUBE_API_PORT)).is_err(),
        "VIP still answers after lb stopped"
    );
    let addr = SocketAddrV4::new(lab.backend_addr(1), KUBE_API_PORT);
    assert_eq!(
        name_via(&lab, &client, addr).expect("routing after lb stopped"),
        lab.backend_name(1)
    );
}

#[test]
fn failover_and_recovery() {
    if !root_or_skip("failover_and_recovery") || !lb_or_skip("failover_and_recovery") {
        return;
    }
    let _serial = serial();
    let h = HealthSettings {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(250),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    };
    let lab = lab_with_lb(h);
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");
    let client = lab.client_ns();
    let vip = lab.vip_addr(KUBE_API_PORT);
    let victim = lab.backend_name(2);

    // A long-lived stream on a node that stays up.
    let mut stream = None;
    for _ in 0..30 {
        let s = Stream::open(&lab, &client, vip).expect("opening a stream via the VIP");
        if s.node() != victim {
            stream = Some(s);
            break;
        }
        let r = s.finish();
        assert!(r.errors.is_empty(), "short stream errors: {:?}", r.errors);
    }
    let stream = stream.expect("30 streams in a row landed on cp-02");
    println!("stream landed on {}", stream.node());
    thread::sleep(Duration::from_millis(200));

    let outage = NodeOutage {
        lab: &lab,
        ns: &client,
        addr: vip.into(),
        victim: &victim,
        h: &h,
    };

    // Failover.
    lab.stop_backend(2).expect("stopping backend 2");
    let f = outage.assert_failover("failover", Instant::now());
    assert!(
        f.clean_window() >= Duration::from_secs(1),
        "clean window only {:?}",
        f.clean_window()
    );
    assert_eq!(
        lab.backend_health("kubernetes-api", &victim)
            .expect("lb status"),
        "down",
        "status after failover"
    );

    // Recovery.
    lab.start_backend(2).expect("restarting backend 2");
    outage.assert_recovery("recovery", Instant::now());
    assert_eq!(
        lab.backend_health("kubernetes-api", &victim)
            .expect("lb status"),
        "up",
        "status after recovery"
    );

    // The stream on a surviving node never noticed.
    let report = stream.finish();
    println!(
        "stream: {} chunks, {} bytes sent, {} echoed, {:?}, errors {:?}",
        report.chunks, report.bytes_sent, report.bytes_echoed, report.duration, report.errors
    );
    assert!(
        report.errors.is_empty(),
        "stream errors: {:?}",
        report.errors
    );
    assert!(report.bytes_sent > 0);
    assert_eq!(report.bytes_echoed, report.bytes_sent);
}

#[test]
fn gateway_own_traffic_passes() {
    if !root_or_skip("gateway_own_traffic_passes") || !lb_or_skip("gateway_own_traffic_passes") {
        return;
    }
    let _serial = serial();
    let lab = lab_with_lb(HealthSettings::default());
    let gw = lab.gateway_ns();
    let client = lab.client_ns();

    // Check every path before asserting, so a failure shows the whole picture.
    let mut problems = Vec::new();
    for i in 1..=lab.backends() {
        for port in [KUBE_API_PORT, TALOS_API_PORT] {
            let addr = SocketAddrV4::new(lab.backend_addr(i), port);
            let want = lab.backend_name(i);
            // The gateway's own connections (their replies pass the XDP
            // program on gwb) and forwarded non-VIP traffic from the client.
            for (who, ns) in [("gateway", &gw), ("client", &client)] {
                match name_via(&lab, ns, addr) {
                    Ok(name) if name == want => println!("{who} -> {addr}: {name}"),
                    Ok(name) => problems.push(format!("{who} -> {addr}: greeted by {name}")),
                    Err(e) => problems.push(format!("{who} -> {addr}: {e:#}")),
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "non-VIP traffic broken with XDP attached:\n{}",
        problems.join("\n")
    );

    // A non-VIP stream through the gateway keeps working.
    let addr = SocketAddrV4::new(lab.backend_addr(3), KUBE_API_PORT);
    let stream = Stream::open(&lab, &client, addr).expect("non-VIP stream");
    assert_eq!(stream.node(), lab.backend_name(3));
    thread::sleep(Duration::from_millis(300));
    let report = stream.finish();
    assert!(
        report.errors.is_empty(),
        "stream errors: {:?}",
        report.errors
    );
    assert_eq!(report.bytes_echoed, report.bytes_sent);

    let status = lab.lb_status().expect("lb status");
    let ifaces = status
        .get("interfaces")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    println!("lb interfaces: {ifaces:?}");
    for want in lab.gateway_interfaces() {
        assert!(
            ifaces
                .iter()
                .any(|i| i.get("name").and_then(|n| n.as_str()) == Some(want)),
            "interface {want} missing from status: {status}"
        );
    }
}
