//! High availability: `lb healthz` as keepalived's track script, and a
//! gateway pair set up from `lb init`'s output with real keepalived, through
//! a master crash and a failback (see `lb_tests::ha` for the lab).
//!
//! They need root and a built `lb`; without them they skip (and fail under
//! `CI=true`), as do the other namespace tests. keepalived must be installed
//! (`cargo xtask setup` installs it); under `CI=true` its absence is a failure.

use std::net::SocketAddrV4;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::ha::{Gw, HaLab, Outage, Prober, HA_NODES};
use lb_tests::lab::{run_in_netns, run_with_timeout};
use lb_tests::{
    connect_and_name, default_lb_bin, is_ci, lb_or_skip, root_or_skip, HealthSettings, Lab,
    LabOptions, Stream, StreamOptions, KUBE_API_PORT, LB_API, VIP,
};

/// These tests measure timings: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `lb healthz ARGS` in namespace `ns`, bounded to 10 s.
fn healthz_in(ns: &str, args: &[&str]) -> (Output, Duration) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(default_lb_bin())
        .arg("healthz")
        .args(args);
    let start = Instant::now();
    let out = run_with_timeout(&mut cmd, Duration::from_secs(10)).expect("running lb healthz");
    (out, start.elapsed())
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn keepalived_or_skip(test: &str) -> bool {
    if Command::new("keepalived").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        !is_ci(),
        "{test}: keepalived is not installed (cargo xtask setup)"
    );
    eprintln!("SKIPPED {test}: keepalived is not installed");
    false
}

