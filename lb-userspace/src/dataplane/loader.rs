//! Loads the embedded XDP object and attaches it to interfaces.
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use aya::{
    maps::DevMapHash,
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use lb_common::{MAP_CT_FWD, MAP_CT_REV, MAP_TX_PORTS, PROGRAM_NAME};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::XdpMode as ConfigMode;

/// The XDP object built by `cargo xtask build-ebpf`, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// How the program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver (native XDP).
    Native,
    /// In the kernel's generic (skb) path.
    Generic,
}

/// The loaded program, its maps and its attachments.
pub struct Dataplane {
    /// The loaded object (maps and program).
    pub ebpf: Ebpf,
    attached: BTreeMap<String, (aya::programs::xdp::XdpLinkId, AttachMode)>,
}

impl Dataplane {
    /// Loads the program and creates its maps, with conntrack maps of
    /// `conntrack_capacity` entries per direction. Nothing is attached yet.
    pub fn load(conntrack_capacity: u32) -> Result<Self> {
        if OBJECT.is_empty() {
            bail!("this lb binary was built without the XDP object: run `cargo xtask build-ebpf`, then rebuild");
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_CT_FWD, conntrack_capacity)
            .map_max_entries(MAP_CT_REV, conntrack_capacity)
            .load(OBJECT)
            .context("loading the XDP object")?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .context("XDP program missing from the object")?
            .try_into()?;
        prog.load().context("the kernel refused the XDP program")?;
        Ok(Self {
            ebpf,
            attached: BTreeMap::new(),
        })
    }

    /// The loaded XDP program (also used by packet tests through BPF_PROG_TEST_RUN).
    pub fn program(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// Attaches to `iface`. `Auto` tries native XDP first and falls back to
    /// generic, logging which one took.
    pub fn attach(&mut self, iface: &str, mode: ConfigMode) -> Result<AttachMode> {
        let ifindex = ifindex(iface)?;
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
                    info!(interface = iface, mode = ?attach_mode, "XDP attached");
                    self.attached
                        .insert(iface.to_string(), (link, *attach_mode));
                    self.allow_redirect(ifindex)?;
                    return Ok(*attach_mode);
                }
                Err(e) => {
                    if mode == ConfigMode::Auto {
                        warn!(interface = iface, mode = ?attach_mode, error = %e, "XDP attach failed, trying the next mode");
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

    /// Lets the program redirect packets to interface `ifindex` (done for
    /// every attached interface; packet tests call it directly).
    pub fn allow_redirect(&mut self, ifindex: u32) -> Result<()> {
        let mut ports: DevMapHash<_> =
            DevMapHash::try_from(self.ebpf.map_mut(MAP_TX_PORTS).context("TX_PORTS map")?)?;
        ports.insert(ifindex, ifindex, None, 0)?;
        Ok(())
    }

    /// Interfaces the program is attached to, with the mode of each.
    pub fn attachments(&self) -> Vec<(String, AttachMode)> {
        self.attached
            .iter()
            .map(|(k, (_, m))| (k.clone(), *m))
            .collect()
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self) {
        let links: Vec<_> = std::mem::take(&mut self.attached).into_iter().collect();
        for (iface, (link, _)) in links {
            match self.program().detach(link) {
                Ok(()) => info!(interface = %iface, "XDP detached"),
                Err(e) => warn!(interface = %iface, error = %e, "XDP detach failed"),
            }
        }
    }
}

/// The kernel's index of a network interface.
pub fn ifindex(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface).context("interface name contains NUL")?;
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        bail!("no interface named {iface:?} in this network namespace");
    }
    Ok(idx)
}
