//! Map names, sizes, keys and values.
//!
//! Addresses are `[u32; 4]` in network byte order (IPv4 uses word 0, the
//! rest is zero) so every key is ready for IPv6; ports are network order.

/// Address family tag stored in keys: IPv4.
pub const FAMILY_V4: u8 = 4;
/// Address family tag stored in keys: IPv6.
pub const FAMILY_V6: u8 = 6;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;

/// Version of the map layout. Pinned maps live under a directory named after
/// it, so a daemon never adopts maps whose layout it does not understand.
/// Bump it whenever a key, value or map definition changes.
pub const LAYOUT_VERSION: u32 = 5;

/// Most listeners (VIP:port) the data path holds.
pub const MAX_LISTENERS: u32 = 32;
/// Most reals, i.e. (listener, backend) pairs, the data path holds.
pub const MAX_REALS: u32 = 4096;
/// Slots in one Maglev lookup table. Prime, as Maglev requires; 65537 keeps
/// every backend within about 1% of its fair share for up to ~600 backends.
pub const MAGLEV_TABLE_SIZE: u32 = 65537;
/// Maglev tables: four per listener, two for new flows
/// ([`Listener::table`]) and two for mid-flow packets of untracked flows
/// ([`Listener::midflow_table`]). Each pair is double-buffered: a new table
/// is written while packets read the other, then the listener entry is
/// switched in one update. Listener `id` owns tables `4*id .. 4*id+4`
/// (about 33 MB for [`MAX_LISTENERS`] listeners).
pub const MAGLEV_TABLES: u32 = MAX_LISTENERS * 4;
/// Default conntrack capacity (flows) of each direction's LRU map.
pub const DEFAULT_CONNTRACK_CAPACITY: u32 = 262_144;
/// Most interfaces the gateway redirects between.
pub const MAX_INTERFACES: u32 = 64;
/// Entries of the embryonic conntrack map ([`MAP_CT_EMB_REV`]): flows that
/// have not proved established yet. A flood of SYNs (or of mid-flow
/// packets) churns only this map, never the established ones; a legitimate
/// handshake needs its entry for one round trip, so a small table suffices.
pub const EMBRYONIC_CAPACITY: u32 = 32_768;
/// Destination MACs accepted per interface: its own and up to three VRRP
/// virtual MACs (keepalived `use_vmac`).
pub const MAX_IFACE_MACS: usize = 4;
/// Slots of [`MAP_IFACE_MACS`], indexed by `ifindex % IFACE_MAC_SLOTS`. An
/// array, not a hash: the check runs on every frame, and the verifier
/// inlines array lookups (no helper call, no hashing). Two attached
/// interfaces whose indexes share a slot: the second is left unfiltered
/// (the daemon warns).
pub const IFACE_MAC_SLOTS: u32 = 1024;

/// `HashMap<ListenerKey, Listener>`: which VIP:port is balanced and how.
pub const MAP_LISTENERS: &str = "LISTENERS";
/// `HashMap<VipKey, u32>`: every VIP address (to recognise fragments aimed at one).
pub const MAP_VIPS: &str = "VIPS";
/// `Array<MaglevTable>`: the lookup tables (real ids), indexed by `Listener::table`.
pub const MAP_MAGLEV: &str = "MAGLEV";
/// `Array<Real>`: backends per listener, indexed by real id.
pub const MAP_REALS: &str = "REALS";
/// `LruHashMap<FlowKey, FwdEntry>`: client→VIP flows and their real.
pub const MAP_CT_FWD: &str = "CT_FWD";
/// `LruHashMap<FlowKey, RevEntry>`: backend→client flows and their VIP.
pub const MAP_CT_REV: &str = "CT_REV";
/// `LruHashMap<FlowKey, RevEntry>`: flows still in their handshake (or seen
/// mid-flow, not proven yet), kept apart from [`MAP_CT_REV`]; keyed like
/// it, by the reply direction. An embryonic flow has no forward entry: its
/// client's packets find the real by Maglev, which gives the same one while
/// the set of serving reals is stable.
pub const MAP_CT_EMB_REV: &str = "CT_EMB_REV";
/// `Array<IfaceMacs>`: destination MACs the program handles, per ingress
/// ifindex (slot `ifindex % IFACE_MAC_SLOTS`, tagged with the ifindex). An
/// interface without an entry is not filtered.
pub const MAP_IFACE_MACS: &str = "IFACE_MACS";
/// `HashMap<EndpointKey, RevEntry>`: backend endpoint → VIP, only where unambiguous.
pub const MAP_REV_FALLBACK: &str = "REV_FALLBACK";
/// `PerCpuArray<u64>`: global counters indexed by [`crate::Reason`].
pub const MAP_STATS: &str = "STATS";
/// `PerCpuArray<RealStats>`: per real counters, indexed by real id.
pub const MAP_REAL_STATS: &str = "REAL_STATS";
/// `PerCpuArray<ListenerStats>`: per listener counters, indexed by listener id.
pub const MAP_LISTENER_STATS: &str = "LISTENER_STATS";
/// `DevMapHash`: interfaces a packet may be redirected to, keyed by ifindex.
pub const MAP_TX_PORTS: &str = "TX_PORTS";
/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "lb_xdp";

