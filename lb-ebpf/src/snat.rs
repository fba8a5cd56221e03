//! One-arm full-NAT: the source-port claim and the reply-side helpers
//! (the client side's path is in `fullnat`).
//!
//! **Same tiers as DNAT.** A full-NAT flow is tracked in the conntrack
//! tiers every flow uses (`conntrack`): embryonic reply entry at the SYN,
//! promotion by the handshake ACK or by the node answering a mid-flow
//! packet, the mid-flow table, rescheduling, FIN/RST closing, the route
//! caches. A parallel set of maps would have duplicated all of that, and
//! its flood resistance. What differs is only:
//!
//! - the reply key is `node addr:port → snat addr:port` (not `node →
//!   client`), and the reply entry carries the client's address and port
//!   ([`lb_common::REV_F_FULLNAT`], `RevEntry::client`/`cport`): replies
//!   get their destination restored to the client as well as their source
//!   to the VIP;
//! - client packets get their source rewritten to the entry's source-NAT
//!   address and port ([`lb_common::FWD_F_FULLNAT`], `FwdEntry::snat`) as
//!   well as their destination. The entry's flag decides, not the
//!   listener's, so a listener that changes mode keeps its old flows as
//!   they were.
//!
//! **Port choice.** [`lb_common::snat_choice`]: the address and the first
//! port are a hash of the client's flow with a fixed seed (not Maglev's),
//! probe `i` is `i` ports further, wrapping in the range. A port is taken
//! toward one node endpoint when the reply key is in `CT_REV`, or in
//! `CT_EMB_REV` for another client; the claim itself is an insert with
//! `BPF_NOEXIST` into the tier the flow starts in, so two CPUs never claim
//! the same key. After [`lb_common::SNAT_PROBES`] (4) taken ports the flow
//! is dropped (`snat_exhausted`). Four, not the eight first planned: the
//! verifier walks the branches of each probe once per probe before it,
//! and eight exceeded its million-instruction budget; each probe is a
//! subprogram of its own ([`claim`] calls `claim_probe`), its keys and
//! values in a per-CPU scratch map (`SNAT_SCRATCH`) to keep the 512-byte
//! stack chain within bounds. (`bpf_loop` would verify one probe for all,
//! but needs BTF function info the build does not emit.)
//!
//! The client's packets before promotion find their embryonic entry by
//! walking the same probes, stopping at the first port nobody holds (a
//! flow only moves past a taken port).
//!
//! **Freeing.** Entries leave by LRU eviction, which only starts when a
//! table is full, so a closed flow must also give its port back. Deleting
//! at the first FIN or RST would leave the last ACKs (and a retransmitted
//! FIN) untranslated and dropped as `snat_no_entry`. Instead a probe takes
//! over a reply entry whose flow is closing and idle for
//! [`lb_common::SNAT_REUSE_NS`] (10 s), or open but with its client silent
//! for [`lb_common::SNAT_IDLE_NS`] (6 h: it vanished without FIN or RST),
//! or whose forward entry is gone, or which belongs to the same client
//! flow (a SYN reusing its tuple): both of the old flow's entries are
//! removed first. A node may still hold the old
//! 4-tuple in TIME_WAIT: Linux accepts a new SYN on it when its sequence
//! number or timestamp is newer (RFC 6191), otherwise it answers with an
//! ACK that the client resets, and the retransmitted SYN connects. Ports
//! are therefore only held by live flows, or for a bounded time after a
//! flow ends: no leak, however many short connections.
//!
//! **HA rebuild.** An untracked mid-flow client packet gets its node from
//! the mid-flow table (as for DNAT) and the *first-choice* port, which the
//! other gateway chose too unless it had to probe; it then waits in the
//! embryonic table for the node to vouch for it. A flow that needed a later
//! probe, or whose first-choice port is held here by another flow, cannot
//! be rebuilt (dropped, `snat_exhausted`). A server-push stream whose
//! client stays silent cannot be rebuilt from the node's side: its packets
//! are addressed to the source-NAT port, and the port hash is not
//! invertible to the client; they are dropped (`snat_no_entry`) until the
//! client sends something (an ACK, a keepalive).
use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use lb_common::{
    snat_hash, snat_index, snat_pick, FlowKey, Real, Reason, RevEntry, SnatConfig, SnatScratch,
    VipKey, FWD_F_CLOSING, MAX_SNAT_ADDRS, PROTO_TCP, REV_F_FULLNAT, REV_F_MIDFLOW,
    REV_F_PASSTHROUGH, SNAT_IDLE_NS, SNAT_PROBES, SNAT_REUSE_NS,
};

