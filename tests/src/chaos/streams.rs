//! What the chaos run watches with: long-lived byte-checked streams, a
//! new-connection prober, a `/healthz` sampler and clients that reuse
//! their source ports. Each runs on its own thread inside a lab namespace
//! and records what it saw, timed in seconds from the start of the chaos
//! phase, for the rules in `verdict.rs`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use socket2::{Domain, Socket, Type};

use crate::client::{connect_and_name, read_greeting};
use crate::lab::{enter_netns, netns_path};

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// The shared clock and the records every watcher writes.
#[derive(Debug)]
pub struct Observations {
    t0: Instant,
    /// Set to end every watcher.
    pub stop: AtomicBool,
    /// Every stream, once it ended.
    pub streams: Mutex<Vec<StreamRecord>>,
    /// Every probe.
    pub probes: Mutex<Vec<ProbeRecord>>,
    /// One `/healthz` answer per second.
    pub healthz: Mutex<Vec<HealthzSample>>,
}

impl Observations {
    /// Starts the clock now.
    pub fn new() -> Arc<Observations> {
        Arc::new(Observations {
            t0: Instant::now(),
            stop: AtomicBool::new(false),
            streams: Mutex::default(),
            probes: Mutex::default(),
            healthz: Mutex::default(),
        })
    }

    /// Seconds since the start.
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// When the clock started.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum End {
    /// Closed in order at the end of the run.
    Clean,
    /// Reset (ECONNRESET, EPIPE).
    Reset,
    /// The node closed it (EOF).
    Eof,
    /// No echo for longer than the dead-node bound.
    Stalled,
    /// An echoed byte differed from what was sent.
    Corrupt,
    /// Any other error.
    Error,
}

/// One long-lived stream's life.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Numbered in opening order per slot (`slot*100000 + n`).
    pub id: u64,
    /// Address family.
    pub family: Family,
    /// The node that greeted it.
    pub node: String,
    /// Opened at (s).
    pub opened: f64,
    /// Ended at (s).
    pub ended: f64,
    /// Last echo received at (s).
    pub last_echo: f64,
    /// How it ended.
    pub end: End,
    /// The error text, if any.
    pub detail: String,
    /// Bytes echoed back intact.
    pub bytes: u64,
}

/// One new-connection probe.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    /// Address family.
    pub family: Family,
    /// Started at (s).
    pub start: f64,
    /// Finished at (s).
    pub end: f64,
    /// The node that answered, or why not.
    pub result: Result<String, String>,
}

/// One `/healthz` answer.
#[derive(Debug, Clone)]
pub struct HealthzSample {
    /// Second of the run it was asked in.
    pub second: u64,
    /// When exactly it was asked (s).
    pub at: f64,
    /// The status code, `None` when nothing answered.
    pub code: Option<u16>,
    /// The body's first line (the reason of a 503).
    pub reason: String,
}

/// Spawns a named thread that first enters network namespace `ns`.
pub fn spawn_in_ns<F>(ns: &str, name: String, f: F) -> Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let path = netns_path(ns);
    thread::Builder::new()
        .name(name)
        .spawn(move || match enter_netns(&path) {
            Ok(()) => f(),
            Err(e) => eprintln!("chaos: cannot enter {}: {e:#}", path.display()),
        })
        .context("spawning a watcher thread")
}

const CHUNK: usize = 64;
const PERIOD: Duration = Duration::from_millis(50);

/// Chunk `seq` of stream `id`: both numbers, filler derived from them, `\n`.
fn chunk(id: u64, seq: u64) -> Vec<u8> {
    let mut v = format!("{id:08}:{seq:010} ").into_bytes();
    let mut j = 0u64;
    while v.len() + 1 < CHUNK {
        let x = seq
            .wrapping_mul(31)
            .wrapping_add(id.wrapping_mul(7))
            .wrapping_add(j);
        v.push(b'a' + (x % 26) as u8);
        j += 1;
    }
    v.push(b'\n');
    v
}

/// One stream slot: keeps a stream to `addr` open, opening a new one half a
/// second after each ends, until the run stops. A stream with no echo for
/// `stall` ends as [`End::Stalled`].
pub fn stream_slot(
    obs: Arc<Observations>,
    slot: u64,
    family: Family,
    addr: SocketAddr,
    stall: f64,
) {
    let mut n = 0u64;
    while !obs.stopped() {
        let sock = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => s,
            Err(_) => {
                thread::sleep(Duration::from_millis(300));
                continue;
            }
        };
        let opened = obs.now();
        let _ = sock.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = sock.set_nodelay(true);
        let mut sock = sock;
        let Ok(node) = read_greeting(&mut sock) else {
            thread::sleep(Duration::from_millis(300));
            continue;
        };
        n += 1;
        let id = slot * 100_000 + n;
        let rec = run_one(&obs, sock, id, family, node, opened, stall);
        obs.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rec);
        thread::sleep(Duration::from_millis(500));
    }
}

fn classify(e: &io::Error) -> End {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => End::Reset,
        _ => End::Error,
    }
}

