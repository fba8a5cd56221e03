//! Indices of the global per-CPU counters in [`crate::MAP_STATS`].
//!
//! XDP actions occupy indices 0..=4 (the action's own value); the reasons a
//! packet was passed, dropped or handled follow.

/// Why the data path did what it did with a packet. `Reason as u32` is the
/// index in [`crate::MAP_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Action counter: XDP_ABORTED.
    ActionAborted = 0,
    /// Action counter: XDP_DROP.
    ActionDrop = 1,
    /// Action counter: XDP_PASS.
    ActionPass = 2,
    /// Action counter: XDP_TX.
    ActionTx = 3,
    /// Action counter: XDP_REDIRECT.
    ActionRedirect = 4,
    /// Passed: neither IPv4 nor IPv6 (ARP, VLAN-tagged, ...). The metric
    /// label stays `not_ipv4`, the name it had before the data path handled
    /// IPv6, so existing dashboards keep working; IPv6 frames are no longer
    /// counted here.
    PassNotIpv4 = 5,
    /// Passed: IPv4 or IPv6 but not TCP to a VIP nor a reply from a backend
    /// (ICMPv6 and neighbour discovery included; IPv6 frames to a multicast
    /// MAC are counted here without being parsed).
    PassNotBalanced = 6,
    /// Passed: a reply from a backend port addressed to the gateway itself.
    PassLocal = 7,
    /// Passed after rewriting: the next hop's MAC is not resolved yet.
    PassNoNeigh = 8,
    /// Passed: the route lookup did not give a forwarding result (unreachable,
    /// blackhole, forwarding disabled, ...); the kernel decides.
    PassNoRoute = 9,
    /// Passed: frame too short to hold the headers it claims (not aimed at a VIP).
    PassTruncated = 10,
    /// Passed after rewriting: the egress interface is not one the program
    /// redirects to (not in `TX_PORTS`); the kernel forwards it.
    PassNoTxPort = 11,
    /// Dropped: malformed packet aimed at a VIP (bad IHL, bad total length, truncated TCP).
    DropMalformed = 12,
    /// Dropped: IP fragment aimed at a VIP (IPv4 MF/offset, or an IPv6
    /// fragment header).
    DropFragment = 13,
    /// Dropped: IPv4 TTL would reach zero (IPv6: [`Reason::PassHopLimit`]).
    DropTtl = 14,
    /// Dropped: no backend can take a new flow and `all_down = "drop"`.
    DropNoBackend = 15,
    /// Counted (and forwarded): IPv4 header with options, or IPv6 extension
    /// headers before TCP, aimed at a VIP.
    IpOptions = 16,
    /// A flow was assigned a backend by Maglev.
    NewFlow = 17,
    /// A packet matched a tracked flow.
    ConntrackHit = 18,
    /// A tracked flow was moved off a backend that is gone or proven dead.
    Rescheduled = 19,
    /// A reply matched a tracked flow and was reverse-translated.
    ReplyTracked = 20,
    /// A reply had no tracked flow and was translated from the listener mapping.
    ReplyFallback = 21,
    /// Inserting a conntrack entry failed (the packet is still forwarded).
    ConntrackInsertFailed = 22,
    /// Passed: a connection straight to a backend's listener port (not
    /// through a VIP), or a reply of one; tracked so replies stay untranslated.
    PassDirect = 23,
    /// Dropped: a reply from a backend endpoint with no tracked or embryonic
    /// flow, whose endpoint serves more than one VIP:port (no unambiguous
    /// fallback). Forwarding it would leak the node's own address; a rise
    /// means flows were evicted or the gateway lost its state.
    DropReplyUntranslatable = 24,
    /// Dropped: a reply from a backend address arrived on an interface from
    /// which that address is not routed (a forged reply, as `rp_filter`
    /// would judge it).
    DropWrongInterface = 25,
    /// Dropped: IPv4 header checksum wrong on a packet aimed at a VIP.
    DropBadChecksum = 26,
    /// Passed untouched: the frame's destination MAC is neither the
    /// receiving interface's nor one of its configured virtual MACs.
    PassNotForUs = 27,
    /// A packet of a flow the gateway does not track (not a SYN) was
    /// forwarded by Maglev (after a restart or a takeover); not a new flow.
    UntrackedMidFlow = 28,
    /// An embryonic flow proved established (handshake ACK, or a backend's
    /// answer to a mid-flow packet) and moved to the established tables.
    EmbryonicPromoted = 29,
    /// A RST whose sequence number is not plausible for its flow was
    /// forwarded without marking the flow closing.
    RstOutOfWindow = 30,
    /// An ICMP "fragmentation needed" about a tracked flow was translated.
    IcmpTranslated = 31,
    /// Passed: an IPv6 packet whose headers the program does not walk to a
    /// transport header: an extension header it does not parse (AH, ESP,
    /// no next header, mobility, HIP, shim6, experimental), a routing header
    /// with segments left, more extension headers than it walks, or one cut
    /// short by the frame's end. The kernel decides.
    PassIpv6Unparsed = 32,
    /// Passed: an IPv6 packet that would be forwarded with hop limit 1 or
    /// 0, handed to the kernel (unmodified) so it can answer with ICMPv6
    /// time exceeded.
    PassHopLimit = 33,
    /// Dropped: a new flow of a full-NAT listener (or a flow rebuilt or
    /// rescheduled) found every probed source port taken toward its node,
    /// or a mid-flow rebuild found its first-choice port held by another
    /// flow.
    DropSnatExhausted = 34,
    /// Dropped: a packet to a source-NAT address and a port inside the
    /// source-NAT range with no flow (tracked or embryonic) behind it.
    DropSnatNoEntry = 35,
    /// Dropped: a full-NAT listener's new flow with no source-NAT address
    /// of its family configured.
    DropSnatUnconfigured = 36,
    /// A full-NAT flow claimed a source port (new flow, mid-flow rebuild or
    /// reschedule).
    SnatPortClaimed = 37,
    /// A source port was taken over from a closed flow idle for
    /// `SNAT_REUSE_NS` (its entries were removed).
    SnatPortReused = 38,
    /// Answered: a packet to a listener (or a backend's reply) too big for
    /// the egress link's MTU, with DF set (IPv4) or IPv6, was answered by
    /// the program itself with ICMP "fragmentation needed" / ICMPv6
    /// "packet too big" quoting the packet as it arrived (the VIP as its
    /// destination), sent back out of the ingress interface (`XDP_TX`).
    TooBigAnswered = 39,
    /// Passed after rewriting: a packet too big for the egress link's MTU
    /// that the program does not answer itself: IPv4 without DF (the kernel
    /// fragments it), IPv6 with extension headers, or no room to build the
    /// answer. The kernel forwards or answers it.
    PassTooBig = 40,
    /// Dropped: a node's RST to a client's SYN, kept from the client while
    /// another node serves: the node is marked refused (it leaves the
    /// new-flow table until its checks confirm or clear it) and the
    /// client's retransmitted SYN goes to another node.
    DropRefusedHeld = 41,
}

