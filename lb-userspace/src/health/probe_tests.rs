//! Probes against real servers on loopback: plain TCP, TLS (rustls) and
//! HTTPS (hyper) servers with certificates made at test time.

use std::convert::Infallible;
use std::path::PathBuf;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::*;
use crate::config::{ClientAuth, HttpsParams};
use crate::health::test_pki::TestCa;

const TIMEOUT: Duration = Duration::from_secs(2);

/// What a test server does after accepting a connection.
#[derive(Clone, Copy)]
enum Serve {
    /// TLS handshake, then wait for the client to close.
    Tls,
    /// TLS, then answer every HTTP request with this status (404 for paths
    /// other than `/readyz`).
    Https(u16),
    /// Accept TCP, never send anything.
    Hang,
}

/// Starts a server on a free loopback port; it runs until the test's
/// runtime ends.
async fn server(config: Option<Arc<rustls::ServerConfig>>, serve: Serve) -> SocketAddr {
    server_at("127.0.0.1:0", config, serve).await
}

/// [`server`] on `bind` (e.g. `[::1]:0` for IPv6).
async fn server_at(
    bind: &str,
    config: Option<Arc<rustls::ServerConfig>>,
    serve: Serve,
) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = config.map(TlsAcceptor::from);
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            match (serve, acceptor.clone()) {
                (Serve::Hang, _) | (_, None) => held.push(tcp),
                (Serve::Tls, Some(acceptor)) => {
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut buf = [0u8; 1024];
                        while matches!(tls.read(&mut buf).await, Ok(n) if n > 0) {}
                        let _ = tls.shutdown().await;
                    });
                }
                (Serve::Https(code), Some(acceptor)) => {
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service =
                            hyper::service::service_fn(move |req: Request<_>| async move {
                                let status = if req.uri().path() == "/readyz" {
                                    StatusCode::from_u16(code).unwrap()
                                } else {
                                    StatusCode::NOT_FOUND
                                };
                                let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                                *resp.status_mut() = status;
                                Ok::<_, Infallible>(resp)
                            });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            }
        }
    });
    addr
}

fn tls_params(ca: Option<PathBuf>) -> TlsParams {
    TlsParams {
        server_name: None,
        ca_file: ca,
        client_auth: None,
    }
}

fn https(path: &str, expect: &[u16], tls: TlsParams) -> Check {
    Check::Https(HttpsParams {
        path: path.into(),
        expect_status: expect.to_vec(),
        tls,
    })
}

async fn check(addr: SocketAddr, c: &Check) -> CheckOutcome {
    probers(c).prober(addr, c).check(TIMEOUT).await
}

/// Probers with the files `c` names read as a configuration load reads
/// them (a file that cannot be read is left out, as it never reaches a
/// prober in the daemon: the load fails).
fn probers(c: &Check) -> Probers {
    let mut files = crate::config::read::FileContents::default();
    for p in c.files() {
        if let Ok(data) = crate::health::pem::read(p) {
            files.insert(p.to_owned(), data);
        }
    }
    Probers::new(files)
}

fn assert_ok(out: &CheckOutcome) {
    assert!(out.success, "{out:?}");
    assert_eq!(out.reason, "ok");
    assert!(out.duration < TIMEOUT, "{out:?}");
}

fn assert_failed(out: &CheckOutcome, reason_prefix: &str) {
    assert!(!out.success, "{out:?}");
    assert!(
        out.reason.starts_with(reason_prefix),
        "reason {:?} does not start with {reason_prefix:?}",
        out.reason
    );
}

#[tokio::test]
async fn tcp_ok_and_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    assert_ok(&check(addr, &Check::Tcp).await);
    drop(listener);
    let out = check(addr, &Check::Tcp).await;
    assert_failed(&out, "refused");
    assert_eq!(out.reason, "refused");
    assert!(out.proves_dead, "a refusal is the node's own answer");
    // TLS and HTTPS checks report a refused connect the same way.
    let tls = check(addr, &Check::Tls(tls_params(None))).await;
    assert_eq!((tls.reason.as_str(), tls.proves_dead), ("refused", true));
    assert_eq!(
        check(addr, &https("/readyz", &[200], tls_params(None)))
            .await
            .reason,
        "refused"
    );
}

#[tokio::test]
async fn tiny_timeouts_are_bounded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    for c in [Check::Tcp, Check::Tls(tls_params(None))] {
        for timeout in [Duration::ZERO, Duration::from_nanos(1)] {
            let start = std::time::Instant::now();
            let out = probers(&c).prober(addr, &c).check(timeout).await;
            assert!(out.success || out.reason == "timeout", "{out:?}");
            assert_eq!(out.success, out.reason == "ok");
            assert!(start.elapsed() < Duration::from_millis(500), "{out:?}");
        }
    }
}