fn run_one(
    obs: &Observations,
    mut sock: TcpStream,
    id: u64,
    family: Family,
    node: String,
    opened: f64,
    stall: f64,
) -> StreamRecord {
    let mut rec = StreamRecord {
        id,
        family,
        node,
        opened,
        ended: opened,
        last_echo: opened,
        end: End::Clean,
        detail: String::new(),
        bytes: 0,
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; CHUNK];
    let mut seq = 0u64;
    'outer: while !obs.stopped() {
        let data = chunk(id, seq);
        if let Err(e) = sock.write_all(&data) {
            rec.end = classify(&e);
            rec.detail = format!("chunk {seq}: write: {e}");
            break;
        }
        let mut filled = 0;
        while filled < CHUNK {
            match sock.read(&mut buf[filled..]) {
                Ok(0) => {
                    rec.end = End::Eof;
                    rec.detail = format!("chunk {seq}: closed by the node");
                    break 'outer;
                }
                Ok(k) => filled += k,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if obs.now() - rec.last_echo > stall {
                        rec.end = End::Stalled;
                        rec.detail = format!("chunk {seq}: no echo for {stall:.0} s");
                        break 'outer;
                    }
                    // The run's end interrupts a stalled stream too: it is
                    // judged by how long it had been stalled.
                    if obs.stopped() && obs.now() - rec.last_echo > 3.0 {
                        rec.end = End::Stalled;
                        rec.detail = format!(
                            "chunk {seq}: no echo for {:.1} s at the end of the run",
                            obs.now() - rec.last_echo
                        );
                        break 'outer;
                    }
                }
                Err(e) => {
                    rec.end = classify(&e);
                    rec.detail = format!("chunk {seq}: read: {e}");
                    break 'outer;
                }
            }
        }
        if buf[..] != data[..] {
            rec.end = End::Corrupt;
            rec.detail = format!(
                "chunk {seq}: sent {:?}, got {:?}",
                String::from_utf8_lossy(&data),
                String::from_utf8_lossy(&buf)
            );
            break;
        }
        rec.bytes += CHUNK as u64;
        rec.last_echo = obs.now();
        seq += 1;
        thread::sleep(PERIOD);
    }
    if rec.end == End::Clean {
        // Orderly close: our FIN, then the node's FIN and nothing else.
        let _ = sock.set_read_timeout(Some(Duration::from_secs(3)));
        let mut extra = [0u8; 256];
        let closed = sock
            .shutdown(Shutdown::Write)
            .and_then(|()| sock.read(&mut extra));
        match closed {
            Ok(0) => {}
            Ok(k) => {
                rec.end = End::Corrupt;
                rec.detail = format!("{k} unexpected bytes after the last echo");
            }
            Err(e) => {
                rec.end = classify(&e);
                rec.detail = format!("closing: {e}");
            }
        }
    }
    rec.ended = obs.now();
    rec
}

/// A prober: every 100 ms a new connection to one of `addrs` in turn,
/// 500 ms to connect and be greeted.
pub fn prober(obs: Arc<Observations>, family: Family, addrs: Vec<SocketAddr>) {
    let period = Duration::from_millis(100);
    let mut k = 0usize;
    while !obs.stopped() {
        let t = Instant::now();
        let start = obs.now();
        let addr = addrs[k % addrs.len()];
        k += 1;
        let result =
            connect_and_name(addr, Duration::from_millis(500)).map_err(|e| format!("{e:#}"));
        let end = obs.now();
        obs.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ProbeRecord {
                family,
                start,
                end,
                result,
            });
        if let Some(rest) = period.checked_sub(t.elapsed()) {
            thread::sleep(rest);
        }
    }
}

/// Asks `/healthz` at `api` once a second (1 s to answer).
pub fn healthz_sampler(obs: Arc<Observations>, api: SocketAddr) {
    let mut second = 0u64;
    while !obs.stopped() {
        let due = obs.t0() + Duration::from_secs(second);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let at = obs.now();
        let (code, reason) = match get_healthz(api) {
            Ok(text) => {
                let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok());
                let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
                (code, body.lines().next().unwrap_or("").to_string())
            }
            Err(e) => (None, format!("no answer: {e}")),
        };
        obs.healthz
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(HealthzSample {
                second,
                at,
                code,
                reason,
            });
        second = (obs.now().floor() as u64 + 1).max(second + 1);
    }
}

fn get_healthz(api: SocketAddr) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Connects to `vip` from local port `port` (SO_REUSEADDR), is greeted,
/// checks one echoed line and closes with a RST, so the port is free again
/// at once. Returns the node.
pub fn connect_from(vip: SocketAddr, port: u16) -> Result<String> {
    let domain = if vip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    let local: SocketAddr = if vip.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, port).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, port).into()
    };
    s.bind(&local.into())
        .with_context(|| format!("bind :{port}"))?;
    s.connect_timeout(&vip.into(), Duration::from_secs(2))
        .with_context(|| format!("connect from :{port}"))?;
    s.set_linger(Some(Duration::ZERO))?;
    let mut t: TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_secs(2)))?;
    let node = read_greeting(&mut t).with_context(|| format!("greeting on :{port}"))?;
    let line = format!("port {port}\n");
    t.write_all(line.as_bytes())?;
    let mut back = vec![0u8; line.len()];
    t.read_exact(&mut back)
        .with_context(|| format!("echo on :{port} from {node}"))?;
    if back != line.as_bytes() {
        bail!("echo on :{port} from {node} differs");
    }
    Ok(node)
}
