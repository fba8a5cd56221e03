//! `lb-demo`: builds the namespace lab (prefix `lbdemo`), runs `lb` in the
//! gateway and walks through balancing (an IPv4 and an IPv6 VIP, served by
//! the same nodes, and a second IPv4 VIP in full-NAT mode, where the nodes
//! see the gateway's source-NAT address instead of the client's), failover
//! and recovery, printing what a client sees. Needs root.
//!
//! `lb` and `cp-sim` are looked up next to this executable unless given
//! (`--lb`, `--cp-sim`, or `$LB_BIN`). With `--hold` the lab stays up after
//! the walk-through, for poking at by hand, until Ctrl-C or `--hold-secs`.
//! Everything is removed on exit, and stale `lbdemo-*` namespaces from an
//! earlier run are removed at start.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use lb_tests::lab::ip;
use lb_tests::{
    default_lb_bin, find_next_to_exe, measure_failover, measure_recovery, spread, Families,
    HealthSettings, Lab, LabOptions, Stream, CLIENT_ADDR6, GATEWAY_BACKEND_ADDR6,
    GATEWAY_CLIENT_ADDR6, KUBE_API_PORT, LB_API, TALOS_API_PORT,
};

/// Command-line arguments of `lb-demo`.
#[derive(Debug, Parser)]
#[command(name = "lb-demo", about = "Walk through lb in a network-namespace lab")]
struct Args {
    /// The `lb` binary (default: `$LB_BIN`, else next to this executable).
    #[arg(long)]
    lb: Option<PathBuf>,
    /// The `cp-sim` binary (default: next to this executable).
    #[arg(long)]
    cp_sim: Option<PathBuf>,
    /// Connections per listener for the balancing step.
    #[arg(long, default_value_t = 300)]
    connections: usize,
    /// Keep the lab up after the walk-through until Ctrl-C.
    #[arg(long)]
    hold: bool,
    /// Longest time `--hold` keeps the lab up, in seconds.
    #[arg(long, default_value_t = 600)]
    hold_secs: u64,
}

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(title: &str) -> Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    println!("\n== {title}");
    Ok(())
}

