//! `lb status` must put every figure under its own title.
use std::collections::BTreeMap;

use super::*;

fn backend(name: &str, address: impl Into<IpAddr>, last: &str, base: u64) -> BackendStatus {
    BackendStatus {
        name: name.into(),
        address: address.into(),
        health: Health::Up,
        serving: true,
        draining: false,
        keeps_flows: true,
        drain_remaining_secs: None,
        evidence: Default::default(),
        removed: false,
        tracked_flows: base,
        last_check: Some(last.into()),
        transitions: Vec::new(),
        new_flows: base + 1,
        fwd_packets: base + 2,
        fwd_bytes: base + 3,
        rev_packets: base + 4,
        rev_bytes: base + 5,
    }
}

/// Issue 12: a node down here but not proven dead says so.
#[test]
fn a_down_node_that_keeps_flows_is_kept_not_out() {
    let mut b = backend("cp-02", [198, 18, 2, 12], "timeout", 0);
    b.health = Health::Down;
    b.serving = false;
    assert_eq!(b.state(), "kept");
    b.keeps_flows = false;
    assert_eq!(b.state(), "out");
}

fn status() -> Status {
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
            check: None,
            new_flows: 0,
            rejected: 0,
            rescheduled: 0,
            backends: vec![
                backend("cp-01", [198, 18, 2, 11], "ok", 0),
                backend(
                    "control-plane-node-with-a-long-name",
                    [198, 18, 2, 112],
                    "tls: invalid peer certificate: UnknownIssuer",
                    1_000_000,
                ),
            ],
        }],
        interfaces: Vec::new(),
        counters: BTreeMap::new(),
        missing_interfaces: Vec::new(),
        flows_scanned_secs_ago: None,
        dataplane_notes: Vec::new(),
        warnings: vec!["pins will not survive a restart".into()],
        links: Vec::new(),
        checks_held: None,
        snat_ports_in_use: BTreeMap::new(),
    }
}

/// Issue 18: each listener says its mode; a full-NAT one its source-NAT
/// addresses, ports and the ports in use, in text and JSON.
#[test]
fn a_fullnat_listener_shows_its_source_addresses_and_ports() {
    let mut s = status();
    let text = s.render();
    assert!(text.contains("-> :6443  mode=dnat  new_flows=0"), "{text}");
    let l = &mut s.listeners[0];
    l.mode = "fullnat".into();
    l.snat_addresses = vec![[198, 18, 0, 100].into()];
    l.snat_ports = Some("1024-32767".into());
    s.snat_ports_in_use.insert([198, 18, 0, 100].into(), 12);
    let text = s.render();
    assert!(
        text.contains("mode=fullnat (snat 198.18.0.100 ports 1024-32767, 12 in use)  new_flows=0"),
        "{text}"
    );
    let json = serde_json::to_value(&s).unwrap();
    let l = &json["listeners"][0];
    assert_eq!(l["mode"], "fullnat");
    assert_eq!(l["snat_addresses"][0], "198.18.0.100");
    assert_eq!(l["snat_ports"], "1024-32767");
    assert_eq!(json["snat_ports_in_use"]["198.18.0.100"], 12);
    // A document without the new keys (an older daemon) still parses.
    let mut old = json.clone();
    let obj = old["listeners"][0].as_object_mut().unwrap();
    obj.remove("mode");
    obj.remove("snat_addresses");
    obj.remove("snat_ports");
    old.as_object_mut().unwrap().remove("snat_ports_in_use");
    let back: Status = serde_json::from_value(old).unwrap();
    assert_eq!(back.listeners[0].mode, "dnat");
}

/// The cell of `row` under the column titled `title` in `header`: starts
/// where the title starts (text) or ends where it ends (numbers).
fn cell_under<'a>(header: &str, row: &'a str, title: &str, right: bool) -> &'a str {
    // Titles are whole words: "FLOWS" must not match inside "NEW_FLOWS".
    let start = header
        .match_indices(title)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || header.as_bytes()[i - 1] == b' ')
        .unwrap_or_else(|| panic!("no column {title} in {header:?}"));
    let end = start + title.len();
    if right {
        row[..end].rsplit(' ').next().unwrap()
    } else {
        row[start..].split("  ").next().unwrap().trim_end()
    }
}

