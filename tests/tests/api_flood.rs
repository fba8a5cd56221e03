//! Idle clients cannot starve the HTTP API's real callers (issue 19,
//! finding 4): keepalived's track script (`lb healthz`) and Prometheus.
//!
//! Before: the API accepted 64 connections and left the rest in the
//! kernel's backlog, so 200 idle connections from any local user made
//! `lb healthz` fail 0 of 11 times (pushing a healthy gateway out of VRRP)
//! and 2,000 made `/metrics` time out 6 of 6.
//!
//! Root and a built `lb` are needed; without them the test skips (and fails
//! under `CI=true`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use lb_tests::lab::run_with_timeout;
use lb_tests::{netns_ready, HealthSettings, Lab, LB_API};

/// Idle connections the flood holds open.
const IDLE: usize = 2000;

/// Raises this process's descriptor limit to hold the flood.
fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: a valid rlimit; root may raise both limits.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

/// `GET /metrics` with a 2 s budget: the status line, or the error.
fn scrape(api: SocketAddr) -> Result<String, String> {
    let t = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&api, t).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or("").to_owned())
}

#[test]
fn idle_connections_do_not_starve_healthz_or_metrics() {
    if !netns_ready("idle_connections_do_not_starve_healthz_or_metrics") {
        return;
    }
    let lab = Lab::serving(env!("CARGO_BIN_EXE_cp-sim"));
    lab.start_lb(&lab.config_toml_with(HealthSettings::default()))
        .expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10)).unwrap();
    raise_nofile(8192);
    let api: SocketAddr = LB_API.parse().unwrap();

    // The flood: connections that never send a byte, held for the whole test.
    let gw = lab.gateway_ns();
    let idle: Vec<TcpStream> = lab
        .in_ns(&gw, || {
            (0..IDLE)
                .filter_map(|_| TcpStream::connect_timeout(&api, Duration::from_secs(1)).ok())
                .collect()
        })
        .unwrap();
    assert!(
        idle.len() >= IDLE / 2,
        "opened {} idle connections",
        idle.len()
    );

    let mut healthz_ok = 0;
    let mut worst = Duration::ZERO;
    for _ in 0..11 {
        let t0 = Instant::now();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &gw]).arg(lab.lb_bin()).args([
            "healthz",
            "--api",
            LB_API,
            "--timeout",
            "1s",
        ]);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(5)).expect("lb healthz");
        worst = worst.max(t0.elapsed());
        if out.status.success() {
            healthz_ok += 1;
        } else {
            eprintln!(
                "lb healthz: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let scrapes: Vec<Result<String, String>> = lab
        .in_ns(&gw, || (0..6).map(|_| scrape(api)).collect())
        .unwrap();
    let scraped = scrapes
        .iter()
        .filter(|r| r.as_deref().is_ok_and(|l| l.contains(" 200 ")))
        .count();
    eprintln!(
        "with {} idle connections: lb healthz {healthz_ok}/11 (slowest {worst:?}), /metrics {scraped}/6 {scrapes:?}",
        idle.len()
    );
    assert_eq!(healthz_ok, 11, "lb healthz starved by idle connections");
    assert_eq!(scraped, 6, "/metrics starved by idle connections");
    drop(idle);
    let _ = lab.stop_lb();
}
