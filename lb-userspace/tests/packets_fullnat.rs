//! One-arm full-NAT through BPF_PROG_TEST_RUN (issue 18): exact expected
//! frames, built from scratch with full checksums. The listener of the
//! packet-fixture lab (VIP:6443 over three nodes) is switched to full-NAT
//! with a source-NAT address on the nodes' subnet; expected ports come from
//! the shared `snat_choice`, expected nodes from Maglev computed here.
//!
//! Needs root (its own network namespace, as the other packet fixtures).

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::v6::*;
use common::*;
use lb::dataplane::maps::{SnatFamily, TableMaps};
use lb_common::{
    hash::flow_hash, snat_choice, FlowKey, FwdEntry, ListenerKey, RevEntry, SnatConfig,
    FWD_F_FULLNAT, LISTENER_F_FULLNAT, MAGLEV_TABLE_SIZE, MAP_CT_EMB_REV, MAP_CT_FWD, MAP_CT_REV,
    REV_F_FULLNAT, SNAT_REUSE_NS,
};

/// The source-NAT address: a dedicated address on the nodes' subnet.
const SNAT4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 100);
const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x100);
const LO: u16 = 20000;
const HI: u16 = 20999;
/// A client on the nodes' own subnet (reached through `gwb`): one-arm.
const LAN_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 50);
const MAC_LAN_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x50];

fn ne(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// Switches listener `key` to full-NAT.
fn fullnat_listener(h: &mut Harness, key: ListenerKey) {
    let mut l = h.dp.maps.listeners.get(&key, 0).expect("listener");
    l.flags |= LISTENER_F_FULLNAT;
    h.dp.maps.set_listener(key, l).unwrap();
}

/// The IPv4 lab with the listener in full-NAT mode over `lo..=hi`.
fn start(lo: u16, hi: u16) -> (Netns, Harness) {
    let (ns, mut h, _w) = Harness::start(plan([true; 3]));
    fullnat_listener(&mut h, ListenerKey::tcp_v4(VIP.octets(), 6443));
    let cfg = SnatConfig::new(&[SNAT4.into()], lo, hi).unwrap();
    h.dp.maps.set_snat_addr(SNAT4.into()).unwrap();
    h.dp.maps.set_snat(SnatFamily::V4, cfg).unwrap();
    ns_ip(
        &ns,
        &format!(
            "neigh add {LAN_CLIENT} lladdr {} dev gwb nud permanent",
            mac(MAC_LAN_CLIENT)
        ),
    );
    (ns, h)
}

fn client_flow(client: Ipv4Addr, sport: u16) -> FlowKey {
    FlowKey::tcp_v4(ne(client), ne(VIP), sport.to_be(), 6443u16.to_be())
}

/// The source port probe `probe` of `client:sport` gives over `lo..=hi`.
fn port(client: Ipv4Addr, sport: u16, lo: u16, hi: u16, probe: u32) -> u16 {
    snat_choice(&client_flow(client, sport), 1, lo, hi, probe).1
}

/// The node Maglev gives `client:sport` (all three serving).
fn node_for(client: Ipv4Addr, sport: u16) -> usize {
    let keys = ["cp-01", "cp-02", "cp-03"];
    let table = lb::maglev::build_table(&keys, MAGLEV_TABLE_SIZE)
        .unwrap()
        .unwrap();
    let h = flow_hash(ne(client), ne(VIP), sport.to_be(), 6443u16.to_be(), 6);
    table[(h % MAGLEV_TABLE_SIZE) as usize] as usize
}

/// Expected client → node frame: source SNAT4:`sport`, destination the
/// node, TTL - 1, MACs toward the node.
fn fnat(p: &Pkt, b: usize, sport: u16) -> Vec<u8> {
    let mut e = p.clone();
    (e.src, e.sport) = (SNAT4, sport);
    (e.dst, e.dport) = (BACKENDS[b], 6443);
    e.ttl -= 1;
    (e.dmac, e.smac) = macs_to_backend(b);
    e.frame()
}

/// A frame from node `b` to SNAT4:`sport`.
fn from_node(b: usize, sport: u16, flags: u8) -> Pkt {
    let mut p = from_backend(b, sport, flags);
    p.dst = SNAT4;
    p
}

/// Expected reply after translation: VIP:6443 → `client:cport`, TTL - 1,
/// MACs `macs`.
fn back(p: &Pkt, client: Ipv4Addr, cport: u16, macs: ([u8; 6], [u8; 6])) -> Vec<u8> {
    let mut e = p.clone();
    (e.src, e.sport) = (VIP, 6443);
    (e.dst, e.dport) = (client, cport);
    e.ttl -= 1;
    (e.dmac, e.smac) = macs;
    e.frame()
}

fn syn(client: Ipv4Addr, sport: u16) -> Pkt {
    let mut p = Pkt::tcp(client, sport, VIP, 6443, 0x02);
    (p.seq, p.ack) = (CLIENT_ISN, 0);
    p
}

/// SYN, SYN-ACK, handshake ACK of the client flow from CLIENT:`sport`,
/// whose source port is `sp`; returns the node.
fn handshake_fnat(h: &mut Harness, sport: u16, sp: u16) -> usize {
    let b = node_for(CLIENT, sport);
    let s = syn(CLIENT, sport);
    let (act, out) = h.run(&s.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, fnat(&s, b, sp)), "SYN {sport}");
    let mut sa = from_node(b, sp, 0x12);
    (sa.seq, sa.ack) = (BACKEND_ISN, CLIENT_ISN + 1);
    let (act, out) = h.run(&sa.frame(), h.ingress_backend);
    assert_eq!(
        (act, out),
        (XDP_REDIRECT, back(&sa, CLIENT, sport, MACS_TO_CLIENT)),
        "SYN-ACK {sport}"
    );
    let mut ack = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x10);
    (ack.seq, ack.ack) = (CLIENT_ISN + 1, BACKEND_ISN + 1);
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, fnat(&ack, b, sp)), "ACK {sport}");
    b
}

