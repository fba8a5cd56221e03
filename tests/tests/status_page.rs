//! The status page (`GET /`) rendered by a real headless Chromium against a
//! daemon running in the namespace lab: every node up, then a stopped node
//! shown down with its reason.
//!
//! Needs root, a built `lb` and `/usr/bin/chromium` (`cargo xtask setup`);
//! without them it skips, and fails under `CI=true`. The screenshot goes
//! to a temporary directory; with `LB_UPDATE_SCREENSHOT=1` it also replaces
//! `docs/status-page.png` (the README's picture), after a minute of traffic
//! so that the charts have something to show.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use lb_tests::browser::{backend_row, chromium_or_skip, dump_dom, screenshot};
use lb_tests::{
    netns_ready, spread, HealthSettings, Lab, LabOptions, Stream, StreamOptions, KUBE_API_PORT,
    LB_API,
};

const LISTENER: &str = "kubernetes-api";

/// The page's DOM, asserting the parts that do not depend on health.
fn page(lab: &Lab) -> String {
    let dom =
        dump_dom(&lab.gateway_ns(), &format!("http://{LB_API}/")).expect("chromium --dump-dom");
    assert!(
        dom.contains("id=\"readiness\""),
        "no readiness badge:\n{dom}"
    );
    assert!(
        dom.contains(">ready</span>"),
        "daemon not shown ready:\n{dom}"
    );
    for iface in lab.gateway_interfaces() {
        assert!(
            dom.contains(&format!("{iface} <small>(")),
            "{iface} not listed:\n{dom}"
        );
    }
    assert!(dom.contains("href=\"/status\"") && dom.contains("href=\"/metrics\""));
    dom
}

/// Health and reason of a backend's row.
fn row(dom: &str, backend: &str) -> String {
    backend_row(dom, LISTENER, backend)
        .unwrap_or_else(|| panic!("no row for {backend} under {LISTENER}:\n{dom}"))
        .to_owned()
}

#[test]
fn the_status_page_shows_a_stopped_node_down_with_its_reason() {
    let test = "the_status_page_shows_a_stopped_node_down_with_its_reason";
    if !netns_ready(test) {
        return;
    }
    let Some(_chromium) = chromium_or_skip(test) else {
        return;
    };
    let update = std::env::var_os("LB_UPDATE_SCREENSHOT").is_some_and(|v| v == "1");
    let lab = Lab::create(LabOptions::with_cp_sim(env!("CARGO_BIN_EXE_cp-sim")))
        .expect("creating the lab");
    lab.start_all_backends().expect("starting backends");
    lab.start_lb(&lab.config_toml_with(HealthSettings::default()))
        .expect("starting lb");
    lab.wait_backends_up(Duration::from_secs(10))
        .expect("backends up");
    let client = lab.client_ns();
    let vip = lab.vip_addr(KUBE_API_PORT);
    let s = spread(&lab, &client, vip, 30).expect("connections through the VIP");
    assert_eq!(s.failures, 0, "{:?}", s.errors);
    let stop = AtomicBool::new(false);
    thread::scope(|scope| {
        if update {
            // For the README's picture: open flows, bytes and a minute of
            // new flows, going on while the pictures are taken.
            scope.spawn(|| {
                let opts = StreamOptions {
                    chunk_size: 2048,
                    max_duration: Duration::from_secs(300),
                    ..StreamOptions::default()
                };
                let _streams: Vec<Stream> = (0..6)
                    .filter_map(|_| Stream::open_with(&lab, &client, vip, opts.clone()).ok())
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    let _ = spread(&lab, &client, vip, 10);
                    thread::sleep(Duration::from_millis(200));
                }
            });
            thread::sleep(Duration::from_secs(60));
        }
        check_page(&lab, update);
        stop.store(true, Ordering::Relaxed);
    });
}

/// Every node up on the page, then the stopped one down with its reason;
/// the pictures.
fn check_page(lab: &Lab, update: bool) {
    let t = Instant::now();
    let dom = page(lab);
    println!("page rendered by chromium in {:?}", t.elapsed());
    for i in 1..=lab.backends() {
        let r = row(&dom, &lab.backend_name(i));
        assert!(
            r.contains("data-health=\"up\""),
            "{} not up: {r}",
            lab.backend_name(i)
        );
        assert!(r.contains("data-state=\"serving\""), "not serving: {r}");
        assert!(
            r.contains("<span class=\"reason\">ok</span>"),
            "no reason: {r}"
        );
    }

    let down = lab.backend_name(2);
    lab.stop_backend(2).expect("stopping backend 2");
    let t_stop = Instant::now();
    while lab.backend_health(LISTENER, &down).expect("lb status") != "down" {
        assert!(
            t_stop.elapsed() < Duration::from_secs(10),
            "{down} never went down"
        );
        thread::sleep(Duration::from_millis(100));
    }
    if update {
        // A few more samples with the node out, for the chart.
        thread::sleep(Duration::from_secs(20));
    }
    let dom = page(lab);
    let r = row(&dom, &down);
    assert!(r.contains("data-health=\"down\""), "{down} not down: {r}");
    assert!(
        r.contains("<span class=\"reason\">refused</span>"),
        "no reason: {r}"
    );
    assert!(
        r.contains("<title>down since"),
        "no down segment in the timeline: {r}"
    );
    for i in [1, 3] {
        let r = row(&dom, &lab.backend_name(i));
        assert!(
            r.contains("data-health=\"up\""),
            "{} not up: {r}",
            lab.backend_name(i)
        );
    }
    assert!(dom.contains("<polyline"), "no chart of new flows:\n{dom}");

    let dir = tempfile::tempdir().expect("temporary directory");
    let png = dir.path().join("status-page.png");
    screenshot(
        &lab.gateway_ns(),
        &format!("http://{LB_API}/"),
        &png,
        1100,
        760,
    )
    .expect("chromium --screenshot");
    let phone = dir.path().join("status-page-phone.png");
    screenshot(
        &lab.gateway_ns(),
        &format!("http://{LB_API}/"),
        &phone,
        390,
        844,
    )
    .expect("chromium --screenshot at phone size");
    if update {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/status-page.png");
        std::fs::copy(&png, &docs).expect("updating docs/status-page.png");
        println!("wrote {}", docs.display());
    }
}
