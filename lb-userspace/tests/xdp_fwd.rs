//! Packet fixtures of `xdp_fwd`, the trivial XDP forwarder the benchmark
//! reads `lb_xdp` against: input frame, expected action and exact output
//! frame, through BPF_PROG_TEST_RUN. Expected frames are built from scratch
//! with full checksums, so they also check the incremental TTL update.
//!
//! Needs root. BPF_PROG_TEST_RUN does the FIB lookup in the caller's network
//! namespace, so the test thread enters a namespace of its own with fixed
//! addresses, routes and permanent neighbours: every lookup has a known
//! answer (forwarded with known MACs, or handed to the kernel).

mod common;

use std::net::Ipv4Addr;

use aya::programs::Xdp;
use lb::dataplane::{loader::ifindex, Dataplane};
use lb_common::checksum::{checksum, pseudo_header_v4};

use common::{
    backend_mac, enter, lab_ns, ns_ip, root_or_skip, sh, sysctl, Netns, BACKENDS, CLIENT, GW_C,
    MAC_CLIENT, MAC_GW_B, MAC_GW_C, VIP, XDP_PASS, XDP_REDIRECT, XDP_TX,
};

const PROGRAM: &str = "xdp_fwd";

/// Routed back out of the client side, via the client.
const BEHIND_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 50, 7);
/// On the backends' subnet, without a neighbour entry.
const NO_NEIGH: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 99);
/// Not routed at all (the namespace has no default route).
const NO_ROUTE: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 1);

/// Fields of a test frame; `frame()` renders it with correct checksums.
#[derive(Clone, Debug)]
struct Pkt {
    dmac: [u8; 6],
    smac: [u8; 6],
    ethertype: u16,
    ver_ihl: Option<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    proto: u8,
    frag: u16,
    options: Vec<u8>,
    sport: u16,
    dport: u16,
}

impl Pkt {
    /// A TCP segment (ACK, 5 bytes of payload) from the client side.
    fn tcp(dst: Ipv4Addr, sport: u16, dport: u16) -> Self {
        Pkt {
            dmac: MAC_GW_C,
            smac: MAC_CLIENT,
            ethertype: 0x0800,
            ver_ihl: None,
            src: CLIENT,
            dst,
            ttl: 64,
            proto: 6,
            frag: 0x4000, // DF
            options: vec![],
            sport,
            dport,
        }
    }

    fn frame(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == 17 {
            l4.extend_from_slice(&13u16.to_be_bytes()); // UDP length
            l4.extend_from_slice(&[0, 0]);
        } else {
            l4.extend_from_slice(&1000u32.to_be_bytes());
            l4.extend_from_slice(&2000u32.to_be_bytes());
            l4.extend_from_slice(&[5 << 4, 0x10]);
            l4.extend_from_slice(&64240u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]);
        }
        l4.extend_from_slice(b"hello");
        let ph = pseudo_header_v4(
            u32::from(self.src),
            u32::from(self.dst),
            self.proto,
            l4.len() as u16,
        );
        let c = checksum(&l4, ph);
        let at = if self.proto == 17 { 6 } else { 16 };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());

        let ihl = 5 + self.options.len() / 4;
        let mut ip = vec![self.ver_ihl.unwrap_or((4 << 4) | ihl as u8), 0];
        ip.extend_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.options);
        let c = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());

        let mut f = Vec::new();
        f.extend_from_slice(&self.dmac);
        f.extend_from_slice(&self.smac);
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }

    /// The frame as forwarded to next hop `dmac` out of the interface
    /// with MAC `smac`: TTL - 1, everything else unchanged.
    fn forwarded(&self, dmac: [u8; 6], smac: [u8; 6]) -> Vec<u8> {
        let mut e = self.clone();
        e.ttl -= 1;
        e.dmac = dmac;
        e.smac = smac;
        e.frame()
    }
}

