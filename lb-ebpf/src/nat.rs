//! Address and port rewriting with incremental checksum updates (RFC 1624).
//! The arithmetic itself lives in `lb_common::checksum`, unit-tested on the host.
//! IPv6 has no header checksum: only the TCP checksum changes, over the
//! pseudo-header's four address words.
use core::ptr::addr_of_mut;

use lb_common::checksum::{update_u16, update_u32};

use crate::packet::{get, set, IpHdr, Ipv4Hdr, Ipv6Hdr, TcpHdr};

/// Rewrites the destination address and port (client → backend). `addr`
/// is of the header's family (IPv4 in word 0).
#[inline(always)]
pub fn rewrite_dst(ip: IpHdr, tcp: *mut TcpHdr, addr: &[u32; 4], port: u16) {
    // SAFETY: `tcp` comes from `ptr_at`; addr_of_mut creates no reference.
    let dport = unsafe { addr_of_mut!((*tcp).dest) };
    match ip {
        IpHdr::V4(ip) => {
            // SAFETY: as above, for `ip`.
            let daddr = unsafe { addr_of_mut!((*ip).daddr) };
            rewrite(ip, tcp, daddr, dport, addr[0], port);
        }
        IpHdr::V6(ip) => {
            // SAFETY: as above, for `ip`.
            let daddr = unsafe { addr_of_mut!((*ip).daddr) };
            rewrite_v6(tcp, daddr, dport, addr, port);
        }
    }
}

/// Rewrites the source address and port (backend → client, back to the VIP).
#[inline(always)]
pub fn rewrite_src(ip: IpHdr, tcp: *mut TcpHdr, addr: &[u32; 4], port: u16) {
    // SAFETY: as in `rewrite_dst`.
    let sport = unsafe { addr_of_mut!((*tcp).source) };
    match ip {
        IpHdr::V4(ip) => {
            // SAFETY: as in `rewrite_dst`.
            let saddr = unsafe { addr_of_mut!((*ip).saddr) };
            rewrite(ip, tcp, saddr, sport, addr[0], port);
        }
        IpHdr::V6(ip) => {
            // SAFETY: as in `rewrite_dst`.
            let saddr = unsafe { addr_of_mut!((*ip).saddr) };
            rewrite_v6(tcp, saddr, sport, addr, port);
        }
    }
}

/// Writes a new IPv6 address and port into the given fields and fixes the
/// TCP checksum, whose pseudo-header covers the address's four words.
#[inline(always)]
fn rewrite_v6(
    tcp: *mut TcpHdr,
    addr_field: *mut [u32; 4],
    port_field: *mut u16,
    addr: &[u32; 4],
    port: u16,
) {
    // SAFETY: as in `rewrite_dst`.
    let tcp_check = unsafe { addr_of_mut!((*tcp).check) };
    let words = addr_field as *mut u32;
    let mut tc = u16::from_be(get(tcp_check));
    for (i, new) in addr.iter().enumerate() {
        // SAFETY: `i` < 4: inside the 16-byte field `ptr_at` checked.
        let w = unsafe { words.add(i) };
        tc = update_u32(tc, u32::from_be(get(w)), u32::from_be(*new));
        set(w, *new);
    }
    tc = update_u16(tc, u16::from_be(get(port_field)), u16::from_be(port));
    set(tcp_check, tc.to_be());
    set(port_field, port);
}

/// Decrements the IPv6 hop limit (no header checksum). Callers check it > 1.
#[inline(always)]
pub fn decrement_hop_limit(ip: *mut Ipv6Hdr) {
    // SAFETY: as in `rewrite_dst`.
    let hl = unsafe { addr_of_mut!((*ip).hop_limit) };
    set(hl, get(hl).wrapping_sub(1));
}

/// Writes a new address and port into the given fields and fixes the IP
/// header checksum and the TCP checksum (whose pseudo-header covers the address).
#[inline(always)]
fn rewrite(
    ip: *mut Ipv4Hdr,
    tcp: *mut TcpHdr,
    addr_field: *mut u32,
    port_field: *mut u16,
    addr: u32,
    port: u16,
) {
    // SAFETY: as in `rewrite_dst`.
    let (ip_check, tcp_check) = unsafe { (addr_of_mut!((*ip).check), addr_of_mut!((*tcp).check)) };
    let old_addr = u32::from_be(get(addr_field));
    let new_addr = u32::from_be(addr);
    let old_port = u16::from_be(get(port_field));
    let new_port = u16::from_be(port);

    let ic = update_u32(u16::from_be(get(ip_check)), old_addr, new_addr);
    set(ip_check, ic.to_be());

    let mut tc = u16::from_be(get(tcp_check));
    tc = update_u32(tc, old_addr, new_addr);
    tc = update_u16(tc, old_port, new_port);
    set(tcp_check, tc.to_be());

    set(addr_field, addr);
    set(port_field, port);
}

/// Decrements the TTL and fixes the IP header checksum. Callers check TTL > 1.
#[inline(always)]
pub fn decrement_ttl(ip: *mut Ipv4Hdr) {
    // SAFETY: as in `rewrite_dst`.
    let (ttl_f, proto_f, check_f) = unsafe {
        (
            addr_of_mut!((*ip).ttl),
            addr_of_mut!((*ip).proto),
            addr_of_mut!((*ip).check),
        )
    };
    let ttl = get(ttl_f);
    let proto = get(proto_f) as u16;
    let old = (ttl as u16) << 8 | proto;
    let new = (ttl.wrapping_sub(1) as u16) << 8 | proto;
    set(ttl_f, ttl.wrapping_sub(1));
    let c = update_u16(u16::from_be(get(check_f)), old, new);
    set(check_f, c.to_be());
}
