//! Watches network interfaces over rtnetlink: link events on a
//! `NETLINK_ROUTE` socket subscribed to `RTMGRP_LINK` (an interface
//! created, changed (up, down, carrier, MAC) or deleted), and
//! [`LinkQuery`], which asks the kernel for one interface's current state
//! (`RTM_GETLINK`), for the daemon's tick: a lost event (socket buffer
//! overrun) or a change that sends no event (an XDP program detached
//! through the bpf syscall) is caught there. Messages are parsed by
//! [`super::rtnl`].
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use super::rtnl::{self, LinkInfo, LinkMsg};

/// `RTMGRP_LINK`: the multicast group of link events.
const RTMGRP_LINK: u32 = 1;

/// A link event (see [`rtnl::LinkMsg`]).
pub type LinkEvent = LinkMsg;

/// Parses the link events in one netlink datagram (see [`rtnl::parse`]).
pub fn parse(buf: &[u8]) -> Vec<LinkEvent> {
    rtnl::parse(buf)
}

fn open(groups: u32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
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
    addr.nl_groups = groups;
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
    let fd = unsafe { AsyncFd::register(open(RTMGRP_LINK, libc::SOCK_NONBLOCK)?) }
        .map_err(io::Error::from)?;
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

/// How long [`LinkQuery::get`] waits for the kernel's answer (it comes at
/// once: rtnetlink answers within the request's system call).
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// Asks the kernel for the current state of interfaces, one at a time
/// (`RTM_GETLINK` by name) on a socket of its own, blocking for at most
/// [`QUERY_TIMEOUT`].
pub struct LinkQuery {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl LinkQuery {
    /// Opens the request socket.
    pub fn open() -> io::Result<LinkQuery> {
        let fd = open(0, 0)?;
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: QUERY_TIMEOUT.as_micros() as libc::suseconds_t,
        };
        // SAFETY: setsockopt with a valid timeval of its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LinkQuery {
            fd,
            seq: 0,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// The interface named `name` as the kernel sees it now; `Ok(None)`
    /// when there is none.
    pub fn get(&mut self, name: &str) -> io::Result<Option<LinkInfo>> {
        self.seq = self.seq.wrapping_add(1);
        let req = rtnl::getlink_request(name, self.seq);
        // SAFETY: sending a buffer we own, of its length, to the kernel
        // (the socket is bound; a zero destination address is the kernel).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // Answers to earlier requests that timed out may still be queued:
        // read until the one numbered as this request.
        for _ in 0..16 {
            // SAFETY: reading into a buffer we own, of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for m in rtnl::messages(&self.buf[..n as usize]) {
                if m.seq != self.seq {
                    continue;
                }
                match m.kind {
                    rtnl::RTM_NEWLINK => return Ok(rtnl::link_info(m.payload)),
                    rtnl::NLMSG_ERROR => {
                        return match rtnl::error_code(m.payload) {
                            Some(libc::ENODEV) => Ok(None),
                            Some(e) => Err(io::Error::from_raw_os_error(e)),
                            None => Err(io::Error::other("short netlink error message")),
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(io::Error::other("no answer to RTM_GETLINK"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loopback interface exists in every network namespace; a name
    /// that cannot exist is answered as missing, not as an error.
    #[test]
    fn queries_an_existing_and_a_missing_interface() {
        let mut q = LinkQuery::open().expect("netlink socket");
        let lo = q.get("lo").expect("query lo").expect("lo exists");
        assert_eq!(lo.name, "lo");
        assert!(lo.ifindex > 0);
        assert_eq!(q.get("lb-no-such-if0").expect("query"), None);
    }
}