use crate::{
    maps::{CT_EMB_REV, CT_FWD, CT_REV, REALS, SNAT, SNAT_ADDRS, SNAT_SCRATCH},
    parse::TcpPacket,
    stats,
    verdict::Verdict,
};

/// `BPF_NOEXIST`: insert only when the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Bit of a claim's result: the port was claimed by this packet (a new
/// flow), not found held by the same flow already.
pub const NEW: u32 = 1 << 30;
/// Mask of a packed choice: address index in bits 16..18, port (host order)
/// in bits 0..16.
const CHOICE_MASK: u32 = 0x3_ffff;

/// Claim mode of a SYN: the embryonic reply entry is inserted.
pub const MODE_SYN: u32 = 0;
/// A rescheduled established flow: the established reply entry is inserted.
pub const MODE_ESTABLISHED: u32 = 1;
/// An untracked mid-flow segment carrying an ACK: the first-choice port
/// only, an embryonic entry marked mid-flow.
pub const MODE_MIDFLOW: u32 = 2;
/// An untracked RST, FIN or flagless segment: the first-choice port only,
/// no state.
pub const MODE_STATELESS: u32 = 3;

/// The source-NAT configuration of `family`, when it has an address.
#[inline(always)]
fn config(family: u8) -> Result<&'static SnatConfig, Reason> {
    let p = SNAT
        .get_ptr(snat_index(family))
        .ok_or(Reason::DropSnatUnconfigured)?;
    // SAFETY: a live array value, read-only.
    let cfg = unsafe { &*p };
    if cfg.count == 0 {
        return Err(Reason::DropSnatUnconfigured);
    }
    Ok(cfg)
}

/// Address `i` of `cfg` (`snat_pick` returns indexes below the count, at
/// most `MAX_SNAT_ADDRS` = 4; the mask is the bound the verifier sees).
#[inline(always)]
fn addr(cfg: &SnatConfig, i: u32) -> [u32; 4] {
    // LLVM knows `i` (a remainder by at most 4) is in bounds and would drop
    // the mask; the verifier does not follow remainders and needs it.
    cfg.addrs[(crate::balance::opaque(i) & (MAX_SNAT_ADDRS as u32 - 1)) as usize]
}

/// The reply key toward the node of a full-NAT flow of `flow`'s family:
/// `real → addr:port` (port in HOST order).
#[inline(always)]
fn reply_key(flow: &FlowKey, real: &Real, addr: &[u32; 4], port: u16) -> FlowKey {
    FlowKey {
        src: real.addr,
        dst: *addr,
        sport: real.port,
        dport: port.to_be(),
        proto: PROTO_TCP,
        family: flow.family,
        _pad: [0; 2],
    }
}

/// The reply key of a packed choice `c` (from [`claim`] or [`find`]).
#[inline(always)]
pub fn key_of(flow: &FlowKey, real: &Real, c: u32) -> Result<FlowKey, Reason> {
    let cfg = config(flow.family)?;
    Ok(reply_key(flow, real, &addr(cfg, (c >> 16) & 3), c as u16))
}

/// The source-NAT address and port (network order) of a packed choice.
#[inline(always)]
pub fn source_of(family: u8, c: u32) -> Result<([u32; 4], u16), Reason> {
    let cfg = config(family)?;
    Ok((addr(cfg, (c >> 16) & 3), (c as u16).to_be()))
}