#[tokio::test]
async fn tls_verifies_against_ca_file() {
    let ca = TestCa::new("ca");
    let other = TestCa::new("other");
    let cert = ca.server("server", &["127.0.0.1", "node.example"]);
    let addr = server(Some(TestCa::server_config(&cert, None)), Serve::Tls).await;

    assert_ok(&check(addr, &Check::Tls(tls_params(Some(ca.ca_file())))).await);
    // Without a CA anything is accepted.
    assert_ok(&check(addr, &Check::Tls(tls_params(None))).await);
    // Signed by a CA we do not trust.
    let out = check(addr, &Check::Tls(tls_params(Some(other.ca_file())))).await;
    assert_failed(&out, "tls: invalid peer certificate");
    assert!(out.reason.contains("UnknownIssuer"), "{out:?}");

    // server_name: a name in the certificate passes, another one does not.
    let named = |name: &str| {
        Check::Tls(TlsParams {
            server_name: Some(name.into()),
            ..tls_params(Some(ca.ca_file()))
        })
    };
    assert_ok(&check(addr, &named("node.example")).await);
    let out = check(addr, &named("other.example")).await;
    assert_failed(&out, "tls: invalid peer certificate");
    assert!(out.reason.contains("not valid for name"), "{out:?}");
}

/// IPv6 nodes: tcp, tls and https checks over `[::1]`, with the default
/// `server_name` being the address itself, as a certificate's IP SAN holds
/// it: a certificate for `::1` verifies, one for `127.0.0.1` (the same host
/// over IPv4) does not.
#[tokio::test]
async fn ipv6_checks_verify_the_address_as_an_ip_san() {
    let ca = TestCa::new("ca");
    let v6 = ca.server("v6", &["::1"]);
    let v4_only = ca.server("v4", &["127.0.0.1"]);
    let verified = || tls_params(Some(ca.ca_file()));

    let tls = server_at(
        "[::1]:0",
        Some(TestCa::server_config(&v6, None)),
        Serve::Tls,
    )
    .await;
    assert!(tls.is_ipv6());
    assert_ok(&check(tls, &Check::Tcp).await);
    assert_ok(&check(tls, &Check::Tls(verified())).await);

    let https6 = server_at(
        "[::1]:0",
        Some(TestCa::server_config(&v6, None)),
        Serve::Https(200),
    )
    .await;
    assert_ok(&check(https6, &https("/readyz", &[200], verified())).await);

    let wrong = server_at(
        "[::1]:0",
        Some(TestCa::server_config(&v4_only, None)),
        Serve::Tls,
    )
    .await;
    let out = check(wrong, &Check::Tls(verified())).await;
    assert_failed(&out, "tls: invalid peer certificate");
    assert!(out.reason.contains("not valid for name"), "{out:?}");

    // Refused over IPv6 is reported as such.
    let closed = {
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        l.local_addr().unwrap()
    };
    assert_failed(&check(closed, &Check::Tcp).await, "refused");
}

#[tokio::test]
async fn tls_client_certificate_required() {
    let ca = TestCa::new("ca");
    let cert = ca.server("server", &["127.0.0.1"]);
    let client = ca.client("client", "lb");
    let config = TestCa::server_config(&cert, Some(&ca));
    let addr = server(Some(config), Serve::Tls).await;

    let with_cert = Check::Tls(TlsParams {
        client_auth: Some(ClientAuth {
            cert: client.cert_file.clone(),
            key: client.key_file.clone(),
        }),
        ..tls_params(Some(ca.ca_file()))
    });
    assert_ok(&check(addr, &with_cert).await);
    // TLS 1.3: our handshake completes, the server's rejection follows.
    let out = check(addr, &Check::Tls(tls_params(Some(ca.ca_file())))).await;
    assert_failed(&out, "tls: ");
    assert!(out.reason.contains("CertificateRequired"), "{out:?}");
    assert!(out.duration < TIMEOUT, "{out:?}");

    // HTTPS the same: the rejection arrives instead of the response.
    let https_addr = server(
        Some(TestCa::server_config(&cert, Some(&ca))),
        Serve::Https(200),
    )
    .await;
    let with_cert_https = https(
        "/readyz",
        &[200],
        with_cert.tls().cloned().expect("tls params"),
    );
    assert_ok(&check(https_addr, &with_cert_https).await);
    let out = check(
        https_addr,
        &https("/readyz", &[200], tls_params(Some(ca.ca_file()))),
    )
    .await;
    assert_failed(&out, "tls: ");
    assert!(out.reason.contains("CertificateRequired"), "{out:?}");

    // A certificate from a CA the server does not trust.
    let stranger_ca = TestCa::new("stranger");
    let stranger = stranger_ca.client("client", "lb");
    let out = check(
        addr,
        &Check::Tls(TlsParams {
            client_auth: Some(ClientAuth {
                cert: stranger.cert_file.clone(),
                key: stranger.key_file.clone(),
            }),
            ..tls_params(Some(ca.ca_file()))
        }),
    )
    .await;
    assert_failed(&out, "tls: ");
}

