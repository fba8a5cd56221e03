//! A daemon whose pins cannot outlive it says so. Under `ip netns exec`
//! (as the lab runs `lb`) the default `pin_path` lies on a bpffs mounted
//! inside the command's private mount namespace: it vanishes when the daemon
//! exits, so a restart would reset every flow. The daemon must warn at
//! start-up, in `lb status` and in `GET /status`; with a bpffs mounted in the
//! host's namespace (the lab's own, as every other lab test uses) it must not.
//!
//! Root and a built `lb` are needed; without them the tests skip (and fail
//! under `CI=true`).

use lb_tests::{netns_ready, HealthSettings, Lab};

fn new_lab() -> Lab {
    Lab::serving(env!("CARGO_BIN_EXE_cp-sim"))
}

const WARNING: &str = "pins will not survive a restart";

fn warnings(status: &serde_json::Value) -> Vec<String> {
    status["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn default_pin_path_under_ip_netns_exec_is_reported_as_not_persistent() {
    if !netns_ready("default_pin_path_under_ip_netns_exec_is_reported_as_not_persistent") {
        return;
    }
    let lab = new_lab();
    // The lab's config without its pin_path line: the default /sys/fs/bpf/lb.
    let config: String = lab
        .config_toml_with(HealthSettings::default())
        .lines()
        .filter(|l| !l.starts_with("pin_path"))
        .map(|l| format!("{l}\n"))
        .collect();
    lab.start_lb(&config).expect("starting lb");

    let log = lab.lb_log();
    assert!(log.contains(WARNING), "start-up log warns:\n{log}");
    assert!(
        log.contains("pin_path"),
        "the warning names the fix:\n{log}"
    );

    let st = lab.lb_status().expect("GET /status");
    let w = warnings(&st);
    assert!(
        w.iter().any(|w| w.contains(WARNING)),
        "GET /status carries the warning: {w:?}"
    );

    let out = lab.lb_ctl(&["status"]).expect("lb status");
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().next().unwrap_or("").starts_with("WARNING:") && table.contains(WARNING),
        "lb status shows the warning first:\n{table}"
    );
    assert!(lab.stop_lb().expect("SIGTERM").success());
}

#[test]
fn host_visible_bpffs_gives_no_warning() {
    if !netns_ready("host_visible_bpffs_gives_no_warning") {
        return;
    }
    let lab = new_lab();
    lab.start_lb(&lab.config_toml_with(HealthSettings::default()))
        .expect("starting lb");
    let st = lab.lb_status().expect("GET /status");
    assert_eq!(warnings(&st), Vec::<String>::new(), "no warning: {st}");
    assert!(
        !lab.lb_log().contains(WARNING),
        "no warning in the log:\n{}",
        lab.lb_log()
    );
    assert!(lab.stop_lb().expect("SIGTERM").success());
}