fn fwd_entry(h: &Harness, key: &FlowKey) -> Option<FwdEntry> {
    h.dp.maps.ct_fwd.get(key, 0).ok()
}

#[test]
fn syn_handshake_and_data_translated_both_ways() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start(LO, HI);
    let sport = 40000;
    let sp = port(CLIENT, sport, LO, HI, 0);
    assert!((LO..=HI).contains(&sp));

    // The SYN alone: source and destination rewritten, checksums valid.
    let b = node_for(CLIENT, sport);
    let s = syn(CLIENT, sport);
    let (act, out) = h.run(&s.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, fnat(&s, b, sp), "SYN: SNAT4:{sp} -> node {b}");
    assert_checksums_valid(&out);
    assert_eq!(out[14 + 8], 63, "TTL decremented");
    let g = counters(&h.dp);
    assert_eq!((g["new_flow"], g["snat_port_claimed"]), (1, 1));

    // The node's SYN-ACK back to the client, then the ACK promotes.
    let mut sa = from_node(b, sp, 0x12);
    (sa.seq, sa.ack) = (BACKEND_ISN, CLIENT_ISN + 1);
    let (act, out) = h.run(&sa.frame(), h.ingress_backend);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, back(&sa, CLIENT, sport, MACS_TO_CLIENT), "SYN-ACK");
    assert_checksums_valid(&out);
    let mut ack = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x10);
    (ack.seq, ack.ack) = (CLIENT_ISN + 1, BACKEND_ISN + 1);
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, fnat(&ack, b, sp)), "ACK");
    assert_eq!(counters(&h.dp)["embryonic_promoted"], 1);

    // Established: both entries carry the full-NAT state.
    let f = fwd_entry(&h, &client_flow(CLIENT, sport)).expect("established");
    assert_ne!(f.flags & FWD_F_FULLNAT, 0);
    assert_eq!((f.snat[0], f.snat_port), (ne(SNAT4), sp.to_be()));
    let rkey = FlowKey::tcp_v4(ne(BACKENDS[b]), ne(SNAT4), 6443u16.to_be(), sp.to_be());
    let r: RevEntry = h.dp.maps.ct_rev.get(&rkey, 0).expect("reply entry");
    assert_ne!(r.flags & REV_F_FULLNAT, 0);
    assert_eq!((r.client[0], r.cport), (ne(CLIENT), sport.to_be()));

    // Data both ways on the established path.
    let mut data = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x18);
    data.payload = b"GET /version HTTP/1.1\r\n\r\n".to_vec();
    let (act, out) = h.run(&data.frame(), h.ingress_client);
    assert_eq!((act, &out), (XDP_REDIRECT, &fnat(&data, b, sp)));
    assert_checksums_valid(&out);
    let mut resp = from_node(b, sp, 0x18);
    resp.payload = vec![b'x'; 300];
    let (act, out) = h.run(&resp.frame(), h.ingress_backend);
    assert_eq!(
        (act, &out),
        (XDP_REDIRECT, &back(&resp, CLIENT, sport, MACS_TO_CLIENT))
    );
    assert_checksums_valid(&out);
    let g = counters(&h.dp);
    assert_eq!(g["conntrack_hit"], 1);
    assert_eq!(g["reply_tracked"], 2);
}

