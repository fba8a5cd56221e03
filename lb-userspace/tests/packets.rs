//! Table-driven packet tests through BPF_PROG_TEST_RUN (Katran-style
//! fixtures): each case gives an input frame, the expected XDP action and the
//! exact expected output frame. Expected frames are built from scratch with
//! full checksums, so they also check the program's incremental updates.
//!
//! Needs root: the test runs in a network namespace of its own with fixed
//! addresses and permanent neighbour entries, so FIB lookups give known MACs.

mod common;

use common::*;

#[test]
fn packet_fixtures() {
    if !root_or_skip() {
        return;
    }
    // Everything runs on this one thread: it has entered the namespace.
    let (_ns, mut h, mut written) = Harness::start(plan([true; 3]));

    // 1. SYN to the VIP: DNAT to the Maglev choice, redirected to the backend NIC.
    let syn = Pkt::tcp(CLIENT, 40000, VIP, 6443, 0x02);
    let b = expected_backend(40000, [true; 3]);
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT, "SYN to VIP is redirected");
    assert_eq!(out, dnat(&syn, b), "SYN rewritten to backend {b}");
    assert_checksums_valid(&out);

    // 2. Spread: 300 flows land on every backend exactly where Maglev says.
    let mut seen = [0usize; 3];
    for sport in 41000..41300u16 {
        let p = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x02);
        let (act, out) = h.run(&p.frame(), h.ingress_client);
        assert_eq!(act, XDP_REDIRECT);
        let want = expected_backend(sport, [true; 3]);
        assert_eq!(out, dnat(&p, want), "sport {sport}");
        seen[want] += 1;
    }
    assert!(seen.iter().all(|n| *n > 60), "spread {seen:?}");

    // 3. Reply from the backend: source restored to VIP:6443, sent to the client.
    let mut reply = Pkt::tcp(BACKENDS[b], 6443, CLIENT, 40000, 0x12);
    reply.dmac = MAC_GW_B;
    reply.smac = backend_mac(b);
    // The backend's ISN is 1999: the client's ACK below (ack 2000) completes
    // the handshake, which is what makes the flow established (issue 11:
    // only a proven flow enters the established table).
    reply.seq = 1999;
    let (act, out) = h.run(&reply.frame(), h.ingress_backend);
    assert_eq!(act, XDP_REDIRECT, "reply is redirected to the client NIC");
    let mut want = reply.clone();
    want.src = VIP;
    want.sport = 6443;
    want.ttl -= 1;
    want.dmac = MAC_CLIENT;
    want.smac = MAC_GW_C;
    assert_eq!(out, want.frame(), "reply reverse-translated");
    assert_checksums_valid(&out);

    // 4. Established flow keeps its backend when another backend leaves the table.
    let other = (b + 1) % 3;
    let mut serving = [true; 3];
    serving[other] = false;
    written.apply(&mut h.dp, &plan(serving)).unwrap();
    let ack = Pkt::tcp(CLIENT, 40000, VIP, 6443, 0x10);
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, dnat(&ack, b), "established flow stays on backend {b}");

    // 5. Its own backend stops serving: the flow is rescheduled by the new table.
    let mut serving = [true; 3];
    serving[b] = false;
    written.apply(&mut h.dp, &plan(serving)).unwrap();
    let new_b = expected_backend(40000, serving);
    assert_ne!(new_b, b);
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(
        out,
        dnat(&ack, new_b),
        "flow rescheduled to backend {new_b}"
    );
    written.apply(&mut h.dp, &plan([true; 3])).unwrap();

    // 6. Untracked reply from a backend endpoint that maps to one VIP:port
    //    (e.g. after a gateway restart): translated from the listener mapping.
    let mut untracked = Pkt::tcp(BACKENDS[2], 6443, CLIENT, 55555, 0x10);
    untracked.dmac = MAC_GW_B;
    untracked.smac = backend_mac(2);
    let (act, out) = h.run(&untracked.frame(), h.ingress_backend);
    assert_eq!(act, XDP_REDIRECT);
    let mut want = untracked.clone();
    want.src = VIP;
    want.ttl -= 1;
    want.dmac = MAC_CLIENT;
    want.smac = MAC_GW_C;
    assert_eq!(out, want.frame(), "untracked reply translated by fallback");

    // 6b. A client connecting to a backend's listener port directly (not via
    //     the VIP): the SYN passes, and so does the reply, untranslated.
    let direct = Pkt::tcp(CLIENT, 47000, BACKENDS[1], 6443, 0x02);
    let (act, out) = h.run(&direct.frame(), h.ingress_client);
    assert_eq!(
        (act, &out),
        (XDP_PASS, &direct.frame()),
        "direct SYN passes"
    );
    let mut direct_reply = Pkt::tcp(BACKENDS[1], 6443, CLIENT, 47000, 0x12);
    direct_reply.dmac = MAC_GW_B;
    direct_reply.smac = backend_mac(1);
    let (act, out) = h.run(&direct_reply.frame(), h.ingress_backend);
    assert_eq!(
        (act, &out),
        (XDP_PASS, &direct_reply.frame()),
        "direct reply passes untranslated"
    );

    // 7. Frames that must pass byte-identical.
    let mut own = Pkt::tcp(BACKENDS[0], 6443, GW_B, 38000, 0x12);
    own.dmac = MAC_GW_B;
    let mut arp = Pkt::tcp(CLIENT, 1, VIP, 6443, 0);
    arp.ethertype = 0x0806;
    let mut udp = Pkt::tcp(CLIENT, 40000, VIP, 6443, 0);
    udp.proto = 17;
    let passes: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "gateway's own health-check reply",
            own.frame(),
            h.ingress_backend,
        ),
        (
            "client to a backend directly (not a VIP)",
            Pkt::tcp(CLIENT, 40001, BACKENDS[0], 22, 0x02).frame(),
            h.ingress_client,
        ),
        (
            "VIP on a port with no listener",
            Pkt::tcp(CLIENT, 40002, VIP, 22, 0x02).frame(),
            h.ingress_client,
        ),
        ("ARP ethertype", arp.frame(), h.ingress_client),
        ("UDP to the VIP", udp.frame(), h.ingress_client),
        (
            "IPv4 ethertype with a truncated IP header",
            syn.frame()[..14 + 12].to_vec(),
            h.ingress_client,
        ),
    ];
    for (what, frame, ingress) in passes {
        let (act, out) = h.run(&frame, ingress);
        assert_eq!(act, XDP_PASS, "{what}: action");
        assert_eq!(out, frame, "{what}: passes byte-identical");
    }

    // 8. Malformed or unforwardable packets aimed at the VIP are dropped.
    let syn_frame = syn.frame();
    let mut bad_ihl = syn_frame.clone();
    bad_ihl[14] = 0x44;
    let mut frag = syn.clone();
    frag.frag = 0x2000; // MF
    let mut later_frag = syn.clone();
    later_frag.frag = 0x0010;
    let mut long_len = syn_frame.clone();
    long_len[16..18].copy_from_slice(&2000u16.to_be_bytes());
    let mut ttl1 = syn.clone();
    ttl1.ttl = 1;
    let drops: Vec<(&str, Vec<u8>)> = vec![
        ("truncated TCP header", syn_frame[..14 + 20 + 10].to_vec()),
        ("IHL below 5", bad_ihl),
        ("first fragment", frag.frame()),
        ("later fragment", later_frag.frame()),
        ("total length beyond the frame", long_len),
        ("TTL 1", ttl1.frame()),
    ];
    for (what, frame) in drops {
        let (act, _) = h.run(&frame, h.ingress_client);
        assert_eq!(act, XDP_DROP, "{what}: dropped");
    }

    // 9. IP options are parsed (IHL honoured) and the packet is forwarded intact.
    let mut opts = Pkt::tcp(CLIENT, 40100, VIP, 6443, 0x02);
    opts.options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    let b = expected_backend(40100, [true; 3]);
    let (act, out) = h.run(&opts.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, dnat(&opts, b), "options kept, packet rewritten");
    assert_checksums_valid(&out);

    // 10. Counters saw exactly what the fixtures sent.
    let g = lb::dataplane::counters::global(&h.dp).unwrap();
    assert_eq!(g["fragment"], 2);
    assert_eq!(g["ttl_exceeded"], 1);
    assert_eq!(g["malformed"], 3);
    assert_eq!(g["ip_options"], 1);
    assert_eq!(g["rescheduled"], 1);
    assert_eq!(g["reply_fallback"], 1);
    assert_eq!(g["reply_tracked"], 1);
    assert_eq!(g["local_reply"], 1);
    assert_eq!(g["new_flow"], 1 + 300 + 1 + 1);
    assert_eq!(g["direct"], 2);
}

