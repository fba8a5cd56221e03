//! Packets too big for the gateway's own egress link (issue 19, finding 5):
//! the program answers them itself with ICMP "fragmentation needed"
//! (ICMPv6 "packet too big") quoting the packet as the sender sent it (the
//! VIP as its destination), so the sender's path MTU cache is keyed by the
//! connection it knows. Before, a flow with a cached route was redirected
//! into the smaller MTU (dropped by the kernel without a word) and one
//! without was passed to the kernel rewritten (its error quoted the node's
//! address): a bulk upload stalled.
//!
//! Needs root (BPF_PROG_TEST_RUN in a lab namespace). Expected frames are
//! built from scratch, checksums included.
mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::fullnat::{self as fnat, SNAT4};
use common::v6::*;
use common::*;
use lb_common::checksum::checksum;

/// A full-size segment: 1500 bytes of IPv4 (20 + 20 + 1460).
const BIG: usize = 1460;
const MTU: u16 = 1400;

/// The frame the gateway should send back: Ethernet `dmac` ← `smac`, IPv4
/// `src` → `dst` (TOS 0xc0, TTL 64, no DF), ICMP type 3 code 4 with
/// next-hop `mtu`, quoting the first 28 bytes of `quoted` (an IPv4 packet
/// without options).
fn frag_needed(
    dmac: [u8; 6],
    smac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    mtu: u16,
    quoted: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&quoted[..28]);
    let c = checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0xc0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = eth_header(dmac, smac, 0x0800);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// The IPv6 answer: `src` → `dst`, hop limit 64, ICMPv6 packet too big
/// with `mtu`, quoting the first 48 bytes of `quoted` (an IPv6 packet
/// without extension headers).
fn packet_too_big(
    dmac: [u8; 6],
    smac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    mtu: u32,
    quoted: &[u8],
) -> Vec<u8> {
    let mut p = Pkt6::tcp(src, 0, dst, 0, 0);
    (p.dmac, p.smac) = (dmac, smac);
    p.next = NEXT_ICMPV6;
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&quoted[..48]);
    p.raw = Some((icmp, 2));
    let mut f = p.frame();
    // No flow label or traffic class on the answer (the builder sets one).
    f[14..18].copy_from_slice(&[0x60, 0, 0, 0]);
    f
}

fn big(mut p: Pkt) -> Pkt {
    p.payload = vec![0xab; BIG];
    p
}

fn set_mtu(ns: &Netns, dev: &str, mtu: u16) {
    ns_ip(ns, &format!("link set {dev} mtu {mtu}"));
}

/// DNAT, IPv4: a full-size segment of an established flow (cached route),
/// of an untracked flow (route looked up), and a backend's full-size reply
/// toward a smaller client-side MTU: each answered with the original
/// addresses quoted. Without DF the packet is passed (the kernel
/// fragments). Raising the MTU again lets the same packet through.
#[test]
fn too_big_v4_is_answered_with_the_vip_quoted() {
    if !root_or_skip() {
        return;
    }
    let (ns, mut h, _w) = Harness::start(plan([true; 3]));
    let b = handshake(&mut h, 55000);
    set_mtu(&ns, "gwb", MTU);

    // Established flow, route cached at the handshake ACK.
    let mut data = big(Pkt::tcp(CLIENT, 55000, VIP, 6443, 0x18));
    (data.seq, data.ack) = (CLIENT_ISN + 1, BACKEND_ISN + 1);
    let arrived = data.frame();
    let (act, out) = h.run(&arrived, h.ingress_client);
    let want = frag_needed(MAC_CLIENT, MAC_GW_C, VIP, CLIENT, MTU, &arrived[14..]);
    assert_eq!(act, XDP_TX, "answered out of the client's interface");
    assert_eq!(out, want, "ICMP frag-needed quoting CLIENT → VIP:6443");

    // A small segment of the same flow still goes through.
    let mut small = Pkt::tcp(CLIENT, 55000, VIP, 6443, 0x18);
    (small.seq, small.ack) = (CLIENT_ISN + 1, BACKEND_ISN + 1);
    let (act, out) = h.run(&small.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat(&small, b)));

    // An untracked mid-flow segment (route looked up, not cached).
    let mut mid = big(Pkt::tcp(CLIENT, 56000, VIP, 6443, 0x10));
    mid.seq = 77_000;
    let arrived = mid.frame();
    let (act, out) = h.run(&arrived, h.ingress_client);
    assert_eq!(
        (act, out),
        (
            XDP_TX,
            frag_needed(MAC_CLIENT, MAC_GW_C, VIP, CLIENT, MTU, &arrived[14..])
        ),
        "untracked flow answered too"
    );

    // Without DF: passed to the kernel, which fragments it.
    let mut no_df = data.clone();
    no_df.frag = 0;
    let (act, _) = h.run(&no_df.frame(), h.ingress_client);
    assert_eq!(act, XDP_PASS, "no DF: the kernel fragments");

    // The MTU back at 1500: the same packet is forwarded.
    set_mtu(&ns, "gwb", 1500);
    let (act, out) = h.run(&data.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat(&data, b)), "MTU restored");

    // The reply direction: the client-side link shrinks; the backend's
    // full-size reply is answered to the backend, quoting its own packet.
    set_mtu(&ns, "gwc", MTU);
    let mut reply = big(from_backend(b, 55000, 0x18));
    (reply.seq, reply.ack) = (BACKEND_ISN + 1, CLIENT_ISN + 1);
    let arrived = reply.frame();
    let (act, out) = h.run(&arrived, h.ingress_backend);
    let want = frag_needed(
        backend_mac(b),
        MAC_GW_B,
        CLIENT,
        BACKENDS[b],
        MTU,
        &arrived[14..],
    );
    assert_eq!((act, out), (XDP_TX, want), "reply answered to the backend");

    let c = counters(&h.dp);
    assert_eq!(
        (c["too_big_answered"], c["too_big_passed"]),
        (3, 1),
        "{c:?}"
    );
    assert_eq!(c["no_route"], 0, "{c:?}");
}

