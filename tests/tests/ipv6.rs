//! IPv6 and dual stack in the namespace lab (issue 14): an IPv6 VIP spread
//! over three nodes, failover and recovery, a daemon restart that adopts the
//! pinned data path under IPv6 streams, a drain, and the same nodes serving
//! an IPv4 and an IPv6 listener at once.
//!
//! The lab is dual-stack (ULA fd00:198:18::/48 inside its own namespaces
//! only; see `lb_tests::lab`). Root and a built `lb` are needed; without
//! them the tests skip (and fail under `CI=true`).

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::checks::{
    assert_cut_off_after_delay, assert_intact, ctl_ok, share_summary, stream_on, NodeOutage,
};
use lb_tests::{
    connect_and_name, measure_failover, netns_ready, root_or_skip, spread, status_backend,
    Families, HealthSettings, Lab, LabOptions, Stream, KUBE_API_PORT, LB_API, TALOS_API_PORT,
};

/// The tests measure timings; one at a time keeps them from skewing each other.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A lab with every node serving (IPv4 and IPv6).
fn new_lab() -> Lab {
    Lab::serving(env!("CARGO_BIN_EXE_cp-sim"))
}

/// The lab's config for `families`, with `listener_extra` after every
/// listener's `port` line and `dataplane_extra` in `[dataplane]`.
fn config(lab: &Lab, families: Families, listener_extra: &str, dataplane_extra: &str) -> String {
    let mut out = String::new();
    for line in lab
        .config_toml_families(HealthSettings::default(), families)
        .lines()
    {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("port = ") {
            out.push_str(listener_extra);
        }
        if line.starts_with("xdp_mode = ") {
            out.push_str(dataplane_extra);
        }
    }
    out
}

/// A lab whose lb serves the IPv6 listeners only, every backend up.
fn lab_with_v6_lb(listener_extra: &str) -> Lab {
    let lab = new_lab();
    lab.start_lb(&config(&lab, Families::V6, listener_extra, ""))
        .expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");
    lab
}

fn vip6(lab: &Lab) -> SocketAddr {
    lab.vip6_addr(KUBE_API_PORT)
}

/// `n` connections to `addr` land on every node with a fair share (25–42 %
/// of three), and none fails.
fn assert_spread(lab: &Lab, what: &str, addr: SocketAddr, n: usize) {
    // A VIP that does not answer at all fails here, not after n timeouts.
    let first = spread(lab, &lab.client_ns(), addr, 5).expect("spreading");
    assert_eq!(
        first.failures, 0,
        "{what}: {addr} does not answer: {:?}",
        first.errors
    );
    let started = Instant::now();
    let s = spread(lab, &lab.client_ns(), addr, n).expect("spreading");
    println!(
        "{what} {addr}: {n} connections in {:?}: {}; failures {}",
        started.elapsed(),
        share_summary(&s.counts, n),
        s.failures
    );
    assert_eq!(s.failures, 0, "{what}: failed connections: {:?}", s.errors);
    assert_eq!(s.counts.len(), lab.backends(), "{what}: {:?}", s.counts);
    for i in 1..=lab.backends() {
        let name = lab.backend_name(i);
        let c = s.count(&name);
        assert!(
            (n * 25 / 100..=n * 42 / 100).contains(&c),
            "{what}: {name} got {c} of {n} (want 25%..42%): {:?}",
            s.counts
        );
    }
}

