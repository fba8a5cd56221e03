//! IPv6 side of the packet-fixture harness: the lab's IPv6 addresses and
//! neighbours, an IPv6 listener written straight into the maps (next to the
//! IPv4 plan), and a frame builder whose checksums are computed from
//! scratch here (RFC 1071 over the RFC 8200 pseudo-header), independently
//! of `lb_common::checksum`.
#![allow(dead_code)]
use std::net::Ipv6Addr;

use lb::dataplane::{maps::TableMaps, Dataplane};
use lb_common::{
    hash::flow_hash_v6, EndpointKey, Listener, ListenerKey, MaglevTable, Real, RevEntry,
    RouteCache, VipKey, FAMILY_V6, MAGLEV_TABLES, MAGLEV_TABLE_SIZE, MAX_LISTENERS, PROTO_TCP,
    REAL_F_SERVING,
};

use super::*;

pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const GW_C6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const GW_B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 100, 0, 0, 0, 0, 0x10);
pub const BACKENDS6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x11),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x12),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x13),
];
/// Listener id and first real id of the IPv6 listener (the IPv4 plan uses
/// listener 0 and reals 0..3).
pub const L6: u32 = 1;
pub const REAL6: u32 = 10;

pub const NEXT_HOP: u8 = 0;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_DEST: u8 = 60;
pub const NEXT_ICMPV6: u8 = 58;

