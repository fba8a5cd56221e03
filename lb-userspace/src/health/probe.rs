//! One check of one target, by kind: TCP connect, TLS handshake, or HTTPS
//! `GET`. The whole probe (connect, TLS, HTTP) runs under one timeout.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::{error, warn};

use super::reason::{connect_failure, Failure};
use super::{https, tls};
use crate::config::read::FileContents;
use crate::config::{Check, CheckKind, TlsParams};

/// Result of one health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Whether the check passed.
    pub success: bool,
    /// `"ok"`, or why it failed: `"refused"`, `"timeout"`, `"tls: <cause>"`,
    /// `"http <status>"`, … (see [`Failure`]).
    pub reason: String,
    /// The node answered that it is dead to this gateway: the connection
    /// was refused (TCP RST) or the node is unreachable (ICMP). A timeout
    /// is not such evidence: a filter between this gateway and a serving
    /// node looks the same (see [`Failure::proves_dead`]).
    pub proves_dead: bool,
    /// How long the check took.
    pub duration: Duration,
}

/// Checks one target (backend address and port) the way its listener's
/// [`Check`] says. Cheap to clone; built once per target by [`Probers`].
#[derive(Clone)]
pub struct Prober {
    addr: SocketAddr,
    kind: Arc<ProbeKind>,
}

enum ProbeKind {
    Tcp,
    Tls(TlsTarget),
    Https {
        tls: TlsTarget,
        host: String,
        path: String,
        expect_status: Vec<u16>,
    },
}

/// The TLS client of a target; `Err` holds why it could not be set up (each
/// check then fails with that reason).
struct TlsTarget {
    client: Result<(TlsConnector, ServerName<'static>), String>,
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &*self.kind {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Tls(_) => "tls",
            ProbeKind::Https { .. } => "https",
        };
        f.debug_struct("Prober")
            .field("addr", &self.addr)
            .field("kind", &kind)
            .finish()
    }
}

impl Prober {
    /// A TCP-connect prober.
    pub fn tcp(addr: SocketAddr) -> Prober {
        Prober {
            addr,
            kind: Arc::new(ProbeKind::Tcp),
        }
    }

    /// The address probed.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs one check. Never takes longer than `timeout` (plus scheduling
    /// slack): connect, handshake and request share that one budget.
    pub async fn check(&self, timeout: Duration) -> CheckOutcome {
        let start = Instant::now();
        let result = tokio::time::timeout(timeout, self.run()).await;
        let duration = start.elapsed();
        let (success, reason, proves_dead) = match result {
            Ok(Ok(())) => (true, "ok".to_owned(), false),
            Ok(Err(failure)) => (false, failure.to_string(), failure.proves_dead()),
            Err(_elapsed) => (false, Failure::Timeout.to_string(), false),
        };
        CheckOutcome {
            success,
            reason,
            proves_dead,
            duration,
        }
    }

    async fn run(&self) -> Result<(), Failure> {
        match &*self.kind {
            ProbeKind::Tcp => {
                // A normal close right away (FIN, no data).
                drop(self.connect().await?);
                Ok(())
            }
            ProbeKind::Tls(target) => {
                let (connector, name) = target.client()?;
                let tcp = self.connect().await?;
                let stream = tls::handshake(connector, name.clone(), tcp).await?;
                tls::close(stream).await
            }
            ProbeKind::Https {
                tls: target,
                host,
                path,
                expect_status,
            } => {
                let (connector, name) = target.client()?;
                let tcp = self.connect().await?;
                let stream = tls::handshake(connector, name.clone(), tcp).await?;
                let status = https::get_status(stream, host, path).await?;
                if expect_status.contains(&status.as_u16()) {
                    Ok(())
                } else {
                    Err(Failure::HttpStatus(status.as_u16()))
                }
            }
        }
    }

    async fn connect(&self) -> Result<TcpStream, Failure> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| connect_failure(&e))?;
        // Small requests; do not wait for more data before sending them.
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

impl TlsTarget {
    fn client(&self) -> Result<&(TlsConnector, ServerName<'static>), Failure> {
        self.client.as_ref().map_err(|e| Failure::Setup(e.clone()))
    }
}

/// Builds [`Prober`]s, sharing one rustls configuration among the targets
/// of equal TLS settings. Logs once per distinct TLS settings that server
/// certificates are not verified (no `ca_file`), and any setup error once.
pub struct Probers {
    configs: HashMap<(CheckKind, TlsParams), Result<Arc<ClientConfig>, String>>,
    files: FileContents,
}

impl Probers {
    /// No configurations built yet; TLS checks are built from `files`, the
    /// certificate files as read with the configuration.
    pub fn new(files: FileContents) -> Probers {
        Probers {
            configs: HashMap::new(),
            files,
        }
    }

    /// The prober of `check` against `addr` (a backend address and its
    /// target port).
    pub fn prober(&mut self, addr: SocketAddr, check: &Check) -> Prober {
        let kind = match check {
            Check::Tcp => ProbeKind::Tcp,
            Check::Tls(params) => ProbeKind::Tls(self.tls_target(addr, CheckKind::Tls, params)),
            Check::Https(h) => ProbeKind::Https {
                tls: self.tls_target(addr, CheckKind::Https, &h.tls),
                host: match &h.tls.server_name {
                    Some(name) => format!("{name}:{}", addr.port()),
                    None => addr.to_string(),
                },
                path: h.path.clone(),
                expect_status: h.expect_status.clone(),
            },
        };
        Prober {
            addr,
            kind: Arc::new(kind),
        }
    }

    fn tls_target(&mut self, addr: SocketAddr, kind: CheckKind, params: &TlsParams) -> TlsTarget {
        let config = self
            .configs
            .entry((kind, params.clone()))
            .or_insert_with(|| {
                let alpn = match kind {
                    CheckKind::Https => tls::ALPN_HTTPS,
                    CheckKind::Tcp | CheckKind::Tls => tls::ALPN_TLS,
                };
                let built =
                    tls::client_config(params, alpn, &self.files).map_err(|e| e.to_string());
                match &built {
                    Err(e) => error!(check = %kind, error = %e, "cannot set up TLS health checks; they fail until fixed"),
                    Ok(_) if params.ca_file.is_none() => warn!(
                        check = %kind,
                        tls = %params,
                        "no ca_file: these TLS health checks accept any server certificate (not verified)"
                    ),
                    Ok(_) => {}
                }
                built
            })
            .clone();
        let name = match &params.server_name {
            Some(name) => {
                ServerName::try_from(name.clone()).map_err(|e| format!("server_name {name:?}: {e}"))
            }
            None => Ok(ServerName::IpAddress(addr.ip().into())),
        };
        TlsTarget {
            client: config.and_then(|c| Ok((TlsConnector::from(c), name?))),
        }
    }
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
