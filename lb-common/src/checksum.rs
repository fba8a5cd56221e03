//! Internet checksum arithmetic (RFC 1071, incremental update per RFC 1624).
//!
//! Pure functions on host-order 16/32-bit words so that the same code runs in
//! the XDP program and in host unit tests. Checksum fields are read from and
//! written to packets with `u16::from_be_bytes`/`to_be_bytes` by callers.

/// Folds a 32-bit one's-complement accumulator into 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Incrementally updates checksum `check` when a 16-bit word changes from
/// `old` to `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline(always)]
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32) + (!old as u32) + (new as u32);
    !fold(sum)
}

/// Incrementally updates checksum `check` when a 32-bit field (an IPv4
/// address, as the big-endian integer read from the packet) changes.
#[inline(always)]
pub fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check as u32)
        + (!(old >> 16) as u16 as u32)
        + (!(old as u16) as u32)
        + (new >> 16)
        + (new & 0xffff);
    !fold(sum)
}

/// Full checksum of `data` (host-side reference and test helper), seeded
/// with a partial sum such as a pseudo-header.
pub fn checksum(data: &[u8], seed: u32) -> u16 {
    let mut sum = seed;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u32) << 8;
    }
    !fold(sum)
}

/// Partial sum of the IPv4 TCP/UDP pseudo-header (addresses as big-endian integers).
pub fn pseudo_header_v4(src: u32, dst: u32, proto: u8, l4_len: u16) -> u32 {
    (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto as u32 + l4_len as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random byte stream (no external crates in no_std).
    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn full_checksum_verifies_to_zero() {
        for seed in 0..200 {
            let mut hdr = bytes(seed, 20);
            hdr[10] = 0;
            hdr[11] = 0;
            let c = checksum(&hdr, 0);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
            assert_eq!(checksum(&hdr, 0), 0, "seed {seed}");
        }
    }

    #[test]
    fn incremental_u32_matches_recomputation() {
        for seed in 0..2000 {
            let mut hdr = bytes(seed, 20);
            hdr[10] = 0;
            hdr[11] = 0;
            let c = checksum(&hdr, 0);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
            let old = u32::from_be_bytes(hdr[16..20].try_into().unwrap());
            let new = u32::from_be_bytes(bytes(seed + 7777, 4).try_into().unwrap());
            let inc = update_u32(c, old, new);
            hdr[16..20].copy_from_slice(&new.to_be_bytes());
            hdr[10] = 0;
            hdr[11] = 0;
            let full = checksum(&hdr, 0);
            // 0x0000 and 0xffff are the same value in one's complement.
            assert!(
                inc == full || (inc == 0xffff && full == 0) || (inc == 0 && full == 0xffff),
                "seed {seed}: incremental {inc:#06x} full {full:#06x}"
            );
        }
    }

    #[test]
    fn incremental_u16_matches_recomputation() {
        for seed in 0..2000 {
            let mut seg = bytes(seed, 40);
            seg[16] = 0;
            seg[17] = 0;
            let ph = pseudo_header_v4(0xc612_0102, 0xc612_640a, 6, 40);
            let c = checksum(&seg, ph);
            let old = u16::from_be_bytes([seg[2], seg[3]]);
            let new = (seed as u16).wrapping_mul(31);
            seg[2..4].copy_from_slice(&new.to_be_bytes());
            let inc = update_u16(c, old, new);
            let full = checksum(&seg, ph);
            assert!(
                inc == full || (inc == 0xffff && full == 0) || (inc == 0 && full == 0xffff),
                "seed {seed}: incremental {inc:#06x} full {full:#06x}"
            );
        }
    }

    #[test]
    fn pseudo_header_address_change_matches_recomputation() {
        for seed in 0..500 {
            let mut seg = bytes(seed, 33);
            seg[16] = 0;
            seg[17] = 0;
            let (src, dst, new_dst) = (0xc612_0102u32, 0xc612_640au32, 0xc612_020b + seed as u32);
            let c = checksum(&seg, pseudo_header_v4(src, dst, 6, 33));
            let inc = update_u32(c, dst, new_dst);
            let full = checksum(&seg, pseudo_header_v4(src, new_dst, 6, 33));
            assert!(inc == full || (inc == 0xffff && full == 0) || (inc == 0 && full == 0xffff));
        }
    }
}
