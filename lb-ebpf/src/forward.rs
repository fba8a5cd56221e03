//! Forwarding out of XDP with a FIB lookup: XDP_TX back out of the ingress
//! NIC, redirect to another configured NIC, or pass to the kernel when the
//! neighbour is not resolved yet (the kernel resolves it and forwards).
use core::{ffi::c_void, mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::generated::{bpf_check_mtu, bpf_fib_lookup},
    programs::XdpContext,
};
use lb_common::{Reason, RouteCache, PROTO_TCP, ROUTE_TTL_NS};

use crate::{
    maps::TX_PORTS,
    nat,
    packet::{get, ptr_at, IpHdr, IPV6_LEN},
};

const AF_INET: u8 = 2;
/// The route lookup of an IPv6 packet; the kernel answers it only where
/// IPv6 forwarding is on (`net.ipv6.conf.all.forwarding=1`), else
/// `BPF_FIB_LKUP_RET_FWD_DISABLED`, counted `no_route`.
const AF_INET6: u8 = 10;
/// Flow label and traffic class bits of the IPv6 header's first word
/// (network order), the `flowinfo` the route lookup takes.
const IPV6_FLOWINFO_MASK_BE: u32 = 0x0fff_ffffu32.to_be();

/// A route lookup's result code and filled-in parameters. The parameters
/// stay where the helper wrote them (never moved or copied: a copy would let
/// LLVM turn the zero words into a memset, which BPF cannot call).
pub struct Route {
    pub rc: u32,
    pub params: core::mem::MaybeUninit<FibParams>,
}

impl Route {
    /// A route not looked up yet.
    #[inline(always)]
    pub fn new() -> Self {
        Route {
            rc: u32::MAX,
            params: core::mem::MaybeUninit::uninit(),
        }
    }

    /// The filled-in parameters (egress ifindex, MACs, MTU).
    #[inline(always)]
    pub fn out(&self) -> &FibParams {
        // SAFETY: `lookup` initialises every byte before setting `rc`.
        unsafe { &*self.params.as_ptr() }
    }
}

/// `BPF_FIB_LOOKUP_SKIP_NEIGH`: answer without resolving the neighbour.
const FIB_SKIP_NEIGH: u32 = 1 << 2;

/// Looks up the route for a packet (header `ip`) from `src` to `dst`
/// (address words of its family, network order) arriving on the context's
/// ingress interface.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, ip: IpHdr, src: &[u32; 4], dst: &[u32; 4], route: &mut Route) {
    match ip {
        IpHdr::V4(ip) => {
            // SAFETY: `ip` comes from `ptr_at`; addr_of creates no reference.
            let (tot_len, tos) = unsafe {
                (
                    get(core::ptr::addr_of!((*ip).tot_len)),
                    get(core::ptr::addr_of!((*ip).tos)),
                )
            };
            let len = u16::from_be(tot_len);
            fib(ctx, AF_INET, Some(src), dst, len, tos as u32, 0, route);
        }
        IpHdr::V6(ip) => {
            // SAFETY: as above.
            let (first, payload) = unsafe {
                (
                    get(core::ptr::addr_of!((*ip).ver_tc_flow)),
                    get(core::ptr::addr_of!((*ip).payload_len)),
                )
            };
            // The whole packet's length, as the kernel compares it to the MTU.
            let len = u16::from_be(payload).saturating_add(IPV6_LEN as u16);
            let flowinfo = first & IPV6_FLOWINFO_MASK_BE;
            fib(ctx, AF_INET6, Some(src), dst, len, flowinfo, 0, route);
        }
    }
}

/// True when `src` (address words, IPv6 when `v6`) is routed out of the
/// interface the packet arrived on: the strict reverse-path check
/// `rp_filter` would make, which XDP runs before. A reply from a backend
/// address that arrives anywhere else was forged on another segment (or the
/// routing is asymmetric, which this gateway does not support for replies).
#[inline(always)]
pub fn routed_via_ingress(ctx: &XdpContext, v6: bool, src: &[u32; 4]) -> bool {
    let mut route = Route::new();
    let af = if v6 { AF_INET6 } else { AF_INET };
    fib(ctx, af, None, src, 0, 0, FIB_SKIP_NEIGH, &mut route);
    route.rc == BPF_FIB_LKUP_RET_SUCCESS && route.out().ifindex == ctx.ingress_ifindex() as u32
}

