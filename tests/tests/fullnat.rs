//! Issue 18: the kubeadm-guide shape (see `lb_tests::lab::lan`). A client,
//! a worker and the control-plane nodes share one LAN with the gateway,
//! and the nodes' default route goes to a separate router. In DNAT mode
//! nothing on the LAN can use the VIP; in full-NAT mode everything can,
//! with no change on the nodes.
//!
//! They need root and a built `lb`; without them they skip (and fail under
//! `CI=true`). A failing test prints the lb and node logs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::checks::{assert_intact, ctl_ok, share_summary, NodeOutage};
use lb_tests::lab::lan::LAN_SNAT;
use lb_tests::{
    connect_and_name, lb_or_skip, root_or_skip, HealthSettings, Lab, LabOptions, Stream,
    KUBE_API_PORT, TALOS_API_PORT,
};

#[path = "fullnat/init_one_arm.rs"]
mod init_one_arm;
#[path = "fullnat/shapes.rs"]
mod shapes;

/// One lab at a time: the tests time failovers.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ready(test: &str) -> bool {
    root_or_skip(test) && lb_or_skip(test)
}

const FAST: HealthSettings = HealthSettings {
    interval: Duration::from_millis(500),
    timeout: Duration::from_millis(250),
    healthy_threshold: 2,
    unhealthy_threshold: 2,
};