/// Listener flag: no backend can take new flows and `all_down = "drop"`.
pub const LISTENER_F_DROP_NEW: u16 = 1;
/// Listener flag: one-arm full-NAT. New flows get their source rewritten
/// to a source-NAT address and port (see [`crate::snat`]) as well as their
/// destination; replies get the client restored as their destination.
pub const LISTENER_F_FULLNAT: u16 = 2;
/// Listener flag: at most one real takes new flows, so a node's refusal of
/// a SYN (a RST) goes to the client: no other node could take its retry
/// (see [`crate::evidence::RealSeen::note_refused`]).
pub const LISTENER_F_ONE_SERVING: u16 = 4;
/// Real flag: the real is in its listener's Maglev table (gets new flows).
pub const REAL_F_SERVING: u8 = 1;
/// Real flag: the real keeps its tracked flows but gets no new ones.
pub const REAL_F_DRAINING: u8 = 2;
/// Real flag: the real is not proven dead and not gone (drain expired,
/// removed): it keeps its tracked flows even while it fails this gateway's
/// checks, and it is in its listener's mid-flow table. Distinct from
/// [`REAL_F_SERVING`] so that a flow another gateway started on a node this
/// gateway considers down is not rescheduled (reset) at a takeover.
pub const REAL_F_KEEPS_FLOWS: u8 = 4;

/// Reverse-entry flag: the flow goes straight to a backend's address (not
/// through a VIP); its replies pass untranslated.
pub const REV_F_PASSTHROUGH: u16 = 1;

/// Key of [`MAP_LISTENERS`]: a VIP, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerKey {
    /// VIP address.
    pub addr: [u32; 4],
    /// VIP port (network order).
    pub port: u16,
    /// IP protocol (TCP).
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
}

/// Value of [`MAP_LISTENERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listener {
    /// Listener id: index into [`MAP_LISTENER_STATS`].
    pub id: u32,
    /// Index into [`MAP_MAGLEV`] of the table packets use now.
    pub table: u32,
    /// Port the backends listen on (network order).
    pub target_port: u16,
    /// `LISTENER_F_*` flags.
    pub flags: u16,
    /// Index into [`MAP_MAGLEV`] of the table for mid-flow packets of flows
    /// this gateway does not track (a takeover, a restart): built over every
    /// backend that is not gone or proven dead, whatever its health checks
    /// say, so that gateways sharing a configuration pick the node the
    /// flow's first gateway picked. [`NO_TABLE`] when there is none.
    pub midflow_table: u32,
}

/// [`Listener::midflow_table`] when no backend may keep flows: mid-flow
/// packets of untracked flows are dropped.
pub const NO_TABLE: u32 = u32::MAX;

/// Key of [`MAP_VIPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    /// VIP address.
    pub addr: [u32; 4],
}

/// One Maglev lookup table: each slot holds a real id.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MaglevTable {
    /// Real ids, indexed by `flow_hash % MAGLEV_TABLE_SIZE`.
    pub slots: [u32; MAGLEV_TABLE_SIZE as usize],
}

