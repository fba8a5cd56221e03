//! The one-arm full-NAT contract: source-NAT configuration per family and
//! the deterministic source-port choice shared by the XDP program (which
//! claims ports) and the daemon (which writes the configuration and counts
//! ports in use).
//!
//! A full-NAT flow lives in the same two conntrack tiers as a DNAT flow;
//! only its reply key differs: `node addr:node port → snat addr:snat port`
//! instead of `node → client`. The port is chosen by [`snat_choice`] from
//! the client's flow with a fixed seed, so two gateways with the same
//! configuration choose the same port for the same client flow (a takeover
//! rebuilds the flow with the 4-tuple the node already knows), and probe
//! `i` is the next port in the range, wrapping.

use crate::{hash::mix32, FlowKey, FAMILY_V6};

/// Most source-NAT addresses per family.
pub const MAX_SNAT_ADDRS: usize = 4;

/// Ports tried for a new flow: the first choice and the next
/// `SNAT_PROBES - 1` ports of the range. A flow whose every probe is taken
/// is dropped (`Reason::DropSnatExhausted`). Four, not eight: the kernel
/// verifier walks each probe's branches once per probe before it, and at
/// eight probes the program exceeds its million-instruction budget. With
/// ports chosen by hash, four probes find a free port unless the range is
/// nearly full toward that node (at 50 % use, 1 new flow in 16 is refused;
/// at 25 %, 1 in 256).
pub const SNAT_PROBES: u32 = 4;

/// `Array<SnatConfig>` of 2 entries, indexed by [`SNAT_V4`] and [`SNAT_V6`].
pub const MAP_SNAT: &str = "SNAT";
/// `HashMap<VipKey, u32>`: every source-NAT address (either family), so the
/// untracked-reply path recognises a packet addressed to one.
pub const MAP_SNAT_ADDRS: &str = "SNAT_ADDRS";
/// Entries of [`MAP_SNAT`].
pub const SNAT_FAMILIES: u32 = 2;
/// Capacity of [`MAP_SNAT_ADDRS`]: every address of both families.
pub const MAX_SNAT_ADDR_ENTRIES: u32 = 2 * MAX_SNAT_ADDRS as u32;
/// `PerCpuArray<SnatScratch>` of one entry: the XDP program's working
/// space for the full-NAT path (not state: nothing survives a packet).
pub const MAP_SNAT_SCRATCH: &str = "SNAT_SCRATCH";
/// [`MAP_SNAT`] index of the IPv4 configuration.
pub const SNAT_V4: u32 = 0;
/// [`MAP_SNAT`] index of the IPv6 configuration.
pub const SNAT_V6: u32 = 1;

/// How long a closing flow's forward entry must have been idle before a new
/// flow may take over its source port (the reply entry of the old flow is
/// replaced). Covers the last ACKs and a retransmitted FIN; a node still
/// holding the old 4-tuple in TIME_WAIT accepts a new SYN on it (RFC 6191),
/// or answers it with an ACK the client resets, and the SYN's retransmission
/// then connects.
pub const SNAT_REUSE_NS: u64 = 10_000_000_000;

/// How long an open flow's client may stay silent before a new flow may
/// take over its source port: a flow that vanished without FIN or RST (a
/// client crashed or cut off) would otherwise hold its port until LRU
/// eviction, which a table larger than the port range may never reach.
/// Six hours, as Cilium's regular TCP conntrack timeout; API clients send
/// HTTP/2 pings or keepalives far more often.
pub const SNAT_IDLE_NS: u64 = 6 * 3600 * 1_000_000_000;

/// Value of [`MAP_SNAT`]: the source-NAT addresses and port range of one
/// family. `count` 0 means full-NAT is not configured for the family: a
/// full-NAT listener's new flows are dropped (`Reason::DropSnatUnconfigured`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatConfig {
    /// Addresses as key words (network order; IPv4 in word 0); the first
    /// `count` are used.
    pub addrs: [[u32; 4]; MAX_SNAT_ADDRS],
    /// Addresses in use (at most [`MAX_SNAT_ADDRS`]).
    pub count: u32,
    /// First port of the range (HOST order, inclusive).
    pub port_lo: u16,
    /// Last port of the range (HOST order, inclusive); below `port_lo`
    /// reads as the one port `port_lo`.
    pub port_hi: u16,
}