/// The LAN lab with every node serving and lb running in `mode`.
fn lan_with_lb(mode: &str) -> Lab {
    let lab = Lab::create_lan(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
        .expect("creating the LAN lab");
    lab.start_all_backends().expect("starting the nodes");
    lab.start_lb(&lab.lan_config_toml(FAST, mode))
        .expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("nodes up");
    lab
}

/// `n` connections from `ns` to `addr` (each allowed `timeout`): which
/// node greeted each, and how many failed. Gives up after
/// [`GIVE_UP_AFTER`] failures without a success when the timeout is long
/// (a broken path fails the test at once instead of after `n` timeouts).
fn connections(
    lab: &Lab,
    ns: &str,
    addr: SocketAddr,
    n: usize,
    timeout: Duration,
) -> (BTreeMap<String, usize>, usize) {
    lab.in_ns(ns, || {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut failed = 0;
        for _ in 0..n {
            match connect_and_name(addr, timeout) {
                Ok(node) => *counts.entry(node).or_default() += 1,
                Err(_) => failed += 1,
            }
            if counts.is_empty() && failed >= GIVE_UP_AFTER && timeout > Duration::from_secs(1) {
                return (counts, n);
            }
        }
        (counts, failed)
    })
    .expect("entering the namespace")
}

/// Failures in a row, before any success, after which [`connections`]
/// gives up (and reports every connection failed).
const GIVE_UP_AFTER: usize = 5;

/// Who connects in these tests: (label, namespace).
fn clients(lab: &Lab) -> Vec<(String, String)> {
    vec![
        ("client".into(), lab.client_ns()),
        ("worker".into(), lab.worker_ns()),
        ("node cp-01".into(), lab.backend_ns(1)),
    ]
}

/// Today's failure, measured: in DNAT mode the node answers an on-link
/// client from its own address and the client resets; a node connecting
/// to the VIP gets its own (or another node's) address back.
#[test]
fn dnat_on_the_nodes_lan_fails_for_every_client() {
    if !ready("dnat_on_the_nodes_lan_fails_for_every_client") {
        return;
    }
    let _serial = serial();
    let lab = lan_with_lb("dnat");
    // The LAN itself works: every host reaches a node directly.
    let direct = SocketAddr::from((lab.backend_addr(2), KUBE_API_PORT));
    for (who, ns) in clients(&lab) {
        let (ok, failed) = connections(&lab, &ns, direct, 3, Duration::from_secs(2));
        assert_eq!(
            (ok.get("cp-02"), failed),
            (Some(&3), 0),
            "{who} -> cp-02 directly"
        );
    }
    let vip = lab.lan_vip(KUBE_API_PORT).into();
    for (who, ns) in clients(&lab) {
        let (ok, failed) = connections(&lab, &ns, vip, 20, Duration::from_millis(500));
        let ok: usize = ok.values().sum();
        println!("dnat mode, from the {who}: {ok}/20 connections through the VIP succeeded ({failed} failed)");
        assert_eq!(ok, 0, "from the {who}: DNAT on the nodes' LAN cannot work");
    }
}

/// Full-NAT: the client, the worker and a node itself (hairpin: its flow
/// may be balanced to itself) all connect through the VIP, spread over the
/// nodes, on both listeners; the nodes see the source-NAT address.
#[test]
fn fullnat_serves_the_whole_lan_and_spreads() {
    if !ready("fullnat_serves_the_whole_lan_and_spreads") {
        return;
    }
    let _serial = serial();
    let lab = lan_with_lb("fullnat");
    let n = 300;
    for port in [KUBE_API_PORT, TALOS_API_PORT] {
        let vip = lab.lan_vip(port).into();
        for (who, ns) in clients(&lab) {
            let (counts, failed) = connections(&lab, &ns, vip, n, Duration::from_secs(2));
            println!(
                "fullnat :{port} from the {who}: {n} connections: {}; failures {failed}",
                share_summary(&counts, n)
            );
            if failed > 0 {
                println!("{}", ctl_ok(&lab, &["status"]));
                println!("{}", lab.lb_status().expect("status")["counters"]);
            }
            assert_eq!(failed, 0, "from the {who} to :{port}");
            for i in 1..=lab.backends() {
                let c = counts.get(&lab.backend_name(i)).copied().unwrap_or(0);
                assert!(
                    (n * 20 / 100..=n * 47 / 100).contains(&c),
                    "from the {who} to :{port}: {} got {c} of {n}: {counts:?}",
                    lab.backend_name(i)
                );
            }
        }
    }
    // What the nodes see: the source-NAT address, never the client's.
    let status = lab.lb_status().expect("lb status");
    let l = &status["listeners"][0];
    assert_eq!(l["mode"], "fullnat", "{status}");
    assert_eq!(l["snat_addresses"][0], LAN_SNAT.to_string(), "{status}");
    assert_eq!(l["snat_ports"], "1024-32767", "{status}");
    let text = ctl_ok(&lab, &["status"]);
    println!("{text}");
    assert!(
        text.contains("mode=fullnat (snat 198.18.2.101 ports 1024-32767"),
        "{text}"
    );
}

/// Long-lived byte-checked streams through the VIP from the worker and
/// from a node (hairpin included when it lands on itself).
fn streams(lab: &Lab, per_ns: usize) -> Vec<(String, Stream)> {
    let mut out = Vec::new();
    for (who, ns) in clients(lab) {
        for _ in 0..per_ns {
            let s = Stream::open(lab, &ns, lab.lan_vip(KUBE_API_PORT)).expect("stream");
            out.push((format!("{who} -> {}", s.node()), s));
        }
    }
    out
}

/// A node stopped and restarted: new connections from the worker leave it
/// within the health-check window and come back; streams on the other
/// nodes are untouched.
#[test]
fn fullnat_node_failover_and_recovery() {
    if !ready("fullnat_node_failover_and_recovery") {
        return;
    }
    let _serial = serial();
    let lab = lan_with_lb("fullnat");
    let victim = lab.backend_name(2);
    let kept: Vec<(String, Stream)> = streams(&lab, 3)
        .into_iter()
        .filter(|(_, s)| s.node() != victim)
        .collect();
    let worker = lab.worker_ns();
    let outage = NodeOutage {
        lab: &lab,
        ns: &worker,
        addr: lab.lan_vip(KUBE_API_PORT).into(),
        victim: &victim,
        h: &FAST,
    };
    let t_stop = Instant::now();
    lab.stop_backend(2).expect("stopping cp-02");
    outage.assert_failover("fullnat, worker", t_stop);
    let t_start = Instant::now();
    lab.start_backend(2).expect("restarting cp-02");
    outage.assert_recovery("fullnat, worker", t_start);
    for (what, s) in kept {
        assert_intact(&format!("stream {what} across cp-02's outage"), &s.finish());
    }
}

/// `kill -9` of the daemon and a restart that adopts the pinned data path
/// (the source-NAT maps included): every stream keeps every byte, and new
/// connections work after the restart.
#[test]
fn fullnat_streams_survive_kill_and_restart() {
    if !ready("fullnat_streams_survive_kill_and_restart") {
        return;
    }
    let _serial = serial();
    let lab = lan_with_lb("fullnat");
    let open = streams(&lab, 2);
    thread::sleep(Duration::from_millis(500));
    lab.kill_lb().expect("kill -9 lb");
    thread::sleep(Duration::from_secs(1));
    let config = lab.lan_config_toml(FAST, "fullnat");
    lab.start_lb(&config).expect("restarting lb");
    thread::sleep(Duration::from_secs(1));
    let n = open.len();
    for (what, s) in open {
        assert_intact(
            &format!("stream {what} across kill -9 and restart"),
            &s.finish(),
        );
    }
    println!("{n}/{n} streams intact across kill -9 and a restart");
    let (counts, failed) = connections(
        &lab,
        &lab.worker_ns(),
        lab.lan_vip(KUBE_API_PORT).into(),
        60,
        Duration::from_secs(2),
    );
    assert_eq!(failed, 0, "after the restart: {counts:?}");
}

/// A reload from DNAT to full-NAT fixes the LAN at once; a reload naming
/// the VIP as source-NAT address is rejected whole and changes nothing.
#[test]
fn reload_switches_a_listener_to_fullnat() {
    if !ready("reload_switches_a_listener_to_fullnat") {
        return;
    }
    let _serial = serial();
    let lab = lan_with_lb("dnat");
    let vip: SocketAddr = lab.lan_vip(KUBE_API_PORT).into();
    let worker = lab.worker_ns();
    let (ok, _) = connections(&lab, &worker, vip, 10, Duration::from_millis(500));
    assert!(ok.is_empty(), "dnat mode from the worker: {ok:?}");

    std::fs::write(lab.lb_config_path(), lab.lan_config_toml(FAST, "fullnat")).unwrap();
    ctl_ok(&lab, &["reload"]);
    let (ok, failed) = connections(&lab, &worker, vip, 30, Duration::from_secs(2));
    println!(
        "after the reload to fullnat, from the worker: {}",
        share_summary(&ok, 30)
    );
    assert_eq!(failed, 0, "{ok:?}");
    let stream = Stream::open(&lab, &worker, vip).expect("stream");

    let bad = lab
        .lan_config_toml(FAST, "fullnat")
        .replace(&LAN_SNAT.to_string(), "198.18.2.100");
    std::fs::write(lab.lb_config_path(), bad).unwrap();
    let out = lab.lb_ctl(&["reload"]).expect("lb reload");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad reload must fail");
    assert!(err.contains("dataplane.snat_ipv4[0]"), "{err}");
    let (_, failed) = connections(&lab, &worker, vip, 20, Duration::from_secs(2));
    assert_eq!(failed, 0, "the running configuration serves on");
    thread::sleep(Duration::from_millis(800));
    assert_intact("stream across a rejected reload", &stream.finish());
    let status = lab.lb_status().expect("status");
    assert_eq!(status["listeners"][0]["mode"], "fullnat");
    assert_eq!(status["last_reload"]["ok"], false);
}

/// TLS and HTTPS through the VIP as a kubelet or kubectl does it: each node
/// serves HTTPS `/readyz` on 7443 (cp-sim, a self-signed certificate for
/// the VIP), and `kubectl get --raw /readyz` and `curl` from the worker and
/// from a node (hairpin) get 200 through a full-NAT listener.
#[test]
fn fullnat_tls_requests_from_the_lan() {
    if !ready("fullnat_tls_requests_from_the_lan") {
        return;
    }
    let _serial = serial();
    let lab = Lab::create_lan(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
        .expect("creating the LAN lab");
    lab.start_all_backends().expect("starting the nodes");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(
        lb_tests::lab::lan::LAN_VIP.into(),
    )];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (crt, pem) = (lab.dir().join("vip.crt"), lab.dir().join("vip.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    for i in 1..=lab.backends() {
        let mut cmd = std::process::Command::new(lab.cp_sim_bin());
        cmd.arg("--name")
            .arg(lab.backend_name(i))
            .arg("--listen")
            .arg(format!("{}:7443", lab.backend_addr(i)))
            .arg("--tls-cert")
            .arg(&crt)
            .arg("--tls-key")
            .arg(&pem)
            .args(["--https-status", "200"]);
        let log = lab.dir().join(format!("https-{i}.log"));
        lab.spawn_in(&lab.backend_ns(i), &cmd, Some(&log))
            .expect("cp-sim https");
    }
    let config = format!(
        "{}\n[[listener]]\nname = \"https\"\nvip = \"{}\"\nport = 7443\nmode = \"fullnat\"\n",
        lab.lan_config_toml(FAST, "fullnat"),
        lb_tests::lab::lan::LAN_VIP
    );
    lab.start_lb(&config).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("nodes up");
    let url = format!("https://{}:7443", lb_tests::lab::lan::LAN_VIP);
    let n = 10;
    for (who, ns) in [
        ("worker", lab.worker_ns()),
        ("node cp-01", lab.backend_ns(1)),
    ] {
        let mut ok = 0;
        for _ in 0..n {
            let kubectl = lb_tests::lab::run_with_timeout(
                std::process::Command::new("ip").args([
                    "netns",
                    "exec",
                    &ns,
                    "kubectl",
                    "--server",
                    &url,
                    "--insecure-skip-tls-verify=true",
                    // Credentials on the command line: kubectl would
                    // prompt for a username without them.
                    "--token=lab",
                    "--request-timeout=5s",
                    "get",
                    "--raw",
                    "/readyz",
                ]),
                Duration::from_secs(10),
            )
            .expect("kubectl");
            let curl = lb_tests::lab::run_with_timeout(
                std::process::Command::new("ip").args([
                    "netns",
                    "exec",
                    &ns,
                    "curl",
                    "-sk",
                    "--max-time",
                    "5",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &format!("{url}/readyz"),
                ]),
                Duration::from_secs(10),
            )
            .expect("curl");
            if kubectl.status.success() && String::from_utf8_lossy(&curl.stdout) == "200" {
                ok += 1;
            }
        }
        println!("fullnat HTTPS from the {who}: {ok}/{n} kubectl and curl requests answered 200");
        assert_eq!(ok, n, "from the {who}");
    }
    let status = lab.lb_status().expect("status");
    let flows: Vec<String> = status["listeners"][2]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{}={}", b["name"], b["new_flows"]))
        .collect();
    println!("https listener new flows per node: {}", flows.join(", "));
}
