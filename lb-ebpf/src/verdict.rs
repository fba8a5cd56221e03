//! A packet's outcome packed into one register for the program's
//! subprograms. Rust returns a `Result<u32, Reason>` through a pointer to
//! the caller's stack, and the verifier refuses a subprogram that returns a
//! stack pointer; a plain `u64` travels in `r0`.
use lb_common::Reason;

/// `Ok(action)` as the action itself; `Err(reason)` as the reason's index
/// with bit 32 set.
#[repr(transparent)]
pub struct Verdict(u64);

const ERR: u64 = 1 << 32;

impl Verdict {
    /// Packs an outcome.
    #[inline(always)]
    pub fn pack(r: Result<u32, Reason>) -> Self {
        Verdict(match r {
            Ok(action) => action as u64,
            Err(reason) => ERR | reason as u64,
        })
    }

    /// The packed value (to carry it through memory, e.g. a `bpf_loop`
    /// callback's context).
    #[inline(always)]
    pub fn raw(self) -> u64 {
        self.0
    }

    /// A verdict from a value [`Verdict::raw`] gave.
    #[inline(always)]
    pub fn from_raw(v: u64) -> Self {
        Verdict(v)
    }

    /// Unpacks it. An index no reason has (impossible: only `pack` builds
    /// verdicts) reads as `PassNotBalanced`, failing open.
    #[inline(always)]
    pub fn unpack(self) -> Result<u32, Reason> {
        if self.0 & ERR == 0 {
            return Ok(self.0 as u32);
        }
        let i = (self.0 & 0xffff_ffff) as usize;
        Err(match Reason::ALL.get(i) {
            Some(r) => *r,
            None => Reason::PassNotBalanced,
        })
    }
}
