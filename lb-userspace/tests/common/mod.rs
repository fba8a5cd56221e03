//! Shared harness of the BPF_PROG_TEST_RUN packet fixtures: a lab
//! namespace with fixed addresses and neighbours, a frame builder with
//! checksums computed from scratch, and the expected Maglev choice computed
//! independently of the program.
#![allow(dead_code)]
pub mod fullnat;
pub mod v6;

use std::net::Ipv4Addr;
use std::process::Command;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb::dataplane::{loader::ifindex, tables::Written, Dataplane, ListenerPlan, Plan, RealPlan};
use lb_common::checksum::{checksum, pseudo_header_v4};
use lb_common::hash::flow_hash;
use lb_common::MAGLEV_TABLE_SIZE;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const GW_C: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const GW_B: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
pub const BACKENDS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 18, 2, 11),
    Ipv4Addr::new(198, 18, 2, 12),
    Ipv4Addr::new(198, 18, 2, 13),
];
pub const MAC_GW_C: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x01];
pub const MAC_GW_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x01];
pub const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x02];
pub const MAC_PEER_B: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0xfe];

pub fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x02, 0x11 + i as u8]
}

/// (destination, source) MACs of a frame the gateway sends to backend `b`.
pub fn macs_to_backend(b: usize) -> ([u8; 6], [u8; 6]) {
    (backend_mac(b), MAC_GW_B)
}

/// (destination, source) MACs of a frame backend `b` sends to the gateway.
pub fn macs_from_backend(b: usize) -> ([u8; 6], [u8; 6]) {
    (MAC_GW_B, backend_mac(b))
}

/// (destination, source) MACs of a frame the gateway sends to the client.
pub const MACS_TO_CLIENT: ([u8; 6], [u8; 6]) = (MAC_CLIENT, MAC_GW_C);

/// An Ethernet II header; the frame builders of both families start with it.
pub fn eth_header(dmac: [u8; 6], smac: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(14);
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&smac);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A TCP segment (header of `doff` words, window 64240, then `payload`)
/// with its checksum left zero: the caller computes it over its own
/// pseudo-header (IPv4 or IPv6) and stores it with [`set_tcp_checksum`].
pub fn tcp_segment(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    doff: u8,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(doff << 4);
    t.push(flags);
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

/// Stores checksum `c` in a segment built by [`tcp_segment`].
pub fn set_tcp_checksum(segment: &mut [u8], c: u16) {
    segment[16..18].copy_from_slice(&c.to_be_bytes());
}

/// Fields of a test frame; `frame()` renders it with correct checksums.
#[derive(Clone)]
pub struct Pkt {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub ethertype: u16,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub frag: u16,
    pub options: Vec<u8>,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub payload: Vec<u8>,
    /// TCP sequence and acknowledgement numbers.
    pub seq: u32,
    pub ack: u32,
    /// TCP data offset in 32-bit words (5 = no options).
    pub doff: u8,
}

impl Pkt {
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Self {
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
            seq: 1000,
            ack: 2000,
            doff: 5,
        }
    }

    pub fn frame(&self) -> Vec<u8> {
        let mut l4 = tcp_segment(
            self.sport,
            self.dport,
            self.seq,
            self.ack,
            self.doff,
            self.flags,
            &self.payload,
        );
        let ph = pseudo_header_v4(
            u32::from(self.src),
            u32::from(self.dst),
            self.proto,
            l4.len() as u16,
        );
        let c = checksum(&l4, ph);
        set_tcp_checksum(&mut l4, c);

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

        let mut f = eth_header(self.dmac, self.smac, self.ethertype);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }
}

/// A namespace of the test's own, removed on drop.
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs a command, failing the test when it fails; returns its stdout.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A MAC address as `ip` writes it.
pub fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `ip -n NS ARGS…` (whitespace-separated).
pub fn ns_ip(ns: &Netns, args: &str) {
    let mut v = vec!["ip", "-n", ns.0.as_str()];
    v.extend(args.split_whitespace());
    sh(&v);
}

