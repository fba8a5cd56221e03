//! Unit tests of `lb init --one-arm`, the notify scripts, and the layouts
//! the routed mode refuses or warns about (issue 18, item 7).
use super::tests::{block, parsed, routed, spec, with_interfaces};
use super::*;
use crate::config::ListenerMode;

/// The kubeadm-guide shape: two gateways on the nodes' LAN.
fn one_arm() -> Spec {
    let nodes = parsed(&[
        "cp-01=192.168.2.151",
        "cp-02=192.168.2.152",
        "cp-03=192.168.2.153",
    ]);
    Spec::new(
        nodes,
        "192.168.2.140".parse().unwrap(),
        Layout::OneArm(OneArm {
            interface: "eth1".into(),
            snat: "192.168.2.141".parse().unwrap(),
        }),
        "gw-a=192.168.2.131".parse().unwrap(),
        Some("gw-b=192.168.2.132".parse().unwrap()),
        PathBuf::from("/usr/bin/lb"),
    )
}

#[test]
fn one_arm_lb_toml_is_fullnat_on_one_interface() {
    let mut s = one_arm();
    s.workers = vec!["w-01=192.168.2.161".parse().unwrap()];
    let g = generate(&s).unwrap();
    let c = Config::from_toml_str(&g.lb_toml).unwrap();
    assert_eq!(c.dataplane.interfaces, ["eth1"]);
    assert_eq!(c.snat.ipv4, ["192.168.2.141".parse::<Ipv4Addr>().unwrap()]);
    assert_eq!(c.snat.default_mode, ListenerMode::Fullnat);
    let modes: Vec<(&str, ListenerMode)> = c
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.mode))
        .collect();
    assert_eq!(modes.len(), 4, "{modes:?}");
    assert!(
        modes.iter().all(|(_, m)| *m == ListenerMode::Fullnat),
        "{modes:?}"
    );
    assert!(g.lb_toml.contains("xdp_mode = \"auto\""), "{}", g.lb_toml);
    s.xdp_mode = crate::config::XdpMode::Generic;
    let c = Config::from_toml_str(&generate(&s).unwrap().lb_toml).unwrap();
    assert_eq!(c.dataplane.xdp_mode, crate::config::XdpMode::Generic);
}

#[test]
fn one_arm_keepalived_moves_vip_and_snat_in_one_instance() {
    let g = generate(&one_arm()).unwrap();
    let names: Vec<&str> = g.keepalived.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["keepalived-gw-a.conf", "keepalived-gw-b.conf"]);
    for (i, (_, text)) in g.keepalived.iter().enumerate() {
        assert!(!text.contains("vrrp_sync_group"), "{text}");
        assert_eq!(text.matches("vrrp_instance ").count(), 1, "{text}");
        let inst = block(text, "vrrp_instance lb_vip");
        let (me, peer, prio) = if i == 0 {
            ("192.168.2.131", "192.168.2.132", "priority 150")
        } else {
            ("192.168.2.132", "192.168.2.131", "priority 100")
        };
        for want in [
            "interface eth1",
            "virtual_router_id 51",
            prio,
            "192.168.2.140/32 dev eth1",
            "192.168.2.141/32 dev eth1",
            "lb_healthz",
            &format!("unicast_src_ip {me}"),
            peer,
        ] {
            assert!(inst.contains(&want), "lb_vip lacks {want}: {inst:?}");
        }
        let script = block(text, "vrrp_script lb_healthz");
        assert!(
            script.contains(&"script \"/usr/bin/lb healthz --api 127.0.0.1:9542 --timeout 1s\""),
            "{script:?}"
        );
        assert!(!text.contains("notify"), "no --notify-*: {text}");
    }
    assert!(g.scripts.is_empty());
}