/// Full-NAT, IPv4: the node-side packet carries the source-NAT address
/// and port; the answer quotes the client's own packet (client:port →
/// VIP:6443), and goes to the client.
#[test]
fn too_big_full_nat_quotes_the_client_flow() {
    if !root_or_skip() {
        return;
    }
    let (ns, mut h) = fnat::start(fnat::LO, fnat::HI);
    let sp = fnat::port(CLIENT, 45000, fnat::LO, fnat::HI, 0);
    let b = fnat::handshake_fnat(&mut h, 45000, sp);
    set_mtu(&ns, "gwb", MTU);
    let mut data = big(Pkt::tcp(CLIENT, 45000, VIP, 6443, 0x18));
    (data.seq, data.ack) = (CLIENT_ISN + 1, BACKEND_ISN + 1);
    let arrived = data.frame();
    let (act, out) = h.run(&arrived, h.ingress_client);
    assert_eq!(
        (act, out),
        (
            XDP_TX,
            frag_needed(MAC_CLIENT, MAC_GW_C, VIP, CLIENT, MTU, &arrived[14..])
        )
    );
    // The node's full-size reply toward a smaller client-side link: the
    // answer goes to the node, from and quoting the source-NAT address.
    set_mtu(&ns, "gwb", 1500);
    set_mtu(&ns, "gwc", MTU);
    let mut reply = big(fnat::from_node(b, sp, 0x18));
    (reply.seq, reply.ack) = (BACKEND_ISN + 1, CLIENT_ISN + 1);
    let arrived = reply.frame();
    let (act, out) = h.run(&arrived, h.ingress_backend);
    let want = frag_needed(
        backend_mac(b),
        MAC_GW_B,
        SNAT4,
        BACKENDS[b],
        MTU,
        &arrived[14..],
    );
    assert_eq!((act, out), (XDP_TX, want), "reply answered to the node");
    assert_eq!(counters(&h.dp)["too_big_answered"], 2);
}

/// IPv6: ICMPv6 packet too big quoting CLIENT6 → VIP6, for an untracked
/// flow (route lookup) and a tracked one (cached route).
#[test]
fn too_big_v6_is_answered_with_the_vip_quoted() {
    if !root_or_skip() {
        return;
    }
    let (ns, mut h) = start_dual([true; 3]);
    // Handshake: SYN, SYN-ACK, ACK.
    let b = expected_backend6(50000, [true; 3]);
    let mut syn = to_vip6(50000, 0x02);
    (syn.seq, syn.ack) = (CLIENT_ISN, 0);
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat6(&syn, b)));
    let mut sa = from_backend6(b, 50000, 0x12);
    (sa.seq, sa.ack) = (BACKEND_ISN, CLIENT_ISN + 1);
    let (act, out) = h.run(&sa.frame(), h.ingress_backend);
    assert_eq!((act, out), (XDP_REDIRECT, snat6(&sa, 6443)));
    let mut ack = to_vip6(50000, 0x10);
    (ack.seq, ack.ack) = (CLIENT_ISN + 1, BACKEND_ISN + 1);
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat6(&ack, b)));

    set_mtu(&ns, "gwb", 1280);
    for (sport, seq) in [(50000u16, CLIENT_ISN + 1), (50001, 9_000)] {
        let mut data = to_vip6(sport, 0x18);
        (data.seq, data.ack) = (seq, BACKEND_ISN + 1);
        data.payload = vec![0xcd; 1400];
        let arrived = data.frame();
        let (act, out) = h.run(&arrived, h.ingress_client);
        let want = packet_too_big(MAC_CLIENT, MAC_GW_C, VIP6, CLIENT6, 1280, &arrived[14..]);
        assert_eq!((act, &out), (XDP_TX, &want), "port {sport}");
        assert_eq!(l4_checksum6(VIP6, CLIENT6, 58, &out[54..]), 0);
    }
    // With an extension header the quote would not be TCP at 40 bytes:
    // passed.
    let mut ext = to_vip6(50002, 0x10);
    ext.ext = vec![Ext::options(NEXT_DEST)];
    ext.payload = vec![0xcd; 1400];
    let (act, _) = h.run(&ext.frame(), h.ingress_client);
    assert_eq!(act, XDP_PASS);
    let c = counters(&h.dp);
    assert_eq!(
        (c["too_big_answered"], c["too_big_passed"]),
        (2, 1),
        "{c:?}"
    );
}