fn shares(counts: &BTreeMap<String, usize>, total: usize) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k} {v} ({:.0}%)", *v as f64 * 100.0 / total.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespaces, XDP)");
    }
    install_signal_handlers();
    let lb_bin = match &args.lb {
        Some(p) => p.clone(),
        None if std::env::var_os("LB_BIN").is_some() => default_lb_bin(),
        None => find_next_to_exe("lb").unwrap_or_else(|_| default_lb_bin()),
    };
    let cp_sim = match &args.cp_sim {
        Some(p) => p.clone(),
        None => find_next_to_exe("cp-sim")?,
    };

    step("building the lab")?;
    let lab = Lab::create(LabOptions {
        prefix: Some("lbdemo".into()),
        backends: 3,
        cp_sim: Some(cp_sim),
        lb_bin: Some(lb_bin),
    })?;
    let client = lab.client_ns();
    println!(
        "client {client} 198.18.1.2 -> gateway {} (gwc 198.18.1.1, gwb 198.18.2.1) -> switch {} -> backends {}",
        lab.gateway_ns(),
        lab.switch_ns(),
        (1..=lab.backends())
            .map(|i| format!("{} {}", lab.backend_name(i), lab.backend_addr(i)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "IPv6 too: client {CLIENT_ADDR6} -> gateway (gwc {GATEWAY_CLIENT_ADDR6}, gwb {GATEWAY_BACKEND_ADDR6}) -> backends {}",
        (1..=lab.backends())
            .map(|i| format!("{} {}", lab.backend_name(i), lab.backend_addr6(i)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "listeners: {} and {} (ports {KUBE_API_PORT}, {TALOS_API_PORT}) over the same nodes",
        lab.vip(),
        lab.vip6()
    );
    lab.start_all_backends()?;

    println!(
        "and {FULLNAT_VIP}:{KUBE_API_PORT} in full-NAT mode (source-NAT address {SNAT_ADDR} on gwb)"
    );

    step("starting lb in the gateway")?;
    let h = HealthSettings::default();
    ip([
        "-n",
        &lab.gateway_ns(),
        "addr",
        "add",
        &format!("{SNAT_ADDR}/32"),
        "dev",
        "gwb",
    ])?;
    // Full-NAT packets the data path hands to the kernel (to resolve a
    // neighbour) carry the gateway's own source-NAT address as source.
    lb_tests::lab::ns_exec(
        &lab.gateway_ns(),
        ["sysctl", "-qw", "net.ipv4.conf.all.accept_local=1"],
    )?;
    let config = with_fullnat_listener(&lab, &lab.config_toml_families(h, Families::Dual))?;
    lab.start_lb(&config)?;
    lab.wait_backends_up(Duration::from_secs(10))?;
    let status = lab.lb_status()?;
    if let Some(ifaces) = status.get("interfaces").and_then(|v| v.as_array()) {
        for i in ifaces {
            println!(
                "XDP on {} ({})",
                i.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
                i.get("mode").and_then(|v| v.as_str()).unwrap_or("?")
            );
        }
    }

    let vips: Vec<SocketAddr> = [KUBE_API_PORT, TALOS_API_PORT]
        .into_iter()
        .map(|port| SocketAddr::from(lab.vip_addr(port)))
        .chain([KUBE_API_PORT, TALOS_API_PORT].map(|port| lab.vip6_addr(port)))
        .collect();
    for addr in vips {
        step(&format!(
            "{} connections from the client to {addr}",
            args.connections,
        ))?;
        let s = spread(&lab, &client, addr, args.connections)?;
        println!(
            "{}; failures {}",
            shares(&s.counts, args.connections),
            s.failures
        );
    }

    let fullnat_vip = SocketAddrV4::new(FULLNAT_VIP, KUBE_API_PORT);
    step(&format!(
        "{} connections from the client to {fullnat_vip} (full-NAT)",
        args.connections
    ))?;
    let s = spread(&lab, &client, fullnat_vip, args.connections)?;
    println!(
        "{}; failures {}",
        shares(&s.counts, args.connections),
        s.failures
    );

    step("what the nodes see: DNAT keeps the client's address, full-NAT does not")?;
    for (mode, addr) in [
        ("dnat", lab.vip_addr(KUBE_API_PORT)),
        ("fullnat", fullnat_vip),
    ] {
        let (node, local, peer) = seen_by_node(&lab, &client, addr)?;
        println!("{mode:>7}: client {local} -> {addr} -> {node} sees the connection from {peer}");
    }

    let vip = lab.vip_addr(KUBE_API_PORT);
    let victim = lab.backend_name(2);
    step("opening a long-lived stream through the VIP")?;
    let mut stream = None;
    for _ in 0..30 {
        let s = Stream::open(&lab, &client, vip)?;
        if s.node() != victim {
            stream = Some(s);
            break;
        }
        s.finish();
    }
    let stream = stream.context("every stream landed on cp-02")?;
    println!("stream landed on {}", stream.node());

    step(&format!("stopping {victim}"))?;
    lab.stop_backend(2)?;
    let t0 = Instant::now();
    let vip6 = lab.vip6_addr(KUBE_API_PORT);
    // Both families probed at once, from the same stop.
    let (f, f6) = thread::scope(|scope| {
        let probe = |addr: SocketAddr| {
            let (lab, client, victim) = (&lab, &client, &victim);
            scope.spawn(move || {
                measure_failover(
                    lab,
                    client,
                    addr,
                    victim,
                    t0,
                    Duration::from_secs(1),
                    Duration::from_secs(10),
                )
            })
        };
        let v4 = probe(vip.into());
        let v6 = probe(vip6);
        (v4.join(), v6.join())
    });
    let f = f.map_err(|_| anyhow::anyhow!("IPv4 probe thread panicked"))??;
    let f6 = f6.map_err(|_| anyhow::anyhow!("IPv6 probe thread panicked"))??;
    println!(
        "{} probes every 50 ms; failed or reached {victim}: {}",
        f.probes.len(),
        f.bad(&victim).len()
    );
    println!(
        "last bad connection {:?} after the stop; clean since then for {:?}{}",
        f.settled_after,
        f.clean_window(),
        if f.settled { "" } else { " (did not settle!)" }
    );
    println!(
        "lb says {victim} is {}",
        lab.backend_health("kubernetes-api", &victim)?
    );
    println!(
        "over IPv6 ({vip6}): last bad connection {:?} after the stop{}; lb says {victim}-v6 is {}",
        f6.settled_after,
        if f6.settled { "" } else { " (did not settle!)" },
        lab.backend_health("kubernetes-api-v6", &format!("{victim}-v6"))?
    );

    step(&format!("restarting {victim}"))?;
    lab.start_backend(2)?;
    let t1 = Instant::now();
    let (_, back) = measure_recovery(&lab, &client, vip, &victim, t1, Duration::from_secs(10))?;
    match back {
        Some(at) => println!("new connections reach {victim} again {at:?} after the restart"),
        None => println!("{victim} did not come back within 10 s!"),
    }

    step("closing the stream")?;
    let r = stream.finish();
    println!(
        "{} chunks, {} bytes sent, {} echoed intact, errors: {:?}",
        r.chunks, r.bytes_sent, r.bytes_echoed, r.errors
    );

    step("the daemon's view (lb status)")?;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &lab.gateway_ns()])
        .arg(lab.lb_bin())
        .args(["status", "--api", LB_API]);
    match lb_tests::lab::run_with_timeout(&mut cmd, Duration::from_secs(5)) {
        Ok(out) => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => println!("lb status failed: {e:#}"),
    }

    if args.hold {
        step("holding the lab (Ctrl-C to tear down)")?;
        let node1 = SocketAddrV4::new(lab.backend_addr(1), KUBE_API_PORT);
        println!("try:");
        println!("  ip netns exec {client} nc {} {KUBE_API_PORT}", lab.vip());
        println!("  ip netns exec {client} nc {} {KUBE_API_PORT}", lab.vip6());
        println!("  ip netns exec {client} nc {} {KUBE_API_PORT}", node1.ip());
        println!(
            "  ip netns exec {} {} status --api {LB_API}",
            lab.gateway_ns(),
            lab.lb_bin().display()
        );
        let end = Instant::now() + Duration::from_secs(args.hold_secs);
        while !stopped() && Instant::now() < end {
            thread::sleep(Duration::from_millis(200));
        }
    }

    println!("\n== tearing down");
    match lab.stop_lb() {
        Ok(st) => println!("lb exited: {st}"),
        Err(e) => println!("stopping lb: {e:#}"),
    }
    drop(lab);
    println!("lab removed");
    Ok(())
}

/// The VIP of the demo's full-NAT listener.
const FULLNAT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 11);
/// The gateway's source-NAT address, on the nodes' link.
const SNAT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 100);

