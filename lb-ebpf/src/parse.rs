//! One parsed TCP packet of either family, so the rest of the program
//! passes a single value (with its flow tuple) instead of positional
//! scalars, and the validation rules for packets aimed at a VIP.
use core::{
    mem::MaybeUninit,
    ptr::{addr_of, addr_of_mut},
};

use aya_ebpf::programs::XdpContext;
use lb_common::{checksum::fold, FlowKey, Reason};

use crate::packet::{get, ptr_at, IpHdr, Ipv4Hdr, Ipv6Hdr, TcpHdr, ETH_LEN, IPV6_LEN};

/// A TCP packet (IPv4 or IPv6) whose headers are in bounds. The family is
/// `flow.family`; `ip` points at the IPv4 or IPv6 header accordingly.
pub struct TcpPacket {
    /// The network header (see [`TcpPacket::hdr`]).
    pub ip: *mut u8,
    /// The TCP header.
    pub tcp: *mut TcpHdr,
    /// The flow as it arrives (source → destination), with its family.
    pub flow: FlowKey,
    /// TCP flag byte.
    pub flags: u8,
    /// Sequence number (host order).
    pub seq: u32,
    /// Acknowledgement number (host order).
    pub ack: u32,
    /// Network headers' length in bytes: the IPv4 header with options, or
    /// the IPv6 header with its extension headers (u16 keeps the parsed
    /// packet small: the program's call chain shares 512 bytes of stack).
    pub ihl: u16,
    /// IP packet length in bytes (IPv4 total length; IPv6 40 + payload length).
    pub len: u16,
    /// TTL or hop limit.
    pub ttl: u8,
    /// TCP data offset in bytes.
    pub doff: u16,
}

impl TcpPacket {
    /// Writes every field but the header pointers of an IPv4 packet into
    /// `p` (the caller's slot): header at `ip` (`ihl` bytes), TCP at
    /// `tcp`. Returns the IP total length.
    #[inline(always)]
    pub fn fill_v4(p: *mut TcpPacket, ip: *mut Ipv4Hdr, tcp: *mut TcpHdr, ihl: usize) -> u16 {
        // SAFETY: `ip` and `tcp` come from `ptr_at`, `p` is the caller's
        // slot; addr_of(_mut) creates no reference.
        unsafe {
            let off_flags = u16::from_be(get(addr_of!((*tcp).off_flags)));
            let len = u16::from_be(get(addr_of!((*ip).tot_len)));
            addr_of_mut!((*p).flow).write(FlowKey::tcp_v4(
                get(addr_of!((*ip).saddr)),
                get(addr_of!((*ip).daddr)),
                get(addr_of!((*tcp).source)),
                get(addr_of!((*tcp).dest)),
            ));
            addr_of_mut!((*p).flags).write(off_flags as u8);
            addr_of_mut!((*p).seq).write(u32::from_be(get(addr_of!((*tcp).seq))));
            addr_of_mut!((*p).ack).write(u32::from_be(get(addr_of!((*tcp).ack_seq))));
            addr_of_mut!((*p).ihl).write(ihl as u16);
            addr_of_mut!((*p).len).write(len);
            addr_of_mut!((*p).ttl).write(get(addr_of!((*ip).ttl)));
            addr_of_mut!((*p).doff).write((off_flags >> 12) * 4);
            len
        }
    }

    /// Writes every field but `flow` and the header pointers of an IPv6
    /// packet into `p`: header at `ip`, TCP at `tcp`, `hdrs` bytes of IPv6
    /// header and extension headers before it. Returns the packet length.
    #[inline(always)]
    pub fn fill_v6(p: *mut TcpPacket, ip: *mut Ipv6Hdr, tcp: *mut TcpHdr, hdrs: usize) -> u16 {
        // SAFETY: as in `fill_v4`.
        unsafe {
            let off_flags = u16::from_be(get(addr_of!((*tcp).off_flags)));
            let payload = u16::from_be(get(addr_of!((*ip).payload_len)));
            // A jumbogram (payload length 0) reads as 40: not well formed.
            let len = payload.saturating_add(IPV6_LEN as u16);
            addr_of_mut!((*p).flags).write(off_flags as u8);
            addr_of_mut!((*p).seq).write(u32::from_be(get(addr_of!((*tcp).seq))));
            addr_of_mut!((*p).ack).write(u32::from_be(get(addr_of!((*tcp).ack_seq))));
            addr_of_mut!((*p).ihl).write(hdrs as u16);
            addr_of_mut!((*p).len).write(len);
            addr_of_mut!((*p).ttl).write(get(addr_of!((*ip).hop_limit)));
            addr_of_mut!((*p).doff).write((off_flags >> 12) * 4);
            len
        }
    }

