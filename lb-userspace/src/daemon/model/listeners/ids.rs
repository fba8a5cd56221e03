//! Listener and real ids: the lowest free one is given out, and a set of
//! listeners whose ids do not fit the data path (`MAX_LISTENERS`,
//! `MAX_REALS`) is refused as a whole.
use std::collections::BTreeSet;

use anyhow::Result;
use lb_common::{MAX_LISTENERS, MAX_REALS};

use super::ListenerState;

/// Ids in use (of one kind: listeners or reals).
#[derive(Clone, Debug, Default)]
pub struct Ids {
    used: BTreeSet<u32>,
}

impl Ids {
    /// Ids `used` are taken.
    pub fn taken(used: impl IntoIterator<Item = u32>) -> Ids {
        Ids {
            used: used.into_iter().collect(),
        }
    }

    /// Marks `id` taken.
    pub fn take(&mut self, id: u32) {
        self.used.insert(id);
    }

    /// The lowest free id, now taken. It may exceed the data path's
    /// limit: [`check_limits`] refuses the result before it is written.
    pub fn fresh(&mut self) -> u32 {
        let id = (0..)
            .find(|i| !self.used.contains(i))
            .expect("ids are bounded by config limits");
        self.used.insert(id);
        id
    }
}

/// Refuses listeners whose ids do not fit the data path (listeners still
/// draining keep their ids until their delay ends).
pub fn check_limits(listeners: &[ListenerState]) -> Result<()> {
    let max_listener = listeners.iter().map(|l| l.id).max();
    if max_listener.is_some_and(|id| id >= MAX_LISTENERS) {
        anyhow::bail!(
            "{} listeners (configured and still draining) exceed the data path's {MAX_LISTENERS}; wait for the drains to end or remove listeners",
            listeners.len()
        );
    }
    let max_real = listeners
        .iter()
        .flat_map(|l| l.reals.iter().map(|r| r.id))
        .max();
    if max_real.is_some_and(|id| id >= MAX_REALS) {
        anyhow::bail!(
            "more (listener, backend) pairs, configured and still draining, than the data path's {MAX_REALS}"
        );
    }
    Ok(())
}