/// True when the reply entry at `p` belongs to the client flow `flow`
/// (client address and port, VIP and port). Word by word: `==` on arrays
/// may become a call to `bcmp`, which BPF cannot make.
#[inline(always)]
fn same_client(p: *const RevEntry, flow: &FlowKey) -> bool {
    // SAFETY: `p` points to a live map value; plain field reads.
    let e = unsafe { &*p };
    let mut d = (e.cport ^ flow.sport) as u32 | (e.vport ^ flow.dport) as u32;
    for i in 0..4 {
        d |= (e.client[i] ^ flow.src[i]) | (e.vip[i] ^ flow.dst[i]);
    }
    d == 0
}

/// The client's forward key of the full-NAT reply entry `e` (the flow the
/// client sends: client → VIP).
#[inline(always)]
pub fn fwd_key(e: &RevEntry, rkey: &FlowKey) -> FlowKey {
    FlowKey {
        src: e.client,
        dst: e.vip,
        sport: e.cport,
        dport: e.vport,
        proto: rkey.proto,
        family: rkey.family,
        _pad: [0; 2],
    }
}

/// The per-CPU working space (see [`lb_common::SnatScratch`]).
#[inline(always)]
pub fn scratch() -> Result<*mut SnatScratch, Reason> {
    SNAT_SCRATCH.get_ptr_mut(0).ok_or(Reason::DropSnatExhausted)
}

/// Whether a new flow of `flow` may take over the established reply entry
/// at `p` (key `s.rkey`), and if so removes it and its forward entry (see
/// the module comment: same client, forward entry gone, or closed and idle).
#[inline(always)]
fn take_over(s: *mut SnatScratch, p: *const RevEntry, flow: &FlowKey, now: u64) -> bool {
    // SAFETY: `p` points to a live map value; one field read.
    if unsafe { (*p).flags } & REV_F_FULLNAT == 0 {
        return false;
    }
    let same = same_client(p, flow);
    // SAFETY: `s` is this CPU's scratch value, `p` a live map value.
    let (fkey, rkey) = unsafe {
        (*s).fkey = fwd_key(&*p, flow);
        (&(*s).fkey, &(*s).rkey)
    };
    if !same {
        if let Some(f) = CT_FWD.get_ptr(fkey) {
            // SAFETY: a live map value; plain field reads.
            let (flags, seen) = unsafe { ((*f).flags, (*f).last_seen_ns) };
            let bound = if flags & FWD_F_CLOSING != 0 {
                SNAT_REUSE_NS
            } else {
                SNAT_IDLE_NS
            };
            if now.wrapping_sub(seen) < bound {
                return false;
            }
        }
        stats::count(Reason::SnatPortReused);
    }
    let _ = CT_FWD.remove(fkey);
    let _ = CT_REV.remove(rkey);
    true
}

/// Bit of a decision (`fullnat::decide`): the flow needs a port claimed;
/// the low bits then hold the claim mode.
pub const CLAIM: u32 = 1 << 31;
/// Shift of the real id in a decision (ids are below `MAX_REALS` = 4096).
pub const ID_SHIFT: u32 = 18;

/// The probe loop's state, on the claim's stack; everything else a probe
/// needs is in the scratch map.
#[repr(C)]
struct Probe {
    /// Claim mode.
    mode: u32,
    /// Probes to make.
    probes: u32,
    /// The flow's source-NAT hash.
    h: u32,
    /// Clamped address count.
    count: u32,
    /// Coarse clock.
    now: u64,
    /// The outcome as a `Verdict` value; `DropSnatExhausted` until a probe
    /// decides.
    result: u64,
}

/// Claims a source-NAT port for `pkt`'s client flow toward the real of
/// decision `d` and records the flow's reply entry, the scratch's `rev`
/// (complete: the caller wrote it), as the decision's mode says. `Ok` is
/// the packed choice, with [`NEW`] set when this packet claimed it (a
/// retransmitted SYN, or a mid-flow packet seen before, finds its own
/// entry). Called by the entry frame, between `fullnat::decide` and
/// `fullnat::finish`.
#[inline(never)]
pub fn claim(pkt: &TcpPacket, d: u32) -> Verdict {
    Verdict::pack(claim_inner(&pkt.flow, d))
}

