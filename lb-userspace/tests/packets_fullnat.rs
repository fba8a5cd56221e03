//! One-arm full-NAT through BPF_PROG_TEST_RUN (issue 18): exact expected
//! frames, built from scratch with full checksums. The listener of the
//! packet-fixture lab (VIP:6443 over three nodes) is switched to full-NAT
//! with a source-NAT address on the nodes' subnet (`common::fullnat`).
//!
//! Needs root (its own network namespace, as the other packet fixtures).

mod common;

use std::net::Ipv4Addr;

use common::fullnat::*;
use common::v6::*;
use common::*;
use lb::dataplane::snat::SnatFamily;
use lb_common::{
    checksum::checksum, snat_choice, FlowKey, FwdEntry, ListenerKey, RevEntry, SnatConfig,
    FWD_F_FULLNAT, MAP_CT_EMB_REV, MAP_CT_FWD, MAP_CT_REV, REV_F_FULLNAT, SNAT_IDLE_NS,
    SNAT_REUSE_NS,
};

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

/// The outer IP checksum of an ICMP frame recomputed (after its TTL moved).
fn fix_outer(mut f: Vec<u8>) -> Vec<u8> {
    f[24] = 0;
    f[25] = 0;
    let c = checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn icmp_frag_needed_about_a_full_nat_flow_is_translated_both_ways() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start(LO, HI);
    let sport = 40060;
    let sp = port(CLIENT, sport, LO, HI, 0);
    let b = handshake_fnat(&mut h, sport, sp);

    // The node reports a too-big packet (SNAT4:sp -> node) to SNAT4: the
    // client gets it about its own packet (client -> VIP), from the VIP.
    let mut data = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x18);
    data.seq = CLIENT_ISN + 1;
    let sent = fnat(&data, b, sp);
    let icmp = frag_needed(macs_from_backend(b), BACKENDS[b], SNAT4, 64, &sent[14..]);
    let mut quoted = data.clone();
    quoted.ttl -= 1;
    let want = fix_outer(frag_needed(
        MACS_TO_CLIENT,
        VIP,
        CLIENT,
        63,
        &quoted.frame()[14..],
    ));
    let (act, out) = h.run(&icmp, h.ingress_backend);
    assert_eq!((act, &out), (XDP_REDIRECT, &want), "toward the client");
    assert_eq!(checksum(&out[34..], 0), 0, "ICMP checksum");
    assert_checksums_valid(&[&out[..14], &out[42..]].concat());

    // A router on the client side reports a too-big VIP -> client packet:
    // the node gets it about its own packet (node -> SNAT4:sp).
    let router = Ipv4Addr::new(198, 18, 1, 254);
    let resp = from_node(b, sp, 0x18);
    let sent = back(&resp, CLIENT, sport, MACS_TO_CLIENT);
    let icmp = frag_needed((MAC_GW_C, MAC_CLIENT), router, VIP, 64, &sent[14..]);
    let mut quoted = resp.clone();
    quoted.ttl -= 1;
    let want = fix_outer(frag_needed(
        macs_to_backend(b),
        router,
        BACKENDS[b],
        63,
        &quoted.frame()[14..],
    ));
    let (act, out) = h.run(&icmp, h.ingress_client);
    assert_eq!((act, &out), (XDP_REDIRECT, &want), "toward the node");
    assert_eq!(checksum(&out[34..], 0), 0, "ICMP checksum");
    assert_eq!(counters(&h.dp)["icmp_translated"], 2);
}

#[test]
fn a_flow_whose_node_dies_is_rescheduled_with_a_port_toward_the_new_node() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, mut w) = start_written(LO, HI);
    let sport = 40070;
    let sp = port(CLIENT, sport, LO, HI, 0);
    let b = handshake_fnat(&mut h, sport, sp);
    // Node b is proven dead (out of the table, keeps no flows).
    let mut serving = [true; 3];
    serving[b] = false;
    w.apply(&mut h.dp, &plan(serving)).unwrap();
    fullnat_listener(&mut h, ListenerKey::tcp_v4(VIP.octets(), 6443));
    let nb = expected_backend(sport, serving);
    let mut data = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x18);
    (data.seq, data.ack) = (CLIENT_ISN + 1, BACKEND_ISN + 1);
    let (act, out) = h.run(&data.frame(), h.ingress_client);
    // The first-choice port is free toward the new node.
    assert_eq!(
        (act, out),
        (XDP_REDIRECT, fnat(&data, nb, sp)),
        "moved to {nb}"
    );
    let g = counters(&h.dp);
    assert_eq!((g["rescheduled"], g["snat_port_claimed"]), (1, 2));
    let old = FlowKey::tcp_v4(ne(BACKENDS[b]), ne(SNAT4), 6443u16.to_be(), sp.to_be());
    assert!(
        h.dp.maps.ct_rev.get(&old, 0).is_err(),
        "old reply entry gone"
    );
    let f = fwd_entry(&h, &client_flow(CLIENT, sport)).unwrap();
    assert_eq!((f.real, f.snat_port), (nb as u32, sp.to_be()));
    // The new node's answer is translated as established; so is the next
    // client packet.
    let r = from_node(nb, sp, 0x14);
    let (act, out) = h.run(&r.frame(), h.ingress_backend);
    assert_eq!(
        (act, out),
        (XDP_REDIRECT, back(&r, CLIENT, sport, MACS_TO_CLIENT))
    );
    let (act, out) = h.run(&data.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, fnat(&data, nb, sp)));
    assert_eq!(counters(&h.dp)["conntrack_hit"], 1);
}

#[test]
fn an_open_flow_silent_for_hours_gives_its_port_back() {
    if !root_or_skip() {
        return;
    }
    // One port: a second flow to the same node needs the first one's.
    let (_ns, mut h) = start(LO, LO);
    let b = node_for(CLIENT, 48000);
    let sports: Vec<u16> = (48000..49000)
        .filter(|s| node_for(CLIENT, *s) == b)
        .take(2)
        .collect();
    handshake_fnat(&mut h, sports[0], LO);
    let (act, _) = h.run(&syn(CLIENT, sports[1]).frame(), h.ingress_client);
    assert_eq!(act, XDP_DROP, "the open flow holds the port");
    // Its client silent past the bound (vanished without FIN or RST).
    age_flows(&mut h, SNAT_IDLE_NS + 1_000_000_000);
    let s = syn(CLIENT, sports[1]);
    let (act, out) = h.run(&s.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, fnat(&s, b, LO)));
    let g = counters(&h.dp);
    assert_eq!((g["snat_exhausted"], g["snat_port_reused"]), (1, 1));
    assert!(fwd_entry(&h, &client_flow(CLIENT, sports[0])).is_none());
}
