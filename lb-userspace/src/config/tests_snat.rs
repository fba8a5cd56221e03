//! Full-NAT keys: `mode`, `snat_ipv4`, `snat_ipv6`, `snat_ports`.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::snat::{check_local_ports, parse_local_port_range, DEFAULT_SNAT_PORTS};
use super::*;

const BACKENDS: &str = r#"
[[backend]]
name = "cp-01"
address = "198.18.0.11"
[[backend]]
name = "cp-02"
address = "198.18.0.12"
[[backend]]
name = "cp-03"
address = "198.18.0.13"
"#;

/// A config with `dataplane` keys after `interfaces` and `listener` keys
/// in its one listener (VIP 198.18.0.10:6443).
fn config(dataplane: &str, listener: &str) -> String {
    format!(
        "[dataplane]\ninterfaces = [\"eth0\"]\n{dataplane}\n{BACKENDS}\n[[listener]]\nname = \"api\"\nvip = \"198.18.0.10\"\nport = 6443\n{listener}\n"
    )
}

fn parse(text: &str) -> Config {
    Config::from_toml_str(text).unwrap_or_else(|e| panic!("rejected: {e}\n{text}"))
}

/// Asserts a problem at exactly `key` whose message contains `message`.
fn assert_invalid(text: &str, key: &str, message: &str) {
    let err = Config::from_toml_str(text).expect_err(text);
    let problems = err.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.key == key && p.message.contains(message)),
        "expected `{key}: ...{message}...`, got:\n{err}"
    );
}

#[test]
fn mode_defaults_to_dnat_and_snat_keys_are_optional() {
    let c = parse(&config("", ""));
    assert_eq!(c.listeners[0].mode, ListenerMode::Dnat);
    assert_eq!(c.snat, Snat::default());
    assert_eq!(c.snat.ports, DEFAULT_SNAT_PORTS);
    assert!(!c.any_fullnat());
    assert!(!c.summary().contains("fullnat:"), "{}", c.summary());
}

#[test]
fn fullnat_listener_with_a_snat_address() {
    let c = parse(&config(
        "snat_ipv4 = [\"198.18.0.100\"]\nsnat_ports = \"2000-2999\"",
        "mode = \"fullnat\"",
    ));
    let l = &c.listeners[0];
    assert_eq!(l.mode, ListenerMode::Fullnat);
    assert_eq!(c.snat.ipv4, vec![Ipv4Addr::new(198, 18, 0, 100)]);
    assert_eq!(c.snat.ports, PortRange { lo: 2000, hi: 2999 });
    assert_eq!(c.snat.capacity_for(l.vip), 1000);
    let summary = c.summary();
    assert!(summary.contains("mode=fullnat"), "{summary}");
    assert!(
        summary.contains("client IP not preserved (nodes see 198.18.0.100 ports 2000-2999)"),
        "{summary}"
    );
    assert!(
        summary.contains("1 address(es) × 1000 ports = 1000 concurrent flows per node endpoint"),
        "{summary}"
    );
}

#[test]
fn dataplane_mode_sets_the_default_and_a_listener_overrides_it() {
    let text =
        format!(
        "{}[[listener]]\nname = \"talos\"\nvip = \"198.18.0.10\"\nport = 50000\nmode = \"dnat\"\n",
        config("mode = \"fullnat\"\nsnat_ipv4 = [\"198.18.0.100\", \"198.18.0.101\"]", "")
    );
    let c = parse(&text);
    assert_eq!(c.listeners[0].mode, ListenerMode::Fullnat);
    assert_eq!(c.listeners[1].mode, ListenerMode::Dnat);
    assert_eq!(c.snat.capacity_for(c.listeners[0].vip), 2 * 31744);
    assert!(c.summary().contains("nodes see 198.18.0.100, 198.18.0.101"));
}

#[test]
fn fullnat_without_an_address_of_the_vips_family_is_an_error_naming_the_key() {
    assert_invalid(
        &config("", "mode = \"fullnat\""),
        "listener[0] (api).mode",
        "needs a source-NAT address of the VIP's family (IPv4): set dataplane.snat_ipv4",
    );
    // An IPv6 address does not serve an IPv4 listener.
    assert_invalid(
        &config("snat_ipv6 = [\"fd00:198:18::100\"]", "mode = \"fullnat\""),
        "listener[0] (api).mode",
        "dataplane.snat_ipv4",
    );
    // The default says where the mode came from.
    assert_invalid(
        &config("mode = \"fullnat\"", ""),
        "listener[0] (api).mode",
        "(from dataplane.mode)",
    );
}

#[test]
fn ipv6_fullnat_listener_needs_snat_ipv6() {
    let v6 = "[[backend]]\nname = \"v6\"\naddress = \"fd00:198:18::11\"\n[[listener]]\nname = \"api6\"\nvip = \"fd00:198:18::10\"\nport = 6443\nbackends = [\"v6\"]\nmode = \"fullnat\"\n";
    let base = config("snat_ipv4 = [\"198.18.0.100\"]", "backends = [\"cp-01\"]");
    assert_invalid(
        &format!("{base}{v6}"),
        "listener[1] (api6).mode",
        "(IPv6): set dataplane.snat_ipv6",
    );
    let c = parse(&format!(
        "{}{v6}",
        config(
            "snat_ipv4 = [\"198.18.0.100\"]\nsnat_ipv6 = [\"fd00:198:18::100\"]",
            "backends = [\"cp-01\"]"
        )
    ));
    assert_eq!(
        c.snat.addrs_for(c.listeners[1].vip),
        vec![IpAddr::V6("fd00:198:18::100".parse::<Ipv6Addr>().unwrap())]
    );
}