impl SnatConfig {
    /// The configuration of `addrs` (all of one family, at most
    /// [`MAX_SNAT_ADDRS`]; `None` otherwise) and the port range
    /// `lo..=hi` (HOST order). An empty list turns the family off.
    pub fn new(addrs: &[core::net::IpAddr], lo: u16, hi: u16) -> Option<Self> {
        if addrs.len() > MAX_SNAT_ADDRS
            || addrs.windows(2).any(|w| w[0].is_ipv4() != w[1].is_ipv4())
        {
            return None;
        }
        let mut cfg = SnatConfig {
            count: addrs.len() as u32,
            port_lo: lo,
            port_hi: hi,
            ..SnatConfig::default()
        };
        for (slot, a) in cfg.addrs.iter_mut().zip(addrs) {
            *slot = crate::addr::ip_words(*a);
        }
        Some(cfg)
    }

    /// Ports in the range (the capacity of one source address toward one
    /// node endpoint: concurrent flows).
    pub fn ports(&self) -> u32 {
        if self.port_hi < self.port_lo {
            1
        } else {
            self.port_hi as u32 - self.port_lo as u32 + 1
        }
    }

    /// True when `port` (HOST order) is in the range.
    #[inline(always)]
    pub fn in_range(&self, port: u16) -> bool {
        port >= self.port_lo && port <= self.port_hi
    }
}

/// Value of [`MAP_SNAT_SCRATCH`]: map keys and values the full-NAT path
/// builds, kept off the 512-byte stack the program's call chain shares.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatScratch {
    /// The reply entry a port claim inserts.
    pub rev: crate::RevEntry,
    /// The forward entry of a rescheduled flow.
    pub fwd: crate::FwdEntry,
    /// The reply key being probed.
    pub rkey: FlowKey,
    /// The forward key of a reply entry being taken over.
    pub fkey: FlowKey,
    /// The client flow whose port is being claimed.
    pub flow: FlowKey,
    /// The node it goes to.
    pub real: crate::Real,
}

/// [`MAP_SNAT`] index of a family tag.
#[inline(always)]
pub fn snat_index(family: u8) -> u32 {
    if family == FAMILY_V6 {
        SNAT_V6
    } else {
        SNAT_V4
    }
}

/// Seed of the source-port hash: not Maglev's, so the port does not
/// correlate with the node slot.
const SNAT_SEED: u32 = 0x5bd1_e995;

/// The source-NAT hash of a client flow (client → VIP as it arrives).
#[inline(always)]
pub fn snat_hash(flow: &FlowKey) -> u32 {
    let mut h = mix32(flow.src[0] ^ SNAT_SEED);
    h = mix32(h ^ flow.src[1]);
    h = mix32(h ^ flow.src[2]);
    h = mix32(h ^ flow.src[3]);
    h = mix32(h ^ ((flow.dport as u32) << 16 | flow.sport as u32));
    h = mix32(h ^ flow.dst[0]);
    if flow.family == FAMILY_V6 {
        h = mix32(h ^ flow.dst[1]);
        h = mix32(h ^ flow.dst[2]);
        h = mix32(h ^ flow.dst[3]);
    }
    h
}

/// Probe `probe` of a client flow: the index of the source address (below
/// `count`, or 0 when `count` is 0) and the port (HOST order, within
/// `lo..=hi`; `hi < lo` reads as the one port `lo`). Deterministic: the
/// same flow and configuration give the same answer on every gateway.
/// Probe 0 is the first choice; probe `i` is `i` ports further, wrapping
/// within the range; the address stays the same for every probe.
#[inline(always)]
pub fn snat_choice(flow: &FlowKey, count: u32, lo: u16, hi: u16, probe: u32) -> (u32, u16) {
    snat_pick(snat_hash(flow), count, lo, hi, probe)
}

/// [`snat_choice`] from a flow's [`snat_hash`] `h`, so a caller trying
/// several probes hashes the flow once.
#[inline(always)]
pub fn snat_pick(h: u32, count: u32, lo: u16, hi: u16, probe: u32) -> (u32, u16) {
    let span = if hi < lo {
        1
    } else {
        hi as u32 - lo as u32 + 1
    };
    let first = h.checked_rem(span).unwrap_or(0);
    let off = first.wrapping_add(probe).checked_rem(span).unwrap_or(0);
    let addr = mix32(h ^ 0x27d4_eb2f).checked_rem(count).unwrap_or(0);
    (addr, (lo as u32 + off) as u16)
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], Copy, integers only, no implicit padding.
unsafe impl aya::Pod for SnatConfig {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for SnatScratch {}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(sport: u16) -> FlowKey {
        FlowKey::tcp_v4(0x0201_12c6, 0x0a64_12c6, sport.to_be(), 6443u16.to_be())
    }

