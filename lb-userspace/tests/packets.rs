//! Table-driven packet tests through BPF_PROG_TEST_RUN (Katran-style
//! fixtures): each case gives an input frame, the expected XDP action and the
//! exact expected output frame. Expected frames are built from scratch with
//! full checksums, so they also check the program's incremental updates.
//!
//! Needs root: the test runs in a network namespace of its own with fixed
//! addresses and permanent neighbour entries, so FIB lookups give known MACs.

use std::net::Ipv4Addr;
use std::process::Command;

use aya::programs::{TestRun, TestRunOptions};
use lb::dataplane::{loader::ifindex, tables::Written, Dataplane, ListenerPlan, Plan, RealPlan};
use lb_common::checksum::{checksum, pseudo_header_v4};
use lb_common::hash::flow_hash;
use lb_common::MAGLEV_TABLE_SIZE;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const GW_C: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const GW_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 2, 11),
    Ipv4Addr::new(198, 18, 2, 12),
    Ipv4Addr::new(198, 18, 2, 13),
];
const MAC_GW_C: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
const MAC_GW_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
const MAC_PEER_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0xfe];

fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, 0x11 + i as u8]
}

/// Fields of a test frame; `frame()` renders it with correct checksums.
#[derive(Clone)]
struct Pkt {
    dmac: [u8; 6],
    smac: [u8; 6],
    ethertype: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    proto: u8,
    frag: u16,
    options: Vec<u8>,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: Vec<u8>,
}

impl Pkt {
    fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Self {
        Pkt {
            dmac: MAC_GW_C,
            smac: MAC_CLIENT,
            ethertype: 0x0800,
            src,
            dst,
            ttl: 64,
            proto: 6,
            frag: 0x4000, // DF
            options: vec![],
            sport,
            dport,
            flags,
            payload: b"hello".to_vec(),
        }
    }

    fn frame(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        l4.extend_from_slice(&1000u32.to_be_bytes());
        l4.extend_from_slice(&2000u32.to_be_bytes());
        l4.push(5 << 4);
        l4.push(self.flags);
        l4.extend_from_slice(&64240u16.to_be_bytes());
        l4.extend_from_slice(&[0, 0, 0, 0]);
        l4.extend_from_slice(&self.payload);
        let ph = pseudo_header_v4(
            u32::from(self.src),
            u32::from(self.dst),
            self.proto,
            l4.len() as u16,
        );
        let c = checksum(&l4, ph);
        l4[16..18].copy_from_slice(&c.to_be_bytes());

        let ihl = 5 + self.options.len() / 4;
        let mut ip = vec![(4 << 4) | ihl as u8, 0];
        ip.extend_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.push(self.ttl);
        ip.push(self.proto);
        ip.extend_from_slice(&[0, 0]);
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
}

/// A namespace of the test's own, removed on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "packet tests need root in CI"
    );
    eprintln!("skipping packet tests: not root");
    false
}

