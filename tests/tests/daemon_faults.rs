//! Everyday reloads and faults that must not cause outages or blind the
//! daemon (issues 10 and 11, daemon side): a listener rename or target port
//! change, a health-timing change, a conntrack capacity change or a pinned
//! map of another layout at restart, a configuration path that is a FIFO
//! or a symlink to `/dev/zero`, and a second `lb run` on the same pins.
//!
//! Root and a built `lb` are needed; without them the tests skip (and fail
//! under `CI=true`).

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::{
    lab::{ns_exec, run_with_timeout},
    netns_ready, spread, status_backend, HealthSettings, Lab, Stream, KUBE_API_PORT,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_lab() -> Lab {
    Lab::serving(env!("CARGO_BIN_EXE_cp-sim"))
}

/// The lab's configuration with `deregistration_delay = "1s"` on every
/// listener and extra `[dataplane]` lines.
fn config(lab: &Lab, h: HealthSettings, dataplane_extra: &str) -> String {
    let mut out = String::new();
    for line in lab.config_toml_with(h).lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("port = ") {
            out.push_str("deregistration_delay = \"1s\"\n");
        }
        if line.starts_with("xdp_mode = ") {
            out.push_str(dataplane_extra);
        }
    }
    out
}

fn reload_with(lab: &Lab, text: &str) {
    std::fs::write(lab.lb_config_path(), text).expect("writing the config");
    let out = lab.lb_ctl(&["reload"]).expect("lb reload");
    assert!(
        out.status.success(),
        "reload failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn no_failures(lab: &Lab, what: &str) {
    let s = spread(lab, &lab.client_ns(), lab.vip_addr(KUBE_API_PORT), 30).expect("connections");
    assert_eq!(s.failures, 0, "{what}: {:?}", s.errors);
}

/// Issue 10, defect 1: a rename, then a target port change, each followed
/// by the old mapping's drain, keep the VIP:port serving.
#[test]
fn rename_and_target_port_change_keep_the_vip_serving() {
    if !netns_ready("rename_and_target_port_change_keep_the_vip_serving") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let base = config(&lab, HealthSettings::default(), "");
    lab.start_lb(&base).expect("starting lb");
    no_failures(&lab, "before");

    let renamed = base.replace("name = \"kubernetes-api\"", "name = \"kube-renamed\"");
    assert_ne!(renamed, base);
    reload_with(&lab, &renamed);
    // Past the old name's deregistration delay (1 s).
    thread::sleep(Duration::from_millis(2500));
    no_failures(&lab, "after a rename and the old name's drain");

    // cp-sim serves the same on 50000: move 6443's backends there.
    let moved = renamed.replace(
        &format!("port = {KUBE_API_PORT}\n"),
        &format!("port = {KUBE_API_PORT}\ntarget_port = 50000\n"),
    );
    assert_ne!(moved, renamed);
    let stream = Stream::open(&lab, &lab.client_ns(), lab.vip_addr(KUBE_API_PORT)).expect("stream");
    reload_with(&lab, &moved);
    no_failures(&lab, "right after a target_port change");
    thread::sleep(Duration::from_millis(2500));
    no_failures(&lab, "after the old target port's drain");
    let st = lab.lb_status().unwrap();
    let l = st["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["port"] == KUBE_API_PORT)
        .expect("the listener");
    assert_eq!(l["name"], "kube-renamed");
    assert_eq!(l["target_port"], 50000);
    assert_eq!(l["retired"], false);
    // The stream drained on 6443 and was cut off after the delay, as a
    // removed backend's are: that is the documented cost of a port change.
    let _ = stream.finish();
}

/// Issue 10, defect 2: changing health timing keeps every backend up and
/// its history; nothing fails open.
#[test]
fn health_timing_change_keeps_state_and_history() {
    if !netns_ready("health_timing_change_keeps_state_and_history") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let h = HealthSettings::default();
    lab.start_lb(&config(&lab, h, "")).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10)).unwrap();
    // One transition in cp-01's history: down, then up again.
    lab.stop_backend(1).unwrap();
    let t0 = Instant::now();
    while lab.backend_health("kubernetes-api", "cp-01").unwrap() != "down" {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "cp-01 never went down"
        );
        thread::sleep(Duration::from_millis(100));
    }
    lab.start_backend(1).unwrap();
    lab.wait_backends_up(Duration::from_secs(10)).unwrap();
    let before = lab.lb_status().unwrap();
    let history = |st: &serde_json::Value| {
        status_backend(st, "kubernetes-api", "cp-01").unwrap()["transitions"].clone()
    };
    let log_before = lab.lb_log().len();

    let slower = HealthSettings {
        interval: Duration::from_millis(600),
        ..h
    };
    reload_with(&lab, &config(&lab, slower, ""));
    for _ in 0..8 {
        let st = lab.lb_status().unwrap();
        for l in st["listeners"].as_array().unwrap() {
            assert_eq!(l["fail_open"], false, "{l}");
            for b in l["backends"].as_array().unwrap() {
                assert_eq!(b["health"], "up", "{b}");
                assert_eq!(b["serving"], true, "{b}");
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    let after = lab.lb_status().unwrap();
    assert_eq!(history(&after), history(&before), "history kept");
    let log = lab.lb_log();
    let new_lines = &log[log_before..];
    assert!(
        !new_lines.contains("backend down") && !new_lines.contains("failing open"),
        "{new_lines}"
    );
    no_failures(&lab, "after a timing change");
}

/// Issue 10, defect 5: a conntrack capacity change at restart is reported,
/// and a pinned map whose value size differs (conntrack values grew once
/// without a version bump) is never adopted.
#[test]
fn capacity_change_is_reported_and_a_mismatched_pin_is_not_adopted() {
    if !netns_ready("capacity_change_is_reported_and_a_mismatched_pin_is_not_adopted") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let keep = "keep_attached = true\nconntrack_capacity = 4096\n";
    lab.start_lb(&config(&lab, HealthSettings::default(), keep))
        .expect("starting lb");
    assert!(lab.stop_lb().unwrap().success());
    let bigger = "keep_attached = true\nconntrack_capacity = 8192\n";
    lab.start_lb(&config(&lab, HealthSettings::default(), bigger))
        .expect("restarting lb");
    let st = lab.lb_status().unwrap();
    let notes = st["dataplane_notes"].to_string();
    assert!(
        notes.contains("conntrack_capacity = 8192 is not applied") && notes.contains("4096"),
        "capacity change reported: {notes}"
    );
    assert!(lab.stop_lb().unwrap().success());

    // Replace the pinned CT_FWD by a map with 24-byte values.
    let pins = lab.bpffs_dir().join("lb");
    let layout = pins.join(lb::dataplane::maps::layout_dir_name());
    let ct = layout.join("maps").join("CT_FWD");
    std::fs::remove_file(&ct).unwrap();
    pin_lru_map(&ct, 40, 24, 4096);
    lab.start_lb(&config(&lab, HealthSettings::default(), keep))
        .expect("lb starts with fresh maps instead of adopting a mismatched one");
    let log = lab.lb_log();
    assert!(log.contains("pinned maps do not fit this program"), "{log}");
    no_failures(&lab, "on fresh maps");
    let _ = lab.stop_lb();
}

/// Creates an LRU hash map and pins it at `path` (raw `bpf(2)`: the test
/// needs a map of a layout the program does not have).
fn pin_lru_map(path: &Path, key: u32, value: u32, entries: u32) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    let mut attr = [0u8; 128];
    for (i, v) in [BPF_MAP_TYPE_LRU_HASH, key, value, entries]
        .iter()
        .enumerate()
    {
        attr[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    // SAFETY: bpf(2) reads `attr`, which is large enough for the command.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_ptr(), 128u32) };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut attr = [0u8; 128];
    attr[0..8].copy_from_slice(&(cpath.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    // SAFETY: as above; `cpath` outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, attr.as_ptr(), 128u32) };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: closing the fd we created; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

/// Waits (at most `limit`) until `lb status` shows `backend` down.
fn wait_down(lab: &Lab, backend: &str, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if lab
            .backend_health("kubernetes-api", backend)
            .ok()
            .as_deref()
            == Some("down")
        {
            return Some(t0.elapsed());
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Issue 11, finding 2: a configuration path that is a FIFO, or a symlink
/// to `/dev/zero`, is refused at once by `lb reload` and `lb check`, and a
/// node that fails meanwhile is still taken out within its check window.
#[test]
fn blocking_config_paths_are_refused_while_checks_go_on() {
    if !netns_ready("blocking_config_paths_are_refused_while_checks_go_on") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let text = config(&lab, HealthSettings::default(), "");
    lab.start_lb(&text).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10)).unwrap();
    let path = lab.lb_config_path();

    for (what, make) in [("a FIFO", "fifo"), ("a symlink to /dev/zero", "zero")] {
        std::fs::remove_file(&path).unwrap();
        match make {
            "fifo" => {
                let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }
            _ => std::os::unix::fs::symlink("/dev/zero", &path).unwrap(),
        }
        let t0 = Instant::now();
        let out = lab.lb_ctl(&["reload"]).expect("lb reload");
        let took = t0.elapsed();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{what}: reload must fail: {said}");
        assert!(said.contains("not a regular file"), "{what}: {said}");
        assert!(
            took < Duration::from_secs(2),
            "{what}: reload took {took:?}"
        );
        let mut check = Command::new(lab.lb_bin());
        check.arg("check").arg("--config").arg(&path);
        let out = run_with_timeout(&mut check, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{what}: lb check hangs: {e:#}"));
        assert!(!out.status.success(), "{what}: lb check must fail");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &text).unwrap();
    }

    // A reload blocked on a FIFO with a writer that never finishes cannot
    // happen (the FIFO is refused before reading): the daemon goes on
    // checking. Fail a node while a FIFO sits at the path and reloads are
    // requested.
    std::fs::remove_file(&path).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    lab.stop_backend(2).unwrap();
    for _ in 0..3 {
        let _ = lab.lb_ctl(&["reload"]);
    }
    // interval 500 ms × unhealthy_threshold 2, plus a timeout's slack.
    let took = wait_down(&lab, "cp-02", Duration::from_secs(3));
    assert!(took.is_some(), "cp-02 taken out within its check window");
    let st = lab.lb_status().unwrap();
    assert_eq!(st["last_reload"]["ok"], false);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, &text).unwrap();
    let _ = lab.stop_lb();
}

/// The XDP program ids attached to the gateway's interfaces.
fn xdp_progs(lab: &Lab) -> String {
    let mut out = String::new();
    for iface in lab.gateway_interfaces() {
        let o = ns_exec(&lab.gateway_ns(), ["ip", "link", "show", "dev", iface]).unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let prog = text
            .split_whitespace()
            .skip_while(|w| !w.starts_with("prog/xdp"))
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(!prog.is_empty(), "{iface} has an XDP program: {text}");
        out.push_str(&format!("{iface}: {prog}\n"));
    }
    out
}

/// Issue 11, finding 7: a second `lb run` on the same pins fails at once
/// and changes nothing: the first keeps its programs and keeps serving.
#[test]
fn a_second_run_fails_at_once_and_changes_nothing() {
    if !netns_ready("a_second_run_fails_at_once_and_changes_nothing") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let text = config(&lab, HealthSettings::default(), "");
    lab.start_lb(&text).expect("starting lb");
    let progs = xdp_progs(&lab);
    let other = lab.dir().join("second.toml");
    // Another API port and socket: only the pin path is shared.
    let second = text
        .replace(
            &format!("socket = \"{}\"", lab.control_socket().display()),
            &format!("socket = \"{}\"", lab.dir().join("second.sock").display()),
        )
        .replace("listen = \"127.0.0.1:9542\"", "listen = \"127.0.0.1:9543\"");
    std::fs::write(&other, second).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.gateway_ns()])
        .arg(lab.lb_bin())
        .arg("run")
        .arg("--config")
        .arg(&other);
    let t0 = Instant::now();
    let out = run_with_timeout(&mut cmd, Duration::from_secs(10)).expect("second lb run ends");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second run must fail: {said}");
    assert!(said.contains("another `lb run`"), "{said}");
    assert!(t0.elapsed() < Duration::from_secs(3), "fails at once");
    assert_eq!(xdp_progs(&lab), progs, "the running programs are untouched");
    let st = lab.lb_status().unwrap();
    assert_eq!(st["ready"], true);
    no_failures(&lab, "after a second run was refused");
    assert!(lab.stop_lb().unwrap().success());
}

/// Issue 11, finding 1: a start-up that fails changes nothing in the
/// running data path. A daemon left the data path attached (kill -9); the
/// next `lb run` names one more interface, listed last, that refuses native
/// XDP (a bridge device). It must fail without having replaced the program
/// on the interfaces that were forwarding, and the stream goes on.
#[test]
fn a_failed_start_up_leaves_the_running_data_path_as_it_was() {
    if !netns_ready("a_failed_start_up_leaves_the_running_data_path_as_it_was") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let text = config(&lab, HealthSettings::default(), "keep_attached = true\n");
    lab.start_lb(&text).expect("starting lb");
    let stream = Stream::open(&lab, &lab.client_ns(), lab.vip_addr(KUBE_API_PORT)).unwrap();
    let progs = xdp_progs(&lab);
    lab.kill_lb().expect("kill -9");

    ns_exec(
        &lab.gateway_ns(),
        ["ip", "link", "add", "lbdummy", "type", "bridge"],
    )
    .unwrap();
    ns_exec(&lab.gateway_ns(), ["ip", "link", "set", "lbdummy", "up"]).unwrap();
    let bad: String = text
        .lines()
        .map(|l| {
            if l.starts_with("interfaces = ") {
                l.replace(']', ", \"lbdummy\"]")
            } else if l.starts_with("xdp_mode = ") {
                "xdp_mode = \"native\"".to_string()
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert!(bad.contains("\"lbdummy\"]"), "{bad}");
    let path = lab.dir().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.gateway_ns()])
        .arg(lab.lb_bin())
        .args(["run", "--config"])
        .arg(&path);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(20)).expect("lb run ends");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the start-up must fail: {said}");
    assert!(
        said.contains("lbdummy"),
        "the error names the interface: {said}"
    );
    assert_eq!(
        xdp_progs(&lab),
        progs,
        "the failed start-up replaced the running program"
    );
    no_failures(&lab, "after a failed start-up");

    // The next good start adopts it all; the stream never noticed.
    lab.start_lb(&text).expect("restarting lb");
    thread::sleep(Duration::from_millis(300));
    let r = stream.finish();
    assert!(r.errors.is_empty(), "stream errors {:?}", r.errors);
    assert_eq!(r.bytes_echoed, r.bytes_sent, "bytes lost");
    assert!(lab.stop_lb().unwrap().success());
}

/// One `status` request over the control socket (what `lb status` sends),
/// timed.
fn timed_status(lab: &Lab) -> (Duration, serde_json::Value) {
    use std::io::{BufRead, BufReader, Write};
    let t0 = Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(lab.control_socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let took = t0.elapsed();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ok"], true, "{line}");
    (took, v["data"].clone())
}

/// Issue 10, finding 6: `lb status` answers in under 50 ms while 200k flows
/// are tracked (the flow counts come from the background scanner), and the
/// counts do arrive.
#[test]
fn status_stays_fast_with_200k_tracked_flows() {
    if !netns_ready("status_stays_fast_with_200k_tracked_flows") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    lab.start_lb(&config(&lab, HealthSettings::default(), ""))
        .expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10)).unwrap();
    let pins = lab.bpffs_dir().join("lb");
    let layout = pins.join(lb::dataplane::maps::layout_dir_name());
    let data =
        aya::maps::MapData::from_pin(layout.join("maps").join("CT_FWD")).expect("CT_FWD pin");
    let mut ct: aya::maps::HashMap<_, lb_common::FlowKey, lb_common::FwdEntry> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).unwrap();
    const FLOWS: u32 = 200_000;
    let now = lb::dataplane::counters::monotonic_ns();
    for i in 0..FLOWS {
        let key = lb_common::FlowKey {
            src: [
                u32::from_ne_bytes([198, 19, (i >> 16) as u8, (i >> 8) as u8]),
                0,
                0,
                0,
            ],
            dst: [u32::from_ne_bytes([198, 18, 100, 10]), 0, 0, 0],
            sport: ((i & 0xff) as u16 + 1024).to_be(),
            dport: KUBE_API_PORT.to_be(),
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        let value = lb_common::FwdEntry {
            real: i % 3,
            listener: 0,
            last_seen_ns: now,
            ..Default::default()
        };
        ct.insert(key, value, 0).expect("insert");
    }
    // Let the scanner go through the table at least once, then time.
    let t0 = Instant::now();
    let total = |st: &serde_json::Value| -> u64 {
        st["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["backends"].as_array().unwrap().iter())
            .map(|b| b["tracked_flows"].as_u64().unwrap_or(0))
            .sum()
    };
    loop {
        let (_, st) = timed_status(&lab);
        if total(&st) > u64::from(FLOWS) * 9 / 10 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "flows never counted: {st}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let (took, _) = timed_status(&lab);
        worst = worst.max(took);
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("lb status with {FLOWS} tracked flows: worst of 20 = {worst:?}");
    assert!(worst < Duration::from_millis(50), "status took {worst:?}");
    let _ = lab.stop_lb();
}

/// Issue 11, finding 8: a listener added by reload does not log "failing
/// open" at ERROR before its first checks (it does once they fail).
#[test]
fn a_listener_added_by_reload_is_not_an_error_before_its_checks() {
    if !netns_ready("a_listener_added_by_reload_is_not_an_error_before_its_checks") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let base = config(&lab, HealthSettings::default(), "");
    lab.start_lb(&base).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10)).unwrap();
    let from = lab.lb_log().len();
    // Nothing listens on 7443 on the nodes: new targets, failing checks.
    let added = format!(
        "{base}\n[[listener]]\nname = \"extra\"\nvip = \"{}\"\nport = 7443\n",
        lab.vip()
    );
    reload_with(&lab, &added);
    thread::sleep(Duration::from_millis(2000));
    let log = lab.lb_log();
    let lines: Vec<&str> = log[from..]
        .lines()
        .filter(|l| l.contains("extra") && (l.contains("fail") || l.contains("checked yet")))
        .collect();
    let first = lines
        .first()
        .unwrap_or_else(|| panic!("nothing logged: {}", &log[from..]));
    assert!(
        first.contains("INFO") && first.contains("no backend checked yet"),
        "before its first checks: {first}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("failing open")),
        "once checks fail it is an alarm: {lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("ERROR")).count(),
        1,
        "logged once: {lines:?}"
    );
    let _ = lab.stop_lb();
}

/// Issue 10 (keep-attached by default under systemd): a stop with
/// `--keep-attached` keeps forwarding; `lb detach` refuses while a daemon
/// runs and removes the data path once it is stopped.
#[test]
fn detach_removes_what_keep_attached_left() {
    if !netns_ready("detach_removes_what_keep_attached_left") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let text = config(&lab, HealthSettings::default(), "keep_attached = true\n");
    lab.start_lb(&text).expect("starting lb");
    let detach = || {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.gateway_ns()])
            .arg(lab.lb_bin())
            .arg("detach")
            .arg("--config")
            .arg(lab.lb_config_path());
        run_with_timeout(&mut cmd, Duration::from_secs(10)).expect("lb detach ends")
    };
    let out = detach();
    assert!(!out.status.success(), "refused while lb runs");
    no_failures(&lab, "after a refused detach");
    assert!(lab.stop_lb().unwrap().success());
    no_failures(&lab, "kept attached after the stop");
    let out = detach();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for iface in lab.gateway_interfaces() {
        let o = ns_exec(&lab.gateway_ns(), ["ip", "link", "show", "dev", iface]).unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(!text.contains("prog/xdp"), "{iface} detached: {text}");
    }
    assert!(!lab.bpffs_dir().join("lb").exists(), "pins removed");
}

/// CPU time (user + system, in clock ticks) of process `pid`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Health of `backend` under kubernetes-api, asked over the control socket.
fn health_via_socket(lab: &Lab, backend: &str) -> Option<String> {
    let (_, st) = timed_status(lab);
    status_backend(&st, "kubernetes-api", backend)
        .and_then(|b| b["health"].as_str())
        .map(str::to_string)
}

/// Issue 11, finding 4: 1,100 idle connections to the HTTP API with the
/// daemon under RLIMIT_NOFILE 1024 starve nothing: a failing node is still
/// taken out within its check window, `lb status` answers, and the accept
/// loop does not spin.
#[test]
fn idle_api_connections_cannot_starve_health_checks() {
    if !netns_ready("idle_api_connections_cannot_starve_health_checks") {
        return;
    }
    let _g = serial();
    // This test holds 1,100 sockets itself.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let lab = new_lab();
    let id = lab
        .start_lb(&config(&lab, HealthSettings::default(), ""))
        .expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10)).unwrap();
    let out = Command::new("prlimit")
        .arg(format!("--pid={}", id.0))
        .arg("--nofile=1024:1024")
        .output()
        .expect("prlimit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api: std::net::SocketAddr = lb_tests::LB_API.parse().unwrap();
    let idle: Vec<std::net::TcpStream> = lab
        .in_ns(&lab.gateway_ns(), || {
            (0..1100)
                .filter_map(|_| {
                    std::net::TcpStream::connect_timeout(&api, Duration::from_secs(1)).ok()
                })
                .collect()
        })
        .unwrap();
    assert!(idle.len() >= 1000, "only {} connections opened", idle.len());
    let ticks0 = cpu_ticks(id.0);
    let t0 = Instant::now();
    lab.stop_backend(2).unwrap();
    let mut down = None;
    while t0.elapsed() < Duration::from_secs(3) {
        if health_via_socket(&lab, "cp-02").as_deref() == Some("down") {
            down = Some(t0.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(down.is_some(), "cp-02 taken out within its check window");
    let (took, _) = timed_status(&lab);
    assert!(took < Duration::from_secs(1), "status took {took:?}");
    thread::sleep(Duration::from_secs(1));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (cpu_ticks(id.0) - ticks0) as f64 / hz / t0.elapsed().as_secs_f64();
    eprintln!(
        "{} idle API connections: cp-02 down after {:?}, daemon CPU {:.0}%",
        idle.len(),
        down.unwrap(),
        cpu * 100.0
    );
    assert!(cpu < 0.3, "the daemon spins: {:.0}% of a core", cpu * 100.0);
    drop(idle);
    let _ = lab.stop_lb();
}

/// `GET path` on the daemon's HTTP API (from the gateway namespace).
fn http_get(lab: &Lab, path: &str) -> String {
    use std::io::{Read, Write};
    let api: std::net::SocketAddr = lb_tests::LB_API.parse().unwrap();
    lab.in_ns(&lab.gateway_ns(), || {
        let mut s = std::net::TcpStream::connect_timeout(&api, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .unwrap()
}

/// The MAC address of the gateway's `gwb`.
fn gwb_mac(lab: &Lab) -> String {
    let o = ns_exec(&lab.gateway_ns(), ["cat", "/sys/class/net/gwb/address"]).unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Re-creates the gateway's backend-side veth as the lab built it, with
/// its old MAC address (as a re-created physical interface would have:
/// the nodes' ARP caches stay right).
fn recreate_gwb(lab: &Lab, mac: &str) {
    let (gw, sw) = (lab.gateway_ns(), lab.switch_ns());
    let run = |ns: &str, args: &[&str]| {
        let o = ns_exec(ns, args.iter().copied()).unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(
        &gw,
        &[
            "ip", "link", "add", "name", "gwb", "address", mac, "type", "veth", "peer", "name",
            "gw", "netns", &sw,
        ],
    );
    run(&sw, &["ip", "link", "set", "dev", "gw", "master", "br0"]);
    run(&sw, &["ip", "link", "set", "dev", "gw", "up"]);
    run(&sw, &["ethtool", "-K", "gw", "gro", "on"]);
    run(&gw, &["ip", "addr", "add", "198.18.2.1/24", "dev", "gwb"]);
    run(&gw, &["ethtool", "-K", "gwb", "gro", "on"]);
    run(&gw, &["ip", "link", "set", "dev", "gwb", "up"]);
}

/// Issue 11, finding 1: an interface deleted under the daemon is reported
/// at once (status, `/healthz`, `lb_xdp_attached`, `lb_ready`), re-attached
/// when re-created, a long-lived stream survives, and after `kill -9` the
/// next start takes over or replaces the links.
#[test]
fn a_deleted_interface_is_reported_and_reattached_when_back() {
    if !netns_ready("a_deleted_interface_is_reported_and_reattached_when_back") {
        return;
    }
    let _g = serial();
    let lab = new_lab();
    let text = config(&lab, HealthSettings::default(), "");
    lab.start_lb(&text).expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10)).unwrap();
    // The link is away for ~3 s: the stream waits for TCP to retransmit.
    let opts = lb_tests::StreamOptions {
        timeout: Duration::from_secs(15),
        ..Default::default()
    };
    let stream = Stream::open_with(&lab, &lab.client_ns(), lab.vip_addr(KUBE_API_PORT), opts)
        .expect("stream");
    thread::sleep(Duration::from_millis(300));

    let mac = gwb_mac(&lab);
    let o = ns_exec(&lab.gateway_ns(), ["ip", "link", "del", "gwb"]).unwrap();
    assert!(o.status.success());
    let t0 = Instant::now();
    loop {
        let (_, st) = timed_status(&lab);
        if st["missing_interfaces"].to_string().contains("gwb") {
            assert_eq!(st["ready"], false, "{st}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "not reported: {st}");
        thread::sleep(Duration::from_millis(20));
    }
    let healthz = http_get(&lab, "/healthz");
    assert!(
        healthz.contains("503") && healthz.contains("gwb"),
        "{healthz}"
    );
    let metrics = http_get(&lab, "/metrics");
    assert!(
        metrics.contains("lb_xdp_attached{interface=\"gwb\",mode=\"none\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("lb_ready 0"), "lb_ready 0");

    thread::sleep(Duration::from_secs(3));
    recreate_gwb(&lab, &mac);
    let t0 = Instant::now();
    loop {
        let (_, st) = timed_status(&lab);
        if st["ready"] == true && st["interfaces"].to_string().contains("gwb") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "not re-attached: {st}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let log = lab.lb_log();
    assert!(log.contains("interface vanished"), "{log}");
    assert!(log.contains("XDP re-attached"), "{log}");
    assert!(http_get(&lab, "/healthz").contains("200"));
    // The stream rides out the outage on TCP retransmissions (the next
    // retransmission may come up to ~3 s after the link is back).
    thread::sleep(Duration::from_secs(5));
    let r = stream.finish();
    assert!(
        r.errors.is_empty(),
        "stream errors {:?}; lb log:\n{}",
        r.errors,
        lab.lb_log()
    );
    assert_eq!(r.bytes_echoed, r.bytes_sent, "bytes lost");
    no_failures(&lab, "after the interface came back");

    // A crash, then a start on the pins: links taken over (or replaced).
    lab.kill_lb().unwrap();
    lab.start_lb(&text).expect("restart after kill -9");
    no_failures(&lab, "after kill -9 and restart");
    let _ = lab.stop_lb();
}

/// Issue 11, finding 8: a control request that is not UTF-8 gets an error
/// reply (and a TOML error is short: see the config unit tests).
#[test]
fn a_non_utf8_control_request_gets_an_error_reply() {
    if !netns_ready("a_non_utf8_control_request_gets_an_error_reply") {
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    let _g = serial();
    let lab = new_lab();
    lab.start_lb(&config(&lab, HealthSettings::default(), ""))
        .expect("starting lb");
    let mut s = std::os::unix::net::UnixStream::connect(lab.control_socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"{\"cmd\":\"st\xffatus\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .expect("an answer, not silence");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON answer");
    assert_eq!(v["ok"], false, "{line}");
    assert!(v["error"].as_str().unwrap().contains("UTF-8"), "{line}");
    let (_, st) = timed_status(&lab);
    assert_eq!(st["ready"], true);
    let _ = lab.stop_lb();
}
