//! Conntrack at scale: the maps are filled from userspace with N tracked
//! flows (both directions), then established packets of flows spread over
//! the whole table are timed, and the maps' locked memory is read.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use aya::maps::{HashMap, Map, MapData};
use lb_common::{
    v4_words, FlowKey, FwdEntry, RevEntry, FAMILY_V4, MAP_CT_FWD, MAP_CT_REV, PROTO_TCP,
};
use serde::{Deserialize, Serialize};

use super::frames::ACK;
use super::micro::{self, backend_addr, XDP_REDIRECT};
use lb::dataplane::clock::monotonic_ns;
use lb::dataplane::Dataplane;

/// Flows per client address when generating many flows.
const PORTS_PER_CLIENT: u32 = 40_000;

/// What one table size costs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CtScale {
    /// Tracked flows written (per direction).
    pub flows: u32,
    /// Capacity of each conntrack map.
    pub capacity: u32,
    /// Time to write both directions from userspace, in seconds.
    pub fill_secs: f64,
    /// Flows whose packets were timed.
    pub sampled: u32,
    /// Of those, how many were still in the table (LRU eviction check).
    pub present: u32,
    /// Median ns per established packet (single runs, as in the micro-costs).
    pub median_ns: f64,
    /// 90th percentile.
    pub p90_ns: f64,
    /// Locked memory of `CT_FWD` (bytes, from fdinfo `memlock`).
    pub fwd_memlock: u64,
    /// Locked memory of `CT_REV`.
    pub rev_memlock: u64,
    /// Both maps' memory per tracked flow at this capacity.
    pub bytes_per_flow: f64,
}

/// Client address and port of generated flow `i` (198.19.0.0/16).
pub fn flow_client(i: u32) -> (Ipv4Addr, u16) {
    let base = u32::from(Ipv4Addr::new(198, 19, 0, 1));
    let addr = Ipv4Addr::from(base + i / PORTS_PER_CLIENT);
    let port = 20_000 + (i % PORTS_PER_CLIENT) as u16;
    (addr, port)
}