/// Enters a fresh namespace with the gateway's two interfaces (veth pairs,
/// peers left in the same namespace), addresses and permanent neighbours.
fn enter_lab() -> Netns {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("lbpkt{}-{n}", std::process::id());
    let ns = Netns(name.clone());
    sh(&["ip", "netns", "add", &name]);
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let n = |args: &str| {
        let mut v = vec!["ip", "-n", name.as_str()];
        v.extend(args.split_whitespace());
        sh(&v);
    };
    n(&format!(
        "link add gwc address {} type veth peer name pc",
        mac(MAC_GW_C)
    ));
    n(&format!(
        "link add gwb address {} type veth peer name pb address {}",
        mac(MAC_GW_B),
        mac(MAC_PEER_B)
    ));
    for d in ["lo", "gwc", "pc", "gwb", "pb"] {
        n(&format!("link set {d} up"));
    }
    n(&format!("addr add {GW_C}/24 dev gwc"));
    n(&format!("addr add {GW_B}/24 dev gwb"));
    n(&format!(
        "neigh add {CLIENT} lladdr {} dev gwc nud permanent",
        mac(MAC_CLIENT)
    ));
    for (i, b) in BACKENDS.iter().enumerate() {
        n(&format!(
            "neigh add {b} lladdr {} dev gwb nud permanent",
            mac(backend_mac(i))
        ));
    }
    sh(&[
        "ip",
        "netns",
        "exec",
        &name,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    // Move this thread into the namespace: BPF_PROG_TEST_RUN resolves the
    // ingress ifindex and does its FIB lookups in the caller's namespace.
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("netns file");
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd of a network namespace; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    ns
}

fn plan(serving: [bool; 3]) -> Plan {
    Plan {
        listeners: vec![ListenerPlan {
            id: 0,
            vip: VIP,
            port: 6443,
            target_port: 6443,
            reals: (0..3)
                .map(|i| RealPlan {
                    id: i as u32,
                    name: format!("cp-0{}", i + 1),
                    addr: BACKENDS[i],
                    serving: serving[i],
                    port: 6443,
                    draining: false,
                })
                .collect(),
        }],
    }
}

struct Harness {
    dp: Dataplane,
    ingress_client: u32,
    ingress_backend: u32,
}

impl Harness {
    /// Enters a fresh lab namespace, loads the program (not attached),
    /// allows redirects to both gateway NICs and writes `plan`. The caller
    /// keeps the namespace guard alive for the test's duration.
    fn start(plan: Plan) -> (Netns, Harness, Written) {
        let ns = enter_lab();
        let mut dp = Dataplane::load(4096).expect("load XDP program");
        let gwc = ifindex("gwc").unwrap();
        let gwb = ifindex("gwb").unwrap();
        dp.allow_redirect(gwc).unwrap();
        dp.allow_redirect(gwb).unwrap();
        let mut written = Written::default();
        written.apply(&mut dp, &plan).unwrap();
        let h = Harness {
            dp,
            ingress_client: gwc,
            ingress_backend: gwb,
        };
        (ns, h, written)
    }

    fn run(&mut self, frame: &[u8], ingress: u32) -> (u32, Vec<u8>) {
        let ctx: [u32; 6] = [0, frame.len() as u32, 0, ingress, 0, 0];
        let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut out = vec![0u8; frame.len() + 256];
        let r = self
            .dp
            .program()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_bytes),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }
}

/// The backend Maglev gives a client flow, computed independently of the program.
fn expected_backend(sport: u16, serving: [bool; 3]) -> usize {
    let names: Vec<String> = (0..3)
        .filter(|i| serving[*i])
        .map(|i| format!("cp-0{}", i + 1))
        .collect();
    let keys: Vec<&str> = names.iter().map(String::as_str).collect();
    let table = lb::maglev::build_table(&keys, MAGLEV_TABLE_SIZE)
        .unwrap()
        .unwrap();
    let h = flow_hash(
        u32::from_ne_bytes(CLIENT.octets()),
        u32::from_ne_bytes(VIP.octets()),
        sport.to_be(),
        6443u16.to_be(),
        6,
    );
    let owner = &keys[table[(h % MAGLEV_TABLE_SIZE) as usize] as usize];
    owner[3..].parse::<usize>().unwrap() - 1
}

/// Expected frame after DNAT to backend `b`: new destination, TTL - 1, MACs
/// from the FIB, checksums recomputed from scratch.
fn dnat(p: &Pkt, b: usize) -> Vec<u8> {
    let mut e = p.clone();
    e.dst = BACKENDS[b];
    e.dport = 6443;
    e.ttl -= 1;
    e.dmac = backend_mac(b);
    e.smac = MAC_GW_B;
    e.frame()
}

fn assert_checksums_valid(frame: &[u8]) {
    let ihl = (frame[14] & 0x0f) as usize * 4;
    assert_eq!(checksum(&frame[14..14 + ihl], 0), 0, "IP checksum");
    let tot = u16::from_be_bytes([frame[16], frame[17]]) as usize;
    let l4 = &frame[14 + ihl..14 + tot];
    let src = u32::from_be_bytes(frame[26..30].try_into().unwrap());
    let dst = u32::from_be_bytes(frame[30..34].try_into().unwrap());
    assert_eq!(
        checksum(l4, pseudo_header_v4(src, dst, 6, l4.len() as u16)),
        0,
        "TCP checksum"
    );
}

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

/// A plan where backend `d` drains (keeps flows, takes no new ones).
fn plan_draining(d: usize) -> Plan {
    let mut p = plan([true; 3]);
    p.listeners[0].reals[d].serving = false;
    p.listeners[0].reals[d].draining = true;
    p
}

fn ct_entry(dp: &Dataplane, sport: u16) -> lb_common::FwdEntry {
    let ct: aya::maps::HashMap<_, lb_common::FlowKey, lb_common::FwdEntry> =
        aya::maps::HashMap::try_from(dp.ebpf.map(lb_common::MAP_CT_FWD).unwrap()).unwrap();
    let key = lb_common::FlowKey {
        src: lb_common::v4_words(CLIENT.octets()),
        dst: lb_common::v4_words(VIP.octets()),
        sport: sport.to_be(),
        dport: 6443u16.to_be(),
        proto: 6,
        family: 4,
        _pad: [0; 2],
    };
    ct.get(&key, 0).expect("tracked flow")
}

#[test]
fn draining_and_closing_flows() {
    if !root_or_skip() {
        return;
    }
    let (_ns, mut h, mut written) = Harness::start(plan([true; 3]));

    // A flow on backend b; then b drains.
    let syn = Pkt::tcp(CLIENT, 42000, VIP, 6443, 0x02);
    let b = expected_backend(42000, [true; 3]);
    assert_eq!(h.run(&syn.frame(), h.ingress_client).1, dnat(&syn, b));
    written.apply(&mut h.dp, &plan_draining(b)).unwrap();

    // Its established packets stay on the draining backend...
    let ack = Pkt::tcp(CLIENT, 42000, VIP, 6443, 0x10);
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!(act, XDP_REDIRECT);
    assert_eq!(out, dnat(&ack, b), "draining backend keeps its flow");
    // ...but a new connection reusing the tuple (a pure SYN) goes elsewhere.
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
    written.apply(&mut h.dp, &plan([true; 3])).unwrap();
    let mut gone = plan([true; 3]);
    gone.listeners[0].reals[want].serving = false;
    written.apply(&mut h.dp, &gone).unwrap();
    let mut serving = [true; 3];
    serving[want] = false;
    let (_, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!(
        out,
        dnat(&ack, expected_backend(42000, serving)),
        "rescheduled"
    );
    written.apply(&mut h.dp, &plan([true; 3])).unwrap();

    // FIN from the client marks the flow closing; so does an RST from the backend.
    assert_eq!(ct_entry(&h.dp, 42000).flags & lb_common::FWD_F_CLOSING, 0);
    let fin = Pkt::tcp(CLIENT, 42000, VIP, 6443, 0x11);
    h.run(&fin.frame(), h.ingress_client);
    assert_ne!(
        ct_entry(&h.dp, 42000).flags & lb_common::FWD_F_CLOSING,
        0,
        "FIN seen"
    );

    let syn2 = Pkt::tcp(CLIENT, 44000, VIP, 6443, 0x02);
    let b2 = expected_backend(44000, [true; 3]);
    h.run(&syn2.frame(), h.ingress_client);
    let mut rst = Pkt::tcp(BACKENDS[b2], 6443, CLIENT, 44000, 0x14);
    rst.dmac = MAC_GW_B;
    rst.smac = backend_mac(b2);
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