/// `lb healthz`: non-zero with a reason when no daemon runs; 0 when the
/// data path is attached and every listener has a healthy node; non-zero
/// naming the listener when its nodes are all down and it drops
/// (`all_down = "drop"`); a failing-open listener does not count.
#[test]
fn healthz_exit_status_follows_the_daemon() {
    let test = "healthz_exit_status_follows_the_daemon";
    if !root_or_skip(test) || !lb_or_skip(test) {
        return;
    }
    let _serial = serial();
    let lab = Lab::create(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim"))).expect("lab");
    let gw = lab.gateway_ns();
    let api = ["--api", LB_API, "--timeout", "2s"];

    let (out, took) = healthz_in(&gw, &api);
    println!(
        "no daemon: {} in {took:?}: {}",
        out.status,
        stderr(&out).trim()
    );
    assert!(!out.status.success(), "healthz passed without a daemon");
    assert!(
        stderr(&out).contains("cannot reach the lb daemon"),
        "{}",
        stderr(&out)
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");

    lab.start_all_backends().expect("backends");
    let h = HealthSettings {
        interval: Duration::from_millis(300),
        timeout: Duration::from_millis(200),
        healthy_threshold: 1,
        unhealthy_threshold: 1,
    };
    // kubernetes-api drops with every node down; talos-api fails open.
    let config =
        lab.config_toml_with(h)
            .replacen("port = 6443\n", "port = 6443\nall_down = \"drop\"\n", 1);
    assert!(config.contains("all_down = \"drop\""), "{config}");
    lab.start_lb(&config).expect("lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");

    let (out, took) = healthz_in(&gw, &api);
    println!("healthy: {} in {took:?}", out.status);
    assert!(out.status.success(), "healthz failed: {}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // The same through the configuration file's [api] listen.
    let cfg = lab.lb_config_path();
    let (out, _) = healthz_in(&gw, &["--config", cfg.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "healthz --config failed: {}",
        stderr(&out)
    );

    for i in 1..=lab.backends() {
        lab.stop_backend(i).expect("stopping a backend");
    }
    let start = Instant::now();
    let reason = loop {
        let (out, took) = healthz_in(&gw, &api);
        assert!(took < Duration::from_secs(3), "took {took:?}");
        if !out.status.success() {
            break stderr(&out);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "healthz still passes 10 s after every node stopped"
        );
        thread::sleep(Duration::from_millis(100));
    };
    println!(
        "all nodes down: failed after {:?}: {}",
        start.elapsed(),
        reason.trim()
    );
    assert!(
        reason.contains("listener kubernetes-api has no healthy backend"),
        "{reason}"
    );
    assert!(
        !reason.contains("talos-api"),
        "a failing-open listener counted: {reason}"
    );

    lab.stop_lb().expect("stopping lb");
    let (out, _) = healthz_in(&gw, &api);
    assert!(!out.status.success(), "healthz passed after lb stopped");
    assert!(
        stderr(&out).contains("cannot reach the lb daemon"),
        "{}",
        stderr(&out)
    );
}

/// How often the client probes the VIP in the HA scenarios; outages are
/// measured in these steps.
const PROBE_PERIOD: Duration = Duration::from_millis(50);

/// Probes `vip` from the client every [`PROBE_PERIOD`] (1 s connect
/// timeout, at most 300 s) until the prober is dropped.
fn start_prober(lab: &HaLab, vip: SocketAddrV4) -> Prober {
    Prober::start(
        &lab.client_ns(),
        vip,
        PROBE_PERIOD,
        Duration::from_secs(1),
        Duration::from_secs(300),
    )
}

/// Opens `n` byte-checked echo streams to `vip` from the client.
fn open_streams(lab: &HaLab, vip: SocketAddrV4, n: usize) -> Vec<Stream> {
    let opts = StreamOptions {
        // Survival is the question, not latency: ride out the takeover.
        timeout: Duration::from_secs(15),
        max_duration: Duration::from_secs(300),
        ..StreamOptions::default()
    };
    (0..n)
        .map(|i| {
            Stream::open_in(&lab.client_ns(), vip, opts.clone())
                .unwrap_or_else(|e| panic!("opening stream {i}: {e:#}"))
        })
        .collect()
}

/// Finishes the streams; returns how many ended without an error, and prints each.
fn finish_streams(scenario: &str, streams: Vec<Stream>) -> usize {
    let mut intact = 0;
    for (i, s) in streams.into_iter().enumerate() {
        let node = s.node().to_owned();
        let r = s.finish();
        let ok = r.errors.is_empty() && r.bytes_sent > 0 && r.bytes_echoed == r.bytes_sent;
        println!(
            "{scenario}: stream {i} on {node}: {} chunks, {}/{} bytes echoed, errors {:?}",
            r.chunks, r.bytes_echoed, r.bytes_sent, r.errors
        );
        intact += usize::from(ok);
    }
    intact
}

fn report(scenario: &str, takeover: Duration, o: &Outage) {
    println!(
        "{scenario}: addresses moved after {takeover:?}; new connections: {} attempts, {} failed, \
         first failure {:?} after the event, outage {:?}; nodes {:?}; errors {:?}",
        o.attempts, o.failed, o.first_failure, o.outage, o.nodes, o.errors
    );
}

/// The VRRP advertisement interval under test: `lb init`'s default unless
/// `LB_HA_ADVERT_INT_MS` says otherwise (to look for the fastest stable one).
fn advert_int() -> Duration {
    std::env::var("LB_HA_ADVERT_INT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(lb::init::spec::DEFAULT_ADVERT_INT)
}

/// Two gateways from `lb init`'s files with real keepalived: five streams
/// survive a master crash (links down, every process killed), and five
/// survive the failback with preempt, and five survive the master's lb
/// stopping (the track script hands over); new connections are out only for
/// the VRRP takeover (printed; bounded generously). Before that, keepalived
/// started ahead of lb takes no address.
#[test]
fn ha_pair_survives_master_crash_and_failback() {
    let test = "ha_pair_survives_master_crash_and_failback";
    if !root_or_skip(test) || !lb_or_skip(test) || !keepalived_or_skip(test) {
        return;
    }
    let _serial = serial();
    let lab =
        HaLab::create(Path::new(env!("CARGO_BIN_EXE_cp-sim")), &default_lb_bin()).expect("HA lab");
    lab.start_nodes().expect("nodes");
    let advert = advert_int();
    let init = lab.run_init(advert).expect("lb init");
    let printed = String::from_utf8_lossy(&init.stdout).into_owned();
    println!("lb init (advert_int {advert:?}):\n{printed}");
    for want in [
        "lb.toml: lb check OK",
        "keepalived-ga.conf: keepalived -t OK",
        "keepalived-gb.conf: keepalived -t OK",
        "ip route replace default via 198.18.2.1",
    ] {
        assert!(printed.contains(want), "lb init did not print {want:?}");
    }

    // The generated lb.toml passes the binary's own `lb check` too.
    let mut check = Command::new(lab.lb_bin());
    check
        .args(["check", "--config"])
        .arg(lab.init_dir().join("lb.toml"));
    let out = run_with_timeout(&mut check, Duration::from_secs(10)).expect("lb check");
    assert!(out.status.success(), "lb check: {}", stderr(&out));

    // Boot order: keepalived before lb. `lb healthz` fails, so neither
    // gateway takes the addresses (FAULT) until its data path is attached.
    for g in [Gw::A, Gw::B] {
        lab.start_keepalived(g).expect("keepalived");
    }
    thread::sleep(Duration::from_secs(3));
    for g in [Gw::A, Gw::B] {
        let held = lab.holds_floating(g).expect("ip addr");
        let states = lab.vrrp_transitions(g);
        println!(
            "{} without lb: floating addresses {held:?}, states {states:?}",
            g.name()
        );
        assert_eq!(
            held,
            (false, false),
            "{} took the addresses without lb",
            g.name()
        );
        assert!(
            states.iter().all(|l| !l.contains("MASTER")),
            "{} became master without lb: {states:?}",
            g.name()
        );
    }
    let started = Instant::now();
    for g in [Gw::A, Gw::B] {
        lab.start_lb(g, false).expect("lb");
    }
    lab.wait_master(Gw::A, Duration::from_secs(20))
        .expect("ga master");
    println!("ga master {:?} after the lbs started", started.elapsed());
    // Let the backup settle into BACKUP before anything else happens. (At
    // start-up gb may be master for a moment, when its track script passes
    // first; ga then preempts it.)
    thread::sleep(Duration::from_secs(1));
    let settled = lab.vrrp_transitions(Gw::B).len();

    let vip = SocketAddrV4::new(VIP, KUBE_API_PORT);
    let prober = start_prober(&lab, vip);
    let streams = open_streams(&lab, vip, 5);
    let before = Instant::now();
    // `LB_HA_STEADY_SECS` lengthens the steady phase, to check an
    // advert_int for flapping on a loaded machine.
    let steady = std::env::var("LB_HA_STEADY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    thread::sleep(Duration::from_secs(steady));
    let baseline = Outage::measure(&prober.attempts(), before, Instant::now(), PROBE_PERIOD);
    assert_eq!(
        baseline.failed, 0,
        "failures before the crash: {:?}",
        baseline.errors
    );
    assert_eq!(baseline.nodes.len(), HA_NODES, "{:?}", baseline.nodes);

    // Stable election: the backup never became master (no flapping at
    // this advert_int on a busy machine).
    let flaps: Vec<String> = lab
        .vrrp_transitions(Gw::B)
        .into_iter()
        .skip(settled)
        .filter(|l| l.contains("MASTER"))
        .collect();
    assert!(
        flaps.is_empty(),
        "gb became master while ga was up: {flaps:?}"
    );

    // Scenario 1: the master crashes.
    let t_crash = Instant::now();
    lab.crash(Gw::A).expect("crashing ga");
    let takeover = lab
        .wait_master(Gw::B, Duration::from_secs(15))
        .expect("gb takes over");
    thread::sleep(Duration::from_secs(6).saturating_sub(t_crash.elapsed()));
    let crash = Outage::measure(&prober.attempts(), t_crash, Instant::now(), PROBE_PERIOD);
    report("master crash", takeover, &crash);
    let intact_crash = finish_streams("master crash", streams);

    // Scenario 2: ga comes back (as after a reboot) and takes over again.
    let streams = open_streams(&lab, vip, 5);
    lab.reboot(Gw::A).expect("rebooting ga");
    lab.start_lb(Gw::A, true).expect("lb on ga again");
    let t_back = Instant::now();
    lab.start_keepalived(Gw::A).expect("keepalived on ga again");
    let takeback = lab
        .wait_master(Gw::A, Duration::from_secs(20))
        .expect("ga takes back");
    thread::sleep(Duration::from_secs(3));
    let failback = Outage::measure(&prober.attempts(), t_back, Instant::now(), PROBE_PERIOD);
    report("failback (preempt)", takeback, &failback);
    let intact_failback = finish_streams("failback", streams);

    // Scenario 3: lb stops on the master (keepalived still runs): `lb
    // healthz` fails and the track script hands the addresses over.
    let streams = open_streams(&lab, vip, 5);
    let t_stop = Instant::now();
    lab.stop_lb(Gw::A).expect("stopping lb on ga");
    let handover = lab
        .wait_master(Gw::B, Duration::from_secs(15))
        .expect("gb takes over when ga's lb stops");
    let handover = t_stop.elapsed().max(handover);
    thread::sleep(Duration::from_secs(3));
    let stopped = Outage::measure(&prober.attempts(), t_stop, Instant::now(), PROBE_PERIOD);
    report("lb stopped on the master", handover, &stopped);
    let intact_stopped = finish_streams("lb stopped", streams);

    for g in [Gw::A, Gw::B] {
        println!(
            "keepalived {} transitions: {:#?}",
            g.name(),
            lab.vrrp_transitions(g)
        );
    }
    let all = prober.finish().expect("prober");
    let tail: Vec<_> = all
        .iter()
        .rev()
        .take(20)
        .filter(|a| a.result.is_err())
        .collect();
    println!(
        "SUMMARY advert_int {advert:?}: master crash: streams {intact_crash}/5, takeover {takeover:?}, \
         new-connection outage {:?} ({} of {} attempts failed); failback: streams {intact_failback}/5, \
         takeover {takeback:?}, outage {:?} ({} of {} failed)",
        crash.outage, crash.failed, crash.attempts, failback.outage, failback.failed, failback.attempts
    );
    assert_eq!(intact_crash, 5, "streams broken by the master crash");
    assert_eq!(intact_failback, 5, "streams broken by the failback");
    println!(
        "SUMMARY lb stopped on the master: streams {intact_stopped}/5, takeover {handover:?}, \
         outage {:?} ({} of {} failed)",
        stopped.outage, stopped.failed, stopped.attempts
    );
    assert_eq!(
        intact_stopped, 5,
        "streams broken when lb stopped on the master"
    );
    assert!(
        stopped.outage < Duration::from_secs(5),
        "outage {:?}",
        stopped.outage
    );
    assert!(
        crash.outage < Duration::from_secs(5),
        "crash outage {:?}",
        crash.outage
    );
    assert!(
        failback.outage < Duration::from_secs(5),
        "failback outage {:?}",
        failback.outage
    );
    assert!(
        tail.is_empty(),
        "new connections still failing at the end: {tail:?}"
    );
}

/// Issue 12, "failover that tolerates disagreement": the survivor's own
/// checks to one serving node are filtered (they time out), so it thinks
/// that node is down when it takes over. The streams on that node survive
/// anyway: their mid-flow packets go by the mid-flow table (every node not
/// proven dead), and once the node answers they stay on it. Before that
/// table, the survivor re-hashed them onto its healthy table and they were
/// reset (3 of 5 survived).
#[test]
fn ha_pair_survives_takeover_by_a_gateway_that_disagrees() {
    disagreement(
        "ha_pair_survives_takeover_by_a_gateway_that_disagrees",
        "drop",
    );
}

/// Issue 20: the same with the survivor's checks rejected by a TCP RST (a
/// host firewall's reject): before, the refusal counted as proof of death
/// and the node's streams were reset at takeover (3/5).
#[test]
fn ha_pair_survives_takeover_when_the_survivors_checks_are_reset() {
    disagreement(
        "ha_pair_survives_takeover_when_the_survivors_checks_are_reset",
        "reject with tcp reset",
    );
}

/// Issue 20: the same with the survivor's checks rejected by ICMP
/// admin-prohibited (nft's and firewalld's default reject).
#[test]
fn ha_pair_survives_takeover_when_the_survivors_checks_are_admin_prohibited() {
    disagreement(
        "ha_pair_survives_takeover_when_the_survivors_checks_are_admin_prohibited",
        "reject with icmp type admin-prohibited",
    );
}

/// Five streams survive a takeover by gb, whose checks to cp-02 meet
/// `verdict` while ga's pass.
fn disagreement(test: &str, verdict: &str) {
    let Some((_serial, lab)) = running_pair(test) else {
        return;
    };

    let vip = SocketAddrV4::new(VIP, KUBE_API_PORT);
    let victim = HaLab::node_name(2);
    // Five streams, at least two of them on the node gb will disagree about.
    let mut streams = Vec::new();
    let mut others = 0;
    for _ in 0..60 {
        if streams.len() == 5 {
            break;
        }
        let s = open_streams(&lab, vip, 1).remove(0);
        if s.node() == victim || others < 3 {
            others += usize::from(s.node() != victim);
            streams.push(s);
        } else {
            s.finish();
        }
    }
    assert_eq!(streams.len(), 5, "could not place two streams on {victim}");

    lab.filter_checks_with(Gw::B, 2, verdict)
        .expect("filtering gb's checks");
    let start = Instant::now();
    while lab
        .backend_health(Gw::B, "kubernetes-api", &victim)
        .expect("gb status")
        != "down"
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "gb never saw {victim} down"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        lab.backend_health(Gw::A, "kubernetes-api", &victim)
            .expect("ga status"),
        "up"
    );
    // gb says so truthfully: down, no new flows, but keeps flows (what its
    // checks meet does not prove the node dead).
    let b = lab
        .backend_status(Gw::B, "kubernetes-api", &victim)
        .expect("gb status");
    assert_eq!(b["serving"], false, "{b}");
    assert_eq!(b["keeps_flows"], true, "{b}");

    let prober = start_prober(&lab, vip);
    thread::sleep(Duration::from_millis(500));
    let t_crash = Instant::now();
    lab.crash(Gw::A).expect("crashing ga");
    let takeover = lab
        .wait_master(Gw::B, Duration::from_secs(15))
        .expect("gb takes over");
    thread::sleep(Duration::from_secs(4));
    let outage = Outage::measure(&prober.attempts(), t_crash, Instant::now(), PROBE_PERIOD);
    report("takeover by a disagreeing gateway", takeover, &outage);
    prober.finish().expect("prober");
    let intact = finish_streams("takeover by a disagreeing gateway", streams);
    println!(
        "SUMMARY takeover by a gateway that calls {victim} down (checks: {verdict}): streams \
         {intact}/5, takeover {takeover:?}, new-connection outage {:?} ({} of {} attempts failed)",
        outage.outage, outage.failed, outage.attempts
    );
    assert_eq!(
        intact, 5,
        "streams broken by a takeover with different health views"
    );
}

/// A pair from `lb init`'s files with lb and keepalived running on both
/// gateways and ga master, or `None` when the test must skip.
fn running_pair(test: &str) -> Option<(MutexGuard<'static, ()>, HaLab)> {
    if !root_or_skip(test) || !lb_or_skip(test) || !keepalived_or_skip(test) {
        return None;
    }
    let serial = serial();
    let lab =
        HaLab::create(Path::new(env!("CARGO_BIN_EXE_cp-sim")), &default_lb_bin()).expect("HA lab");
    lab.start_nodes().expect("nodes");
    lab.run_init(advert_int()).expect("lb init");
    for g in [Gw::A, Gw::B] {
        lab.start_lb(g, false).expect("lb");
        lab.start_keepalived(g).expect("keepalived");
    }
    lab.wait_master(Gw::A, Duration::from_secs(20))
        .expect("ga master");
    Some((serial, lab))
}

/// `n` connections through the VIP from the client namespace: the node each
/// reached (failed attempts are left out).
fn reached(lab: &HaLab, vip: SocketAddrV4, n: usize) -> Vec<String> {
    run_in_netns(&lab.client_ns(), || {
        (0..n)
            .filter_map(|_| connect_and_name(vip, Duration::from_secs(1)).ok())
            .collect::<Vec<_>>()
    })
    .expect("client namespace")
}

/// One drain for the pair: `drained = true` on a backend in the shared
/// lb.toml, applied by `lb reload` on each gateway, keeps new flows off that
/// node whichever gateway is master.
#[test]
fn a_drain_in_the_shared_config_holds_on_both_gateways() {
    let Some((_serial, lab)) = running_pair("a_drain_in_the_shared_config_holds_on_both_gateways")
    else {
        return;
    };
    let vip = SocketAddrV4::new(VIP, KUBE_API_PORT);
    let victim = HaLab::node_name(2);
    let before = reached(&lab, vip, 30);
    assert!(
        before.contains(&victim),
        "{victim} takes flows before the drain: {before:?}"
    );

    // The operator's one action: the shared file, reloaded on both.
    for g in [Gw::A, Gw::B] {
        let cfg = lab.dir().join(format!("lb-{}.toml", g.name()));
        let text = std::fs::read_to_string(&cfg).expect("gateway config");
        let mut out = String::new();
        let mut in_victim = false;
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            if line.trim() == format!("name = \"{victim}\"") {
                in_victim = true;
            } else if in_victim && line.starts_with("address") {
                out.push_str("drained = true\n");
                in_victim = false;
            }
        }
        assert!(
            out.contains("drained = true"),
            "no backend {victim} in {text}"
        );
        std::fs::write(&cfg, out).expect("writing the config");
        let mut reload = Command::new(lab.lb_bin());
        reload.arg("reload").arg("--socket").arg(lab.socket(g));
        let o = run_with_timeout(&mut reload, Duration::from_secs(10)).expect("lb reload");
        assert!(
            o.status.success(),
            "lb reload on {}: {}",
            g.name(),
            stderr(&o)
        );
    }

    let via_a = reached(&lab, vip, 40);
    assert!(via_a.len() >= 35, "connections through ga: {via_a:?}");
    assert!(
        !via_a.contains(&victim),
        "ga sent new flows to the drained {victim}: {via_a:?}"
    );

    lab.crash(Gw::A).expect("crashing ga");
    lab.wait_master(Gw::B, Duration::from_secs(15))
        .expect("gb takes over");
    thread::sleep(Duration::from_millis(500));
    let via_b = reached(&lab, vip, 40);
    assert!(via_b.len() >= 35, "connections through gb: {via_b:?}");
    assert!(
        !via_b.contains(&victim),
        "gb sent new flows to the drained {victim}: {via_b:?}"
    );
    println!(
        "drained {victim} by configuration: 0 of {} new connections through ga, 0 of {} through gb",
        via_a.len(),
        via_b.len()
    );
}
