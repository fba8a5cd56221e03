//! The certificate files a configuration names (issue 19, finding 6), end
//! to end: read bounded and never blocking, by the same reader as the
//! configuration itself, and read again at every reload.
//!
//! Before: `ca_file = "/dev/zero"` grew `lb check` to 1 GB and a reload to
//! 2.1 GB; a FIFO hung `lb check` and start-up and leaked one blocked thread
//! per reload until every later reload failed; and a CA bundle rotated at
//! the same path was ignored by the running checks (every node went down
//! with `UnknownIssuer` once the nodes presented the new CA's certificates).
//!
//! Root and a built `lb` are needed; without them the tests skip (and fail
//! under `CI=true`).

mod tls_lab;

use std::time::{Duration, Instant};

use lb_tests::checks::ctl_ok;
use lb_tests::lab::run_with_timeout;
use lb_tests::{lb_or_skip, root_or_skip, Lab};
use tls_lab::*;

/// The Talos API port: its default check is a TLS handshake.
const PORT: u16 = 50000;

/// The lab's configuration with one listener on [`PORT`] whose TLS check
/// verifies against `ca_file`.
fn config_with_ca(lab: &Lab, ca_file: &std::path::Path) -> String {
    config(
        lab,
        &listener(
            lab,
            "talos-api",
            PORT,
            PORT,
            &format!("ca_file = {}", toml_path(ca_file)),
        ),
    )
}

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// Waits until every node is `health`, for at most `limit`.
fn wait_all(lab: &Lab, health: &str, limit: Duration) {
    let t0 = Instant::now();
    for i in 1..=lab.backends() {
        let left = limit.saturating_sub(t0.elapsed());
        wait_health(lab, "talos-api", &lab.backend_name(i), health, t0, left)
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
}

#[test]
fn cert_files_that_block_or_never_end_are_refused_at_once() {
    if !root_or_skip("cert_files_that_block_or_never_end_are_refused_at_once")
        || !lb_or_skip("cert_files_that_block_or_never_end_are_refused_at_once")
    {
        return;
    }
    let _serial = serial();
    let lab = new_lab();
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "cluster-ca");
    for i in 1..=lab.backends() {
        let server = ca.server(pki.path(), &format!("node-{i}"), lab.backend_addr(i));
        start_sim(&lab, i, PORT, "tls", &tls_args(&server, &[]));
    }
    let good = config_with_ca(&lab, &ca.file);
    let pid = lab.start_lb(&good).expect("starting lb").0;
    wait_all(&lab, "up", Duration::from_secs(10));

    let fifo = pki.path().join("ca.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let path = lab.lb_config_path();
    for (what, file) in [
        ("a FIFO", fifo.as_path()),
        ("/dev/zero", std::path::Path::new("/dev/zero")),
    ] {
        std::fs::write(&path, config_with_ca(&lab, file)).unwrap();
        let t0 = Instant::now();
        let mut check = std::process::Command::new(lab.lb_bin());
        check.arg("check").arg("--config").arg(&path);
        let out = run_with_timeout(&mut check, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{what}: lb check hangs: {e:#}"));
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("lb check with ca_file = {what}: {:?}", t0.elapsed());
        assert!(!out.status.success(), "{what}: lb check must fail");
        assert!(said.contains("ca_file"), "{what}: names the key: {said}");
        assert!(said.contains("not a regular file"), "{what}: {said}");

        let t0 = Instant::now();
        let out = lab.lb_ctl(&["reload"]).expect("lb reload");
        let said = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{what}: reload must fail: {said}");
        assert!(said.contains("not a regular file"), "{what}: {said}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{what}: {:?}",
            t0.elapsed()
        );
    }

    // 600 reloads of the FIFO configuration: no thread is left blocked.
    std::fs::write(&path, config_with_ca(&lab, &fifo)).unwrap();
    let before = threads(pid);
    let t0 = Instant::now();
    for _ in 0..600 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = threads(pid);
    eprintln!(
        "600 reloads in {:?}: threads {before} -> {after}",
        t0.elapsed()
    );
    assert!(after <= before + 4, "threads {before} -> {after}");

    // A valid configuration still reloads, and the nodes stayed up.
    std::fs::write(&path, &good).unwrap();
    ctl_ok(&lab, &["reload"]);
    wait_all(&lab, "up", Duration::from_secs(5));
    let _ = lab.stop_lb();
}

#[test]
fn a_ca_bundle_rotated_at_the_same_path_is_used_after_reload() {
    if !root_or_skip("a_ca_bundle_rotated_at_the_same_path_is_used_after_reload")
        || !lb_or_skip("a_ca_bundle_rotated_at_the_same_path_is_used_after_reload")
    {
        return;
    }
    let _serial = serial();
    let lab = new_lab();
    let pki = tempfile::tempdir().unwrap();
    let old = Ca::new(pki.path(), "old-ca");
    let new = Ca::new(pki.path(), "new-ca");
    let bundle = pki.path().join("bundle.pem");
    std::fs::copy(&old.file, &bundle).unwrap();
    let mut sims = Vec::new();
    for i in 1..=lab.backends() {
        let server = old.server(pki.path(), &format!("old-{i}"), lab.backend_addr(i));
        sims.push(start_sim(&lab, i, PORT, "old", &tls_args(&server, &[])));
    }
    lab.start_lb(&config_with_ca(&lab, &bundle))
        .expect("starting lb");
    wait_all(&lab, "up", Duration::from_secs(10));

    // The rotation: the new CA appended to the bundle at the same path and
    // the daemon reloaded, then each node moves to a certificate of the
    // new CA.
    let both =
        std::fs::read_to_string(&old.file).unwrap() + &std::fs::read_to_string(&new.file).unwrap();
    std::fs::write(&bundle, both).unwrap();
    ctl_ok(&lab, &["reload"]);
    for (i, sim) in (1..=lab.backends()).zip(sims) {
        let server = new.server(pki.path(), &format!("new-{i}"), lab.backend_addr(i));
        stop_sim(&lab, sim);
        start_sim(&lab, i, PORT, "new", &tls_args(&server, &[]));
    }
    // Long enough for unhealthy_threshold failed checks, had they failed.
    std::thread::sleep(HEALTH.interval * (HEALTH.unhealthy_threshold + 2));
    let st = lab.lb_status().unwrap();
    for i in 1..=lab.backends() {
        let name = lab.backend_name(i);
        let (health, last, _) = backend_state(&st, "talos-api", &name).unwrap();
        eprintln!("{name} after the rotation: {health} ({last})");
        assert_eq!(
            health, "up",
            "{name} verified against the rotated bundle: {last}"
        );
        if let Ok(t) = last_transition(&st, "talos-api", &name) {
            assert!(
                !t.to_string().contains("UnknownIssuer"),
                "{name} went down with UnknownIssuer: {t}"
            );
        }
    }
    let _ = lab.stop_lb();
}
