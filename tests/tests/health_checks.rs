//! Health checks against real TLS servers in the namespace lab: `cp-sim`
//! serves TLS (and HTTPS `/readyz`) with certificates made here with rcgen;
//! `lb` checks them with `https`, `tls` and `tcp` checks.
//!
//! - A node answering `/readyz` with 500, presenting a certificate that does
//!   not verify, accepting TCP but never answering, or refusing connections
//!   is taken out with that reason; a `tcp` check of the same port keeps it
//!   in for the first three. Each comes back after `healthy_threshold`
//!   successes. Detection and recovery times are measured and printed.
//! - A `tls` check of a server that requires client certificates passes with
//!   the certificate configured and fails without.
//!
//! They need root and a built `lb`; without them they skip (and fail under
//! `CI=true`).

mod tls_lab;

use std::thread;
use std::time::{Duration, Instant};

use lb_tests::{config_duration, lb_or_skip, root_or_skip, ChildId};
use serde_json::Value;
use tls_lab::*;

// ---- tests ----------------------------------------------------------------------------

/// One way for a node to fail, and what the checks should say.
struct Failure {
    name: &'static str,
    /// Prefix of the reason of the https check's down transition.
    reason: &'static str,
    /// Whether the tcp check of the same port keeps the node up.
    tcp_keeps_it: bool,
}