/// Number of counters in [`crate::MAP_STATS`].
pub const NUM_REASONS: u32 = 42;

/// What the data path does with a packet given a reason, and which metric
/// family counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The counter is an XDP action (the packet's final verdict).
    Action,
    /// The packet is passed to the kernel (`XDP_PASS`).
    Pass,
    /// The packet is dropped (`XDP_DROP`).
    Drop,
    /// Not a verdict: something that happened to a forwarded packet.
    Event,
}

impl Reason {
    /// Every counter, in index order.
    pub const ALL: [Reason; NUM_REASONS as usize] = [
        Reason::ActionAborted,
        Reason::ActionDrop,
        Reason::ActionPass,
        Reason::ActionTx,
        Reason::ActionRedirect,
        Reason::PassNotIpv4,
        Reason::PassNotBalanced,
        Reason::PassLocal,
        Reason::PassNoNeigh,
        Reason::PassNoRoute,
        Reason::PassTruncated,
        Reason::PassNoTxPort,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::DropTtl,
        Reason::DropNoBackend,
        Reason::IpOptions,
        Reason::NewFlow,
        Reason::ConntrackHit,
        Reason::Rescheduled,
        Reason::ReplyTracked,
        Reason::ReplyFallback,
        Reason::ConntrackInsertFailed,
        Reason::PassDirect,
        Reason::DropReplyUntranslatable,
        Reason::DropWrongInterface,
        Reason::DropBadChecksum,
        Reason::PassNotForUs,
        Reason::UntrackedMidFlow,
        Reason::EmbryonicPromoted,
        Reason::RstOutOfWindow,
        Reason::IcmpTranslated,
        Reason::PassIpv6Unparsed,
        Reason::PassHopLimit,
        Reason::DropSnatExhausted,
        Reason::DropSnatNoEntry,
        Reason::DropSnatUnconfigured,
        Reason::SnatPortClaimed,
        Reason::SnatPortReused,
        Reason::TooBigAnswered,
        Reason::PassTooBig,
        Reason::DropRefusedHeld,
    ];

