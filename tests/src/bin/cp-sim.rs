//! `cp-sim`: a simulated Kubernetes control-plane node for the namespace lab.
//!
//! For every `--listen` address it accepts TCP connections. Each connection is
//! served on its own thread: the node first writes its name and a newline
//! (`"cp-01\n"`), then echoes every byte it receives until the peer closes.
//! Errors are logged per connection and never take the process down.
//!
//! The process is bounded in time: it exits by itself after
//! `--max-lifetime-secs` (one hour by default), and an idle connection is
//! dropped after `--idle-timeout-secs`.
//!
//! For health-check tests it can also behave like the nodes' real services:
//! - `--tls-cert FILE --tls-key FILE`: every listener speaks TLS (rustls),
//!   then greets and echoes inside it; `--client-ca FILE` additionally
//!   requires a client certificate signed by that CA.
//! - `--https-status CODE` (with TLS): answers `GET /readyz` with `CODE`
//!   (any other path: 404), one request per connection, like an API server.
//! - `--hang`: accepts connections and never sends a byte (a node whose
//!   kernel accepts but whose service is stuck).
//!
//! Without these flags it behaves exactly as before.

#[path = "cp_sim/tls.rs"]
mod tls;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use clap::Parser;

/// Command-line arguments of `cp-sim`.
#[derive(Debug, Parser)]
#[command(
    name = "cp-sim",
    about = "Simulated control-plane node: greets with its name, then echoes"
)]
struct Args {
    /// Node name sent as the first line of every connection.
    #[arg(long)]
    name: String,
    /// Address to listen on (repeatable), e.g. `198.18.2.11:6443` or
    /// `[fd00:198:18:2::11]:6443`.
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,
    /// Exit by itself after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_lifetime_secs: u64,
    /// Close a connection that has received nothing for this many seconds.
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// Serve TLS with this certificate (PEM chain, leaf first).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Answer HTTP `GET /readyz` with this status instead of greeting.
    #[arg(long, requires = "tls_cert", value_parser = clap::value_parser!(u16).range(100..=599))]
    https_status: Option<u16>,
    /// Accept connections and never answer.
    #[arg(long, conflicts_with = "tls_cert")]
    hang: bool,
}

/// What every connection gets.
#[derive(Clone)]
enum Mode {
    /// Greeting, then echo (over TLS when configured).
    Echo(Option<Arc<rustls::ServerConfig>>),
    /// TLS, then one HTTP answer.
    Https(Arc<rustls::ServerConfig>, u16),
    /// Nothing at all.
    Hang,
}

fn main() {
    let args = Args::parse();
    let name: Arc<str> = Arc::from(args.name.as_str());
    let idle = Duration::from_secs(args.idle_timeout_secs.max(1));
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match tls::server_config(cert, key, args.client_ca.as_deref()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("cp-sim {name}: TLS setup: {e}");
                std::process::exit(1);
            }
        },
        _ => None,
    };
    let mode = match (args.hang, tls, args.https_status) {
        (true, _, _) => Mode::Hang,
        (false, Some(tls), Some(code)) => Mode::Https(tls, code),
        (false, tls, _) => Mode::Echo(tls),
    };

    // Bind everything first so a bad address fails the start, not later.
    let mut listeners = Vec::with_capacity(args.listen.len());
    for addr in &args.listen {
        match TcpListener::bind(addr) {
            Ok(l) => listeners.push((*addr, l)),
            Err(e) => {
                eprintln!("cp-sim {name}: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    for (addr, listener) in listeners {
        eprintln!("cp-sim {name}: listening on {addr}");
        let name = Arc::clone(&name);
        let mode = mode.clone();
        thread::spawn(move || accept_loop(addr, listener, name, idle, mode));
    }

    thread::sleep(Duration::from_secs(args.max_lifetime_secs));
    eprintln!("cp-sim {name}: maximum lifetime reached, exiting");
    std::process::exit(0);
}

/// Accepts connections for the lifetime of the process (which is bounded by
/// `--max-lifetime-secs`).
fn accept_loop(
    addr: SocketAddr,
    listener: TcpListener,
    name: Arc<str>,
    idle: Duration,
    mode: Mode,
) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let conn_name = Arc::clone(&name);
                let mode = mode.clone();
                let spawned = thread::Builder::new().name("conn".into()).spawn(move || {
                    let peer = stream
                        .peer_addr()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|_| "?".into());
                    if let Err(e) = serve_mode(stream, &conn_name, idle, mode) {
                        eprintln!("cp-sim {conn_name}: connection from {peer}: {e}");
                    }
                });
                if let Err(e) = spawned {
                    eprintln!("cp-sim {name}: cannot spawn a connection thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("cp-sim {name}: accept on {addr}: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Serves one connection as `mode` says.
fn serve_mode(stream: TcpStream, name: &str, idle: Duration, mode: Mode) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
    match mode {
        Mode::Echo(None) => {
            let mut stream = stream;
            serve(&mut stream, name)?;
            // Orderly close: our FIN follows the peer's.
            let _ = stream.shutdown(std::net::Shutdown::Both);
            Ok(())
        }
        Mode::Echo(Some(config)) => {
            let mut tls = tls::accept(config, stream)?;
            serve(&mut tls, name)?;
            tls::close(tls);
            Ok(())
        }
        Mode::Https(config, code) => {
            let mut tls = tls::accept(config, stream)?;
            tls::answer_http(&mut tls, code)?;
            tls::close(tls);
            Ok(())
        }
        Mode::Hang => hang(stream),
    }
}

/// Reads (and discards) until the peer closes or the idle timeout; never
/// writes.
fn hang(mut stream: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
    }
}

/// Greeting line, then echo until EOF.
fn serve<S: Read + Write>(stream: &mut S, name: &str) -> io::Result<()> {
    stream.write_all(format!("{name}\n").as_bytes())?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stream.write_all(&buf[..n])?;
    }
    Ok(())
}
