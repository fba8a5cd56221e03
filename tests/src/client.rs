//! Client helpers: one-shot "which node answered?" connections, spreading
//! many of them, and a long-lived echo stream that checks its data.
//!
//! Every node (`cp-sim`) greets a connection with `"{name}\n"` and then
//! echoes, so the first line tells which backend a connection landed on.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::Lab;

/// Longest greeting line accepted.
const MAX_GREETING: usize = 256;

/// Connects to `addr` (in the calling thread's network namespace), reads the
/// greeting line and returns the node name, then closes. `timeout` bounds
/// the connect and the read separately.
pub fn connect_and_name(addr: impl Into<SocketAddr>, timeout: Duration) -> Result<String> {
    let addr: SocketAddr = addr.into();
    let mut s =
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    let name = read_greeting(&mut s).with_context(|| format!("greeting from {addr}"))?;
    let _ = s.shutdown(Shutdown::Both);
    Ok(name)
}

/// Reads one `\n`-terminated line byte by byte (so nothing after it is
/// consumed) and returns it without the newline.
pub fn read_greeting(s: &mut TcpStream) -> Result<String> {
    let mut line = Vec::with_capacity(16);
    let mut byte = [0u8; 1];
    while line.len() < MAX_GREETING {
        match s.read(&mut byte) {
            Ok(0) => bail!("connection closed before the greeting ended ({line:?})"),
            Ok(_) if byte[0] == b'\n' => {
                return String::from_utf8(line).context("greeting is not UTF-8");
            }
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the greeting"),
        }
    }
    bail!("greeting longer than {MAX_GREETING} bytes")
}

/// Outcome of [`spread`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spread {
    /// Successful connections per node name.
    pub counts: BTreeMap<String, usize>,
    /// Connections that failed.
    pub failures: usize,
    /// The first few failure messages.
    pub errors: Vec<String>,
}

impl Spread {
    /// Total successful connections.
    pub fn successes(&self) -> usize {
        self.counts.values().sum()
    }

    /// Successful connections that reached `node`.
    pub fn count(&self, node: &str) -> usize {
        self.counts.get(node).copied().unwrap_or(0)
    }
}

/// Makes `n` sequential connections to `addr` from namespace `ns` (each
/// bounded by a 2 s timeout) and counts which node answered each.
pub fn spread(lab: &Lab, ns: &str, addr: impl Into<SocketAddr>, n: usize) -> Result<Spread> {
    let addr: SocketAddr = addr.into();
    lab.in_ns(ns, || {
        let mut out = Spread::default();
        for _ in 0..n {
            match connect_and_name(addr, Duration::from_secs(2)) {
                Ok(name) => *out.counts.entry(name).or_default() += 1,
                Err(e) => {
                    out.failures += 1;
                    if out.errors.len() < 10 {
                        out.errors.push(format!("{e:#}"));
                    }
                }
            }
        }
        out
    })
}

/// What a [`Stream`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    /// Bytes written to the connection.
    pub bytes_sent: u64,
    /// Bytes read back that matched what was sent, in order.
    pub bytes_echoed: u64,
    /// Chunks sent.
    pub chunks: u64,
    /// Problems seen (the stream stops at the first one).
    pub errors: Vec<String>,
    /// How long the stream ran.
    pub duration: Duration,
}

/// Options for [`Stream::open_with`].
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Pause between chunks.
    pub period: Duration,
    /// Size of each chunk in bytes (at least 16).
    pub chunk_size: usize,
    /// The stream stops by itself after this long.
    pub max_duration: Duration,
    /// Connect / greeting / echo timeout.
    pub timeout: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            period: Duration::from_millis(20),
            chunk_size: 64,
            max_duration: Duration::from_secs(120),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A long-lived connection that writes a numbered chunk every ~20 ms and
/// checks that each chunk is echoed back intact and in order.
///
/// The connection is made in the given namespace; the checking thread runs
/// in the background until [`Stream::finish`] (or the maximum duration).
#[derive(Debug)]
pub struct Stream {
    node: String,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<StreamReport>>,
}

impl Stream {
    /// Opens a stream to `addr` from namespace `ns` with default options.
    pub fn open(lab: &Lab, ns: &str, addr: impl Into<SocketAddr>) -> Result<Stream> {
        Self::open_with(lab, ns, addr, StreamOptions::default())
    }

