//! Unit tests of `lb init`: the spec checks, the rendered files, and
//! `keepalived -t` on them where keepalived is installed.
use super::keepalived::{interpret, Verdict};
use super::*;

/// Each of `list` parsed (test input, known good).
pub(super) fn parsed<T: std::str::FromStr>(list: &[&str]) -> Vec<T>
where
    T::Err: std::fmt::Debug,
{
    list.iter().map(|s| s.parse().unwrap()).collect()
}

pub(super) fn spec() -> Spec {
    let nodes = parsed(&[
        "cp-01=198.18.2.11",
        "cp-02=198.18.2.12",
        "cp-03=198.18.2.13",
    ]);
    Spec::new(
        nodes,
        "198.18.100.10".parse().unwrap(),
        Layout::Routed(Routed {
            client_interface: "eth1".into(),
            backend_interface: "eth2".into(),
            client_floating: "198.18.1.1/24".parse().unwrap(),
            backend_floating: "198.18.2.1/24".parse().unwrap(),
            client_networks: Vec::new(),
        }),
        "gw-a=198.18.1.2,198.18.2.2".parse().unwrap(),
        Some("gw-b=198.18.1.3,198.18.2.3".parse().unwrap()),
        PathBuf::from("/usr/local/bin/lb"),
    )
}

/// The routed layout of `s` (the tests' specs are routed unless they say).
pub(super) fn routed(s: &mut Spec) -> &mut Routed {
    match &mut s.layout {
        Layout::Routed(r) => r,
        Layout::OneArm(_) => panic!("not a routed spec"),
    }
}

#[test]
fn flags_parse() {
    let h: Host = "cp-01=198.18.2.11".parse().unwrap();
    assert_eq!(h.name, "cp-01");
    assert!("cp-01".parse::<Host>().is_err());
    assert!("cp-01=1.2.3".parse::<Host>().is_err());
    assert!("c p=1.2.3.4".parse::<Host>().is_err());
    let c: Cidr = "198.18.2.1/24".parse().unwrap();
    assert_eq!(c.network().to_string(), "198.18.2.0/24");
    assert!(c.contains("198.18.2.200".parse().unwrap()));
    assert!(!c.contains("198.18.3.1".parse().unwrap()));
    assert!("198.18.2.1/33".parse::<Cidr>().is_err());
    assert!("198.18.2.1".parse::<Cidr>().is_err());
    let g: Gateway = "gw-a=198.18.1.2,198.18.2.2".parse().unwrap();
    assert_eq!(g.backend_address, "198.18.2.2".parse::<Ipv4Addr>().unwrap());
    // One address: the one-arm form.
    let one: Gateway = "gw-a=198.18.1.2".parse().unwrap();
    assert!(one.one_address());
    assert!(!g.one_address());
    assert!("gw-a".parse::<Gateway>().is_err());
}

#[test]
fn inconsistent_flags_are_refused_with_every_problem() {
    let mut s = spec();
    s.peer = Some("gw-a=198.18.1.2,198.18.9.3".parse().unwrap());
    s.advert_int = Duration::from_millis(50);
    s.lb_bin = PathBuf::from("lb");
    let problems = s.problems();
    let text = problems.join("\n");
    assert!(text.contains("both gateways are named gw-a"), "{text}");
    assert!(text.contains("share an address"), "{text}");
    assert!(
        text.contains(
            "198.18.9.3 is not in the backend-side floating address's network 198.18.2.0/24"
        ),
        "{text}"
    );
    assert!(text.contains("--advert-int"), "{text}");
    assert!(text.contains("absolute path"), "{text}");
    assert!(generate(&s).is_err());
}

