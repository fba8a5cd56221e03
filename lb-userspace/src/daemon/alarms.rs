//! The edges of the model's alarms, logged once per transition (not on
//! every plan): a listener that starts or stops failing open or dropping
//! new flows. The reconciler feeds it the alarms of every plan it writes.
use std::collections::BTreeMap;

use tracing::{error, info, warn};

use super::model::{Alarm, AlarmKind, ListenerState};

/// What was last logged of one listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Logged {
    failing_open: bool,
    dropping: bool,
    /// Failing open after checks said every backend is down (an ERROR).
    alarm: bool,
}

/// The alarms last seen, per listener id.
#[derive(Debug, Default)]
pub struct AlarmLog {
    last: BTreeMap<u32, Logged>,
}

impl AlarmLog {
    /// Logs what changed between the last alarms and `alarms`, those of a
    /// plan of `listeners` (a listener without an alarm is in none).
    pub fn observe(&mut self, listeners: &[ListenerState], alarms: &[Alarm]) {
        let mut next = BTreeMap::new();
        for l in listeners {
            let prev = self.last.remove(&l.id).unwrap_or_default();
            let a = alarms.iter().find(|a| a.listener == l.id);
            let unchecked = a.is_some_and(|a| a.unchecked);
            let now = Logged {
                failing_open: a.is_some_and(|a| a.kind == AlarmKind::FailingOpen),
                dropping: a.is_some_and(|a| a.kind == AlarmKind::Dropping),
                alarm: a.is_some_and(|a| a.kind == AlarmKind::FailingOpen && !a.unchecked),
            };
            log_edges(&l.name, prev, now, unchecked);
            next.insert(l.id, now);
        }
        self.last = next;
    }
}

fn log_edges(listener: &str, prev: Logged, now: Logged, unchecked: bool) {
    if now.failing_open && !prev.failing_open && unchecked {
        info!(listener = %listener, "no backend checked yet: new flows spread over all configured backends until the first checks");
    }
    if now.alarm && !prev.alarm {
        error!(listener = %listener, "every backend is down: failing open, new flows spread over all configured backends");
    }
    if !now.failing_open && prev.failing_open {
        info!(listener = %listener, "no longer failing open");
    }
    if now.dropping == prev.dropping {
        return;
    }
    match (now.dropping, unchecked) {
        (true, true) => {
            info!(listener = %listener, "no backend checked yet: new flows are dropped until the first checks (all_down = \"drop\")")
        }
        (true, false) => {
            warn!(listener = %listener, "every backend is down: new flows are dropped (all_down = \"drop\")")
        }
        (false, _) => info!(listener = %listener, "a backend is up again: new flows accepted"),
    }
}
