use std::net::Ipv4Addr;
use std::time::Duration;

use super::*;

const DATAPLANE: &str = "[dataplane]\ninterfaces = [\"eth1\"]\n";

const BACKENDS: &str = r#"
[[backend]]
name = "cp-01"
address = "192.168.30.31"

[[backend]]
name = "cp-02"
address = "192.168.30.32"

[[backend]]
name = "cp-03"
address = "192.168.30.33"
"#;

const LISTENER: &str = r#"
[[listener]]
name = "kubernetes-api"
vip = "192.168.30.30"
port = 6443
"#;

/// A valid config with `extra` spliced in before the backends (top-level
/// tables such as `[health]` go there) and `tail` appended after the listener.
fn config(extra: &str, tail: &str) -> String {
    format!("{DATAPLANE}\n{extra}\n{BACKENDS}\n{LISTENER}\n{tail}")
}

fn parse(text: &str) -> Config {
    match Config::from_toml_str(text) {
        Ok(c) => c,
        Err(e) => panic!("rejected: {e}\n--- config ---\n{text}"),
    }
}

fn error(text: &str) -> ConfigError {
    match Config::from_toml_str(text) {
        Ok(c) => panic!("accepted: {c:#?}\n--- config ---\n{text}"),
        Err(e) => e,
    }
}

/// Asserts `text` fails validation with a problem at exactly `key` whose
/// message contains `message`, and that `Display` shows both.
fn assert_invalid(text: &str, key: &str, message: &str) {
    let err = error(text);
    let shown = err.to_string();
    let problems = err.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.key == key && p.message.contains(message)),
        "expected `{key}: ...{message}...`, got:\n{shown}"
    );
    assert!(shown.contains(key) && shown.contains(message), "{shown}");
}

