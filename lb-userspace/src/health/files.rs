//! Loads and checks the certificate and key files a configuration names
//! (`ca_file`, `client_cert`, `client_key`), with the configuration key of
//! each in the error. Validation does no file I/O; this runs where the
//! configuration is applied (start-up, reload, off the event loop) and for
//! `lb check`.
use crate::config::{CertFileKind, Config, ConfigError, Problem};

use super::{pem, tls};

/// Every unusable certificate or key file of `config`, as one error.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for f in &config.cert_files {
        match &f.file {
            CertFileKind::Ca(path) => {
                if let Err(e) = pem::load_roots(path) {
                    problems.push(Problem {
                        key: f.key.clone(),
                        message: e.to_string(),
                    });
                }
            }
            CertFileKind::ClientAuth(auth) => {
                if let Err(e) = tls::check_client_auth(auth) {
                    problems.push(Problem {
                        key: format!("{}.{}", f.key, e.key()),
                        message: e.message(),
                    });
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::from_problems(problems))
    }
}
