//! The last health transitions of a check target, for `lb status`.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::state::Health;

/// Transitions kept per target.
pub const HISTORY_LEN: usize = 10;

/// One change of a target's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// When, as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`).
    pub at: String,
    /// When, as milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Health before.
    pub from: Health,
    /// Health after.
    pub to: Health,
    /// Reason of the check result that caused it (`ok`, `refused`,
    /// `timeout`, `tls: …`, `http 500`, …).
    pub reason: String,
}

impl Transition {
    /// A transition at `at`.
    pub fn new(at: SystemTime, from: Health, to: Health, reason: impl Into<String>) -> Transition {
        let unix_ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Transition {
            at: humantime::format_rfc3339_millis(at).to_string(),
            unix_ms,
            from,
            to,
            reason: reason.into(),
        }
    }
}

/// The last [`HISTORY_LEN`] transitions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    entries: VecDeque<Transition>,
}

impl History {
    /// Empty.
    pub fn new() -> History {
        History::default()
    }

    /// Appends `t`, forgetting the oldest entry beyond [`HISTORY_LEN`].
    pub fn push(&mut self, t: Transition) {
        if self.entries.len() == HISTORY_LEN {
            self.entries.pop_front();
        }
        self.entries.push_back(t);
    }

    /// The transitions kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Transition> + ExactSizeIterator {
        self.entries.iter()
    }

    /// The transitions kept, oldest first, as a vector.
    pub fn to_vec(&self) -> Vec<Transition> {
        self.entries.iter().cloned().collect()
    }

    /// Number of transitions kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no transition happened yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn transition_times_are_rfc3339_and_unix_ms() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let t = Transition::new(at, Health::Up, Health::Down, "http 500");
        assert_eq!(t.at, "2023-11-14T22:13:20.123Z");
        assert_eq!(t.unix_ms, 1_700_000_000_123);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["from"], "up");
        assert_eq!(json["to"], "down");
        assert_eq!(json["reason"], "http 500");
        let back: Transition = serde_json::from_value(json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn keeps_the_last_ten_oldest_first() {
        let mut h = History::new();
        assert!(h.is_empty());
        for i in 0..25u64 {
            let (from, to) = if i % 2 == 0 {
                (Health::Up, Health::Down)
            } else {
                (Health::Down, Health::Up)
            };
            h.push(Transition::new(
                UNIX_EPOCH + Duration::from_secs(i),
                from,
                to,
                format!("r{i}"),
            ));
            assert_eq!(h.len(), (i as usize + 1).min(HISTORY_LEN));
        }
        let reasons: Vec<&str> = h.iter().map(|t| t.reason.as_str()).collect();
        let want: Vec<String> = (15..25).map(|i| format!("r{i}")).collect();
        assert_eq!(reasons, want);
        assert_eq!(h.to_vec().last().unwrap().unix_ms, 24_000);
    }
}
