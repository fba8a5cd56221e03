//! Check keys: kinds and their defaults by port, merging `[health]` with
//! `[listener.health]`, and validation naming the key at fault.

use std::path::Path;

use super::*;
use crate::health::test_pki::TestCa;

/// A config with `health` as the `[health]` table's body and one listener
/// per `(name, port, target_port, health body)`.
fn config(health: &str, listeners: &[(&str, u16, u16, &str)]) -> String {
    let mut s = String::from(
        "[dataplane]\ninterfaces = [\"eth1\"]\n\n[health]\n\
         interval = \"2s\"\ntimeout = \"1s\"\n",
    );
    s.push_str(health);
    s.push_str(
        "\n[[backend]]\nname = \"cp-01\"\naddress = \"192.168.30.31\"\n\
         [[backend]]\nname = \"cp-02\"\naddress = \"192.168.30.32\"\n",
    );
    for (name, port, target, health) in listeners {
        s.push_str(&format!(
            "\n[[listener]]\nname = \"{name}\"\nvip = \"192.168.30.30\"\n\
             port = {port}\ntarget_port = {target}\n"
        ));
        if !health.is_empty() {
            s.push_str(&format!("[listener.health]\n{health}\n"));
        }
    }
    s
}

/// Validation, then the certificate files (as the daemon and `lb check`
/// apply a configuration).
fn applied(text: &str) -> Result<Config, ConfigError> {
    let mut c = Config::from_toml_str(text)?;
    crate::health::files::load(&mut c)?;
    Ok(c)
}

fn parse(text: &str) -> Config {
    applied(text).unwrap_or_else(|e| panic!("rejected: {e}\n{text}"))
}

/// Asserts a problem at exactly `key` whose message contains `message`.
fn assert_invalid(text: &str, key: &str, message: &str) {
    let err = match applied(text) {
        Ok(c) => panic!("accepted: {:#?}\n{text}", c.listeners),
        Err(e) => e,
    };
    let problems = err.problems();
    assert!(
        problems
            .iter()
            .any(|p| p.key == key && p.message.contains(message)),
        "expected `{key}: ...{message}...`, got:\n{err}"
    );
}

/// Asserts `text` is valid.
fn assert_valid(text: &str) -> Config {
    parse(text)
}

