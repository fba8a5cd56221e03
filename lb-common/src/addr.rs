//! Addresses of either family as the maps store them: `[u32; 4]` in network
//! byte order (IPv4 in word 0, the other words zero) plus a family tag.
//!
//! Userspace works with [`IpAddr`]; these helpers are the one place that
//! turns it into key words and back, so both families are encoded alike.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::maps::{EndpointKey, ListenerKey, VipKey, FAMILY_V4, FAMILY_V6, PROTO_TCP};

/// The family tag ([`FAMILY_V4`] or [`FAMILY_V6`]) of `ip`.
pub fn ip_family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    }
}

/// `ip` as key words: each word holds four address bytes in network order.
pub fn ip_words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// The address stored as `words` under `family`; `None` for an unknown
/// family (an unused slot, or a map written by something else).
pub fn ip_from_words(family: u8, words: [u32; 4]) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))),
        FAMILY_V6 => {
            let mut o = [0u8; 16];
            for (chunk, w) in o.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

impl ListenerKey {
    /// A TCP listener key of either family, port in host order.
    pub fn tcp(vip: IpAddr, port: u16) -> Self {
        Self {
            addr: ip_words(vip),
            port: port.to_be(),
            proto: PROTO_TCP,
            family: ip_family(vip),
        }
    }

    /// The key's VIP (`None` for an unknown family).
    pub fn ip(&self) -> Option<IpAddr> {
        ip_from_words(self.family, self.addr)
    }
}

impl EndpointKey {
    /// A TCP backend endpoint of either family, port in host order.
    pub fn tcp(addr: IpAddr, port: u16) -> Self {
        Self {
            addr: ip_words(addr),
            port: port.to_be(),
            proto: PROTO_TCP,
            family: ip_family(addr),
        }
    }
}

impl VipKey {
    /// The [`crate::MAP_VIPS`] key of `vip`. The key carries no family: an
    /// IPv4 VIP has words 1..3 zero, which among IPv6 addresses only the
    /// reserved `::/96` has (configuration refuses those as VIPs).
    pub fn of(vip: IpAddr) -> Self {
        Self {
            addr: ip_words(vip),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_in_word_zero_network_order() {
        let ip: IpAddr = "198.18.100.10".parse().unwrap();
        let w = ip_words(ip);
        assert_eq!(w[0].to_ne_bytes(), [198, 18, 100, 10]);
        assert_eq!(&w[1..], &[0, 0, 0]);
        assert_eq!(ip_from_words(FAMILY_V4, w), Some(ip));
        assert_eq!(
            ListenerKey::tcp(ip, 6443),
            ListenerKey::tcp_v4([198, 18, 100, 10], 6443)
        );
    }

    #[test]
    fn v6_words_hold_the_bytes_in_order() {
        let ip: IpAddr = "2001:db8::1:6443".parse().unwrap();
        let w = ip_words(ip);
        let bytes: [u8; 16] = core::array::from_fn(|i| w[i / 4].to_ne_bytes()[i % 4]);
        assert_eq!(
            bytes,
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x64, 0x43]
        );
        assert_eq!(ip_from_words(FAMILY_V6, w), Some(ip));
        let k = ListenerKey::tcp(ip, 6443);
        assert_eq!((k.family, k.proto), (FAMILY_V6, PROTO_TCP));
        assert_eq!(k.port.to_ne_bytes(), 6443u16.to_be_bytes());
        assert_eq!(k.ip(), Some(ip));
        let e = EndpointKey::tcp(ip, 443);
        assert_eq!((e.addr, e.family), (w, FAMILY_V6));
        assert_eq!(ip_from_words(0, w), None);
    }
}