/// `config` plus a `kubernetes-api-fullnat` listener on [`FULLNAT_VIP`]
/// (port 6443, the IPv4 nodes, `mode = "fullnat"`) and [`SNAT_ADDR`] as
/// the source-NAT address.
fn with_fullnat_listener(lab: &Lab, config: &str) -> Result<String> {
    let Some((head, rest)) = config.split_once("[dataplane]\n") else {
        bail!("the lab's config has no [dataplane] table");
    };
    let nodes: Vec<String> = (1..=lab.backends())
        .map(|i| format!("\"{}\"", lab.backend_name(i)))
        .collect();
    Ok(format!(
        "{head}[dataplane]\nsnat_ipv4 = [\"{SNAT_ADDR}\"]\n{rest}\n[[listener]]\n\
         name = \"kubernetes-api-fullnat\"\nvip = \"{FULLNAT_VIP}\"\nport = {KUBE_API_PORT}\n\
         mode = \"fullnat\"\nbackends = [{}]\n",
        nodes.join(", ")
    ))
}

/// Connects from `ns` to `addr` and asks the node that greeted which peer
/// it sees (`ss` in the node's namespace): (node, the client's own
/// address, the peer the node sees).
fn seen_by_node(lab: &Lab, ns: &str, addr: SocketAddrV4) -> Result<(String, String, String)> {
    let (mut sock, local) = lb_tests::lab::run_in_netns(ns, || -> Result<_> {
        let s = std::net::TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))
            .with_context(|| format!("connecting to {addr}"))?;
        let local = s.local_addr()?;
        Ok((s, local))
    })??;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let node = lb_tests::client::read_greeting(&mut sock)?;
    let i = (1..=lab.backends())
        .find(|i| lab.backend_name(*i) == node)
        .with_context(|| format!("unknown node {node}"))?;
    let out = lb_tests::lab::ns_exec(
        &lab.backend_ns(i),
        [
            "ss",
            "-Htn",
            "state",
            "established",
            &format!("( sport = :{} )", addr.port()),
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let peers: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    // DNAT: the node sees the client's own address and port; full-NAT:
    // the source-NAT address (the one peer that is not the client's).
    let peer = peers
        .iter()
        .find(|p| **p == local.to_string())
        .or_else(|| {
            peers
                .iter()
                .find(|p| p.starts_with(&format!("{SNAT_ADDR}:")))
        })
        .map_or_else(|| format!("? (ss: {})", peers.join(" ")), |p| p.to_string());
    drop(sock);
    Ok((node, local.to_string(), peer))
}
