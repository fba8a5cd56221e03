//! rtnetlink link messages (`RTM_NEWLINK`, `RTM_DELLINK`): parsing what the
//! daemon needs of an interface (name, index, administrative state,
//! carrier, MAC address, the XDP programs attached) and building the
//! `RTM_GETLINK` request that asks for one interface by name.
//!
//! Pure byte handling, no sockets (those are in [`super::linkwatch`]), so
//! every rule is unit-tested with hand-built messages. Malformed parts are
//! skipped and never read past their bounds: the kernel is trusted to send
//! well-formed messages, but a bug here must not take the daemon down.

/// `RTM_NEWLINK`: an interface was created or changed (also the answer to
/// `RTM_GETLINK`).
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_DELLINK`: an interface was deleted.
pub const RTM_DELLINK: u16 = 17;
/// `RTM_GETLINK`: asks for an interface.
pub const RTM_GETLINK: u16 = 18;
/// `NLMSG_ERROR`: an error (or acknowledgement) answering a request.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a multi-part answer.
pub const NLMSG_DONE: u16 = 3;
/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct ifinfomsg`.
pub const IFINFOMSG_LEN: usize = 16;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_CARRIER: u16 = 33;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
/// `NLA_TYPE_MASK`: attribute types without the nested/byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
const IFF_UP: u32 = 0x1;
const IFF_LOWER_UP: u32 = 0x1_0000;
const NLM_F_REQUEST: u16 = 0x1;

/// RFC 2863 operational states (`IFLA_OPERSTATE`) that say the link cannot
/// pass traffic: `NOTPRESENT` (4), `DOWN` (2), `LOWERLAYERDOWN` (3),
/// `DORMANT` (5, e.g. 802.1X not yet authorised). `UNKNOWN` (0) is what
/// drivers without operstate support report and says nothing.
const OPER_NOT_PASSING: [u8; 4] = [2, 3, 4, 5];

/// The XDP programs attached to an interface, by mode (program ids).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpProgs {
    /// In the driver (`XDP_ATTACHED_DRV`).
    pub native: Option<u32>,
    /// In the generic path (`XDP_ATTACHED_SKB`).
    pub generic: Option<u32>,
}

/// What one link message says about an interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface name (`IFLA_IFNAME`).
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Administratively up (`IFF_UP`: `ip link set … up`).
    pub admin_up: bool,
    /// The lower layer passes traffic: `IFF_LOWER_UP` (the kernel's
    /// "running and carrier ok"), `IFLA_CARRIER` when present, and an
    /// operational state that is not down, lower-layer-down, absent or
    /// dormant.
    pub carrier: bool,
    /// Hardware address (`IFLA_ADDRESS`) when it is a 6-byte MAC.
    pub mac: Option<[u8; 6]>,
    /// The XDP programs attached (`IFLA_XDP`).
    pub xdp: XdpProgs,
}

impl LinkInfo {
    /// Up and with carrier: the link can pass traffic.
    pub fn usable(&self) -> bool {
        self.admin_up && self.carrier
    }
}

/// One link message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkMsg {
    /// `RTM_NEWLINK`: the interface exists, as described.
    New(LinkInfo),
    /// `RTM_DELLINK`: the interface was deleted (name and index set).
    Del(LinkInfo),
}

impl LinkMsg {
    /// The interface the message is about.
    pub fn info(&self) -> &LinkInfo {
        match self {
            LinkMsg::New(i) | LinkMsg::Del(i) => i,
        }
    }
}

/// One netlink message: its type, sequence number and payload.
#[derive(Clone, Copy, Debug)]
pub struct NlMsg<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// Everything after the header.
    pub payload: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The netlink messages of one datagram, stopping at the first one whose
/// length does not fit.
pub fn messages(buf: &[u8]) -> Vec<NlMsg<'_>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let (Some(len), Some(kind), Some(seq)) =
            (u32_at(buf, off), u16_at(buf, off + 4), u32_at(buf, off + 8))
        else {
            break;
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        out.push(NlMsg {
            kind,
            seq,
            payload: &buf[off + NLMSG_HDRLEN..off + len],
        });
        off += align4(len);
    }
    out
}

