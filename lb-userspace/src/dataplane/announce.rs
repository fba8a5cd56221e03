//! Telling the neighbours that an interface's MAC address changed.
//!
//! When a gateway interface gets a new MAC (a bond failing over with
//! `fail_over_mac`, a bridge following its ports, a replaced NIC), its
//! neighbours keep sending to the old one: IPv4 hosts until their ARP entry
//! goes stale, IPv6 hosts for as long as TCP's forward-progress
//! confirmations keep their neighbour entry reachable, which on a busy
//! client is forever. The data path accepts the old MAC only for a grace
//! period (`daemon::links`), so without an announcement IPv6 through the
//! VIP went dark 60 s after the change (the chaos run, docs/chaos.md).
//!
//! The kernel announces a new MAC itself only where `arp_notify` /
//! `ndisc_notify` are set (both off by default), so the daemon does it on
//! every change it sees: an unsolicited neighbour advertisement with the
//! override flag to all-nodes for every usable IPv6 address of the
//! interface (RFC 4861 7.2.6), and a gratuitous ARP request for every
//! IPv4 address. Both are best effort: a failure is returned for the log,
//! never fatal.
use std::ffi::CString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

/// ICMPv6 type of a neighbour advertisement.
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// NA flags (first byte after the checksum): router.
const NA_ROUTER: u8 = 0x80;
/// NA flags: override (replace the cached link-layer address).
const NA_OVERRIDE: u8 = 0x20;
/// NDP option: target link-layer address.
const OPT_TARGET_LLADDR: u8 = 2;
/// `/proc/net/if_inet6` flags that make an address unusable to announce:
/// tentative (DAD running) and DAD failed.
const IFA_F_UNUSABLE: u32 = 0x40 | 0x08;

/// What one announcement round sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Announced {
    /// IPv6 addresses advertised.
    pub ipv6: Vec<Ipv6Addr>,
    /// IPv4 addresses announced by gratuitous ARP.
    pub ipv4: Vec<Ipv4Addr>,
}