/// Asserts `text` is rejected by the parser with a message containing every
/// one of `needles`.
fn assert_parse_error(text: &str, needles: &[&str]) {
    let err = error(text);
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    let shown = err.to_string();
    for n in needles {
        assert!(shown.contains(n), "expected {n:?} in:\n{shown}");
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

// ---- parsing ----------------------------------------------------------------

#[test]
fn full_sample_parses() {
    let text = r#"
[dataplane]
interfaces = ["eth1", "eth2"]
xdp_mode = "native"
conntrack_capacity = 65536

[api]
listen = "0.0.0.0:9000"

[health]
interval = "5s"
timeout = "500ms"
healthy_threshold = 3
unhealthy_threshold = 4
jitter = "100ms"

[[backend]]
name = "cp-01"
address = "192.168.30.31"

[[backend]]
name = "cp-02"
address = "192.168.30.32"

[[listener]]
name = "kubernetes-api"
vip = "192.168.30.30"
port = 6443
target_port = 16443
backends = ["cp-02", "cp-01"]
all_down = "drop"

[listener.health]
timeout = "2s"
"#;
    let c = parse(text);
    let defaults = HealthParams {
        interval: secs(5),
        timeout: ms(500),
        healthy_threshold: 3,
        unhealthy_threshold: 4,
        jitter: ms(100),
    };
    let expected = Config {
        dataplane: Dataplane {
            interfaces: vec!["eth1".into(), "eth2".into()],
            xdp_mode: XdpMode::Native,
            conntrack_capacity: 65536,
            pin_path: "/sys/fs/bpf/lb".into(),
            keep_attached: false,
        },
        snat: Snat::default(),
        api: Api {
            listen: "0.0.0.0:9000".parse().unwrap(),
            socket: "/run/lb/lb.sock".into(),
        },
        health: defaults.clone(),
        backends: vec![
            Backend {
                name: "cp-01".into(),
                address: Ipv4Addr::new(192, 168, 30, 31).into(),
                drained: false,
            },
            Backend {
                name: "cp-02".into(),
                address: Ipv4Addr::new(192, 168, 30, 32).into(),
                drained: false,
            },
        ],
        listeners: vec![Listener {
            name: "kubernetes-api".into(),
            vip: Ipv4Addr::new(192, 168, 30, 30).into(),
            port: 6443,
            target_port: 16443,
            mode: ListenerMode::Dnat,
            // Listed as cp-02, cp-01; resolved in [[backend]] order.
            backends: vec![0, 1],
            all_down: AllDown::Drop,
            deregistration_delay: secs(30),
            health: HealthParams {
                timeout: secs(2),
                ..defaults
            },
            // Target port 16443: no port default applies.
            check: Check::Tcp,
        }],
        cert_files: vec![],
        files: Default::default(),
    };
    assert_eq!(c, expected);
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(&config("", ""));
    assert_eq!(c.dataplane.interfaces, vec!["eth1".to_string()]);
    assert_eq!(c.dataplane.xdp_mode, XdpMode::Auto);
    assert_eq!(c.dataplane.conntrack_capacity, 262_144);
    assert_eq!(c.api.listen, "127.0.0.1:9542".parse().unwrap());
    assert_eq!(c.api.socket, std::path::PathBuf::from("/run/lb/lb.sock"));
    assert_eq!(
        c.dataplane.pin_path,
        std::path::PathBuf::from("/sys/fs/bpf/lb")
    );
    assert!(!c.dataplane.keep_attached);
    assert_eq!(c.listeners[0].deregistration_delay, secs(30));
    let h = HealthParams {
        interval: secs(2),
        timeout: secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        jitter: Duration::ZERO,
    };
    assert_eq!(c.health, h);
    assert_eq!(c.backends.len(), 3);
    let l = &c.listeners[0];
    assert_eq!(l.name, "kubernetes-api");
    assert_eq!(l.vip, Ipv4Addr::new(192, 168, 30, 30));
    assert_eq!((l.port, l.target_port), (6443, 6443));
    assert_eq!(l.backends, vec![0, 1, 2]);
    assert_eq!(l.all_down, AllDown::FailOpen);
    assert_eq!(l.health, h);
}

#[test]
fn example_file_parses_and_validates() {
    let c = parse(include_str!("../../../examples/lb.toml"));
    assert_eq!(c.dataplane.interfaces, vec!["eth1", "eth2"]);
    let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        ["cp-01", "cp-02", "cp-03", "cp-01-v6", "cp-02-v6", "cp-03-v6"]
    );
    let listeners: Vec<(&str, u16, u16)> = c
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.port, l.target_port))
        .collect();
    assert_eq!(
        listeners,
        [
            ("kubernetes-api", 6443, 6443),
            ("talos-api", 50000, 50000),
            ("talos-api-workers", 50001, 50000),
            ("kubernetes-api-v6", 6443, 6443),
        ]
    );
    for l in &c.listeners[..3] {
        assert_eq!(l.vip, Ipv4Addr::new(192, 168, 30, 30));
        assert_eq!(l.backends, vec![0, 1, 2]);
    }
    // The dual-stack half: an IPv6 VIP over the nodes' IPv6 addresses.
    let v6 = &c.listeners[3];
    assert_eq!(v6.vip.to_string(), "2001:db8:30::30");
    assert_eq!(v6.backends, vec![3, 4, 5]);
    assert!(v6.backends.iter().all(|&b| c.backends[b].address.is_ipv6()));
}

#[test]
fn durations_parse() {
    let c = parse(&config(
        "[health]\ninterval = \"1m\"\ntimeout = \"500ms\"\njitter = \"2s\"\n",
        "",
    ));
    assert_eq!(c.health.interval, secs(60));
    assert_eq!(c.health.timeout, ms(500));
    assert_eq!(c.health.jitter, secs(2));
}

#[test]
fn bad_duration_is_rejected() {
    assert_invalid(
        &config("[health]\ninterval = \"two seconds\"\n", ""),
        "health.interval",
        "invalid duration \"two seconds\"",
    );
    assert_invalid(
        &config("", "[listener.health]\ntimeout = \"5\"\n"),
        "listener[0] (kubernetes-api).health.timeout",
        "invalid duration \"5\"",
    );
}

#[test]
fn duration_of_wrong_type_is_a_parse_error() {
    assert_parse_error(
        &config("[health]\ninterval = 2\n", ""),
        &["interval", "invalid type"],
    );
}

