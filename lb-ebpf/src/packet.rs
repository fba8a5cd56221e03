//! Bounds-checked packet access and header layouts.
use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// EtherType of IPv4 (network order as read from the packet).
pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// EtherType of IPv6 (network order as read from the packet).
pub const ETH_P_IPV6_BE: u16 = 0x86ddu16.to_be();
/// IPv6 fixed header length.
pub const IPV6_LEN: usize = 40;
/// IPv4 flags/fragment-offset bits that mark a fragment: MF and the offset.
pub const IP_FRAG_MASK_BE: u16 = 0x3fffu16.to_be();

/// IPv4 header without options. Multi-byte fields are network order.
#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

/// IPv6 fixed header. Multi-byte fields are network order.
#[repr(C)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub ver_tc_flow: u32,
    pub payload_len: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}

/// The network header of a packet, by family: what NAT, the route lookup
/// and forwarding need to know to touch the right fields.
#[derive(Clone, Copy)]
pub enum IpHdr {
    V4(*mut Ipv4Hdr),
    V6(*mut Ipv6Hdr),
}

/// TCP header without options. Multi-byte fields are network order.
#[repr(C)]
pub struct TcpHdr {
    pub source: u16,
    pub dest: u16,
    pub seq: u32,
    pub ack_seq: u32,
    pub off_flags: u16,
    pub window: u16,
    pub check: u16,
    pub urg_ptr: u16,
}

/// Returns a pointer to a `T` at `offset` bytes into the packet, or `None`
/// when the packet is too short to hold it.
///
/// # SAFETY
/// The returned pointer is inside `[data, data_end)` for `size_of::<T>()`
/// bytes: this comparison is what the verifier needs to allow the access.
/// It may be unaligned, so callers read and write through
/// `read_unaligned`/`write_unaligned` (see [`get`] and [`set`]).
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Reads a field through a pointer obtained from [`ptr_at`].
#[inline(always)]
pub fn get<T: Copy>(p: *const T) -> T {
    // SAFETY: `p` comes from `ptr_at`, so it is in bounds; unaligned read.
    unsafe { p.read_unaligned() }
}

/// Writes a field through a pointer obtained from [`ptr_at`].
#[inline(always)]
pub fn set<T>(p: *mut T, v: T) {
    // SAFETY: `p` comes from `ptr_at`, so it is in bounds; unaligned write.
    unsafe { p.write_unaligned(v) }
}

/// ICMP header (type 3 "destination unreachable" layout). Multi-byte
/// fields are network order.
#[repr(C)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
    pub unused: u16,
    pub mtu: u16,
}

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
