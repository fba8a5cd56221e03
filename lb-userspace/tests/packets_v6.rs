//! IPv6 packet fixtures through BPF_PROG_TEST_RUN (issue 14): each case
//! gives an input frame, the expected XDP action and the exact expected
//! output frame, built from scratch with checksums computed in the test
//! harness (`common::v6`), so they also check the program's incremental
//! updates over the IPv6 pseudo-header. Every case also checks the counter
//! its outcome is reported under.
//!
//! The lab holds both families: the IPv4 listener of `packets.rs` and an
//! IPv6 listener [2001:db8:100::10]:6443 → three IPv6 backends.
//!
//! Needs root (CI=true turns a skip into a failure).

mod common;

use std::collections::BTreeMap;

use common::v6::*;
use common::*;
use lb_common::{FwdEntry, RevEntry, MAP_CT_EMB_REV, MAP_CT_FWD, MAP_CT_REV};

/// Counter deltas since `before`, only the ones that moved.
fn moved(h: &Harness, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    counters(&h.dp)
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0);
            (d > 0).then_some((k, d))
        })
        .collect()
}

/// The gateway interface a frame arrives on.
enum In {
    Client,
    Backend,
}

/// Runs `frame` in on `ingress` and returns action, output and counter deltas.
fn run(h: &mut Harness, frame: &[u8], ingress: In) -> (u32, Vec<u8>, BTreeMap<String, u64>) {
    let before = counters(&h.dp);
    let ifindex = match ingress {
        In::Client => h.ingress_client,
        In::Backend => h.ingress_backend,
    };
    let (act, out) = h.run(frame, ifindex);
    let d = moved(h, &before);
    (act, out, d)
}

fn delta(d: &BTreeMap<String, u64>, name: &str) -> u64 {
    d.get(name).copied().unwrap_or(0)
}

#[test]
fn syn_to_ipv6_vip_is_dnated_and_redirected() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    let syn = to_vip6(40000, 0x02);
    let b = expected_backend6(40000, [true; 3]);
    let (act, out, d) = run(&mut h, &syn.frame(), In::Client);
    assert_eq!(act, XDP_REDIRECT, "SYN to the IPv6 VIP is redirected");
    assert_eq!(
        out,
        dnat6(&syn, b),
        "SYN rewritten to backend {b}, hop limit - 1"
    );
    assert_tcp_checksum6(&out);
    assert_eq!(out[21], 63, "hop limit decremented");
    assert_eq!(delta(&d, "new_flow"), 1, "{d:?}");
    assert!(has_flow::<RevEntry>(
        &h.dp,
        MAP_CT_EMB_REV,
        &rev_key6(b, 40000)
    ));

    // Maglev spreads IPv6 flows over every backend, exactly where the
    // table (with the IPv6 flow hash) says.
    let mut seen = [0usize; 3];
    for sport in 41000..41150u16 {
        let p = to_vip6(sport, 0x02);
        let (act, out) = h.run(&p.frame(), h.ingress_client);
        let want = expected_backend6(sport, [true; 3]);
        assert_eq!((act, out), (XDP_REDIRECT, dnat6(&p, want)), "sport {sport}");
        seen[want] += 1;
    }
    assert!(seen.iter().all(|n| *n > 25), "spread {seen:?}");

    // IPv4 still balances in the same program, with the IPv4 hash.
    let syn4 = Pkt::tcp(CLIENT, 40000, VIP, 6443, 0x02);
    let (act, out) = h.run(&syn4.frame(), h.ingress_client);
    assert_eq!(
        (act, out),
        (
            XDP_REDIRECT,
            dnat(&syn4, expected_backend(40000, [true; 3]))
        )
    );
}

