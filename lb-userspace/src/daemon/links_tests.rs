//! The link table's rules: states, settle time, MAC changes, problems.
use super::*;

const SETTLE: Duration = Duration::from_secs(2);
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

fn link(admin_up: bool, carrier: bool, mac: [u8; 6]) -> LinkInfo {
    LinkInfo {
        name: "gwb".into(),
        ifindex: 4,
        admin_up,
        carrier,
        mac: Some(mac),
        ..LinkInfo::default()
    }
}

fn up() -> LinkInfo {
    link(true, true, MAC_A)
}

fn no_settle() -> Duration {
    panic!("settle asked for a link that did not come back")
}

#[test]
fn a_link_up_from_the_start_holds_nothing() {
    let mut t = LinkTable::default();
    let now = Instant::now();
    let o = t.observe("gwb", Some(&up()), no_settle, now);
    assert_eq!(o, Observed::default());
    assert_eq!(t.state("gwb", now), Some(LinkState::Up));
    assert_eq!(t.holding(now), None);
    assert_eq!(t.snapshot(now)[0].problem(), None);
}

#[test]
fn down_no_carrier_and_missing_hold_until_settled() {
    for (bad, state) in [
        (Some(link(false, false, MAC_A)), LinkState::Down),
        (Some(link(true, false, MAC_A)), LinkState::NoCarrier),
        (None, LinkState::Missing),
    ] {
        let mut t = LinkTable::default();
        let t0 = Instant::now();
        t.observe("gwc", Some(&up()), no_settle, t0);
        t.observe("gwb", Some(&up()), no_settle, t0);
        let o = t.observe("gwb", bad.as_ref(), no_settle, t0);
        assert_eq!(o.state, Some((LinkState::Up, state)));
        assert!(state.is_failed());
        let why = t.holding(t0).expect("held");
        assert!(why.contains("gwb") && why.contains(state.as_str()), "{why}");
        let problem = t.snapshot(t0)[1].problem().expect("a problem");
        assert!(problem.starts_with("interface gwb: "), "{problem}");

        // Back: settling for the settle time, then up.
        let t1 = t0 + Duration::from_secs(1);
        let o = t.observe("gwb", Some(&up()), || SETTLE, t1);
        assert_eq!(o.state, Some((state, LinkState::Settling)));
        assert!(t.holding(t1).is_some_and(|w| w.contains("settling")));
        let snap = &t.snapshot(t1 + Duration::from_millis(500))[1];
        assert_eq!(snap.settle_left, Some(Duration::from_millis(1500)));
        assert_eq!(snap.problem(), None, "settling forwards: not a problem");
        // A repeated observation does not restart the settle time.
        t.observe("gwb", Some(&up()), no_settle, t1 + Duration::from_secs(1));
        assert_eq!(t.holding(t1 + SETTLE), None);
        assert_eq!(t.state("gwb", t1 + SETTLE), Some(LinkState::Up));
    }
}

#[test]
fn a_flap_within_the_settle_time_starts_it_again() {
    let mut t = LinkTable::default();
    let t0 = Instant::now();
    t.observe("gwb", Some(&up()), no_settle, t0);
    t.observe("gwb", Some(&link(false, false, MAC_A)), no_settle, t0);
    t.observe("gwb", Some(&up()), || SETTLE, t0 + Duration::from_secs(1));
    let t2 = t0 + Duration::from_millis(2500);
    t.observe("gwb", Some(&link(true, false, MAC_A)), no_settle, t2);
    t.observe("gwb", Some(&up()), || SETTLE, t2);
    assert!(t.holding(t0 + Duration::from_secs(4)).is_some());
    assert_eq!(t.holding(t2 + SETTLE), None);
}

#[test]
fn a_link_down_at_start_holds_at_once() {
    let mut t = LinkTable::default();
    let now = Instant::now();
    let o = t.observe("gwb", Some(&link(true, false, MAC_A)), no_settle, now);
    assert_eq!(o.state, Some((LinkState::Up, LinkState::NoCarrier)));
    assert!(t.holding(now).is_some());
}

#[test]
fn a_mac_change_is_counted_and_the_old_mac_kept_for_a_while() {
    let mut t = LinkTable::default();
    let t0 = Instant::now();
    t.observe("gwb", Some(&up()), no_settle, t0);
    let o = t.observe("gwb", Some(&link(true, true, MAC_B)), no_settle, t0);
    assert_eq!(o.mac, Some((MAC_A, MAC_B)));
    assert_eq!(o.state, None, "a MAC change alone does not stop forwarding");
    assert_eq!(t.holding(t0), None);
    let snap = &t.snapshot(t0)[0];
    assert_eq!((snap.mac, snap.mac_changes), (Some(MAC_B), 1));
    assert_eq!(t.previous_mac("gwb", t0), Some(MAC_A));
    assert_eq!(t.previous_mac("gwb", t0 + OLD_MAC_GRACE), None);
    // The same MAC again is no change.
    let o = t.observe("gwb", Some(&link(true, true, MAC_B)), no_settle, t0);
    assert_eq!(o.mac, None);
    assert_eq!(mac_text(&MAC_B), "02:00:00:00:00:0b");
}

#[test]
fn xdp_and_mac_filter_problems_are_reported_without_holding() {
    let mut t = LinkTable::default();
    let now = Instant::now();
    t.observe("gwb", Some(&up()), no_settle, now);
    t.set_xdp_problem("gwb", Some("XDP program not attached (found none)".into()));
    t.count_reattachment("gwb");
    assert_eq!(t.holding(now), None, "the gateway's own checks still work");
    let s = &t.snapshot(now)[0];
    assert_eq!(s.xdp_reattachments, 1);
    assert_eq!(
        s.problem().as_deref(),
        Some("interface gwb: XDP program not attached (found none)")
    );
    t.set_xdp_problem("gwb", None);
    // An unfiltered interface forwards: not a problem; a stale filter is.
    assert!(t.set_mac_filter("gwb", MacFilter::Off("slot held".into())));
    assert!(!t.set_mac_filter("gwb", MacFilter::Off("slot held".into())));
    assert_eq!(t.snapshot(now)[0].problem(), None);
    assert!(t.set_mac_filter("gwb", MacFilter::Stale("map error".into())));
    let p = t.snapshot(now)[0].problem().unwrap();
    assert!(
        p.contains("destination-MAC filter not updated: map error"),
        "{p}"
    );
    // Unknown names are ignored.
    t.set_xdp_problem("eth9", Some("x".into()));
    assert_eq!(t.snapshot(now).len(), 1);
}

/// Metrics name the states without importing the daemon: the same names.
#[test]
fn metrics_list_every_state_by_its_name() {
    let names: Vec<&str> = LinkState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, crate::metrics::view::LINK_STATES);
}
