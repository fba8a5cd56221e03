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
    /// The network says the backend is unreachable (an ICMP error, or no
    /// answer to the gateway's neighbour resolution).
    Unreachable,
    /// The gateway itself has no route to the backend (its own stack
    /// refused the connect: the link to the nodes is down, its addresses
    /// or routes are gone).
    NoRoute,
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
            Failure::NoRoute => f.write_str("no route"),
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
    /// Nor does the gateway's own lack of a route ([`Failure::NoRoute`]):
    /// it says nothing about the node.
    pub fn proves_dead(&self) -> bool {
        matches!(self, Failure::Refused | Failure::Unreachable)
    }
}

/// The failure of a TCP connect; `routed` is whether the gateway has a
/// route to the node now (see [`has_route`]), asked only for an
/// "unreachable" error: ENETUNREACH and EHOSTUNREACH come from the node's
/// network (ICMP) or from the gateway's own stack (no route), and only the
/// former says anything about the node.
pub fn connect_failure(e: &io::Error, routed: impl FnOnce() -> bool) -> Failure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => match routed() {
            true => Failure::Unreachable,
            false => Failure::NoRoute,
        },
        io::ErrorKind::NetworkDown => Failure::NoRoute,
        io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Connect(e.to_string()),
    }
}

/// Whether the gateway's stack has a route (and a source address) to
/// `addr`: a UDP socket's `connect` looks the route up without sending
/// anything.
pub fn has_route(addr: std::net::SocketAddr) -> bool {
    let any: std::net::SocketAddr = match addr {
        std::net::SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    std::net::UdpSocket::bind(any).is_ok_and(|s| s.connect(addr).is_ok())
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
            Failure::NoRoute,
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
        let r = |k| connect_failure(&io::Error::from(k), || true);
        assert_eq!(r(io::ErrorKind::ConnectionRefused), Failure::Refused);
        assert_eq!(r(io::ErrorKind::HostUnreachable), Failure::Unreachable);
        assert_eq!(r(io::ErrorKind::NetworkUnreachable), Failure::Unreachable);
        assert_eq!(r(io::ErrorKind::TimedOut), Failure::Timeout);
        let other = io::Error::from(io::ErrorKind::AddrNotAvailable);
        assert_eq!(
            connect_failure(&other, || true),
            Failure::Connect(other.to_string())
        );
        assert_eq!(Failure::NoRoute.to_string(), "no route");
    }

    /// Issue 19, finding 2: an "unreachable" error while the gateway has
    /// no route is its own (its link is down), not the node's answer.
    #[test]
    fn unreachable_without_a_local_route_proves_nothing() {
        for errno in [libc::ENETUNREACH, libc::EHOSTUNREACH] {
            let e = io::Error::from_raw_os_error(errno);
            let f = connect_failure(&e, || false);
            assert_eq!(f, Failure::NoRoute, "{e}");
            assert!(!f.proves_dead());
            assert!(connect_failure(&e, || true).proves_dead(), "{e}: routed");
        }
        // The device is down: the gateway's own stack says so.
        let e = io::Error::from_raw_os_error(libc::ENETDOWN);
        assert_eq!(
            connect_failure(&e, || panic!("not asked")),
            Failure::NoRoute
        );
        assert!(has_route("127.0.0.1:9".parse().unwrap()));
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