/// A conntrack key as the program builds it: addresses as they lie in the
/// packet, ports in network order.
pub fn flow_key(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> FlowKey {
    FlowKey {
        src: [u32::from_ne_bytes(src.octets()), 0, 0, 0],
        dst: [u32::from_ne_bytes(dst.octets()), 0, 0, 0],
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_V4,
        ..Default::default()
    }
}

/// The `memlock:` figure of an fdinfo text.
pub fn parse_memlock(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Locked memory of map `name`, from `/proc/self/fdinfo/<fd>`.
pub fn map_memlock(dp: &Dataplane, name: &str) -> Result<u64> {
    let data: &MapData = match dp.ebpf.map(name).with_context(|| format!("map {name}"))? {
        Map::LruHashMap(m) | Map::HashMap(m) => m,
        _ => return Err(anyhow!("{name} is not a hash map")),
    };
    let fd = data.fd().as_fd().as_raw_fd();
    let path = format!("/proc/self/fdinfo/{fd}");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_memlock(&text).with_context(|| format!("no memlock in {path}"))
}

/// Capacity used for `flows` tracked flows: LRU maps hand out free entries
/// to CPUs in batches, so leave room to avoid evictions while filling.
pub fn capacity_for(flows: u32) -> u32 {
    flows.saturating_add(flows / 8).saturating_add(1024)
}

/// Fills a fresh data path with `flows` flows and measures it; call inside
/// [`micro::MicroNs::run`].
/// `object` as in [`micro::load_dataplane`].
pub fn measure_scale(
    object: Option<&[u8]>,
    flows: u32,
    runs: u32,
    ifindexes: [u32; 2],
) -> Result<CtScale> {
    let capacity = capacity_for(flows);
    let mut dp = micro::load_dataplane(object, capacity, 3, ifindexes)?;
    let now = monotonic_ns();
    let vip = micro::VIP;
    let started = Instant::now();
    {
        let mut fwd: HashMap<&mut MapData, FlowKey, FwdEntry> =
            HashMap::try_from(dp.ebpf.map_mut(MAP_CT_FWD).context("CT_FWD")?)?;
        for i in 0..flows {
            let (c, p) = flow_client(i);
            let e = FwdEntry {
                real: i % 3,
                listener: 0,
                last_seen_ns: now,
                ..Default::default()
            };
            fwd.insert(flow_key(c, vip, p, micro::PORT), e, 0)
                .with_context(|| format!("inserting forward flow {i}"))?;
        }
    }
    {
        let mut rev: HashMap<&mut MapData, FlowKey, RevEntry> =
            HashMap::try_from(dp.ebpf.map_mut(MAP_CT_REV).context("CT_REV")?)?;
        for i in 0..flows {
            let (c, p) = flow_client(i);
            let e = RevEntry {
                vip: v4_words(vip.octets()),
                vport: micro::PORT.to_be(),
                real: i % 3,
                listener: 0,
                ..Default::default()
            };
            rev.insert(
                flow_key(backend_addr((i % 3) as usize), c, micro::PORT, p),
                e,
                0,
            )
            .with_context(|| format!("inserting reverse flow {i}"))?;
        }
    }
    let fill_secs = started.elapsed().as_secs_f64();

    // Sample flows spread over the whole table; keep those still present.
    let sampled = flows.clamp(1, 4096);
    let mut frames = Vec::new();
    {
        let fwd: HashMap<&MapData, FlowKey, FwdEntry> =
            HashMap::try_from(dp.ebpf.map(MAP_CT_FWD).context("CT_FWD")?)?;
        for k in 0..sampled {
            let i = (u64::from(k) * u64::from(flows) / u64::from(sampled)) as u32;
            let (c, p) = flow_client(i);
            if fwd.get(&flow_key(c, vip, p, micro::PORT), 0).is_ok() {
                frames.push(micro::to_vip(c, p, ACK));
            }
        }
    }
    if frames.is_empty() {
        return Err(anyhow!("none of the sampled flows is in the table"));
    }
    let present = frames.len() as u32;
    let (lb, _) = micro::programs(&dp)?;
    let (median_ns, _, p90_ns) = micro::measure(lb, ifindexes[0], runs, XDP_REDIRECT, |i| {
        frames[i as usize % frames.len()].clone()
    })?;
    let fwd_memlock = map_memlock(&dp, MAP_CT_FWD)?;
    let rev_memlock = map_memlock(&dp, MAP_CT_REV)?;
    Ok(CtScale {
        flows,
        capacity,
        fill_secs,
        sampled,
        present,
        median_ns,
        p90_ns,
        fwd_memlock,
        rev_memlock,
        bytes_per_flow: (fwd_memlock + rev_memlock) as f64 / f64::from(capacity),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_flows_are_distinct_and_in_the_benchmark_range() {
        let a = flow_client(0);
        let b = flow_client(PORTS_PER_CLIENT - 1);
        let c = flow_client(PORTS_PER_CLIENT);
        assert_eq!(a, (Ipv4Addr::new(198, 19, 0, 1), 20_000));
        assert_eq!(b, (Ipv4Addr::new(198, 19, 0, 1), 59_999));
        assert_eq!(c, (Ipv4Addr::new(198, 19, 0, 2), 20_000));
        let (last, _) = flow_client(999_999);
        assert_eq!(last.octets()[..2], [198, 19]);
    }

    #[test]
    fn keys_use_packet_byte_order() {
        let k = flow_key(
            Ipv4Addr::new(198, 18, 1, 2),
            Ipv4Addr::new(198, 18, 100, 10),
            40000,
            80,
        );
        assert_eq!(k.src[0].to_ne_bytes(), [198, 18, 1, 2]);
        assert_eq!(k.dst[0].to_ne_bytes(), [198, 18, 100, 10]);
        assert_eq!(k.sport.to_ne_bytes(), 40000u16.to_be_bytes());
        assert_eq!(k.dport.to_ne_bytes(), 80u16.to_be_bytes());
        assert_eq!((k.proto, k.family), (PROTO_TCP, FAMILY_V4));
    }

    #[test]
    fn memlock_is_read_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmap_type:\t9\nmemlock:\t147456000\nmap_id:\t12\n";
        assert_eq!(parse_memlock(text), Some(147_456_000));
        assert_eq!(parse_memlock("pos:\t0\n"), None);
    }

    #[test]
    fn capacity_leaves_headroom() {
        assert_eq!(capacity_for(1000), 1000 + 125 + 1024);
        assert!(capacity_for(1_000_000) >= 1_100_000);
        assert_eq!(capacity_for(u32::MAX), u32::MAX);
    }
}