/// SYN, SYN-ACK, ACK of the backend's ISN + 1: the flow is established in
/// both directions; then data each way (established packet, reply
/// reverse-NAT), then the flow keeps its backend when the table changes.
#[test]
fn ipv6_handshake_established_and_reply_reverse_nat() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    let sport = 40100;
    let b = expected_backend6(sport, [true; 3]);
    let mut syn = to_vip6(sport, 0x02);
    syn.seq = CLIENT_ISN;
    syn.ack = 0;
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat6(&syn, b)), "SYN");

    let mut synack = from_backend6(b, sport, 0x12);
    synack.seq = BACKEND_ISN;
    synack.ack = CLIENT_ISN + 1;
    let (act, out, d) = run(&mut h, &synack.frame(), In::Backend);
    assert_eq!(act, XDP_REDIRECT, "SYN-ACK redirected to the client NIC");
    assert_eq!(
        out,
        snat6(&synack, 6443),
        "SYN-ACK source restored to the VIP"
    );
    assert_tcp_checksum6(&out);
    assert_eq!(delta(&d, "reply_tracked"), 1, "{d:?}");

    let mut ack = to_vip6(sport, 0x10);
    ack.seq = CLIENT_ISN + 1;
    ack.ack = BACKEND_ISN + 1;
    let (act, out, d) = run(&mut h, &ack.frame(), In::Client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat6(&ack, b)), "handshake ACK");
    assert_eq!(delta(&d, "embryonic_promoted"), 1, "{d:?}");
    assert!(has_flow::<FwdEntry>(&h.dp, MAP_CT_FWD, &fwd_key6(sport)));
    assert!(has_flow::<RevEntry>(&h.dp, MAP_CT_REV, &rev_key6(b, sport)));

    // Established packet: a conntrack hit, same backend.
    let mut data = to_vip6(sport, 0x18);
    data.seq = CLIENT_ISN + 1;
    data.ack = BACKEND_ISN + 1;
    data.payload = b"GET /healthz HTTP/1.1\r\n\r\n".to_vec();
    let (act, out, d) = run(&mut h, &data.frame(), In::Client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, dnat6(&data, b), "established packet to backend {b}");
    assert_tcp_checksum6(&out);
    assert_eq!(delta(&d, "conntrack_hit"), 1, "{d:?}");
    assert_eq!(delta(&d, "new_flow"), 0, "{d:?}");

    // Reply of the established flow, reverse-translated (odd payload
    // length: the checksum's last byte is padded).
    let mut reply = from_backend6(b, sport, 0x18);
    reply.seq = BACKEND_ISN + 1;
    reply.ack = CLIENT_ISN + 26;
    reply.payload = b"HTTP/1.1 200 OK\r\n\r\nok".to_vec();
    let (act, out, d) = run(&mut h, &reply.frame(), In::Backend);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, snat6(&reply, 6443), "reply reverse-translated");
    assert_tcp_checksum6(&out);
    assert_eq!(delta(&d, "reply_tracked"), 1, "{d:?}");

    // Another backend leaves the table: the established flow stays.
    let mut serving = [true; 3];
    serving[(b + 1) % 3] = false;
    write_v6_listener(&mut h.dp, serving);
    let (act, out) = h.run(&data.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat6(&data, b)), "flow kept");

    // The same reply arriving on the client-side NIC is forged: the
    // backend's address is not routed there.
    let mut forged = reply.clone();
    forged.dmac = MAC_GW_C;
    let (act, _, d) = run(&mut h, &forged.frame(), In::Client);
    assert_eq!(act, XDP_DROP);
    assert_eq!(delta(&d, "reply_wrong_interface"), 1, "{d:?}");
}

/// A reply with no conntrack entry (after a restart) is translated from the
/// listener mapping, as for IPv4.
#[test]
fn untracked_ipv6_reply_uses_the_fallback() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    let reply = from_backend6(2, 50000, 0x10);
    let (act, out, d) = run(&mut h, &reply.frame(), In::Backend);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, snat6(&reply, 6443));
    assert_tcp_checksum6(&out);
    assert_eq!(delta(&d, "reply_fallback"), 1, "{d:?}");
}

