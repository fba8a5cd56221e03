//! One parsed IPv4 TCP packet, so the rest of the program passes a single
//! value (with its flow tuple) instead of positional scalars, and the
//! validation rules for packets aimed at a VIP.
use core::ptr::addr_of;

use aya_ebpf::programs::XdpContext;
use lb_common::{checksum::fold, FlowKey};

use crate::packet::{get, ptr_at, Ipv4Hdr, TcpHdr, ETH_LEN};

/// An IPv4 TCP packet whose headers are in bounds.
pub struct TcpPacket {
    /// The IP header.
    pub ip: *mut Ipv4Hdr,
    /// The TCP header.
    pub tcp: *mut TcpHdr,
    /// The flow as it arrives (source → destination); family-aware, so an
    /// IPv6 parser can produce the same value.
    pub flow: FlowKey,
    /// TCP flag byte.
    pub flags: u8,
    /// Sequence number (host order).
    pub seq: u32,
    /// Acknowledgement number (host order).
    pub ack: u32,
    /// IP header length in bytes (u16 keeps the parsed packet small: the
    /// program's call chain shares 512 bytes of stack).
    pub ihl: u16,
    /// IP total length in bytes.
    pub len: u16,
    /// TTL.
    pub ttl: u8,
    /// TCP data offset in bytes.
    pub doff: u16,
}

impl TcpPacket {
    /// Reads the fields of the headers at `ip`/`tcp` (both from `ptr_at`).
    #[inline(always)]
    pub fn read(ip: *mut Ipv4Hdr, tcp: *mut TcpHdr, ihl: usize) -> Self {
        // SAFETY: both pointers come from `ptr_at`; addr_of creates no reference.
        unsafe {
            let off_flags = u16::from_be(get(addr_of!((*tcp).off_flags)));
            TcpPacket {
                ip,
                tcp,
                flow: FlowKey::tcp_v4(
                    get(addr_of!((*ip).saddr)),
                    get(addr_of!((*ip).daddr)),
                    get(addr_of!((*tcp).source)),
                    get(addr_of!((*tcp).dest)),
                ),
                flags: off_flags as u8,
                seq: u32::from_be(get(addr_of!((*tcp).seq))),
                ack: u32::from_be(get(addr_of!((*tcp).ack_seq))),
                ihl: ihl as u16,
                len: u16::from_be(get(addr_of!((*ip).tot_len))),
                ttl: get(addr_of!((*ip).ttl)),
                doff: (off_flags >> 12) * 4,
            }
        }
    }

    /// Source address (IPv4, network order).
    #[inline(always)]
    pub fn saddr(&self) -> u32 {
        self.flow.src[0]
    }

    /// Destination address (IPv4, network order).
    #[inline(always)]
    pub fn daddr(&self) -> u32 {
        self.flow.dst[0]
    }

    /// The TCP data offset covers the fixed header and stays inside the
    /// IP packet (the caller checked the IP total length against the frame).
    #[inline(always)]
    pub fn doff_valid(&self) -> bool {
        self.doff >= 20 && self.ihl as usize + self.doff as usize <= self.len as usize
    }
}

/// Verifies the IPv4 header checksum of the packet in `ctx` (header of
/// `ihl` bytes, 20..=60). Ten unrolled additions for a header without
/// options; options add one bounded loop.
#[inline(always)]
pub fn ipv4_checksum_ok(ctx: &XdpContext, ihl: usize) -> bool {
    let Some(words) = ptr_at::<[u16; 10]>(ctx, ETH_LEN) else {
        return false;
    };
    let w = get(words);
    let mut sum: u32 = 0;
    for v in w {
        sum += v as u32;
    }
    for i in 0..20usize {
        if 20 + i * 2 >= ihl {
            break;
        }
        match ptr_at::<u16>(ctx, ETH_LEN + 20 + i * 2) {
            Some(p) => sum += get(p) as u32,
            None => return false,
        }
    }
    // Summing words in the machine's byte order gives a byte-swapped sum;
    // "all ones" is the same value either way.
    fold(sum) == 0xffff
}