#[test]
fn generated_lb_toml_passes_validation() {
    let mut s = spec();
    s.workers = vec![
        "w-01=198.18.2.21".parse().unwrap(),
        "w-02=198.18.2.22".parse().unwrap(),
    ];
    s.talos_workers_listener = true;
    let g = generate(&s).unwrap();
    let config = Config::from_toml_str(&g.lb_toml).unwrap();
    let listeners: Vec<(&str, u16, u16, usize)> = config
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.port, l.target_port, l.backends.len()))
        .collect();
    assert_eq!(
        listeners,
        [
            ("kubernetes-api", 6443, 6443, 3),
            ("talos-api", 50000, 50000, 3),
            ("talos-api-workers", 50001, 50000, 3),
            ("ingress-http", 80, 80, 2),
            ("ingress-https", 443, 443, 2),
        ]
    );
    assert_eq!(config.dataplane.interfaces, ["eth1", "eth2"]);
    assert_eq!(config.backends.len(), 5);
    // Ingress goes to the workers only.
    let https = &config.listeners[4];
    let names: Vec<&str> = https
        .backends
        .iter()
        .map(|&i| config.backends[i].name.as_str())
        .collect();
    assert_eq!(names, ["w-01", "w-02"]);
    assert_eq!(
        config.listeners[0].check.kind(),
        crate::config::CheckKind::Https
    );

    s.tcp_checks = true;
    s.workers.clear();
    s.talos_workers_listener = false;
    routed(&mut s).backend_interface = "eth1".into();
    let config = Config::from_toml_str(&generate(&s).unwrap().lb_toml).unwrap();
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.dataplane.interfaces, ["eth1"]);
    assert!(config
        .listeners
        .iter()
        .all(|l| l.check.kind() == crate::config::CheckKind::Tcp));
}

#[test]
fn a_vip_that_is_a_node_fails_like_lb_check() {
    let mut s = spec();
    s.vip = "198.18.2.11".parse().unwrap();
    let err = format!("{:#}", generate(&s).unwrap_err());
    assert!(err.contains("does not pass `lb check`"), "{err}");
}

/// The lines of `block NAME { ... }` in `text` (first match), braces nested.
pub(super) fn block<'a>(text: &'a str, header: &str) -> Vec<&'a str> {
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != format!("{header} {{"));
    let mut out = Vec::new();
    let mut depth = 0;
    for l in lines.by_ref() {
        let l = l.trim();
        depth += l.matches('{').count();
        depth -= l.matches('}').count();
        if !l.starts_with('#') {
            out.push(l);
        }
        if depth == 0 {
            break;
        }
    }
    out
}

#[test]
fn keepalived_conf_has_sync_group_instances_peers_and_track_script() {
    let s = spec();
    let g = generate(&s).unwrap();
    assert_eq!(g.keepalived.len(), 2);
    let (name_a, a) = &g.keepalived[0];
    let (name_b, b) = &g.keepalived[1];
    assert_eq!(name_a, "keepalived-gw-a.conf");
    assert_eq!(name_b, "keepalived-gw-b.conf");

    let global = block(a, "global_defs");
    for want in [
        "enable_script_security",
        "script_user root",
        "vrrp_version 3",
        "router_id gw-a",
    ] {
        assert!(
            global.contains(&want),
            "global_defs lacks {want}: {global:?}"
        );
    }
    let script = block(a, "vrrp_script lb_healthz");
    for want in ["fall 2", "rise 2", "init_fail", "interval 1"] {
        assert!(
            script.contains(&want),
            "vrrp_script lacks {want}: {script:?}"
        );
    }
    assert!(
        script.contains(&"script \"/usr/local/bin/lb healthz --api 127.0.0.1:9542 --timeout 1s\""),
        "{script:?}"
    );
    let group = block(a, "vrrp_sync_group lb_pair");
    for want in ["lb_client", "lb_backend", "lb_healthz"] {
        assert!(group.contains(&want), "sync group lacks {want}: {group:?}");
    }
    let client = block(a, "vrrp_instance lb_client");
    for want in [
        "interface eth1",
        "virtual_router_id 51",
        "priority 150",
        "advert_int 0.2",
        "unicast_src_ip 198.18.1.2",
        "198.18.1.3",
        "198.18.1.1/24 dev eth1",
        "state BACKUP",
    ] {
        assert!(client.contains(&want), "lb_client lacks {want}: {client:?}");
    }
    assert!(!client.contains(&"nopreempt"));
    let backend = block(b, "vrrp_instance lb_backend");
    for want in [
        "interface eth2",
        "virtual_router_id 52",
        "priority 100",
        "unicast_src_ip 198.18.2.3",
        "198.18.2.2",
        "198.18.2.1/24 dev eth2",
    ] {
        assert!(
            backend.contains(&want),
            "gw-b lb_backend lacks {want}: {backend:?}"
        );
    }
    let routes = &g.instructions;
    assert!(
        routes.contains("ip route replace default via 198.18.2.1"),
        "{routes}"
    );
    assert!(
        routes.contains("ip route replace 198.18.100.10/32 via 198.18.1.1"),
        "{routes}"
    );
}

