//! A new connection that reuses a closed or stale flow's 4-tuple (issue 19,
//! finding 1): the SYN starts a new flow on the node Maglev gives it now,
//! and every later packet of the new connection (its handshake ACK, its
//! data) must follow the SYN there, never the stale entry's node.
//!
//! Busy kubelets and controllers, `tcp_tw_reuse` and clients behind NAT
//! reuse client ports all the time. Before the fix, the SYN wrote only the
//! embryonic reply entry and left the stale `CT_FWD` entry in place, so the
//! client's ACK went to the old node, which reset the connection (or, when
//! silent, left it hanging after a completed handshake).
//!
//! Needs root (BPF_PROG_TEST_RUN in a namespace of its own).

mod common;

use common::*;
use lb_common::{FlowKey, RevEntry, MAP_CT_REV};

/// Runs a handshake for `sport` while `serving` is the serving set, with
/// `isn` as the client's ISN; returns the backend it went to.
fn handshake_on(h: &mut Harness, sport: u16, serving: [bool; 3], isn: u32) -> usize {
    let b = expected_backend(sport, serving);
    let mut syn = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x02);
    syn.seq = isn;
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat(&syn, b)), "SYN to {b}");
    let mut synack = from_backend(b, sport, 0x12);
    synack.seq = BACKEND_ISN;
    synack.ack = isn + 1;
    let (act, out) = h.run(&synack.frame(), h.ingress_backend);
    assert_eq!(
        (act, out),
        (XDP_REDIRECT, snat(&synack, 6443)),
        "SYN-ACK from {b}"
    );
    let mut ack = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x10);
    ack.seq = isn + 1;
    ack.ack = BACKEND_ISN + 1;
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!(
        (act, out),
        (XDP_REDIRECT, dnat(&ack, b)),
        "handshake ACK follows the SYN to {b}"
    );
    b
}

/// A client packet of the established flow `sport` (data, ACK flag).
fn data(sport: u16, seq: u32) -> Pkt {
    let mut p = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x18);
    p.seq = seq;
    p.ack = BACKEND_ISN + 1;
    p
}

/// The reply-direction key of the flow `sport` on backend `b`.
fn rev_key(b: usize, sport: u16) -> FlowKey {
    FlowKey::tcp_v4(
        u32::from_ne_bytes(BACKENDS[b].octets()),
        u32::from_ne_bytes(CLIENT.octets()),
        6443u16.to_be(),
        sport.to_be(),
    )
}

/// A client port whose flow Maglev sends to a different backend once `b`
/// stops taking new flows (every port does) and, for the undrain case,
/// whose choice with all serving differs from its choice while `d` drains.
fn port_moved_by_drain(d: usize, from: u16) -> u16 {
    let mut draining = [true; 3];
    draining[d] = false;
    (from..from + 1000)
        .find(|p| expected_backend(*p, [true; 3]) == d && expected_backend(*p, draining) != d)
        .expect("some port maps to the drained node")
}

/// A port reused after its node started draining: the SYN goes to a serving
/// node, and so must the handshake ACK and the data after it.
#[test]
fn reused_port_after_a_drain_follows_its_syn() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, mut w) = Harness::start(plan([true; 3]));
    let d = 0;
    let sport = port_moved_by_drain(d, 40000);
    assert_eq!(handshake_on(&mut h, sport, [true; 3], CLIENT_ISN), d);
    // The old connection ends with the client's RST (plausible: its seq).
    let mut rst = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x04);
    rst.seq = CLIENT_ISN + 1;
    assert_eq!(
        h.run(&rst.frame(), h.ingress_client),
        (XDP_REDIRECT, dnat(&rst, d))
    );
    w.apply(&mut h.dp, &plan_draining(d)).unwrap();

    // The same tuple, a new connection.
    let mut serving = [true; 3];
    serving[d] = false;
    let b = handshake_on(&mut h, sport, serving, 900_000);
    assert_ne!(b, d);
    let p = data(sport, 900_001);
    assert_eq!(
        h.run(&p.frame(), h.ingress_client),
        (XDP_REDIRECT, dnat(&p, b)),
        "data follows the new flow to {b}, not the drained node {d}"
    );
    let e = ct_entry(&h.dp, sport);
    assert_eq!(e.real, b as u32, "the established entry names the new node");
    assert!(
        !has_flow::<RevEntry>(&h.dp, MAP_CT_REV, &rev_key(d, sport)),
        "the old flow's reply entry is gone"
    );
}

