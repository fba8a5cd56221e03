//! The control socket: `lb status`, `lb reload`, `lb drain`, `lb undrain`
//! talk to the running daemon over a Unix socket (`[api] socket`, mode 0600).
//!
//! Protocol: one JSON request per line, one JSON response per line. A bad
//! request gets an error response; it never affects the daemon.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{info, warn};

use super::snapshot::Readers;
use super::status::Status;

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// A request to the daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The daemon's view (as `GET /status`).
    Status,
    /// Re-read the configuration file and apply the difference.
    Reload,
    /// Drain a node across all its listeners.
    Drain {
        /// Backend name.
        node: String,
    },
    /// End a node's drain.
    Undrain {
        /// Backend name.
        node: String,
    },
    /// Active tracked flows of a node.
    Flows {
        /// Backend name.
        node: String,
    },
}

/// The daemon's answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Request-specific data (status document, flow count, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Response {
    /// A success carrying `data`.
    pub fn ok(data: Option<serde_json::Value>) -> Self {
        Response {
            ok: true,
            error: None,
            data,
        }
    }

    /// A failure.
    pub fn err(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(message.into()),
            data: None,
        }
    }
}

/// A request with the channel its response goes back on.
pub type Envelope = (Request, oneshot::Sender<Response>);

/// Binds the socket (replacing a stale one), restricted to its owner.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("api.socket: creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "api.socket: another daemon is listening on {}",
                path.display()
            );
        }
        std::fs::remove_file(path).ok();
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("api.socket: binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %path.display(), "control socket listening");
    Ok(listener)
}

/// Most control connections served at once; more wait in the kernel's
/// backlog (a flood of idle clients cannot take the daemon's descriptors).
const MAX_CONNECTIONS: usize = 32;

/// A client has this long to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (e.g. EMFILE): the loop must not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections: status and flow counts are answered from the
/// readers' snapshot; reloads, drains and undrains go to the event loop.
pub async fn serve(listener: UnixListener, tx: mpsc::Sender<Envelope>, readers: Readers) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "control socket: accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let tx = tx.clone();
        let readers = readers.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, tx, readers).await {
                warn!(error = %e, "control connection failed");
            }
            drop(permit);
        });
    }
}

/// Parses one request line: JSON, UTF-8, one request.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line).map_err(|e| format!("bad request: not UTF-8 ({e})"))?;
    serde_json::from_str::<Request>(text.trim()).map_err(|e| format!("bad request: {e}"))
}

async fn handle(
    stream: tokio::net::UnixStream,
    tx: mpsc::Sender<Envelope>,
    readers: Readers,
) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = Vec::new();
    let response =
        match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
            Err(_) => Response::err(format!("no request within {REQUEST_TIMEOUT:?}")),
            Ok(Err(e)) => Response::err(format!("reading the request: {e}")),
            Ok(Ok(_)) => match parse_request(&line) {
                Err(e) => Response::err(e),
                Ok(Request::Status) => status(&readers),
                Ok(Request::Flows { node }) => flows(&readers, &node),
                Ok(req) => {
                    let (rtx, rrx) = oneshot::channel();
                    if tx.send((req, rtx)).await.is_err() {
                        Response::err("daemon is shutting down")
                    } else {
                        rrx.await
                            .unwrap_or_else(|_| Response::err("daemon dropped the request"))
                    }
                }
            },
        };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

fn status(readers: &Readers) -> Response {
    match Status::collect(&readers.snapshot(), &readers.maps, &readers.flows()) {
        Ok(st) => Response::ok(serde_json::to_value(st).ok()),
        Err(e) => Response::err(format!("{e:#}")),
    }
}

/// Active tracked flows of `node` (all its listeners), from the latest scan.
fn flows(readers: &Readers, node: &str) -> Response {
    let snap = readers.snapshot();
    let reals: Vec<(u32, u32)> = snap
        .listeners
        .iter()
        .flat_map(|l| l.reals.iter().map(move |r| (l.id, r)))
        .filter(|(_, r)| r.name == node)
        .map(|(l, r)| (l, r.id))
        .collect();
    if reals.is_empty() && !snap.nodes.iter().any(|n| n == node) {
        return Response::err(format!("no backend named {node:?}"));
    }
    let scan = readers.flows();
    let n: u64 = reals
        .iter()
        .map(|k| scan.tracked.get(k).copied().unwrap_or(0))
        .sum();
    Response::ok(Some(serde_json::json!({
        "node": node,
        "flows": n,
        "complete": scan.complete,
        "scanned_secs_ago": scan.age_at(std::time::Instant::now()).map(|d| d.as_secs_f64()),
    })))
}

/// Sends one request to the daemon at `socket` and waits for its response.
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to {} (is `lb run` running? set --socket to its [api] socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the daemon's answer")?;
    serde_json::from_str(answer.trim()).context("parsing the daemon's answer")
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Bounded random requests (valid ones mutated, random bytes, invalid
    /// UTF-8) always parse to a request or a clear error, never a panic.
    #[test]
    fn random_requests_parse_or_fail_cleanly() {
        let valid = [
            r#"{"cmd":"status"}"#,
            r#"{"cmd":"reload"}"#,
            r#"{"cmd":"drain","node":"cp-01"}"#,
            r#"{"cmd":"undrain","node":"cp-02"}"#,
            r#"{"cmd":"flows","node":"cp-03"}"#,
        ];
        for v in valid {
            assert!(parse_request(v.as_bytes()).is_ok(), "{v}");
        }
        let mut rng = StdRng::seed_from_u64(7);
        let mut errors = 0;
        for _ in 0..20_000 {
            let mut line: Vec<u8> = valid[rng.random_range(0..valid.len())].as_bytes().to_vec();
            for _ in 0..rng.random_range(0..4) {
                if line.is_empty() {
                    break;
                }
                let i = rng.random_range(0..line.len());
                match rng.random_range(0..3) {
                    0 => line[i] = rng.random(),
                    1 => {
                        line.remove(i);
                    }
                    _ => line.insert(i, rng.random()),
                }
            }
            if rng.random_range(0..10) == 0 {
                line = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
            }
            match parse_request(&line) {
                Ok(_) => {}
                Err(e) => {
                    errors += 1;
                    assert!(e.starts_with("bad request"), "{e}");
                }
            }
        }
        assert!(errors > 5000, "{errors}");
        assert!(parse_request(&[0xff, 0xfe, b'\n'])
            .unwrap_err()
            .contains("not UTF-8"));
    }
}
