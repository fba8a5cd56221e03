//! The source-NAT part of a plan (`SNAT` and `SNAT_ADDRS`) and its writes.
//!
//! Order, as for the tables: every address is in `SNAT_ADDRS` before a
//! configuration names it (replies to it are recognised from the first
//! translated packet on), the configuration of both families is written
//! before any listener switches to full-NAT (the table writer calls
//! [`write_config`] first), and an address leaves `SNAT_ADDRS` only after
//! no configuration names it and its flows have drained
//! ([`remove_stale`], called last).
use std::collections::BTreeSet;
use std::net::IpAddr;

use lb_common::{SnatConfig, VipKey, MAP_SNAT, MAP_SNAT_ADDRS, SNAT_V4, SNAT_V6};

use super::maps::{absent_ok, op, MapOpError, Maps};
pub use super::plan::SnatPlan;
use super::Dataplane;

/// Which family's source-NAT configuration ([`Maps::set_snat`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnatFamily {
    /// IPv4 (`SNAT_V4`).
    V4,
    /// IPv6 (`SNAT_V6`).
    V6,
}

impl SnatFamily {
    /// The `SNAT` array index.
    pub fn index(self) -> u32 {
        match self {
            SnatFamily::V4 => SNAT_V4,
            SnatFamily::V6 => SNAT_V6,
        }
    }
}

impl Maps {
    /// Writes the source-NAT configuration of `family` (one update: the
    /// data path never sees a half-written value). A `count` of 0 turns
    /// full-NAT off for the family. Write every address into `SNAT_ADDRS`
    /// (with [`Maps::set_snat_addr`]) *before* a configuration naming it,
    /// and remove addresses only after a configuration no longer names
    /// them, so replies to a source-NAT address are always recognised.
    pub fn set_snat(&mut self, family: SnatFamily, cfg: SnatConfig) -> Result<(), MapOpError> {
        op(MAP_SNAT, self.snat.set(family.index(), cfg, 0))
    }

    /// The source-NAT configuration of `family` as the data path sees it.
    pub fn snat_config(&self, family: SnatFamily) -> Result<SnatConfig, MapOpError> {
        op(MAP_SNAT, self.snat.get(&family.index(), 0))
    }

    /// Marks `addr` as a source-NAT address.
    pub fn set_snat_addr(&mut self, addr: std::net::IpAddr) -> Result<(), MapOpError> {
        op(
            MAP_SNAT_ADDRS,
            self.snat_addrs.insert(VipKey::of(addr), 1, 0),
        )
    }

    /// Unmarks a source-NAT address (absent is fine).
    pub fn remove_snat_addr(&mut self, addr: std::net::IpAddr) -> Result<(), MapOpError> {
        absent_ok(MAP_SNAT_ADDRS, self.snat_addrs.remove(&VipKey::of(addr)))
    }
}

impl SnatPlan {
    /// Every address `SNAT_ADDRS` must hold.
    pub fn addrs(&self) -> BTreeSet<IpAddr> {
        let mut all: BTreeSet<IpAddr> = self.ipv4.iter().chain(&self.ipv6).copied().collect();
        all.extend(self.retiring.iter().copied());
        all
    }

    /// The `SNAT` value of one family.
    pub fn config(&self, family: SnatFamily) -> SnatConfig {
        let addrs = match family {
            SnatFamily::V4 => &self.ipv4,
            SnatFamily::V6 => &self.ipv6,
        };
        // Validation keeps each list to one family and MAX_SNAT_ADDRS.
        SnatConfig::new(addrs, self.ports.lo, self.ports.hi).unwrap_or_default()
    }
}

/// The writes of the source-NAT maps. Implemented by the loaded program
/// and, in tests, by in-memory fakes.
pub trait SnatMaps {
    /// Writes `SNAT[family]` (one update).
    fn set_snat(&mut self, family: SnatFamily, cfg: SnatConfig) -> Result<(), MapOpError>;
    /// Marks `addr` as a source-NAT address.
    fn set_snat_addr(&mut self, addr: IpAddr) -> Result<(), MapOpError>;
    /// Unmarks a source-NAT address (absent is fine).
    fn remove_snat_addr(&mut self, addr: IpAddr) -> Result<(), MapOpError>;
}

impl SnatMaps for Maps {
    fn set_snat(&mut self, family: SnatFamily, cfg: SnatConfig) -> Result<(), MapOpError> {
        Maps::set_snat(self, family, cfg)
    }
    fn set_snat_addr(&mut self, addr: IpAddr) -> Result<(), MapOpError> {
        Maps::set_snat_addr(self, addr)
    }
    fn remove_snat_addr(&mut self, addr: IpAddr) -> Result<(), MapOpError> {
        Maps::remove_snat_addr(self, addr)
    }
}

impl SnatMaps for Dataplane {
    fn set_snat(&mut self, family: SnatFamily, cfg: SnatConfig) -> Result<(), MapOpError> {
        self.maps.set_snat(family, cfg)
    }
    fn set_snat_addr(&mut self, addr: IpAddr) -> Result<(), MapOpError> {
        self.maps.set_snat_addr(addr)
    }
    fn remove_snat_addr(&mut self, addr: IpAddr) -> Result<(), MapOpError> {
        self.maps.remove_snat_addr(addr)
    }
}

/// Adds every address of `plan` to `SNAT_ADDRS`, then writes the
/// configuration of both families. `present` records what may be in
/// `SNAT_ADDRS` (also after a failure).
pub fn write_config(
    maps: &mut impl SnatMaps,
    plan: &SnatPlan,
    present: &mut BTreeSet<IpAddr>,
) -> Result<(), MapOpError> {
    for a in plan.addrs() {
        present.insert(a);
        maps.set_snat_addr(a)?;
    }
    maps.set_snat(SnatFamily::V4, plan.config(SnatFamily::V4))?;
    maps.set_snat(SnatFamily::V6, plan.config(SnatFamily::V6))?;
    Ok(())
}

