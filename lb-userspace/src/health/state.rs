//! The per-backend health state machine: pure, no I/O, no clocks.

use std::fmt;

use super::history::{History, Transition};

/// Whether a backend takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Passing checks: in the Maglev table.
    Up,
    /// Failing checks: out of the Maglev table.
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// Consecutive check results of one backend and the health they imply.
///
/// A backend goes [`Health::Down`] after `unhealthy_threshold` consecutive
/// failed checks and comes back [`Health::Up`] after `healthy_threshold`
/// consecutive successful ones. Any success resets the failure streak and
/// any failure resets the success streak, so a flapping backend keeps its
/// current state as long as both thresholds are at least 2.
///
/// Thresholds of 0 are treated as 1.
///
/// It also keeps the last transitions (with their time and reason) the
/// caller records with [`HealthState::push_transition`], so whoever carries
/// the state over (e.g. across a reload) carries its history too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    health: Health,
    /// Up, but not yet confirmed by a successful check: the first failure
    /// takes the backend down regardless of `unhealthy_threshold`.
    probation: bool,
    successes: u32,
    failures: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    history: History,
}

impl HealthState {
    /// Starts [`Health::Up`] but "on probation": like HAProxy, a backend is
    /// assumed up at start and a single failed check before its first success
    /// takes it down; after that, `unhealthy_threshold` consecutive failures
    /// take it down and `healthy_threshold` consecutive successes bring it
    /// back.
    pub fn new(healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self {
            probation: true,
            ..Self::with_state(Health::Up, healthy_threshold, unhealthy_threshold)
        }
    }

    /// Restores a known state (used when adopting a running data path): no
    /// probation, empty streaks.
    pub fn with_state(health: Health, healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self {
            health,
            probation: false,
            successes: 0,
            failures: 0,
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
            history: History::new(),
        }
    }

    /// Changes the thresholds (a reload changed them), keeping the health,
    /// the current streaks and the history.
    pub fn set_thresholds(&mut self, healthy_threshold: u32, unhealthy_threshold: u32) {
        self.healthy_threshold = healthy_threshold.max(1);
        self.unhealthy_threshold = unhealthy_threshold.max(1);
    }

    /// The current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Whether the backend is still up on the start-up assumption alone, with
    /// no successful check yet (see [`HealthState::new`]).
    pub fn on_probation(&self) -> bool {
        self.probation
    }

    /// Records one check result; returns `Some(new_health)` exactly when the
    /// health changes.
    pub fn record(&mut self, success: bool) -> Option<Health> {
        let probation = std::mem::replace(&mut self.probation, false);
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.health == Health::Down && self.successes >= self.healthy_threshold {
                self.health = Health::Up;
                return Some(Health::Up);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.health == Health::Up && (probation || self.failures >= self.unhealthy_threshold)
            {
                self.health = Health::Down;
                return Some(Health::Down);
            }
        }
        None
    }

    /// Length of the current streak of successful checks (0 after a failure).
    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    /// Length of the current streak of failed checks (0 after a success).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Remembers a transition (see [`History`]: the last few are kept).
    pub fn push_transition(&mut self, t: Transition) {
        self.history.push(t);
    }

    /// The last transitions, oldest first.
    pub fn history(&self) -> &History {
        &self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state that has passed probation (one success), thresholds as given.
    fn settled(healthy: u32, unhealthy: u32) -> HealthState {
        let mut s = HealthState::new(healthy, unhealthy);
        assert_eq!(s.record(true), None);
        assert!(!s.on_probation());
        s
    }

    #[test]
    fn down_exactly_after_unhealthy_threshold_failures() {
        for n in 1..=5 {
            let mut s = settled(2, n);
            for i in 1..n {
                assert_eq!(s.record(false), None, "n={n} i={i}");
                assert_eq!(s.health(), Health::Up);
                assert_eq!(s.consecutive_failures(), i);
            }
            assert_eq!(s.record(false), Some(Health::Down), "n={n}");
            assert_eq!(s.health(), Health::Down);
            // Further failures change nothing.
            assert_eq!(s.record(false), None);
            assert_eq!(s.consecutive_failures(), n + 1);
        }
    }

    #[test]
    fn up_exactly_after_healthy_threshold_successes() {
        for m in 1..=5 {
            let mut s = HealthState::with_state(Health::Down, m, 3);
            for i in 1..m {
                assert_eq!(s.record(true), None, "m={m} i={i}");
                assert_eq!(s.health(), Health::Down);
                assert_eq!(s.consecutive_successes(), i);
            }
            assert_eq!(s.record(true), Some(Health::Up), "m={m}");
            assert_eq!(s.health(), Health::Up);
            assert_eq!(s.record(true), None);
            assert_eq!(s.consecutive_successes(), m + 1);
        }
    }

    #[test]
    fn success_resets_failure_streak_and_vice_versa() {
        let mut s = settled(3, 3);
        s.record(false);
        s.record(false);
        assert_eq!(s.consecutive_failures(), 2);
        assert_eq!(s.record(true), None);
        assert_eq!(s.consecutive_failures(), 0);
        assert_eq!(s.consecutive_successes(), 1);
        // Needs a full new streak of 3 failures.
        assert_eq!(s.record(false), None);
        assert_eq!(s.consecutive_successes(), 0);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), Some(Health::Down));

