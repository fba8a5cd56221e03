//! The HTTP part of an `https` check: one `GET` over an established TLS
//! connection with hyper's HTTP/1.1 client, returning the status.

use bytes::Bytes;
use http::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::reason::{http_failure, Failure};

/// `User-Agent` of the checks, so they are easy to find in API server logs.
pub const USER_AGENT_VALUE: &str = concat!("lb-health-check/", env!("CARGO_PKG_VERSION"));

/// Sends `GET path` with `Host: host` and `Connection: close` over `io` and
/// returns the response status once its head has arrived (the body is not
/// read). Bounded by the caller's timeout.
pub async fn get_status<S>(io: S, host: &str, path: &str) -> Result<StatusCode, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = Request::get(path)
        .header(HOST, host)
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Setup(format!("request: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| http_failure(&e))?;
    let response = sender.send_request(request);
    tokio::pin!(conn, response);
    let conn_error = tokio::select! {
        biased;
        result = &mut response => {
            return result.map(|r| r.status()).map_err(|e| http_failure(&e));
        }
        done = &mut conn => done.err(),
    };
    // The connection is done; it has handed the response (or its failure)
    // to `response` already, so this does not wait. With `Connection:
    // close` a short answer can end the connection in the same poll that
    // parsed it.
    match response.await {
        Ok(r) => Ok(r.status()),
        Err(e) => Err(http_failure(conn_error.as_ref().unwrap_or(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one canned answer on one end of a pipe and returns the request
    /// it read.
    async fn exchange(answer: &'static [u8], path: &str) -> (Result<StatusCode, Failure>, String) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            server.write_all(answer).await.unwrap();
            server.shutdown().await.unwrap();
            String::from_utf8(req).unwrap()
        });
        let status = get_status(client, "198.18.2.11:6443", path).await;
        (status, server.await.unwrap())
    }

    #[tokio::test]
    async fn returns_the_status_and_sends_a_plain_get() {
        let (status, req) = exchange(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 2\r\n\r\nno",
            "/readyz?verbose",
        )
        .await;
        assert_eq!(status, Ok(StatusCode::INTERNAL_SERVER_ERROR));
        let lower = req.to_ascii_lowercase();
        assert!(req.starts_with("GET /readyz?verbose HTTP/1.1\r\n"), "{req}");
        assert!(lower.contains("host: 198.18.2.11:6443\r\n"), "{req}");
        assert!(lower.contains("connection: close\r\n"), "{req}");
        assert!(lower.contains("user-agent: lb-health-check/"), "{req}");

        let (status, _) = exchange(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", "/").await;
        assert_eq!(status, Ok(StatusCode::OK));
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_http_failures() {
        let (status, _) = exchange(b"SSH-2.0-OpenSSH\r\n\r\n", "/readyz").await;
        assert!(matches!(status, Err(Failure::Http(_))), "{status:?}");
        let (status, _) = exchange(b"", "/readyz").await;
        assert!(matches!(status, Err(Failure::Http(_))), "{status:?}");
    }
}
