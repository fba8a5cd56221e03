//! The conntrack table as the daemon reads it: a handle of its own on
//! `CT_FWD` and a bounded scan that counts the entries, the tracked flows
//! per (listener, real) and the source-NAT ports full-NAT flows hold. Used
//! by status, drain (`lb flows`) and metrics alike.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, IterableMap, Map, MapData};
use lb_common::{
    ip_from_words, FlowKey, FwdEntry, FWD_F_CLOSING, FWD_F_FULLNAT, MAP_CT_FWD, SNAT_IDLE_NS,
    SNAT_REUSE_NS,
};

use super::clock::monotonic_ns;
use super::counters::KernelError;
use super::maps::Maps;

/// A flow counts as tracked while neither side has sent FIN or RST and its
/// conntrack entry was refreshed within this window (the program refreshes
/// `last_seen_ns` at most once a second while packets flow; entries leave
/// the table only by LRU eviction). The same definition as `lb flows`.
pub const TRACKED_WINDOW: Duration = Duration::from_secs(300);

/// Whether conntrack entry `e` is a tracked flow at `now` (the clock of
/// [`monotonic_ns`]) for a window of `window_ns`: the one definition, used
/// by the scan behind status, drain and metrics. The program's clock is
/// coarse: an entry may look a few ms in the future; saturating_sub counts
/// it as fresh.
pub fn is_tracked(e: &FwdEntry, now: u64, window_ns: u64) -> bool {
    e.flags & FWD_F_CLOSING == 0 && now.saturating_sub(e.last_seen_ns) < window_ns
}

/// The flow scanner pauses this many times a scan's duration before the
/// next one, so scanning takes at most 1/20 of a core however often status
/// and Prometheus read it (a full 262144-entry table takes ~0.5 s: refreshed every ~10 s;
/// a table of a few thousand flows: every second).
pub const SCAN_REUSE_FACTOR: u32 = 20;

/// Upper bound on the time one conntrack scan may take; a scan that hits it
/// reports what it counted so far and `lb_conntrack_scan_complete 0`.
pub const SCAN_TIME_LIMIT: Duration = Duration::from_secs(2);

/// A handle of its own on the `CT_FWD` map, so the (longer) conntrack scan
/// runs without the daemon's lock.
pub struct Conntrack {
    map: HashMap<MapData, FlowKey, FwdEntry>,
    capacity: u32,
}

/// What one conntrack scan counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConntrackScan {
    /// Entries in `CT_FWD` (client → VIP flows the table remembers).
    pub entries: u64,
    /// The map's capacity (`[dataplane] conntrack_capacity`).
    pub capacity: u32,
    /// Open flows (no FIN/RST seen) refreshed within [`TRACKED_WINDOW`], per
    /// (listener id, real id).
    pub tracked: BTreeMap<(u32, u32), u64>,
    /// Source ports held by full-NAT flows, per source-NAT address: every
    /// established full-NAT flow's entry (it names its address and port),
    /// except those whose port the data path would give to a new flow:
    /// closed and idle for `SNAT_REUSE_NS`, or silent for `SNAT_IDLE_NS`.
    pub snat_in_use: BTreeMap<IpAddr, u64>,
    /// False when the scan stopped at its time or entry bound.
    pub complete: bool,
    /// How long the scan took.
    pub duration: Duration,
    /// How old the result is when served (see [`ConntrackScan::age_at`]).
    pub age: Duration,
    /// When the scan started (`None`: no scan yet).
    pub at: Option<Instant>,
}

impl ConntrackScan {
    /// How old the scan is at `now` (`None`: no scan yet).
    pub fn age_at(&self, now: Instant) -> Option<Duration> {
        self.at.map(|a| now.saturating_duration_since(a))
    }

    /// This scan with its `age` set as of `now`, for serving.
    pub fn served_at(&self, now: Instant) -> ConntrackScan {
        ConntrackScan {
            age: self.age_at(now).unwrap_or_default(),
            ..self.clone()
        }
    }
}