/// A client talking to a backend's address directly (no VIP) is tracked as
/// a passthrough flow; its replies pass untranslated.
#[test]
fn direct_ipv6_connection_to_a_backend_passes_untranslated() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    let syn = Pkt6::tcp(CLIENT6, 40200, BACKENDS6[0], 6443, 0x02);
    let (act, out, d) = run(&mut h, &syn.frame(), In::Client);
    assert_eq!((act, out), (XDP_PASS, syn.frame()));
    assert_eq!(delta(&d, "direct"), 1, "{d:?}");
    let synack = from_backend6(0, 40200, 0x12);
    let (act, out, d) = run(&mut h, &synack.frame(), In::Backend);
    assert_eq!(
        (act, out),
        (XDP_PASS, synack.frame()),
        "not rewritten to the VIP"
    );
    assert_eq!(delta(&d, "direct"), 1, "{d:?}");
}

#[test]
fn extension_headers_before_tcp_are_walked() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    let mut syn = to_vip6(40300, 0x02);
    syn.ext = vec![Ext::options(NEXT_HOP), Ext::options(NEXT_DEST)];
    let b = expected_backend6(40300, [true; 3]);
    let (act, out, d) = run(&mut h, &syn.frame(), In::Client);
    assert_eq!(act, XDP_REDIRECT, "{d:?}");
    assert_eq!(out, dnat6(&syn, b), "DNAT'd, extension headers kept");
    assert_tcp_checksum6(&out);
    assert_eq!(delta(&d, "ip_options"), 1, "{d:?}");
    assert_eq!(delta(&d, "new_flow"), 1, "{d:?}");

    // A routing header with no segments left, then destination options.
    let mut syn = to_vip6(40301, 0x02);
    syn.ext = vec![
        Ext {
            kind: NEXT_ROUTING,
            body: vec![4, 0, 0, 0, 0, 0],
        },
        Ext::options(NEXT_DEST),
    ];
    let b = expected_backend6(40301, [true; 3]);
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat6(&syn, b)));
}

#[test]
fn fragment_header_to_ipv6_vip_is_dropped() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    let mut p = to_vip6(40400, 0x02);
    // First fragment (offset 0, more fragments), identification 0x1234.
    p.ext = vec![Ext {
        kind: NEXT_FRAGMENT,
        body: vec![0, 1, 0, 0, 0x12, 0x34],
    }];
    let (act, _, d) = run(&mut h, &p.frame(), In::Client);
    assert_eq!(act, XDP_DROP);
    assert_eq!(delta(&d, "fragment"), 1, "{d:?}");
    assert_eq!(delta(&d, "new_flow"), 0, "{d:?}");

    // Behind hop-by-hop options too.
    p.ext.insert(0, Ext::options(NEXT_HOP));
    let (act, _, d) = run(&mut h, &p.frame(), In::Client);
    assert_eq!((act, delta(&d, "fragment")), (XDP_DROP, 1), "{d:?}");

    // A fragment to an address that is not a VIP is none of our business.
    let mut other = p.clone();
    other.dst = "2001:db8:2::99".parse().unwrap();
    let (act, out, d) = run(&mut h, &other.frame(), In::Client);
    assert_eq!((act, out), (XDP_PASS, other.frame()));
    assert_eq!(delta(&d, "not_balanced"), 1, "{d:?}");
}

#[test]
fn hop_limit_one_to_ipv6_vip_is_passed_to_the_kernel() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    for hl in [1u8, 0] {
        let mut p = to_vip6(40500 + hl as u16, 0x02);
        p.hop_limit = hl;
        let (act, out, d) = run(&mut h, &p.frame(), In::Client);
        assert_eq!(act, XDP_PASS, "hop limit {hl}");
        assert_eq!(out, p.frame(), "passed untouched (hop limit {hl})");
        assert_eq!(delta(&d, "hop_limit_exceeded"), 1, "{d:?}");
        assert_eq!(delta(&d, "new_flow"), 0, "not a new flow: {d:?}");
        for b in 0..3 {
            let key = rev_key6(b, 40500 + hl as u16);
            assert!(!has_flow::<RevEntry>(&h.dp, MAP_CT_EMB_REV, &key));
        }
    }
    // A reply with hop limit 1 is handed to the kernel as it arrived too.
    let mut reply = from_backend6(0, 50001, 0x10);
    reply.hop_limit = 1;
    let (act, out, d) = run(&mut h, &reply.frame(), In::Backend);
    assert_eq!((act, out), (XDP_PASS, reply.frame()));
    assert_eq!(delta(&d, "hop_limit_exceeded"), 1, "{d:?}");
}