#[test]
fn listener_health_override_merges_with_defaults() {
    let text = config(
        "[health]\ninterval = \"4s\"\nhealthy_threshold = 5\n",
        "[listener.health]\ntimeout = \"3s\"\nunhealthy_threshold = 7\n\n\
         [[listener]]\nname = \"talos-api\"\nvip = \"192.168.30.30\"\nport = 50000\n",
    );
    let c = parse(&text);
    let defaults = HealthParams {
        interval: secs(4),
        timeout: secs(1),
        healthy_threshold: 5,
        unhealthy_threshold: 2,
        jitter: Duration::ZERO,
    };
    assert_eq!(c.health, defaults);
    assert_eq!(
        c.listeners[0].health,
        HealthParams {
            timeout: secs(3),
            unhealthy_threshold: 7,
            ..defaults.clone()
        }
    );
    assert_eq!(c.listeners[1].health, defaults);
}

#[test]
fn enums_parse_and_display() {
    for (text, mode) in [
        ("auto", XdpMode::Auto),
        ("native", XdpMode::Native),
        ("generic", XdpMode::Generic),
    ] {
        let c = parse(&format!(
            "[dataplane]\ninterfaces = [\"eth1\"]\nxdp_mode = \"{text}\"\n{BACKENDS}{LISTENER}"
        ));
        assert_eq!(c.dataplane.xdp_mode, mode);
        assert_eq!(mode.to_string(), text);
    }
    for (text, all_down) in [("fail_open", AllDown::FailOpen), ("drop", AllDown::Drop)] {
        let c = parse(&config("", &format!("all_down = \"{text}\"\n")));
        assert_eq!(c.listeners[0].all_down, all_down);
        assert_eq!(all_down.to_string(), text);
    }
}

#[test]
fn bad_enum_values_are_parse_errors() {
    assert_parse_error(
        &format!("[dataplane]\ninterfaces = [\"eth1\"]\nxdp_mode = \"fast\"\n{BACKENDS}{LISTENER}"),
        &["fast", "auto", "native", "generic"],
    );
    assert_parse_error(
        &config("", "all_down = \"failopen\"\n"),
        &["failopen", "fail_open", "drop"],
    );
}

// ---- unknown keys -----------------------------------------------------------

#[test]
fn unknown_top_level_key_is_rejected() {
    assert_parse_error(&format!("verbose = true\n{}", config("", "")), &["verbose"]);
    // A misspelt array-of-tables name is an unknown top-level key too.
    assert_parse_error(&config("", "[[listeners]]\nname = \"x\"\n"), &["listeners"]);
}

#[test]
fn unknown_dataplane_key_is_rejected() {
    assert_parse_error(
        &format!("[dataplane]\ninterfaces = [\"eth1\"]\nxdp_mod = \"auto\"\n{BACKENDS}{LISTENER}"),
        &["xdp_mod"],
    );
}

#[test]
fn unknown_listener_key_is_rejected() {
    assert_parse_error(&config("", "targetport = 6443\n"), &["targetport"]);
}

#[test]
fn unknown_listener_health_key_is_rejected() {
    assert_parse_error(
        &config("", "[listener.health]\nthreshold = 3\n"),
        &["threshold"],
    );
}

#[test]
fn unknown_keys_elsewhere_are_rejected() {
    assert_parse_error(&config("[health]\nretries = 3\n", ""), &["retries"]);
    assert_parse_error(&config("[api]\nport = 1\n", ""), &["port"]);
    assert_parse_error(
        &format!(
            "{DATAPLANE}[[backend]]\nname = \"a\"\naddress = \"10.0.0.1\"\nweight = 2\n{LISTENER}"
        ),
        &["weight"],
    );
}

// ---- validation: dataplane and api --------------------------------------------

#[test]
fn interfaces_are_required() {
    assert_invalid(
        &format!("{BACKENDS}{LISTENER}"),
        "dataplane.interfaces",
        "is required",
    );
}

#[test]
fn interfaces_must_not_be_empty() {
    assert_invalid(
        &format!("[dataplane]\ninterfaces = []\n{BACKENDS}{LISTENER}"),
        "dataplane.interfaces",
        "at least one interface",
    );
}

#[test]
fn duplicate_interface_is_rejected() {
    assert_invalid(
        &format!("[dataplane]\ninterfaces = [\"eth1\", \"eth2\", \"eth1\"]\n{BACKENDS}{LISTENER}"),
        "dataplane.interfaces[2]",
        "duplicate interface \"eth1\"",
    );
}

