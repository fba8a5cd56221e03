//! Attaching the loaded program to interfaces and keeping track of the
//! attachments: fresh ones (pinned, so the data path outlives the daemon),
//! take-overs of links a previous daemon pinned, and checking that each is
//! still in place (see [`Dataplane::verify_attached`]).
use std::path::Path;

use anyhow::{Context, Result};
use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
    XdpMode,
};
use tracing::{info, warn};

use super::{ifindex, AttachMode, Attachment, Dataplane};
use crate::config::XdpMode as ConfigMode;
use crate::dataplane::pins::Pins;
use crate::dataplane::rtnl::XdpProgs;

impl Dataplane {
    /// Attaches to `iface`. A link pinned there by an earlier daemon is
    /// taken over: the program on it is replaced atomically, so not one packet
    /// misses the data path. Otherwise `Auto` tries native XDP first and falls
    /// back to generic, logging which one took; the new link is pinned.
    pub fn attach(&mut self, iface: &str, mode: ConfigMode) -> Result<AttachMode> {
        let ifindex = ifindex(iface)?;
        self.ifindexes.insert(iface.to_string(), ifindex);
        if let Some(found) = self.take_over(iface)? {
            self.allow_redirect(ifindex)?;
            crate::dataplane::macs::write_or_warn(self, iface, ifindex);
            return Ok(found);
        }
        let tries: &[(XdpMode, AttachMode)] = match mode {
            ConfigMode::Native => &[(XdpMode::Driver, AttachMode::Native)],
            ConfigMode::Generic => &[(XdpMode::Skb, AttachMode::Generic)],
            ConfigMode::Auto => &[
                (XdpMode::Driver, AttachMode::Native),
                (XdpMode::Skb, AttachMode::Generic),
            ],
        };
        let mut last_err = None;
        for (xdp_mode, attach_mode) in tries {
            match self.program().attach(iface, *xdp_mode) {
                Ok(link) => {
                    info!(
                        interface = iface,
                        mode = attach_mode.as_str(),
                        "XDP attached"
                    );
                    let attachment = self.pin_link(link, iface, *attach_mode)?;
                    self.attached
                        .insert(iface.to_string(), (attachment, *attach_mode));
                    self.allow_redirect(ifindex)?;
                    crate::dataplane::macs::write_or_warn(self, iface, ifindex);
                    return Ok(*attach_mode);
                }
                Err(e) => {
                    if mode == ConfigMode::Auto {
                        warn!(interface = iface, mode = attach_mode.as_str(), error = %e, "XDP attach failed, trying the next mode");
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(anyhow::Error::new(
            last_err.expect("at least one mode tried"),
        ))
        .with_context(|| format!("attaching XDP to {iface}"))
    }

    /// Replaces the program on a link pinned for `iface` (this layout or an
    /// older one) with this daemon's program.
    fn take_over(&mut self, iface: &str) -> Result<Option<AttachMode>> {
        let Some(pins) = self.pins.clone() else {
            return Ok(None);
        };
        for found in pins.links().into_iter().filter(|l| l.iface == iface) {
            let pinned = match PinnedLink::from_pin(&found.path) {
                Ok(p) => p,
                Err(e) => {
                    warn!(path = %found.path.display(), error = %e, "stale link pin, removing it");
                    let _ = std::fs::remove_file(&found.path);
                    continue;
                }
            };
            let xdp_link = match XdpLink::try_from(FdLink::from(pinned)) {
                Ok(l) => l,
                Err(e) => {
                    warn!(path = %found.path.display(), error = %e, "pinned link is not an XDP link, removing it");
                    let _ = std::fs::remove_file(&found.path);
                    continue;
                }
            };
            let id = match self.program().attach_to_link(xdp_link) {
                Ok(id) => id,
                Err(e) => {
                    // ENOLINK "Link has been severed": the interface was
                    // deleted (and maybe re-created) since; the link is dead.
                    warn!(interface = iface, path = %found.path.display(), error = %e,
                        "pinned link cannot be taken over (severed?): removing it and attaching afresh");
                    let _ = std::fs::remove_file(&found.path);
                    continue;
                }
            };
            let link = self.program().take_link(id)?;
            let fd = FdLink::try_from(link).context("adopted link is not a bpf_link")?;
            let pin = pins.link(iface, found.mode);
            if found.path != pin {
                // A link of an older layout: pin it under this layout's path.
                let fd2 = fd.pin(&pin).context("re-pinning an adopted link")?;
                let _ = std::fs::remove_file(&found.path);
                let fd = FdLink::from(fd2);
                self.attached.insert(
                    iface.to_string(),
                    (Attachment::Pinned { link: fd, pin }, found.mode),
                );
            } else {
                self.attached.insert(
                    iface.to_string(),
                    (Attachment::Pinned { link: fd, pin }, found.mode),
                );
            }
            info!(
                interface = iface,
                mode = found.mode.as_str(),
                "XDP link adopted: program replaced atomically"
            );
            return Ok(Some(found.mode));
        }
        Ok(None)
    }

    /// Pins a fresh link so the data path outlives the daemon.
    fn pin_link(&mut self, id: XdpLinkId, iface: &str, mode: AttachMode) -> Result<Attachment> {
        let Some(pins) = self.pins.clone() else {
            return Ok(Attachment::Managed(id));
        };
        let link = self.program().take_link(id)?;
        match FdLink::try_from(link) {
            Ok(fd) => {
                let pin = pins.link(iface, mode);
                let pinned = fd
                    .pin(&pin)
                    .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
                Ok(Attachment::Pinned {
                    link: FdLink::from(pinned),
                    pin,
                })
            }
            Err(_) => {
                warn!(interface = iface, "kernel gave a netlink XDP attachment: it cannot be pinned, so it ends with the daemon");
                Err(anyhow::anyhow!(
                    "XDP attachment of {iface} is not a bpf_link"
                ))
            }
        }
    }

    /// Removes pins of other layouts once their links were taken over.
    pub fn finish_adoption(&self) {
        if let Some(p) = &self.pins {
            p.remove_other_layouts();
        }
    }

    /// Lets the program redirect packets to interface `ifindex` (done for
    /// every attached interface; packet tests call it directly).
    pub fn allow_redirect(&mut self, ifindex: u32) -> Result<()> {
        self.maps
            .tx_ports
            .insert(ifindex, ifindex, None, 0)
            .context("TX_PORTS: allowing redirects")?;
        Ok(())
    }

    /// Forgets the attachment of `iface` (the interface was deleted: its
    /// link is severed and cannot be reused) and removes its pin.
    pub fn forget(&mut self, iface: &str) -> bool {
        self.ifindexes.remove(iface);
        match self.attached.remove(iface) {
            Some((Attachment::Pinned { link, pin }, _)) => {
                let _ = std::fs::remove_file(&pin);
                drop(link);
                true
            }
            Some((Attachment::Managed(_), _)) => true,
            None => false,
        }
    }

    /// Detaches `iface`, an attachment this daemon made, and removes its pin
    /// (undoing a start-up that failed further on).
    pub fn detach(&mut self, iface: &str) {
        self.ifindexes.remove(iface);
        match self.attached.remove(iface) {
            Some((Attachment::Pinned { link, pin }, _)) => {
                let _ = std::fs::remove_file(&pin);
                drop(link);
                info!(interface = iface, "XDP detached");
            }
            Some((Attachment::Managed(id), _)) => {
                if let Err(e) = self.program().detach(id) {
                    warn!(interface = iface, error = %e, "XDP detach failed");
                }
            }
            None => {}
        }
    }

    /// True when a link pinned for `iface` (this layout or an older one)
    /// waits to be taken over.
    pub fn has_pinned_link(&self, iface: &str) -> bool {
        self.pins
            .as_ref()
            .is_some_and(|p| p.links().iter().any(|l| l.iface == iface))
    }

    /// The interface index the attachment of `iface` was made on (`None`:
    /// not attached). An interface deleted and re-created has another
    /// index: the attachment's link is severed.
    pub fn attached_ifindex(&self, iface: &str) -> Option<u32> {
        self.attached
            .contains_key(iface)
            .then(|| self.ifindexes.get(iface).copied())
            .flatten()
    }

    /// Interfaces the program is attached to, with the mode of each.
    pub fn attachments(&self) -> Vec<(String, AttachMode)> {
        self.attached
            .iter()
            .map(|(k, (_, m))| (k.clone(), *m))
            .collect()
    }

    /// Detaches from every interface and removes every pin: the host is
    /// left as it was before `lb run`.
    pub fn detach_all(&mut self) {
        for (iface, (attachment, _)) in std::mem::take(&mut self.attached) {
            match attachment {
                Attachment::Pinned { link, pin } => {
                    let _ = std::fs::remove_file(&pin);
                    drop(link);
                    info!(interface = %iface, "XDP detached");
                }
                Attachment::Managed(id) => match self.program().detach(id) {
                    Ok(()) => info!(interface = %iface, "XDP detached"),
                    Err(e) => warn!(interface = %iface, error = %e, "XDP detach failed"),
                },
            }
        }
        if let Some(p) = &self.pins {
            p.remove_everything();
        }
    }

    /// Leaves the data path running: links and maps stay pinned, and the
    /// next `lb run` adopts them.
    pub fn keep_attached(&mut self) {
        let n = self.attached.len();
        for (_, (attachment, _)) in std::mem::take(&mut self.attached) {
            if let Attachment::Pinned { link, .. } = attachment {
                // Closing our fd leaves the pinned link attached.
                drop(link);
            }
        }
        info!(interfaces = n, "leaving the data path attached (pinned)");
    }

    /// Whether the XDP programs the kernel reports on `iface` (`found`, from
    /// rtnetlink) include this daemon's program in the mode it attached
    /// it. `Err` says what was found instead: a link detached through the
    /// bpf syscall (`bpftool link detach`) leaves nothing, another tool may
    /// have put its own program there.
    pub fn verify_attached(&self, iface: &str, found: &XdpProgs) -> Result<(), String> {
        let Some((_, mode)) = self.attached.get(iface) else {
            return Err("XDP program not attached".into());
        };
        let id = match mode {
            AttachMode::Native => found.native,
            AttachMode::Generic => found.generic,
        };
        match id {
            Some(id) if id == self.prog_id => Ok(()),
            Some(other) => Err(format!(
                "XDP program replaced: {} mode runs program id {other}, not lb's ({})",
                mode.as_str(),
                self.prog_id
            )),
            None => Err(format!(
                "XDP program detached ({} mode has no program)",
                mode.as_str()
            )),
        }
    }
}

/// Removes the data path a daemon left attached at `pin_root`: every
/// pinned link (the XDP programs detach as their last reference goes) and
/// every pinned map. Takes the pin root's lock first, so it refuses while a
/// daemon runs. Returns how many links were removed.
pub fn detach_pinned(pin_root: &Path) -> Result<usize> {
    let pins = Pins::prepare(pin_root)?;
    let _lock = pins.lock()?;
    let links = pins.links().len();
    pins.remove_everything();
    for l in pins.links() {
        warn!(path = %l.path.display(), "could not remove a pinned link");
    }
    Ok(links)
}