/// One `bpf_fib_lookup` for a TCP packet of `tot_len` bytes from `src`
/// (none: unspecified) to `dst`. Address words beyond the first are zero
/// for IPv4, so one layout serves both families: `ipv4_src` is the first
/// word of `ipv6_src`, `ipv4_dst` the first of `ipv6_dst`. `tos` is the
/// IPv4 TOS, or the IPv6 flow information.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fib(
    ctx: &XdpContext,
    af: u8,
    src: Option<&[u32; 4]>,
    dst: &[u32; 4],
    tot_len: u16,
    tos: u32,
    flags: u32,
    route: &mut Route,
) {
    // Every byte of the 64-byte struct is written explicitly, as sixteen
    // little-endian words, with volatile stores: LLVM would otherwise merge
    // the zero stores into a memset, which BPF cannot call, and the helper
    // must not read uninitialised stack.
    let params = route.params.as_mut_ptr();
    let words = params as *mut u32;
    let w: [u32; 4] = [
        af as u32 | (PROTO_TCP as u32) << 8, // family, l4_protocol, sport = 0
        (tot_len as u32) << 16,              // dport = 0, tot_len
        ctx.ingress_ifindex() as u32,        // ifindex
        tos,                                 // tos / flowinfo
    ];
    #[allow(clippy::needless_range_loop)]
    for i in 0..16 {
        let v = match i {
            0..=3 => w[i],
            4..=7 => match src {
                Some(s) => s[i - 4], // ipv4_src / ipv6_src
                None => 0,
            },
            8..=11 => dst[i - 8], // ipv4_dst / ipv6_dst
            _ => 0,
        };
        // SAFETY: `i` < 16 and FibParams is 64 bytes, 4-byte aligned.
        unsafe { words.add(i).write_volatile(v) };
    }
    // SAFETY: the helper reads and writes `params` within the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut c_void,
            params,
            size_of::<FibParams>() as i32,
            flags,
        )
    } as u32;
    route.rc = rc;
}

/// True when the route lookup did not forward: the destination is this
/// host itself, or nothing routes it at all (the helper answers both the
/// same way); [`not_forwarded`] tells them apart.
#[inline(always)]
pub fn is_local(route: &Route) -> bool {
    route.rc == BPF_FIB_LKUP_RET_NOT_FWDED
}

/// `BPF_FIB_LOOKUP_SRC`: fill in the source address this host would use
/// toward the destination.
const FIB_SRC: u32 = 1 << 4;

/// Why an untouched reply (header `ip`) whose route lookup gave "not
/// forwarded" is passed: it is addressed to this host (`local_reply`: a
/// health check's reply), or nothing routes its destination (`no_route`:
/// a SYN-ACK to a spoofed, unroutable client). The helper says "not
/// forwarded" for both. A reply to this host's own connection is addressed
/// to the source address this host uses toward the reply's sender (what a
/// health check connects from), which the route lookup toward the sender
/// gives (`BPF_FIB_LOOKUP_SRC`). A reply to another local address (one the
/// health checks do not use) counts as `no_route`; only the counter
/// differs: the packet is passed either way.
/// `route` (the failed lookup's, reused: the program's call chain shares
/// 512 bytes of stack) is overwritten.
#[inline(always)]
pub fn not_forwarded(ctx: &XdpContext, ip: IpHdr, route: &mut Route) -> Reason {
    let (af, src) = match ip {
        // SAFETY: `h` comes from `ptr_at`; addr_of creates no reference.
        IpHdr::V4(h) => (
            AF_INET,
            [get(unsafe { core::ptr::addr_of!((*h).saddr) }), 0, 0, 0],
        ),
        // SAFETY: as above.
        IpHdr::V6(h) => (AF_INET6, get(unsafe { core::ptr::addr_of!((*h).saddr) })),
    };
    fib(ctx, af, None, &src, 0, 0, FIB_SRC | FIB_SKIP_NEIGH, route);
    if route.rc != BPF_FIB_LKUP_RET_SUCCESS {
        return Reason::PassNoRoute;
    }
    // SAFETY: the helper filled in the source address.
    let own = unsafe { &route.out().__bindgen_anon_3.ipv6_src };
    let is_own = match ip {
        // SAFETY: as above.
        IpHdr::V4(h) => own[0] == get(unsafe { core::ptr::addr_of!((*h).daddr) }),
        // SAFETY: as above.
        IpHdr::V6(h) => *own == get(unsafe { core::ptr::addr_of!((*h).daddr) }),
    };
    if is_own {
        Reason::PassLocal
    } else {
        Reason::PassNoRoute
    }
}

