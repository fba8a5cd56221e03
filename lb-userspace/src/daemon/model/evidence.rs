//! Evidence of life from the data path, and what the daemon makes of it.
//!
//! The XDP program records per real when it last sent the node a segment
//! that wants an answer (data, SYN, FIN), when the node last sent anything,
//! since when sent segments have gone unanswered, and when the node last
//! refused a SYN (`lb_common::evidence`). The daemon reads these every tick
//! (250 ms) into an [`Evidence`].
//!
//! # Dead, or only failing checks
//!
//! Check results alone cannot tell a dead node from a filtered check path,
//! whatever the filter answers (a timeout, a RST, an ICMP error). The data
//! path can: a node whose checks fail but that keeps answering the traffic
//! it is sent is alive (a survivor's disagreement, a firewall in front of
//! the check port), and keeps its tracked flows. A node whose checks fail
//! **and** that has left the traffic it was sent unanswered for
//! [`SILENCE_BOUND`] is dead: its tracked flows are rescheduled on their
//! next packet (the new node resets them and clients reconnect at once) and
//! it leaves the mid-flow table. `deregistration_delay` stays the upper
//! bound, for nodes nobody sends anything to.
//!
//! # The bound
//!
//! An answer here is the node's kernel acknowledging a segment, which a
//! live host does within a round trip plus its delayed-ACK time (40 ms to
//! 200 ms on Linux, at most 500 ms by RFC 1122), whatever its API server
//! does; the client retransmits unanswered data after its RTO (200 ms and
//! up), so a live node has several chances within two seconds. The data
//! path records times to a 250 ms tick and the daemon reads them every
//! 250 ms. Two seconds of silence is therefore well past what a live node
//! shows and, with the default checks (every 2 s, 2 failures: down within
//! 4–5 s of a power cut), already reached when the node goes down: the
//! streams that were sending are cut at the down verdict, and each is reset
//! at its client's next retransmission (Linux backs off 0.2, 0.6, 1.4, 3,
//! 6.2, 12.6 s after the death: about 6 s after a death detected at 4–5 s).
//! An idle stream is cut at its next packet once the node is judged dead by
//! any of its streams, or [`SILENCE_BOUND`] after that packet otherwise.
//!
//! # Refusals
//!
//! A node that answers a client's SYN with a RST (its API server process
//! died, the host is up) has its RST kept from the client by the data path
//! while another node serves. The daemon sees the refusal here and takes
//! the node out of the new-flow table at once ([`Target::refused_at`]),
//! before the client's SYN retransmission (1 s); the node's next check
//! confirms it (down) or clears it (a check that started after the refusal
//! succeeds). The client sees a one-second delay instead of "connection
//! refused".
//!
//! The evidence is owned by the [`super::Model`] (read by
//! [`super::Model::observe_evidence`]); the targets keep the refusal marks
//! (`super::targets`). The reference is `docs/evidence.md`.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lb_common::RealSeen;
use tracing::{info, warn};

use super::targets::Target;
use crate::dataplane::Plan;
use crate::health::{CheckOutcome, Health};

/// How long a node that fails its checks may leave traffic it was sent
/// unanswered before it counts as dead (see the module doc for why).
pub const SILENCE_BOUND: Duration = Duration::from_secs(2);

/// The data path's evidence per real, as read at one moment.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Per real id, what the data path recorded.
    pub seen: BTreeMap<u32, RealSeen>,
    /// The data path's clock (CLOCK_MONOTONIC, ns) when `seen` was read.
    pub now_ns: u64,
    /// Refusal episodes already acted on, per real id.
    refusals: BTreeMap<u32, u64>,
    /// Reals that kept their flows while down at the last plan.
    kept_down: BTreeSet<u32>,
}

/// A dead node's flows being cut: what the log line says.
#[derive(Clone, Debug, PartialEq)]
pub struct Cut {
    /// Real id.
    pub real: u32,
    /// Node name.
    pub backend: String,
    /// Listener id.
    pub listener: u32,
    /// How long it left traffic unanswered.
    pub silent: Duration,
}

