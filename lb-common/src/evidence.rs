//! Evidence of life from the data path: per real (backend endpoint of a
//! listener), when the XDP program last sent it a segment that wants an
//! answer, when it last saw a packet from it, since when a sent segment
//! has gone unanswered, and when it last kept a refusal (a RST to a SYN)
//! from a client.
//!
//! # Cost
//! The values live in one shared (not per-CPU) array, [`MAP_REAL_SEEN`],
//! so every CPU reads the same times. A field is written only when its
//! stored time is older than [`EVIDENCE_TICK_NS`] (or, for the answer,
//! older than the last recorded send): a few writes per real per second
//! however many packets pass, never one per packet.
//!
//! # What counts
//! A segment *wants an answer* when it carries data, a SYN or a FIN: a live
//! host's kernel acknowledges it within a round trip and its delayed-ACK
//! time, whatever its application does. A bare ACK wants none (the client
//! acknowledging a watch event gets no reply), so it is not recorded:
//! otherwise a quiet, live node would look silent. Any packet from the
//! real counts as an answer, a RST included (a host that resets is alive
//! and its clients already know).
//!
//! A real is *silent* ([`RealSeen::silent_ns`]) while the last recorded
//! send is newer than the last recorded answer; the wait is measured from
//! the first send after the last answer ([`RealSeen::waiting_ns`]), so a
//! node that merely had nothing to do for an hour is not silent the moment
//! a client speaks to it.

/// `Array<RealSeen>`: evidence of life per real, indexed by real id.
pub const MAP_REAL_SEEN: &str = "REAL_SEEN";

/// Granularity of the times in [`RealSeen`]: a stored time is rewritten
/// only when it is older than this (bounds the writes to the shared array).
pub const EVIDENCE_TICK_NS: u64 = 250_000_000;

/// A refusal episode of a real (its RSTs to SYNs kept from clients) lasts
/// this long from its first refusal: long enough for the daemon to take the
/// real out of the new-flow table (its tick is 250 ms) before the client's
/// first SYN retransmission (1 s on Linux), short enough that a refusing
/// node the daemon keeps serving (its checks disagree) delays its clients'
/// "connection refused" by at most this.
pub const REFUSED_KEEP_NS: u64 = 2_000_000_000;

/// A refusal this long after the start of the last episode starts a new one.
pub const REFUSED_EPISODE_NS: u64 = 10_000_000_000;

/// Value of [`MAP_REAL_SEEN`]. Times are `bpf_ktime_get_coarse_ns`
/// (CLOCK_MONOTONIC, coarse); 0 means never.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealSeen {
    /// Last recorded segment sent to the real that wants an answer.
    pub sent_ns: u64,
    /// Last recorded packet from the real.
    pub reply_ns: u64,
    /// First recorded send after the last answer: the start of the current
    /// wait (meaningful while `sent_ns > reply_ns`).
    pub waiting_ns: u64,
    /// Start of the last refusal episode (see [`RealSeen::note_refused`]).
    pub refused_ns: u64,
}

impl RealSeen {
    /// A segment that wants an answer was sent to the real at `now`.
    /// Writes only when the stored send is older than a tick.
    #[inline(always)]
    pub fn note_sent(&mut self, now: u64) {
        if now.wrapping_sub(self.sent_ns) > EVIDENCE_TICK_NS {
            if self.sent_ns <= self.reply_ns {
                // Everything recorded so far was answered: a wait starts.
                self.waiting_ns = now;
            }
            self.sent_ns = now;
        }
    }

    /// A packet came from the real at `now`. Writes when the stored answer
    /// is older than a tick or than the last recorded send.
    #[inline(always)]
    pub fn note_reply(&mut self, now: u64) {
        if self.reply_ns < self.sent_ns || now.wrapping_sub(self.reply_ns) > EVIDENCE_TICK_NS {
            self.reply_ns = now;
        }
    }