#[test]
fn all_down_drop_rejects_new_flows() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, _written) = Harness::start(plan([false; 3]));
    let syn = Pkt::tcp(CLIENT, 40000, VIP, 6443, 0x02);
    let (act, _) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!(act, XDP_DROP);
    let l = lb::dataplane::counters::listener(&h.dp, 0).unwrap();
    assert_eq!(l.rejected, 1);
    assert_eq!(l.new_flows, 0);
}

#[test]
fn draining_and_closing_flows() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, mut written) = Harness::start(plan([true; 3]));

    // An established flow on backend b (a full handshake: since issue 11
    // only a completed handshake makes a flow established); then b drains.
    let b = handshake(&mut h, 42000);
    // A second flow on b, for what follows the SYN that reuses 42000's tuple
    // (that SYN replaces 42000's flow: issue 19, finding 1).
    let p2 = (42001..43000u16)
        .find(|p| expected_backend(*p, [true; 3]) == b)
        .unwrap();
    assert_eq!(handshake(&mut h, p2), b);
    written.apply(&mut h.dp, &plan_draining(b)).unwrap();

    // Its established packets stay on the draining backend...
    let mut ack = Pkt::tcp(CLIENT, 42000, VIP, 6443, 0x10);
    ack.seq = CLIENT_ISN + 1;
    ack.ack = BACKEND_ISN + 1;
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, dnat(&ack, b), "draining backend keeps its flow");
    // ...but a new connection reusing the tuple (a pure SYN) goes elsewhere.
    let syn = Pkt::tcp(CLIENT, 42000, VIP, 6443, 0x02);
    let mut serving = [true; 3];
    serving[b] = false;
    let want = expected_backend(42000, serving);
    assert_eq!(
        h.run(&syn.frame(), h.ingress_client).1,
        dnat(&syn, want),
        "a SYN never lands on a draining backend"
    );
    // New flows avoid it too.
    for sport in 43000..43100u16 {
        let p = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x02);
        let (_, out) = h.run(&p.frame(), h.ingress_client);
        assert_ne!(out, dnat(&p, b), "new flow {sport} on the draining backend");
    }

    // Deregistration delay over: the backend loses DRAINING; its flows are
    // rescheduled (cut off from the old backend).
    let mut gone = plan([true; 3]);
    gone.listeners[0].reals[b].serving = false;
    gone.listeners[0].reals[b].keeps_flows = false;
    written.apply(&mut h.dp, &gone).unwrap();
    let mut ack2 = ack.clone();
    ack2.sport = p2;
    let (_, out) = h.run(&ack2.frame(), h.ingress_client);
    assert_eq!(
        out,
        dnat(&ack2, expected_backend(p2, serving)),
        "rescheduled"
    );
    assert_eq!(counters(&h.dp)["rescheduled"], 1);
    written.apply(&mut h.dp, &plan([true; 3])).unwrap();

    // FIN from the client marks the flow closing; so does an RST from the backend.
    assert_eq!(ct_entry(&h.dp, p2).flags & lb_common::FWD_F_CLOSING, 0);
    let mut fin = Pkt::tcp(CLIENT, p2, VIP, 6443, 0x11);
    fin.seq = CLIENT_ISN + 1;
    h.run(&fin.frame(), h.ingress_client);
    assert_ne!(
        ct_entry(&h.dp, p2).flags & lb_common::FWD_F_CLOSING,
        0,
        "FIN seen"
    );

    let b2 = handshake(&mut h, 44000);
    let mut rst = from_backend(b2, 44000, 0x14);
    rst.seq = BACKEND_ISN + 1;
    let (act, _) = h.run(&rst.frame(), h.ingress_backend);
    assert_eq!(
        act, XDP_REDIRECT,
        "the RST itself is forwarded to the client"
    );
    assert_ne!(
        ct_entry(&h.dp, 44000).flags & lb_common::FWD_F_CLOSING,
        0,
        "RST seen"
    );
}