impl Conntrack {
    /// Opens a second descriptor on the data path's `CT_FWD` map.
    pub fn open(maps: &Maps) -> Result<Conntrack, KernelError> {
        let data = maps.ct_fwd.map();
        let map_err = |source| KernelError::Map {
            map: MAP_CT_FWD,
            source,
        };
        let capacity = data.info().map_err(map_err)?.max_entries();
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| KernelError::Dup {
                map: MAP_CT_FWD,
                source,
            })?;
        let owned = MapData::from_fd(fd).map_err(map_err)?;
        let map = HashMap::try_from(Map::LruHashMap(owned)).map_err(map_err)?;
        Ok(Conntrack { map, capacity })
    }

    /// Counts the entries, and per real the open ones refreshed within `window`.
    ///
    /// Bounded: visits at most twice the capacity in keys (the kernel
    /// restarts an iteration whose current key was evicted meanwhile) and
    /// stops after `time_limit`.
    pub fn scan(&self, window: Duration, time_limit: Duration) -> ConntrackScan {
        let start = Instant::now();
        let now = monotonic_ns();
        let window_ns = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let max_visits = u64::from(self.capacity).saturating_mul(2);
        let mut scan = ConntrackScan {
            capacity: self.capacity,
            complete: true,
            at: Some(start),
            ..ConntrackScan::default()
        };
        for item in self.map.iter() {
            if scan.entries >= max_visits || start.elapsed() > time_limit {
                scan.complete = false;
                break;
            }
            let Ok((k, e)) = item else {
                scan.complete = false;
                break;
            };
            scan.entries += 1;
            if is_tracked(&e, now, window_ns) {
                *scan.tracked.entry((e.listener, e.real)).or_default() += 1;
            }
            if let Some(a) = snat_port_held(&k, &e, now) {
                *scan.snat_in_use.entry(a).or_default() += 1;
            }
        }
        scan.entries = scan.entries.min(u64::from(self.capacity));
        scan.duration = start.elapsed();
        scan
    }
}

/// The source-NAT address whose port the flow of `k` holds at `now`, if it
/// is a full-NAT flow whose port the data path would not give away yet.
fn snat_port_held(k: &FlowKey, e: &FwdEntry, now: u64) -> Option<IpAddr> {
    if e.flags & FWD_F_FULLNAT == 0 {
        return None;
    }
    let idle = now.saturating_sub(e.last_seen_ns);
    let reusable = (e.flags & FWD_F_CLOSING != 0 && idle >= SNAT_REUSE_NS) || idle >= SNAT_IDLE_NS;
    if reusable {
        return None;
    }
    ip_from_words(k.family, e.snat)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fullnat_flow_holds_its_port_until_closed_and_idle() {
        let k = FlowKey::tcp_v4(0x0b00_12c6, 0x0a00_12c6, 40000u16.to_be(), 6443u16.to_be());
        let snat = lb_common::ip_words("198.18.0.100".parse().unwrap());
        let now = 2 * SNAT_IDLE_NS;
        let e = FwdEntry {
            flags: FWD_F_FULLNAT,
            snat,
            last_seen_ns: now - 2 * SNAT_REUSE_NS,
            ..FwdEntry::default()
        };
        let a: IpAddr = "198.18.0.100".parse().unwrap();
        assert_eq!(snat_port_held(&k, &e, now), Some(a), "open, even idle");
        let silent = FwdEntry {
            last_seen_ns: now - SNAT_IDLE_NS,
            ..e
        };
        assert_eq!(snat_port_held(&k, &silent, now), None, "silent too long");
        let closing = FwdEntry {
            flags: FWD_F_FULLNAT | FWD_F_CLOSING,
            ..e
        };
        assert_eq!(snat_port_held(&k, &closing, now), None, "reusable");
        let recent = FwdEntry {
            last_seen_ns: now - 1,
            ..closing
        };
        assert_eq!(snat_port_held(&k, &recent, now), Some(a), "just closed");
        let dnat = FwdEntry { flags: 0, ..e };
        assert_eq!(snat_port_held(&k, &dnat, now), None);
    }
}

#[cfg(test)]
mod scan_cost {
    use super::*;

    /// Measured on the project's 2-core machine (release build): a full
    /// 262144-entry table scans in about 0.5 s, i.e. ~2 µs per entry.
    #[test]
    #[ignore = "measurement: needs root and the XDP object; run with --release --ignored"]
    fn full_table_scan() {
        let cap = 262_144u32;
        let mut dp = crate::dataplane::Dataplane::load(cap).expect("load");
        let now = monotonic_ns();
        {
            let ct = &mut dp.maps.ct_fwd;
            for i in 0..cap {
                let k = FlowKey {
                    src: [i, 0, 0, 0],
                    sport: 1,
                    dport: 2,
                    proto: 6,
                    family: 4,
                    ..FlowKey::default()
                };
                let v = FwdEntry {
                    real: i % 3,
                    last_seen_ns: now,
                    ..FwdEntry::default()
                };
                ct.insert(k, v, 0).expect("insert");
            }
        }
        let c = Conntrack::open(&dp.maps).expect("open");
        let s = c.scan(TRACKED_WINDOW, Duration::from_secs(30));
        println!(
            "{} entries, complete {}, in {:?}",
            s.entries, s.complete, s.duration
        );
        assert!(s.complete);
        // The LRU map may have evicted a few entries (per-CPU free lists).
        assert!(s.entries > u64::from(cap) * 99 / 100, "{}", s.entries);
        assert_eq!(s.tracked.values().sum::<u64>(), s.entries);
        assert_eq!(s.tracked.len(), 3);
    }
}
