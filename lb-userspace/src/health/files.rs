//! Loads and checks the certificate and key files a configuration names
//! (`ca_file`, `client_cert`, `client_key`), with the configuration key of
//! each in the error. Validation does no file I/O; this runs where the
//! configuration is loaded for use (start-up, a reload's reader off the
//! event loop, `lb check`).
//!
//! Each file is read once per load, bounded in size and never blocking
//! (see [`crate::config::read`]), and its contents are kept in the
//! configuration ([`Config::files`]): the TLS checks are built from them, so
//! a reload sees a CA bundle rotated at the same path, and nothing reads a
//! file on the event loop.
use std::path::Path;

use crate::config::{CertFileKind, Config, ConfigError, Problem};

use super::{pem, tls};

/// Reads every certificate or key file of `config` into [`Config::files`]
/// and checks each is usable; every unusable one is reported, as one error.
pub fn load(config: &mut Config) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    let mut files = std::mem::take(&mut config.files);
    for f in &config.cert_files {
        let paths: Vec<(String, &Path)> = match &f.file {
            CertFileKind::Ca(path) => vec![(f.key.clone(), path)],
            CertFileKind::ClientAuth(auth) => vec![
                (format!("{}.client_cert", f.key), &auth.cert),
                (format!("{}.client_key", f.key), &auth.key),
            ],
        };
        let mut all_read = true;
        for (key, path) in paths {
            if files.get(path).is_some() {
                continue;
            }
            match pem::read(path) {
                Ok(data) => files.insert(path.to_owned(), data),
                Err(e) => {
                    all_read = false;
                    problems.push(Problem {
                        key,
                        message: e.to_string(),
                    });
                }
            }
        }
        if !all_read {
            continue;
        }
        let checked = match &f.file {
            CertFileKind::Ca(path) => tls::check_ca(path, &files),
            CertFileKind::ClientAuth(auth) => tls::check_client_auth(auth, &files),
        };
        if let Err(e) = checked {
            problems.push(Problem {
                key: match &f.file {
                    CertFileKind::Ca(_) => f.key.clone(),
                    CertFileKind::ClientAuth(_) => format!("{}.{}", f.key, e.key()),
                },
                message: e.message(),
            });
        }
    }
    config.files = files;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::from_problems(problems))
    }
}