#[test]
fn invalid_interface_names_are_rejected() {
    for (name, message) in [
        ("", "must not be empty"),
        ("abcdefghijklmnop", "longer than 15 bytes"),
        ("eth/1", "must not contain '/'"),
        ("eth 1", "whitespace"),
        ("eth0:1", "':'"),
        ("..", "not a valid interface name"),
    ] {
        assert_invalid(
            &format!("[dataplane]\ninterfaces = [\"eth0\", \"{name}\"]\n{BACKENDS}{LISTENER}"),
            "dataplane.interfaces[1]",
            message,
        );
    }
    // 15 bytes is the longest allowed.
    parse(&format!(
        "[dataplane]\ninterfaces = [\"abcdefghijklmno\"]\n{BACKENDS}{LISTENER}"
    ));
}

#[test]
fn too_many_interfaces_are_rejected() {
    let names: Vec<String> = (0..=MAX_INTERFACES).map(|i| format!("\"e{i}\"")).collect();
    assert_invalid(
        &format!(
            "[dataplane]\ninterfaces = [{}]\n{BACKENDS}{LISTENER}",
            names.join(", ")
        ),
        "dataplane.interfaces",
        "exceed the data path limit of 64",
    );
}

#[test]
fn conntrack_capacity_out_of_range_is_rejected() {
    for n in [0, 1023, 16_777_217, -1] {
        assert_invalid(
            &format!(
                "[dataplane]\ninterfaces = [\"eth1\"]\nconntrack_capacity = {n}\n{BACKENDS}{LISTENER}"
            ),
            "dataplane.conntrack_capacity",
            "out of range 1024..=16777216",
        );
    }
    for n in [1024, 16_777_216] {
        let c = parse(&format!(
            "[dataplane]\ninterfaces = [\"eth1\"]\nconntrack_capacity = {n}\n{BACKENDS}{LISTENER}"
        ));
        assert_eq!(c.dataplane.conntrack_capacity, n);
    }
}

#[test]
fn bad_api_listen_is_rejected() {
    assert_invalid(
        &config("[api]\nlisten = \"localhost\"\n", ""),
        "api.listen",
        "\"localhost\" is not a socket address",
    );
    let c = parse(&config("[api]\nlisten = \"[::1]:9542\"\n", ""));
    assert_eq!(c.api.listen, "[::1]:9542".parse().unwrap());
}

// ---- validation: backends -----------------------------------------------------

#[test]
fn at_least_one_backend_is_required() {
    assert_invalid(
        &format!("{DATAPLANE}{LISTENER}"),
        "backend",
        "at least one [[backend]] is required",
    );
}

#[test]
fn duplicate_backend_name_is_rejected() {
    let text = config(
        "", "", // backends come from BACKENDS; add a fourth reusing a name
    )
    .replace(
        "[[listener]]",
        "[[backend]]\nname = \"cp-02\"\naddress = \"192.168.30.34\"\n\n[[listener]]",
    );
    assert_invalid(
        &text,
        "backend[3] (cp-02).name",
        "duplicate backend name \"cp-02\" (also backend[1] (cp-02))",
    );
}

#[test]
fn empty_backend_name_is_rejected() {
    let text = config("", "").replace("name = \"cp-03\"", "name = \"\"");
    assert_invalid(&text, "backend[2].name", "name must not be empty");
}

#[test]
fn backend_name_with_bad_characters_is_rejected() {
    let text = config("", "").replace("name = \"cp-03\"", "name = \"cp 03\"");
    assert_invalid(
        &text,
        "backend[2] (cp 03).name",
        "may only contain letters, digits, '.', '_' and '-'",
    );
    // The allowed punctuation is fine.
    parse(&config("", "").replace("name = \"cp-03\"", "name = \"cp_03.example-x\""));
}

#[test]
fn duplicate_backend_address_is_rejected() {
    let text = config("", "").replace("192.168.30.33", "192.168.30.31");
    assert_invalid(
        &text,
        "backend[2] (cp-03).address",
        "duplicate backend address 192.168.30.31 (also backend[0] (cp-01))",
    );
}