    /// Opens a stream to `addr` from namespace `ns`.
    pub fn open_with(
        _lab: &Lab,
        ns: &str,
        addr: impl Into<SocketAddr>,
        opts: StreamOptions,
    ) -> Result<Stream> {
        Self::open_in(ns, addr, opts)
    }

    /// Opens a stream to `addr` from network namespace `ns` (a name under
    /// `/var/run/netns`), for labs other than [`Lab`].
    pub fn open_in(ns: &str, addr: impl Into<SocketAddr>, opts: StreamOptions) -> Result<Stream> {
        let addr: SocketAddr = addr.into();
        let timeout = opts.timeout;
        let mut sock = crate::lab::run_in_netns(ns, || -> Result<TcpStream> {
            let s = TcpStream::connect_timeout(&addr, timeout)
                .with_context(|| format!("stream connect {addr}"))?;
            Ok(s)
        })??;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let node = read_greeting(&mut sock)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = thread::Builder::new()
            .name(format!("stream {addr}"))
            .spawn(move || run_stream(sock, opts, &stop2))
            .context("spawning the stream thread")?;
        Ok(Stream {
            node,
            stop,
            handle: Some(handle),
        })
    }

    /// The node the stream landed on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Stops the stream, closes it cleanly and returns what it saw.
    pub fn finish(mut self) -> StreamReport {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(report)) => report,
            Some(Err(_)) => StreamReport {
                errors: vec!["stream thread panicked".into()],
                ..StreamReport::default()
            },
            None => StreamReport::default(),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Chunk `seq`: `"{seq:010} "` then filler derived from `seq`, then `\n`.
fn chunk(seq: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{seq:010} ").into_bytes();
    let mut j = 0u64;
    while v.len() + 1 < size {
        v.push(b'a' + ((seq.wrapping_mul(31).wrapping_add(j)) % 26) as u8);
        j += 1;
    }
    v.push(b'\n');
    v
}

fn run_stream(mut sock: TcpStream, opts: StreamOptions, stop: &AtomicBool) -> StreamReport {
    let start = Instant::now();
    let size = opts.chunk_size.max(16);
    let max_chunks = opts.max_duration.as_millis() as u64 / opts.period.as_millis().max(1) as u64;
    let mut r = StreamReport::default();
    let mut buf = vec![0u8; size];
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) && start.elapsed() < opts.max_duration && seq <= max_chunks {
        let data = chunk(seq, size);
        if let Err(e) = sock.write_all(&data) {
            r.errors.push(format!("chunk {seq}: write: {e}"));
            break;
        }
        r.bytes_sent += data.len() as u64;
        r.chunks += 1;
        if let Err(e) = sock.read_exact(&mut buf) {
            r.errors.push(format!("chunk {seq}: reading the echo: {e}"));
            break;
        }
        if buf != data {
            r.errors.push(format!(
                "chunk {seq}: echo mismatch: sent {:?}, got {:?}",
                String::from_utf8_lossy(&data),
                String::from_utf8_lossy(&buf)
            ));
            break;
        }
        r.bytes_echoed += data.len() as u64;
        seq += 1;
        thread::sleep(opts.period);
    }
    if r.errors.is_empty() {
        // Orderly close: send FIN, expect the node's FIN and nothing else.
        if let Err(e) = sock.shutdown(Shutdown::Write) {
            r.errors.push(format!("shutdown: {e}"));
        } else {
            let mut extra = [0u8; 256];
            match sock.read(&mut extra) {
                Ok(0) => {}
                Ok(n) => r
                    .errors
                    .push(format!("{n} unexpected bytes after the last echo")),
                Err(e) => r.errors.push(format!("waiting for the node's FIN: {e}")),
            }
        }
    }
    r.duration = start.elapsed();
    r
}

/// One probe connection of [`probe`]: when it started, relative to the
/// reference instant, and which node answered or why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Start of the connection attempt, measured from the reference instant.
    pub at: Duration,
    /// The node name, or the error (formatted).
    pub result: Result<String, String>,
}

impl Probe {
    /// Whether this probe failed or reached `node`.
    pub fn failed_or_reached(&self, node: &str) -> bool {
        self.result.as_ref().map_or(true, |n| n == node)
    }
}

