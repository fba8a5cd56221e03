//! `lb healthz`: asks the local daemon's `GET /healthz` and turns the answer
//! into an exit status, so that keepalived can run it directly as a
//! `vrrp_script` (no curl, no wrapper script).
//!
//! Healthy means what the daemon's `/healthz` means: the XDP program is
//! attached and every listener has a healthy backend or is failing open.
//! Anything else, including a daemon that does not answer within the
//! timeout, is unhealthy with a one-line reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Config;

/// Largest `/healthz` body read; the daemon sends one short line.
const MAX_BODY: u64 = 4096;

/// Why this gateway is not healthy (the message goes to stderr).
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    /// The daemon could not be reached or did not answer in time.
    #[error("cannot reach the lb daemon at {url}: {cause} (is `lb run` running?)")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport error.
        cause: String,
    },
    /// The daemon answered that it is not healthy.
    #[error("lb daemon at {url} is not healthy (HTTP {status}): {reason}")]
    NotHealthy {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The daemon's reason, e.g. `listener kubernetes-api has no healthy backend`.
        reason: String,
    },
}

/// Flags of `lb healthz`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthzArgs {
    /// Configuration file; its `[api] listen` is asked.
    #[arg(long, short, default_value = "/etc/lb/lb.toml")]
    pub config: PathBuf,
    /// Ask this address instead of reading the configuration (cheaper: no
    /// file to parse each time keepalived runs the check).
    #[arg(long)]
    pub api: Option<SocketAddr>,
    /// Give up (unhealthy) after this long, e.g. "2s".
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `lb healthz`: `Ok` (exit 0) when healthy, otherwise the reason.
pub fn run(args: &HealthzArgs) -> Result<()> {
    let api = match args.api {
        Some(api) => api,
        None => {
            Config::load(&args.config)
                .context("reading the configuration for [api] listen")?
                .api
                .listen
        }
    };
    let answer = probe(api, args.timeout)?;
    println!("{answer}");
    Ok(())
}

/// Where to reach the daemon's API given its `[api] listen` address: a
/// wildcard listen address is reached over loopback.
pub fn api_target(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

/// Asks `GET http://{api}/healthz`; `timeout` bounds the whole exchange
/// (connect, request, answer). `Ok` carries the daemon's answer (`ok`).
pub fn probe(api: SocketAddr, timeout: Duration) -> Result<String, Unhealthy> {
    let url = format!("http://{}/healthz", api_target(api));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let unreachable = |cause: ureq::Error| Unhealthy::Unreachable {
        url: url.clone(),
        cause: cause.to_string(),
    };
    let mut response = agent.get(&url).call().map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(unreachable)?;
    let body = body.trim().to_owned();
    if status == 200 {
        Ok(body)
    } else {
        let reason = if body.is_empty() {
            "no reason given".to_owned()
        } else {
            body
        };
        Err(Unhealthy::NotHealthy {
            url,
            status,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;
    use std::time::Instant;

    /// Serves one connection with `response` (raw HTTP), or never answers
    /// when `response` is `None`.
    fn one_shot(response: Option<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            match response {
                Some(r) => {
                    let _ = s.write_all(r.as_bytes());
                }
                None => thread::sleep(Duration::from_secs(3)),
            }
        });
        addr
    }

    #[test]
    fn healthy_answer_is_ok() {
        let addr = one_shot(Some(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
        ));
        assert_eq!(probe(addr, Duration::from_secs(2)).unwrap(), "ok");
    }

    #[test]
    fn unhealthy_answer_carries_the_reason() {
        let body = "listener kubernetes-api has no healthy backend\n";
        let resp: &'static str = Box::leak(
            format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let addr = one_shot(Some(resp));
        let err = probe(addr, Duration::from_secs(2)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Unhealthy::NotHealthy { status: 503, .. }));
        assert!(
            msg.contains("listener kubernetes-api has no healthy backend"),
            "{msg}"
        );
    }

    #[test]
    fn no_daemon_is_unreachable() {
        // Bind then drop: nothing listens on that port any more.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = probe(addr, Duration::from_secs(2)).unwrap_err();
        assert!(matches!(err, Unhealthy::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("is `lb run` running?"), "{err}");
    }

    #[test]
    fn silent_daemon_times_out_in_bounded_time() {
        let addr = one_shot(None);
        let start = Instant::now();
        let err = probe(addr, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, Unhealthy::Unreachable { .. }), "{err}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn wildcard_listen_is_reached_over_loopback() {
        let t = api_target("0.0.0.0:9542".parse().unwrap());
        assert_eq!(t, "127.0.0.1:9542".parse::<SocketAddr>().unwrap());
        let t = api_target("[::]:9542".parse().unwrap());
        assert_eq!(t, "[::1]:9542".parse::<SocketAddr>().unwrap());
        let t = api_target("198.18.0.1:9542".parse().unwrap());
        assert_eq!(t, "198.18.0.1:9542".parse::<SocketAddr>().unwrap());
    }
}