#[tokio::test]
async fn https_status_decides() {
    let ca = TestCa::new("ca");
    let cert = ca.server("server", &["127.0.0.1"]);
    let config = TestCa::server_config(&cert, None);
    let ok = server(Some(config.clone()), Serve::Https(200)).await;
    let failing = server(Some(config.clone()), Serve::Https(500)).await;
    let anonymous_off = server(Some(config), Serve::Https(401)).await;
    let tls = || tls_params(Some(ca.ca_file()));

    assert_ok(&check(ok, &https("/readyz", &[200], tls())).await);
    let out = check(failing, &https("/readyz", &[200], tls())).await;
    assert_failed(&out, "http 500");
    assert_eq!(out.reason, "http 500");
    // The path is what is requested.
    assert_eq!(
        check(ok, &https("/livez", &[200], tls())).await.reason,
        "http 404"
    );
    // 401 fails unless listed.
    assert_eq!(
        check(anonymous_off, &https("/readyz", &[200], tls()))
            .await
            .reason,
        "http 401"
    );
    assert_ok(&check(anonymous_off, &https("/readyz", &[200, 401], tls())).await);
    // TLS failures come first.
    let other = TestCa::new("other");
    let out = check(
        ok,
        &https("/readyz", &[200], tls_params(Some(other.ca_file()))),
    )
    .await;
    assert_failed(&out, "tls: invalid peer certificate");
}

#[tokio::test]
async fn https_against_plain_tcp_is_a_tls_failure() {
    // A server that accepts and closes at once (no TLS at all).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(b"cp-01\n").await;
        }
    });
    let out = check(addr, &https("/readyz", &[200], tls_params(None))).await;
    assert_failed(&out, "tls: ");
}

#[tokio::test]
async fn hanging_server_times_out_within_the_timeout() {
    let addr = server(None, Serve::Hang).await;
    let timeout = Duration::from_millis(300);
    for c in [
        Check::Tls(tls_params(None)),
        https("/readyz", &[200], tls_params(None)),
    ] {
        let start = std::time::Instant::now();
        let out = probers(&c).prober(addr, &c).check(timeout).await;
        let took = start.elapsed();
        assert!(!out.success);
        assert_eq!(out.reason, "timeout", "{c}");
        assert!(took >= timeout, "{took:?}");
        assert!(took < timeout + Duration::from_millis(250), "{took:?}");
    }
    // A TCP check is content with the accepted connection.
    assert_ok(&check(addr, &Check::Tcp).await);
}

#[tokio::test]
async fn https_hanging_after_handshake_times_out() {
    // TLS completes, then the HTTP request is never answered.
    let ca = TestCa::new("ca");
    let cert = ca.server("server", &["127.0.0.1"]);
    let addr = server(Some(TestCa::server_config(&cert, None)), Serve::Tls).await;
    let c = https("/readyz", &[200], tls_params(None));
    let out = probers(&c)
        .prober(addr, &c)
        .check(Duration::from_millis(300))
        .await;
    assert_eq!(out.reason, "timeout");
    assert!(!out.proves_dead, "a timeout proves nothing");
    assert!(out.duration < Duration::from_millis(550), "{out:?}");
}

#[tokio::test]
async fn setup_errors_fail_every_check_with_their_reason() {
    let ca = TestCa::new("ca");
    let missing = ca.dir().join("gone.pem");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let out = check(addr, &Check::Tls(tls_params(Some(missing)))).await;
    // Files are read with the configuration (which fails to load when one
    // cannot be read); a prober never reads one itself.
    assert_failed(&out, "setup: ca_file: ");
    assert!(out.reason.contains("gone.pem"), "{out:?}");
}

#[test]
fn probers_share_tls_configs() {
    let ca = TestCa::new("ca");
    let c = Check::Tls(tls_params(Some(ca.ca_file())));
    let mut probers = probers(&c);
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let b: SocketAddr = "127.0.0.2:1".parse().unwrap();
    let pa = probers.prober(a, &c);
    let pb = probers.prober(b, &c);
    assert_eq!(pa.addr(), a);
    assert_eq!(pb.addr(), b);
    let _ = probers.prober(a, &https("/readyz", &[200], tls_params(Some(ca.ca_file()))));
    // One per (kind, TLS settings): tls and https differ in ALPN.
    assert_eq!(probers.configs.len(), 2);
    assert!(format!("{pa:?}").contains("tls"));
}
