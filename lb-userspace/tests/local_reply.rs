//! `local_reply` counts replies addressed to the gateway itself (its health
//! checks), and only those (issue 19, finding 9): a SYN-ACK a backend sends
//! to a spoofed, unroutable client (a SYN flood from forged sources) is
//! counted `no_route`. Before, the route lookup's "not forwarded" (which the
//! kernel gives for both) was counted `local_reply`: 689k of them during a
//! flood, hiding the flood behind the gateway's own traffic.
//!
//! Needs root (BPF_PROG_TEST_RUN in a lab namespace with no default route).
mod common;

use std::net::Ipv4Addr;

use common::*;

/// Inside 198.18.0.0/15, routed nowhere in the lab.
const SPOOFED: Ipv4Addr = Ipv4Addr::new(198, 19, 77, 7);

#[test]
fn syn_acks_to_unroutable_clients_are_not_local_replies() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, _w) = Harness::start(plan([true; 3]));

    // A spoofed SYN to the VIP is balanced (the program cannot tell it is
    // forged); the node's SYN-ACK goes to an address nothing routes.
    let mut syn = Pkt::tcp(SPOOFED, 40000, VIP, 6443, 0x02);
    syn.ack = 0;
    let b = expected_backend_from(SPOOFED, 40000);
    let (act, _) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT, "spoofed SYN balanced");
    let mut synack = Pkt::tcp(BACKENDS[b], 6443, SPOOFED, 40000, 0x12);
    (synack.dmac, synack.smac) = macs_from_backend(b);
    let f = synack.frame();
    let (act, _) = h.run(&f, h.ingress_backend);
    assert_eq!(act, XDP_PASS, "embryonic SYN-ACK to nowhere: passed");

    // The same with no embryonic entry (evicted by the flood): the
    // untracked-reply fallback.
    let mut untracked = Pkt::tcp(BACKENDS[0], 6443, SPOOFED, 40001, 0x12);
    (untracked.dmac, untracked.smac) = macs_from_backend(0);
    let f = untracked.frame();
    assert_eq!(h.run(&f, h.ingress_backend), (XDP_PASS, f.clone()));

    let c = counters(&h.dp);
    assert_eq!(c["no_route"], 2, "{c:?}");
    assert_eq!(c["local_reply"], 0, "{c:?}");

    // The gateway's own health-check reply is still a local reply.
    let mut own = Pkt::tcp(BACKENDS[0], 6443, GW_B, 38000, 0x12);
    (own.dmac, own.smac) = macs_from_backend(0);
    let f = own.frame();
    assert_eq!(h.run(&f, h.ingress_backend), (XDP_PASS, f.clone()));
    let c = counters(&h.dp);
    assert_eq!((c["local_reply"], c["no_route"]), (1, 2), "{c:?}");
}

/// The backend Maglev gives `client:sport` → VIP:6443 (all serving).
fn expected_backend_from(client: Ipv4Addr, sport: u16) -> usize {
    let keys = ["cp-01", "cp-02", "cp-03"];
    let table = lb::maglev::build_table(&keys, lb_common::MAGLEV_TABLE_SIZE)
        .unwrap()
        .unwrap();
    let h = lb_common::hash::flow_hash(
        u32::from_ne_bytes(client.octets()),
        u32::from_ne_bytes(VIP.octets()),
        sport.to_be(),
        6443u16.to_be(),
        6,
    );
    table[(h % lb_common::MAGLEV_TABLE_SIZE) as usize] as usize
}