/// From namespace `ns`, connects to `addr` every `period` (each connection
/// bounded by a 1 s timeout) until `done(probes so far)` returns true or
/// `limit` has passed since `t0`. Returns every probe, timed from `t0`, and
/// whether `done` ended the loop (false: the time limit did).
pub fn probe(
    lab: &Lab,
    ns: &str,
    addr: impl Into<SocketAddr>,
    t0: Instant,
    period: Duration,
    limit: Duration,
    done: impl Fn(&[Probe]) -> bool + Send,
) -> Result<(Vec<Probe>, bool)> {
    let addr: SocketAddr = addr.into();
    let period = period.max(Duration::from_millis(1));
    lab.in_ns(ns, move || {
        let mut probes = Vec::new();
        let max = (limit.as_millis() / period.as_millis() + 1) as usize;
        for _ in 0..max {
            let started = Instant::now();
            if started.duration_since(t0) >= limit {
                break;
            }
            let result =
                connect_and_name(addr, Duration::from_secs(1)).map_err(|e| format!("{e:#}"));
            probes.push(Probe {
                at: started.duration_since(t0),
                result,
            });
            if done(&probes) {
                return (probes, true);
            }
            if let Some(rest) = period.checked_sub(started.elapsed()) {
                thread::sleep(rest);
            }
        }
        (probes, false)
    })
}

/// Result of [`measure_failover`].
#[derive(Debug, Clone)]
pub struct Failover {
    /// Every probe made, timed from the reference instant.
    pub probes: Vec<Probe>,
    /// Start of the last probe that failed or reached the stopped node
    /// (zero if none did).
    pub settled_after: Duration,
    /// Whether a clean window of the requested length followed.
    pub settled: bool,
}

impl Failover {
    /// The probes that failed or reached `node`, formatted.
    pub fn bad(&self, node: &str) -> Vec<String> {
        self.probes
            .iter()
            .filter(|p| p.failed_or_reached(node))
            .map(|p| format!("{:?}: {:?}", p.at, p.result))
            .collect()
    }

    /// Length of the clean stretch after [`Failover::settled_after`].
    pub fn clean_window(&self) -> Duration {
        self.probes
            .last()
            .map_or(Duration::ZERO, |p| p.at.saturating_sub(self.settled_after))
    }
}

/// After `node` was stopped at `t0`: probes `addr` from `ns` every 50 ms
/// until, after the last probe that failed or reached `node`, at least
/// `clean_for` (and at least 10 probes) passed cleanly, or `limit` since
/// `t0` ran out.
pub fn measure_failover(
    lab: &Lab,
    ns: &str,
    addr: impl Into<SocketAddr>,
    node: &str,
    t0: Instant,
    clean_for: Duration,
    limit: Duration,
) -> Result<Failover> {
    let (probes, settled) = probe(
        lab,
        ns,
        addr,
        t0,
        Duration::from_millis(50),
        limit,
        |ps: &[Probe]| {
            let last_bad = ps.iter().rposition(|p| p.failed_or_reached(node));
            let since = last_bad.map_or(Duration::ZERO, |i| ps[i].at);
            let clean = ps.len() - last_bad.map_or(0, |i| i + 1);
            let last = ps.last().map_or(Duration::ZERO, |p| p.at);
            last.saturating_sub(since) >= clean_for && clean >= 10
        },
    )?;
    let settled_after = probes
        .iter()
        .rposition(|p| p.failed_or_reached(node))
        .map_or(Duration::ZERO, |i| probes[i].at);
    Ok(Failover {
        probes,
        settled_after,
        settled,
    })
}

/// After `node` was restarted at `t0`: probes `addr` from `ns` every 50 ms
/// until a connection reaches `node` or `limit` runs out. Returns the
/// probes and when the first one reaching `node` started (`None`: never).
pub fn measure_recovery(
    lab: &Lab,
    ns: &str,
    addr: impl Into<SocketAddr>,
    node: &str,
    t0: Instant,
    limit: Duration,
) -> Result<(Vec<Probe>, Option<Duration>)> {
    let (probes, recovered) = probe(
        lab,
        ns,
        addr,
        t0,
        Duration::from_millis(50),
        limit,
        |ps: &[Probe]| ps.last().is_some_and(|p| p.result.as_deref() == Ok(node)),
    )?;
    let at = if recovered {
        probes.last().map(|p| p.at)
    } else {
        None
    };
    Ok((probes, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_sized_numbered_and_distinct() {
        let a = chunk(7, 64);
        let b = chunk(8, 64);
        assert_eq!(a.len(), 64);
        assert!(a.starts_with(b"0000000007 "));
        assert_eq!(*a.last().unwrap(), b'\n');
        assert_ne!(a[11..], b[11..]);
    }
}