#[test]
fn nopreempt_and_client_networks() {
    let mut s = spec();
    s.nopreempt = true;
    routed(&mut s).client_networks = vec!["198.18.1.77/24".parse().unwrap()];
    s.advert_int = Duration::from_secs(1);
    let g = generate(&s).unwrap();
    let client = block(&g.keepalived[1].1, "vrrp_instance lb_client");
    assert!(client.contains(&"nopreempt"), "{client:?}");
    assert!(client.contains(&"advert_int 1"), "{client:?}");
    assert!(g
        .instructions
        .contains("ip route replace 198.18.1.0/24 via 198.18.2.1"));
    assert!(!g.instructions.contains("default via"));
}

#[test]
fn single_gateway_writes_only_lb_toml() {
    let mut s = spec();
    s.peer = None;
    let g = generate(&s).unwrap();
    assert!(g.keepalived.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let report = write_checked(&g, &s, dir.path(), false).unwrap();
    assert_eq!(report, ["lb.toml: lb check OK"]);
    assert!(dir.path().join("lb.toml").is_file());
    // A second run refuses to overwrite without --force.
    let err = write_checked(&g, &s, dir.path(), false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    write_checked(&g, &s, dir.path(), true).unwrap();
}

#[test]
fn keepalived_output_interpretation() {
    let missing = vec!["eth1".to_owned(), "eth2".to_owned()];
    let only_missing =
        "(f: Line 25) WARNING - interface eth1 for vrrp_instance lb_client doesn't exist\n\
        (f: Line 34) WARNING - interface eth1 for ip address 198.18.1.1/24 doesn't exist\n\
        Non-existent interface specified in configuration\n";
    assert_eq!(
        interpret(false, only_missing, &missing),
        Ok(Verdict::AcceptedButMissing(missing.clone()))
    );
    // The same complaint about an interface that exists here is real.
    assert!(interpret(false, only_missing, &[]).is_err());
    let script =
        format!("{only_missing}Disabling track script lb_healthz since not found/accessible\n");
    let err = interpret(false, &script, &missing).unwrap_err();
    assert_eq!(
        err,
        "Disabling track script lb_healthz since not found/accessible"
    );
    assert_eq!(interpret(true, "", &[]), Ok(Verdict::Accepted));
    assert!(interpret(true, "WARNING - something", &[]).is_err());
    assert!(interpret(false, "", &[]).is_err());
}

/// `keepalived -t` on the generated files with interfaces that exist: run
/// in a private network namespace holding `eth1` and `eth2` (needs
/// root; without root or keepalived it is skipped, except under CI=true).
#[test]
fn keepalived_accepts_generated_files() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !ci,
            "keepalived_accepts_generated_files needs root under CI=true"
        );
        eprintln!("SKIPPED keepalived_accepts_generated_files: needs root");
        return;
    }
    let installed = std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok();
    if !installed {
        assert!(!ci, "keepalived must be installed under CI=true");
        eprintln!("SKIPPED keepalived_accepts_generated_files: keepalived is not installed");
        return;
    }
    let mut s = spec();
    // A root-owned executable that no one else may write: what script
    // security demands of the track script.
    s.lb_bin = PathBuf::from("/bin/true");
    let g = generate(&s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let report = with_interfaces(|| write_checked(&g, &s, dir.path(), false));
    let report = report.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        report,
        [
            "lb.toml: lb check OK",
            "keepalived-gw-a.conf: keepalived -t OK",
            "keepalived-gw-b.conf: keepalived -t OK",
        ]
    );
    // A track script keepalived cannot run is rejected, and nothing is written.
    s.lb_bin = PathBuf::from("/nonexistent/lb");
    let g = generate(&s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = with_interfaces(|| write_checked(&g, &s, dir.path(), false)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("keepalived -t") && msg.contains("track script"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "files left behind"
    );
}

/// Runs `f` on a thread in a private network namespace that has `eth1` and
/// `eth2`; processes `f` starts inherit that namespace.
pub(super) fn with_interfaces<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare(2) affects the calling thread only.
                assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
                // A veth pair: this kernel has no dummy interfaces.
                let st = std::process::Command::new("ip")
                    .args([
                        "link", "add", "name", "eth1", "type", "veth", "peer", "name", "eth2",
                    ])
                    .status()
                    .unwrap();
                assert!(st.success(), "ip link add eth1/eth2");
                f()
            })
            .join()
            .unwrap()
    })
}