#[inline(always)]
fn claim_inner(flow: &FlowKey, d: u32) -> Result<u32, Reason> {
    let cfg = config(flow.family)?;
    let s = scratch()?;
    let real = REALS
        .get((d >> ID_SHIFT) & 0xfff)
        .ok_or(Reason::DropNoBackend)?;
    // SAFETY: `s` is this CPU's scratch value.
    unsafe {
        (*s).flow = *flow;
        (*s).real = *real;
    }
    let mode = d & 3;
    let mut probe = Probe {
        mode,
        probes: if mode >= MODE_MIDFLOW { 1 } else { SNAT_PROBES },
        h: snat_hash(flow),
        count: if cfg.count > MAX_SNAT_ADDRS as u32 {
            MAX_SNAT_ADDRS as u32
        } else {
            cfg.count
        },
        // SAFETY: a helper with no arguments.
        now: unsafe { bpf_ktime_get_coarse_ns() },
        result: Verdict::pack(Err(Reason::DropSnatExhausted)).raw(),
    };
    for i in 0..SNAT_PROBES {
        if claim_probe(i, &mut probe) != 0 {
            break;
        }
    }
    Verdict::from_raw(probe.result).unpack()
}

/// One probe of [`claim`]: 0 to go on, 1 when the claim is decided (its
/// outcome in `p.result`). A subprogram, so the verifier walks one probe's
/// branches per call rather than the product over an unrolled loop.
#[inline(never)]
fn claim_probe(i: u32, p: *mut Probe) -> i64 {
    // SAFETY: `ctx` is the claim's `Probe`, alive during the loop.
    let (mode, probes, h, count, now) =
        unsafe { ((*p).mode, (*p).probes, (*p).h, (*p).count, (*p).now) };
    if i >= probes {
        return 1;
    }
    let Ok(s) = scratch() else { return 1 };
    // SAFETY: `s` is this CPU's scratch value.
    let flow = unsafe { &(*s).flow };
    let Ok(cfg) = config(flow.family) else {
        return 1;
    };
    let (ai, port) = snat_pick(h, count, cfg.port_lo, cfg.port_hi, i);
    // SAFETY: `s` is this CPU's scratch value.
    let (rkey, rev) = unsafe {
        (*s).rkey = reply_key(flow, &(*s).real, &addr(cfg, ai), port);
        (&(*s).rkey, &(*s).rev)
    };
    let c = (ai & 3) << 16 | port as u32;
    let done = |r: Result<u32, Reason>| {
        // SAFETY: as above.
        unsafe { (*p).result = Verdict::pack(r).raw() };
        1
    };
    if let Some(e) = CT_REV.get_ptr(rkey) {
        if !take_over(s, e, flow, now) {
            return 0;
        }
    }
    let mut replace = false;
    if let Some(e) = CT_EMB_REV.get_ptr(rkey) {
        if !same_client(e, flow) {
            return 0;
        }
        // SAFETY: a live map value; one field read.
        let midflow = unsafe { (*e).flags } & REV_F_MIDFLOW != 0;
        match mode {
            // A SYN over its own mid-flow entry: a new connection reusing
            // the tuple. Any other case: the flow's own entry.
            MODE_SYN if midflow => replace = true,
            MODE_ESTABLISHED => {
                let _ = CT_EMB_REV.remove(rkey);
            }
            _ => return done(Ok(c)),
        }
    }
    let claimed = match mode {
        MODE_STATELESS => return done(Ok(c)),
        MODE_ESTABLISHED => CT_REV.insert(rkey, rev, BPF_NOEXIST).is_ok(),
        _ => {
            let flags = if replace { 0 } else { BPF_NOEXIST };
            CT_EMB_REV.insert(rkey, rev, flags).is_ok()
        }
    };
    // Lost a race for the key to another CPU's flow: the next port.
    if !claimed {
        return 0;
    }
    stats::count(Reason::SnatPortClaimed);
    done(Ok(c | NEW))
}

