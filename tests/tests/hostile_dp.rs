//! Hostile traffic against the namespace lab (issue 11, findings 3 and 5):
//!
//! - a SYN flood (hping3, bounded in count, spoofed source inside the
//!   lab's 198.18.0.0/15) while an idle server-push flow sits on a node
//!   port that two listeners share: with one conntrack table the flood
//!   evicted the flow and the next push left untranslated (the client
//!   answered RST); now SYNs only churn the embryonic table.
//! - a forged "reply" (a node's address as source) sent from the client
//!   side: it was translated and forwarded; now it is dropped and counted.
//!
//! Needs root and a built `lb` (skips without them; fails under `CI=true`).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddrV4, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use lb_tests::lab::run_with_timeout;
use lb_tests::{lb_or_skip, root_or_skip, HealthSettings, Lab, LabOptions, LB_API};

/// Port of the push servers on the nodes, and of the first listener.
const PUSH_PORT: u16 = 7000;
/// Second listener, mapped to the same node port.
const SHARED_PORT: u16 = 7001;
/// Seconds between two pushes: the flood runs in between.
const PUSH_PERIOD_S: u64 = 8;

/// A server that sends a numbered line every `PUSH_PERIOD_S` seconds on each
/// connection (at most 20 lines) and never reads: a watch-like stream that
/// is idle on the client side. Bounded: it exits after 5 minutes.
const PUSH_SERVER: &str = r#"
import socket, sys, threading, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
s.settimeout(1.0)
period = float(sys.argv[3])
def push(c):
    try:
        for i in range(20):
            c.sendall(b"%08d\n" % i)
            time.sleep(period)
    except OSError:
        pass
    finally:
        c.close()
end = time.time() + 300
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    threading.Thread(target=push, args=(c,), daemon=True).start()
"#;

fn new_lab() -> Lab {
    let lab = Lab::create(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
        .expect("creating the lab");
    lab.start_all_backends().expect("starting backends");
    for i in 1..=lab.backends() {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-c",
            PUSH_SERVER,
            &lab.backend_addr(i).to_string(),
            &PUSH_PORT.to_string(),
            &PUSH_PERIOD_S.to_string(),
        ]);
        let log = lab.dir().join(format!("push-{i}.log"));
        lab.spawn_in(&lab.backend_ns(i), &cmd, Some(&log))
            .expect("starting a push server");
    }
    lab
}

/// The lab's config with small established tables and two listeners on the
/// push port (`examples/lb.toml`'s 50001 → 50000 shape).
fn config(lab: &Lab) -> String {
    let mut out = String::new();
    for line in lab.config_toml_with(HealthSettings::default()).lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("xdp_mode = ") {
            out.push_str("conntrack_capacity = 1024\n");
        }
    }
    for (name, port) in [("push", PUSH_PORT), ("push-shared", SHARED_PORT)] {
        out.push_str(&format!(
            "\n[[listener]]\nname = \"{name}\"\nvip = \"{}\"\nport = {port}\ntarget_port = {PUSH_PORT}\n",
            lab.vip()
        ));
    }
    out
}

/// A global counter from `/metrics` (`family{label="name"}`), 0 when absent.
fn counter(lab: &Lab, series: &str) -> Result<u64> {
    let url = format!("http://{LB_API}/metrics");
    let body = lab.in_ns(&lab.gateway_ns(), move || -> Result<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        Ok(agent.get(&url).call()?.body_mut().read_to_string()?)
    })??;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// Runs `args` in namespace `ns`, bounded to 60 s.
fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let out = run_with_timeout(
        Command::new("ip").args(["netns", "exec", ns]).args(args),
        Duration::from_secs(60),
    )?;
    Ok(String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout))
}

/// Reads the next pushed line, expecting number `n`.
fn expect_line(r: &mut BufReader<TcpStream>, n: u32) -> Result<()> {
    let mut line = String::new();
    r.read_line(&mut line)
        .with_context(|| format!("reading push {n}"))?;
    anyhow::ensure!(line == format!("{n:08}\n"), "push {n}: got {line:?}");
    Ok(())
}

#[test]
fn syn_flood_spares_an_idle_server_push_flow_on_a_shared_node_port() {
    if !root_or_skip("syn_flood_spares_an_idle_server_push_flow") || !lb_or_skip("syn_flood") {
        return;
    }
    let lab = new_lab();
    lab.start_lb(&config(&lab)).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(20))
        .expect("backends up");

    let addr = SocketAddrV4::new(lab.vip(), PUSH_PORT);
    let sock = lab
        .in_ns(&lab.client_ns(), || {
            TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3))
        })
        .expect("netns")
        .expect("connecting to the push listener");
    sock.set_read_timeout(Some(Duration::from_secs(PUSH_PERIOD_S * 2)))
        .unwrap();
    let mut r = BufReader::new(sock);
    expect_line(&mut r, 0).expect("first push");

    // 20,000 SYNs, each from a new port of one spoofed lab address, at
    // ~10 kpps: twenty times the established table, inside one push period.
    let flood = in_ns(
        &lab.client_ns(),
        &[
            "hping3",
            "-q",
            "-S",
            "-a",
            "198.19.99.99",
            "-p",
            &PUSH_PORT.to_string(),
            "-c",
            "20000",
            "-i",
            "u100",
            &lab.vip().to_string(),
        ],
    )
    .expect("hping3");
    let new_flows = counter(&lab, "lb_xdp_events_total{event=\"new_flow\"}").unwrap();
    assert!(
        new_flows >= 10_000,
        "the flood reached the data path: {new_flows} new flows\n{flood}"
    );

    // The idle flow's next pushes arrive, translated, in order.
    expect_line(&mut r, 1).expect("push after the flood");
    expect_line(&mut r, 2).expect("second push after the flood");
    let log = lab.lb_log();
    assert!(
        !log.contains("destination-MAC check off"),
        "the daemon wrote every interface's MACs:\n{log}"
    );
    assert_eq!(
        counter(
            &lab,
            "lb_xdp_dropped_packets_total{reason=\"reply_untranslatable\"}"
        )
        .unwrap(),
        0,
        "no reply of a live flow was left untranslatable"
    );
}

#[test]
fn forged_reply_from_the_client_side_is_dropped_and_counted() {
    if !root_or_skip("forged_reply_from_the_client_side") || !lb_or_skip("forged_reply") {
        return;
    }
    let lab = new_lab();
    lab.start_lb(&config(&lab)).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(20))
        .expect("backends up");
    // ACKs claiming to come from cp-01's API endpoint (a listener's only
    // mapping, so the reply fallback would translate them), sent from the
    // client side toward an address the gateway routes (an unused one on
    // the node segment; hping3 cannot address the client itself through
    // the gateway, which is what an attacker on the client's link does).
    let out = in_ns(
        &lab.client_ns(),
        &[
            "hping3",
            "-q",
            "-A",
            "-a",
            &lab.backend_addr(1).to_string(),
            "-s",
            "6443",
            "-k",
            "-p",
            "40000",
            "-c",
            "5",
            "-i",
            "u20000",
            "198.18.2.250",
        ],
    )
    .expect("hping3");
    let dropped = counter(
        &lab,
        "lb_xdp_dropped_packets_total{reason=\"reply_wrong_interface\"}",
    )
    .unwrap();
    assert_eq!(dropped, 5, "every forged reply dropped and counted\n{out}");
    assert_eq!(
        counter(&lab, "lb_xdp_events_total{event=\"reply_fallback\"}").unwrap(),
        0,
        "none translated"
    );
}