#[test]
fn unusable_backend_addresses_are_rejected() {
    for (address, message) in [
        ("0.0.0.0", "unspecified address"),
        ("224.0.0.5", "multicast address"),
        ("255.255.255.255", "broadcast address"),
        (
            "cp-03.example",
            "\"cp-03.example\" is not a valid IPv4 or IPv6 address",
        ),
        ("192.168.30.300", "not a valid IPv4 or IPv6 address"),
        ("::", "unspecified address"),
        ("ff02::1", "multicast address"),
        ("fe80::1", "link-local address"),
        ("::1", "reserved ::/96 range"),
        ("::ffff:192.168.30.33", "IPv4-mapped"),
    ] {
        let text = config("", "").replace("192.168.30.33", address);
        assert_invalid(&text, "backend[2] (cp-03).address", message);
    }
}

/// The issue's rule: a listener's backends are of its VIP's family (no
/// NAT46/64); the problem names the listener and the backend.
#[test]
fn backend_of_the_other_family_is_rejected_naming_listener_and_backend() {
    // Every backend (no `backends` key): the listener's key is at fault.
    let text = config("", "").replace("192.168.30.33", "2001:db8::33");
    assert_invalid(
        &text,
        "listener[0] (kubernetes-api).backends",
        "backend[2] (cp-03) has the IPv6 address 2001:db8::33, but the listener's VIP 192.168.30.30 is IPv4",
    );
    assert_eq!(error(&text).problems().len(), 1);
    // An explicit list: the entry naming the backend is at fault.
    let text = format!("{text}backends = [\"cp-01\", \"cp-03\"]\n");
    assert_invalid(
        &text,
        "listener[0] (kubernetes-api).backends[1]",
        "no NAT46/NAT64",
    );
}

