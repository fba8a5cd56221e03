//! Forwarding out of XDP with a FIB lookup: XDP_TX back out of the ingress
//! NIC, redirect to another configured NIC, or pass to the kernel when the
//! neighbour is not resolved yet (the kernel resolves it and forwards).
use core::{ffi::c_void, mem::size_of, ptr::addr_of_mut};

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
    },
    helpers::generated::bpf_fib_lookup,
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

    #[inline(always)]
    fn out(&self) -> &FibParams {
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

/// True when the route says the destination is this host itself.
#[inline(always)]
pub fn is_local(route: &Route) -> bool {
    route.rc == BPF_FIB_LKUP_RET_NOT_FWDED
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
        BPF_FIB_LKUP_RET_NOT_FWDED => return Err(Reason::PassLocal),
        _ => return Err(Reason::PassNoRoute),
    }
    let out = route.out();
    deliver(ctx, ip, out.ifindex, &out.dmac, &out.smac)
}

/// Decrements the TTL (hop limit), writes the MACs and transmits: XDP_TX
/// when the egress is the ingress NIC, a devmap redirect otherwise.
#[inline(always)]
pub fn deliver(
    ctx: &XdpContext,
    ip: IpHdr,
    ifindex: u32,
    dmac: &[u8; 6],
    smac: &[u8; 6],
) -> Result<u32, Reason> {
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