    /// The one place that decides whether a reason passes or drops the
    /// packet. Exhaustive, so a new reason does not compile until it is
    /// given a disposition.
    pub const fn disposition(self) -> Disposition {
        match self {
            Reason::ActionAborted
            | Reason::ActionDrop
            | Reason::ActionPass
            | Reason::ActionTx
            | Reason::ActionRedirect => Disposition::Action,
            Reason::PassNotIpv4
            | Reason::PassNotBalanced
            | Reason::PassLocal
            | Reason::PassNoNeigh
            | Reason::PassNoRoute
            | Reason::PassTruncated
            | Reason::PassNoTxPort
            | Reason::PassDirect
            | Reason::PassNotForUs
            | Reason::PassIpv6Unparsed
            | Reason::PassHopLimit
            | Reason::PassTooBig => Disposition::Pass,
            Reason::DropMalformed
            | Reason::DropFragment
            | Reason::DropTtl
            | Reason::DropNoBackend
            | Reason::DropReplyUntranslatable
            | Reason::DropWrongInterface
            | Reason::DropBadChecksum
            | Reason::DropSnatExhausted
            | Reason::DropSnatNoEntry
            | Reason::DropSnatUnconfigured
            | Reason::DropRefusedHeld => Disposition::Drop,
            Reason::IpOptions
            | Reason::NewFlow
            | Reason::ConntrackHit
            | Reason::Rescheduled
            | Reason::ReplyTracked
            | Reason::ReplyFallback
            | Reason::ConntrackInsertFailed
            | Reason::UntrackedMidFlow
            | Reason::EmbryonicPromoted
            | Reason::RstOutOfWindow
            | Reason::IcmpTranslated
            | Reason::SnatPortClaimed
            | Reason::SnatPortReused
            | Reason::TooBigAnswered => Disposition::Event,
        }
    }

    /// Stable snake_case name, used as a metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::ActionAborted => "aborted",
            Reason::ActionDrop => "drop",
            Reason::ActionPass => "pass",
            Reason::ActionTx => "tx",
            Reason::ActionRedirect => "redirect",
            Reason::PassNotIpv4 => "not_ipv4",
            Reason::PassNotBalanced => "not_balanced",
            Reason::PassLocal => "local_reply",
            Reason::PassNoNeigh => "no_neigh",
            Reason::PassNoRoute => "no_route",
            Reason::PassTruncated => "truncated",
            Reason::PassNoTxPort => "no_tx_port",
            Reason::DropMalformed => "malformed",
            Reason::DropFragment => "fragment",
            Reason::DropTtl => "ttl_exceeded",
            Reason::DropNoBackend => "no_backend",
            Reason::IpOptions => "ip_options",
            Reason::NewFlow => "new_flow",
            Reason::ConntrackHit => "conntrack_hit",
            Reason::Rescheduled => "rescheduled",
            Reason::ReplyTracked => "reply_tracked",
            Reason::ReplyFallback => "reply_fallback",
            Reason::ConntrackInsertFailed => "conntrack_insert_failed",
            Reason::PassDirect => "direct",
            Reason::DropReplyUntranslatable => "reply_untranslatable",
            Reason::DropWrongInterface => "reply_wrong_interface",
            Reason::DropBadChecksum => "bad_ip_checksum",
            Reason::PassNotForUs => "not_for_us",
            Reason::UntrackedMidFlow => "untracked_mid_flow",
            Reason::EmbryonicPromoted => "embryonic_promoted",
            Reason::RstOutOfWindow => "rst_out_of_window",
            Reason::IcmpTranslated => "icmp_translated",
            Reason::PassIpv6Unparsed => "ipv6_unparsed",
            Reason::PassHopLimit => "hop_limit_exceeded",
            Reason::DropSnatExhausted => "snat_exhausted",
            Reason::DropSnatNoEntry => "snat_no_entry",
            Reason::DropSnatUnconfigured => "snat_unconfigured",
            Reason::SnatPortClaimed => "snat_port_claimed",
            Reason::SnatPortReused => "snat_port_reused",
            Reason::TooBigAnswered => "too_big_answered",
            Reason::PassTooBig => "too_big_passed",
            Reason::DropRefusedHeld => "refused_held",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn actions_are_the_first_five_and_only_verdicts_pass_or_drop() {
        for r in Reason::ALL {
            assert_eq!(
                r.disposition() == Disposition::Action,
                (r as u32) < 5,
                "{r:?}"
            );
        }
        assert_eq!(
            Reason::DropReplyUntranslatable.disposition(),
            Disposition::Drop
        );
        assert_eq!(Reason::PassNotForUs.disposition(), Disposition::Pass);
    }
}
