//! The page's rendering: escaping, sizes, an empty history, rates, charts.
use std::net::IpAddr;

use super::history::{counts_of, new_flow_rates, Counts, History, CAPACITY, SAMPLE_EVERY_MS};
use super::html::{byte_rate, escape, render, Build};
use super::svg::{sparkline, timeline};
use crate::daemon::status::{
    BackendStatus, InterfaceStatus, ListenerStatus, ReloadOutcome, Status,
};
use crate::dataplane::AttachMode;
use crate::health::{Health, Transition};

/// 2026-12-03T12:00:00Z.
const NOW: u64 = 1_796_299_200_000;

fn build() -> Build {
    Build {
        version: "0.1.0".into(),
        commit: "abc123".into(),
    }
}

fn backend(name: &str, i: u32) -> BackendStatus {
    BackendStatus {
        name: name.into(),
        address: IpAddr::from([198, 18, (i / 250) as u8 + 2, (i % 250) as u8 + 1]),
        health: Health::Up,
        serving: true,
        draining: false,
        keeps_flows: true,
        drain_remaining_secs: None,
        evidence: Default::default(),
        removed: false,
        tracked_flows: 3,
        last_check: Some("ok".into()),
        transitions: Vec::new(),
        new_flows: 0,
        fwd_packets: 0,
        fwd_bytes: 0,
        rev_packets: 0,
        rev_bytes: 0,
    }
}

fn status(backends: Vec<BackendStatus>) -> Status {
    Status {
        ready: true,
        drained_nodes: Vec::new(),
        config_drained_nodes: Vec::new(),
        last_reload: None,
        listeners: vec![ListenerStatus {
            name: "kubernetes-api".into(),
            vip: [198, 18, 100, 10].into(),
            port: 6443,
            target_port: 6443,
            mode: "dnat".into(),
            snat_addresses: Vec::new(),
            snat_ports: None,
            all_down: "fail_open".into(),
            fail_open: false,
            retired: false,
            check: Some("tcp".into()),
            new_flows: 0,
            rejected: 0,
            rescheduled: 0,
            backends,
        }],
        interfaces: vec![InterfaceStatus {
            name: "eth1".into(),
            mode: AttachMode::Native,
        }],
        counters: Default::default(),
        missing_interfaces: Vec::new(),
        links: Vec::new(),
        checks_held: None,
        flows_scanned_secs_ago: Some(1.0),
        dataplane_notes: Vec::new(),
        warnings: Vec::new(),
        snat_ports_in_use: Default::default(),
    }
}