/// Every backend row's cells sit under their titles in `status`'s rendering.
fn assert_aligned(status: &Status) {
    let text = status.render();
    assert!(
        text.starts_with("WARNING: pins will not survive a restart\n"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().collect();
    let h = lines
        .iter()
        .position(|l| l.trim_start().starts_with("BACKEND"))
        .unwrap();
    let header = lines[h];
    let backends = &status.listeners[0].backends;
    let rows = &lines[h + 1..h + 1 + backends.len()];
    for (row, b) in rows.iter().zip(backends) {
        assert_eq!(cell_under(header, row, "BACKEND", false), b.name);
        assert_eq!(
            cell_under(header, row, "ADDRESS", false),
            b.address.to_string()
        );
        assert_eq!(cell_under(header, row, "HEALTH", false), "up");
        assert_eq!(cell_under(header, row, "STATE", false), "serving");
        for (title, v) in [
            ("FLOWS", b.tracked_flows),
            ("NEW_FLOWS", b.new_flows),
            ("PKTS_IN", b.fwd_packets),
            ("BYTES_IN", b.fwd_bytes),
            ("PKTS_OUT", b.rev_packets),
            ("BYTES_OUT", b.rev_bytes),
        ] {
            assert_eq!(
                cell_under(header, row, title, true),
                v.to_string(),
                "{title} in {row:?}"
            );
        }
        assert_eq!(
            cell_under(header, row, "LAST_CHECK", false),
            b.last_check.as_deref().unwrap()
        );
    }
}

#[test]
fn every_figure_sits_under_its_title() {
    assert_aligned(&status());
}

/// IPv6: the listener line shows `[vip]:port`, and the longest address
/// form (eight full groups, 39 characters) keeps every column aligned.
#[test]
fn ipv6_addresses_keep_the_table_aligned() {
    let mut s = status();
    let l = &mut s.listeners[0];
    l.vip = "2001:db8::10".parse().unwrap();
    l.backends = vec![
        backend(
            "cp-01",
            "fd00:198:18:2::11".parse::<IpAddr>().unwrap(),
            "ok",
            0,
        ),
        backend(
            "cp-02",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<IpAddr>()
                .unwrap(),
            "tls: invalid peer certificate: UnknownIssuer",
            1_000_000,
        ),
        backend("cp-03", [198, 18, 2, 13], "ok", 7),
    ];
    assert_aligned(&s);
    let text = s.render();
    assert!(
        text.contains("\nlistener kubernetes-api [2001:db8::10]:6443 -> :6443 "),
        "{text}"
    );
}

#[test]
fn header_and_rows_have_the_same_number_of_columns() {
    // Cells never contain two spaces in a row, so columns are the runs
    // between two-space gaps (the free-text reason comes last).
    let text = status().render();
    let lines: Vec<&str> = text.lines().collect();
    let h = lines
        .iter()
        .position(|l| l.trim_start().starts_with("BACKEND"))
        .unwrap();
    let count = |l: &str| l.split("  ").filter(|c| !c.trim().is_empty()).count();
    let titles = count(lines[h]);
    assert_eq!(titles, 12);
    for row in &lines[h + 1..h + 3] {
        assert_eq!(count(row), titles, "{row:?}");
    }
}

/// Issue 19, finding 2: link state is shown, with what keeps the gateway
/// from forwarding and whether check results are held.
#[test]
fn links_are_rendered_with_their_problems() {
    use super::LinkStatus;
    use crate::daemon::links::LinkState;
    let mut st = status();
    assert!(!st.render().contains("links:"), "no line without links");
    let link = |name: &str, state, problem: Option<&str>| LinkStatus {
        name: name.into(),
        state,
        mac: None,
        settle_remaining_secs: None,
        problem: problem.map(str::to_string),
        mac_changes: 0,
        xdp_reattachments: 0,
        mac_filter_off: None,
    };
    st.links = vec![
        link("gwc", LinkState::Up, None),
        link(
            "gwb",
            LinkState::NoCarrier,
            Some("interface gwb: no carrier"),
        ),
    ];
    st.links[0].mac_changes = 1;
    st.checks_held = Some("interface gwb is no_carrier".into());
    let text = st.render();
    assert!(
        text.contains("links: gwc up, 1 MAC changes, gwb no_carrier\n"),
        "{text}"
    );
    assert!(
        text.contains("NOT FORWARDING: interface gwb: no carrier\n"),
        "{text}"
    );
    assert!(
        text.contains("CHECK RESULTS SET ASIDE: interface gwb is no_carrier\n"),
        "{text}"
    );
    st.links[1] = link("gwb", LinkState::Settling, None);
    st.links[1].settle_remaining_secs = Some(1.25);
    assert!(
        st.render().contains("gwb settling (1.2s left)"),
        "{}",
        st.render()
    );
    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["links"][1]["state"], "settling");
}
