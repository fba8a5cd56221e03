//! Full-NAT side of the packet-fixture harness: the lab's listener
//! switched to full-NAT with a source-NAT address on the nodes' subnet,
//! expected frames both ways, and a client on the nodes' own subnet
//! (one-arm). Expected ports come from the shared `snat_choice`, expected
//! nodes from Maglev computed here.
#![allow(dead_code)]
use std::net::{Ipv4Addr, Ipv6Addr};

use lb::dataplane::maps::TableMaps;
use lb::dataplane::snat::SnatFamily;
use lb::dataplane::tables::Written;
use lb_common::{
    checksum::checksum, hash::flow_hash, snat_choice, FlowKey, FwdEntry, ListenerKey, SnatConfig,
    LISTENER_F_FULLNAT, MAGLEV_TABLE_SIZE,
};

use super::*;

/// The source-NAT address: a dedicated address on the nodes' subnet.
pub const SNAT4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 100);
pub const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x100);
pub const LO: u16 = 20000;
pub const HI: u16 = 20999;
/// A client on the nodes' own subnet (reached through `gwb`): one-arm.
pub const LAN_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 50);
pub const MAC_LAN_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x50];

pub fn ne(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// Switches listener `key` to full-NAT.
pub fn fullnat_listener(h: &mut Harness, key: ListenerKey) {
    let mut l = h.dp.maps.listeners.get(&key, 0).expect("listener");
    l.flags |= LISTENER_F_FULLNAT;
    h.dp.maps.set_listener(key, l).unwrap();
}

/// The IPv4 lab with the listener in full-NAT mode over `lo..=hi`.
pub fn start(lo: u16, hi: u16) -> (Netns, Harness) {
    let (ns, h, _w) = start_written(lo, hi);
    (ns, h)
}

/// [`start`], with the table writer (after `apply`, call
/// [`fullnat_listener`] again: the writer knows only DNAT listeners).
pub fn start_written(lo: u16, hi: u16) -> (Netns, Harness, Written) {
    let (ns, mut h, w) = Harness::start(plan([true; 3]));
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
    (ns, h, w)
}

pub fn client_flow(client: Ipv4Addr, sport: u16) -> FlowKey {
    FlowKey::tcp_v4(ne(client), ne(VIP), sport.to_be(), 6443u16.to_be())
}

/// The source port probe `probe` of `client:sport` gives over `lo..=hi`.
pub fn port(client: Ipv4Addr, sport: u16, lo: u16, hi: u16, probe: u32) -> u16 {
    snat_choice(&client_flow(client, sport), 1, lo, hi, probe).1
}

/// The node Maglev gives `client:sport` (all three serving).
pub fn node_for(client: Ipv4Addr, sport: u16) -> usize {
    let keys = ["cp-01", "cp-02", "cp-03"];
    let table = lb::maglev::build_table(&keys, MAGLEV_TABLE_SIZE)
        .unwrap()
        .unwrap();
    let h = flow_hash(ne(client), ne(VIP), sport.to_be(), 6443u16.to_be(), 6);
    table[(h % MAGLEV_TABLE_SIZE) as usize] as usize
}

/// Expected client → node frame: source SNAT4:`sport`, destination the
/// node, TTL - 1, MACs toward the node.
pub fn fnat(p: &Pkt, b: usize, sport: u16) -> Vec<u8> {
    let mut e = p.clone();
    (e.src, e.sport) = (SNAT4, sport);
    (e.dst, e.dport) = (BACKENDS[b], 6443);
    e.ttl -= 1;
    (e.dmac, e.smac) = macs_to_backend(b);
    e.frame()
}

/// A frame from node `b` to SNAT4:`sport`.
pub fn from_node(b: usize, sport: u16, flags: u8) -> Pkt {
    let mut p = from_backend(b, sport, flags);
    p.dst = SNAT4;
    p
}

/// Expected reply after translation: VIP:6443 → `client:cport`, TTL - 1,
/// MACs `macs`.
pub fn back(p: &Pkt, client: Ipv4Addr, cport: u16, macs: ([u8; 6], [u8; 6])) -> Vec<u8> {
    let mut e = p.clone();
    (e.src, e.sport) = (VIP, 6443);
    (e.dst, e.dport) = (client, cport);
    e.ttl -= 1;
    (e.dmac, e.smac) = macs;
    e.frame()
}

pub fn syn(client: Ipv4Addr, sport: u16) -> Pkt {
    let mut p = Pkt::tcp(client, sport, VIP, 6443, 0x02);
    (p.seq, p.ack) = (CLIENT_ISN, 0);
    p
}

/// SYN, SYN-ACK, handshake ACK of the client flow from CLIENT:`sport`,
/// whose source port is `sp`; returns the node.
pub fn handshake_fnat(h: &mut Harness, sport: u16, sp: u16) -> usize {
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

pub fn fwd_entry(h: &Harness, key: &FlowKey) -> Option<FwdEntry> {
    h.dp.maps.ct_fwd.get(key, 0).ok()
}

/// Two client ports whose flows land on the same node with the same
/// first-choice source port over `lo..=hi`.
pub fn colliding_pair(lo: u16, hi: u16) -> (u16, u16) {
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

/// Moves every forward entry's last-seen time back by `ns` (time passing,
/// as far as the data path can tell).
pub fn age_flows(h: &mut Harness, ns: u64) {
    let keys: Vec<FlowKey> = h.dp.maps.ct_fwd.keys().map(|k| k.unwrap()).collect();
    for k in keys {
        if let Ok(mut e) = h.dp.maps.ct_fwd.get(&k, 0) {
            // Wrapping, as the data path compares times: the clock may be younger
            // than `ns`.
            e.last_seen_ns = e.last_seen_ns.wrapping_sub(ns);
            h.dp.maps.ct_fwd.insert(k, e, 0).unwrap();
        }
    }
}

/// An ICMP error: outer IPv4 header from `src` to `dst` (TTL `ttl`), type
/// 3 code 4 with next-hop MTU 1400, quoting `quoted` (an IP packet) whole.
/// Every checksum computed from scratch.
pub fn frag_needed(
    macs: ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    quoted: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&1400u16.to_be_bytes());
    icmp.extend_from_slice(quoted);
    let c = checksum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, ttl, 1, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = eth_header(macs.0, macs.1, 0x0800);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}