#[test]
fn one_arm_steps_change_nothing_on_the_nodes() {
    let g = generate(&one_arm()).unwrap();
    let steps = &g.instructions;
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    assert!(
        steps.contains("Nothing to change on the nodes or the clients"),
        "{steps}"
    );
    assert!(!steps.contains("ip route"), "{steps}");
    assert!(!steps.contains("Egress"), "{steps}");
    let gw_b = steps.split("On gateway gw-b:").nth(1).unwrap();
    let order = [
        "net.ipv4.conf.all.accept_local = 1",
        "sysctl -p /etc/sysctl.d/90-lb.conf",
        "apt install ./lb_",
        "install -D -m 0644 lb.toml /etc/lb/lb.toml",
        "lb check --config /etc/lb/lb.toml",
        "install -D -m 0644 keepalived-gw-b.conf /etc/keepalived/keepalived.conf",
        "keepalived -t -f /etc/keepalived/keepalived.conf",
        "track script runs /usr/bin/lb healthz",
        "systemctl enable --now lb keepalived",
        "lb status",
    ];
    let mut at = 0;
    for step in order {
        let found = gw_b[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{gw_b}"));
        at += found + step.len();
    }
    assert!(
        !steps.contains("ip addr add"),
        "keepalived adds them: {steps}"
    );
    // A single gateway: nothing moves the addresses, the steps add them.
    let mut s = one_arm();
    s.peer = None;
    let g = generate(&s).unwrap();
    assert!(g.keepalived.is_empty());
    for a in ["192.168.2.140", "192.168.2.141"] {
        assert!(
            g.instructions
                .contains(&format!("ip addr add {a}/32 dev eth1")),
            "{}",
            g.instructions
        );
    }
    assert!(g.instructions.contains("systemctl enable --now lb\n"));
}

#[test]
fn one_arm_flag_mistakes_are_refused() {
    let mut s = one_arm();
    s.layout = Layout::OneArm(OneArm {
        interface: "eth1".into(),
        snat: "192.168.2.140".parse().unwrap(),
    });
    s.peer = Some("gw-b=192.168.2.132,192.168.3.2".parse().unwrap());
    let text = s.problems().join("\n");
    assert!(
        text.contains("--snat-address 192.168.2.140 is the VIP"),
        "{text}"
    );
    assert!(text.contains("one-arm takes NAME=ADDRESS"), "{text}");
    let mut s = one_arm();
    s.layout = Layout::OneArm(OneArm {
        interface: "eth1".into(),
        snat: "192.168.2.152".parse().unwrap(),
    });
    s.this = "gw-a=192.168.2.140".parse().unwrap();
    let text = s.problems().join("\n");
    assert!(text.contains("is cp-02's address"), "{text}");
    assert!(
        text.contains("gw-a's address 192.168.2.140 is the VIP"),
        "{text}"
    );
    assert!(generate(&s).is_err());
}

#[test]
fn notify_scripts_are_written_and_named_in_keepalived() {
    let mut s = one_arm();
    s.notify.master = Some("hcloud floating-ip assign lb-vip {gateway}".into());
    s.notify.fault = Some("logger lb fault on {gateway}".into());
    let g = generate(&s).unwrap();
    let names: Vec<&str> = g.scripts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["lb-notify-gw-a.sh", "lb-notify-gw-b.sh"]);
    let b = &g.scripts[1].1;
    assert!(b.starts_with("#!/bin/sh\n"), "{b}");
    assert!(
        b.contains("MASTER)\n    hcloud floating-ip assign lb-vip gw-b\n"),
        "{b}"
    );
    assert!(b.contains("FAULT)\n    logger lb fault on gw-b\n"), "{b}");
    assert!(!b.contains("BACKUP)"), "{b}");
    let inst = block(&g.keepalived[1].1, "vrrp_instance lb_vip");
    assert!(
        inst.contains(&"notify_master \"/etc/keepalived/lb-notify-gw-b.sh MASTER\""),
        "{inst:?}"
    );
    assert!(
        inst.contains(&"notify_fault \"/etc/keepalived/lb-notify-gw-b.sh FAULT\""),
        "{inst:?}"
    );
    assert!(!inst.iter().any(|l| l.starts_with("notify_backup")));
    assert!(
        g.instructions.contains(
            "install -D -m 0755 -o root -g root lb-notify-gw-a.sh /etc/keepalived/lb-notify-gw-a.sh"
        ),
        "{}",
        g.instructions
    );

    // Routed: on the sync group, so it runs once per transition of the pair.
    let mut r = spec();
    r.notify.backup = Some("true".into());
    r.script_dir = PathBuf::from("/usr/local/lib/lb");
    let g = generate(&r).unwrap();
    let group = block(&g.keepalived[0].1, "vrrp_sync_group lb_pair");
    assert!(
        group.contains(&"notify_backup \"/usr/local/lib/lb/lb-notify-gw-a.sh BACKUP\""),
        "{group:?}"
    );

    // Mistakes.
    r.peer = None;
    r.notify.master = Some("a\nb".into());
    r.script_dir = PathBuf::from("scripts");
    let text = r.problems().join("\n");
    assert!(text.contains("--notify-* needs --peer"), "{text}");
    assert!(text.contains("--notify-master must be one line"), "{text}");
    assert!(text.contains("--script-dir \"scripts\""), "{text}");
}

#[test]
fn routed_layouts_it_cannot_serve_are_refused() {
    // One NIC, one subnet: clients on the nodes' subnet.
    let mut s = spec();
    let r = routed(&mut s);
    r.backend_interface = "eth1".into();
    r.client_floating = "198.18.2.254/24".parse().unwrap();
    s.this = "gw-a=198.18.2.2,198.18.2.5".parse().unwrap();
    s.peer = Some("gw-b=198.18.2.3,198.18.2.6".parse().unwrap());
    let err = format!("{:#}", generate(&s).unwrap_err());
    assert!(
        err.contains("are one subnet (one interface (eth1))")
            && err.contains("straight from its own address")
            && err.contains("use --one-arm"),
        "{err}"
    );
    // Clients declared on the nodes' network.
    let mut s = spec();
    routed(&mut s).client_networks = vec!["198.18.0.0/16".parse().unwrap()];
    let err = format!("{:#}", generate(&s).unwrap_err());
    assert!(
        err.contains("--client-network 198.18.0.0/16 overlaps the nodes' network 198.18.2.0/24"),
        "{err}"
    );
    // A one-arm style gateway in the routed layout.
    let mut s = spec();
    s.peer = Some("gw-b=198.18.1.3".parse().unwrap());
    let err = format!("{:#}", generate(&s).unwrap_err());
    assert!(err.contains("gives one address"), "{err}");
}