/// The packet tests' lab namespace plus the benchmark's routes: the VIP
/// over the three backends (ECMP, L4 hash) and a host behind the client;
/// this thread enters it.
fn enter_router() -> Netns {
    let ns = lab_ns("lbfwd");
    ns_ip(
        &ns,
        &format!("route add {BEHIND_CLIENT}/32 via {CLIENT} dev gwc"),
    );
    ns_ip(
        &ns,
        &format!(
            "route add {VIP}/32 nexthop via {} dev gwb nexthop via {} dev gwb nexthop via {} dev gwb",
            BACKENDS[0], BACKENDS[1], BACKENDS[2]
        ),
    );
    sysctl(&ns, &["net.ipv4.fib_multipath_hash_policy=1"]);
    enter(&ns);
    ns
}

/// The object loaded (nothing attached) with `xdp_fwd` loaded and
/// redirects allowed to `allowed` (interface names).
fn load(allowed: &[&str]) -> Dataplane {
    let mut dp = Dataplane::load(1024).expect("load the XDP object");
    for i in allowed {
        dp.allow_redirect(ifindex(i).unwrap()).unwrap();
    }
    let prog: &mut Xdp = dp
        .ebpf
        .program_mut(PROGRAM)
        .expect("xdp_fwd is in the XDP object")
        .try_into()
        .unwrap();
    prog.load().expect("the kernel accepts xdp_fwd");
    dp
}

fn run(dp: &mut Dataplane, frame: &[u8], ingress: &str) -> (u32, Vec<u8>) {
    let prog: &mut Xdp = dp.ebpf.program_mut(PROGRAM).unwrap().try_into().unwrap();
    common::test_run(prog, frame, ifindex(ingress).unwrap())
}

#[track_caller]
fn expect(dp: &mut Dataplane, what: &str, input: &[u8], ingress: &str, action: u32, out: &[u8]) {
    let (got, frame) = run(dp, input, ingress);
    assert_eq!(got, action, "{what}: action");
    assert_eq!(frame, out, "{what}: output frame");
}