#[test]
fn one_arm_client_on_the_nodes_subnet_is_sent_back_with_xdp_tx() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start(LO, HI);
    let sport = 41000;
    let (b, sp) = (
        node_for(LAN_CLIENT, sport),
        port(LAN_CLIENT, sport, LO, HI, 0),
    );
    let mut s = syn(LAN_CLIENT, sport);
    (s.dmac, s.smac) = (MAC_GW_B, MAC_LAN_CLIENT);
    let (act, out) = h.run(&s.frame(), h.ingress_backend);
    assert_eq!(
        (act, out),
        (XDP_TX, fnat(&s, b, sp)),
        "SYN out the same NIC"
    );
    let sa = from_node(b, sp, 0x12);
    let (act, out) = h.run(&sa.frame(), h.ingress_backend);
    let macs = (MAC_LAN_CLIENT, MAC_GW_B);
    assert_eq!((act, out), (XDP_TX, back(&sa, LAN_CLIENT, sport, macs)));
}

#[test]
fn retransmitted_syn_keeps_its_port() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start(LO, HI);
    let sport = 40010;
    let (b, sp) = (node_for(CLIENT, sport), port(CLIENT, sport, LO, HI, 0));
    let s = syn(CLIENT, sport);
    for _ in 0..3 {
        let (act, out) = h.run(&s.frame(), h.ingress_client);
        assert_eq!((act, out), (XDP_REDIRECT, fnat(&s, b, sp)));
    }
    let g = counters(&h.dp);
    assert_eq!((g["new_flow"], g["snat_port_claimed"]), (1, 1));
    assert_eq!(map_len::<RevEntry>(&h.dp, MAP_CT_EMB_REV), 1);
}

/// Two client ports whose flows land on the same node with the same
/// first-choice source port over `lo..=hi`.
fn colliding_pair(lo: u16, hi: u16) -> (u16, u16) {
    for a in 42000..43000u16 {
        for c in a + 1..43000u16 {
            if node_for(CLIENT, a) == node_for(CLIENT, c)
                && port(CLIENT, a, lo, hi, 0) == port(CLIENT, c, lo, hi, 0)
            {
                return (a, c);
            }
        }
    }
    unreachable!("no collision in range");
}

