//! From nothing to a one-arm pair: the files `lb init --one-arm` writes,
//! used as they are (only each gateway's pin path and control socket
//! differ, because both gateways share this host) in the kubeadm-shape
//! LAN pair lab, with lb and keepalived on both gateways. Clients on the
//! LAN (an admin, a worker, a control-plane node) connect through the VIP;
//! the master crashes and the streams survive; keepalived ran the
//! `--notify-master` script on each new master. Also measured: how long a
//! server-push stream (the client sends nothing) stalls at the takeover.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::lab::lan::{LAN_SNAT, LAN_VIP, LAN_WORKER};
use lb_tests::lab::lan_pair::PairGw;
use lb_tests::lab::run_with_timeout;
use lb_tests::{Lab, LabOptions, Stream, StreamOptions, KUBE_API_PORT};

use super::{connections, ready, serial};

/// The ingress port the worker's push server answers on (lb init's
/// `ingress-http` listener, added by `--worker`).
const PUSH_PORT: u16 = 80;

/// `lb init --one-arm` for the lab, run in gateway A's namespace (so
/// `keepalived -t` sees the interface): what an operator types, with the
/// lab's addresses, plus `--lb-bin` (the build's binary), `--tcp-checks`
/// (cp-sim speaks plain TCP), `--xdp-mode generic` (see `lan.rs`) and a
/// notify script that leaves a mark.
fn run_init(lab: &Lab, out: &Path) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.pair_ns(PairGw::A)])
        .arg(lab.lb_bin())
        .args(["init", "--one-arm", "--interface", "gwb"]);
    for i in 1..=lab.backends() {
        cmd.arg("--node")
            .arg(format!("{}={}", lab.backend_name(i), lab.backend_addr(i)));
    }
    cmd.arg("--worker")
        .arg(format!("wk={LAN_WORKER}"))
        .args(["--vip", &LAN_VIP.to_string()])
        .args(["--snat-address", &LAN_SNAT.to_string()])
        .args(["--gateway", &format!("a={}", PairGw::A.addr())])
        .args(["--peer", &format!("b={}", PairGw::B.addr())])
        .args([
            "--advert-int",
            "200ms",
            "--xdp-mode",
            "generic",
            "--tcp-checks",
        ])
        .arg("--lb-bin")
        .arg(lab.lb_bin())
        .arg("--notify-master")
        .arg(format!(
            "/usr/bin/touch {}/master-{{gateway}}",
            out.display()
        ))
        .arg("--script-dir")
        .arg(out)
        .arg("--output")
        .arg(out);
    let o = run_with_timeout(&mut cmd, Duration::from_secs(30)).expect("lb init");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "lb init failed:\n{text}");
    text
}

/// Waits (10 s at most) for the notify script's mark of gateway `g`.
fn notified(out: &Path, g: PairGw) -> bool {
    let mark = out.join(format!("master-{}", g.name()));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if mark.exists() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Waits until A's `lb status` shows every node of every listener up (the
/// ingress listeners have one node, the worker).
fn all_up(lab: &Lab, limit: Duration) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        if let Ok(st) = lab.lb_status() {
            let ls = st["listeners"].as_array().cloned().unwrap_or_default();
            if ls.len() == 4
                && ls.iter().all(|l| {
                    l["backends"]
                        .as_array()
                        .is_some_and(|b| b.iter().all(|b| b["health"] == "up"))
                })
            {
                return;
            }
            last = st.to_string();
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("nodes not all up within {limit:?}: {last}");
}

/// A server in the worker that pushes a numbered line every 5 ms on each
/// connection and never reads (a watch stream's shape).
fn start_push_server(lab: &Lab) {
    let script = format!(
        "import socket, threading, time\n\
         def push(c):\n\
         \x20   i = 0\n\
         \x20   try:\n\
         \x20       while True:\n\
         \x20           c.sendall(b'%d\\n' % i); i += 1; time.sleep(0.005)\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         def serve(port):\n\
         \x20   s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         \x20   s.bind(('{LAN_WORKER}', port)); s.listen(64)\n\
         \x20   while True:\n\
         \x20       c, _ = s.accept()\n\
         \x20       threading.Thread(target=push, args=(c,), daemon=True).start()\n\
         for p in ({PUSH_PORT}, 443):\n\
         \x20   threading.Thread(target=serve, args=(p,), daemon=True).start()\n\
         time.sleep(900)\n"
    );
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script);
    lab.spawn_in(&lab.worker_ns(), &cmd, Some(&lab.dir().join("push.log")))
        .expect("push server");
}