    #[test]
    fn layout_and_constructor() {
        assert_eq!(core::mem::size_of::<SnatConfig>(), 72);
        assert_eq!(core::mem::size_of::<SnatScratch>(), 80 + 72 + 3 * 40 + 24);
        let a: core::net::IpAddr = "198.18.0.9".parse().unwrap();
        let b: core::net::IpAddr = "2001:db8::9".parse().unwrap();
        let c = SnatConfig::new(&[a], 1024, 32767).unwrap();
        assert_eq!((c.count, c.ports()), (1, 31744));
        assert_eq!(c.addrs[0], crate::addr::ip_words(a));
        assert!(c.in_range(1024) && c.in_range(32767) && !c.in_range(32768));
        assert_eq!(SnatConfig::new(&[a, b], 1, 2), None);
        assert_eq!(SnatConfig::new(&[a; 5], 1, 2), None);
        assert_eq!(SnatConfig::new(&[], 1, 2).unwrap().count, 0);
    }

    #[test]
    fn deterministic_and_pinned() {
        let f = flow(40000);
        assert_eq!(
            snat_choice(&f, 2, 1024, 32767, 0),
            snat_choice(&f, 2, 1024, 32767, 0)
        );
        // Pinned: changing the hash changes every gateway's choices (and
        // breaks rebuilding flows across a mixed-version pair).
        assert_eq!(snat_hash(&f), snat_hash(&flow(40000)));
        assert_ne!(snat_hash(&f), snat_hash(&flow(40001)));
    }

    #[test]
    fn stays_in_range_and_probes_wrap() {
        for sport in 1000..3000u16 {
            let f = flow(sport);
            let (a, p0) = snat_choice(&f, 3, 2000, 2009, 0);
            assert!(a < 3);
            assert!((2000..=2009).contains(&p0));
            for i in 0..30 {
                let (ai, p) = snat_choice(&f, 3, 2000, 2009, i);
                assert_eq!(ai, a, "the address is the same for every probe");
                let want = 2000 + (p0 - 2000 + i as u16) % 10;
                assert_eq!(p, want, "probe {i} is the next port, wrapping");
            }
        }
    }

    #[test]
    fn degenerate_configs_do_not_divide_by_zero() {
        let f = flow(1);
        assert_eq!(snat_choice(&f, 0, 5, 5, 3), (0, 5));
        assert_eq!(snat_choice(&f, 1, 9, 3, 0), (0, 9));
        let (_, p) = snat_choice(&f, 1, 0, 65535, 7);
        let (_, p0) = snat_choice(&f, 1, 0, 65535, 0);
        assert_eq!(p, p0.wrapping_add(7));
    }

    #[test]
    fn different_flows_spread_over_ports_and_addresses() {
        let mut ports = [0u32; 16];
        let mut addrs = [0u32; 4];
        for sport in 10_000..26_000u16 {
            let (a, p) = snat_choice(&flow(sport), 4, 1024, 1024 + 15, 0);
            ports[(p - 1024) as usize] += 1;
            addrs[a as usize] += 1;
        }
        for n in ports {
            assert!((800..1200).contains(&n), "{ports:?}");
        }
        for n in addrs {
            assert!((3600..4400).contains(&n), "{addrs:?}");
        }
    }

    #[test]
    fn port_choice_does_not_follow_the_maglev_slot() {
        // Flows landing in the same Maglev residue class must still spread
        // over ports: a correlated hash would pile one node's flows on few
        // ports.
        let mut ports = std::collections::BTreeSet::new();
        for sport in 1024..60_000u16 {
            let f = flow(sport);
            if crate::hash::flow_key_hash(&f).is_multiple_of(3) {
                ports.insert(snat_choice(&f, 1, 1024, 1024 + 63, 0).1);
            }
        }
        assert_eq!(ports.len(), 64);
    }

    #[test]
    fn v6_uses_every_address_word() {
        let src = [1, 2, 3, 4];
        let dst = [5, 6, 7, 8];
        let base = snat_hash(&FlowKey::tcp_v6(src, dst, 1, 2));
        for w in 0..4 {
            let mut s = src;
            s[w] ^= 1;
            assert_ne!(snat_hash(&FlowKey::tcp_v6(s, dst, 1, 2)), base);
            let mut d = dst;
            d[w] ^= 1;
            assert_ne!(snat_hash(&FlowKey::tcp_v6(src, d, 1, 2)), base);
        }
        assert_eq!(snat_index(FAMILY_V6), SNAT_V6);
        assert_eq!(snat_index(crate::FAMILY_V4), SNAT_V4);
    }
}