#[test]
fn a_port_collision_probes_to_the_next_port() {
    if !root_or_skip() {
        return;
    }
    let (lo, hi) = (20000, 20009);
    let (_ns, mut h) = start(lo, hi);
    let (a, c) = colliding_pair(lo, hi);
    let first = port(CLIENT, a, lo, hi, 0);
    handshake_fnat(&mut h, a, first);
    // The second flow finds the first's port taken and gets the next one
    // (wrapping in the range); its replies reach its own client port.
    let next = port(CLIENT, c, lo, hi, 1);
    assert_eq!(next, if first == hi { lo } else { first + 1 });
    handshake_fnat(&mut h, c, next);
    let b = node_for(CLIENT, a);
    for (sp, cport) in [(first, a), (next, c)] {
        let r = from_node(b, sp, 0x18);
        let (act, out) = h.run(&r.frame(), h.ingress_backend);
        assert_eq!(
            (act, out),
            (XDP_REDIRECT, back(&r, CLIENT, cport, MACS_TO_CLIENT))
        );
    }
}

#[test]
fn every_port_taken_drops_with_snat_exhausted() {
    if !root_or_skip() {
        return;
    }
    let (lo, hi) = (20000, 20001);
    let (_ns, mut h) = start(lo, hi);
    // Three flows to one node over a range of two ports.
    let b = node_for(CLIENT, 44000);
    let sports: Vec<u16> = (44000..45000)
        .filter(|s| node_for(CLIENT, *s) == b)
        .take(3)
        .collect();
    let mut got = Vec::new();
    for s in &sports[..2] {
        let p = syn(CLIENT, *s);
        let (act, out) = h.run(&p.frame(), h.ingress_client);
        assert_eq!(act, XDP_REDIRECT);
        got.push(u16::from_be_bytes([out[34], out[35]]));
    }
    got.sort();
    assert_eq!(got, vec![lo, hi], "both ports claimed");
    let (act, _) = h.run(&syn(CLIENT, sports[2]).frame(), h.ingress_client);
    assert_eq!(act, XDP_DROP);
    let g = counters(&h.dp);
    assert_eq!(g["snat_exhausted"], 1);
    assert_eq!(g["new_flow"], 2);
}

#[test]
fn untracked_packets_to_the_snat_address() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start(LO, HI);
    // In the range, no flow: dropped, never translated by the fallback
    // (node 0's endpoint serves exactly one VIP:port).
    let stray = from_node(0, LO + 7, 0x10);
    let (act, _) = h.run(&stray.frame(), h.ingress_backend);
    assert_eq!(act, XDP_DROP);
    assert_eq!(counters(&h.dp)["snat_no_entry"], 1);
    assert_eq!(counters(&h.dp)["reply_fallback"], 0);
    // Outside the range: the gateway's own connection, passed untouched.
    let own = from_node(0, 40000, 0x12);
    let (act, out) = h.run(&own.frame(), h.ingress_backend);
    assert_eq!((act, out), (XDP_PASS, own.frame()));
    assert_eq!(counters(&h.dp)["local_reply"], 1);
}

#[test]
fn unconfigured_family_drops_new_flows() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start(LO, HI);
    h.dp.maps
        .set_snat(SnatFamily::V4, SnatConfig::default())
        .unwrap();
    let (act, _) = h.run(&syn(CLIENT, 40020).frame(), h.ingress_client);
    assert_eq!(act, XDP_DROP);
    assert_eq!(counters(&h.dp)["snat_unconfigured"], 1);
}

/// Moves every forward entry's last-seen time back by `ns` (time passing,
/// as far as the data path can tell).
fn age_flows(h: &mut Harness, ns: u64) {
    let keys: Vec<FlowKey> = h.dp.maps.ct_fwd.keys().map(|k| k.unwrap()).collect();
    for k in keys {
        if let Ok(mut e) = h.dp.maps.ct_fwd.get(&k, 0) {
            e.last_seen_ns = e.last_seen_ns.saturating_sub(ns);
            h.dp.maps.ct_fwd.insert(k, e, 0).unwrap();
        }
    }
}