/// Announces `mac` as the link-layer address of every usable address of
/// interface `name` (index `ifindex`). Returns what was sent; the error
/// names the first send that failed (the others are still tried).
pub fn announce(name: &str, ifindex: u32, mac: [u8; 6]) -> (Announced, Option<io::Error>) {
    let mut out = Announced::default();
    let mut first_err = None;
    let router = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{name}/forwarding"))
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    match std::fs::read_to_string("/proc/net/if_inet6") {
        Ok(text) => {
            for addr in ipv6_addresses(&text, name) {
                match send_na(name, ifindex, addr, mac, router) {
                    Ok(()) => out.ipv6.push(addr),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        // No IPv6 on this host: nothing to advertise.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            first_err.get_or_insert(e);
        }
    }
    match ipv4_addresses(name) {
        Ok(addrs) => {
            for addr in addrs {
                match send_garp(ifindex, addr, mac) {
                    Ok(()) => out.ipv4.push(addr),
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        Err(e) => {
            first_err.get_or_insert(e);
        }
    }
    (out, first_err)
}

/// The usable IPv6 addresses of interface `name` in the text of
/// `/proc/net/if_inet6` (`addr ifindex prefixlen scope flags name`).
pub fn ipv6_addresses(text: &str, name: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 6 || f[5] != name {
                return None;
            }
            let flags = u32::from_str_radix(f[4], 16).ok()?;
            if flags & IFA_F_UNUSABLE != 0 || f[0].len() != 32 {
                return None;
            }
            let bits = u128::from_str_radix(f[0], 16).ok()?;
            Some(Ipv6Addr::from(bits))
        })
        .collect()
}

/// The ICMPv6 body of an unsolicited neighbour advertisement for `target`
/// at `mac` (the kernel fills in the checksum of a raw ICMPv6 socket).
pub fn na_body(target: Ipv6Addr, mac: [u8; 6], router: bool) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = NEIGHBOUR_ADVERTISEMENT;
    b[4] = NA_OVERRIDE | if router { NA_ROUTER } else { 0 };
    b[8..24].copy_from_slice(&target.octets());
    b[24] = OPT_TARGET_LLADDR;
    b[25] = 1; // length in units of 8 bytes
    b[26..32].copy_from_slice(&mac);
    b
}

/// A gratuitous ARP request frame (Ethernet included) announcing `ip` at
/// `mac`: sender and target protocol address both `ip`, broadcast.
pub fn garp_frame(ip: Ipv4Addr, mac: [u8; 6]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address stays zero.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// An owned socket descriptor, closed on drop.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned and closed once.
        unsafe { libc::close(self.0) };
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn setsockopt_int(fd: &Fd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid descriptor and a pointer to a live c_int of the given size.
    check(unsafe {
        libc::setsockopt(
            fd.0,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn send_na(
    name: &str,
    ifindex: u32,
    target: Ipv6Addr,
    mac: [u8; 6],
    router: bool,
) -> io::Result<()> {
    // SAFETY: plain socket creation; the result is checked.
    let fd = Fd(check(unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMPV6,
        )
    })?);
    let dev = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid descriptor and a NUL-terminated name of the given length.
    check(unsafe {
        libc::setsockopt(
            fd.0,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            dev.as_bytes_with_nul().len() as libc::socklen_t,
        )
    })?;
    // Neighbour discovery messages must carry hop limit 255 (RFC 4861 7.1.2).
    setsockopt_int(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 255)?;
    setsockopt_int(
        &fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_MULTICAST_IF,
        ifindex as libc::c_int,
    )?;
    let body = na_body(target, mac, router);
    // SAFETY: zeroed sockaddr_in6 is a valid value; fields set below.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
    sa.sin6_scope_id = ifindex;
    // SAFETY: a valid descriptor, a live buffer and address of the given sizes.
    check(unsafe {
        libc::sendto(
            fd.0,
            body.as_ptr().cast(),
            body.len(),
            0,
            (&sa as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ) as libc::c_int
    })
    .map(drop)
}

fn send_garp(ifindex: u32, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket creation; the result is checked.
    let fd = Fd(check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            proto as libc::c_int,
        )
    })?);
    let frame = garp_frame(ip, mac);
    // SAFETY: zeroed sockaddr_ll is a valid value; fields set below.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = ifindex as libc::c_int;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: a valid descriptor, a live frame and address of the given sizes.
    check(unsafe {
        libc::sendto(
            fd.0,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        ) as libc::c_int
    })
    .map(drop)
}

/// The IPv4 addresses of interface `name` (`getifaddrs`).
fn ipv4_addresses(name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` receives a list freed below.
    check(unsafe { libc::getifaddrs(&mut head) })?;
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, alive until freed.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: a valid sockaddr; its family says which type it is.
        if ifname.to_bytes() != name.as_bytes()
            || i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET
        {
            continue;
        }
        // SAFETY: the family is AF_INET, so the address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        out.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn if_inet6_lines_of_the_interface_that_are_usable() {
        let text = "\
fd000198001800010000000000000001 05 40 00 80     gwc
fe800000000000000000000000000001 05 40 20 80     gwc
fd000198001800010000000000000002 05 40 00 40     gwc
fd000198001800010000000000000003 05 40 00 08     gwc
fd000198001800020000000000000001 06 40 00 80     gwb
00000000000000000000000000000001 01 80 10 80       lo
";
        assert_eq!(
            ipv6_addresses(text, "gwc"),
            vec![
                "fd00:198:18:1::1".parse::<Ipv6Addr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert!(ipv6_addresses(text, "eth9").is_empty());
        assert!(ipv6_addresses("garbage line\n", "gwc").is_empty());
    }

    #[test]
    fn the_advertisement_overrides_and_carries_the_new_mac() {
        let t: Ipv6Addr = "fd00:198:18:1::1".parse().unwrap();
        let b = na_body(t, MAC, true);
        assert_eq!(&b[..8], &[136, 0, 0, 0, 0xa0, 0, 0, 0]);
        assert_eq!(&b[8..24], &t.octets());
        assert_eq!(&b[24..], &[2, 1, 0x02, 0x00, 0x5e, 0x10, 0x20, 0x30]);
        assert_eq!(
            na_body(t, MAC, false)[4],
            0x20,
            "not a router: override only"
        );
    }

    #[test]
    fn the_gratuitous_arp_names_the_address_twice() {
        let f = garp_frame(Ipv4Addr::new(198, 18, 1, 1), MAC);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..22], &[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[198, 18, 1, 1]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[198, 18, 1, 1]);
    }
}
