//! A trivial XDP program that bounces every frame (`XDP_TX`) without looking
//! at it. It is never attached by the daemon; the benchmark loads it next to
//! `lb_xdp` and runs both through BPF_PROG_TEST_RUN, so the data path's
//! per-packet cost can be read against the cheapest program possible.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Returns `XDP_TX` for every frame.
#[xdp]
pub fn xdp_tx_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}
