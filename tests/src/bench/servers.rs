//! The backends' servers for the benchmark: nginx answering `200 ok` on port
//! 80 in every backend namespace, and an iperf3 server on backend 1.

use std::fs;
use std::net::{SocketAddrV4, TcpStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::lab::{read_log, write_file, ChildId, Lab};

/// HTTP port of the backends (and of the VIP).
pub const HTTP_PORT: u16 = 80;
/// iperf3 port of backend 1 (and of the VIP).
pub const BULK_PORT: u16 = 5201;

/// Renders an nginx configuration whose pid file, logs and temporary
/// directories all live in `dir`. It listens on the wildcard address, so it
/// answers both the backend's own address (NAT modes) and the VIP (direct
/// routing, where the VIP is put on the backend's loopback).
pub fn nginx_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# Written by lb-bench.
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    server {{
        listen {HTTP_PORT} backlog=4096;
        location / {{
            return 200 \"ok\\n\";
        }}
    }}
}}
"
    )
}

/// Starts nginx in backend `i`'s namespace (`nginx -c FILE -g 'daemon
/// off;'`, tracked by the lab) and waits until it accepts connections.
pub fn start_nginx(lab: &Lab, i: usize) -> Result<ChildId> {
    let dir = lab.dir().join(format!("nginx-b{i}"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let conf = dir.join("nginx.conf");
    write_file(&conf, &nginx_config(&dir))?;
    let log = dir.join("stdout.log");
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&conf).args(["-g", "daemon off;"]);
    let id = lab.spawn_in(&lab.backend_ns(i), &cmd, Some(&log))?;
    let addr = SocketAddrV4::new(lab.backend_addr(i), HTTP_PORT);
    wait_listening(lab, &lab.backend_ns(i), addr, Duration::from_secs(5)).with_context(|| {
        format!(
            "nginx in backend {i}; log:\n{}{}",
            read_log(&log),
            read_log(&dir.join("error.log"))
        )
    })?;
    Ok(id)
}

/// Starts `iperf3 -s` bound to backend `i`'s address and waits until it
/// accepts connections.
pub fn start_iperf_server(lab: &Lab, i: usize) -> Result<ChildId> {
    let addr = lab.backend_addr(i);
    let log = lab.dir().join(format!("iperf3-b{i}.log"));
    let mut cmd = Command::new("iperf3");
    cmd.args(["-s", "-B", &addr.to_string(), "-p", &BULK_PORT.to_string()]);
    let id = lab.spawn_in(&lab.backend_ns(i), &cmd, Some(&log))?;
    // Probing the port would start (and fail) a test; wait for the
    // listening socket to appear instead.
    wait_for(Duration::from_secs(5), || {
        let out = crate::lab::ns_exec(
            &lab.backend_ns(i),
            ["ss", "-Hltn", &format!("sport = :{BULK_PORT}")],
        )?;
        Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
    })
    .with_context(|| format!("iperf3 in backend {i}; log:\n{}", read_log(&log)))?;
    Ok(id)
}

/// Polls `connect(addr)` from namespace `ns` until it succeeds or `limit`
/// passes.
pub fn wait_listening(lab: &Lab, ns: &str, addr: SocketAddrV4, limit: Duration) -> Result<()> {
    lab.in_ns(ns, || {
        wait_for(limit, || {
            Ok(TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok())
        })
    })?
    .with_context(|| format!("{addr} not accepting connections"))
}

/// Calls `ready` every 20 ms until it returns true, at most for `limit`.
pub fn wait_for(limit: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let start = Instant::now();
    let mut last = String::from("never ready");
    let max_polls = limit.as_millis() / 20 + 1;
    for _ in 0..max_polls {
        match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= limit {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(anyhow!("not ready within {limit:?} ({last})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_config_keeps_every_path_in_its_directory() {
        let c = nginx_config(Path::new("/tmp/lab/nginx-b2"));
        assert!(c.contains("pid /tmp/lab/nginx-b2/nginx.pid;"));
        assert!(c.contains("error_log /tmp/lab/nginx-b2/error.log warn;"));
        assert!(c.contains("access_log off;"));
        assert!(c.contains("worker_processes 1;"));
        assert!(c.contains("listen 80 backlog=4096;"));
        assert!(c.contains("return 200 \"ok\\n\";"));
        for line in c.lines().filter(|l| l.contains("temp_path")) {
            assert!(line.contains("/tmp/lab/nginx-b2/"), "{line}");
        }
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }
}