fn q(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

const API: &str = "listener[0] (api).health";

#[test]
fn kinds_default_by_target_port() {
    let c = parse(&config(
        "",
        &[
            ("api", 6443, 6443, ""),
            ("talos", 50000, 50000, ""),
            ("talos-workers", 50001, 50000, ""),
            ("api-alt", 443, 6443, ""),
            ("etcd", 2379, 2379, ""),
            ("moved", 6445, 16443, ""),
        ],
    ));
    let kinds: Vec<CheckKind> = c.listeners.iter().map(|l| l.check.kind()).collect();
    assert_eq!(
        kinds,
        [
            CheckKind::Https,
            CheckKind::Tls,
            CheckKind::Tls,
            CheckKind::Https,
            CheckKind::Tcp,
            CheckKind::Tcp
        ]
    );
    assert_eq!(
        c.listeners[0].check,
        Check::Https(HttpsParams {
            path: "/readyz".into(),
            expect_status: vec![200],
            tls: TlsParams::default(),
        })
    );
    assert_eq!(c.listeners[1].check, Check::Tls(TlsParams::default()));
    assert_eq!(c.listeners[4].check, Check::Tcp);
    for port in [1, 80, 6444, 49999, 50001, 65535] {
        assert_eq!(CheckKind::default_for_port(port), CheckKind::Tcp, "{port}");
    }
}

#[test]
fn kind_in_health_applies_to_all_and_listeners_override_it() {
    let c = parse(&config(
        "kind = \"tcp\"\n",
        &[
            ("api", 6443, 6443, ""),
            ("talos", 50000, 50000, "kind = \"tls\"\n"),
            ("etcd", 2379, 2379, "kind = \"https\"\npath = \"/health\"\n"),
        ],
    ));
    assert_eq!(c.listeners[0].check, Check::Tcp);
    assert_eq!(c.listeners[1].check, Check::Tls(TlsParams::default()));
    match &c.listeners[2].check {
        Check::Https(h) => assert_eq!(h.path, "/health"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn https_and_tls_keys_resolve_and_merge_with_health() {
    let ca = TestCa::new("ca");
    let client = ca.client("client", "lb");
    let health = format!(
        "ca_file = {}\nclient_cert = {}\nclient_key = {}\nexpect_status = [401, 200]\n",
        q(&ca.ca_file()),
        q(&client.cert_file),
        q(&client.key_file)
    );
    let c = parse(&config(
        &health,
        &[
            (
                "api",
                6443,
                6443,
                "path = \"/readyz?verbose\"\nserver_name = \"kubernetes.default.svc\"\n",
            ),
            ("talos", 50000, 50000, "server_name = \"198.18.2.11\"\n"),
            // Defaults to tcp: [health]'s TLS keys do not apply, no error.
            ("etcd", 2379, 2379, ""),
        ],
    ));
    let auth = Some(ClientAuth {
        cert: client.cert_file.clone(),
        key: client.key_file.clone(),
    });
    assert_eq!(
        c.listeners[0].check,
        Check::Https(HttpsParams {
            path: "/readyz?verbose".into(),
            expect_status: vec![200, 401],
            tls: TlsParams {
                server_name: Some("kubernetes.default.svc".into()),
                ca_file: Some(ca.ca_file()),
                client_auth: auth.clone(),
            },
        })
    );
    assert_eq!(
        c.listeners[1].check,
        Check::Tls(TlsParams {
            server_name: Some("198.18.2.11".into()),
            ca_file: Some(ca.ca_file()),
            client_auth: auth,
        })
    );
    assert_eq!(c.listeners[2].check, Check::Tcp);
}

#[test]
fn unusable_ca_file_names_the_key() {
    let ca = TestCa::new("ca");
    let missing = ca.dir().join("missing.pem");
    let key = ca.client("c", "c").key_file;
    assert_invalid(
        &config(
            "",
            &[("api", 6443, 6443, &format!("ca_file = {}", q(&missing)))],
        ),
        &format!("{API}.ca_file"),
        "cannot read",
    );
    assert_invalid(
        &config(
            "",
            &[("api", 6443, 6443, &format!("ca_file = {}", q(&key)))],
        ),
        &format!("{API}.ca_file"),
        "holds no CERTIFICATE",
    );
    // In [health] it is reported once, at [health].
    let err = applied(&config(
        &format!("ca_file = {}\n", q(&missing)),
        &[("api", 6443, 6443, ""), ("talos", 50000, 50000, "")],
    ))
    .unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    assert_eq!(problems[0].key, "health.ca_file");
}

#[test]
fn client_cert_and_key_go_together_and_must_match() {
    let ca = TestCa::new("ca");
    let a = ca.client("a", "a");
    let b = ca.client("b", "b");
    assert_invalid(
        &config(
            "",
            &[(
                "api",
                6443,
                6443,
                &format!("client_cert = {}", q(&a.cert_file)),
            )],
        ),
        &format!("{API}.client_cert"),
        "client_cert needs client_key",
    );
    assert_invalid(
        &config(
            "",
            &[(
                "api",
                6443,
                6443,
                &format!("client_key = {}", q(&a.key_file)),
            )],
        ),
        &format!("{API}.client_key"),
        "client_key needs client_cert",
    );
    let pair = |cert: &Path, key: &Path| {
        config(
            "",
            &[(
                "api",
                6443,
                6443,
                &format!("client_cert = {}\nclient_key = {}", q(cert), q(key)),
            )],
        )
    };
    assert_invalid(
        &pair(&a.cert_file, &b.key_file),
        &format!("{API}.client_key"),
        "not usable with client_cert",
    );
    assert_invalid(
        &pair(&a.key_file, &a.key_file),
        &format!("{API}.client_cert"),
        "holds no CERTIFICATE",
    );
    assert_invalid(
        &pair(&a.cert_file, &a.cert_file),
        &format!("{API}.client_key"),
        "holds no PRIVATE KEY",
    );
    assert_valid(&pair(&a.cert_file, &a.key_file));
}

#[test]
fn path_must_be_a_request_path() {
    for (path, message) in [
        ("readyz", "must start with '/'"),
        ("", "must start with '/'"),
        ("http://x/readyz", "must start with '/'"),
        ("/ready z", "not a valid request path"),
    ] {
        assert_invalid(
            &config("", &[("api", 6443, 6443, &format!("path = {path:?}"))]),
            &format!("{API}.path"),
            message,
        );
    }
    assert_invalid(
        &config("path = \"livez\"\n", &[("api", 6443, 6443, "")]),
        "health.path",
        "must start with '/'",
    );
}

#[test]
fn expect_status_is_a_list_of_http_statuses() {
    for (list, message) in [
        ("[]", "at least one"),
        ("[99]", "status 99 is out of range 100..=599"),
        ("[200, 600]", "status 600 is out of range"),
        ("[-200]", "out of range"),
        ("[200, 200]", "status 200 is listed twice"),
    ] {
        assert_invalid(
            &config(
                "",
                &[("api", 6443, 6443, &format!("expect_status = {list}"))],
            ),
            &format!("{API}.expect_status"),
            message,
        );
    }
    let c = parse(&config(
        "",
        &[("api", 6443, 6443, "expect_status = [599, 100, 401]")],
    ));
    match &c.listeners[0].check {
        Check::Https(h) => assert_eq!(h.expect_status, vec![100, 401, 599]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn server_name_must_be_a_name_or_address() {
    assert_invalid(
        &config("", &[("api", 6443, 6443, "server_name = \"not a name!\"")]),
        &format!("{API}.server_name"),
        "neither a DNS name nor an IP address",
    );
}

#[test]
fn keys_that_do_not_apply_to_the_kind_are_rejected() {
    let ca = TestCa::new("ca");
    let ca_line = format!("ca_file = {}", q(&ca.ca_file()));
    // Explicit tcp with a TLS key.
    assert_invalid(
        &config(
            "",
            &[("api", 6443, 6443, &format!("kind = \"tcp\"\n{ca_line}"))],
        ),
        &format!("{API}.ca_file"),
        "only applies to tls and https checks, and this check is tcp",
    );
    // tcp by port default.
    assert_invalid(
        &config("", &[("etcd", 2379, 2379, "server_name = \"etcd\"")]),
        "listener[0] (etcd).health.server_name",
        "this check is tcp (the default for its target port)",
    );
    // tcp from [health].
    assert_invalid(
        &config(
            "kind = \"tcp\"\n",
            &[("api", 6443, 6443, "path = \"/livez\"")],
        ),
        &format!("{API}.path"),
        "this check is tcp (the kind set in [health])",
    );
    // HTTP keys on a tls check.
    for key in ["path = \"/readyz\"", "expect_status = [200]"] {
        let field = key.split(' ').next().unwrap();
        assert_invalid(
            &config("", &[("talos", 50000, 50000, key)]),
            &format!("listener[0] (talos).health.{field}"),
            &format!("{field} only applies to https checks, and this check is tls"),
        );
    }
    // [health] with an explicit kind is held to it.
    assert_invalid(
        &config(
            &format!("kind = \"tcp\"\n{ca_line}\n"),
            &[("api", 6443, 6443, "")],
        ),
        "health.ca_file",
        "only applies to tls and https checks",
    );
    assert_invalid(
        &config(
            "kind = \"tls\"\nexpect_status = [200]\n",
            &[("api", 6443, 6443, "")],
        ),
        "health.expect_status",
        "only applies to https checks",
    );
}

#[test]
fn unknown_kind_is_a_parse_error() {
    let err =
        Config::from_toml_str(&config("", &[("api", 6443, 6443, "kind = \"http\"")])).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    let shown = err.to_string();
    for needle in ["http", "tcp", "tls", "https"] {
        assert!(shown.contains(needle), "{shown}");
    }
}

#[test]
fn summary_and_json_show_the_effective_check() {
    let ca = TestCa::new("ca");
    let c = parse(&config(
        "",
        &[
            ("api", 6443, 6443, "expect_status = [200, 401]"),
            (
                "talos",
                50000,
                50000,
                &format!("ca_file = {}", q(&ca.ca_file())),
            ),
            ("etcd", 2379, 2379, ""),
        ],
    ));
    let s = c.summary();
    assert!(
        s.contains(
            "    check: https GET /readyz expect_status=[200,401] \
             server_name=<backend address> ca_file=- (certificates NOT verified)\n"
        ),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "    check: tls handshake server_name=<backend address> ca_file={}\n",
            ca.ca_file().display()
        )),
        "{s}"
    );
    assert!(s.contains("    check: tcp connect\n"), "{s}");

    let json = serde_json::to_value(&c).unwrap();
    let check = &json["listeners"][0]["check"];
    assert_eq!(check["kind"], "https");
    assert_eq!(check["path"], "/readyz");
    assert_eq!(check["expect_status"], serde_json::json!([200, 401]));
    assert_eq!(check["ca_file"], serde_json::Value::Null);
    assert_eq!(json["listeners"][1]["check"]["kind"], "tls");
    assert_eq!(json["listeners"][2]["check"]["kind"], "tcp");
}

/// Issue 10 (layers): validation reads no certificate file; the health
/// module's check (run by `lb run`, reloads and `lb check`) reports it
/// under the same key.
#[test]
fn validation_does_no_file_io_and_the_health_module_checks_files() {
    let missing = std::path::Path::new("/nonexistent/lb-test/ca.pem");
    let text = config(
        "",
        &[("api", 6443, 6443, &format!("ca_file = {}", q(missing)))],
    );
    let c = Config::from_toml_str(&text).expect("validation alone does not open files");
    assert_eq!(c.cert_files.len(), 1);
    let mut c = c;
    let err = crate::health::files::load(&mut c).unwrap_err();
    assert_eq!(err.problems()[0].key, format!("{API}.ca_file"));
    assert!(err.to_string().contains("cannot read"), "{err}");
}
