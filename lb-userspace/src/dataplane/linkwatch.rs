//! Watches network interfaces appear and vanish (rtnetlink link events on
//! a `NETLINK_ROUTE` socket subscribed to `RTMGRP_LINK`), so the daemon
//! reports a deleted interface at once and re-attaches to a re-created one.
//!
//! Only the interface name and whether it was added or removed are taken
//! from each message; a lost event (socket buffer overrun) is covered by
//! the daemon re-checking missing interfaces on its tick.
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

/// `RTMGRP_LINK`: the multicast group of link events.
const RTMGRP_LINK: u32 = 1;
/// `RTM_NEWLINK`.
const RTM_NEWLINK: u16 = 16;
/// `RTM_DELLINK`.
const RTM_DELLINK: u16 = 17;
/// `IFLA_IFNAME`.
const IFLA_IFNAME: u16 = 3;
/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// Size of `struct ifinfomsg`.
const IFINFOMSG_LEN: usize = 16;

/// A link event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface was created or changed (`RTM_NEWLINK`).
    Up(String),
    /// An interface was deleted (`RTM_DELLINK`).
    Gone(String),
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses the link events in one netlink datagram (malformed parts are
/// skipped, never trusted past their bounds).
pub fn parse(buf: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2 bytes"));
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        if kind == RTM_NEWLINK || kind == RTM_DELLINK {
            let mut a = off + NLMSG_HDRLEN + IFINFOMSG_LEN;
            let end = off + len;
            while a + 4 <= end {
                let alen = u16::from_ne_bytes(buf[a..a + 2].try_into().expect("2 bytes")) as usize;
                let atype = u16::from_ne_bytes(buf[a + 2..a + 4].try_into().expect("2 bytes"));
                if alen < 4 || a + alen > end {
                    break;
                }
                if atype & 0x3fff == IFLA_IFNAME {
                    let raw = &buf[a + 4..a + alen];
                    let name = raw.split(|b| *b == 0).next().unwrap_or_default();
                    let name = String::from_utf8_lossy(name).into_owned();
                    out.push(match kind {
                        RTM_NEWLINK => LinkEvent::Up(name),
                        _ => LinkEvent::Gone(name),
                    });
                    break;
                }
                a += align4(alen);
            }
        }
        off += align4(len);
    }
    out
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; fields set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = RTMGRP_LINK;
    // SAFETY: `addr` is a valid sockaddr_nl of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Starts watching; events go to `tx`. Fails if the netlink socket cannot
/// be opened (the daemon then relies on its tick alone).
pub fn spawn(tx: mpsc::Sender<LinkEvent>) -> io::Result<JoinHandle<()>> {
    // SAFETY: `OwnedFd::as_raw_fd` returns the descriptor it owns, which
    // stays open as long as the AsyncFd holds it.
    let fd = unsafe { AsyncFd::register(open()?) }.map_err(io::Error::from)?;
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let mut guard = match fd.readable().await {
                Ok(g) => g,
                Err(e) => {
                    warn!(error = %e, "link watch stopped");
                    return;
                }
            };
            let n = guard.try_io(|inner| {
                // SAFETY: reading into a buffer we own, of its length.
                let n = unsafe {
                    libc::recv(
                        inner.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match n {
                Ok(Ok(n)) => {
                    for ev in parse(&buf[..n]) {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
                // ENOBUFS: events were lost; the daemon's tick re-checks.
                Ok(Err(e)) => warn!(error = %e, "link watch: receive failed"),
                Err(_would_block) => continue,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, name: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let alen = 4 + name.len() + 1;
        attr.extend_from_slice(&(alen as u16).to_ne_bytes());
        attr.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        attr.extend_from_slice(name.as_bytes());
        attr.push(0);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let len = NLMSG_HDRLEN + IFINFOMSG_LEN + attr.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&[0u8; IFINFOMSG_LEN]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn parses_new_and_deleted_links_and_survives_garbage() {
        let mut buf = message(RTM_DELLINK, "gwb");
        buf.extend(message(RTM_NEWLINK, "eth0.100"));
        assert_eq!(
            parse(&buf),
            vec![
                LinkEvent::Gone("gwb".into()),
                LinkEvent::Up("eth0.100".into())
            ]
        );
        // Truncated or lying lengths: nothing read past the buffer.
        for cut in 0..buf.len() {
            let _ = parse(&buf[..cut]);
        }
        let mut lying = message(RTM_NEWLINK, "x");
        lying[0] = 0xff;
        assert!(parse(&lying).is_empty());
    }
}