#[test]
fn xdp_fwd_fixtures() {
    if !root_or_skip() {
        return;
    }
    // Everything runs on this one thread: it has entered the namespace.
    let _ns = enter_router();
    let mut dp = load(&["gwc", "gwb"]);

    // 1. Client → backend: routed out of gwb, MACs from the FIB, TTL - 1.
    let p = Pkt::tcp(BACKENDS[1], 40000, 80);
    let want = p.forwarded(backend_mac(1), MAC_GW_B);
    expect(
        &mut dp,
        "to a backend",
        &p.frame(),
        "gwc",
        XDP_REDIRECT,
        &want,
    );

    // 2. Backend → client (a reply): routed out of gwc.
    let mut r = Pkt::tcp(CLIENT, 80, 40000);
    (r.src, r.dmac, r.smac) = (BACKENDS[0], MAC_GW_B, backend_mac(0));
    let want = r.forwarded(MAC_CLIENT, MAC_GW_C);
    expect(&mut dp, "reply", &r.frame(), "gwb", XDP_REDIRECT, &want);

    // 3. Egress is the ingress interface: bounced with XDP_TX.
    let p = Pkt::tcp(BEHIND_CLIENT, 40000, 80);
    let want = p.forwarded(MAC_CLIENT, MAC_GW_C);
    expect(&mut dp, "hairpin", &p.frame(), "gwc", XDP_TX, &want);

    // 4. IP options: the header length is parsed; options kept as they are.
    let mut p = Pkt::tcp(BACKENDS[2], 40001, 80);
    p.options = vec![0x01, 0x01, 0x01, 0x00]; // NOP NOP NOP EOL
    let want = p.forwarded(backend_mac(2), MAC_GW_B);
    expect(
        &mut dp,
        "IP options",
        &p.frame(),
        "gwc",
        XDP_REDIRECT,
        &want,
    );

    // 5. Not only TCP: UDP, and a non-first fragment (no ports to read).
    let mut p = Pkt::tcp(BACKENDS[0], 5353, 53);
    p.proto = 17;
    let want = p.forwarded(backend_mac(0), MAC_GW_B);
    expect(&mut dp, "UDP", &p.frame(), "gwc", XDP_REDIRECT, &want);
    let mut p = Pkt::tcp(BACKENDS[0], 40002, 80);
    p.frag = 0x0010; // offset 128 bytes, last fragment
    let want = p.forwarded(backend_mac(0), MAC_GW_B);
    expect(&mut dp, "fragment", &p.frame(), "gwc", XDP_REDIRECT, &want);

    // 6. Everything the kernel must handle is passed, byte for byte.
    let unchanged = |p: &Pkt| p.frame();
    let mut cases: Vec<(&str, Pkt)> = vec![
        ("no route", Pkt::tcp(NO_ROUTE, 40000, 80)),
        ("to the gateway itself", Pkt::tcp(GW_C, 40000, 22)),
        ("neighbour not resolved", Pkt::tcp(NO_NEIGH, 40000, 80)),
    ];
    let mut ttl1 = Pkt::tcp(BACKENDS[0], 40000, 80);
    ttl1.ttl = 1;
    cases.push(("TTL 1 (ICMP time exceeded is the kernel's)", ttl1));
    let mut arp = Pkt::tcp(BACKENDS[0], 40000, 80);
    arp.ethertype = 0x0806;
    cases.push(("not IPv4", arp));
    let mut short_ihl = Pkt::tcp(BACKENDS[0], 40000, 80);
    short_ihl.ver_ihl = Some(0x44);
    cases.push(("IHL below 5", short_ihl));
    let mut v6 = Pkt::tcp(BACKENDS[0], 40000, 80);
    v6.ver_ihl = Some(0x65);
    cases.push(("IP version 6 under the IPv4 EtherType", v6));
    for (what, p) in &cases {
        let f = unchanged(p);
        expect(&mut dp, what, &f, "gwc", XDP_PASS, &f);
    }
    let f = Pkt::tcp(BACKENDS[0], 40000, 80).frame();
    expect(
        &mut dp,
        "truncated frame",
        &f[..20],
        "gwc",
        XDP_PASS,
        &f[..20],
    );

    // 7. The egress interface is not in TX_PORTS: nothing may be rewritten
    //    before the redirect is known to work.
    let mut only_client_side = load(&["gwc"]);
    let p = Pkt::tcp(BACKENDS[1], 40000, 80).frame();
    expect(
        &mut only_client_side,
        "egress not allowed",
        &p,
        "gwc",
        XDP_PASS,
        &p,
    );
}

/// The lookup carries the L4 protocol and ports: over the benchmark's ECMP
/// route the program spreads flows exactly as the kernel does for the same
/// 5-tuple (`ip route get … sport … dport …`), so the `xdp-fwd` gateway
/// loads all three backends, as direct routing does.
#[test]
fn xdp_fwd_spreads_flows_as_the_kernel_multipath_hash() {
    if !root_or_skip() {
        return;
    }
    let _ns = enter_router();
    let mut dp = load(&["gwc", "gwb"]);
    let mut used = [0u32; 3];
    for sport in 40000..40048u16 {
        let p = Pkt::tcp(VIP, sport, 80);
        let (action, out) = run(&mut dp, &p.frame(), "gwc");
        assert_eq!(action, XDP_REDIRECT, "sport {sport}");
        let b = (0..3)
            .find(|&i| out[..6] == backend_mac(i))
            .unwrap_or_else(|| panic!("sport {sport}: next hop {:02x?}", &out[..6]));
        assert_eq!(out, p.forwarded(backend_mac(b), MAC_GW_B), "sport {sport}");
        // This thread is in the namespace: `ip` started from it is too.
        let route = sh(&[
            "ip",
            "route",
            "get",
            &VIP.to_string(),
            "from",
            &CLIENT.to_string(),
            "iif",
            "gwc",
            "ipproto",
            "tcp",
            "sport",
            &sport.to_string(),
            "dport",
            "80",
        ]);
        assert!(
            route.contains(&format!("via {} ", BACKENDS[b])),
            "sport {sport}: XDP chose {}, the kernel: {route}",
            BACKENDS[b]
        );
        used[b] += 1;
    }
    assert!(used.iter().all(|&n| n > 0), "next hops used: {used:?}");
}