/// `plan([true; 3])` with node `d` down by this gateway's checks but not
/// proven dead: out of the healthy table, keeps its flows and its slots in
/// the mid-flow table.
fn plan_down_alive(d: usize) -> lb::dataplane::Plan {
    let mut p = plan([true; 3]);
    p.listeners[0].reals[d].serving = false;
    p
}

/// Issue 12, failover that tolerates disagreement: a mid-flow packet of a
/// flow this gateway does not track (a takeover) goes to the mid-flow
/// table's node, the one every node up gives, even when this gateway's
/// checks call that node down; a SYN goes to the healthy table's; a flow
/// promoted or established on such a node stays on it; once the node is
/// proven dead its flows are rescheduled.
#[test]
fn midflow_packets_follow_the_midflow_table_and_down_nodes_keep_flows() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, mut written) = Harness::start(plan([true; 3]));
    // An established flow on some node d, then d fails this gateway's checks.
    let d = handshake(&mut h, 45000);
    let mut healthy = [true; 3];
    healthy[d] = false;
    written.apply(&mut h.dp, &plan_down_alive(d)).unwrap();

    // 1. The established flow stays on d.
    let mut ack = Pkt::tcp(CLIENT, 45000, VIP, 6443, 0x10);
    ack.seq = CLIENT_ISN + 1;
    ack.ack = BACKEND_ISN + 1;
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, dnat(&ack, d), "a down but live node keeps its flow");
    assert_eq!(counters(&h.dp)["rescheduled"], 0);

    // 2. A mid-flow packet of an untracked flow whose all-up node is d
    //    (the healthy table, without d, says otherwise) goes to d.
    let sport = (46000..47000u16)
        .find(|s| expected_backend(*s, [true; 3]) == d)
        .expect("a port mapped to d");
    let other = expected_backend(sport, healthy);
    assert_ne!(other, d);
    let mut mid = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x18);
    mid.seq = 5_000_000;
    mid.ack = 9_000_000;
    let (act, out) = h.run(&mid.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(
        out,
        dnat(&mid, d),
        "mid-flow packet to the mid-flow table's node"
    );
    assert_checksums_valid(&out);

    // 3. d answers: the flow is promoted and its next packets stay on d.
    let mut answer = from_backend(d, sport, 0x10);
    answer.seq = 9_000_000;
    answer.ack = 5_000_010;
    let (act, out) = h.run(&answer.frame(), h.ingress_backend);
    assert_eq!(
        (act, out),
        (XDP_REDIRECT, snat(&answer, 6443)),
        "d's answer"
    );
    assert!(
        has_flow::<lb_common::FwdEntry>(&h.dp, lb_common::MAP_CT_FWD, &fwd_key(sport, 6443)),
        "promoted to established"
    );
    let (_, out) = h.run(&mid.frame(), h.ingress_client);
    assert_eq!(
        out,
        dnat(&mid, d),
        "a promoted flow is not rescheduled off d"
    );

    // 4. A SYN on a port whose all-up node is d goes to the healthy table's.
    let fresh = (47000..48000u16)
        .find(|s| expected_backend(*s, [true; 3]) == d)
        .expect("a port mapped to d");
    let syn = Pkt::tcp(CLIENT, fresh, VIP, 6443, 0x02);
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(
        out,
        dnat(&syn, expected_backend(fresh, healthy)),
        "new flows never go to a down node"
    );

    // 5. d is proven dead (refused, or down past the grace): its flows move.
    written.apply(&mut h.dp, &plan(healthy)).unwrap();
    let (_, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!(
        out,
        dnat(&ack, expected_backend(45000, healthy)),
        "rescheduled"
    );
    assert_eq!(counters(&h.dp)["rescheduled"], 1);
    let late_port = (48000..49000u16)
        .find(|s| expected_backend(*s, [true; 3]) == d)
        .expect("a port mapped to d");
    let mut late = Pkt::tcp(CLIENT, late_port, VIP, 6443, 0x10);
    late.seq = 1;
    let (_, out) = h.run(&late.frame(), h.ingress_client);
    assert_eq!(
        out,
        dnat(&late, expected_backend(late_port, healthy)),
        "the mid-flow table no longer names a dead node"
    );
}
