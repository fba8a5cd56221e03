//! Lifecycle without dropped connections: hot reload, draining, restart
//! (`kill -9` and adoption of the pinned data path) and clean stop. Each
//! scenario keeps a long-lived stream through the VIP and checks that every
//! byte comes back, in order, with no reset.
//!
//! Root and a built `lb` are needed; without them the tests skip (and fail
//! under `CI=true`).

use std::net::SocketAddrV4;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::checks::{assert_cut_off_after_delay, assert_intact, ctl_ok, stream_on};
use lb_tests::{
    connect_and_name, netns_ready, spread, status_backend, HealthSettings, Lab, Stream,
    KUBE_API_PORT,
};

/// The tests measure timings; one at a time keeps them from skewing each other.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_lab() -> Lab {
    Lab::serving(env!("CARGO_BIN_EXE_cp-sim"))
}

/// The lab's configuration with each listener limited to `backends`, plus
/// extra lines for every listener and for `[dataplane]`.
fn config(lab: &Lab, backends: &[&str], listener_extra: &str, dataplane_extra: &str) -> String {
    let list = backends
        .iter()
        .map(|b| format!("\"{b}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = String::new();
    for line in lab.config_toml_with(HealthSettings::default()).lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("port = ") {
            out.push_str(&format!("backends = [{list}]\n{listener_extra}"));
        }
        if line.starts_with("xdp_mode = ") {
            out.push_str(dataplane_extra);
        }
    }
    out
}

const ALL: [&str; 3] = ["cp-01", "cp-02", "cp-03"];

/// A lab whose lb balances over every node.
fn lab_with_lb() -> (Lab, [&'static str; 3]) {
    let lab = new_lab();
    lab.start_lb(&config(&lab, &ALL, "", ""))
        .expect("starting lb");
    (lab, ALL)
}

fn vip(lab: &Lab) -> SocketAddrV4 {
    lab.vip_addr(KUBE_API_PORT)
}

/// Makes one connection every 50 ms (at most `limit`) until one reaches `node`.
fn time_until_reached(lab: &Lab, node: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let name = lab
            .in_ns(&lab.client_ns(), || {
                connect_and_name(vip(lab), Duration::from_secs(1))
            })
            .ok()
            .and_then(Result::ok);
        if name.as_deref() == Some(node) {
            return Some(t0.elapsed());
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn reloads_keep_established_streams() {
    if !netns_ready("reloads_keep_established_streams") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    lab.start_lb(&config(&lab, &["cp-01", "cp-02"], "", ""))
        .expect("starting lb");
    let stream = stream_on(&lab, vip(&lab), "cp-01");

    // Reload that adds a backend: it must pass its checks, then takes flows.
    std::fs::write(
        lab.lb_config_path(),
        config(&lab, &["cp-01", "cp-02", "cp-03"], "", ""),
    )
    .unwrap();
    let t0 = Instant::now();
    let out = ctl_ok(&lab, &["reload"]);
    eprintln!("reload (add cp-03): {}", out.trim());
    time_until_reached(&lab, "cp-03", Duration::from_secs(10))
        .expect("cp-03 gets new connections after the reload");
    let since_reload = t0.elapsed();
    eprintln!(
        "reload (add cp-03): first connection on cp-03 {since_reload:?} after the reload request"
    );
    assert!(
        since_reload >= Duration::from_millis(450),
        "an added backend takes flows only after healthy_threshold checks"
    );

    // Reload that removes a different backend: no new flows for it.
    std::fs::write(
        lab.lb_config_path(),
        config(&lab, &["cp-01", "cp-03"], "", ""),
    )
    .unwrap();
    let out = ctl_ok(&lab, &["reload"]);
    eprintln!("reload (remove cp-02): {}", out.trim());
    let s = spread(&lab, &lab.client_ns(), vip(&lab), 60).unwrap();
    assert_eq!(s.failures, 0, "{:?}", s.errors);
    assert_eq!(
        s.count("cp-02"),
        0,
        "removed backend got new flows: {:?}",
        s.counts
    );
    assert!(
        s.count("cp-01") > 0 && s.count("cp-03") > 0,
        "{:?}",
        s.counts
    );

    // Reload with an invalid config: rejected whole, previous config kept.
    std::fs::write(
        lab.lb_config_path(),
        "[dataplane]\ninterfaces = [\"gwc\"]\nbogus_key = 1\n",
    )
    .unwrap();
    let out = lab.lb_ctl(&["reload"]).unwrap();
    assert!(
        !out.status.success(),
        "an invalid config must fail `lb reload`"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus_key"), "error names the key: {err}");
    let st = lab.lb_status().unwrap();
    assert_eq!(
        st["last_reload"]["ok"], false,
        "status reports the rejection"
    );
    let s = spread(&lab, &lab.client_ns(), vip(&lab), 30).unwrap();
    assert_eq!(s.failures, 0, "still serving: {:?}", s.errors);
    assert_eq!(s.count("cp-02"), 0);

    thread::sleep(Duration::from_millis(300));
    assert_intact("stream across three reloads", &stream.finish());
}

#[test]
fn restart_adopts_the_pinned_data_path() {
    if !netns_ready("restart_adopts_the_pinned_data_path") {
        return;
    }
    let _g = serial();
    let (lab, all) = lab_with_lb();
    let stream = Stream::open(&lab, &lab.client_ns(), vip(&lab)).expect("stream");
    let node = stream.node().to_string();

    // kill -9: no cleanup runs; the pinned data path keeps forwarding.
    lab.kill_lb().expect("kill -9");
    thread::sleep(Duration::from_millis(500));
    let s = spread(&lab, &lab.client_ns(), vip(&lab), 20).unwrap();
    assert_eq!(
        s.failures, 0,
        "no daemon, data path still balances: {:?}",
        s.errors
    );

    // A new daemon adopts the pinned maps and link (conntrack included).
    lab.start_lb(&config(&lab, &all, "", "keep_attached = true\n"))
        .expect("restarting lb");
    assert!(
        lab.lb_log().contains("adopting the pinned data path"),
        "the new daemon adopted:\n{}",
        lab.lb_log()
    );
    let st = lab.lb_status().unwrap();
    let b = status_backend(&st, "kubernetes-api", &node).expect("backend in status");
    assert!(
        b["tracked_flows"].as_u64().unwrap_or(0) >= 1,
        "the stream's flow survived in conntrack: {b}"
    );

    // SIGTERM with keep_attached: the data path stays; the next run adopts it.
    let st = lab.stop_lb().expect("SIGTERM");
    assert!(st.success(), "clean exit: {st}");
    let s = spread(&lab, &lab.client_ns(), vip(&lab), 10).unwrap();
    assert_eq!(s.failures, 0, "kept attached after SIGTERM: {:?}", s.errors);
    lab.start_lb(&config(&lab, &all, "", ""))
        .expect("third run");
    assert!(lab.lb_log().contains("adopting the pinned data path"));
    thread::sleep(Duration::from_millis(300));
    assert_intact("stream across kill -9 and two restarts", &stream.finish());

    // SIGTERM without keep_attached: detached, pins removed, host clean.
    assert!(lab.stop_lb().expect("SIGTERM").success());
    let pins = lab.bpffs_dir().join("lb");
    assert!(
        !pins.exists(),
        "pins removed: {:?}",
        std::fs::read_dir(&pins).ok()
    );
    let gone = lab
        .in_ns(&lab.client_ns(), || {
            connect_and_name(vip(&lab), Duration::from_millis(500))
        })
        .unwrap();
    assert!(
        gone.is_err(),
        "the VIP no longer answers after a clean stop"
    );
}

#[test]
fn drain_wait_cut_off_and_undrain() {
    if !netns_ready("drain_wait_cut_off_and_undrain") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let all = ["cp-01", "cp-02", "cp-03"];
    lab.start_lb(&config(&lab, &all, "deregistration_delay = \"3s\"\n", ""))
        .expect("starting lb");
    let keep = stream_on(&lab, vip(&lab), "cp-01");
    let short = stream_on(&lab, vip(&lab), "cp-02");

    // Drain cp-02 with --wait: returns once its one flow has ended, before
    // the deregistration delay.
    let closer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1000));
        short.finish()
    });
    let t0 = Instant::now();
    let out = ctl_ok(&lab, &["drain", "cp-02", "--wait", "--timeout", "20s"]);
    let waited = t0.elapsed();
    eprintln!("drain --wait returned after {waited:?}: {}", out.trim());
    assert!(
        waited >= Duration::from_millis(800),
        "it waited for the flow"
    );
    assert!(
        waited < Duration::from_secs(3),
        "it did not wait for the delay"
    );
    assert_intact(
        "the drained node's own stream until it closed",
        &closer.join().unwrap(),
    );
    let s = spread(&lab, &lab.client_ns(), vip(&lab), 40).unwrap();
    assert_eq!(s.failures, 0);
    assert_eq!(
        s.count("cp-02"),
        0,
        "drained node got new flows: {:?}",
        s.counts
    );
    let st = lab.lb_status().unwrap();
    assert_eq!(st["drained_nodes"][0], "cp-02");

    // Drain cp-03 while it carries a stream: the stream continues, new
    // connections go elsewhere, and after the delay the flow is cut off.
    let victim = stream_on(&lab, vip(&lab), "cp-03");
    let t_drain = Instant::now();
    ctl_ok(&lab, &["drain", "cp-03"]);
    let s = spread(&lab, &lab.client_ns(), vip(&lab), 30).unwrap();
    assert_eq!(
        s.count("cp-01"),
        30,
        "only cp-01 takes new flows: {:?}",
        s.counts
    );
    thread::sleep(Duration::from_secs(5).saturating_sub(t_drain.elapsed()));
    assert_cut_off_after_delay("the drained flow", &victim.finish());

    // Undrain: both take new connections again.
    ctl_ok(&lab, &["undrain", "cp-02"]);
    ctl_ok(&lab, &["undrain", "cp-03"]);
    for node in ["cp-02", "cp-03"] {
        assert!(
            time_until_reached(&lab, node, Duration::from_secs(5)).is_some(),
            "{node} gets new connections after undrain"
        );
    }
    assert_intact("stream on another node through both drains", &keep.finish());
}

#[test]
fn control_socket_rejects_bad_requests() {
    if !netns_ready("control_socket_rejects_bad_requests") {
        return;
    }
    let _g = serial();
    let (lab, _) = lab_with_lb();
    use std::io::{BufRead, BufReader, Write};
    for bad in [
        "not json\n",
        "{\"cmd\":\"explode\"}\n",
        "{\"cmd\":\"drain\"}\n",
        "{\"cmd\":\"drain\",\"node\":\"no-such-node\"}\n",
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(lab.control_socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bad.as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON answer");
        assert_eq!(v["ok"], false, "{bad:?} -> {line}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let out = lab.lb_ctl(&["undrain", "no-such-node"]).unwrap();
    assert!(!out.status.success());
    // Still alive and serving.
    let st = lab.lb_status().unwrap();
    assert_eq!(st["ready"], true);
    let s = spread(&lab, &lab.client_ns(), vip(&lab), 10).unwrap();
    assert_eq!(s.failures, 0);
}

#[test]
fn layout_change_takes_over_the_link_with_fresh_maps() {
    if !netns_ready("layout_change_takes_over_the_link_with_fresh_maps") {
        return;
    }
    let _g = serial();
    let (lab, all) = lab_with_lb();
    let stream = Stream::open(&lab, &lab.client_ns(), vip(&lab)).expect("stream");
    lab.kill_lb().expect("kill -9");

    // Pretend the running data path was pinned by a build with another map
    // layout: its maps must not be reused, its links must be taken over.
    let pins = lab.bpffs_dir().join("lb");
    let current = pins.join(lb::dataplane::maps::layout_dir_name());
    std::fs::rename(current, pins.join("v0")).expect("renaming the pin directory");
    lab.start_lb(&config(&lab, &all, "", ""))
        .expect("starting the new layout");
    let log = lab.lb_log();
    assert!(
        !log.contains("adopting the pinned data path"),
        "maps of another layout are never adopted:\n{log}"
    );
    assert!(
        log.contains("XDP link adopted"),
        "links are taken over:\n{log}"
    );
    assert!(
        !pins.join("v0").exists(),
        "the old layout's pins are removed"
    );
    let s = spread(&lab, &lab.client_ns(), vip(&lab), 20).unwrap();
    assert_eq!(s.failures, 0, "{:?}", s.errors);
    // Fresh conntrack, but Maglev gives the flow the same backend and the
    // reply fallback restores the VIP: the stream survives.
    thread::sleep(Duration::from_millis(300));
    assert_intact("stream across a map layout change", &stream.finish());
}