/// A dual-stack endpoint is two listeners, each over backends of its family.
#[test]
fn dual_stack_is_two_listeners_of_one_family_each() {
    let text = format!(
        "{DATAPLANE}{BACKENDS}{LISTENER}backends = [\"cp-01\", \"cp-02\", \"cp-03\"]\n\n\
         [[backend]]\nname = \"cp-01-v6\"\naddress = \"2001:db8:30::31\"\n\n\
         [[backend]]\nname = \"cp-02-v6\"\naddress = \"2001:db8:30::32\"\n\n\
         [[listener]]\nname = \"kubernetes-api-v6\"\nvip = \"2001:db8:30::30\"\nport = 6443\n\
         backends = [\"cp-01-v6\", \"cp-02-v6\"]\n"
    );
    let c = parse(&text);
    let v6 = &c.listeners[1];
    assert_eq!(
        v6.vip,
        "2001:db8:30::30".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(v6.backends, [3, 4]);
    assert_eq!(c.backends[3].address.to_string(), "2001:db8:30::31");
    // The effective settings show the VIP:port in socket-address form.
    let shown = c.summary();
    assert!(
        shown.contains("kubernetes-api-v6 [2001:db8:30::30]:6443 -> 6443"),
        "{shown}"
    );
    // Two IPv6 listeners on the same VIP:port collide as IPv4 ones do.
    let dup = format!(
        "{text}\n[[listener]]\nname = \"again\"\nvip = \"2001:db8:30::30\"\nport = 6443\nbackends = [\"cp-01-v6\"]\n"
    );
    assert_invalid(
        &dup,
        "listener[2] (again).port",
        "[2001:db8:30::30]:6443 is already used by listener[1] (kubernetes-api-v6)",
    );
}

// ---- validation: listeners ----------------------------------------------------

#[test]
fn at_least_one_listener_is_required() {
    assert_invalid(
        &format!("{DATAPLANE}{BACKENDS}"),
        "listener",
        "at least one [[listener]] is required",
    );
}

#[test]
fn duplicate_listener_name_is_rejected() {
    assert_invalid(
        &config(
            "",
            "[[listener]]\nname = \"kubernetes-api\"\nvip = \"192.168.30.30\"\nport = 50000\n",
        ),
        "listener[1] (kubernetes-api).name",
        "duplicate listener name \"kubernetes-api\" (also listener[0] (kubernetes-api))",
    );
}

#[test]
fn listener_name_with_bad_characters_or_empty_is_rejected() {
    assert_invalid(
        &config("", "").replace("\"kubernetes-api\"", "\"kube/api\""),
        "listener[0] (kube/api).name",
        "may only contain letters, digits, '.', '_' and '-'",
    );
    assert_invalid(
        &config("", "").replace("\"kubernetes-api\"", "\"\""),
        "listener[0].name",
        "name must not be empty",
    );
}

#[test]
fn port_zero_is_rejected() {
    assert_invalid(
        &config("", "").replace("port = 6443", "port = 0"),
        "listener[0] (kubernetes-api).port",
        "port 0 is not allowed",
    );
}

#[test]
fn target_port_zero_is_rejected() {
    assert_invalid(
        &config("", "target_port = 0\n"),
        "listener[0] (kubernetes-api).target_port",
        "port 0 is not allowed",
    );
}

#[test]
fn port_out_of_range_is_rejected() {
    assert_invalid(
        &config("", "").replace("port = 6443", "port = 65536"),
        "listener[0] (kubernetes-api).port",
        "port 65536 is out of range 1..=65535",
    );
    assert_invalid(
        &config("", "target_port = -1\n"),
        "listener[0] (kubernetes-api).target_port",
        "port -1 is out of range 1..=65535",
    );
}

#[test]
fn duplicate_vip_and_port_is_rejected() {
    assert_invalid(
        &config(
            "",
            "[[listener]]\nname = \"again\"\nvip = \"192.168.30.30\"\nport = 6443\ntarget_port = 7443\n",
        ),
        "listener[1] (again).port",
        "192.168.30.30:6443 is already used by listener[0] (kubernetes-api)",
    );
    // Same port on another VIP is fine.
    parse(&config(
        "",
        "[[listener]]\nname = \"other\"\nvip = \"192.168.30.29\"\nport = 6443\n",
    ));
}

#[test]
fn unknown_backend_in_listener_is_rejected() {
    assert_invalid(
        &config("", "backends = [\"cp-01\", \"cp-09\"]\n"),
        "listener[0] (kubernetes-api).backends[1]",
        "unknown backend \"cp-09\"",
    );
}

#[test]
fn duplicate_backend_in_listener_is_rejected() {
    assert_invalid(
        &config("", "backends = [\"cp-01\", \"cp-02\", \"cp-01\"]\n"),
        "listener[0] (kubernetes-api).backends[2]",
        "backend \"cp-01\" is listed twice",
    );
}

#[test]
fn empty_backend_list_in_listener_is_rejected() {
    assert_invalid(
        &config("", "backends = []\n"),
        "listener[0] (kubernetes-api).backends",
        "must not be empty",
    );
}

#[test]
fn listener_backend_subset_resolves_to_indices() {
    let c = parse(&config("", "backends = [\"cp-03\", \"cp-01\"]\n"));
    assert_eq!(c.listeners[0].backends, vec![0, 2]);
}

#[test]
fn vip_that_is_a_backend_address_is_rejected() {
    assert_invalid(
        &config("", "").replace("vip = \"192.168.30.30\"", "vip = \"192.168.30.32\""),
        "listener[0] (kubernetes-api).vip",
        "192.168.30.32 is also the address of backend[1] (cp-02); a VIP must not be a backend address",
    );
}

#[test]
fn unusable_vip_is_rejected() {
    for (vip, message) in [
        ("0.0.0.0", "unspecified address"),
        ("239.1.1.1", "multicast address"),
        ("255.255.255.255", "broadcast address"),
        ("ff02::2", "multicast address"),
        ("::", "unspecified address"),
        ("vip", "not a valid IPv4 or IPv6 address"),
    ] {
        assert_invalid(
            &config("", "").replace("vip = \"192.168.30.30\"", &format!("vip = \"{vip}\"")),
            "listener[0] (kubernetes-api).vip",
            message,
        );
    }
}

#[test]
fn too_many_listeners_are_rejected() {
    let mut extra = String::new();
    for i in 1..=MAX_LISTENERS {
        extra.push_str(&format!(
            "[[listener]]\nname = \"l{i}\"\nvip = \"192.168.30.30\"\nport = {}\n",
            10_000 + i
        ));
    }
    assert_invalid(
        &config("", &extra),
        "listener",
        "33 listeners exceed the data path limit of 32",
    );
}

#[test]
fn too_many_reals_are_rejected() {
    // 32 listeners x 129 backends = 4128 pairs > 4096.
    let mut text = String::from(DATAPLANE);
    for i in 0..129 {
        text.push_str(&format!(
            "[[backend]]\nname = \"b{i}\"\naddress = \"10.0.{}.{}\"\n",
            i / 200,
            i % 200 + 1
        ));
    }
    for i in 0..MAX_LISTENERS {
        text.push_str(&format!(
            "[[listener]]\nname = \"l{i}\"\nvip = \"192.168.30.30\"\nport = {}\n",
            10_000 + i
        ));
    }
    assert_invalid(
        &text,
        "listener",
        "4128 (listener, backend) pairs exceed the data path limit of 4096",
    );
    // 32 x 128 = 4096 exactly is fine.
    let ok = text.replace(
        "[[backend]]\nname = \"b128\"\naddress = \"10.0.0.129\"\n",
        "",
    );
    let c = parse(&ok);
    assert_eq!(c.listeners.len(), 32);
    assert_eq!(c.backends.len(), 128);
}

// ---- validation: health ---------------------------------------------------------

#[test]
fn interval_must_exceed_timeout() {
    assert_invalid(
        &config("[health]\ninterval = \"1s\"\ntimeout = \"1s\"\n", ""),
        "health.interval",
        "interval (1s) must be greater than timeout (1s)",
    );
    // A listener override that breaks the relation is named at the listener.
    assert_invalid(
        &config(
            "",
            "[[listener]]\nname = \"talos-api\"\nvip = \"192.168.30.30\"\nport = 50000\n\
             [listener.health]\ntimeout = \"3s\"\n",
        ),
        "listener[1] (talos-api).health.timeout",
        "interval (2s) must be greater than timeout (3s)",
    );
}

#[test]
fn timeout_must_be_positive() {
    assert_invalid(
        &config("[health]\ntimeout = \"0s\"\n", ""),
        "health.timeout",
        "timeout must be greater than 0",
    );
    assert_invalid(
        &config("", "[listener.health]\ntimeout = \"0ms\"\n"),
        "listener[0] (kubernetes-api).health.timeout",
        "timeout must be greater than 0",
    );
}

#[test]
fn thresholds_must_be_in_range() {
    for (key, value) in [
        ("healthy_threshold", 0),
        ("healthy_threshold", 101),
        ("unhealthy_threshold", 0),
        ("unhealthy_threshold", 101),
        ("unhealthy_threshold", -5),
    ] {
        assert_invalid(
            &config(&format!("[health]\n{key} = {value}\n"), ""),
            &format!("health.{key}"),
            &format!("{key} {value} is out of range 1..=100"),
        );
        assert_invalid(
            &config("", &format!("[listener.health]\n{key} = {value}\n")),
            &format!("listener[0] (kubernetes-api).health.{key}"),
            &format!("{key} {value} is out of range 1..=100"),
        );
    }
    let c = parse(&config(
        "[health]\nhealthy_threshold = 1\nunhealthy_threshold = 100\n",
        "",
    ));
    assert_eq!(
        (c.health.healthy_threshold, c.health.unhealthy_threshold),
        (1, 100)
    );
}

#[test]
fn jitter_must_be_less_than_interval() {
    assert_invalid(
        &config("[health]\njitter = \"2s\"\n", ""),
        "health.jitter",
        "jitter (2s) must be less than interval (2s)",
    );
    // Shrinking the interval under the default jitter at a listener names the interval.
    assert_invalid(
        &config(
            "[health]\njitter = \"1500ms\"\n",
            "[listener.health]\ninterval = \"1200ms\"\ntimeout = \"1s\"\n",
        ),
        "listener[0] (kubernetes-api).health.interval",
        "jitter (1.5s) must be less than interval (1.2s)",
    );
}

#[test]
fn bad_global_health_is_reported_once_not_per_listener() {
    let err = error(&config(
        "[health]\ninterval = \"1s\"\n",
        "[[listener]]\nname = \"talos-api\"\nvip = \"192.168.30.30\"\nport = 50000\n",
    ));
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    assert_eq!(problems[0].key, "health.interval");
}

// ---- errors, loading, output ------------------------------------------------------

#[test]
fn every_problem_is_reported() {
    let text = config("[health]\ntimeout = \"0s\"\n", "target_port = 0\n")
        .replace("192.168.30.33", "224.0.0.1");
    let err = error(&text);
    let keys: Vec<String> = err.problems().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "health.timeout",
            "backend[2] (cp-03).address",
            "listener[0] (kubernetes-api).target_port",
        ]
    );
    let shown = err.to_string();
    assert!(
        shown.starts_with("3 problems:\n  health.timeout: "),
        "{shown}"
    );
}

