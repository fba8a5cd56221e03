//! The one way the daemon reads a file the configuration names: the
//! configuration itself, CA bundles, client certificates and keys.
//!
//! A file is opened non-blocking (a FIFO does not wait for a writer) and
//! close-on-exec, must be a regular file (a FIFO, a device such as
//! `/dev/zero`, a socket or a directory is refused; a symlink is followed to
//! what it names), and its size is checked against a cap before reading and
//! again while reading (it may grow meanwhile). So no read blocks a thread
//! or grows memory past the cap, whoever calls it: `lb check`, start-up or
//! a reload's reader.
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads at most `max` bytes of the regular file `path`; `what` names the
/// kind of file in the size error ("a configuration", "a certificate file").
pub fn read_bounded(path: &Path, max: u64, what: &str) -> io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, device, socket or directory is refused)",
        ));
    }
    let too_big = |n: u64| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{n} bytes, more than the {} {what} may have", size(max)),
        )
    };
    if meta.len() > max {
        return Err(too_big(meta.len()));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: never read past the cap.
    file.take(max + 1).read_to_end(&mut data)?;
    if data.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "grew past the size limit while being read",
        ));
    }
    Ok(data)
}

/// The contents of the certificate and key files a configuration names
/// ([`super::Config::cert_files`]), as read when the configuration was
/// loaded: TLS checks are built from these bytes, so nothing reads a file
/// on the event loop, and a reload that reads changed contents (a rotated
/// CA bundle at the same path) restarts the checks that use them.
/// Empty until loaded (`health::files::load`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct FileContents {
    files: BTreeMap<PathBuf, Arc<[u8]>>,
}

impl FileContents {
    /// Records `data` as the contents of `path`.
    pub fn insert(&mut self, path: PathBuf, data: Vec<u8>) {
        self.files.insert(path, data.into());
    }

    /// The contents of `path`, if it was read.
    pub fn get(&self, path: &Path) -> Option<&[u8]> {
        self.files.get(path).map(|d| &d[..])
    }

    /// A hash of the contents of `paths` (unread ones count as absent):
    /// equal while none of them changed.
    pub fn fingerprint<'a>(&self, paths: impl IntoIterator<Item = &'a Path>) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in paths {
            p.hash(&mut h);
            self.get(p).hash(&mut h);
        }
        h.finish()
    }
}

impl std::fmt::Debug for FileContents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.files.iter().map(|(p, d)| (p, d.len())))
            .finish()
    }
}

/// `n` bytes in the largest whole unit.
fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn refused(path: &Path) -> String {
        let t0 = Instant::now();
        let e = read_bounded(path, 1 << 20, "a test file").unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(1), "refused at once");
        e.to_string()
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_without_reading() {
        assert!(refused(Path::new("/dev/zero")).contains("not a regular file"));
        assert!(refused(Path::new("/tmp")).contains("not a regular file"));
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would hang here.
        assert!(refused(&fifo).contains("not a regular file"));
    }

    #[test]
    fn size_is_capped_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len((1 << 20) + 1)
            .unwrap();
        let e = refused(&big);
        assert!(
            e.contains("1048577 bytes, more than the 1 MiB a test file may have"),
            "{e}"
        );
        let ok = dir.path().join("ok");
        std::fs::write(&ok, b"hello").unwrap();
        assert_eq!(read_bounded(&ok, 5, "x").unwrap(), b"hello");
        assert!(read_bounded(&ok, 4, "x").is_err());
    }
}