/// What a push stream saw.
#[derive(Debug)]
struct PushReport {
    lines: u64,
    /// Longest time without data after `t0`.
    max_gap: Duration,
    /// Whether data arrived after the longest gap (the stream recovered).
    resumed: bool,
    /// Lines out of sequence or a read error.
    errors: Vec<String>,
}

/// Reads a push stream until `stop`; with `nudge`, the client also sends
/// one byte a second (as an HTTP/2 PING or a TCP keepalive would).
fn read_push(
    stream: TcpStream,
    t0: Arc<std::sync::Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
    nudge: bool,
) -> PushReport {
    let mut r = PushReport {
        lines: 0,
        max_gap: Duration::ZERO,
        resumed: false,
        errors: Vec::new(),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut s = stream;
    let mut buf = [0u8; 4096];
    let mut line = Vec::new();
    let mut last = Instant::now();
    let mut last_nudge = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if nudge && last_nudge.elapsed() >= Duration::from_secs(1) {
            last_nudge = Instant::now();
            if let Err(e) = s.write_all(b".") {
                r.errors.push(format!("nudge: {e}"));
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => {
                r.errors.push("closed by the server".into());
                break;
            }
            Ok(n) => {
                let now = Instant::now();
                if let Some(t) = *t0.lock().unwrap() {
                    if now > t {
                        r.max_gap = r.max_gap.max(now - last.max(t));
                        r.resumed = true;
                    }
                }
                last = now;
                for &b in &buf[..n] {
                    if b != b'\n' {
                        line.push(b);
                        continue;
                    }
                    let want = r.lines.to_string();
                    if line != want.as_bytes() && r.errors.len() < 5 {
                        r.errors.push(format!(
                            "line {} is {:?}",
                            r.lines,
                            String::from_utf8_lossy(&line)
                        ));
                    }
                    line.clear();
                    r.lines += 1;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                r.errors.push(format!("read: {e}"));
                break;
            }
        }
    }
    // A gap still open at the end counts too (never resumed).
    if let Some(t) = *t0.lock().unwrap() {
        let open = Instant::now() - last.max(t);
        if open > r.max_gap {
            r.max_gap = open;
            r.resumed = false;
        }
    }
    r
}

#[test]
fn lb_init_one_arm_pair_from_nothing() {
    if !ready("lb_init_one_arm_pair_from_nothing") {
        return;
    }
    let _serial = serial();
    let lab = Lab::create_lan_pair(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
        .expect("creating the LAN pair lab");
    lab.start_all_backends().expect("starting the nodes");
    start_push_server(&lab);
    let out = lab.dir().join("init");
    let printed = run_init(&lab, &out);
    println!("lb init --one-arm:\n{printed}");
    for want in [
        "lb.toml: lb check OK",
        "keepalived-a.conf: keepalived -t OK",
        "keepalived-b.conf: keepalived -t OK",
        "lb-notify-a.sh: sh -n OK",
        "Nothing to change on the nodes or the clients",
        "systemctl enable --now lb keepalived",
    ] {
        assert!(printed.contains(want), "lb init did not print {want:?}");
    }
    let generated = std::fs::read_to_string(out.join("lb.toml")).unwrap();
    let config = generated
        .replace(
            &format!("pin_path = \"{}\"", lb::config::DEFAULT_PIN_PATH),
            &format!("pin_path = \"{}\"", lab.bpffs_dir().join("lb").display()),
        )
        .replace(
            &format!("socket = \"{}\"", lb::config::DEFAULT_SOCKET),
            &format!("socket = \"{}\"", lab.control_socket().display()),
        );
    assert_ne!(config, generated, "no pin_path/socket line to adapt");
    lab.start_pair_lb(PairGw::A, &config).expect("lb on A");
    lab.start_pair_lb(PairGw::B, &config).expect("lb on B");
    all_up(&lab, Duration::from_secs(20));
    for g in [PairGw::A, PairGw::B] {
        let conf = out.join(format!("keepalived-{}.conf", g.name()));
        lab.start_pair_keepalived_with(g, &conf)
            .expect("keepalived");
    }
    let took = lab
        .wait_pair_master(PairGw::A, Duration::from_secs(20))
        .expect("A master");
    println!("A master {took:?} after keepalived started");
    assert!(notified(&out, PairGw::A), "notify_master did not run on A");

    // Every client on the LAN, through the VIP, nothing changed on them.
    let vip = lab.lan_vip(KUBE_API_PORT);
    for (who, ns) in [
        ("client", lab.client_ns()),
        ("worker", lab.worker_ns()),
        ("node cp-01", lab.backend_ns(1)),
    ] {
        let (counts, failed) = connections(&lab, &ns, vip.into(), 30, Duration::from_secs(2));
        println!("one-arm pair from lb init, {who}: {counts:?}, {failed} failed of 30");
        assert_eq!(failed, 0, "connections from the {who}");
        assert!(counts.len() >= 2, "spread from the {who}: {counts:?}");
    }

    // Streams (echo, and server-push with and without client traffic)
    // across a master crash.
    let mut open = Vec::new();
    for (who, ns) in [("worker", lab.worker_ns()), ("client", lab.client_ns())] {
        for _ in 0..3 {
            let opts = StreamOptions {
                timeout: Duration::from_secs(15),
                ..StreamOptions::default()
            };
            let s = Stream::open_with(&lab, &ns, vip, opts).expect("stream");
            open.push((format!("{who} -> {}", s.node()), s));
        }
    }
    let push_addr: SocketAddr = lab.lan_vip(PUSH_PORT).into();
    let t0 = Arc::new(std::sync::Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let mut pushers = Vec::new();
    for nudge in [false, true] {
        let s = lab
            .in_ns(&lab.client_ns(), || {
                TcpStream::connect_timeout(&push_addr, Duration::from_secs(5))
            })
            .expect("netns")
            .expect("push stream");
        let (t0, stop) = (t0.clone(), stop.clone());
        pushers.push((nudge, thread::spawn(move || read_push(s, t0, stop, nudge))));
    }
    thread::sleep(Duration::from_millis(800));
    let crash = Instant::now();
    *t0.lock().unwrap() = Some(crash);
    let (moved, f) = lab.takeover_by_b(vip.into(), crash).expect("B takes over");
    assert!(notified(&out, PairGw::B), "notify_master did not run on B");
    // Give the push streams 12 s from the crash.
    let until = crash + Duration::from_secs(12);
    thread::sleep(until.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::SeqCst);
    let b = lab
        .lb_ctl_at(&lab.pair_socket(PairGw::B), &["status", "--json"])
        .expect("lb status on B");
    let b: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap_or_default();
    println!("gateway B's counters after the takeover: {}", b["counters"]);
    let n = open.len();
    let mut intact = 0;
    for (what, s) in open {
        let r = s.finish();
        if r.errors.is_empty() && r.bytes_echoed == r.bytes_sent && r.chunks > 10 {
            intact += 1;
        } else {
            println!("stream {what}: {} chunks, errors {:?}", r.chunks, r.errors);
        }
    }
    println!(
        "one-arm pair from lb init: {intact}/{n} echo streams intact; addresses moved {moved:?} \
         after the crash; new connections out for {:?}",
        f.settled_after
    );
    let mut nudged = None;
    for (nudge, h) in pushers {
        let r = h.join().expect("push reader");
        println!(
            "server-push stream ({}): {} lines, longest stall after the crash {:?}, {}, errors {:?}",
            if nudge {
                "client sends 1 byte/s"
            } else {
                "client sends nothing"
            },
            r.lines,
            r.max_gap,
            if r.resumed {
                "resumed"
            } else {
                "not resumed within 12 s"
            },
            r.errors
        );
        if nudge {
            nudged = Some(r);
        }
    }
    assert!(f.settled, "no clean second after the takeover");
    assert_eq!(intact, n, "echo streams across the takeover");
    // A stream whose client talks is rebuilt by the survivor; the data
    // that arrives is in sequence.
    let nudged = nudged.unwrap();
    assert!(
        nudged.errors.is_empty() && nudged.resumed,
        "push stream with client traffic: {nudged:?}"
    );
}
