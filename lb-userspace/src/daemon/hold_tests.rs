//! Issue 11 finding 1 and issue 19 finding 2: link state as an input of
//! the reconciler. While a configured interface is missing, down or
//! without carrier, and for its settle time after it returns, check
//! results neither change health nor touch the maps; a check that started
//! before the hold ended does not count either; and a node's recovery
//! records one transition, not a second "down" when its dead evidence
//! clears.
use std::time::{Duration, Instant};

use super::tests::{config, fail, ok, started};
use super::*;
use crate::daemon::links::{LinkState, MacFilter};
use crate::health::Health;

fn link(admin_up: bool, carrier: bool) -> LinkInfo {
    LinkInfo {
        name: "eth1".into(),
        ifindex: 3,
        admin_up,
        carrier,
        mac: Some([2, 0, 0, 0, 0, 1]),
        ..LinkInfo::default()
    }
}

/// A check result of a check that took `ms` milliseconds.
fn took(mut o: CheckOutcome, ms: u64) -> CheckOutcome {
    o.duration = Duration::from_millis(ms);
    o
}

const NO_SETTLE: Duration = Duration::ZERO;

#[tokio::test]
async fn check_results_are_set_aside_while_a_link_is_missing_down_or_without_carrier() {
    for bad in [None, Some(link(false, false)), Some(link(true, false))] {
        let (mut r, _rx) = started(config("echo", 7000, "60s"));
        let now = Instant::now();
        r.observe_link("eth1", Some(&link(true, true)), || NO_SETTLE, now);
        assert_eq!(r.held(), None);
        let writes = r.maps.writes;
        let k0 = r.model.targets()[0].key.clone();
        r.observe_link("eth1", bad.as_ref(), || NO_SETTLE, now);
        let why = r.held().expect("held").to_string();
        assert!(why.contains("eth1"), "{why}");
        for _ in 0..5 {
            assert_eq!(r.record(&k0, &fail()), None);
        }
        r.tick(Instant::now());
        assert_eq!(r.model.targets()[0].state.health(), Health::Up);
        assert!(
            !r.model.targets()[0].dead_evidence,
            "{why}: no evidence kept"
        );
        assert_eq!(r.maps.writes, writes, "{why}: nothing written while held");
        // Back with no settle time: released at once; checks that start
        // from now on count.
        tokio::time::sleep(Duration::from_millis(5)).await;
        r.observe_link(
            "eth1",
            Some(&link(true, true)),
            || NO_SETTLE,
            Instant::now(),
        );
        assert_eq!(r.held(), None);
        tokio::time::sleep(Duration::from_millis(5)).await;
        r.record(&k0, &fail());
        assert_eq!(
            r.record(&k0, &fail()),
            Some(Health::Down),
            "{why}: counts again once released"
        );
    }
}

#[tokio::test]
async fn the_hold_lasts_the_settle_time_and_sets_aside_checks_begun_before_its_end() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let k0 = r.model.targets()[0].key.clone();
    let t0 = Instant::now();
    r.observe_link("eth1", Some(&link(true, true)), || NO_SETTLE, t0);
    r.observe_link("eth1", Some(&link(false, false)), || NO_SETTLE, t0);
    let settle = Duration::from_millis(300);
    r.observe_link("eth1", Some(&link(true, true)), || settle, Instant::now());
    assert_eq!(
        r.links().state("eth1", Instant::now()),
        Some(LinkState::Settling)
    );
    assert!(r.held().is_some_and(|w| w.contains("settling")));
    assert_eq!(r.record(&k0, &fail()), None);
    r.tick(Instant::now());
    assert!(r.held().is_some(), "still settling");
    tokio::time::sleep(settle).await;
    r.tick(Instant::now());
    assert_eq!(r.held(), None, "settled");
    // These checks ran (1 s each) across the end of the hold: set aside.
    assert_eq!(r.record(&k0, &took(fail(), 1000)), None);
    assert_eq!(r.record(&k0, &took(fail(), 1000)), None);
    assert_eq!(r.model.targets()[0].state.health(), Health::Up);
    tokio::time::sleep(Duration::from_millis(5)).await;
    r.record(&k0, &took(fail(), 1));
    assert_eq!(r.record(&k0, &took(fail(), 1)), Some(Health::Down));
}