/// The route as a cache entry for conntrack, when the lookup succeeded.
#[inline(always)]
pub fn to_cache(route: &Route, now: u64) -> Option<RouteCache> {
    if route.rc != BPF_FIB_LKUP_RET_SUCCESS {
        return None;
    }
    let out = route.out();
    Some(RouteCache {
        at_ns: now,
        ifindex: out.ifindex,
        dmac: out.dmac,
        smac: out.smac,
    })
}

/// A cached route still fresh enough to use.
#[inline(always)]
pub fn fresh(cache: &RouteCache, now: u64) -> bool {
    cache.ifindex != 0 && now.wrapping_sub(cache.at_ns) < ROUTE_TTL_NS
}

/// Sends an already rewritten packet of a tracked flow: along the route
/// cached in its conntrack entry while fresh, else after a FIB lookup from
/// `src` to `dst` whose result refreshes the cache.
#[inline(always)]
pub fn send_cached(
    ctx: &XdpContext,
    ip: IpHdr,
    src: &[u32; 4],
    dst: &[u32; 4],
    cache: *mut RouteCache,
    now: u64,
) -> Result<u32, Reason> {
    // SAFETY: `cache` points into a live conntrack map value.
    let c = unsafe { *cache };
    if fresh(&c, now) {
        return deliver(ctx, ip, c.ifindex, &c.dmac, &c.smac);
    }
    let mut route = Route::new();
    lookup(ctx, ip, src, dst, &mut route);
    if let Some(n) = to_cache(&route, now) {
        // SAFETY: as above; a racing writer stores an equally valid route.
        unsafe { *cache = n };
    }
    send(ctx, ip, &route)
}

/// Sends an already rewritten packet along `route`.
#[inline(always)]
pub fn send(ctx: &XdpContext, ip: IpHdr, route: &Route) -> Result<u32, Reason> {
    match route.rc {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NO_NEIGH => return Err(Reason::PassNoNeigh),
        // A translated packet of a balanced flow: its destination (a
        // client, a node) is nothing this host routes. (Only an untouched
        // reply can be the gateway's own: `reply::fallback`.)
        BPF_FIB_LKUP_RET_NOT_FWDED => return Err(Reason::PassNoRoute),
        // The caller answers it (`too_big`) or passes it.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => return Err(Reason::PassTooBig),
        _ => return Err(Reason::PassNoRoute),
    }
    let out = route.out();
    deliver(ctx, ip, out.ifindex, &out.dmac, &out.smac)
}

/// Decrements the TTL (hop limit), writes the MACs and transmits: XDP_TX
/// when the egress is the ingress NIC, a devmap redirect otherwise. A
/// packet too big for the egress interface's MTU is refused first
/// (`PassTooBig`, unmodified by this function): a cached route skips the
/// route lookup's MTU check, and a redirect into a smaller MTU is dropped
/// by the kernel without a word.
#[inline(always)]
pub fn deliver(
    ctx: &XdpContext,
    ip: IpHdr,
    ifindex: u32,
    dmac: &[u8; 6],
    smac: &[u8; 6],
) -> Result<u32, Reason> {
    if !fits_mtu(ctx, ip, ifindex) {
        return Err(Reason::PassTooBig);
    }
    match ip {
        IpHdr::V4(ip) => {
            // SAFETY: `ip` comes from `ptr_at`.
            if get(unsafe { addr_of_mut!((*ip).ttl) }) <= 1 {
                return Err(Reason::DropTtl);
            }
            nat::decrement_ttl(ip);
        }
        IpHdr::V6(ip) => {
            // Callers check the hop limit before rewriting: this is the
            // last line, and the kernel answers with ICMPv6.
            // SAFETY: `ip` comes from `ptr_at`.
            if get(unsafe { addr_of_mut!((*ip).hop_limit) }) <= 1 {
                return Err(Reason::PassHopLimit);
            }
            nat::decrement_hop_limit(ip);
        }
    }

    let macs: *mut u8 = ptr_at::<[u8; 12]>(ctx, 0).ok_or(Reason::PassTruncated)? as *mut u8;
    for i in 0..6 {
        // SAFETY: `macs` covers 12 bytes (checked by `ptr_at`). Volatile byte
        // stores: LLVM would otherwise emit a memmove, which BPF cannot call.
        unsafe {
            macs.add(i).write_volatile(dmac[i]);
            macs.add(6 + i).write_volatile(smac[i]);
        }
    }
    if ifindex == ctx.ingress_ifindex() as u32 {
        return Ok(xdp_action::XDP_TX);
    }
    TX_PORTS
        .redirect(ifindex, 0)
        .map_err(|_| Reason::PassNoTxPort)
}