    /// The network header, of the family the code path handles: each
    /// family has its own copy of the flow logic (`V6` a const generic), so
    /// the verifier never walks IPv6 header accesses with an IPv4 packet's
    /// bounds (it cannot tell the family from the byte in `flow`).
    #[inline(always)]
    pub fn hdr<const V6: bool>(&self) -> IpHdr {
        if V6 {
            IpHdr::V6(self.ip as *mut Ipv6Hdr)
        } else {
            IpHdr::V4(self.ip as *mut Ipv4Hdr)
        }
    }

    /// Length of the network header without options or extension headers.
    #[inline(always)]
    pub fn base_len<const V6: bool>() -> u16 {
        if V6 {
            IPV6_LEN as u16
        } else {
            20
        }
    }

    /// Why a packet whose TTL or hop limit would expire is not forwarded:
    /// IPv4 drops it (as it always has); IPv6 hands it to the kernel, which
    /// answers with ICMPv6 time exceeded.
    #[inline(always)]
    pub fn ttl_reason<const V6: bool>() -> Reason {
        if V6 {
            Reason::PassHopLimit
        } else {
            Reason::DropTtl
        }
    }

    /// The TCP data offset covers the fixed header and stays inside the
    /// IP packet (the caller checked the IP total length against the frame).
    #[inline(always)]
    pub fn doff_valid(&self) -> bool {
        self.doff >= 20 && self.ihl as usize + self.doff as usize <= self.len as usize
    }
}

/// What a classifier subprogram (`ipv4::classify`, `ipv6::classify`)
/// returns in a `Verdict`'s `Ok`: the TCP header's offset in the low 16
/// bits, and these flags. The classifiers fill every scalar field of the
/// caller's packet slot; the caller attaches the header pointers
/// ([`attach`]). Classifying in subprograms keeps the header reads'
/// temporaries off the entry frame, on which every later subprogram's
/// frame stacks (512 bytes in all).
pub const CLASS_OFF_MASK: u32 = 0xffff;
/// The packet's lengths are consistent: the IP length covers the network
/// and TCP headers and fits in the frame.
pub const CLASS_WELL_FORMED: u32 = 1 << 16;
/// IPv4 ICMP (not a fragment): the low bits are the IP header length.
pub const CLASS_ICMP: u32 = 1 << 17;
/// Highest TCP header offset a classifier returns: IPv6 with four
/// extension headers of at most 2 KiB each. Stated so [`attach`] can bound
/// the offset for the verifier.
pub const MAX_TCP_OFFSET: usize = ETH_LEN + IPV6_LEN + 4 * 2048;

/// Completes a classified packet in `slot`: points it at the network
/// header `ip` and at the TCP header at `off`. `Err` is impossible at run
/// time (the classifier checked the same bounds); the verifier needs the
/// checks again here, in the frame that keeps the pointers.
#[inline(always)]
pub fn attach<'a>(
    ctx: &XdpContext,
    slot: &'a mut MaybeUninit<TcpPacket>,
    ip: *mut u8,
    off: u32,
) -> Result<&'a TcpPacket, Reason> {
    let off = (off & CLASS_OFF_MASK) as usize;
    if off > MAX_TCP_OFFSET {
        return Err(Reason::PassTruncated);
    }
    let tcp: *mut TcpHdr = ptr_at(ctx, off).ok_or(Reason::PassTruncated)?;
    let p = slot.as_mut_ptr();
    // SAFETY: `p` is the slot, every other field of which the classifier
    // wrote; addr_of_mut creates no reference.
    unsafe {
        addr_of_mut!((*p).ip).write(ip);
        addr_of_mut!((*p).tcp).write(tcp);
        Ok(slot.assume_init_ref())
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