/// The probe under which `pkt`'s client flow toward `real` has its
/// embryonic entry (a handshake in progress, or a mid-flow packet waiting
/// for the node), as a packed choice. The walk stops at the first port no
/// flow holds: a flow only probes past taken ports.
#[inline(never)]
pub fn find(pkt: &TcpPacket, real: &Real) -> Verdict {
    Verdict::pack(find_inner(&pkt.flow, real))
}

#[inline(always)]
fn find_inner(flow: &FlowKey, real: &Real) -> Result<u32, Reason> {
    let cfg = config(flow.family)?;
    let s = scratch()?;
    // SAFETY: `s` is this CPU's scratch value.
    unsafe {
        (*s).flow = *flow;
        (*s).real = *real;
    }
    let mut probe = Probe {
        mode: 0,
        probes: SNAT_PROBES,
        h: snat_hash(flow),
        count: if cfg.count > MAX_SNAT_ADDRS as u32 {
            MAX_SNAT_ADDRS as u32
        } else {
            cfg.count
        },
        now: 0,
        result: Verdict::pack(Err(Reason::PassNotBalanced)).raw(),
    };
    for i in 0..SNAT_PROBES {
        if find_probe(i, &mut probe) != 0 {
            break;
        }
    }
    Verdict::from_raw(probe.result).unpack()
}

/// One probe of [`find`], as [`claim_probe`] is of [`claim`].
#[inline(never)]
fn find_probe(i: u32, p: *mut Probe) -> i64 {
    // SAFETY: `p` is the caller's `Probe`.
    let (h, count) = unsafe { ((*p).h, (*p).count) };
    let Ok(s) = scratch() else { return 1 };
    // SAFETY: `s` is this CPU's scratch value.
    let flow = unsafe { &(*s).flow };
    let Ok(cfg) = config(flow.family) else {
        return 1;
    };
    let (ai, port) = snat_pick(h, count, cfg.port_lo, cfg.port_hi, i);
    // SAFETY: `s` is this CPU's scratch value.
    let rkey = unsafe {
        (*s).rkey = reply_key(flow, &(*s).real, &addr(cfg, ai), port);
        &(*s).rkey
    };
    match CT_EMB_REV.get_ptr(rkey) {
        Some(e) => {
            // SAFETY: a live map value; one field read.
            let passthrough = unsafe { (*e).flags } & REV_F_PASSTHROUGH != 0;
            if !passthrough && same_client(e, flow) {
                let c = (ai & 3) << 16 | port as u32;
                // SAFETY: as above.
                unsafe { (*p).result = Verdict::pack(Ok(c)).raw() };
                return 1;
            }
            0
        }
        None if CT_REV.get_ptr(rkey).is_none() => 1,
        None => 0,
    }
}

/// A packet with no flow addressed to a source-NAT address: dropped when
/// its port is in the range (`snat_no_entry`: never translated by the
/// listener fallback, which would send a node's packet to nobody), passed
/// to the kernel otherwise (the gateway's own connections). `None` when the
/// destination is not a source-NAT address.
#[inline(always)]
pub fn untracked_to_snat(flow: &FlowKey) -> Option<Reason> {
    SNAT_ADDRS.get_ptr(&VipKey { addr: flow.dst })?;
    let in_range = match SNAT.get_ptr(snat_index(flow.family)) {
        // SAFETY: a live array value; plain field reads.
        Some(c) => unsafe { (*c).in_range(u16::from_be(flow.dport)) },
        None => false,
    };
    Some(if in_range {
        Reason::DropSnatNoEntry
    } else {
        Reason::PassLocal
    })
}

/// The packed choice alone (without [`NEW`] or other flags).
#[inline(always)]
pub fn choice(c: u32) -> u32 {
    c & CHOICE_MASK
}
