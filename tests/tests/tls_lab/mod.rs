//! The TLS health-check lab shared by `health_checks.rs` and
//! `cert_files.rs`: a test CA (rcgen) writing what it issues into a
//! directory, `cp-sim` nodes serving TLS with those certificates, the lab's
//! configuration with `[[listener]]` tables, and status polling.
#![allow(dead_code)] // each test file uses a part

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use lb_tests::lab::run_with_timeout;
use lb_tests::{status_backend, ChildId, HealthSettings, Lab, LabOptions, LB_API};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::Value;

/// Timing-sensitive: one lab at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub const HEALTH: HealthSettings = HealthSettings {
    interval: Duration::from_millis(500),
    timeout: Duration::from_millis(300),
    healthy_threshold: 2,
    unhealthy_threshold: 2,
};

/// How often the status is polled while measuring.
pub const POLL: Duration = Duration::from_millis(50);

// ---- certificates -------------------------------------------------------------

/// A CA that writes what it issues into `dir`.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    pub file: PathBuf,
}

/// PEM files of an issued certificate.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let file = dir.join(format!("{name}.crt"));
        std::fs::write(&file, issuer.pem()).unwrap();
        Ca { issuer, file }
    }

    pub fn issue(&self, dir: &Path, name: &str, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let issued = Issued {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }

    /// A server certificate for `ip`.
    pub fn server(&self, dir: &Path, name: &str, ip: Ipv4Addr) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::IpAddress(ip.into())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(dir, name, params)
    }

    /// A client certificate.
    pub fn client(&self, dir: &Path, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(dir, name, params)
    }
}

// ---- simulated nodes --------------------------------------------------------------

/// Starts `cp-sim` for backend `i` listening on `port` with `args`, and
/// waits (at most 5 s) until the port accepts TCP connections.
pub fn start_sim(lab: &Lab, i: usize, port: u16, label: &str, args: &[&str]) -> ChildId {
    let addr = SocketAddrV4::new(lab.backend_addr(i), port);
    let mut cmd = Command::new(lab.cp_sim_bin());
    cmd.arg("--name")
        .arg(lab.backend_name(i))
        .arg("--listen")
        .arg(addr.to_string())
        .args(args);
    let log = lab
        .dir()
        .join(format!("{}-{port}-{label}.log", lab.backend_name(i)));
    let id = lab
        .spawn_in(&lab.backend_ns(i), &cmd, Some(&log))
        .expect("spawning cp-sim");
    let ready = lab
        .in_ns(&lab.backend_ns(i), || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok() {
                    return true;
                }
                thread::sleep(Duration::from_millis(10));
            }
            false
        })
        .expect("entering the backend namespace");
    assert!(ready, "cp-sim {label} on {addr} not listening within 5 s");
    id
}

pub fn stop_sim(lab: &Lab, id: ChildId) {
    lab.stop_child(id, Duration::from_secs(2))
        .expect("stopping cp-sim");
}

/// `--tls-cert C --tls-key K` plus `extra`.
pub fn tls_args<'a>(server: &'a Issued, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--tls-cert",
        server.cert.to_str().unwrap(),
        "--tls-key",
        server.key.to_str().unwrap(),
    ];
    v.extend_from_slice(extra);
    v
}

// ---- lb config and status -------------------------------------------------------------

/// The lab's generated config up to its first backend (dataplane, api and
/// `[health]` timings; without the lab's `kind = "tcp"`), then the backends
/// and `listeners` (already-rendered `[[listener]]` tables).
pub fn config(lab: &Lab, listeners: &str) -> String {
    let base = lab.config_toml_with(HEALTH);
    let head = base.split("\n[[backend]]").next().unwrap();
    let mut s: String = head
        .lines()
        .filter(|l| !l.trim_start().starts_with("kind"))
        .map(|l| format!("{l}\n"))
        .collect();
    for i in 1..=lab.backends() {
        let _ = write!(
            s,
            "\n[[backend]]\nname = \"{}\"\naddress = \"{}\"\n",
            lab.backend_name(i),
            lab.backend_addr(i)
        );
    }
    s.push_str(listeners);
    s
}

/// A `[[listener]]` table on the lab's VIP with `health` as its
/// `[listener.health]` body.
pub fn listener(lab: &Lab, name: &str, port: u16, target_port: u16, health: &str) -> String {
    format!(
        "\n[[listener]]\nname = \"{name}\"\nvip = \"{}\"\nport = {port}\ntarget_port = {target_port}\n\
         [listener.health]\n{health}\n",
        lab.vip()
    )
}

pub fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// `(health, last_check, serving)` of `backend` under `listener`.
pub fn backend_state(st: &Value, listener: &str, backend: &str) -> Option<(String, String, bool)> {
    let b = status_backend(st, listener, backend)?;
    Some((
        b.get("health")?.as_str()?.to_owned(),
        b.get("last_check")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned(),
        b.get("serving").and_then(Value::as_bool).unwrap_or(false),
    ))
}

/// Polls until `backend` under `listener` has health `want`; returns the
/// time since `since` and the status seen then.
pub fn wait_health(
    lab: &Lab,
    listener: &str,
    backend: &str,
    want: &str,
    since: Instant,
    limit: Duration,
) -> Result<(Duration, Value)> {
    let mut last = String::from("no status yet");
    while since.elapsed() < limit {
        match lab.lb_status() {
            Ok(st) => {
                if let Some((health, _, _)) = backend_state(&st, listener, backend) {
                    if health == want {
                        return Ok((since.elapsed(), st));
                    }
                }
                last = format!("{:?}", backend_state(&st, listener, backend));
            }
            Err(e) => last = format!("{e:#}"),
        }
        thread::sleep(POLL);
    }
    bail!("{listener}/{backend} not {want} within {limit:?}; last: {last}")
}

/// The last transition of `backend` under `listener`.
pub fn last_transition(st: &Value, listener: &str, backend: &str) -> Result<Value> {
    status_backend(st, listener, backend)
        .and_then(|b| b.get("transitions"))
        .and_then(Value::as_array)
        .and_then(|t| t.last().cloned())
        .ok_or_else(|| anyhow!("no transitions for {listener}/{backend} in {st}"))
}

/// `lb status` as a table.
pub fn status_table(lab: &Lab) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.gateway_ns()])
        .arg(lab.lb_bin())
        .args(["status", "--api", LB_API]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(5)).expect("lb status");
    assert!(out.status.success(), "lb status failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Worst case from the start of a failure to the backend being down: the
/// failure begins right after a check, `unhealthy_threshold` more checks
/// (each possibly running into the timeout) follow, plus polling and slack.
pub fn detect_limit() -> Duration {
    HEALTH.interval * HEALTH.unhealthy_threshold + HEALTH.timeout + Duration::from_millis(700)
}

/// Likewise for `healthy_threshold` successes.
pub fn recover_limit() -> Duration {
    HEALTH.interval * HEALTH.healthy_threshold + HEALTH.timeout + Duration::from_millis(700)
}

pub fn new_lab() -> Lab {
    Lab::create(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim"))).expect("creating the lab")
}
