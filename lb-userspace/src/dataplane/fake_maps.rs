//! [`FakeMaps`]: the in-memory [`TableMaps`] the writer's unit tests use
//! (test builds only).
use super::*;

/// An in-memory [`TableMaps`] for unit tests: records every entry, counts
/// writes, and fails the write numbered `fail_at` (1-based) when set.
#[derive(Default)]
pub struct FakeMaps {
    /// `REALS` (only slots written).
    pub reals: std::collections::BTreeMap<u32, Real>,
    /// `LISTENERS`.
    pub listeners: std::collections::BTreeMap<ListenerKey, Listener>,
    /// Maglev tables written (index → every slot's real id).
    pub tables: std::collections::BTreeMap<u32, Vec<u32>>,
    /// Times each real's counters were zeroed.
    pub resets: std::collections::BTreeMap<u32, u32>,
    /// `VIPS`.
    pub vips: std::collections::BTreeSet<VipKey>,
    /// `REV_FALLBACK`.
    pub fallback: std::collections::BTreeMap<EndpointKey, RevEntry>,
    /// Writes made so far.
    pub writes: u32,
    /// Fail every write from this one on (1-based), while set.
    pub fail_from: Option<u32>,
}

impl FakeMaps {
    fn step(&mut self) -> Result<(), MapOpError> {
        self.writes += 1;
        match self.fail_from {
            Some(n) if self.writes >= n => {
                Err(MapOpError::Injected(format!("write {}", self.writes)))
            }
            _ => Ok(()),
        }
    }
}

impl TableMaps for FakeMaps {
    fn set_real(&mut self, id: u32, real: Real) -> Result<(), MapOpError> {
        self.step()?;
        self.reals.insert(id, real);
        Ok(())
    }
    fn set_listener(&mut self, key: ListenerKey, value: Listener) -> Result<(), MapOpError> {
        self.step()?;
        self.listeners.insert(key, value);
        Ok(())
    }
    fn remove_listener(&mut self, key: &ListenerKey) -> Result<(), MapOpError> {
        self.step()?;
        self.listeners.remove(key);
        Ok(())
    }
    fn set_table(&mut self, index: u32, table: &MaglevTable) -> Result<(), MapOpError> {
        self.step()?;
        self.tables.insert(index, table.slots.to_vec());
        Ok(())
    }
    fn reset_real_stats(&mut self, id: u32) -> Result<(), MapOpError> {
        self.step()?;
        *self.resets.entry(id).or_default() += 1;
        Ok(())
    }
    fn set_vip(&mut self, key: VipKey) -> Result<(), MapOpError> {
        self.step()?;
        self.vips.insert(key);
        Ok(())
    }
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), MapOpError> {
        self.step()?;
        self.vips.remove(key);
        Ok(())
    }
    fn set_fallback(&mut self, key: EndpointKey, value: RevEntry) -> Result<(), MapOpError> {
        self.step()?;
        self.fallback.insert(key, value);
        Ok(())
    }
    fn remove_fallback(&mut self, key: &EndpointKey) -> Result<(), MapOpError> {
        self.step()?;
        self.fallback.remove(key);
        Ok(())
    }
}