impl Evidence {
    /// How long real `id` has left recorded sends unanswered.
    pub fn silent(&self, id: u32) -> Duration {
        self.seen
            .get(&id)
            .map(|s| Duration::from_nanos(s.silent_ns(self.now_ns)))
            .unwrap_or_default()
    }

    /// Time since real `id` last sent anything the data path translated
    /// (`None`: never seen).
    pub fn last_reply_age(&self, id: u32) -> Option<Duration> {
        let s = self.seen.get(&id)?;
        (s.reply_ns != 0).then(|| Duration::from_nanos(self.now_ns.saturating_sub(s.reply_ns)))
    }

    /// True when real `id` has been silent for [`SILENCE_BOUND`].
    pub fn is_silent(&self, id: u32) -> bool {
        self.silent(id) >= SILENCE_BOUND
    }

    /// Takes a new reading; returns the reals that started a refusal
    /// episode since the last one (the first reading only remembers them:
    /// a restarted daemon does not act on old refusals).
    pub fn update(&mut self, seen: BTreeMap<u32, RealSeen>, now_ns: u64) -> Vec<u32> {
        let first = self.now_ns == 0;
        let mut refused = Vec::new();
        for (id, s) in &seen {
            if s.refused_ns == 0 {
                continue;
            }
            let prev = self.refusals.insert(*id, s.refused_ns);
            if !first && prev != Some(s.refused_ns) {
                refused.push(*id);
            }
        }
        self.seen = seen;
        self.now_ns = now_ns;
        refused
    }

    /// Compares `plan` with the previous one: reals that kept their flows
    /// while down and no longer do (silent, or past their grace) are cuts
    /// to log. `down` says whether a real is down by checks.
    pub fn cuts(&mut self, plan: &Plan, down: impl Fn(u32) -> bool) -> Vec<Cut> {
        let mut cuts = Vec::new();
        let mut kept = BTreeSet::new();
        for l in &plan.listeners {
            for r in &l.reals {
                let is_down = down(r.id);
                if r.keeps_flows && is_down && !r.draining {
                    kept.insert(r.id);
                } else if !r.keeps_flows && is_down && self.kept_down.contains(&r.id) {
                    cuts.push(Cut {
                        real: r.id,
                        backend: r.name.clone(),
                        listener: l.id,
                        silent: self.silent(r.id),
                    });
                }
            }
        }
        self.kept_down = kept;
        cuts
    }
}

/// Marks `t` refused by the data path at `now`: it leaves the new-flow
/// table until its checks confirm or clear it. True when newly marked.
pub fn mark_refused(t: &mut Target, now: Instant) -> bool {
    if t.state.health() != Health::Up || t.refused_at.is_some() {
        return false;
    }
    t.refused_at = Some(now);
    warn!(backend = %t.backend, target = %t.key.addr, "backend refused a connection (RST to a SYN): out of new-flow choices until its checks confirm or clear it; the client's retried SYN goes to another node");
    true
}

/// What a check result does to a refusal mark: a success of a check that
/// started after the refusal clears it; the node going down confirms it
/// (the checks take over). True when the mark ended.
pub fn on_check(t: &mut Target, outcome: &CheckOutcome, now: Instant) -> bool {
    let Some(at) = t.refused_at else {
        return false;
    };
    let started = now.checked_sub(outcome.duration).unwrap_or(now);
    if outcome.success && started >= at {
        info!(backend = %t.backend, target = %t.key.addr, "refusal cleared: a check passed after it; back in new-flow choices");
        t.refused_at = None;
        return true;
    }
    if t.state.health() == Health::Down {
        t.refused_at = None;
        return true;
    }
    false
}

#[cfg(test)]
#[path = "evidence_tests.rs"]
mod tests;