/// The lab itself: IPv6 is routed client ↔ nodes through the gateway, the
/// nodes answer on their IPv6 addresses, and the IPv6 VIP answers nowhere
/// without lb.
#[test]
fn ipv6_lab_routes_without_lb() {
    if !root_or_skip("ipv6_lab_routes_without_lb") {
        return;
    }
    let lab = Lab::create(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
        .expect("creating the lab");
    lab.start_all_backends().expect("starting backends");
    for i in 1..=lab.backends() {
        for port in [KUBE_API_PORT, TALOS_API_PORT] {
            let addr = SocketAddr::new(lab.backend_addr6(i).into(), port);
            let name = lab
                .in_ns(&lab.client_ns(), || {
                    connect_and_name(addr, Duration::from_secs(2))
                })
                .unwrap()
                .unwrap_or_else(|e| panic!("client -> {addr}: {e:#}"));
            assert_eq!(name, lab.backend_name(i), "{addr}");
        }
    }
    let vip = vip6(&lab);
    let answered = lab
        .in_ns(&lab.client_ns(), || {
            connect_and_name(vip, Duration::from_millis(500))
        })
        .unwrap();
    assert!(answered.is_err(), "{vip} answered without lb");
}

/// Spread over three nodes through the IPv6 VIP, on both listeners; `lb
/// status` shows the IPv6 VIP as `[addr]:port` and the nodes' IPv6 addresses.
#[test]
fn ipv6_vip_spreads_over_three_nodes() {
    if !netns_ready("ipv6_vip_spreads_over_three_nodes") {
        return;
    }
    let _g = serial();
    let lab = lab_with_v6_lb("");
    assert_spread(&lab, "IPv6", vip6(&lab), 600);
    assert_spread(&lab, "IPv6", lab.vip6_addr(TALOS_API_PORT), 300);

    let st = lab.lb_status().expect("lb status --json");
    let l = &st["listeners"][0];
    assert_eq!(l["name"], "kubernetes-api-v6", "{st}");
    assert_eq!(l["vip"], lab.vip6().to_string(), "{st}");
    let b = status_backend(&st, "kubernetes-api-v6", "cp-01-v6").expect("cp-01-v6");
    assert_eq!(b["address"], lab.backend_addr6(1).to_string(), "{b}");
    assert!(b["new_flows"].as_u64().unwrap_or(0) > 0, "{b}");

    let text = ctl_ok(&lab, &["status"]);
    let listener_line = format!("listener kubernetes-api-v6 [{}]:6443 -> :6443", lab.vip6());
    assert!(text.contains(&listener_line), "{text}");
    assert!(text.contains(&lab.backend_addr6(3).to_string()), "{text}");

    // Prometheus: the node's IPv6 address as its `address` label.
    let metrics = lab
        .in_ns(&lab.gateway_ns(), || http_get(LB_API, "/metrics"))
        .unwrap();
    let label = format!("backend=\"cp-01-v6\",address=\"{}\"", lab.backend_addr6(1));
    assert!(
        metrics.contains(&label),
        "no {label} in /metrics:\n{metrics}"
    );
}

/// A node stops: new IPv6 connections leave it within the health-check
/// window (the outage is measured and printed), a stream on another node
/// never notices, and the node takes flows again once it is back.
#[test]
fn ipv6_failover_and_recovery() {
    if !netns_ready("ipv6_failover_and_recovery") {
        return;
    }
    let _g = serial();
    let h = HealthSettings::default();
    let lab = lab_with_v6_lb("");
    let client = lab.client_ns();
    let vip = vip6(&lab);
    let victim = lab.backend_name(2);
    let stream = stream_on(&lab, vip, "cp-01");
    let outage = NodeOutage {
        lab: &lab,
        ns: &client,
        addr: vip,
        victim: &victim,
        h: &h,
    };
    thread::sleep(Duration::from_millis(200));

    lab.stop_backend(2).expect("stopping backend 2");
    outage.assert_failover("IPv6 failover", Instant::now());
    assert_eq!(
        lab.backend_health("kubernetes-api-v6", "cp-02-v6")
            .expect("lb status"),
        "down"
    );

    lab.start_backend(2).expect("restarting backend 2");
    outage.assert_recovery("IPv6 recovery", Instant::now());
    assert_intact("IPv6 stream on a surviving node", &stream.finish());
}

/// kill -9 of the daemon: the pinned data path keeps balancing IPv6; the
/// next daemon adopts it (the IPv6 flow is still tracked) and a stream
/// through the IPv6 VIP survives two restarts with every byte echoed.
#[test]
fn ipv6_streams_survive_restart_with_adoption() {
    if !netns_ready("ipv6_streams_survive_restart_with_adoption") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let cfg = config(&lab, Families::V6, "", "keep_attached = true\n");
    lab.start_lb(&cfg).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");
    let stream = Stream::open(&lab, &lab.client_ns(), vip6(&lab)).expect("stream");
    let node = format!("{}-v6", stream.node());

    lab.kill_lb().expect("kill -9");
    let t_kill = Instant::now();
    thread::sleep(Duration::from_millis(300));
    let s = spread(&lab, &lab.client_ns(), vip6(&lab), 30).unwrap();
    assert_eq!(
        s.failures, 0,
        "no daemon, IPv6 still balanced: {:?}",
        s.errors
    );

    lab.start_lb(&cfg).expect("restarting lb");
    println!("IPv6: daemon back {:?} after kill -9", t_kill.elapsed());
    assert!(
        lab.lb_log().contains("adopting the pinned data path"),
        "{}",
        lab.lb_log()
    );
    // The flow scanner runs in the background: give it a round.
    let deadline = Instant::now() + Duration::from_secs(5);
    let tracked = loop {
        let st = lab.lb_status().unwrap();
        let b = status_backend(&st, "kubernetes-api-v6", &node).cloned();
        let n = b
            .as_ref()
            .and_then(|b| b["tracked_flows"].as_u64())
            .unwrap_or(0);
        if n >= 1 || Instant::now() > deadline {
            break (n, b);
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert!(
        tracked.0 >= 1,
        "the IPv6 stream's flow survived in conntrack: {:?}",
        tracked.1
    );

    assert!(lab.stop_lb().expect("SIGTERM").success());
    let s = spread(&lab, &lab.client_ns(), vip6(&lab), 10).unwrap();
    assert_eq!(s.failures, 0, "kept attached after SIGTERM: {:?}", s.errors);
    lab.start_lb(&cfg).expect("third run");
    thread::sleep(Duration::from_millis(300));
    assert_intact(
        "IPv6 stream across kill -9 and two restarts",
        &stream.finish(),
    );
}

/// `lb drain` of a node's IPv6 backend: no new IPv6 flows reach it, its
/// stream continues until the deregistration delay cuts it off, and
/// `undrain` brings it back.
#[test]
fn ipv6_drain_and_undrain() {
    if !netns_ready("ipv6_drain_and_undrain") {
        return;
    }
    let _g = serial();
    let lab = lab_with_v6_lb("deregistration_delay = \"3s\"\n");
    let vip = vip6(&lab);
    let keep = stream_on(&lab, vip, "cp-01");
    let victim = stream_on(&lab, vip, "cp-03");

    let t_drain = Instant::now();
    ctl_ok(&lab, &["drain", "cp-03-v6"]);
    let s = spread(&lab, &lab.client_ns(), vip, 60).unwrap();
    println!("IPv6 with cp-03-v6 drained: {:?}", s.counts);
    assert_eq!(s.failures, 0, "{:?}", s.errors);
    assert_eq!(
        s.count("cp-03"),
        0,
        "drained node got new flows: {:?}",
        s.counts
    );
    let st = lab.lb_status().unwrap();
    assert_eq!(st["drained_nodes"][0], "cp-03-v6", "{st}");
    // The drain counts the IPv6 flow it waits for (the conntrack scan runs
    // in the background, about every second).
    let mut b = serde_json::Value::Null;
    for _ in 0..20 {
        let st = lab.lb_status().unwrap();
        b = status_backend(&st, "kubernetes-api-v6", "cp-03-v6")
            .expect("cp-03-v6")
            .clone();
        if b["tracked_flows"] == 1 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b["tracked_flows"], 1, "the drained node's IPv6 stream: {b}");

    thread::sleep(Duration::from_secs(5).saturating_sub(t_drain.elapsed()));
    assert_cut_off_after_delay("the drained IPv6 flow", &victim.finish());

    // Its flow is gone: `drain --wait` has nothing left to wait for.
    ctl_ok(&lab, &["drain", "cp-03-v6", "--wait", "--timeout", "5s"]);

    ctl_ok(&lab, &["undrain", "cp-03-v6"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut back = false;
    while !back && Instant::now() < deadline {
        let s = spread(&lab, &lab.client_ns(), vip, 10).unwrap();
        back = s.count("cp-03") > 0;
    }
    assert!(back, "cp-03 gets new IPv6 connections after undrain");
    assert_intact(
        "IPv6 stream on another node through the drain",
        &keep.finish(),
    );
}

/// Dual stack: the same three nodes serve an IPv4 and an IPv6 listener at
/// once. Both spread while running concurrently, streams of both families
/// run side by side, and stopping a node takes it out of both listeners.
#[test]
fn dual_stack_same_nodes_serve_ipv4_and_ipv6_at_once() {
    if !netns_ready("dual_stack_same_nodes_serve_ipv4_and_ipv6_at_once") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    lab.start_lb(&config(&lab, Families::Dual, "", ""))
        .expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");
    let v4: SocketAddr = lab.vip_addr(KUBE_API_PORT).into();
    let v6 = vip6(&lab);
    let s4 = stream_on(&lab, v4, "cp-01");
    let s6 = stream_on(&lab, v6, "cp-01");

    thread::scope(|scope| {
        let a = scope.spawn(|| assert_spread(&lab, "dual stack, IPv4", v4, 450));
        let b = scope.spawn(|| assert_spread(&lab, "dual stack, IPv6", v6, 450));
        a.join().unwrap();
        b.join().unwrap();
    });
    let st = lab.lb_status().unwrap();
    let names: Vec<&str> = st["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "kubernetes-api",
            "talos-api",
            "kubernetes-api-v6",
            "talos-api-v6"
        ]
    );

    // One node goes: both families' new connections leave it.
    lab.stop_backend(2).expect("stopping backend 2");
    let t_stop = Instant::now();
    let clean_for = Duration::from_millis(1000);
    let limit = Duration::from_secs(8);
    let (f4, f6) = thread::scope(|scope| {
        let a = scope.spawn(|| {
            measure_failover(
                &lab,
                &lab.client_ns(),
                v4,
                "cp-02",
                t_stop,
                clean_for,
                limit,
            )
        });
        let b = scope.spawn(|| {
            measure_failover(
                &lab,
                &lab.client_ns(),
                v6,
                "cp-02",
                t_stop,
                clean_for,
                limit,
            )
        });
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    println!(
        "dual stack failover: IPv4 outage {:?}, IPv6 outage {:?}",
        f4.settled_after, f6.settled_after
    );
    assert!(f4.settled, "IPv4: {:?}", f4.bad("cp-02"));
    assert!(f6.settled, "IPv6: {:?}", f6.bad("cp-02"));
    for (listener, backend) in [
        ("kubernetes-api", "cp-02"),
        ("kubernetes-api-v6", "cp-02-v6"),
    ] {
        assert_eq!(lab.backend_health(listener, backend).unwrap(), "down");
    }
    assert_intact("IPv4 stream beside IPv6", &s4.finish());
    assert_intact("IPv6 stream beside IPv4", &s6.finish());
}

/// HTTPS health checks over IPv6 in the lab: each node serves `GET /readyz`
/// over TLS on its IPv6 address with a certificate from a test CA. Without
/// `server_name`, the name checked is the node's IPv6 address: nodes whose
/// certificate holds it as an IP SAN are up, the node whose certificate
/// only names its IPv4 address is down with the verifier's reason.
#[test]
fn ipv6_https_checks_verify_the_node_address_as_ip_san() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    if !netns_ready("ipv6_https_checks_verify_the_node_address_as_ip_san") {
        return;
    }
    let _g = serial();
    let lab = Lab::create(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
        .expect("creating the lab");
    let dir = lab.dir().to_path_buf();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "lab-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let ca_file = dir.join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    const PORT: u16 = 8443;
    for i in 1..=lab.backends() {
        // Node 3's certificate names only its IPv4 address.
        let san: std::net::IpAddr = if i == 3 {
            lab.backend_addr(i).into()
        } else {
            lab.backend_addr6(i).into()
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, lab.backend_name(i));
        params.subject_alt_names = vec![SanType::IpAddress(san)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let (cert_file, key_file) = (dir.join(format!("n{i}.crt")), dir.join(format!("n{i}.key")));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let mut cmd = std::process::Command::new(lab.cp_sim_bin());
        cmd.arg("--name")
            .arg(lab.backend_name(i))
            .arg("--listen")
            .arg(SocketAddr::new(lab.backend_addr6(i).into(), PORT).to_string())
            .arg("--tls-cert")
            .arg(&cert_file)
            .arg("--tls-key")
            .arg(&key_file)
            .args(["--https-status", "200"]);
        lab.spawn_in(
            &lab.backend_ns(i),
            &cmd,
            Some(&dir.join(format!("n{i}.log"))),
        )
        .expect("starting an https node");
    }

    let mut cfg = lab.config_toml_families(HealthSettings::default(), Families::V6);
    // Only the first listener, checked over https against the test CA.
    cfg = cfg
        .split("\n[[listener]]")
        .next()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("kind = "))
        .map(|l| format!("{l}\n"))
        .collect();
    cfg.push_str(&format!(
        "\n[[listener]]\nname = \"api-v6\"\nvip = \"{}\"\nport = {PORT}\n\
         [listener.health]\nkind = \"https\"\nca_file = {:?}\n",
        lab.vip6(),
        ca_file.display().to_string()
    ));
    lab.start_lb(&cfg).expect("starting lb");

    let deadline = Instant::now() + Duration::from_secs(10);
    let state = |st: &serde_json::Value, b: &str| {
        let b = status_backend(st, "api-v6", b).cloned().unwrap_or_default();
        (
            b["health"].as_str().unwrap_or("-").to_string(),
            b["last_check"].as_str().unwrap_or("-").to_string(),
        )
    };
    let st = loop {
        let st = lab.lb_status().expect("lb status");
        let settled = (1..=3).all(|i| state(&st, &lab.backend_name6(i)).0 != "unknown");
        if (settled && state(&st, "cp-01-v6").0 == "up" && state(&st, "cp-02-v6").0 == "up")
            || Instant::now() > deadline
        {
            break st;
        }
        thread::sleep(Duration::from_millis(100));
    };
    for (node, want) in [("cp-01-v6", "up"), ("cp-02-v6", "up"), ("cp-03-v6", "down")] {
        let (health, last) = state(&st, node);
        println!("https over IPv6: {node} {health} ({last})");
        assert_eq!(health, want, "{node}: {st}");
    }
    let (_, reason) = state(&st, "cp-03-v6");
    assert!(
        reason.starts_with("tls: invalid peer certificate"),
        "cp-03-v6 fails on its certificate's name: {reason}"
    );
}

/// The IPv6 FIB lookup needs IPv6 forwarding on the gateway: `lb run` with
/// an IPv6 listener refuses to start without it, and a reload adding the
/// first IPv6 listener is rejected (the running configuration kept) until
/// it is on.
#[test]
fn ipv6_listener_requires_ipv6_forwarding() {
    if !netns_ready("ipv6_listener_requires_ipv6_forwarding") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let gw = lab.gateway_ns();
    let forwarding = |on: bool| {
        let key = format!("net.ipv6.conf.all.forwarding={}", u8::from(on));
        lb_tests::lab::ns_exec(&gw, ["sysctl", "-qw", key.as_str()]).expect("sysctl");
    };
    forwarding(false);
    let err = lab
        .start_lb(&config(&lab, Families::V6, "", ""))
        .expect_err("lb started without IPv6 forwarding");
    let shown = format!("{err:#}");
    assert!(
        shown.contains("net.ipv6.conf.all.forwarding is 0"),
        "{shown}"
    );

    lab.start_lb(&config(&lab, Families::V4, "", ""))
        .expect("an IPv4-only config needs no IPv6 forwarding");
    std::fs::write(lab.lb_config_path(), config(&lab, Families::Dual, "", "")).unwrap();
    let out = lab.lb_ctl(&["reload"]).expect("lb reload");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "reload accepted: {text}");
    assert!(text.contains("net.ipv6.conf.all.forwarding is 0"), "{text}");
    let st = lab.lb_status().unwrap();
    assert_eq!(st["listeners"].as_array().map(Vec::len), Some(2), "{st}");

    forwarding(true);
    ctl_ok(&lab, &["reload"]);
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");
    let s = spread(&lab, &lab.client_ns(), vip6(&lab), 20).unwrap();
    assert_eq!(s.failures, 0, "{:?}", s.errors);
}

/// A plain HTTP/1.0 GET of `path` from `addr` (the daemon's API), body only.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the API");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}
