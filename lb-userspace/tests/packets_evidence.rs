//! Issue 20: the data path's evidence of life per real (`REAL_SEEN`),
//! through BPF_PROG_TEST_RUN. Times are written when stale (older than
//! `EVIDENCE_TICK_NS`, or an answer older than the last send), never on
//! every packet; a bare ACK wants no answer and is not recorded; a node's
//! RST to a SYN is kept from the client while another node serves, and
//! goes through when none does.
//!
//! Needs root (a network namespace of its own, like `packets.rs`).

mod common;

use std::time::Duration;

use common::*;
use lb_common::{evidence::EVIDENCE_TICK_NS, RealSeen};

fn seen(h: &Harness, real: usize) -> RealSeen {
    h.dp.as_ref().real_seen.get(&(real as u32), 0).unwrap()
}

/// Sleeps past one evidence tick (the coarse clock moves by jiffies).
fn past_a_tick() {
    std::thread::sleep(Duration::from_nanos(EVIDENCE_TICK_NS) + Duration::from_millis(60));
}

fn data(sport: u16, seq: u32, payload: &[u8]) -> Pkt {
    let mut p = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x18);
    p.seq = seq;
    p.ack = BACKEND_ISN + 1;
    p.payload = payload.to_vec();
    p
}

#[test]
fn times_are_written_when_stale_not_on_every_packet() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, _written) = Harness::start(plan([true; 3]));
    let sport = 43000;
    let b = handshake(&mut h, sport);
    let s0 = seen(&h, b);
    assert_ne!(s0.sent_ns, 0, "the SYN was recorded");
    assert_ne!(s0.reply_ns, 0, "the SYN-ACK was recorded");
    assert!(s0.reply_ns >= s0.sent_ns, "answered");
    assert_eq!(s0.waiting_ns, s0.sent_ns, "the SYN started a wait");
    for other in (0..3).filter(|i| *i != b) {
        assert_eq!(
            seen(&h, other),
            RealSeen::default(),
            "untouched real {other}"
        );
    }

    // A burst of data and replies within one tick: nothing rewritten.
    for i in 0..200u32 {
        let p = data(sport, CLIENT_ISN + 1 + i * 5, b"hello");
        let (act, out) = h.run(&p.frame(), h.ingress_client);
        assert_eq!((act, out), (XDP_REDIRECT, dnat(&p, b)));
        let mut r = from_backend(b, sport, 0x10);
        r.seq = BACKEND_ISN + 1;
        let (act, _) = h.run(&r.frame(), h.ingress_backend);
        assert_eq!(act, XDP_REDIRECT);
    }
    assert_eq!(seen(&h, b), s0, "400 packets within a tick wrote nothing");

    // A tick later: a bare ACK wants no answer, it is not recorded.
    past_a_tick();
    let mut ack = data(sport, CLIENT_ISN + 1001, b"");
    ack.flags = 0x10;
    let (act, _) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(seen(&h, b), s0, "a bare ACK is not a send to answer");

    // Data is: the stored send was stale, so it is rewritten, and as the
    // last send was answered, a new wait starts.
    let p = data(sport, CLIENT_ISN + 1001, b"more");
    h.run(&p.frame(), h.ingress_client);
    let s1 = seen(&h, b);
    assert!(s1.sent_ns > s0.sent_ns, "stale send rewritten");
    assert_eq!(s1.waiting_ns, s1.sent_ns, "a new wait");
    assert_eq!(s1.reply_ns, s0.reply_ns);
    assert!(s1.sent_ns > s1.reply_ns, "unanswered so far");
    // More data within the tick: not rewritten, the wait holds.
    h.run(
        &data(sport, CLIENT_ISN + 1005, b"again").frame(),
        h.ingress_client,
    );
    assert_eq!(seen(&h, b), s1);

    // The answer is written at once (older than the send), once.
    let mut r = from_backend(b, sport, 0x10);
    r.seq = BACKEND_ISN + 1;
    h.run(&r.frame(), h.ingress_backend);
    let s2 = seen(&h, b);
    assert!(s2.reply_ns >= s1.sent_ns, "answer recorded at once");
    h.run(&r.frame(), h.ingress_backend);
    assert_eq!(seen(&h, b), s2, "not again within the tick");
    assert_eq!(s2.silent_ns(s2.reply_ns + 10 * EVIDENCE_TICK_NS), 0);

    // A silent node: sends a tick apart keep the wait's start.
    past_a_tick();
    h.run(
        &data(sport, CLIENT_ISN + 1010, b"x").frame(),
        h.ingress_client,
    );
    let s3 = seen(&h, b);
    past_a_tick();
    h.run(
        &data(sport, CLIENT_ISN + 1010, b"x").frame(),
        h.ingress_client,
    );
    let s4 = seen(&h, b);
    assert!(
        s4.sent_ns > s3.sent_ns,
        "retransmission a tick later recorded"
    );
    assert_eq!(
        s4.waiting_ns, s3.waiting_ns,
        "the wait started at the first"
    );
    assert!(s4.silent_ns(s4.sent_ns) >= EVIDENCE_TICK_NS);
}

#[test]
fn a_refused_syn_is_kept_from_the_client_while_another_node_serves() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, mut written) = Harness::start(plan([true; 3]));
    let sport = 44000;
    let b = expected_backend(sport, [true; 3]);
    let syn = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x02);
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat(&syn, b)));
    // The node's kernel refuses: RST|ACK.
    let mut rst = from_backend(b, sport, 0x14);
    rst.ack = syn.seq + 1;
    rst.payload.clear();
    let (act, _) = h.run(&rst.frame(), h.ingress_backend);
    assert_eq!(act, XDP_DROP, "the RST is kept from the client");
    assert_eq!(counters(&h.dp)["refused_held"], 1);
    let s = seen(&h, b);
    assert_ne!(s.refused_ns, 0, "the refusal is recorded for the daemon");
    assert!(s.reply_ns != 0, "a RST is an answer: the node is alive");
    // The client's retransmission within the episode: kept again.
    h.run(&syn.frame(), h.ingress_client);
    let (act, _) = h.run(&rst.frame(), h.ingress_backend);
    assert_eq!(act, XDP_DROP);
    assert_eq!(
        seen(&h, b).refused_ns,
        s.refused_ns,
        "one episode, one write"
    );

    // The daemon took the node out: the retried SYN goes to another node.
    let mut serving = [true; 3];
    serving[b] = false;
    written.apply(&mut h.dp, &plan(serving)).unwrap();
    let other = expected_backend(sport, serving);
    assert_ne!(other, b);
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat(&syn, other)));

    // Only one node serves: its RST goes through, translated.
    let only = [other == 0, other == 1, other == 2];
    written.apply(&mut h.dp, &plan(only)).unwrap();
    let sport = 44100;
    let syn = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x02);
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat(&syn, other)));
    let mut rst = from_backend(other, sport, 0x14);
    rst.ack = syn.seq + 1;
    rst.payload.clear();
    let (act, out) = h.run(&rst.frame(), h.ingress_backend);
    assert_eq!(
        act, XDP_REDIRECT,
        "no other node: the client hears the refusal"
    );
    assert_eq!(out, snat(&rst, 6443));
    assert_eq!(seen(&h, other).refused_ns, 0, "not an episode");
    assert_eq!(counters(&h.dp)["refused_held"], 2);
}
