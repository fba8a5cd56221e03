//! Address and port rewriting with incremental checksum updates (RFC 1624).
//! The arithmetic itself lives in `lb_common::checksum`, unit-tested on the host.
use core::ptr::addr_of_mut;

use lb_common::checksum::{update_u16, update_u32};

use crate::packet::{get, set, Ipv4Hdr, TcpHdr};

/// Rewrites the destination address and port (client → backend).
#[inline(always)]
pub fn rewrite_dst(ip: *mut Ipv4Hdr, tcp: *mut TcpHdr, addr: u32, port: u16) {
    // SAFETY: `ip` and `tcp` come from `ptr_at`; addr_of_mut creates no reference.
    let (daddr, dport) = unsafe { (addr_of_mut!((*ip).daddr), addr_of_mut!((*tcp).dest)) };
    rewrite(ip, tcp, daddr, dport, addr, port);
}

/// Rewrites the source address and port (backend → client, back to the VIP).
#[inline(always)]
pub fn rewrite_src(ip: *mut Ipv4Hdr, tcp: *mut TcpHdr, addr: u32, port: u16) {
    // SAFETY: as in `rewrite_dst`.
    let (saddr, sport) = unsafe { (addr_of_mut!((*ip).saddr), addr_of_mut!((*tcp).source)) };
    rewrite(ip, tcp, saddr, sport, addr, port);
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