#[test]
fn single_problem_is_an_invalid_error() {
    let err = error(&config("", "target_port = 0\n"));
    match err {
        ConfigError::Invalid { key, message } => {
            assert_eq!(key, "listener[0] (kubernetes-api).target_port");
            assert_eq!(message, "port 0 is not allowed");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config("", "")).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.listeners.len(), 1);
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.toml"), "{err}");

    let invalid = dir.path().join("invalid.toml");
    std::fs::write(&invalid, config("", "target_port = 0\n")).unwrap();
    let err = Config::load(&invalid).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("invalid.toml"), "{shown}");
    assert!(
        shown.contains("listener[0] (kubernetes-api).target_port: port 0 is not allowed"),
        "{shown}"
    );
    assert_eq!(err.problems().len(), 1);

    let garbled = dir.path().join("garbled.toml");
    std::fs::write(&garbled, "[dataplane\n").unwrap();
    let shown = Config::load(&garbled).unwrap_err().to_string();
    assert!(shown.contains("garbled.toml"), "{shown}");
    assert!(shown.contains("line 1"), "{shown}");
}

#[test]
fn serializes_durations_as_humantime_strings() {
    let c = parse(&config("[health]\ntimeout = \"1500ms\"\n", ""));
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["health"]["interval"], "2s");
    assert_eq!(json["health"]["timeout"], "1.5s");
    assert_eq!(json["health"]["jitter"], "0s");
    assert_eq!(json["dataplane"]["xdp_mode"], "auto");
    assert_eq!(json["listeners"][0]["all_down"], "fail_open");
    assert_eq!(json["listeners"][0]["vip"], "192.168.30.30");
    assert_eq!(
        json["listeners"][0]["backends"],
        serde_json::json!([0, 1, 2])
    );
}