#[test]
fn escape_replaces_every_markup_character() {
    assert_eq!(
        escape(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    assert_eq!(escape("cp-01 ok"), "cp-01 ok");
}

#[test]
fn names_and_reasons_from_the_config_are_escaped() {
    let mut b = backend("<script>alert(1)</script>", 1);
    b.health = Health::Down;
    b.last_check = Some("tls: <b>\"bad\"</b> & 'worse'".into());
    b.transitions = vec![Transition {
        at: String::new(),
        unix_ms: NOW - 30_000,
        from: Health::Up,
        to: Health::Down,
        reason: "<img src=x>".into(),
    }];
    let mut st = status(vec![b]);
    st.listeners[0].name = "api\"><script>".into();
    st.warnings = vec!["<blink>".into()];
    st.last_reload = Some(ReloadOutcome {
        at_unix: NOW / 1000,
        ok: false,
        error: Some("line 3: <oops>".into()),
        apply_ms: None,
    });
    let page = render(&st, &History::new(), &build(), NOW);
    for raw in ["<script>", "<b>\"bad", "<img", "<blink>", "<oops>"] {
        assert!(!page.contains(raw), "{raw} unescaped in the page");
    }
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("tls: &lt;b&gt;&quot;bad&quot;&lt;/b&gt; &amp; &#39;worse&#39;"));
    assert!(page.contains("&lt;img src=x&gt;"));
    assert!(page.contains("data-listener=\"api&quot;&gt;&lt;script&gt;\""));
    assert!(page.contains("rejected"));
}

#[test]
fn the_page_is_self_contained_and_refreshes() {
    let page = render(
        &status(vec![backend("cp-01", 1)]),
        &History::new(),
        &build(),
        NOW,
    );
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(page.contains("name=\"viewport\""));
    assert!(page.contains("href=\"/status\"") && page.contains("href=\"/metrics\""));
    assert!(page.contains("eth1 <small>(native)</small>"));
    assert!(page.contains("build 0.1.0 (abc123)"));
    assert!(page.contains("198.18.100.10:6443 → :6443"));
    // No external asset: the only URLs are the two local links.
    for external in ["http:", "https:", "//", "src=", "<script", "<link", "url("] {
        assert!(!page.contains(external), "{external} in the page");
    }
}

#[test]
fn an_empty_history_renders_placeholders() {
    let page = render(
        &status(vec![backend("cp-01", 1)]),
        &History::new(),
        &build(),
        NOW,
    );
    assert!(page.contains("no samples yet"));
    assert!(
        page.contains("data-label=\"new flows/s\"><div>-</div>"),
        "no rate without samples"
    );
    // The timeline still shows the current health over the whole window.
    assert!(page.contains("class=\"up\"><title>up before the window</title>"));
}

#[test]
fn a_hundred_backends_make_a_page_of_sane_size() {
    let backends: Vec<BackendStatus> = (0..100)
        .map(|i| backend(&format!("node-{i:03}"), i))
        .collect();
    let mut st = status(backends);
    let mut history = History::new();
    for k in 0..CAPACITY as u64 {
        for b in &mut st.listeners[0].backends {
            b.new_flows += k % 7;
            b.fwd_bytes += 1000 * k;
        }
        history.record(counts_of(
            &st,
            NOW - (CAPACITY as u64 - k) * SAMPLE_EVERY_MS,
        ));
    }
    assert_eq!(history.pairs(), 100);
    let page = render(&st, &history, &build(), NOW);
    assert_eq!(page.matches("<tr data-backend=").count(), 100);
    assert_eq!(page.matches("<polyline").count(), 100);
    assert!(page.len() < 400_000, "page of {} bytes", page.len());
}

#[test]
fn history_is_bounded_and_forgets_removed_pairs() {
    let mut st = status(vec![backend("cp-01", 1), backend("cp-02", 2)]);
    let mut h = History::new();
    for k in 0..(CAPACITY as u64 + 50) {
        st.listeners[0].backends[0].new_flows = 10 * k;
        h.record(counts_of(&st, NOW + k * SAMPLE_EVERY_MS));
    }
    assert_eq!(h.samples("kubernetes-api", "cp-01").len(), CAPACITY);
    // Every 5 s interval had 10 new flows: 2/s.
    let rates = new_flow_rates(&h.samples("kubernetes-api", "cp-01"));
    assert!(
        rates.iter().all(|(_, r)| (*r - 2.0).abs() < 1e-9),
        "{rates:?}"
    );
    // cp-02 is removed: gone once its newest sample is a window old.
    st.listeners[0].backends.truncate(1);
    let end = NOW + (CAPACITY as u64 + 50) * SAMPLE_EVERY_MS;
    h.record(counts_of(&st, end));
    assert_eq!(h.pairs(), 2);
    h.record(counts_of(
        &st,
        end + super::history::WINDOW_MS + SAMPLE_EVERY_MS,
    ));
    assert_eq!(h.pairs(), 1);
}

#[test]
fn rates_compare_the_current_counters_with_the_last_sample() {
    let mut st = status(vec![backend("cp-01", 1)]);
    let mut h = History::new();
    h.record(counts_of(&st, NOW - 5000));
    let b = &mut st.listeners[0].backends[0];
    b.new_flows = 50;
    b.fwd_bytes = 5_000_000;
    b.rev_bytes = 500;
    let page = render(&st, &h, &build(), NOW);
    assert!(
        page.contains("data-label=\"new flows/s\"><div>10.0</div>"),
        "10 new flows/s"
    );
    assert!(page.contains("1.0 MB/s / 100 B/s"));
    // A counter that went back (fresh maps) is no negative rate.
    let back = Counts {
        unix_ms: NOW + 5000,
        ..Counts::default()
    };
    let r = h.rates("kubernetes-api", "cp-01", &back).unwrap();
    assert_eq!(r.new_flows, 0.0);
}

#[test]
fn the_timeline_shows_each_state_with_its_reason() {
    let t = |ms, from, to, reason: &str| Transition {
        at: String::new(),
        unix_ms: ms,
        from,
        to,
        reason: reason.into(),
    };
    let from = NOW - 900_000;
    let tr = [
        t(NOW - 600_000, Health::Up, Health::Down, "refused"),
        t(NOW - 300_000, Health::Down, Health::Up, "ok"),
    ];
    let svg = timeline(&tr, Health::Up, from, NOW);
    assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
    assert!(svg.contains("class=\"down\"><title>down since 11:50:00: refused</title>"));
    assert!(
        svg.contains("x=\"60\"") && svg.contains("x=\"120\""),
        "{svg}"
    );
    // Transitions older than the window set the state at its start.
    let svg = timeline(&tr[..1], Health::Down, NOW - 60_000, NOW);
    assert_eq!(svg.matches("<rect").count(), 1);
    assert!(svg.contains("class=\"down\""));
}

#[test]
fn sparklines_scale_and_thin_their_points() {
    let points: Vec<(u64, f64)> = (0..180).map(|i| (NOW - 900_000 + i * 5000, 4.0)).collect();
    let svg = sparkline(&points, NOW - 900_000, NOW);
    let coords = svg
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(coords.split(' ').count(), 90);
    assert!(svg.contains("max 4.0"));
    // A flat line at the maximum sits at the top.
    assert!(coords.split(' ').all(|p| p.ends_with(",1")), "{coords}");
}

#[test]
fn byte_rates_read_well() {
    assert_eq!(byte_rate(0.0), "0 B/s");
    assert_eq!(byte_rate(999.0), "999 B/s");
    assert_eq!(byte_rate(12_345.0), "12.3 kB/s");
    assert_eq!(byte_rate(4.5e9), "4.5 GB/s");
}

#[test]
fn link_problems_and_held_checks_are_shown() {
    let mut st = status(Vec::new());
    st.links = vec![crate::daemon::status::LinkStatus {
        name: "eth1".into(),
        state: crate::daemon::links::LinkState::Down,
        mac: None,
        settle_remaining_secs: None,
        problem: Some("interface eth1: link down <x>".into()),
        mac_changes: 0,
        xdp_reattachments: 0,
        mac_filter_off: None,
    }];
    st.checks_held = Some("a configured link is down".into());
    let page = render(&st, &History::new(), &build(), NOW);
    assert!(
        page.contains("interface eth1: link down &lt;x&gt;"),
        "{page}"
    );
    assert!(page.contains("set aside: a configured link is down"));
}

/// Issue 18: each listener says its mode and, for full-NAT, what the
/// nodes see instead of the client.
#[test]
fn the_page_shows_each_listeners_mode() {
    let mut st = status(vec![backend("cp-01", 1)]);
    let page = render(&st, &History::new(), &build(), NOW);
    assert!(
        page.contains("<dt>mode</dt><dd>dnat (nodes see the client)</dd>"),
        "{page}"
    );
    let l = &mut st.listeners[0];
    l.mode = "fullnat".into();
    l.snat_addresses = vec![[198, 18, 0, 100].into()];
    l.snat_ports = Some("1024-32767".into());
    let page = render(&st, &History::new(), &build(), NOW);
    assert!(
        page.contains("<dd>fullnat (nodes see 198.18.0.100 ports 1024-32767)</dd>"),
        "{page}"
    );
}
