//! Ethernet/IPv4/TCP frames with correct checksums, for BPF_PROG_TEST_RUN.

use std::net::Ipv4Addr;

use lb_common::checksum::{checksum, pseudo_header_v4};

/// TCP flag FIN.
pub const FIN: u8 = 0x01;
/// TCP flag SYN.
pub const SYN: u8 = 0x02;
/// TCP flag ACK.
pub const ACK: u8 = 0x10;

/// A TCP segment in an IPv4 packet in an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpFrame {
    /// Destination MAC.
    pub dmac: [u8; 6],
    /// Source MAC.
    pub smac: [u8; 6],
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP flags.
    pub flags: u8,
    /// Payload bytes.
    pub payload: usize,
}

impl TcpFrame {
    /// Renders the frame: TTL 64, DF, no options, checksums filled in.
    pub fn bytes(&self) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(20 + self.payload);
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        let ack = if self.flags & ACK != 0 {
            0x0200_0000u32
        } else {
            0
        };
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.push(5 << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&64240u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend((0..self.payload).map(|i| b'a' + (i % 26) as u8));
        let len = u16::try_from(tcp.len()).unwrap_or(u16::MAX);
        let ph = pseudo_header_v4(u32::from(self.src), u32::from(self.dst), 6, len);
        let c = checksum(&tcp, ph);
        tcp[16..18].copy_from_slice(&c.to_be_bytes());

        let total = u16::try_from(20 + tcp.len()).unwrap_or(u16::MAX);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        let c = checksum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());

        let mut f = Vec::with_capacity(14 + ip.len() + tcp.len());
        f.extend_from_slice(&self.dmac);
        f.extend_from_slice(&self.smac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp);
        f
    }
}

/// The IPv4 destination address of an Ethernet frame, if it has one.
pub fn ipv4_dst(frame: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_valid_checksums_and_fields() {
        let f = TcpFrame {
            dmac: [2, 0, 0, 0, 1, 1],
            smac: [2, 0, 0, 0, 1, 2],
            src: Ipv4Addr::new(198, 18, 1, 2),
            dst: Ipv4Addr::new(198, 18, 100, 10),
            sport: 40000,
            dport: 80,
            flags: ACK,
            payload: 7,
        }
        .bytes();
        assert_eq!(f.len(), 14 + 20 + 20 + 7);
        assert_eq!(checksum(&f[14..34], 0), 0, "IP header checksum");
        let ph = pseudo_header_v4(
            u32::from(Ipv4Addr::new(198, 18, 1, 2)),
            u32::from(Ipv4Addr::new(198, 18, 100, 10)),
            6,
            27,
        );
        assert_eq!(checksum(&f[34..], ph), 0, "TCP checksum");
        assert_eq!(&f[34..36], &40000u16.to_be_bytes());
        assert_eq!(f[47], ACK);
        assert_eq!(ipv4_dst(&f), Some(Ipv4Addr::new(198, 18, 100, 10)));
        assert_eq!(ipv4_dst(&f[..20]), None);
    }
}
