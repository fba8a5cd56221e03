//! PEM files for TLS checks: CA bundles, client certificates, private keys.
//!
//! Parsing is `rustls-pki-types`'; this module only reads the files and turns
//! "nothing usable in there" into an error that says what was expected.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;

use crate::config::read::FileContents;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was not read with the configuration (a configuration that
    /// was validated but not loaded for use).
    #[error("{} was not read with the configuration", path.display())]
    NotLoaded {
        /// The file.
        path: PathBuf,
    },
    /// The file is not well-formed PEM.
    #[error("{} is not valid PEM: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The file holds no block of the expected kind.
    #[error("{} holds no {what} (expected PEM \"-----BEGIN {what}-----\")", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The kind of block expected, e.g. `CERTIFICATE`.
        what: &'static str,
    },
    /// A certificate in a CA file cannot serve as a trust anchor.
    #[error("{}: certificate {index} is not a usable CA certificate: {source}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// Why rustls refused it.
        source: rustls::Error,
    },
}

/// Largest certificate or key file read (a CA bundle of every public CA
/// is about 200 KiB).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a PEM file the configuration names, bounded in size and never
/// blocking (see [`crate::config::read::read_bounded`]).
pub fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    crate::config::read::read_bounded(path, MAX_PEM_BYTES, "a certificate or key file").map_err(
        |source| PemError::Read {
            path: path.to_owned(),
            source,
        },
    )
}

/// The contents of `path` as read with the configuration.
pub fn contents<'a>(files: &'a FileContents, path: &Path) -> Result<&'a [u8], PemError> {
    files.get(path).ok_or_else(|| PemError::NotLoaded {
        path: path.to_owned(),
    })
}

fn malformed(path: &Path, e: pem::Error) -> PemError {
    PemError::Malformed {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// Every `CERTIFICATE` block of `data`, the contents of `path`, in file
/// order (at least one).
pub fn certs(path: &Path, data: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(data)
        .map(|c| c.map(CertificateDer::into_owned))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(path, e))?;
    if certs.is_empty() {
        return Err(PemError::Missing {
            path: path.to_owned(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// The first private key of `data`, the contents of `path` (PKCS#8,
/// PKCS#1 RSA or SEC1 EC).
pub fn key(path: &Path, data: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    match PrivateKeyDer::from_pem_slice(data) {
        Ok(key) => Ok(key.clone_key()),
        Err(pem::Error::NoItemsFound) => Err(PemError::Missing {
            path: path.to_owned(),
            what: "PRIVATE KEY",
        }),
        Err(e) => Err(malformed(path, e)),
    }
}

/// A root store holding every certificate of `data`, the contents of
/// `path` (at least one, each a usable trust anchor).
pub fn roots(path: &Path, data: &[u8]) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs(path, data)?.into_iter().enumerate() {
        roots.add(cert).map_err(|source| PemError::BadCa {
            path: path.to_owned(),
            index: i + 1,
            source,
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::test_pki::TestCa;

    fn load_certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
        certs(p, &read(p)?)
    }

    fn load_key(p: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
        key(p, &read(p)?)
    }

    fn load_roots(p: &Path) -> Result<RootCertStore, PemError> {
        roots(p, &read(p)?)
    }

    #[test]
    fn endless_and_blocking_files_are_refused_at_once() {
        // Before: `ca_file = "/dev/zero"` grew `lb check` to 1 GB.
        let e = load_roots(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_certificates_keys_and_roots() {
        let a = TestCa::new("a");
        let b = TestCa::new("b");
        let bundle_text = format!(
            "{}{}",
            std::fs::read_to_string(a.ca_file()).unwrap(),
            std::fs::read_to_string(b.ca_file()).unwrap()
        );
        let bundle = write(a.dir(), "bundle.pem", &bundle_text);
        assert_eq!(load_certs(&bundle).unwrap().len(), 2);
        assert_eq!(load_roots(&bundle).unwrap().len(), 2);
        let client = a.client("client", "lb");
        assert_eq!(
            load_certs(&client.cert_file).unwrap(),
            vec![client.cert.clone()]
        );
        assert!(matches!(
            load_key(&client.key_file).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
    }

    #[test]
    fn missing_unreadable_and_wrong_files_are_errors() {
        let ca = TestCa::new("ca");
        let nothing = ca.dir().join("nope.pem");
        let e = load_certs(&nothing).unwrap_err();
        assert!(matches!(e, PemError::Read { .. }), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");

        let text = write(ca.dir(), "text.pem", "hello\n");
        let e = load_certs(&text).unwrap_err();
        assert!(e.to_string().contains("holds no CERTIFICATE"), "{e}");
        let e = load_key(&text).unwrap_err();
        assert!(e.to_string().contains("holds no PRIVATE KEY"), "{e}");

        // A key where a certificate is expected, and vice versa.
        let client = ca.client("client", "lb");
        assert!(matches!(
            load_certs(&client.key_file),
            Err(PemError::Missing { .. })
        ));
        assert!(matches!(
            load_key(&client.cert_file),
            Err(PemError::Missing { .. })
        ));

        let broken = write(
            ca.dir(),
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        assert!(matches!(
            load_certs(&broken),
            Err(PemError::Malformed { .. })
        ));
    }

    #[test]
    fn garbage_inside_a_certificate_block_is_not_a_root() {
        let ca = TestCa::new("ca");
        // Valid base64, not a certificate.
        let p = write(
            ca.dir(),
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let e = load_roots(&p).unwrap_err();
        assert!(matches!(e, PemError::BadCa { index: 1, .. }), "{e}");
    }
}
