//! The metric family of each global counter.
use lb_common::{Disposition, Reason};

/// What a global counter ([`Reason`]) counts, for its metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasonKind {
    /// The XDP action a packet ended with (`lb_xdp_actions_total`).
    Action,
    /// A reason a packet was passed to the kernel (`lb_xdp_passed_packets_total`).
    Passed,
    /// A reason a packet was dropped (`lb_xdp_dropped_packets_total`).
    Dropped,
    /// A data-path event (`lb_xdp_events_total`).
    Event,
}

/// The family each global counter belongs to. Exhaustive, so a new
/// [`Reason`] does not compile until it is placed.
pub const fn reason_kind(r: Reason) -> ReasonKind {
    // The disposition is decided next to the reasons (lb-common), once.
    match r.disposition() {
        Disposition::Action => ReasonKind::Action,
        Disposition::Pass => ReasonKind::Passed,
        Disposition::Drop => ReasonKind::Dropped,
        Disposition::Event => ReasonKind::Event,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_one_kind_and_actions_come_first() {
        for r in Reason::ALL {
            let is_action = (r as u32) <= 4;
            assert_eq!(reason_kind(r) == ReasonKind::Action, is_action, "{r:?}");
        }
        assert_eq!(reason_kind(Reason::DropNoBackend), ReasonKind::Dropped);
        assert_eq!(reason_kind(Reason::PassDirect), ReasonKind::Passed);
        assert_eq!(reason_kind(Reason::NewFlow), ReasonKind::Event);
    }
}