#[test]
fn snat_address_lists_are_checked() {
    assert_invalid(
        &config("snat_ipv4 = []", ""),
        "dataplane.snat_ipv4",
        "at least one address",
    );
    assert_invalid(
        &config(
            "snat_ipv4 = [\"198.18.0.100\", \"198.18.0.101\", \"198.18.0.102\", \"198.18.0.103\", \"198.18.0.104\"]",
            "",
        ),
        "dataplane.snat_ipv4",
        "5 addresses exceed the data path limit of 4",
    );
    assert_invalid(
        &config("snat_ipv4 = [\"fd00::1\"]", ""),
        "dataplane.snat_ipv4[0]",
        "not an IPv4 address",
    );
    assert_invalid(
        &config("snat_ipv6 = [\"198.18.0.100\"]", ""),
        "dataplane.snat_ipv6[0]",
        "not an IPv6 address",
    );
    assert_invalid(
        &config("snat_ipv4 = [\"198.18.0.100\", \"198.18.0.100\"]", ""),
        "dataplane.snat_ipv4[1]",
        "duplicate address 198.18.0.100 (also dataplane.snat_ipv4[0])",
    );
    assert_invalid(
        &config("snat_ipv4 = [\"nope\"]", ""),
        "dataplane.snat_ipv4[0]",
        "not a valid IPv4 or IPv6 address",
    );
    assert_invalid(
        &config("snat_ipv4 = [\"224.0.0.1\"]", ""),
        "dataplane.snat_ipv4[0]",
        "multicast",
    );
}

#[test]
fn snat_address_must_not_be_a_vip_or_a_backend() {
    assert_invalid(
        &config("snat_ipv4 = [\"198.18.0.10\"]", "mode = \"fullnat\""),
        "dataplane.snat_ipv4[0]",
        "198.18.0.10 is also the VIP of listener[0] (api)",
    );
    assert_invalid(
        &config("snat_ipv4 = [\"198.18.0.12\"]", "mode = \"fullnat\""),
        "dataplane.snat_ipv4[0]",
        "198.18.0.12 is also the address of backend[1] (cp-02)",
    );
}

#[test]
fn snat_ports_are_a_range_within_1_to_65535() {
    for (text, message) in [
        ("0-100", "port 0 is out of range 1..=65535"),
        ("1024-70000", "port 70000 is out of range 1..=65535"),
        ("3000-2000", "the first port 3000 is above the last 2000"),
        ("lots", "is not a port range"),
        ("1024-", "is not a port range"),
    ] {
        assert_invalid(
            &config(&format!("snat_ports = \"{text}\""), ""),
            "dataplane.snat_ports",
            message,
        );
    }
    assert_eq!(
        parse(&config("snat_ports = \"5000\"", "")).snat.ports.len(),
        1
    );
    assert!(Config::from_toml_str(&config("snat_ports = 5000", "")).is_err());
}

#[test]
fn unknown_mode_is_a_parse_error() {
    let err = Config::from_toml_str(&config("", "mode = \"proxy\"")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("proxy"), "{err}");
}

#[test]
fn snat_ports_must_not_overlap_the_gateways_ephemeral_ports() {
    assert_eq!(
        parse_local_port_range("32768\t60999\n"),
        Some(PortRange {
            lo: 32768,
            hi: 60999
        })
    );
    assert_eq!(parse_local_port_range("garbage"), None);
    let fullnat = |ports: &str| {
        parse(&config(
            &format!("snat_ipv4 = [\"198.18.0.100\"]\nsnat_ports = \"{ports}\""),
            "mode = \"fullnat\"",
        ))
    };
    assert_eq!(
        check_local_ports(&fullnat("1024-32767"), "32768\t60999\n"),
        Ok(())
    );
    let p = check_local_ports(&fullnat("1024-40000"), "32768\t60999\n").unwrap_err();
    assert_eq!(p.key, "dataplane.snat_ports");
    assert!(
        p.message.contains(
            "1024-40000 overlaps this gateway's net.ipv4.ip_local_port_range 32768-60999"
        ),
        "{p}"
    );
    assert!(p.message.contains("\"1024-32767\""), "{p}");
    // Without a full-NAT listener the range is not used: no check.
    let dnat = parse(&config("snat_ports = \"1024-40000\"", ""));
    assert_eq!(check_local_ports(&dnat, "32768\t60999\n"), Ok(()));
    assert!(check_local_ports(&fullnat("1024-2000"), "nonsense").is_err());
}

#[test]
fn a_fullnat_gateway_without_accept_local_is_warned_about() {
    use super::snat::accept_local_warnings_with;
    let fullnat = parse(&config(
        "snat_ipv4 = [\"198.18.0.100\"]",
        "mode = \"fullnat\"",
    ));
    let off = |_: &str| Some(false);
    let w = accept_local_warnings_with(&fullnat, off);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("net.ipv4.conf.eth0.accept_local is 0"),
        "{w:?}"
    );
    assert!(w[0].contains("accept_local=1"), "{w:?}");
    let all_on = |i: &str| Some(i == "all");
    assert!(accept_local_warnings_with(&fullnat, all_on).is_empty());
    let dev_on = |i: &str| Some(i == "eth0");
    assert!(accept_local_warnings_with(&fullnat, dev_on).is_empty());
    let dnat = parse(&config("", ""));
    assert!(accept_local_warnings_with(&dnat, off).is_empty());
}
