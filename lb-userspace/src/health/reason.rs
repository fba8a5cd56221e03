//! Why a check failed, as the short stable text shown in status and logs.

use std::error::Error as StdError;
use std::fmt;
use std::io;

/// Why one check failed. [`fmt::Display`] gives the reason text kept in the
/// daemon's state: `refused`, `timeout`, `tls: <cause>`, `http 500`, …
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection was refused (nothing listens).
    Refused,
    /// No route to the backend (host or network unreachable).
    Unreachable,
    /// The whole check (connect, TLS, HTTP) did not finish within its timeout.
    Timeout,
    /// Another error while connecting.
    Connect(String),
    /// The TLS handshake failed or the server rejected the connection right
    /// after it; the cause from rustls (e.g. `invalid peer certificate:
    /// UnknownIssuer`, `received fatal alert: CertificateRequired`).
    Tls(String),
    /// The server answered with a status not in `expect_status`.
    HttpStatus(u16),
    /// The HTTP exchange failed (connection closed, malformed response, …).
    Http(String),
    /// The check could not be set up locally (e.g. the CA file became
    /// unreadable after the configuration was checked).
    Setup(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("refused"),
            Failure::Unreachable => f.write_str("unreachable"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Tls(e) => write!(f, "tls: {e}"),
            Failure::HttpStatus(code) => write!(f, "http {code}"),
            Failure::Http(e) => write!(f, "http: {e}"),
            Failure::Setup(e) => write!(f, "setup: {e}"),
        }
    }
}

impl Failure {
    /// Whether this failure proves the node dead to this gateway: its host
    /// refused the connection (nothing listens on the port: the process
    /// that held its streams is gone) or the network says it is
    /// unreachable. Timeouts, TLS and HTTP failures do not: a node behind a
    /// filter, or shutting down with its streams still open, fails them too.
    pub fn proves_dead(&self) -> bool {
        matches!(self, Failure::Refused | Failure::Unreachable)
    }
}

/// The failure of a TCP connect.
pub fn connect_failure(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Failure::Unreachable,
        io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Connect(e.to_string()),
    }
}

/// The failure of an HTTP exchange over TLS: a TLS error found anywhere in
/// the cause chain (e.g. an alert the server sent instead of a response) is
/// reported as `tls: …`, anything else as `http: <message>: <cause>…`.
pub fn http_failure(e: &(dyn StdError + 'static)) -> Failure {
    let mut parts = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Failure::Tls(tls.to_string());
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(tls) = super::tls::rustls_error(io) {
                return Failure::Tls(tls.to_string());
            }
        }
        let text = err.to_string();
        // Wrappers often repeat their cause's message.
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    Failure::Http(parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_the_reason_text() {
        assert_eq!(Failure::Refused.to_string(), "refused");
        assert_eq!(Failure::Unreachable.to_string(), "unreachable");
        assert_eq!(Failure::Timeout.to_string(), "timeout");
        assert_eq!(Failure::HttpStatus(500).to_string(), "http 500");
        assert_eq!(
            Failure::Tls("invalid peer certificate: UnknownIssuer".into()).to_string(),
            "tls: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(Failure::Http("closed".into()).to_string(), "http: closed");
        assert_eq!(Failure::Connect("x".into()).to_string(), "connect: x");
        assert_eq!(Failure::Setup("x".into()).to_string(), "setup: x");
    }

    #[test]
    fn only_refused_and_unreachable_prove_a_node_dead() {
        assert!(Failure::Refused.proves_dead());
        assert!(Failure::Unreachable.proves_dead());
        for f in [
            Failure::Timeout,
            Failure::Connect("x".into()),
            Failure::Tls("x".into()),
            Failure::HttpStatus(503),
            Failure::Http("closed".into()),
            Failure::Setup("x".into()),
        ] {
            assert!(!f.proves_dead(), "{f}");
        }
    }

    #[test]
    fn connect_errors_map_to_short_reasons() {
        let r = |k| connect_failure(&io::Error::from(k));
        assert_eq!(r(io::ErrorKind::ConnectionRefused), Failure::Refused);
        assert_eq!(r(io::ErrorKind::HostUnreachable), Failure::Unreachable);
        assert_eq!(r(io::ErrorKind::NetworkUnreachable), Failure::Unreachable);
        assert_eq!(r(io::ErrorKind::TimedOut), Failure::Timeout);
        let other = io::Error::from(io::ErrorKind::AddrNotAvailable);
        assert_eq!(connect_failure(&other), Failure::Connect(other.to_string()));
    }

    /// An error wrapping another, like hyper's.
    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection error")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn http_errors_find_tls_causes_and_chain_messages() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        let e = Wrapper(io::Error::new(io::ErrorKind::InvalidData, alert.clone()));
        assert_eq!(http_failure(&e), Failure::Tls(alert.to_string()));
        let e = Wrapper(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "reset by peer",
        ));
        assert_eq!(
            http_failure(&e),
            Failure::Http("connection error: reset by peer".into())
        );
    }
}
