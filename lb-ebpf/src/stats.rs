//! Per-CPU counters. No atomics are needed: each CPU owns its slot.
use lb_common::{ListenerStats, RealStats, Reason};

use crate::maps::{LISTENER_STATS, REAL_STATS, STATS};

/// Counts one packet under `reason`.
#[inline(always)]
pub fn count(reason: Reason) {
    if let Some(p) = STATS.get_ptr_mut(reason as u32) {
        // SAFETY: per-CPU slot owned by this CPU for the program's run.
        unsafe { *p += 1 };
    }
}

/// Counts one packet under its XDP action (actions are indices 0..=4).
#[inline(always)]
pub fn count_action(action: u32) {
    if action <= 4 {
        if let Some(p) = STATS.get_ptr_mut(action) {
            // SAFETY: as in `count`.
            unsafe { *p += 1 };
        }
    }
}

/// Runs `f` on this CPU's counters of real `id`.
#[inline(always)]
pub fn real(id: u32, f: impl FnOnce(&mut RealStats)) {
    if let Some(p) = REAL_STATS.get_ptr_mut(id) {
        // SAFETY: as in `count`.
        f(unsafe { &mut *p });
    }
}

/// Runs `f` on this CPU's counters of listener `id`.
#[inline(always)]
pub fn listener(id: u32, f: impl FnOnce(&mut ListenerStats)) {
    if let Some(p) = LISTENER_STATS.get_ptr_mut(id) {
        // SAFETY: as in `count`.
        f(unsafe { &mut *p });
    }
}