/// A port reused after a drain and an undrain, every node healthy: the old
/// flow lived on another node than Maglev gives the tuple now. Before the
/// fix, 2/20 (IPv4) and 5/20 (IPv6) such reconnects were reset in the lab.
#[test]
fn reused_port_after_an_undrain_follows_its_syn() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, mut w) = Harness::start(plan([true; 3]));
    let d = 1;
    let sport = port_moved_by_drain(d, 42000);
    w.apply(&mut h.dp, &plan_draining(d)).unwrap();
    let mut serving = [true; 3];
    serving[d] = false;
    let old = handshake_on(&mut h, sport, serving, CLIENT_ISN);
    assert_ne!(old, d);
    // Closed with a FIN from the client, then the node comes back.
    let mut fin = data(sport, CLIENT_ISN + 1);
    fin.flags = 0x11;
    assert_eq!(
        h.run(&fin.frame(), h.ingress_client),
        (XDP_REDIRECT, dnat(&fin, old))
    );
    w.apply(&mut h.dp, &plan([true; 3])).unwrap();

    let b = handshake_on(&mut h, sport, [true; 3], 500_000);
    assert_eq!(b, d, "the reused tuple's SYN goes to the undrained node");
    let p = data(sport, 500_001);
    assert_eq!(
        h.run(&p.frame(), h.ingress_client),
        (XDP_REDIRECT, dnat(&p, b)),
        "data follows the SYN to {b}, not the old node {old}"
    );
    assert_eq!(ct_entry(&h.dp, sport).real, b as u32);
}

/// A port reused after its node went silent: its checks time out, so it is
/// down but not proven dead and keeps its tracked flows. The new handshake
/// completes on a live node and its data stays there (before: the ACK went
/// to the silent node and the connection hung after a completed handshake).
#[test]
fn reused_port_after_its_node_went_silent_follows_its_syn() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, mut w) = Harness::start(plan([true; 3]));
    let d = 2;
    let sport = port_moved_by_drain(d, 44000);
    assert_eq!(handshake_on(&mut h, sport, [true; 3], CLIENT_ISN), d);
    let mut serving = [true; 3];
    serving[d] = false;
    let mut silent = plan(serving);
    silent.listeners[0].reals[d].keeps_flows = true;
    w.apply(&mut h.dp, &silent).unwrap();

    let b = handshake_on(&mut h, sport, serving, 300_000);
    assert_ne!(b, d);
    for i in 0..3 {
        let p = data(sport, 300_001 + i * 100);
        assert_eq!(
            h.run(&p.frame(), h.ingress_client),
            (XDP_REDIRECT, dnat(&p, b)),
            "packet {i} stays on {b}"
        );
    }
    let g = counters(&h.dp);
    assert_eq!(g["rescheduled"], 0, "a new connection is not a reschedule");
}

/// A retransmitted SYN of the new connection goes where its first SYN went
/// and counts no second new flow (the stale entry is gone after the first
/// SYN, so the second is an ordinary retransmission).
#[test]
fn retransmitted_syn_of_a_reused_port_stays() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, mut w) = Harness::start(plan([true; 3]));
    let d = 0;
    let sport = port_moved_by_drain(d, 46000);
    assert_eq!(handshake_on(&mut h, sport, [true; 3], CLIENT_ISN), d);
    w.apply(&mut h.dp, &plan_draining(d)).unwrap();
    let mut serving = [true; 3];
    serving[d] = false;
    let b = expected_backend(sport, serving);
    let mut syn = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x02);
    syn.seq = 77_000;
    for _ in 0..2 {
        assert_eq!(
            h.run(&syn.frame(), h.ingress_client),
            (XDP_REDIRECT, dnat(&syn, b)),
            "SYN and its retransmission both go to {b}"
        );
    }
    assert_eq!(
        counters(&h.dp)["new_flow"],
        2,
        "one new flow per connection"
    );
}