/// Address words as the maps hold them (network order in memory).
pub fn words(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// Adds the IPv6 side to a lab namespace: addresses without duplicate
/// address detection (usable at once), permanent neighbours, forwarding on
/// (the kernel's IPv6 FIB lookup for XDP needs it).
pub fn add_v6(ns: &Netns) {
    sysctl(ns, &["net.ipv6.conf.all.forwarding=1"]);
    ns_ip(ns, &format!("-6 addr add {GW_C6}/64 dev gwc nodad"));
    ns_ip(ns, &format!("-6 addr add {GW_B6}/64 dev gwb nodad"));
    ns_ip(
        ns,
        &format!(
            "-6 neigh add {CLIENT6} lladdr {} dev gwc nud permanent",
            mac(MAC_CLIENT)
        ),
    );
    for (i, b) in BACKENDS6.iter().enumerate() {
        ns_ip(
            ns,
            &format!(
                "-6 neigh add {b} lladdr {} dev gwb nud permanent",
                mac(backend_mac(i))
            ),
        );
    }
}

/// A lab with both families: the IPv4 plan written as in `packets.rs`,
/// and an IPv6 listener VIP6:6443 → BACKENDS6:6443 (reals 10..13) whose
/// serving set is `serving`.
pub fn start_dual(serving: [bool; 3]) -> (Netns, Harness) {
    let (ns, mut h, _written) = Harness::start(plan([true; 3]));
    add_v6(&ns);
    write_v6_listener(&mut h.dp, serving);
    (ns, h)
}

/// Writes the IPv6 listener straight into the maps (reals, table, listener,
/// VIP, untracked-reply fallback), in the order the daemon's writer uses.
pub fn write_v6_listener(dp: &mut Dataplane, serving: [bool; 3]) {
    let maps = &mut dp.maps;
    for (i, b) in BACKENDS6.iter().enumerate() {
        let real = Real {
            addr: words(*b),
            port: 6443u16.to_be(),
            family: FAMILY_V6,
            flags: if serving[i] { REAL_F_SERVING } else { 0 },
            listener: L6,
        };
        maps.set_real(REAL6 + i as u32, real).unwrap();
    }
    let owners = maglev_owners(serving);
    // SAFETY: MaglevTable is plain integers; all-zero is a valid value.
    let mut table: Box<MaglevTable> = unsafe { Box::new_zeroed().assume_init() };
    for (slot, owner) in table.slots.iter_mut().zip(owners.iter()) {
        *slot = REAL6 + *owner as u32;
    }
    // The listener's first table, however many each listener owns.
    let index = L6 * (MAGLEV_TABLES / MAX_LISTENERS);
    maps.set_table(index, table.as_ref()).unwrap();
    let key = ListenerKey {
        addr: words(VIP6),
        port: 6443u16.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V6,
    };
    let value = Listener {
        id: L6,
        table: index,
        target_port: 6443u16.to_be(),
        flags: 0,
        // Untracked mid-flow packets use the same table: every backend
        // here is either serving or gone.
        midflow_table: index,
    };
    maps.set_listener(key, value).unwrap();
    maps.set_vip(VipKey { addr: words(VIP6) }).unwrap();
    for (i, b) in BACKENDS6.iter().enumerate() {
        let key = EndpointKey {
            addr: words(*b),
            port: 6443u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V6,
        };
        let rev = RevEntry {
            vip: words(VIP6),
            vport: 6443u16.to_be(),
            flags: 0,
            real: REAL6 + i as u32,
            listener: L6,
            seq: 0,
            ingress: 0,
            route: RouteCache::NONE,
            ..RevEntry::default()
        };
        maps.set_fallback(key, rev).unwrap();
    }
}

/// Maglev owner (index into the serving backends' names) of every slot.
fn maglev_owners(serving: [bool; 3]) -> Vec<usize> {
    let names: Vec<String> = (0..3)
        .filter(|i| serving[*i])
        .map(|i| format!("cp-0{}", i + 1))
        .collect();
    let keys: Vec<&str> = names.iter().map(String::as_str).collect();
    let table = lb::maglev::build_table(&keys, MAGLEV_TABLE_SIZE)
        .unwrap()
        .unwrap();
    table
        .iter()
        .map(|o| keys[*o as usize][3..].parse::<usize>().unwrap() - 1)
        .collect()
}

/// The backend (0..3) Maglev gives the IPv6 client flow from port `sport`.
pub fn expected_backend6(sport: u16, serving: [bool; 3]) -> usize {
    let h = flow_hash_v6(
        &words(CLIENT6),
        &words(VIP6),
        sport.to_be(),
        6443u16.to_be(),
        6,
    );
    maglev_owners(serving)[(h % MAGLEV_TABLE_SIZE) as usize]
}

/// RFC 1071 one's-complement sum of `data`, from scratch.
fn sum16(data: &[u8], mut acc: u64) -> u64 {
    for c in data.chunks(2) {
        let hi = c[0] as u64;
        let lo = c.get(1).copied().unwrap_or(0) as u64;
        acc += hi << 8 | lo;
    }
    acc
}

/// The checksum over `data` with the IPv6 pseudo-header (RFC 8200 §8.1).
pub fn l4_checksum6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, data: &[u8]) -> u16 {
    let mut acc = sum16(&src.octets(), 0);
    acc = sum16(&dst.octets(), acc);
    acc += data.len() as u64 + next as u64;
    acc = sum16(data, acc);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An extension header: its type and body after the next-header and length
/// bytes (padded with zeros to a multiple of eight octets in all).
#[derive(Clone)]
pub struct Ext {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl Ext {
    /// Hop-by-hop or destination options holding one PadN option.
    pub fn options(kind: u8) -> Self {
        Ext {
            kind,
            body: vec![1, 4, 0, 0, 0, 0],
        }
    }
}

/// Fields of an IPv6 test frame; `frame()` renders it with correct checksums.
#[derive(Clone)]
pub struct Pkt6 {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    /// Upper-layer protocol (after the extension headers).
    pub next: u8,
    pub ext: Vec<Ext>,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub payload: Vec<u8>,
    /// Upper-layer bytes used instead of a TCP segment when set (ICMPv6,
    /// UDP); the checksum at `raw_check` is filled in.
    pub raw: Option<(Vec<u8>, usize)>,
}

impl Pkt6 {
    pub fn tcp(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, flags: u8) -> Self {
        Pkt6 {
            dmac: MAC_GW_C,
            smac: MAC_CLIENT,
            src,
            dst,
            hop_limit: 64,
            next: 6,
            ext: vec![],
            sport,
            dport,
            flags,
            seq: 1000,
            ack: 2000,
            payload: b"hello".to_vec(),
            raw: None,
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut l4 = match &self.raw {
            Some((bytes, check_at)) => {
                let mut b = bytes.clone();
                b[*check_at..*check_at + 2].copy_from_slice(&[0, 0]);
                let c = l4_checksum6(self.src, self.dst, self.next, &b);
                b[*check_at..*check_at + 2].copy_from_slice(&c.to_be_bytes());
                b
            }
            None => {
                let mut t = tcp_segment(
                    self.sport,
                    self.dport,
                    self.seq,
                    self.ack,
                    5,
                    self.flags,
                    &self.payload,
                );
                let c = l4_checksum6(self.src, self.dst, self.next, &t);
                set_tcp_checksum(&mut t, c);
                t
            }
        };
        let mut exts = Vec::new();
        for (i, e) in self.ext.iter().enumerate() {
            let next = self.ext.get(i + 1).map_or(self.next, |n| n.kind);
            let mut h = vec![next, 0];
            h.extend_from_slice(&e.body);
            while h.len() % 8 != 0 {
                h.push(0);
            }
            h[1] = (h.len() / 8 - 1) as u8;
            exts.extend_from_slice(&h);
        }
        let first = self.ext.first().map_or(self.next, |e| e.kind);
        let mut f = eth_header(self.dmac, self.smac, 0x86dd);
        f.extend_from_slice(&[0x60, 0x01, 0x23, 0x45]); // version 6, flow label 0x12345
        f.extend_from_slice(&((exts.len() + l4.len()) as u16).to_be_bytes());
        f.push(first);
        f.push(self.hop_limit);
        f.extend_from_slice(&self.src.octets());
        f.extend_from_slice(&self.dst.octets());
        f.append(&mut exts);
        f.append(&mut l4);
        f
    }
}

/// A client → VIP6:6443 TCP frame as it arrives on the client side.
pub fn to_vip6(sport: u16, flags: u8) -> Pkt6 {
    Pkt6::tcp(CLIENT6, sport, VIP6, 6443, flags)
}

/// A frame from IPv6 backend `b` to the client, as it arrives on the
/// backend side.
pub fn from_backend6(b: usize, dport: u16, flags: u8) -> Pkt6 {
    let mut p = Pkt6::tcp(BACKENDS6[b], 6443, CLIENT6, dport, flags);
    (p.dmac, p.smac) = macs_from_backend(b);
    p
}

/// Expected frame after DNAT to IPv6 backend `b`.
pub fn dnat6(p: &Pkt6, b: usize) -> Vec<u8> {
    let mut e = p.clone();
    e.dst = BACKENDS6[b];
    e.dport = 6443;
    e.hop_limit -= 1;
    (e.dmac, e.smac) = macs_to_backend(b);
    e.frame()
}

/// Expected frame of a reply after reverse translation to VIP6:`vport`.
pub fn snat6(p: &Pkt6, vport: u16) -> Vec<u8> {
    let mut e = p.clone();
    e.src = VIP6;
    e.sport = vport;
    e.hop_limit -= 1;
    (e.dmac, e.smac) = MACS_TO_CLIENT;
    e.frame()
}

/// Checks the TCP checksum of an IPv6 frame from scratch: walks the
/// extension headers the fixtures use to the TCP segment.
pub fn assert_tcp_checksum6(frame: &[u8]) {
    assert_eq!(u16::from_be_bytes([frame[12], frame[13]]), 0x86dd);
    let plen = u16::from_be_bytes([frame[18], frame[19]]) as usize;
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
    let mut next = frame[20];
    let mut off = 54;
    while matches!(next, NEXT_HOP | NEXT_ROUTING | NEXT_DEST) {
        next = frame[off];
        off += (frame[off + 1] as usize + 1) * 8;
    }
    assert_eq!(next, 6, "TCP after the extension headers");
    let seg = &frame[off..54 + plen];
    assert_eq!(l4_checksum6(src, dst, 6, seg), 0, "TCP checksum");
}

/// The client → VIP6:6443 flow key of client port `sport`.
pub fn fwd_key6(sport: u16) -> lb_common::FlowKey {
    lb_common::FlowKey::tcp_v6(words(CLIENT6), words(VIP6), sport.to_be(), 6443u16.to_be())
}

/// The reply key (backend `b` → client port `sport`).
pub fn rev_key6(b: usize, sport: u16) -> lb_common::FlowKey {
    lb_common::FlowKey::tcp_v6(
        words(BACKENDS6[b]),
        words(CLIENT6),
        6443u16.to_be(),
        sport.to_be(),
    )
}