/// An ICMPv6 neighbour solicitation for `target`, from the client.
fn neighbour_solicitation(target: std::net::Ipv6Addr, multicast: bool) -> Pkt6 {
    let t = target.octets();
    let (dst, dmac) = if multicast {
        let dst = std::net::Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | t[13] as u16,
            u16::from_be_bytes([t[14], t[15]]),
        );
        (dst, [0x33, 0x33, 0xff, t[13], t[14], t[15]])
    } else {
        (target, MAC_GW_C)
    };
    let mut body = vec![135, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&t);
    body.extend_from_slice(&[1, 1]); // source link-layer address option
    body.extend_from_slice(&MAC_CLIENT);
    let mut p = Pkt6::tcp(CLIENT6, 0, dst, 0, 0);
    p.dmac = dmac;
    p.hop_limit = 255;
    p.next = NEXT_ICMPV6;
    p.raw = Some((body, 2));
    p
}

#[test]
fn neighbour_solicitation_passes_untouched() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    // The destination-MAC check on, as the daemon sets it.
    lb::dataplane::macs::set(&mut h.dp, h.ingress_client, &[MAC_GW_C]).unwrap();
    // To the solicited-node multicast address and MAC: not filtered by the
    // destination-MAC check (counted not_balanced, not not_for_us).
    for target in [GW_C6, VIP6] {
        let ns = neighbour_solicitation(target, true);
        let (act, out, d) = run(&mut h, &ns.frame(), In::Client);
        assert_eq!((act, out), (XDP_PASS, ns.frame()), "NS for {target}");
        assert_eq!(delta(&d, "not_balanced"), 1, "{d:?}");
        assert_eq!(delta(&d, "not_for_us"), 0, "{d:?}");
    }
    // Unicast (neighbour unreachability detection) to the gateway's MAC.
    let ns = neighbour_solicitation(GW_C6, false);
    let (act, out, d) = run(&mut h, &ns.frame(), In::Client);
    assert_eq!((act, out), (XDP_PASS, ns.frame()));
    assert_eq!(delta(&d, "not_balanced"), 1, "{d:?}");
}

#[test]
fn ipv6_tcp_to_a_non_vip_passes_byte_identical() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    let p = Pkt6::tcp(CLIENT6, 40600, "2001:db8:2::99".parse().unwrap(), 80, 0x02);
    let (act, out, d) = run(&mut h, &p.frame(), In::Client);
    assert_eq!((act, out), (XDP_PASS, p.frame()));
    assert_eq!(delta(&d, "not_balanced"), 1, "{d:?}");
    // The VIP's address on another port is no listener either.
    let p = Pkt6::tcp(CLIENT6, 40601, VIP6, 22, 0x02);
    let (act, out) = h.run(&p.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_PASS, p.frame()));
    // With the destination-MAC check on, a unicast frame for another
    // host's MAC is not ours to balance; one for ours is.
    lb::dataplane::macs::set(&mut h.dp, h.ingress_client, &[MAC_GW_C]).unwrap();
    let (act, _) = h.run(&to_vip6(40603, 0x02).frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    let mut p = to_vip6(40602, 0x02);
    p.dmac = [0x02, 0, 0, 0, 0x09, 0x09];
    let (act, out, d) = run(&mut h, &p.frame(), In::Client);
    assert_eq!((act, out), (XDP_PASS, p.frame()));
    assert_eq!(delta(&d, "not_for_us"), 1, "{d:?}");
}

