//! The destination MACs the XDP program handles on each interface
//! (`IFACE_MACS`): the interface's own address and those of the MAC-VLAN
//! devices stacked on it (keepalived's `use_vmac` creates one with the VRRP
//! virtual MAC 00:00:5e:00:01:XX; frames to it arrive on the lower device).
//! Frames to any other MAC (flooded unknown unicast, the old master's MAC
//! after a takeover) are passed to the kernel untouched, counted as
//! `not_for_us`.
//!
//! An interface without an entry is not filtered, so a daemon that has not
//! written it yet (or failed to) never black-holes traffic. The daemon
//! brings every entry in line with its interface on each link event and
//! tick ([`reconcile`]): a MAC address change (a bond failing over with
//! `fail_over_mac`, a bridge whose address follows its ports, a replaced
//! NIC) or a MAC-VLAN device created after attaching is picked up at once.
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use lb_common::{IfaceMacs, IFACE_MAC_SLOTS, MAX_IFACE_MACS};

use super::Dataplane;

/// Writes the MACs `iface` (index `ifindex`) accepts: its own, then those
/// of its upper devices, then `extra` (configured virtual MACs), at most
/// [`MAX_IFACE_MACS`]; more is an error (the map entry is left unchanged).
pub fn write(dp: &mut Dataplane, iface: &str, ifindex: u32, extra: &[[u8; 6]]) -> Result<()> {
    let macs = desired(iface, interface_mac(iface)?, extra);
    set(dp, ifindex, &macs).with_context(|| format!("destination MACs of {iface}"))
}

/// The MACs `iface` should accept: `own` (its address), those of its
/// upper devices, then `extra` while there is room (own and upper MACs
/// are required: too many of them is an error when written; an extra one
/// is what gives way), each once.
pub fn desired(iface: &str, own: [u8; 6], extra: &[[u8; 6]]) -> Vec<[u8; 6]> {
    let mut macs = vec![own];
    for m in upper_macs(iface) {
        if !macs.contains(&m) {
            macs.push(m);
        }
    }
    for m in extra {
        if macs.len() < MAX_IFACE_MACS && !macs.contains(m) {
            macs.push(*m);
        }
    }
    macs
}

/// Brings interface `ifindex`'s entry to exactly `macs`; returns whether
/// it had to write (the entry differed, e.g. after a MAC change).
pub fn reconcile(dp: &mut Dataplane, ifindex: u32, macs: &[[u8; 6]]) -> Result<bool> {
    let slot = ifindex % IFACE_MAC_SLOTS;
    let cur = dp.maps.iface_macs.get(&slot, 0)?;
    let len = cur.len as usize;
    if cur.ifindex == ifindex && len <= MAX_IFACE_MACS && cur.macs[..len] == *macs {
        return Ok(false);
    }
    set(dp, ifindex, macs)?;
    Ok(true)
}

/// Writes exactly `macs` as what interface `ifindex` accepts. Fails, writing
/// nothing, when another interface holds the slot (that interface keeps its
/// filter; this one stays unfiltered).
pub fn set(dp: &mut Dataplane, ifindex: u32, macs: &[[u8; 6]]) -> Result<()> {
    let mut value = entry(macs)?;
    value.ifindex = ifindex;
    let map = &mut dp.maps.iface_macs;
    let slot = ifindex % IFACE_MAC_SLOTS;
    let held = map.get(&slot, 0)?.ifindex;
    if held != 0 && held != ifindex {
        bail!("its MAC slot is held by interface index {held}");
    }
    map.set(slot, value, 0)?;
    Ok(())
}

/// [`write`] for an interface just attached, with no configured virtual
/// MACs. A failure only leaves the interface unfiltered, so it is logged,
/// not fatal.
pub fn write_or_warn(dp: &mut Dataplane, iface: &str, ifindex: u32) {
    if let Err(e) = write(dp, iface, ifindex, &[]) {
        tracing::warn!(interface = iface, error = %format!("{e:#}"), "destination-MAC check off for this interface");
    }
}

/// Clears `ifindex`'s entry: its frames are no longer filtered.
pub fn forget(dp: &mut Dataplane, ifindex: u32) -> Result<()> {
    let map = &mut dp.maps.iface_macs;
    let slot = ifindex % IFACE_MAC_SLOTS;
    if map.get(&slot, 0)?.ifindex == ifindex {
        map.set(slot, IfaceMacs::default(), 0)?;
    }
    Ok(())
}

/// The map value for `macs`, or an error when there are too many.
pub fn entry(macs: &[[u8; 6]]) -> Result<IfaceMacs> {
    if macs.is_empty() || macs.len() > MAX_IFACE_MACS {
        bail!(
            "{} MACs given, the data path holds 1 to {MAX_IFACE_MACS} per interface",
            macs.len()
        );
    }
    let mut v = IfaceMacs::default();
    v.macs[..macs.len()].copy_from_slice(macs);
    v.len = macs.len() as u32;
    Ok(v)
}

/// The MAC address of `iface`.
pub fn interface_mac(iface: &str) -> Result<[u8; 6]> {
    let path = Path::new("/sys/class/net").join(iface).join("address");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_mac(text.trim()).with_context(|| format!("{}: {:?}", path.display(), text.trim()))
}

/// MACs of the devices stacked on `iface` (MAC-VLANs such as keepalived's
/// VRRP interfaces); unreadable entries are skipped.
fn upper_macs(iface: &str) -> Vec<[u8; 6]> {
    let Ok(dir) = fs::read_dir(Path::new("/sys/class/net").join(iface)) else {
        return vec![];
    };
    let mut out: Vec<[u8; 6]> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_prefix("upper_")?.to_string();
            interface_mac(&name).ok()
        })
        .collect();
    out.sort();
    out
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("not a MAC address");
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            bail!("not a MAC address");
        }
        *m = u8::from_str_radix(p, 16).context("not a MAC address")?;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_macs_and_rejects_garbage() {
        assert_eq!(
            parse_mac("00:00:5e:00:01:33").unwrap(),
            [0, 0, 0x5e, 0, 1, 0x33]
        );
        for bad in [
            "",
            "00:00:5e:00:01",
            "00:00:5e:00:01:3",
            "zz:00:5e:00:01:33",
            "0:0:0:0:0:0:0",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entry_bounds() {
        assert!(entry(&[]).is_err());
        assert!(entry(&[[1; 6]; MAX_IFACE_MACS + 1]).is_err());
        let e = entry(&[[1; 6], [2; 6]]).unwrap();
        assert_eq!(e.len, 2);
        assert_eq!(e.macs[1], [2; 6]);
    }
}