#[test]
fn summary_describes_everything() {
    let c = parse(include_str!("../../../examples/lb.toml"));
    let s = c.summary();
    assert!(s.contains("interfaces: eth1, eth2 (xdp_mode=auto"), "{s}");
    assert!(
        s.contains(
            "talos-api-workers 192.168.30.30:50001 -> 50000 mode=dnat backends \
             [cp-01 192.168.30.31, cp-02 192.168.30.32, cp-03 192.168.30.33] \
             all_down=drop health: interval=2s timeout=1s healthy=2 unhealthy=2 jitter=200ms"
        ),
        "{s}"
    );
    assert!(
        s.contains(
            "kubernetes-api 192.168.30.30:6443 -> 6443 mode=dnat backends [cp-01 192.168.30.31"
        ),
        "{s}"
    );
    assert!(s.lines().count() >= 10, "{s}");
}

#[test]
fn lifecycle_keys_parse_and_validate() {
    let c = parse(&config(
        "pin_path = \"/run/bpf/lb\"\nkeep_attached = true\n",
        "deregistration_delay = \"5m\"\n",
    ));
    assert_eq!(
        c.dataplane.pin_path,
        std::path::PathBuf::from("/run/bpf/lb")
    );
    assert!(c.dataplane.keep_attached);
    assert_eq!(c.listeners[0].deregistration_delay, secs(300));
    let e = Config::from_toml_str(&config("pin_path = \"relative/dir\"\n", "")).unwrap_err();
    assert!(e.to_string().contains("dataplane.pin_path"), "{e}");
    let e = Config::from_toml_str(&config("", "deregistration_delay = \"soon\"\n")).unwrap_err();
    assert!(e.to_string().contains("deregistration_delay"), "{e}");
}

/// Issue 11, finding 2: only regular files of at most 4 MiB are read, and a
/// FIFO without a writer is refused at once instead of blocking.
#[test]
fn config_reads_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let t0 = std::time::Instant::now();
    let e = Config::load(&fifo).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(1));
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let e = Config::load(&zero).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let big = dir.path().join("big.toml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
    let e = Config::load(&big).unwrap_err().to_string();
    assert!(e.contains("MiB"), "{e}");
}