        s.record(true);
        s.record(true);
        assert_eq!(s.consecutive_successes(), 2);
        assert_eq!(s.record(false), None);
        assert_eq!(s.consecutive_successes(), 0);
        assert_eq!(s.health(), Health::Down);
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), Some(Health::Up));
    }

    #[test]
    fn flapping_never_changes_state() {
        for (h, u) in [(2, 2), (2, 5), (5, 2), (3, 3)] {
            let mut up = settled(h, u);
            let mut down = HealthState::with_state(Health::Down, h, u);
            for i in 0..100 {
                assert_eq!(up.record(i % 2 == 0), None);
                assert_eq!(down.record(i % 2 == 1), None);
            }
            assert_eq!(up.health(), Health::Up);
            assert_eq!(down.health(), Health::Down);
        }
    }

    #[test]
    fn probation_first_failure_takes_down() {
        let mut s = HealthState::new(2, 3);
        assert_eq!(s.health(), Health::Up);
        assert!(s.on_probation());
        assert_eq!(s.record(false), Some(Health::Down));
        assert!(!s.on_probation());
        // Back up only after healthy_threshold successes.
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(true), Some(Health::Up));
        // Now settled: a single failure is not enough any more.
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), Some(Health::Down));
    }

    #[test]
    fn probation_ends_with_first_success() {
        let mut s = HealthState::new(2, 3);
        assert_eq!(s.record(true), None);
        assert!(!s.on_probation());
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(false), None);
        assert_eq!(s.health(), Health::Up);
        assert_eq!(s.record(false), Some(Health::Down));
    }

    #[test]
    fn with_state_has_no_probation() {
        let mut s = HealthState::with_state(Health::Up, 2, 3);
        assert!(!s.on_probation());
        assert_eq!(s.record(false), None);
        assert_eq!(s.health(), Health::Up);
        let s = HealthState::with_state(Health::Down, 2, 3);
        assert_eq!(s.health(), Health::Down);
        assert_eq!(s.consecutive_failures(), 0);
        assert_eq!(s.consecutive_successes(), 0);
    }

    #[test]
    fn thresholds_of_one_follow_every_result() {
        let mut s = settled(1, 1);
        assert_eq!(s.record(false), Some(Health::Down));
        assert_eq!(s.record(true), Some(Health::Up));
        assert_eq!(s.record(true), None);
        assert_eq!(s.record(false), Some(Health::Down));
        assert_eq!(s.record(false), None);
        assert_eq!(s.record(true), Some(Health::Up));
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut s = settled(0, 0);
        assert_eq!(s.record(false), Some(Health::Down));
        assert_eq!(s.record(true), Some(Health::Up));
    }

    #[test]
    fn transitions_are_kept_and_travel_with_the_state() {
        let mut s = HealthState::new(1, 1);
        assert!(s.history().is_empty());
        let at = std::time::UNIX_EPOCH;
        s.push_transition(Transition::new(at, Health::Up, Health::Down, "refused"));
        s.push_transition(Transition::new(at, Health::Down, Health::Up, "ok"));
        let copy = s.clone();
        let reasons: Vec<&str> = copy.history().iter().map(|t| t.reason.as_str()).collect();
        assert_eq!(reasons, ["refused", "ok"]);
    }

    #[test]
    fn display_and_serde_are_lowercase() {
        assert_eq!(Health::Up.to_string(), "up");
        assert_eq!(Health::Down.to_string(), "down");
        assert_eq!(serde_json::to_string(&Health::Up).unwrap(), "\"up\"");
        assert_eq!(serde_json::to_string(&Health::Down).unwrap(), "\"down\"");
        let h: Health = serde_json::from_str("\"down\"").unwrap();
        assert_eq!(h, Health::Down);
    }
}