/// Issue 22: keepalived runs the installed binary, never the build tree's
/// copy that ran `lb init`.
#[test]
fn the_track_script_names_the_installed_binary() {
    let build_tree = Path::new("/work/lb/target/debug/lb");
    assert_eq!(
        track_script_bin(None, Some(build_tree)),
        Path::new(INSTALLED_BIN)
    );
    assert_eq!(track_script_bin(None, None), Path::new(INSTALLED_BIN));
    let manual = Path::new("/usr/local/bin/lb");
    assert_eq!(track_script_bin(None, Some(manual)), manual);
    let explicit = Path::new("/opt/lb/bin/lb");
    assert_eq!(track_script_bin(Some(explicit), Some(manual)), explicit);

    // The flags as `lb init` parses them, run from this test binary (in a
    // build tree): the package's path.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        init: InitArgs,
    }
    let flags = <Flags as clap::Parser>::try_parse_from([
        "lb-init",
        "--node",
        "cp-01=198.18.2.11",
        "--vip",
        "198.18.100.10",
        "--client-interface",
        "eth1",
        "--backend-interface",
        "eth2",
        "--client-floating",
        "198.18.1.1/24",
        "--backend-floating",
        "198.18.2.1/24",
        "--gateway",
        "gw-a=198.18.1.2,198.18.2.2",
        "--output",
        "/nonexistent",
    ])
    .unwrap();
    let s = flags.init.spec().unwrap();
    assert_eq!(s.lb_bin, Path::new(INSTALLED_BIN));
    let g = generate(&s).unwrap();
    assert!(g.keepalived.is_empty());
    assert!(g.instructions.contains("systemctl enable --now lb\n"));
}

/// Issue 22: the printed steps install the package (which brings the unit,
/// not enabled), check the file, then enable the unit.
#[test]
fn the_steps_install_the_package_then_enable_its_unit() {
    let mut s = spec();
    s.lb_bin = PathBuf::from(INSTALLED_BIN);
    let g = generate(&s).unwrap();
    let keepalived = block(&g.keepalived[0].1, "vrrp_script lb_healthz");
    assert!(
        keepalived.contains(&"script \"/usr/bin/lb healthz --api 127.0.0.1:9542 --timeout 1s\""),
        "{keepalived:?}"
    );
    let steps = &g.instructions;
    let gw_a = steps.split("On gateway gw-a:").nth(1).unwrap();
    let gw_a = gw_a.split("On gateway gw-b:").next().unwrap();
    let order = [
        "apt install ./lb_",
        "_amd64.deb keepalived",
        "install -D -m 0644 lb.toml /etc/lb/lb.toml",
        "lb check --config /etc/lb/lb.toml",
        "install -D -m 0644 keepalived-gw-a.conf /etc/keepalived/keepalived.conf",
        "systemctl enable --now lb keepalived",
    ];
    let mut at = 0;
    for step in order {
        let found = gw_a[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{gw_a}"));
        at += found + step.len();
    }
    // A binary installed by hand: the steps say how to get the unit.
    let g = generate(&spec()).unwrap();
    assert!(
        !g.instructions.contains("apt install"),
        "{}",
        g.instructions
    );
    assert!(g
        .instructions
        .contains("lb runs from /usr/local/bin/lb: install deploy/systemd/lb.service"));
}
