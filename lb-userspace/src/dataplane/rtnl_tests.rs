//! Hand-built link messages as the kernel sends them.
use super::*;

fn attr(t: u16, v: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&t.to_ne_bytes());
    a.extend_from_slice(v);
    a.resize(align4(a.len()), 0);
    a
}

fn name_attr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    attr(IFLA_IFNAME, &v)
}

/// A link message of `kind` for interface `ifindex` with `flags` and the
/// given attributes.
fn message(kind: u16, ifindex: u32, flags: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = attrs.concat();
    let len = NLMSG_HDRLEN + IFINFOMSG_LEN + body.len();
    let mut m = Vec::new();
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&[0u8; 10]);
    // ifinfomsg: family, pad, type, index, flags, change.
    m.extend_from_slice(&[0u8; 4]);
    m.extend_from_slice(&ifindex.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&[0xffu8; 4]);
    m.extend_from_slice(&body);
    m
}

const MAC: [u8; 6] = [0x02, 0, 0x5e, 0x19, 0, 2];

fn xdp_nest(mode: u8, single: Option<u32>, drv: Option<u32>, skb: Option<u32>) -> Vec<u8> {
    let mut n = attr(IFLA_XDP_ATTACHED, &[mode]);
    if let Some(id) = single {
        n.extend(attr(IFLA_XDP_PROG_ID, &id.to_ne_bytes()));
    }
    if let Some(id) = drv {
        n.extend(attr(IFLA_XDP_DRV_PROG_ID, &id.to_ne_bytes()));
    }
    if let Some(id) = skb {
        n.extend(attr(IFLA_XDP_SKB_PROG_ID, &id.to_ne_bytes()));
    }
    // The nest carries NLA_F_NESTED (0x8000), as the kernel sends it.
    attr(IFLA_XDP | 0x8000, &n)
}

#[test]
fn parses_new_and_deleted_links_and_survives_garbage() {
    let mut buf = message(RTM_DELLINK, 7, 0, &[name_attr("gwb")]);
    buf.extend(message(RTM_NEWLINK, 9, IFF_UP, &[name_attr("eth0.100")]));
    let msgs = parse(&buf);
    assert_eq!(msgs.len(), 2);
    assert!(matches!(&msgs[0], LinkMsg::Del(i) if i.name == "gwb" && i.ifindex == 7));
    assert!(matches!(&msgs[1], LinkMsg::New(i) if i.name == "eth0.100" && i.admin_up));
    // Truncated or lying lengths: nothing read past the buffer.
    for cut in 0..buf.len() {
        let _ = parse(&buf[..cut]);
    }
    let mut lying = message(RTM_NEWLINK, 1, 0, &[name_attr("x")]);
    lying[0] = 0xff;
    assert!(parse(&lying).is_empty());
    // An attribute claiming more than its message holds ends the parse of
    // that message's attributes, and the name is then missing: skipped.
    let mut bad_attr = message(RTM_NEWLINK, 1, 0, &[name_attr("gwb")]);
    let at = NLMSG_HDRLEN + IFINFOMSG_LEN;
    bad_attr[at] = 0xf0;
    assert!(parse(&bad_attr).is_empty());
}

#[test]
fn admin_state_carrier_and_mac_are_read_from_flags_and_attributes() {
    let up = IFF_UP | IFF_LOWER_UP;
    let mac = attr(IFLA_ADDRESS, &MAC);
    let i =
        link_info(&message(RTM_NEWLINK, 4, up, &[name_attr("gwb"), mac.clone()])[16..]).unwrap();
    assert!(i.admin_up && i.carrier && i.usable());
    assert_eq!(i.mac, Some(MAC));

    // `ip link set gwb down`: IFF_UP and IFF_LOWER_UP both clear.
    let i = link_info(&message(RTM_NEWLINK, 4, 0, &[name_attr("gwb")])[16..]).unwrap();
    assert!(!i.admin_up && !i.usable());

    // The veth peer went down: up, no carrier.
    let i = link_info(&message(RTM_NEWLINK, 4, IFF_UP, &[name_attr("gwb")])[16..]).unwrap();
    assert!(i.admin_up && !i.carrier && !i.usable());

    // IFF_LOWER_UP set but IFLA_CARRIER 0 or an operstate that passes
    // nothing: no carrier either.
    for a in [
        attr(IFLA_CARRIER, &[0]),
        attr(IFLA_OPERSTATE, &[2]),
        attr(IFLA_OPERSTATE, &[3]),
        attr(IFLA_OPERSTATE, &[5]),
    ] {
        let i = link_info(&message(RTM_NEWLINK, 4, up, &[name_attr("gwb"), a])[16..]).unwrap();
        assert!(!i.carrier, "{i:?}");
    }
    // UNKNOWN (drivers without operstate) and UP pass.
    for s in [0u8, 6] {
        let a = attr(IFLA_OPERSTATE, &[s]);
        let i = link_info(&message(RTM_NEWLINK, 4, up, &[name_attr("gwb"), a])[16..]).unwrap();
        assert!(i.carrier, "operstate {s}");
    }
    // A hardware address that is not a MAC (e.g. an IP tunnel's) is none.
    let a = attr(IFLA_ADDRESS, &[1, 2, 3, 4]);
    let i = link_info(&message(RTM_NEWLINK, 4, up, &[name_attr("tun0"), a])[16..]).unwrap();
    assert_eq!(i.mac, None);
}

#[test]
fn xdp_programs_are_read_by_mode() {
    let parse_xdp = |nest: Vec<u8>| {
        link_info(&message(RTM_NEWLINK, 4, IFF_UP, &[name_attr("gwb"), nest])[16..])
            .unwrap()
            .xdp
    };
    assert_eq!(
        parse_xdp(xdp_nest(0, None, None, None)),
        XdpProgs::default()
    );
    // One program in the driver, as reported by current kernels.
    assert_eq!(
        parse_xdp(xdp_nest(1, Some(42), Some(42), None)),
        XdpProgs {
            native: Some(42),
            generic: None
        }
    );
    // Only IFLA_XDP_PROG_ID and the mode (older kernels).
    assert_eq!(
        parse_xdp(xdp_nest(2, Some(42), None, None)),
        XdpProgs {
            native: None,
            generic: Some(42)
        }
    );
    // Two modes at once (XDP_ATTACHED_MULTI).
    assert_eq!(
        parse_xdp(xdp_nest(4, None, Some(7), Some(8))),
        XdpProgs {
            native: Some(7),
            generic: Some(8)
        }
    );
}

#[test]
fn getlink_request_names_the_interface() {
    let req = getlink_request("gwb", 77);
    let msgs = messages(&req);
    assert_eq!(msgs.len(), 1);
    assert_eq!((msgs[0].kind, msgs[0].seq), (RTM_GETLINK, 77));
    assert_eq!(req.len() % 4, 0);
    let a = attrs(&msgs[0].payload[IFINFOMSG_LEN..]);
    assert_eq!(a, vec![(IFLA_IFNAME, &b"gwb\0"[..])]);
}

#[test]
fn error_payloads_give_the_errno() {
    let e = (-libc::ENODEV).to_ne_bytes();
    assert_eq!(error_code(&e), Some(libc::ENODEV));
    assert_eq!(error_code(&0i32.to_ne_bytes()), Some(0));
    assert_eq!(error_code(&[1, 2]), None);
}
