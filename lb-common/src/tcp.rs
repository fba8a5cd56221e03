//! TCP flag classification and sequence-number plausibility, shared by the
//! XDP program and host unit tests. Flags are the TCP header's low flag byte.

use crate::RST_WINDOW;

/// FIN flag.
pub const FIN: u8 = 0x01;
/// SYN flag.
pub const SYN: u8 = 0x02;
/// RST flag.
pub const RST: u8 = 0x04;
/// ACK flag.
pub const ACK: u8 = 0x10;

/// A SYN together with FIN or RST: no stack sends it; scanners do.
#[inline(always)]
pub fn is_malformed(flags: u8) -> bool {
    flags & SYN != 0 && flags & (FIN | RST) != 0
}

/// A connection opening: SYN without ACK (FIN/RST excluded by [`is_malformed`]).
#[inline(always)]
pub fn is_open(flags: u8) -> bool {
    flags & (SYN | ACK | FIN | RST) == SYN
}

/// A backend's handshake answer: SYN and ACK, nothing else of note.
#[inline(always)]
pub fn is_syn_ack(flags: u8) -> bool {
    flags & (SYN | ACK | FIN | RST) == SYN | ACK
}

/// A segment of an established connection: ACK set, no SYN, no RST. Only
/// these may prove a flow established (a handshake ACK, or a backend's
/// answer to a mid-flow packet); a bare RST, a segment without flags or a
/// lone FIN never does.
#[inline(always)]
pub fn is_established_segment(flags: u8) -> bool {
    flags & (SYN | ACK | RST) == ACK
}

/// True when a RST with sequence number `seq` is plausible for a sender
/// whose recorded sequence number is `recorded` (both host order): at or
/// after it, within [`RST_WINDOW`].
#[inline(always)]
pub fn rst_plausible(recorded: u32, seq: u32) -> bool {
    seq.wrapping_sub(recorded) < RST_WINDOW
}

/// True when `seq` is far enough ahead of `recorded` (half the window or
/// more, but still inside it) that the entry should record it. Only forward
/// moves inside the window count, so a forged segment with a random
/// sequence number moves the record with the same 1-in-256 odds as a blind
/// RST, and a retransmission never moves it back. Writes to the shared map
/// stay rare: one per `RST_WINDOW / 2` bytes sent.
#[inline(always)]
pub fn seq_advanced(recorded: u32, seq: u32) -> bool {
    let d = seq.wrapping_sub(recorded);
    (RST_WINDOW / 2..RST_WINDOW).contains(&d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_classes() {
        assert!(is_open(SYN));
        assert!(!is_open(SYN | ACK));
        assert!(is_malformed(SYN | FIN) && is_malformed(SYN | RST));
        assert!(!is_malformed(FIN | ACK));
        assert!(is_syn_ack(SYN | ACK) && !is_syn_ack(SYN));
        assert!(is_established_segment(ACK) && is_established_segment(ACK | FIN | 0x08));
        for f in [0, RST, RST | ACK, FIN, SYN, SYN | ACK] {
            assert!(!is_established_segment(f), "{f:#x}");
        }
    }

    #[test]
    fn rst_window_wraps() {
        assert!(rst_plausible(1000, 1000));
        assert!(rst_plausible(u32::MAX - 5, 10));
        assert!(!rst_plausible(1000, 999));
        assert!(!rst_plausible(1000, 1000 + RST_WINDOW));
        assert!(rst_plausible(1000, 1000 + RST_WINDOW - 1));
    }

    #[test]
    fn record_moves_forward_only_inside_the_window() {
        assert!(!seq_advanced(0, 100));
        assert!(seq_advanced(0, RST_WINDOW / 2));
        assert!(!seq_advanced(0, RST_WINDOW));
        assert!(!seq_advanced(RST_WINDOW, 0));
    }
}
