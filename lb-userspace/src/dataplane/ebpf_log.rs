//! Forwards the XDP program's aya-log records to the daemon's log (off by
//! default; `lb run --ebpf-debug`).
//!
//! The program logs only while its `DEBUG` global is set at load time, so
//! with the flag off the data path pays one read of a constant per decision
//! point and the ring buffer stays empty.
use aya::Ebpf;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;
use tracing::warn;

/// Name of the program's global that enables its debug logging.
pub const DEBUG_GLOBAL: &str = "DEBUG";

/// Log target the program's records carry (its crate name); `lb run
/// --ebpf-debug` enables debug level for it.
pub const EBPF_LOG_TARGET: &str = "lb_ebpf";

/// Why log forwarding could not start.
#[derive(Debug, thiserror::Error)]
pub enum EbpfLogError {
    /// The object has no log ring buffer, or it could not be opened.
    #[error("setting up the eBPF log reader")]
    Init(#[from] aya_log::Error),
    /// The ring buffer could not be registered with the runtime.
    #[error("registering the eBPF log ring buffer with the runtime")]
    Poll(#[from] std::io::Error),
}

/// Starts forwarding records from the program's log ring buffer to the
/// `log` facade (which tracing picks up). Call only when the program was
/// loaded with [`DEBUG_GLOBAL`] set.
pub fn spawn(ebpf: &mut Ebpf) -> Result<JoinHandle<()>, EbpfLogError> {
    let logger = aya_log::EbpfLogger::init(ebpf)?;
    // SAFETY: the logger owns the ring buffer's descriptor for as long as it
    // lives (it moves into the AsyncFd) and always reports that same one.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    Ok(tokio::spawn(async move {
        loop {
            match fd.readable_mut().await {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => {
                    warn!(error = %e, "eBPF log forwarding stopped");
                    return;
                }
            }
        }
    }))
}
