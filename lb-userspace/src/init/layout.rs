//! What each layout can serve. `lb init` refuses a layout its mode cannot
//! serve (the rules below, one line each, naming the flags) and warns about
//! the clients a routed layout leaves out.
//!
//! The routed (DNAT) layout keeps the client's address, so a node must send
//! its reply back through the gateway. A client on the nodes' own subnet
//! (a worker's kubelet, a control-plane node itself, an admin on the same
//! LAN) gets the node's reply straight on the link, from the node's own
//! address instead of the VIP, and resets the connection; no route on the
//! node can fix that. The one-arm (full-NAT) layout rewrites the source
//! too, so the nodes answer the gateway wherever their default route goes.

use std::net::Ipv4Addr;

use super::spec::{Cidr, OneArm, Routed, Spec};

/// Why the routed layout fails for clients on the nodes' subnet, and what
/// to use instead (the end of several messages).
const ON_LINK_WHY: &str = "in the routed (DNAT) layout a node answers a client on its own subnet \
     straight from its own address and the client resets the connection; use --one-arm \
     (full-NAT: one interface, nothing to change on the nodes)";

/// Whether two networks overlap (one contains the other).
fn overlap(a: Cidr, b: Cidr) -> bool {
    let p = a.prefix.min(b.prefix);
    let a = Cidr { prefix: p, ..a };
    a.contains(b.address)
}

/// Layouts the routed mode refuses, and flag inconsistencies of its own.
pub fn routed_problems(spec: &Spec, r: &Routed) -> Vec<String> {
    let mut out = Vec::new();
    let (front, back) = (r.client_floating, r.backend_floating);
    if front.address == back.address {
        out.push("the client-side and backend-side floating addresses are equal".to_owned());
    } else if overlap(front, back) {
        let one_nic = if r.client_interface == r.backend_interface {
            format!("one interface ({})", r.client_interface)
        } else {
            "two interfaces".to_owned()
        };
        out.push(format!(
            "--client-floating {front} and --backend-floating {back} are one subnet ({one_nic}): \
             the clients are on the nodes' subnet, and {ON_LINK_WHY}"
        ));
    }
    for n in &r.client_networks {
        if overlap(*n, back) {
            out.push(format!(
                "--client-network {n} overlaps the nodes' network {}: {ON_LINK_WHY}",
                back.network()
            ));
        }
    }
    for g in spec.gateways() {
        if g.one_address() {
            out.push(format!(
                "--gateway/--peer {}={} gives one address: the routed layout needs \
                 NAME=CLIENT_ADDRESS,BACKEND_ADDRESS (or pass --one-arm)",
                g.name, g.client_address
            ));
            continue;
        }
        for (side, addr, floating) in [
            ("client", g.client_address, front),
            ("backend", g.backend_address, back),
        ] {
            if !floating.contains(addr) {
                out.push(format!(
                    "{}'s {side}-side address {addr} is not in the {side}-side floating address's network {}",
                    g.name,
                    floating.network()
                ));
            }
            if addr == floating.address {
                out.push(format!(
                    "{}'s {side}-side address {addr} is the floating address itself",
                    g.name
                ));
            }
        }
    }
    out
}

/// Flag inconsistencies of the one-arm layout.
pub fn one_arm_problems(spec: &Spec, o: &OneArm) -> Vec<String> {
    let mut out = Vec::new();
    if o.snat == spec.vip {
        out.push(format!(
            "--snat-address {} is the VIP: the nodes must answer an address of its own",
            o.snat
        ));
    }
    if !is_unicast(o.snat) {
        out.push(format!(
            "--snat-address {} is not a unicast address",
            o.snat
        ));
    }
    for h in spec.nodes.iter().chain(&spec.workers) {
        if h.address == o.snat {
            out.push(format!(
                "--snat-address {} is {}'s address: use a free address on the LAN",
                o.snat, h.name
            ));
        }
    }
    for g in spec.gateways() {
        if !g.one_address() {
            out.push(format!(
                "--gateway/--peer {}: one-arm takes NAME=ADDRESS (the gateway's one address on \
                 {}), not two addresses",
                g.name, o.interface
            ));
        }
        for (what, a) in [("the VIP", spec.vip), ("--snat-address", o.snat)] {
            if g.client_address == a || g.backend_address == a {
                out.push(format!(
                    "{}'s address {a} is {what}: the floating addresses move between the \
                     gateways and must be none of theirs",
                    g.name
                ));
            }
        }
    }
    out
}

fn is_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

/// Clients the routed layout cannot serve, printed as warnings: the hosts
/// on the nodes' network, the nodes themselves included.
pub fn routed_warnings(spec: &Spec, r: &Routed) -> Vec<String> {
    let back = r.backend_floating.network();
    let on_nodes_net: Vec<&str> = spec
        .workers
        .iter()
        .filter(|w| back.contains(w.address))
        .map(|w| w.name.as_str())
        .collect();
    let mut out = vec![format!(
        "the control-plane nodes and every host on the nodes' network {back} cannot use the \
         VIP {} (their kubelets, kube-proxy, an admin there): {ON_LINK_WHY}; or point those \
         at a node's own address.",
        spec.vip
    )];
    if !on_nodes_net.is_empty() {
        out.push(format!(
            "workers {} are on the nodes' network {back}: their kubelets cannot reach the \
             control plane through the VIP {} in this layout.",
            on_nodes_net.join(", "),
            spec.vip
        ));
    }
    out
}