    /// The real refused a SYN (answered it with a RST) at `now`. Returns
    /// true when the RST is kept from the client: within
    /// [`REFUSED_KEEP_NS`] of the start of this refusal episode. Writes
    /// only when a new episode starts.
    #[inline(always)]
    pub fn note_refused(&mut self, now: u64) -> bool {
        if self.refused_ns == 0 || now.wrapping_sub(self.refused_ns) > REFUSED_EPISODE_NS {
            self.refused_ns = now;
        }
        now.wrapping_sub(self.refused_ns) <= REFUSED_KEEP_NS
    }

    /// How long the real has left recorded sends unanswered at `now`
    /// (0 when it answered the last one).
    pub fn silent_ns(&self, now: u64) -> u64 {
        if self.sent_ns > self.reply_ns {
            now.saturating_sub(self.waiting_ns)
        } else {
            0
        }
    }
}

/// True when a client segment wants an answer: it carries data, a SYN or
/// a FIN (`ip_len` is the IP packet length, `hdrs` the network headers'
/// length, `doff` the TCP header's).
#[inline(always)]
pub fn wants_answer(flags: u8, ip_len: u16, hdrs: u16, doff: u16) -> bool {
    flags & (crate::tcp::SYN | crate::tcp::FIN) != 0 || ip_len > hdrs.wrapping_add(doff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = EVIDENCE_TICK_NS;

    #[test]
    fn sends_are_written_once_a_tick_and_start_a_wait_after_an_answer() {
        let mut s = RealSeen::default();
        s.note_sent(10 * T);
        assert_eq!((s.sent_ns, s.waiting_ns), (10 * T, 10 * T));
        // Within the tick: nothing written.
        s.note_sent(10 * T + T / 2);
        assert_eq!(s.sent_ns, 10 * T);
        // The answer is written at once (older than the send).
        s.note_reply(10 * T + 1);
        assert_eq!(s.reply_ns, 10 * T + 1);
        assert_eq!(s.silent_ns(20 * T), 0);
        // Further answers within the tick: not written.
        s.note_reply(10 * T + 2);
        assert_eq!(s.reply_ns, 10 * T + 1);
        // A send a tick later starts a new wait; a later one keeps it.
        s.note_sent(11 * T + 1);
        assert_eq!(s.waiting_ns, 11 * T + 1);
        s.note_sent(13 * T);
        assert_eq!((s.sent_ns, s.waiting_ns), (13 * T, 11 * T + 1));
        assert_eq!(s.silent_ns(20 * T), 9 * T - 1);
        // The answer ends the wait.
        s.note_reply(13 * T + 5);
        assert_eq!(s.silent_ns(20 * T), 0);
    }

    #[test]
    fn a_long_idle_node_is_not_silent_when_spoken_to() {
        let mut s = RealSeen::default();
        s.note_sent(T + 1);
        s.note_reply(T + 2);
        s.note_sent(1000 * T);
        assert_eq!(s.silent_ns(1000 * T + 1), 1);
    }

    #[test]
    fn refusals_are_kept_for_a_bounded_time_per_episode() {
        let mut s = RealSeen::default();
        let start = 100 * T;
        assert!(s.note_refused(start));
        assert!(s.note_refused(start + REFUSED_KEEP_NS));
        assert!(!s.note_refused(start + REFUSED_KEEP_NS + 1));
        assert_eq!(s.refused_ns, start);
        assert!(s.note_refused(start + REFUSED_EPISODE_NS + 1));
        assert_eq!(s.refused_ns, start + REFUSED_EPISODE_NS + 1);
    }

    #[test]
    fn only_data_syn_and_fin_want_an_answer() {
        use crate::tcp::{ACK, FIN, SYN};
        assert!(!wants_answer(ACK, 40, 20, 20));
        assert!(wants_answer(ACK, 45, 20, 20));
        assert!(wants_answer(SYN, 60, 20, 40));
        assert!(wants_answer(FIN | ACK, 40, 20, 20));
    }
}
