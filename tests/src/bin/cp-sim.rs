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

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
    /// Address to listen on (repeatable), e.g. `198.18.2.11:6443`.
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,
    /// Exit by itself after this many seconds.
    #[arg(long, default_value_t = 3600)]
    max_lifetime_secs: u64,
    /// Close a connection that has received nothing for this many seconds.
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
}

fn main() {
    let args = Args::parse();
    let name: Arc<str> = Arc::from(args.name.as_str());
    let idle = Duration::from_secs(args.idle_timeout_secs.max(1));

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
        thread::spawn(move || accept_loop(addr, listener, name, idle));
    }

    thread::sleep(Duration::from_secs(args.max_lifetime_secs));
    eprintln!("cp-sim {name}: maximum lifetime reached, exiting");
    std::process::exit(0);
}

/// Accepts connections for the lifetime of the process (which is bounded by
/// `--max-lifetime-secs`).
fn accept_loop(addr: SocketAddr, listener: TcpListener, name: Arc<str>, idle: Duration) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let conn_name = Arc::clone(&name);
                let spawned = thread::Builder::new().name("conn".into()).spawn(move || {
                    let peer = stream
                        .peer_addr()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|_| "?".into());
                    if let Err(e) = serve(stream, &conn_name, idle) {
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

/// Serves one connection: greeting line, then echo until EOF.
fn serve(mut stream: TcpStream, name: &str, idle: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
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
    // Orderly close: our FIN follows the peer's.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}