/// Value of [`MAP_REALS`]: one backend of one listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Real {
    /// Backend address.
    pub addr: [u32; 4],
    /// Backend port, the listener's target port (network order).
    pub port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`]; 0 marks an unused slot.
    pub family: u8,
    /// `REAL_F_*` flags.
    pub flags: u8,
    /// Listener id the real belongs to (lets a restarted daemon adopt the
    /// ids it finds in pinned maps).
    pub listener: u32,
}

/// Key of both conntrack maps: a TCP connection in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address.
    pub src: [u32; 4],
    /// Destination address.
    pub dst: [u32; 4],
    /// Source port (network order).
    pub sport: u16,
    /// Destination port (network order).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Address family.
    pub family: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// An IPv4 TCP flow (addresses and ports in network order).
    #[inline(always)]
    pub fn tcp_v4(src: u32, dst: u32, sport: u16, dport: u16) -> Self {
        FlowKey {
            src: [src, 0, 0, 0],
            dst: [dst, 0, 0, 0],
            sport,
            dport,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    }

    /// An IPv6 TCP flow (address words and ports in network order, as read
    /// from the packet).
    #[inline(always)]
    pub fn tcp_v6(src: [u32; 4], dst: [u32; 4], sport: u16, dport: u16) -> Self {
        FlowKey {
            src,
            dst,
            sport,
            dport,
            proto: PROTO_TCP,
            family: FAMILY_V6,
            _pad: [0; 2],
        }
    }

    /// The endpoint this flow is addressed to (its destination address and
    /// port, with its family and protocol).
    #[inline(always)]
    pub fn dst_endpoint(&self) -> EndpointKey {
        EndpointKey {
            addr: self.dst,
            port: self.dport,
            proto: self.proto,
            family: self.family,
        }
    }

    /// The endpoint this flow comes from.
    #[inline(always)]
    pub fn src_endpoint(&self) -> EndpointKey {
        EndpointKey {
            addr: self.src,
            port: self.sport,
            proto: self.proto,
            family: self.family,
        }
    }

    /// The same connection seen from the other end (sources and
    /// destinations swapped); family and protocol are kept.
    #[inline(always)]
    pub fn reverse(&self) -> Self {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }

    /// This flow with its destination replaced (DNAT to a backend).
    #[inline(always)]
    pub fn with_dst(&self, addr: [u32; 4], port: u16) -> Self {
        FlowKey {
            dst: addr,
            dport: port,
            ..*self
        }
    }
}

/// Value of [`MAP_CT_FWD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdEntry {
    /// Real id the flow is pinned to.
    pub real: u32,
    /// Listener id of the flow.
    pub listener: u32,
    /// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC) when the flow was last
    /// seen, refreshed at most once a second.
    pub last_seen_ns: u64,
    /// `FWD_F_*` flags.
    pub flags: u32,
    /// A recent TCP sequence number of the client (host order): its SYN's
    /// while embryonic, then refreshed with `last_seen_ns` or when the
    /// client's sequence moved more than half of [`RST_WINDOW`]. A client
    /// RST marks the flow closing only within [`RST_WINDOW`] of it.
    pub seq: u32,
    /// Route to the backend.
    pub route: RouteCache,
    /// Source-NAT address the flow's packets carry to the node (network
    /// order; [`FWD_F_FULLNAT`] flows only).
    pub snat: [u32; 4],
    /// Source-NAT port (network order; [`FWD_F_FULLNAT`] flows only).
    pub snat_port: u16,
    /// Explicit padding.
    pub _pad: u16,
    /// Explicit padding.
    pub _pad2: u32,
}

/// How long a conntrack entry's cached route stays valid before the next
/// packet looks it up again (a route or neighbour change takes effect
/// within this time).
pub const ROUTE_TTL_NS: u64 = 1_000_000_000;

/// A FIB lookup result cached in a conntrack entry, so packets of an
/// established flow skip `bpf_fib_lookup`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteCache {
    /// `bpf_ktime_get_coarse_ns` of the lookup; 0 when nothing is cached.
    pub at_ns: u64,
    /// Egress interface.
    pub ifindex: u32,
    /// Next hop's MAC.
    pub dmac: [u8; 6],
    /// Egress interface's MAC.
    pub smac: [u8; 6],
}

impl RouteCache {
    /// Nothing cached (`ifindex` 0): the next packet looks the route up.
    /// The MAC bytes are filler, deliberately not all equal: BPF has no
    /// memset, and LLVM turns runs of equal constant bytes into one.
    pub const NONE: RouteCache = RouteCache {
        at_ns: 0,
        ifindex: 0,
        dmac: [2, 0, 0, 0, 0, 1],
        smac: [2, 0, 0, 0, 0, 2],
    };
}