pub fn root_or_skip() -> bool {
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

/// A fresh namespace named `{prefix}{pid}-{n}` with the gateway's two
/// interfaces (veth pairs, peers left in the same namespace), addresses,
/// permanent neighbours and forwarding on.
pub fn lab_ns(prefix: &str) -> Netns {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ns = Netns(format!("{prefix}{}-{n}", std::process::id()));
    sh(&["ip", "netns", "add", &ns.0]);
    ns_ip(
        &ns,
        &format!(
            "link add gwc address {} type veth peer name pc",
            mac(MAC_GW_C)
        ),
    );
    ns_ip(
        &ns,
        &format!(
            "link add gwb address {} type veth peer name pb address {}",
            mac(MAC_GW_B),
            mac(MAC_PEER_B)
        ),
    );
    for d in ["lo", "gwc", "pc", "gwb", "pb"] {
        ns_ip(&ns, &format!("link set {d} up"));
    }
    ns_ip(&ns, &format!("addr add {GW_C}/24 dev gwc"));
    ns_ip(&ns, &format!("addr add {GW_B}/24 dev gwb"));
    ns_ip(
        &ns,
        &format!(
            "neigh add {CLIENT} lladdr {} dev gwc nud permanent",
            mac(MAC_CLIENT)
        ),
    );
    for (i, b) in BACKENDS.iter().enumerate() {
        ns_ip(
            &ns,
            &format!(
                "neigh add {b} lladdr {} dev gwb nud permanent",
                mac(backend_mac(i))
            ),
        );
    }
    sysctl(&ns, &["net.ipv4.ip_forward=1"]);
    ns
}

/// `sysctl -w` inside namespace `ns`.
pub fn sysctl(ns: &Netns, settings: &[&str]) {
    let mut v = vec!["ip", "netns", "exec", ns.0.as_str(), "sysctl", "-qw"];
    v.extend_from_slice(settings);
    sh(&v);
}

/// Moves this thread into `ns`: BPF_PROG_TEST_RUN resolves the ingress
/// ifindex and does its FIB lookups in the caller's namespace.
pub fn enter(ns: &Netns) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{}", ns.0)).expect("netns file");
    // SAFETY: valid fd of a network namespace; affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Enters a fresh [`lab_ns`].
pub fn enter_lab() -> Netns {
    let ns = lab_ns("lbpkt");
    enter(&ns);
    ns
}

pub fn plan(serving: [bool; 3]) -> Plan {
    Plan {
        listeners: vec![ListenerPlan {
            id: 0,
            vip: VIP.into(),
            port: 6443,
            target_port: 6443,
            fullnat: false,
            reals: (0..3)
                .map(|i| RealPlan {
                    id: i as u32,
                    name: format!("cp-0{}", i + 1),
                    addr: BACKENDS[i].into(),
                    port: 6443,
                    fullnat: false,
                    serving: serving[i],
                    draining: false,
                    // Out of the table and proven dead: its flows move.
                    keeps_flows: serving[i],
                })
                .collect(),
        }],
        snat: Default::default(),
    }
}

pub struct Harness {
    pub dp: Dataplane,
    pub ingress_client: u32,
    pub ingress_backend: u32,
}

impl Harness {
    /// Enters a fresh lab namespace, loads the program (not attached),
    /// allows redirects to both gateway NICs and writes `plan`. The caller
    /// keeps the namespace guard alive for the test's duration.
    pub fn start(plan: Plan) -> (Netns, Harness, Written) {
        Self::start_with(plan, 4096)
    }

    /// [`Harness::start`] with established conntrack tables of `capacity`.
    pub fn start_with(plan: Plan, capacity: u32) -> (Netns, Harness, Written) {
        let ns = enter_lab();
        let mut dp = Dataplane::load(capacity).expect("load XDP program");
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

    pub fn run(&mut self, frame: &[u8], ingress: u32) -> (u32, Vec<u8>) {
        test_run(self.dp.program(), frame, ingress)
    }
}

/// Runs `prog` once on `frame` as if received on interface `ingress`
/// (BPF_PROG_TEST_RUN): the action and the frame as the program left it.
pub fn test_run(prog: &Xdp, frame: &[u8], ingress: u32) -> (u32, Vec<u8>) {
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ingress, 0, 0];
    let ctx_bytes: Vec<u8> = ctx.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog
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

/// The backend Maglev gives a client flow, computed independently of the program.
pub fn expected_backend(sport: u16, serving: [bool; 3]) -> usize {
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
pub fn dnat(p: &Pkt, b: usize) -> Vec<u8> {
    let mut e = p.clone();
    e.dst = BACKENDS[b];
    e.dport = 6443;
    e.ttl -= 1;
    (e.dmac, e.smac) = macs_to_backend(b);
    e.frame()
}

pub fn assert_checksums_valid(frame: &[u8]) {
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

/// A plan where backend `d` drains (keeps flows, takes no new ones).
pub fn plan_draining(d: usize) -> Plan {
    let mut p = plan([true; 3]);
    p.listeners[0].reals[d].serving = false;
    p.listeners[0].reals[d].draining = true;
    p
}

pub fn ct_entry(dp: &Dataplane, sport: u16) -> lb_common::FwdEntry {
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

/// A frame from backend `b` to the client (as a reply arrives on the
/// backend-side interface).
pub fn from_backend(b: usize, dport: u16, flags: u8) -> Pkt {
    let mut p = Pkt::tcp(BACKENDS[b], 6443, CLIENT, dport, flags);
    (p.dmac, p.smac) = macs_from_backend(b);
    p
}

/// Expected frame of a reply after reverse translation: source VIP:`vport`,
/// TTL - 1, MACs toward the client, checksums from scratch.
pub fn snat(p: &Pkt, vport: u16) -> Vec<u8> {
    let mut e = p.clone();
    e.src = VIP;
    e.sport = vport;
    e.ttl -= 1;
    (e.dmac, e.smac) = MACS_TO_CLIENT;
    e.frame()
}

/// Client ISN and backend ISN used by [`handshake`].
pub const CLIENT_ISN: u32 = 1000;
pub const BACKEND_ISN: u32 = 7_000_000;

/// Runs a full three-way handshake for client port `sport` through the
/// program (SYN, SYN-ACK, ACK of the backend's ISN + 1) and returns the
/// backend Maglev chose.
pub fn handshake(h: &mut Harness, sport: u16) -> usize {
    let b = expected_backend(sport, [true; 3]);
    let mut syn = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x02);
    syn.seq = CLIENT_ISN;
    syn.ack = 0;
    let (act, out) = h.run(&syn.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat(&syn, b)), "SYN {sport}");
    let mut synack = from_backend(b, sport, 0x12);
    synack.seq = BACKEND_ISN;
    synack.ack = CLIENT_ISN + 1;
    let (act, out) = h.run(&synack.frame(), h.ingress_backend);
    assert_eq!(
        (act, out),
        (XDP_REDIRECT, snat(&synack, 6443)),
        "SYN-ACK {sport}"
    );
    let mut ack = Pkt::tcp(CLIENT, sport, VIP, 6443, 0x10);
    ack.seq = CLIENT_ISN + 1;
    ack.ack = BACKEND_ISN + 1;
    let (act, out) = h.run(&ack.frame(), h.ingress_client);
    assert_eq!((act, out), (XDP_REDIRECT, dnat(&ack, b)), "ACK {sport}");
    b
}

/// The client → VIP:`vport` flow key of client port `sport`.
pub fn fwd_key(sport: u16, vport: u16) -> lb_common::FlowKey {
    lb_common::FlowKey::tcp_v4(
        u32::from_ne_bytes(CLIENT.octets()),
        u32::from_ne_bytes(VIP.octets()),
        sport.to_be(),
        vport.to_be(),
    )
}

/// Whether `key` is in the map `name` (a conntrack map).
pub fn has_flow<V: aya::Pod>(dp: &Dataplane, name: &str, key: &lb_common::FlowKey) -> bool {
    let m: aya::maps::HashMap<_, lb_common::FlowKey, V> =
        aya::maps::HashMap::try_from(dp.ebpf.map(name).unwrap()).unwrap();
    m.get(key, 0).is_ok()
}

/// Number of entries in the map `name`.
pub fn map_len<V: aya::Pod>(dp: &Dataplane, name: &str) -> usize {
    let m: aya::maps::HashMap<_, lb_common::FlowKey, V> =
        aya::maps::HashMap::try_from(dp.ebpf.map(name).unwrap()).unwrap();
    m.keys().count()
}

/// The global counters by name.
pub fn counters(dp: &Dataplane) -> std::collections::BTreeMap<String, u64> {
    lb::dataplane::counters::global(dp)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}