/// The attributes (type without flags, value) in `b`.
fn attrs(b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut a = 0;
    while a + 4 <= b.len() {
        let (Some(alen), Some(atype)) = (u16_at(b, a), u16_at(b, a + 2)) else {
            break;
        };
        let alen = alen as usize;
        if alen < 4 || a + alen > b.len() {
            break;
        }
        out.push((atype & NLA_TYPE_MASK, &b[a + 4..a + alen]));
        a += align4(alen);
    }
    out
}

/// Parses the `IFLA_XDP` nest.
fn xdp_progs(nest: &[u8]) -> XdpProgs {
    let mut x = XdpProgs::default();
    let (mut mode, mut single) = (0u8, None);
    for (t, v) in attrs(nest) {
        let id = u32_at(v, 0).filter(|id| *id != 0);
        match t {
            IFLA_XDP_ATTACHED => mode = v.first().copied().unwrap_or(0),
            IFLA_XDP_PROG_ID => single = id,
            IFLA_XDP_DRV_PROG_ID => x.native = id,
            IFLA_XDP_SKB_PROG_ID => x.generic = id,
            _ => {}
        }
    }
    // Kernels that report one mode only name it in IFLA_XDP_ATTACHED.
    match mode {
        XDP_ATTACHED_DRV if x.native.is_none() => x.native = single,
        XDP_ATTACHED_SKB if x.generic.is_none() => x.generic = single,
        _ => {}
    }
    x
}

/// Parses the payload of an `RTM_NEWLINK` or `RTM_DELLINK` message.
pub fn link_info(payload: &[u8]) -> Option<LinkInfo> {
    if payload.len() < IFINFOMSG_LEN {
        return None;
    }
    let ifindex = u32_at(payload, 4)?;
    let flags = u32_at(payload, 8)?;
    let mut info = LinkInfo {
        ifindex,
        admin_up: flags & IFF_UP != 0,
        carrier: flags & IFF_LOWER_UP != 0,
        ..LinkInfo::default()
    };
    let mut named = false;
    for (t, v) in attrs(&payload[IFINFOMSG_LEN..]) {
        match t {
            IFLA_IFNAME => {
                let name = v.split(|b| *b == 0).next().unwrap_or_default();
                info.name = String::from_utf8_lossy(name).into_owned();
                named = true;
            }
            IFLA_ADDRESS => info.mac = v.try_into().ok(),
            IFLA_CARRIER if v.first() == Some(&0) => info.carrier = false,
            IFLA_OPERSTATE if v.first().is_some_and(|s| OPER_NOT_PASSING.contains(s)) => {
                info.carrier = false
            }
            IFLA_XDP => info.xdp = xdp_progs(v),
            _ => {}
        }
    }
    named.then_some(info)
}

/// The link messages of one datagram (other messages are skipped).
pub fn parse(buf: &[u8]) -> Vec<LinkMsg> {
    messages(buf)
        .into_iter()
        .filter_map(|m| match m.kind {
            RTM_NEWLINK => link_info(m.payload).map(LinkMsg::New),
            RTM_DELLINK => link_info(m.payload).map(LinkMsg::Del),
            _ => None,
        })
        .collect()
}

/// An `RTM_GETLINK` request for the interface named `name`, numbered `seq`.
pub fn getlink_request(name: &str, seq: u32) -> Vec<u8> {
    let mut attr = Vec::new();
    let alen = 4 + name.len() + 1;
    attr.extend_from_slice(&(alen as u16).to_ne_bytes());
    attr.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
    attr.extend_from_slice(name.as_bytes());
    attr.push(0);
    attr.resize(align4(attr.len()), 0);
    let len = NLMSG_HDRLEN + IFINFOMSG_LEN + attr.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: family AF_UNSPEC, index 0 (the name selects).
    m.extend_from_slice(&[0u8; IFINFOMSG_LEN]);
    m.extend_from_slice(&attr);
    m
}

/// The errno of an `NLMSG_ERROR` payload (0 is an acknowledgement).
pub fn error_code(payload: &[u8]) -> Option<i32> {
    u32_at(payload, 0).map(|e| -(e as i32))
}

#[cfg(test)]
#[path = "rtnl_tests.rs"]
mod tests;