#[tokio::test]
async fn an_xdp_or_mac_filter_problem_does_not_hold_check_results() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let now = Instant::now();
    r.observe_link("eth1", Some(&link(true, true)), || NO_SETTLE, now);
    r.links_mut()
        .set_xdp_problem("eth1", Some("XDP program not attached".into()));
    r.links_mut()
        .set_mac_filter("eth1", MacFilter::Stale("x".into()));
    r.tick(now);
    assert_eq!(r.held(), None);
    let k0 = r.model.targets()[0].key.clone();
    r.record(&k0, &fail());
    assert_eq!(r.record(&k0, &fail()), Some(Health::Down));
}

/// Issue 19, finding 2: a node down with dead evidence that answers again
/// clears its evidence without a second "down" transition; the transition
/// to up comes once, after the threshold. (Since issue 20 a refused check
/// no longer cuts the node's flows, so clearing it rewrites nothing.)
#[tokio::test]
async fn recovery_records_one_transition_per_change() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let k0 = r.model.targets()[0].key.clone();
    let mut transitions = Vec::new();
    for o in [fail(), fail()] {
        transitions.extend(r.record(&k0, &o));
    }
    assert!(r.model.targets()[0].dead_evidence);
    // The first good check clears the evidence, but the node is still
    // down. The event loop used to count this as a second "down"
    // transition, reason "ok".
    let writes = r.maps.writes;
    assert_eq!(r.record(&k0, &ok()), None);
    assert!(!r.model.targets()[0].dead_evidence);
    assert_eq!(r.maps.writes, writes, "it kept its flows throughout");
    for o in [ok(), ok()] {
        transitions.extend(r.record(&k0, &o));
    }
    assert_eq!(transitions, vec![Health::Down, Health::Up]);
    assert_eq!(r.model.targets()[0].state.history().to_vec().len(), 2);
}

/// Issue 21: the hold guards every write path. While a configured
/// interface is missing, a drain, an undrain and a reload are refused
/// alike: nothing is written, the model is unchanged, and the error says
/// why. (The old event loop changed the model and wrote the maps for
/// each.) Once the link is back, the same commands go through.
#[tokio::test]
async fn drain_undrain_and_reload_are_refused_while_holding() {
    let (mut r, _rx) = started(config("echo", 7000, "60s"));
    let now = Instant::now();
    r.observe_link("eth1", Some(&link(true, true)), || NO_SETTLE, now);
    r.drain("cp-02").unwrap();
    r.observe_link("eth1", None, || NO_SETTLE, now);
    assert!(r.held().is_some());
    let writes = r.maps.writes;
    let drained = r.model.all_drained();
    let refused = [
        ("drain", r.drain("cp-01")),
        ("undrain", r.undrain("cp-02")),
        ("reload", r.reload(config("echo-renamed", 7000, "60s"))),
    ];
    for (what, result) in refused {
        let err = result.expect_err(what);
        assert!(
            err.contains("refused") && err.contains("eth1"),
            "{what}: {err}"
        );
    }
    assert_eq!(r.maps.writes, writes, "nothing written while holding");
    assert_eq!(r.model.all_drained(), drained, "no drain changed");
    assert_eq!(r.model.config(), &config("echo", 7000, "60s"));

    r.observe_link("eth1", Some(&link(true, true)), || NO_SETTLE, now);
    assert_eq!(r.held(), None);
    r.undrain("cp-02").unwrap();
    r.reload(config("echo-renamed", 7000, "60s")).unwrap();
    assert!(r.maps.writes > writes);
}