/// Conntrack flag: a FIN or RST was seen in either direction.
pub const FWD_F_CLOSING: u32 = 1;
/// Conntrack flag: a full-NAT flow; its source is rewritten to
/// [`FwdEntry::snat`]:[`FwdEntry::snat_port`]. The entry's flag, not the
/// listener's, decides on the established path (a listener changing mode
/// keeps its old flows as they were).
pub const FWD_F_FULLNAT: u32 = 2;

/// How far past the recorded sequence number of its sender a RST may be
/// and still mark its flow closing (host-order serial arithmetic). A blind
/// RST with a random sequence number is accepted with odds 2^24 / 2^32
/// (1 in 256); a legitimate RST lies within the data sent since the
/// recorded number, which is kept within half this window of the latest.
pub const RST_WINDOW: u32 = 1 << 24;

/// Value of [`MAP_CT_REV`], and of [`MAP_REV_FALLBACK`] (the one listener
/// that maps to a backend endpoint).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevEntry {
    /// VIP address to restore as the source.
    pub vip: [u32; 4],
    /// VIP port to restore as the source port (network order).
    pub vport: u16,
    /// `REV_F_*` flags.
    pub flags: u16,
    /// Real id (for counters).
    pub real: u32,
    /// Listener id (for counters).
    pub listener: u32,
    /// A recent TCP sequence number of the backend (host order): its
    /// SYN-ACK's while embryonic (with [`REV_F_SYNACK`]), then refreshed as
    /// [`FwdEntry::seq`] is.
    pub seq: u32,
    /// Ingress ifindex from which replies of this flow were verified to be
    /// routed (the FIB check against forged replies); 0 until verified.
    pub ingress: u32,
    /// Client port to restore as the destination port (network order;
    /// [`REV_F_FULLNAT`] entries only).
    pub cport: u16,
    /// Explicit padding.
    pub _pad: u16,
    /// Route to the client (tracked entries only).
    pub route: RouteCache,
    /// Client address to restore as the destination (network order;
    /// [`REV_F_FULLNAT`] entries only: a DNAT reply is already addressed
    /// to the client).
    pub client: [u32; 4],
}

/// Reverse-entry flag: the backend's SYN-ACK was seen; `seq` holds its ISN.
pub const REV_F_SYNACK: u16 = 2;
/// Reverse-entry flag: an embryonic entry created by a mid-flow packet.
pub const REV_F_MIDFLOW: u16 = 4;
/// Fallback flag: the backend endpoint serves more than one VIP:port, so an
/// untracked reply from it cannot be translated (it is dropped and counted).
pub const REV_F_AMBIGUOUS: u16 = 8;
/// Reverse-entry flag: a full-NAT flow. The key is `node → snat addr:port`;
/// replies get their destination restored to [`RevEntry::client`]:
/// [`RevEntry::cport`] as well as their source to the VIP.
pub const REV_F_FULLNAT: u16 = 16;

/// Value of [`MAP_IFACE_MACS`]: the destination MACs one interface accepts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceMacs {
    /// Accepted MACs; only the first `len` are meaningful.
    pub macs: [[u8; 6]; MAX_IFACE_MACS],
    /// Number of valid entries in `macs` (at most [`MAX_IFACE_MACS`]).
    pub len: u32,
    /// The interface this slot belongs to; 0 for an empty slot.
    pub ifindex: u32,
}

/// Key of [`MAP_REV_FALLBACK`]: a backend endpoint as the source of replies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    /// Backend address.
    pub addr: [u32; 4],
    /// Backend port (network order).
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Address family.
    pub family: u8,
}

impl EndpointKey {
    /// An IPv4 TCP endpoint (address and port in network order).
    #[inline(always)]
    pub fn tcp_v4(addr: u32, port: u16) -> Self {
        Self {
            addr: [addr, 0, 0, 0],
            port,
            proto: PROTO_TCP,
            family: FAMILY_V4,
        }
    }
}

/// Value of [`MAP_REAL_STATS`] (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealStats {
    /// Packets client → backend.
    pub fwd_packets: u64,
    /// Bytes (IP length) client → backend.
    pub fwd_bytes: u64,
    /// Packets backend → client.
    pub rev_packets: u64,
    /// Bytes (IP length) backend → client.
    pub rev_bytes: u64,
    /// Flows assigned to this real (new or rescheduled).
    pub new_flows: u64,
}

