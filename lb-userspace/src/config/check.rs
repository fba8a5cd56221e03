//! What a listener's health check probes (`[listener.health] kind = ...` and
//! its TLS/HTTP keys), resolved per listener.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Target port of the Kubernetes API server: checked with `https` by default.
pub const KUBE_API_PORT: u16 = 6443;
/// Target port of the Talos API (gRPC over TLS): checked with `tls` by default.
pub const TALOS_API_PORT: u16 = 50000;
/// Default `path` of `https` checks.
pub const DEFAULT_HTTPS_PATH: &str = "/readyz";
/// Default `expect_status` of `https` checks.
pub const DEFAULT_EXPECT_STATUS: [u16; 1] = [200];

/// The kind of a health check (`health.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// The TCP connection is accepted within the timeout.
    Tcp,
    /// The TLS handshake completes within the timeout.
    Tls,
    /// `GET path` over TLS answers a status in `expect_status`.
    Https,
}

impl CheckKind {
    /// The kind used when neither the listener nor `[health]` sets one:
    /// `https` for 6443 (the API server's `/readyz`), `tls` for 50000 (the
    /// Talos API is gRPC, not plain HTTP), `tcp` for anything else.
    pub fn default_for_port(target_port: u16) -> CheckKind {
        match target_port {
            KUBE_API_PORT => CheckKind::Https,
            TALOS_API_PORT => CheckKind::Tls,
            _ => CheckKind::Tcp,
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Tls => "tls",
            CheckKind::Https => "https",
        })
    }
}

/// A client certificate and its key (`client_cert`, `client_key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ClientAuth {
    /// PEM file with the certificate (chain), leaf first.
    pub cert: PathBuf,
    /// PEM file with the private key.
    pub key: PathBuf,
}

/// TLS settings of a `tls` or `https` check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TlsParams {
    /// SNI and the name the certificate must be valid for; `None`: the
    /// backend's address.
    pub server_name: Option<String>,
    /// PEM bundle to verify the server's chain against; `None`: the
    /// certificate is not verified (logged once at start-up).
    pub ca_file: Option<PathBuf>,
    /// Client certificate presented to servers that ask for one.
    pub client_auth: Option<ClientAuth>,
}

/// The HTTP part of an `https` check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HttpsParams {
    /// Path (and query) requested, starting with `/`.
    pub path: String,
    /// Statuses that count as healthy, ascending.
    pub expect_status: Vec<u16>,
    /// TLS settings.
    #[serde(flatten)]
    pub tls: TlsParams,
}

/// A listener's effective health check: `[listener.health]` over `[health]`
/// over the default for its target port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Check {
    /// TCP connect.
    Tcp,
    /// TLS handshake.
    Tls(TlsParams),
    /// `GET` over TLS.
    Https(HttpsParams),
}

impl Check {
    /// The kind of check.
    pub fn kind(&self) -> CheckKind {
        match self {
            Check::Tcp => CheckKind::Tcp,
            Check::Tls(_) => CheckKind::Tls,
            Check::Https(_) => CheckKind::Https,
        }
    }

    /// The TLS settings of a `tls` or `https` check.
    pub fn tls(&self) -> Option<&TlsParams> {
        match self {
            Check::Tcp => None,
            Check::Tls(tls) => Some(tls),
            Check::Https(h) => Some(&h.tls),
        }
    }

    /// The certificate and key files the check is built from.
    pub fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        let tls = self.tls();
        let ca = tls.and_then(|t| t.ca_file.as_deref());
        let auth = tls.and_then(|t| t.client_auth.as_ref());
        ca.into_iter()
            .chain(auth.map(|a| a.cert.as_path()))
            .chain(auth.map(|a| a.key.as_path()))
    }
}

impl fmt::Display for TlsParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.server_name {
            Some(name) => write!(f, "server_name={name}")?,
            None => f.write_str("server_name=<backend address>")?,
        }
        match &self.ca_file {
            Some(ca) => write!(f, " ca_file={}", ca.display())?,
            None => f.write_str(" ca_file=- (certificates NOT verified)")?,
        }
        if let Some(auth) = &self.client_auth {
            write!(
                f,
                " client_cert={} client_key={}",
                auth.cert.display(),
                auth.key.display()
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Tcp => f.write_str("tcp connect"),
            Check::Tls(tls) => write!(f, "tls handshake {tls}"),
            Check::Https(h) => {
                let statuses: Vec<String> = h.expect_status.iter().map(u16::to_string).collect();
                write!(
                    f,
                    "https GET {} expect_status=[{}] {}",
                    h.path,
                    statuses.join(","),
                    h.tls
                )
            }
        }
    }
}