#[test]
fn unparseable_ipv6_headers_pass_counted() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    let cases: Vec<(&str, Vec<Ext>)> = vec![
        (
            "experimental extension header (253)",
            vec![Ext {
                kind: 253,
                body: vec![0; 6],
            }],
        ),
        (
            "authentication header",
            vec![Ext {
                kind: 51,
                body: vec![0; 14],
            }],
        ),
        (
            "routing header with segments left",
            vec![Ext {
                kind: NEXT_ROUTING,
                body: vec![4, 1, 0, 0, 0, 0],
            }],
        ),
        (
            "more extension headers than walked",
            (0..5).map(|_| Ext::options(NEXT_DEST)).collect(),
        ),
    ];
    for (what, ext) in cases {
        let mut p = to_vip6(40700, 0x02);
        p.ext = ext;
        let (act, out, d) = run(&mut h, &p.frame(), In::Client);
        assert_eq!((act, &out), (XDP_PASS, &p.frame()), "{what}");
        assert_eq!(delta(&d, "ipv6_unparsed"), 1, "{what}: {d:?}");
        assert_eq!(delta(&d, "new_flow"), 0, "{what}: {d:?}");
    }
    // An extension header cut short by the end of the frame.
    let mut p = to_vip6(40701, 0x02);
    p.ext = vec![Ext::options(NEXT_DEST)];
    let mut f = p.frame();
    f.truncate(14 + 40 + 1);
    let (act, out, d) = run(&mut h, &f, In::Client);
    assert_eq!((act, out), (XDP_PASS, f));
    assert_eq!(delta(&d, "ipv6_unparsed"), 1, "{d:?}");
}

/// Malformed TCP over IPv6 to a VIP is dropped as over IPv4.
#[test]
fn malformed_ipv6_to_vip_is_dropped() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h) = start_dual([true; 3]);
    // Payload length claiming more than the frame holds.
    let p = to_vip6(40800, 0x02);
    let mut f = p.frame();
    let plen = u16::from_be_bytes([f[18], f[19]]) + 100;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    let (act, _, d) = run(&mut h, &f, In::Client);
    assert_eq!((act, delta(&d, "malformed")), (XDP_DROP, 1), "{d:?}");
    // SYN+FIN.
    let p = to_vip6(40801, 0x03);
    let (act, _, d) = run(&mut h, &p.frame(), In::Client);
    assert_eq!((act, delta(&d, "malformed")), (XDP_DROP, 1), "{d:?}");
    // TCP header cut short after a destination options header.
    let mut p = to_vip6(40802, 0x02);
    p.ext = vec![Ext::options(NEXT_DEST)];
    let mut f = p.frame();
    f.truncate(14 + 40 + 8 + 12);
    let (act, _, d) = run(&mut h, &f, In::Client);
    assert_eq!((act, delta(&d, "malformed")), (XDP_DROP, 1), "{d:?}");
    // The same to an address that is not a VIP passes.
    p.dst = "2001:db8:2::99".parse().unwrap();
    let mut f = p.frame();
    f.truncate(14 + 40 + 8 + 12);
    let (act, out, d) = run(&mut h, &f, In::Client);
    assert_eq!((act, out), (XDP_PASS, f));
    assert_eq!(delta(&d, "truncated"), 1, "{d:?}");
}

/// The IPv6 route lookup's other answers map to the IPv4 path's reasons:
/// an unresolved neighbour passes the rewritten packet to the kernel
/// (which resolves it and forwards); forwarding off passes it too.
#[test]
fn ipv6_route_lookup_results_map_to_pass_reasons() {
    if !root_or_skip() {
        return;
    }
    let (ns, mut h) = start_dual([true; 3]);
    let sport = (41000..42000u16)
        .find(|s| expected_backend6(*s, [true; 3]) == 1)
        .unwrap();
    ns_ip(&ns, &format!("-6 neigh del {} dev gwb", BACKENDS6[1]));
    let syn = to_vip6(sport, 0x02);
    let (act, out, d) = run(&mut h, &syn.frame(), In::Client);
    assert_eq!(act, XDP_PASS);
    let mut want = syn.clone();
    want.dst = BACKENDS6[1];
    assert_eq!(
        out,
        want.frame(),
        "DNAT'd, hop limit and MACs left to the kernel"
    );
    assert_eq!(delta(&d, "no_neigh"), 1, "{d:?}");

    sysctl(&ns, &["net.ipv6.conf.all.forwarding=0"]);
    let syn = to_vip6(sport + 1, 0x02);
    let (act, _, d) = run(&mut h, &syn.frame(), In::Client);
    assert_eq!(act, XDP_PASS);
    assert_eq!(delta(&d, "no_route"), 1, "{d:?}");
}