/// Removes from `SNAT_ADDRS` what `plan` no longer names.
pub fn remove_stale(
    maps: &mut impl SnatMaps,
    plan: &SnatPlan,
    present: &mut BTreeSet<IpAddr>,
) -> Result<(), MapOpError> {
    let keep = plan.addrs();
    let stale: Vec<IpAddr> = present.difference(&keep).copied().collect();
    for a in stale {
        maps.remove_snat_addr(a)?;
        present.remove(&a);
    }
    Ok(())
}

/// The address a `SNAT_ADDRS` key holds (IPv4 keeps words 1-3 zero; no
/// IPv6 source-NAT address is in `::/96`, which validation refuses).
pub fn key_addr(key: &VipKey) -> IpAddr {
    let family = if key.addr[1..] == [0, 0, 0] {
        lb_common::FAMILY_V4
    } else {
        lb_common::FAMILY_V6
    };
    lb_common::ip_from_words(family, key.addr)
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// Every address in the `SNAT_ADDRS` of (adopted) maps.
pub fn read_addrs(maps: &Maps) -> Result<Vec<IpAddr>, MapOpError> {
    maps.snat_addrs
        .keys()
        .map(|k| {
            k.map(|k| key_addr(&k)).map_err(|source| MapOpError::Map {
                map: lb_common::MAP_SNAT_ADDRS,
                source,
            })
        })
        .collect()
}

/// An in-memory [`SnatMaps`] for tests that fails every write from
/// `fail_from` (1-based, counted with the table writes of
/// [`super::maps::FakeMaps`] it wraps).
#[cfg(test)]
pub mod fake {
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::IpAddr;

    use lb_common::{EndpointKey, Listener, ListenerKey, MaglevTable, Real, RevEntry, VipKey};

    use super::{MapOpError, SnatConfig, SnatFamily, SnatMaps};
    use crate::dataplane::maps::{FakeMaps, TableMaps};

    /// [`FakeMaps`] plus the source-NAT maps.
    #[derive(Default)]
    pub struct FakeAll {
        /// The table maps (and the write counter shared by both).
        pub tables: FakeMaps,
        /// `SNAT` by index.
        pub snat: BTreeMap<u32, SnatConfig>,
        /// `SNAT_ADDRS`.
        pub addrs: BTreeSet<IpAddr>,
    }

    /// Counts a write on `fake`, failing from its `fail_from` on.
    pub fn step(fake: &mut FakeMaps) -> Result<(), MapOpError> {
        fake.writes += 1;
        match fake.fail_from {
            Some(n) if fake.writes >= n => {
                Err(MapOpError::Injected(format!("write {}", fake.writes)))
            }
            _ => Ok(()),
        }
    }

    /// The plain table fake takes source-NAT writes too (counted, so
    /// injected failures hit them; not recorded: use [`FakeAll`]).
    impl SnatMaps for FakeMaps {
        fn set_snat(&mut self, _: SnatFamily, _: SnatConfig) -> Result<(), MapOpError> {
            step(self)
        }
        fn set_snat_addr(&mut self, _: IpAddr) -> Result<(), MapOpError> {
            step(self)
        }
        fn remove_snat_addr(&mut self, _: IpAddr) -> Result<(), MapOpError> {
            step(self)
        }
    }

    impl SnatMaps for FakeAll {
        fn set_snat(&mut self, family: SnatFamily, cfg: SnatConfig) -> Result<(), MapOpError> {
            step(&mut self.tables)?;
            self.snat.insert(family.index(), cfg);
            Ok(())
        }
        fn set_snat_addr(&mut self, addr: IpAddr) -> Result<(), MapOpError> {
            step(&mut self.tables)?;
            self.addrs.insert(addr);
            Ok(())
        }
        fn remove_snat_addr(&mut self, addr: IpAddr) -> Result<(), MapOpError> {
            step(&mut self.tables)?;
            self.addrs.remove(&addr);
            Ok(())
        }
    }

    impl TableMaps for FakeAll {
        fn set_real(&mut self, id: u32, real: Real) -> Result<(), MapOpError> {
            self.tables.set_real(id, real)
        }
        fn set_listener(&mut self, key: ListenerKey, value: Listener) -> Result<(), MapOpError> {
            self.tables.set_listener(key, value)
        }
        fn remove_listener(&mut self, key: &ListenerKey) -> Result<(), MapOpError> {
            self.tables.remove_listener(key)
        }
        fn set_table(&mut self, index: u32, table: &MaglevTable) -> Result<(), MapOpError> {
            self.tables.set_table(index, table)
        }
        fn reset_real_stats(&mut self, id: u32) -> Result<(), MapOpError> {
            self.tables.reset_real_stats(id)
        }
        fn set_vip(&mut self, key: VipKey) -> Result<(), MapOpError> {
            self.tables.set_vip(key)
        }
        fn remove_vip(&mut self, key: &VipKey) -> Result<(), MapOpError> {
            self.tables.remove_vip(key)
        }
        fn set_fallback(&mut self, key: EndpointKey, value: RevEntry) -> Result<(), MapOpError> {
            self.tables.set_fallback(key, value)
        }
        fn remove_fallback(&mut self, key: &EndpointKey) -> Result<(), MapOpError> {
            self.tables.remove_fallback(key)
        }
    }
}