/// Packets up to this length (IPv4: the 576 bytes every IPv4 host accepts;
/// IPv6: its 1280-byte minimum MTU) skip the MTU check, so acknowledgements
/// and small requests cost no helper call. (An IPv4 link with an MTU below
/// 576 is not checked.)
const MTU_CHECK_V4_ABOVE: u16 = 576;
const MTU_CHECK_V6_ABOVE: u16 = 1280;

/// True unless the packet (header `ip`) is longer than interface
/// `ifindex`'s MTU, read by `bpf_check_mtu` at every call: an MTU change
/// applies to the next packet. A failing helper (no such interface) lets
/// the packet go on as before.
#[inline(always)]
fn fits_mtu(ctx: &XdpContext, ip: IpHdr, ifindex: u32) -> bool {
    let len = l3_len(ip);
    let floor = match ip {
        IpHdr::V4(_) => MTU_CHECK_V4_ABOVE,
        IpHdr::V6(_) => MTU_CHECK_V6_ABOVE,
    };
    if len <= floor {
        return true;
    }
    let mut mtu_len = len as u32;
    // SAFETY: `mtu_len` is a live local the helper reads and writes.
    let rc = unsafe { bpf_check_mtu(ctx.ctx as *mut c_void, ifindex, &mut mtu_len, 0, 0) };
    rc != BPF_MTU_CHK_RET_FRAG_NEEDED
}

/// `BPF_MTU_CHK_RET_FRAG_NEEDED`.
const BPF_MTU_CHK_RET_FRAG_NEEDED: i64 = 1;

/// The network-layer length of the packet whose header is `ip`.
#[inline(always)]
pub fn l3_len(ip: IpHdr) -> u16 {
    match ip {
        // SAFETY: `ip` comes from `ptr_at`; addr_of creates no reference.
        IpHdr::V4(ip) => u16::from_be(get(unsafe { core::ptr::addr_of!((*ip).tot_len) })),
        IpHdr::V6(ip) => {
            // SAFETY: as above.
            let payload = get(unsafe { core::ptr::addr_of!((*ip).payload_len) });
            u16::from_be(payload).saturating_add(IPV6_LEN as u16)
        }
    }
}

/// The MTU toward `dst` for a packet of `len` bytes that does not fit (what
/// an ICMP error about it reports): the route lookup's (route or device
/// MTU), else the egress device's. `None` when there is no route.
#[inline(always)]
pub fn path_mtu(
    ctx: &XdpContext,
    v6: bool,
    src: &[u32; 4],
    dst: &[u32; 4],
    len: u16,
) -> Option<u32> {
    let mut route = Route::new();
    let af = if v6 { AF_INET6 } else { AF_INET };
    fib(ctx, af, Some(src), dst, len, 0, FIB_SKIP_NEIGH, &mut route);
    let out = route.out();
    match route.rc {
        // SAFETY: the helper wrote the union's MTU member.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Some(unsafe { out.__bindgen_anon_1.mtu_result } as u32),
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => {
            let mut mtu = len as u32;
            // SAFETY: `mtu` is a live local the helper reads and writes.
            let rc = unsafe { bpf_check_mtu(ctx.ctx as *mut c_void, out.ifindex, &mut mtu, 0, 0) };
            (rc == BPF_MTU_CHK_RET_FRAG_NEEDED).then_some(mtu)
        }
        _ => None,
    }
}
