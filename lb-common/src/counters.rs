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
    /// Passed: not IPv4 (ARP, IPv6, ...).
    PassNotIpv4 = 5,
    /// Passed: IPv4 but not TCP to a VIP nor a reply from a backend.
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
    /// Dropped: IP fragment aimed at a VIP.
    DropFragment = 13,
    /// Dropped: TTL would reach zero.
    DropTtl = 14,
    /// Dropped: no backend can take a new flow and `all_down = "drop"`.
    DropNoBackend = 15,
    /// Counted (and forwarded): IPv4 header with options aimed at a VIP.
    IpOptions = 16,
    /// A flow was assigned a backend by Maglev.
    NewFlow = 17,
    /// A packet matched a tracked flow.
    ConntrackHit = 18,
    /// A tracked flow was moved off a backend that stopped serving.
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
}

/// Number of counters in [`crate::MAP_STATS`].
pub const NUM_REASONS: u32 = 24;

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
    ];

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
}