/// Value of [`MAP_LISTENER_STATS`] (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Flows assigned a backend by Maglev.
    pub new_flows: u64,
    /// Packets dropped because no backend could take them (`all_down = "drop"`).
    pub rejected: u64,
    /// Tracked flows moved off a backend that is gone or proven dead.
    pub rescheduled: u64,
    /// Explicit padding, room for one more counter.
    pub _reserved: u64,
}

impl ListenerKey {
    /// An IPv4 TCP listener key from an address and port in host order.
    pub fn tcp_v4(addr: [u8; 4], port: u16) -> Self {
        Self::tcp(core::net::IpAddr::from(addr), port)
    }
}

/// Stores an IPv4 address (octets) the way keys hold it: network order in
/// word 0 (the IPv4 case of [`crate::addr::ip_words`]).
pub fn v4_words(addr: [u8; 4]) -> [u32; 4] {
    crate::addr::ip_words(core::net::IpAddr::from(addr))
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], Copy, contain only integers and
    // have explicit padding, so every byte pattern is a valid value.
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for Listener {}
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for MaglevTable {}
    unsafe impl aya::Pod for Real {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FwdEntry {}
    unsafe impl aya::Pod for RouteCache {}
    unsafe impl aya::Pod for RevEntry {}
    unsafe impl aya::Pod for EndpointKey {}
    unsafe impl aya::Pod for RealStats {}
    unsafe impl aya::Pod for ListenerStats {}
    unsafe impl aya::Pod for IfaceMacs {}
    unsafe impl aya::Pod for crate::RealSeen {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ListenerKey>(), 20);
        assert_eq!(size_of::<Listener>(), 16);
        assert_eq!(size_of::<Real>(), 24);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<RouteCache>(), 24);
        assert_eq!(size_of::<FwdEntry>(), 72);
        assert_eq!(size_of::<RevEntry>(), 80);
        assert_eq!(size_of::<crate::SnatConfig>(), 72);
        assert_eq!(size_of::<IfaceMacs>(), 32);
        assert_eq!(size_of::<EndpointKey>(), 20);
        assert_eq!(size_of::<RealStats>(), 40);
        assert_eq!(size_of::<ListenerStats>(), 32);
        assert_eq!(size_of::<crate::RealSeen>(), 32);
        assert_eq!(size_of::<MaglevTable>(), 4 * MAGLEV_TABLE_SIZE as usize);
    }

    #[test]
    fn reverse_swaps_ends_and_is_an_involution() {
        let k = FlowKey::tcp_v4(1, 2, 3, 4);
        let r = k.reverse();
        assert_eq!((r.src[0], r.dst[0], r.sport, r.dport), (2, 1, 4, 3));
        assert_eq!((r.proto, r.family), (PROTO_TCP, FAMILY_V4));
        assert_eq!(r.reverse(), k);
        let d = k.with_dst([9, 0, 0, 0], 7);
        assert_eq!((d.src[0], d.dst[0], d.sport, d.dport), (1, 9, 3, 7));
    }

    #[test]
    fn v6_flow_keeps_its_family_through_reverse_and_endpoints() {
        let (a, b) = ([1, 2, 3, 4], [5, 6, 7, 8]);
        let k = FlowKey::tcp_v6(a, b, 10, 20);
        assert_eq!((k.family, k.proto), (FAMILY_V6, PROTO_TCP));
        let r = k.reverse();
        assert_eq!(
            (r.src, r.dst, r.sport, r.dport, r.family),
            (b, a, 20, 10, FAMILY_V6)
        );
        let d = k.dst_endpoint();
        assert_eq!(
            (d.addr, d.port, d.proto, d.family),
            (b, 20, PROTO_TCP, FAMILY_V6)
        );
        let s = k.src_endpoint();
        assert_eq!((s.addr, s.port, s.family), (a, 10, FAMILY_V6));
        // The IPv4 endpoint of a flow is the key the daemon writes.
        let v4 = FlowKey::tcp_v4(7, 9, 1, 2);
        assert_eq!(v4.dst_endpoint(), EndpointKey::tcp_v4(9, 2));
        assert_eq!(v4.src_endpoint(), EndpointKey::tcp_v4(7, 1));
    }

    #[test]
    fn v4_key_holds_network_order() {
        let k = ListenerKey::tcp_v4([198, 18, 100, 10], 6443);
        assert_eq!(k.addr[0].to_ne_bytes(), [198, 18, 100, 10]);
        assert_eq!(k.port.to_ne_bytes(), 6443u16.to_be_bytes());
    }
}