#[test]
fn https_checks_take_out_what_tcp_checks_miss() {
    if !root_or_skip("https_checks_take_out_what_tcp_checks_miss")
        || !lb_or_skip("https_checks_take_out_what_tcp_checks_miss")
    {
        return;
    }
    let _serial = serial();
    let lab = new_lab();
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "cluster-ca");
    let rogue = Ca::new(pki.path(), "rogue-ca");
    let port = 6443;
    let servers: Vec<Issued> = (1..=lab.backends())
        .map(|i| ca.server(pki.path(), &format!("node-{i}"), lab.backend_addr(i)))
        .collect();
    let mut sims: Vec<ChildId> = (1..=lab.backends())
        .map(|i| {
            start_sim(
                &lab,
                i,
                port,
                "ok",
                &tls_args(&servers[i - 1], &["--https-status", "200"]),
            )
        })
        .collect();

    let cfg = config(
        &lab,
        &(listener(
            &lab,
            "kubernetes-api",
            port,
            port,
            &format!("ca_file = {}", toml_path(&ca.file)),
        ) + &listener(&lab, "kubernetes-api-tcp", 6444, port, "kind = \"tcp\"")),
    );
    lab.start_lb(&cfg).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("every backend up");
    let st = lab.lb_status().expect("lb status");
    let check = st["listeners"][0]["check"].as_str().unwrap_or_default();
    assert!(
        check.starts_with("https GET /readyz expect_status=[200]"),
        "{st}"
    );
    assert_eq!(st["listeners"][1]["check"], "tcp connect", "{st}");

    let victim = 2;
    let name = lab.backend_name(victim);
    let rogue_cert = rogue.server(pki.path(), "rogue", lab.backend_addr(victim));
    let good_args = tls_args(&servers[victim - 1], &["--https-status", "200"]);
    let failures = [
        Failure {
            name: "http 500",
            reason: "http 500",
            tcp_keeps_it: true,
        },
        Failure {
            name: "tls verify",
            reason: "tls: invalid peer certificate: UnknownIssuer",
            tcp_keeps_it: true,
        },
        Failure {
            name: "hang",
            reason: "timeout",
            tcp_keeps_it: true,
        },
        Failure {
            name: "refused",
            reason: "refused",
            tcp_keeps_it: false,
        },
    ];
    let mut report = Vec::new();
    for f in &failures {
        // Break the node.
        stop_sim(&lab, sims[victim - 1]);
        let t_fail = Instant::now();
        let broken = match f.name {
            "http 500" => Some(start_sim(
                &lab,
                victim,
                port,
                "500",
                &tls_args(&servers[victim - 1], &["--https-status", "500"]),
            )),
            "tls verify" => Some(start_sim(
                &lab,
                victim,
                port,
                "rogue",
                &tls_args(&rogue_cert, &["--https-status", "200"]),
            )),
            "hang" => Some(start_sim(&lab, victim, port, "hang", &["--hang"])),
            _ => None,
        };
        let (detected, st) = wait_health(
            &lab,
            "kubernetes-api",
            &name,
            "down",
            t_fail,
            detect_limit() + Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{}: {e:#}", f.name));
        let t = last_transition(&st, "kubernetes-api", &name).unwrap();
        assert_eq!(t["from"], "up", "{}: {t}", f.name);
        assert_eq!(t["to"], "down", "{}: {t}", f.name);
        let reason = t["reason"].as_str().unwrap_or_default().to_owned();
        assert!(
            reason.starts_with(f.reason),
            "{}: transition reason {reason:?}, want {:?}",
            f.name,
            f.reason
        );
        let (_, last, serving) = backend_state(&st, "kubernetes-api", &name).unwrap();
        assert!(
            last.starts_with(f.reason),
            "{}: last_check {last:?}",
            f.name
        );
        assert!(!serving, "{}: still serving", f.name);
        assert!(
            detected <= detect_limit(),
            "{}: detection took {detected:?} > {:?}",
            f.name,
            detect_limit()
        );
        // Several more check rounds: the tcp check of the same port holds.
        thread::sleep(HEALTH.interval * 3);
        let st = lab.lb_status().expect("lb status");
        let (tcp_health, tcp_last, _) =
            backend_state(&st, "kubernetes-api-tcp", &name).expect("tcp listener status");
        if f.tcp_keeps_it {
            assert_eq!(
                (tcp_health.as_str(), tcp_last.as_str()),
                ("up", "ok"),
                "{}: the tcp check should keep {name}",
                f.name
            );
        } else {
            assert_eq!(tcp_health, "down", "{}: tcp check", f.name);
            assert_eq!(tcp_last, "refused", "{}: tcp check", f.name);
        }
        if f.name == "http 500" {
            let table = status_table(&lab);
            println!("lb status while {name} answers 500:\n{table}");
            assert!(table.contains("check: https GET /readyz"), "{table}");
            assert!(table.contains("transitions:"), "{table}");
            assert!(table.contains("up -> down  http 500"), "{table}");
        }

        // Repair it.
        if let Some(id) = broken {
            stop_sim(&lab, id);
        }
        sims[victim - 1] = start_sim(&lab, victim, port, "ok", &good_args);
        let t_fix = Instant::now();
        let (recovered, st) = wait_health(
            &lab,
            "kubernetes-api",
            &name,
            "up",
            t_fix,
            recover_limit() + Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{}: recovery: {e:#}", f.name));
        let t = last_transition(&st, "kubernetes-api", &name).unwrap();
        assert_eq!(
            (t["from"].as_str(), t["to"].as_str()),
            (Some("down"), Some("up"))
        );
        assert_eq!(t["reason"], "ok");
        assert!(
            recovered <= recover_limit(),
            "{}: recovery took {recovered:?} > {:?}",
            f.name,
            recover_limit()
        );
        // healthy_threshold = 2: a second success one interval after the first.
        let at_least =
            HEALTH.interval * (HEALTH.healthy_threshold - 1) - Duration::from_millis(100);
        assert!(
            recovered >= at_least,
            "{}: back after {recovered:?}, before {} successes were possible",
            f.name,
            HEALTH.healthy_threshold
        );
        lab.wait_backends_up(Duration::from_secs(5))
            .expect("every backend up again");
        println!(
            "{:<10}: down after {} ms (reason {reason:?}), up again after {} ms",
            f.name,
            detected.as_millis(),
            recovered.as_millis()
        );
        report.push((f.name, detected, recovered));
    }
    println!(
        "detection with interval={} timeout={} unhealthy_threshold={} healthy_threshold={} (limit {:?}):",
        config_duration(HEALTH.interval),
        config_duration(HEALTH.timeout),
        HEALTH.unhealthy_threshold,
        HEALTH.healthy_threshold,
        detect_limit()
    );
    for (name, d, r) in &report {
        println!(
            "  {name:<10} detected {:>5} ms  recovered {:>5} ms",
            d.as_millis(),
            r.as_millis()
        );
    }
    // Every transition is in the log with its reason.
    let log = lab.lb_log();
    for f in &failures {
        assert!(
            log.lines()
                .any(|l| l.contains("backend down") && l.contains(f.reason)),
            "no 'backend down' log line with {:?}:\n{log}",
            f.reason
        );
    }
}

#[test]
fn tls_checks_present_client_certificates() {
    if !root_or_skip("tls_checks_present_client_certificates")
        || !lb_or_skip("tls_checks_present_client_certificates")
    {
        return;
    }
    let _serial = serial();
    let lab = new_lab();
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "talos-ca");
    let client_ca = Ca::new(pki.path(), "talos-client-ca");
    let lb_cert = client_ca.client(pki.path(), "lb");
    let port = 50000;
    for i in 1..=lab.backends() {
        let server = ca.server(pki.path(), &format!("node-{i}"), lab.backend_addr(i));
        start_sim(
            &lab,
            i,
            port,
            "mtls",
            &tls_args(&server, &["--client-ca", client_ca.file.to_str().unwrap()]),
        );
    }
    let ca_line = format!("ca_file = {}", toml_path(&ca.file));
    let cfg = config(
        &lab,
        &(listener(
            &lab,
            "talos-api",
            port,
            port,
            &format!(
                "{ca_line}\nclient_cert = {}\nclient_key = {}",
                toml_path(&lb_cert.cert),
                toml_path(&lb_cert.key)
            ),
        ) + &listener(&lab, "talos-api-nocert", 50001, port, &ca_line)
            + &listener(
                &lab,
                "talos-api-unverified",
                50002,
                port,
                &format!(
                    "client_cert = {}\nclient_key = {}",
                    toml_path(&lb_cert.cert),
                    toml_path(&lb_cert.key)
                ),
            )),
    );
    lab.start_lb(&cfg).expect("starting lb");

    // Wait until both listeners settle: with the certificate every node is
    // up, without it every node is down.
    let start = Instant::now();
    let limit = Duration::from_secs(10);
    let mut last = Value::Null;
    let settled = loop {
        if start.elapsed() > limit {
            break false;
        }
        if let Ok(st) = lab.lb_status() {
            let all = |listener: &str, health: &str| {
                (1..=lab.backends()).all(|i| {
                    backend_state(&st, listener, &lab.backend_name(i))
                        .is_some_and(|(h, _, _)| h == health)
                })
            };
            if all("talos-api", "up")
                && all("talos-api-unverified", "up")
                && all("talos-api-nocert", "down")
            {
                last = st;
                break true;
            }
            last = st;
        }
        thread::sleep(POLL);
    };
    assert!(settled, "not settled within {limit:?}: {last}");
    let st = &last;
    assert!(
        st["listeners"][0]["check"]
            .as_str()
            .unwrap_or_default()
            .starts_with("tls handshake"),
        "{st}"
    );
    for i in 1..=lab.backends() {
        let name = lab.backend_name(i);
        let (_, with, _) = backend_state(st, "talos-api", &name).unwrap();
        assert_eq!(with, "ok", "{name} with a client certificate");
        let (_, without, _) = backend_state(st, "talos-api-nocert", &name).unwrap();
        println!("{name}: with client certificate: ok; without: {without:?}");
        assert!(
            without.starts_with("tls: ") && without.contains("CertificateRequired"),
            "{name} without a client certificate: {without:?}"
        );
    }
    // Without ca_file nothing is verified, and the log says so once.
    let log = lab.lb_log();
    let warnings = log.lines().filter(|l| l.contains("no ca_file")).count();
    assert_eq!(warnings, 1, "'no ca_file' warnings in:\n{log}");

    // Stays that way over further rounds.
    thread::sleep(HEALTH.interval * 3);
    let st = lab.lb_status().expect("lb status");
    for i in 1..=lab.backends() {
        let name = lab.backend_name(i);
        assert_eq!(
            backend_state(&st, "talos-api", &name).map(|s| s.0),
            Some("up".to_owned())
        );
        assert_eq!(
            backend_state(&st, "talos-api-nocert", &name).map(|s| s.0),
            Some("down".to_owned())
        );
    }
}