#[test]
fn short_flows_do_not_leak_ports() {
    if !root_or_skip() {
        return;
    }
    // Four ports toward each node: 60 short connections from one client
    // need every port many times over.
    let (lo, hi) = (20000, 20003);
    let (_ns, mut h) = start(lo, hi);
    for sport in 46000..46060u16 {
        let b = node_for(CLIENT, sport);
        let s = syn(CLIENT, sport);
        let (act, out) = h.run(&s.frame(), h.ingress_client);
        assert_eq!(act, XDP_REDIRECT, "flow {sport} got a port");
        let sp = u16::from_be_bytes([out[34], out[35]]);
        assert!((lo..=hi).contains(&sp));
        let mut sa = from_node(b, sp, 0x12);
        (sa.seq, sa.ack) = (BACKEND_ISN, CLIENT_ISN + 1);
        assert_eq!(h.run(&sa.frame(), h.ingress_backend).0, XDP_REDIRECT);
        // ACK, client FIN, node FIN, last ACK.
        for (flags, from_client) in [(0x10, true), (0x11, true), (0x11, false), (0x10, true)] {
            let act = if from_client {
                let mut p = Pkt::tcp(CLIENT, sport, VIP, 6443, flags);
                (p.seq, p.ack) = (CLIENT_ISN + 1, BACKEND_ISN + 1);
                h.run(&p.frame(), h.ingress_client).0
            } else {
                h.run(&from_node(b, sp, flags).frame(), h.ingress_backend).0
            };
            assert_eq!(act, XDP_REDIRECT, "flow {sport} flags {flags:#x}");
        }
        // The flow is closing; after the reuse bound it gives its port back.
        let f = fwd_entry(&h, &client_flow(CLIENT, sport)).expect("tracked");
        assert_ne!(f.flags & lb_common::FWD_F_CLOSING, 0);
        age_flows(&mut h, SNAT_REUSE_NS + 1_000_000_000);
    }
    // At most one flow per port per node is left in the tables.
    assert!(map_len::<RevEntry>(&h.dp, MAP_CT_REV) <= 3 * 4);
    assert!(map_len::<FwdEntry>(&h.dp, MAP_CT_FWD) <= 3 * 4);
    let g = counters(&h.dp);
    assert_eq!(g["snat_exhausted"], 0);
    assert_eq!(g["snat_port_claimed"], 60);
    assert!(g["snat_port_reused"] >= 60 - 12, "{g:?}");

    // A closed flow not yet idle for the bound keeps its port: with every
    // port of a node held that way, the next flow to it is refused.
    let b = node_for(CLIENT, 47000);
    let mut refused = false;
    for sport in (47000..48000u16)
        .filter(|s| node_for(CLIENT, *s) == b)
        .take(5)
    {
        refused |= h.run(&syn(CLIENT, sport).frame(), h.ingress_client).0 == XDP_DROP;
    }
    assert!(refused, "fresh embryonic flows are never taken over");
}

#[test]
fn untracked_mid_flow_packet_rebuilds_with_the_first_choice_port() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start(LO, HI);
    let sport = 40030;
    let (b, sp) = (node_for(CLIENT, sport), port(CLIENT, sport, LO, HI, 0));
    // A data packet of a flow another gateway started (HA takeover).
    let mut data = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x18);
    (data.seq, data.ack) = (5000, 9000);
    let (act, out) = h.run(&data.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, fnat(&data, b, sp)));
    assert_eq!(counters(&h.dp)["untracked_mid_flow"], 1);
    // The node vouches (an ACK of the client's data): promoted.
    let mut ack = from_node(b, sp, 0x10);
    (ack.seq, ack.ack) = (9000, 5005);
    let (act, out) = h.run(&ack.frame(), h.ingress_backend);
    assert_eq!(
        (act, out),
        (XDP_REDIRECT, back(&ack, CLIENT, sport, MACS_TO_CLIENT))
    );
    assert_eq!(counters(&h.dp)["embryonic_promoted"], 1);
    let f = fwd_entry(&h, &client_flow(CLIENT, sport)).expect("promoted");
    assert_eq!(
        (f.flags & FWD_F_FULLNAT, f.snat_port),
        (FWD_F_FULLNAT, sp.to_be())
    );
    let (act, out) = h.run(&data.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, fnat(&data, b, sp)));
    assert_eq!(counters(&h.dp)["conntrack_hit"], 1);
}

