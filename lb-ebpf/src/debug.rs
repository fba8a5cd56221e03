//! Debug logging through aya-log, off unless the daemon sets `DEBUG` when it
//! loads the program (`lb run --ebpf-debug`). Off, a call site costs one
//! read of a load-time constant and a not-taken branch: no record is built
//! and the log ring buffer is never touched.
use aya_ebpf::{programs::XdpContext, Global};
use aya_log_ebpf::debug;
use lb_common::{FlowKey, Reason};

/// Non-zero enables logging; patched by the loader.
#[no_mangle]
static DEBUG: Global<u8> = Global::new(0);

/// True when the daemon loaded the program with debug records on.
#[inline(always)]
pub fn enabled() -> bool {
    DEBUG.load() != 0
}

/// A flow not tracked yet was given real `real` by Maglev.
#[inline(always)]
pub fn new_flow(ctx: &XdpContext, listener: u32, real: u32, flow: &FlowKey) {
    if enabled() {
        log_new_flow(ctx, listener, real, flow);
    }
}

/// The record of [`new_flow`]. Its own subprogram, called only when logging
/// is on: each family's copy of the flow logic calls it, and inlined into
/// both (or left to LLVM, which then outlines aya-log's closures with their
/// arguments spilled in the caller's frame) it would grow the deepest frame
/// of the program, whose call chain shares 512 bytes of stack. Off, the
/// verifier never walks it, so it costs no stack.
#[inline(never)]
fn log_new_flow(ctx: &XdpContext, listener: u32, real: u32, flow: &FlowKey) {
    let sport = u16::from_be(flow.sport);
    if flow.family == lb_common::FAMILY_V6 {
        // SAFETY: four u32 words are sixteen bytes, in address order.
        let addr: [u8; 16] = unsafe { core::mem::transmute(flow.src) };
        debug!(
            ctx,
            "new flow [{:i}]:{} listener {} -> real {}", addr, sport, listener, real
        );
    } else {
        debug!(
            ctx,
            "new flow {:i}:{} listener {} -> real {}",
            flow.src[0].to_ne_bytes(),
            sport,
            listener,
            real
        );
    }
}

/// A tracked flow's real stopped serving; the flow gets a new one.
#[inline(always)]
pub fn rescheduled(ctx: &XdpContext, listener: u32, real: u32) {
    if enabled() {
        log_rescheduled(ctx, listener, real);
    }
}

/// The record of [`rescheduled`], a subprogram for the reason given at
/// [`log_new_flow`].
#[inline(never)]
fn log_rescheduled(ctx: &XdpContext, listener: u32, real: u32) {
    debug!(
        ctx,
        "reschedule: listener {} real {} stopped serving", listener, real
    );
}

/// A packet was not forwarded; drops are logged with their reason's index
/// (`lb_common::Reason`; names would need a variable-length copy, which BPF
/// cannot call `memcpy` for).
#[inline(always)]
pub fn not_forwarded(ctx: &XdpContext, reason: Reason, dropped: bool) {
    if enabled() && dropped {
        debug!(ctx, "drop: reason {}", reason as u32);
    }
}
