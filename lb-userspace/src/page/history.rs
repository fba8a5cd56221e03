//! A bounded history of each backend's counters, sampled every few seconds
//! by the page's sampler task, for the rates and charts of the status page.
//!
//! One ring per (listener, backend) of at most [`CAPACITY`] samples; a pair
//! that stops appearing (removed by a reload) is forgotten once its newest
//! sample is older than the window. Memory is bounded by the number of
//! configured pairs times [`CAPACITY`].
use std::collections::{BTreeMap, VecDeque};

use crate::daemon::status::Status;

/// Time between two samples, in milliseconds.
pub const SAMPLE_EVERY_MS: u64 = 5_000;

/// How far back the charts go, in milliseconds (15 minutes).
pub const WINDOW_MS: u64 = 15 * 60 * 1000;

/// Samples kept per (listener, backend): the window, plus one so that the
/// oldest interval of the window has its start.
pub const CAPACITY: usize = (WINDOW_MS / SAMPLE_EVERY_MS) as usize + 1;

/// A (listener name, backend name) pair.
pub type Key = (String, String);

/// The counters of one backend of one listener at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// Flows assigned so far.
    pub new_flows: u64,
    /// Bytes client → backend so far.
    pub fwd_bytes: u64,
    /// Bytes backend → client so far.
    pub rev_bytes: u64,
}

/// Per-second rates between two samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// New flows per second.
    pub new_flows: f64,
    /// Bytes per second, client → backend.
    pub fwd_bytes: f64,
    /// Bytes per second, backend → client.
    pub rev_bytes: f64,
}

impl Rates {
    /// The rates from `a` to the later `b`; `None` when less than a second
    /// apart. A counter that went back (fresh maps) counts as zero.
    pub fn between(a: &Counts, b: &Counts) -> Option<Rates> {
        let ms = b.unix_ms.checked_sub(a.unix_ms)?;
        if ms < 1000 {
            return None;
        }
        let secs = ms as f64 / 1000.0;
        let per = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        Some(Rates {
            new_flows: per(a.new_flows, b.new_flows),
            fwd_bytes: per(a.fwd_bytes, b.fwd_bytes),
            rev_bytes: per(a.rev_bytes, b.rev_bytes),
        })
    }
}

/// The sampled counters of every (listener, backend).
#[derive(Clone, Debug, Default)]
pub struct History {
    series: BTreeMap<Key, VecDeque<Counts>>,
}

/// The counters of every backend in `status`, stamped `unix_ms`.
pub fn counts_of(status: &Status, unix_ms: u64) -> Vec<(Key, Counts)> {
    status
        .listeners
        .iter()
        .flat_map(|l| {
            l.backends.iter().map(move |b| {
                (
                    (l.name.clone(), b.name.clone()),
                    Counts {
                        unix_ms,
                        new_flows: b.new_flows,
                        fwd_bytes: b.fwd_bytes,
                        rev_bytes: b.rev_bytes,
                    },
                )
            })
        })
        .collect()
}

impl History {
    /// Empty.
    pub fn new() -> History {
        History::default()
    }

    /// Records one sample of every pair in `counts` (all stamped alike),
    /// dropping samples beyond [`CAPACITY`] and pairs not seen for a window.
    pub fn record(&mut self, counts: Vec<(Key, Counts)>) {
        let mut newest = 0;
        for (key, c) in counts {
            newest = newest.max(c.unix_ms);
            let ring = self.series.entry(key).or_default();
            if ring.back().is_some_and(|last| last.unix_ms >= c.unix_ms) {
                continue;
            }
            if ring.len() == CAPACITY {
                ring.pop_front();
            }
            ring.push_back(c);
        }
        self.series.retain(|_, ring| {
            ring.back()
                .is_some_and(|last| last.unix_ms + WINDOW_MS >= newest)
        });
    }

    /// The samples of one pair, oldest first (empty when unknown).
    pub fn samples(&self, listener: &str, backend: &str) -> Vec<Counts> {
        self.series
            .get(&(listener.to_owned(), backend.to_owned()))
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Time of the oldest sample kept, if any.
    pub fn oldest(&self) -> Option<u64> {
        self.series
            .values()
            .filter_map(|r| r.front())
            .map(|c| c.unix_ms)
            .min()
    }

    /// Number of pairs with samples.
    pub fn pairs(&self) -> usize {
        self.series.len()
    }

    /// Rates of a pair up to `now` (its current counters): against its
    /// newest sample at least a second older, else `None`.
    pub fn rates(&self, listener: &str, backend: &str, now: &Counts) -> Option<Rates> {
        let key = (listener.to_owned(), backend.to_owned());
        let ring = self.series.get(&key)?;
        ring.iter()
            .rev()
            .find(|s| s.unix_ms + 1000 <= now.unix_ms)
            .and_then(|s| Rates::between(s, now))
    }
}

/// New flows per second over each interval between consecutive samples:
/// `(end of the interval in ms, rate)`, oldest first.
pub fn new_flow_rates(samples: &[Counts]) -> Vec<(u64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| Rates::between(&w[0], &w[1]).map(|r| (w[1].unix_ms, r.new_flows)))
        .collect()
}