#[test]
fn ipv6_syn_and_reply() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    let key = ListenerKey::tcp(VIP6.into(), 6443);
    fullnat_listener(&mut h, key);
    h.dp.maps.set_snat_addr(SNAT6.into()).unwrap();
    let cfg = SnatConfig::new(&[SNAT6.into()], LO, HI).unwrap();
    h.dp.maps.set_snat(SnatFamily::V6, cfg).unwrap();

    let sport = 40040;
    let b = expected_backend6(sport, [true; 3]);
    let sp = snat_choice(&fwd_key6(sport), 1, LO, HI, 0).1;
    let mut s = to_vip6(sport, 0x02);
    (s.seq, s.ack) = (CLIENT_ISN, 0);
    let (act, out) = h.run(&s.frame(), h.ingress_client);
    let mut want = s.clone();
    (want.src, want.sport) = (SNAT6, sp);
    (want.dst, want.dport) = (BACKENDS6[b], 6443);
    want.hop_limit -= 1;
    (want.dmac, want.smac) = macs_to_backend(b);
    assert_eq!((act, &out), (XDP_REDIRECT, &want.frame()), "IPv6 SYN");
    assert_tcp_checksum6(&out);

    let mut sa = from_backend6(b, sp, 0x12);
    sa.dst = SNAT6;
    (sa.seq, sa.ack) = (BACKEND_ISN, CLIENT_ISN + 1);
    let (act, out) = h.run(&sa.frame(), h.ingress_backend);
    let mut want = sa.clone();
    (want.src, want.sport) = (VIP6, 6443);
    (want.dst, want.dport) = (CLIENT6, sport);
    want.hop_limit -= 1;
    (want.dmac, want.smac) = MACS_TO_CLIENT;
    assert_eq!((act, &out), (XDP_REDIRECT, &want.frame()), "IPv6 SYN-ACK");
    assert_tcp_checksum6(&out);

    // A stray packet to an unused in-range port of the IPv6 address.
    let mut stray = from_backend6(b, LO + 3, 0x10);
    stray.dst = SNAT6;
    assert_eq!(h.run(&stray.frame(), h.ingress_backend).0, XDP_DROP);
    assert_eq!(counters(&h.dp)["snat_no_entry"], 1);
}

#[test]
fn syn_reusing_a_closed_flows_tuple_starts_over_on_its_port() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start(LO, HI);
    let sport = 40050;
    let sp = port(CLIENT, sport, LO, HI, 0);
    let b = handshake_fnat(&mut h, sport, sp);
    let mut fin = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x11);
    (fin.seq, fin.ack) = (CLIENT_ISN + 1, BACKEND_ISN + 1);
    assert_eq!(h.run(&fin.frame(), h.ingress_client).0, XDP_REDIRECT);
    // A new connection on the same tuple at once: its old entries go, it
    // is a new flow on the same port, and its handshake promotes.
    handshake_fnat(&mut h, sport, sp);
    let g = counters(&h.dp);
    assert_eq!((g["new_flow"], g["embryonic_promoted"]), (2, 2));
    let rkey = FlowKey::tcp_v4(ne(BACKENDS[b]), ne(SNAT4), 6443u16.to_be(), sp.to_be());
    let r: RevEntry = h.dp.maps.ct_rev.get(&rkey, 0).expect("reply entry");
    assert_eq!(r.seq, BACKEND_ISN + 1, "the new flow's entry");
    let f = fwd_entry(&h, &client_flow(CLIENT, sport)).unwrap();
    assert_eq!(f.flags & lb_common::FWD_F_CLOSING, 0, "not closing");
}
