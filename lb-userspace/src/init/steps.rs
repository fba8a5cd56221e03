//! The steps `lb init` prints: what the operator does by hand on the
//! nodes, the clients' side and each gateway, from installing the package
//! to the running, enabled `lb` unit and keepalived.

use std::fmt::Write as _;
use std::path::Path;

use super::notify;
use super::spec::{Layout, OneArm, Routed, Spec};
use super::INSTALLED_BIN;

/// The sysctl file the steps write on each gateway.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-lb.conf";

/// Every step, as printable text.
pub fn instructions(spec: &Spec) -> String {
    let mut s = String::new();
    match &spec.layout {
        Layout::Routed(r) => routed_outside(&mut s, spec, r),
        Layout::OneArm(o) => one_arm_outside(&mut s, spec, o),
    }
    gateways(&mut s, spec);
    s
}

fn routed_outside(w: &mut String, spec: &Spec, r: &Routed) {
    let back = r.backend_floating.address;
    let front = r.client_floating.address;
    let _ = writeln!(
        w,
        "On every node (control plane and workers): lb keeps the client's address,\n\
         so replies must go back through the gateway that holds {back}:"
    );
    if r.client_networks.is_empty() {
        let _ = writeln!(w, "  ip route replace default via {back}");
    } else {
        for n in &r.client_networks {
            let _ = writeln!(w, "  ip route replace {} via {back}", n.network());
        }
    }
    let _ = writeln!(
        w,
        "  (Talos: machine.network.interfaces[].routes, gateway {back})"
    );
    if r.client_networks.is_empty() {
        let _ = writeln!(
            w,
            "  Egress: this moves ALL of the nodes' traffic to other networks (image pulls,\n\
             \x20 DNS, NTP, updates) through the gateways, routed without NAT. Nodes with\n\
             \x20 private addresses lose internet access unless the gateways masquerade it,\n\
             \x20 e.g. on each gateway (UPLINK: its interface towards the internet):\n\
             \x20   nft add table ip lb-egress\n\
             \x20   nft add chain ip lb-egress post '{{ type nat hook postrouting priority 100; }}'\n\
             \x20   nft add rule ip lb-egress post ip saddr {} oifname UPLINK masquerade\n\
             \x20 lb does not do this. --client-network NET instead moves only the traffic to\n\
             \x20 the clients' networks.",
            r.backend_floating.network()
        );
    } else {
        let _ = writeln!(
            w,
            "  Egress: only traffic to these networks moves; the nodes' other traffic\n\
             \x20 keeps its route."
        );
    }
    let _ = writeln!(w, "On the clients' router (or each client):");
    let _ = writeln!(w, "  ip route replace {}/32 via {front}", spec.vip);
}

fn one_arm_outside(w: &mut String, spec: &Spec, o: &OneArm) {
    let _ = writeln!(
        w,
        "Nothing to change on the nodes or the clients: lb rewrites each connection's\n\
         source to {snat}, so a node answers the gateway wherever its default route\n\
         goes. The nodes see {snat}, not the client's address (as with HAProxy in\n\
         mode tcp). Clients on the LAN reach {vip} directly (the master answers ARP\n\
         for it and for {snat}); clients elsewhere through the LAN's router.",
        snat = o.snat,
        vip = spec.vip
    );
    let _ = writeln!(
        w,
        "Point the cluster at the VIP: the kubeadm controlPlaneEndpoint (or Talos\n\
         cluster.controlPlane.endpoint) is https://{}:6443.",
        spec.vip
    );
}

fn gateways(w: &mut String, spec: &Spec) {
    let pair = spec.peer.is_some();
    let keepalived = if pair { " keepalived" } else { "" };
    for g in spec.gateways() {
        let _ = writeln!(w, "On gateway {}:", g.name);
        match &spec.layout {
            Layout::Routed(_) => {
                let _ = writeln!(
                    w,
                    "  echo 'net.ipv4.ip_forward = 1' > {SYSCTL_FILE}   # it routes"
                );
            }
            Layout::OneArm(_) => {
                let _ = writeln!(
                    w,
                    "  printf 'net.ipv4.ip_forward = 1\\nnet.ipv4.conf.all.accept_local = 1\\n' > {SYSCTL_FILE}\n\
                     \x20 # replies to a client the gateway has not talked to yet are handed to the\n\
                     \x20 # kernel to resolve its neighbour; accept_local keeps them (docs/fullnat.md)"
                );
            }
        }
        let _ = writeln!(w, "  sysctl -p {SYSCTL_FILE}");
        if let (Layout::OneArm(o), false) = (&spec.layout, pair) {
            // No keepalived to add them: the one gateway owns both for good.
            for a in [spec.vip, o.snat] {
                let _ = writeln!(
                    w,
                    "  ip addr add {a}/32 dev {}   # and in the interface's persistent configuration",
                    o.interface
                );
            }
        }
        if spec.lb_bin == Path::new(INSTALLED_BIN) {
            let _ = writeln!(
                w,
                "  apt install ./lb_{}-1_amd64.deb{keepalived}   # {INSTALLED_BIN} and the lb unit \
                 (`cargo xtask dist`; the unit is not enabled yet)",
                env!("CARGO_PKG_VERSION")
            );
        } else {
            let _ = writeln!(
                w,
                "  # lb runs from {}: install deploy/systemd/lb.service with that path \
                 (docs/install.md){}",
                spec.lb_bin.display(),
                if pair { "; install keepalived too" } else { "" }
            );
        }
        let _ = writeln!(w, "  install -D -m 0644 lb.toml /etc/lb/lb.toml");
        let _ = writeln!(w, "  lb check --config /etc/lb/lb.toml");
        if pair {
            let _ = writeln!(
                w,
                "  install -D -m 0644 keepalived-{}.conf /etc/keepalived/keepalived.conf",
                g.name
            );
            if notify::script(spec, g).is_some() {
                let _ = writeln!(
                    w,
                    "  install -D -m 0755 -o root -g root {} {}",
                    notify::script_name(g),
                    notify::installed_path(spec, g).display()
                );
            }
            let _ = writeln!(
                w,
                "  keepalived -t -f /etc/keepalived/keepalived.conf\n\
                 \x20 # its track script runs {} healthz: that binary must be there",
                spec.lb_bin.display()
            );
        }
        let _ = writeln!(w, "  systemctl enable --now lb{keepalived}");
        let _ = writeln!(w, "  lb status");
    }
}