#[test]
fn routed_steps_warn_about_egress_and_on_link_clients() {
    let mut s = spec();
    s.workers = vec!["w-01=198.18.2.21".parse().unwrap()];
    let g = generate(&s).unwrap();
    let warnings = g.warnings.join("\n");
    assert!(
        warnings.contains("every host on the nodes' network 198.18.2.0/24 cannot use the VIP"),
        "{warnings}"
    );
    assert!(warnings.contains("workers w-01 are on the nodes' network"));
    let steps = &g.instructions;
    assert!(steps.contains("moves ALL of the nodes' traffic"), "{steps}");
    assert!(
        steps.contains("lose internet access unless the gateways masquerade"),
        "{steps}"
    );
    assert!(
        steps.contains("ip saddr 198.18.2.0/24 oifname UPLINK masquerade"),
        "{steps}"
    );
    routed(&mut s).client_networks = vec!["198.18.1.0/24".parse().unwrap()];
    let steps = generate(&s).unwrap().instructions;
    assert!(!steps.contains("masquerade"), "{steps}");
    assert!(steps.contains("only traffic to these networks moves"));
}

/// The flags: `--one-arm` needs `--interface` and `--snat-address` and
/// excludes the routed layout's flags.
#[test]
fn one_arm_flags() {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        init: InitArgs,
    }
    let base = [
        "lb-init",
        "--node",
        "cp-01=192.168.2.151",
        "--vip",
        "192.168.2.140",
        "--gateway",
        "gw-a=192.168.2.131",
        "--peer",
        "gw-b=192.168.2.132",
        "--output",
        "/nonexistent",
    ];
    let parse = |extra: &[&str]| {
        <Flags as clap::Parser>::try_parse_from(base.iter().chain(extra)).map(|f| f.init)
    };
    let f = parse(&[
        "--one-arm",
        "--interface",
        "eth1",
        "--snat-address",
        "192.168.2.141",
        "--xdp-mode",
        "generic",
        "--notify-master",
        "hcloud floating-ip assign lb-vip {gateway}",
    ])
    .unwrap();
    let s = f.spec().unwrap();
    assert!(matches!(&s.layout, Layout::OneArm(o) if o.interface == "eth1"));
    assert_eq!(s.xdp_mode, crate::config::XdpMode::Generic);
    generate(&s).unwrap();
    let err = parse(&["--one-arm", "--interface", "eth1"]).err().unwrap();
    assert!(err.to_string().contains("--snat-address"), "{err}");
    let err = parse(&[
        "--one-arm",
        "--interface",
        "eth1",
        "--snat-address",
        "192.168.2.141",
        "--client-floating",
        "192.168.2.1/24",
    ])
    .err()
    .unwrap();
    assert!(err.to_string().contains("cannot be used with"), "{err}");
    let err = parse(&[]).err().unwrap();
    assert!(err.to_string().contains("--client-interface"), "{err}");
    let err = parse(&["--interface", "eth1"]).err().unwrap();
    assert!(err.to_string().contains("--one-arm"), "{err}");
}

/// `keepalived -t` and `sh -n` on the one-arm files with notify scripts, in
/// a private network namespace holding `eth1` (root and keepalived needed;
/// skipped without, except under CI=true). A command that is not valid
/// shell is refused and nothing is written.
#[test]
fn keepalived_accepts_one_arm_files_with_notify_scripts() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let installed = std::process::Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok();
    if !root || !installed {
        assert!(!ci, "needs root and keepalived under CI=true");
        eprintln!("SKIPPED keepalived_accepts_one_arm_files_with_notify_scripts");
        return;
    }
    let mut s = one_arm();
    s.lb_bin = PathBuf::from("/bin/true");
    s.notify.master = Some("hcloud floating-ip assign lb-vip {gateway}".into());
    s.notify.backup = Some("echo backup > /run/lb-{gateway}.state".into());
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
            "lb-notify-gw-a.sh: sh -n OK",
            "lb-notify-gw-b.sh: sh -n OK",
        ]
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("lb-notify-gw-a.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    s.notify.master = Some("hcloud floating-ip assign 'lb-vip {gateway}".into());
    let g = generate(&s).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = with_interfaces(|| write_checked(&g, &s, dir.path(), false)).unwrap_err();
    assert!(err.to_string().contains("is not valid shell"), "{err:#}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
