//! Validation of the check keys (`kind`, `path`, `expect_status`,
//! `server_name`, `ca_file`, `client_cert`, `client_key`) of `[health]` and
//! `[listener.health]`, and resolution of each listener's [`Check`].
//!
//! Rules:
//! - Each table's keys are checked on their own, once: formats, `client_cert`
//!   and `client_key` set together. Files are only named here (see
//!   [`super::CertFile`]); the health module reads and checks them.
//! - A listener's kind is its own `kind`, else `[health]`'s, else the default
//!   for its target port ([`CheckKind::default_for_port`]); every other key is
//!   the listener's value, else `[health]`'s, else the default.
//! - A key the resolved kind does not use is an error where it is written in
//!   the listener's table, or in `[health]` next to an explicit `kind` that
//!   does not use it. Set in `[health]` without a `kind` there, such keys are
//!   defaults for the listeners whose check uses them and are ignored by the
//!   others (e.g. a `ca_file` for 6443 and 50000 next to a `tcp` listener).

use std::collections::BTreeSet;
use std::path::PathBuf;

use http::uri::PathAndQuery;
use rustls_pki_types::ServerName;

use super::raw::RawHealth;
use super::validate::Checker;
use super::{
    CertFile, CertFileKind, Check, CheckKind, ClientAuth, HttpsParams, TlsParams,
    DEFAULT_EXPECT_STATUS, DEFAULT_HTTPS_PATH,
};

/// The check keys of one table, each validated; invalid ones are `None`
/// (their problem is reported).
#[derive(Debug, Default, Clone)]
pub(crate) struct CheckKeys {
    kind: Option<CheckKind>,
    path: Option<String>,
    expect_status: Option<Vec<u16>>,
    server_name: Option<String>,
    ca_file: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
}

/// Keys only `tls` and `https` checks use.
const TLS_KEYS: [&str; 4] = ["server_name", "ca_file", "client_cert", "client_key"];
/// Keys only `https` checks use.
const HTTPS_KEYS: [&str; 2] = ["path", "expect_status"];

/// The check keys present in `raw`, by name.
fn present(raw: &RawHealth) -> Vec<&'static str> {
    let set = [
        ("path", raw.path.is_some()),
        ("expect_status", raw.expect_status.is_some()),
        ("server_name", raw.server_name.is_some()),
        ("ca_file", raw.ca_file.is_some()),
        ("client_cert", raw.client_cert.is_some()),
        ("client_key", raw.client_key.is_some()),
    ];
    set.into_iter()
        .filter_map(|(k, on)| on.then_some(k))
        .collect()
}

impl Checker {
    /// Validates the check keys of `[health]`; with a `kind` there, also
    /// that every key set applies to it.
    pub(crate) fn check_defaults(&mut self, raw: &RawHealth) -> CheckKeys {
        let keys = self.check_keys("health", raw);
        if let Some(kind) = raw.kind {
            self.applicable("health", kind, raw, "");
        }
        keys
    }

    /// Resolves the check of a listener (`prefix` is its health table's key
    /// path) over the validated `[health]` keys.
    pub(crate) fn listener_check(
        &mut self,
        prefix: &str,
        target_port: Option<u16>,
        raw: &RawHealth,
        defaults: &CheckKeys,
    ) -> Check {
        let own = self.check_keys(prefix, raw);
        let explicit = own.kind.or(defaults.kind);
        let kind =
            explicit.unwrap_or_else(|| CheckKind::default_for_port(target_port.unwrap_or(0)));
        // With an invalid port the default kind is unknown: nothing to hold
        // the keys against.
        if explicit.is_some() || target_port.is_some() {
            let why = match (own.kind, defaults.kind) {
                (Some(_), _) => "",
                (None, Some(_)) => " (the kind set in [health])",
                (None, None) => " (the default for its target port)",
            };
            self.applicable(prefix, kind, raw, why);
        }
        let tls = || TlsParams {
            server_name: own.server_name.clone().or(defaults.server_name.clone()),
            ca_file: own.ca_file.clone().or(defaults.ca_file.clone()),
            client_auth: own.client_auth.clone().or(defaults.client_auth.clone()),
        };
        match kind {
            CheckKind::Tcp => Check::Tcp,
            CheckKind::Tls => Check::Tls(tls()),
            CheckKind::Https => Check::Https(HttpsParams {
                path: own
                    .path
                    .clone()
                    .or(defaults.path.clone())
                    .unwrap_or_else(|| DEFAULT_HTTPS_PATH.to_owned()),
                expect_status: own
                    .expect_status
                    .clone()
                    .or(defaults.expect_status.clone())
                    .unwrap_or_else(|| DEFAULT_EXPECT_STATUS.to_vec()),
                tls: tls(),
            }),
        }
    }

    /// Reports every key of `raw` that a `kind` check does not use.
    fn applicable(&mut self, prefix: &str, kind: CheckKind, raw: &RawHealth, why: &str) {
        for key in present(raw) {
            let used = match kind {
                CheckKind::Tcp => false,
                CheckKind::Tls => TLS_KEYS.contains(&key),
                CheckKind::Https => true,
            };
            if used {
                continue;
            }
            let users = if HTTPS_KEYS.contains(&key) {
                "https checks"
            } else {
                "tls and https checks"
            };
            self.report(
                format!("{prefix}.{key}"),
                format!("{key} only applies to {users}, and this check is {kind}{why}"),
            );
        }
    }

    /// Validates each check key of one table on its own.
    fn check_keys(&mut self, prefix: &str, raw: &RawHealth) -> CheckKeys {
        let mut keys = CheckKeys {
            kind: raw.kind,
            ..CheckKeys::default()
        };
        if let Some(path) = &raw.path {
            match check_path(path) {
                Ok(()) => keys.path = Some(path.clone()),
                Err(message) => self.report(format!("{prefix}.path"), message),
            }
        }
        if let Some(list) = &raw.expect_status {
            match check_statuses(list) {
                Ok(statuses) => keys.expect_status = Some(statuses),
                Err(message) => self.report(format!("{prefix}.expect_status"), message),
            }
        }
        if let Some(name) = &raw.server_name {
            match ServerName::try_from(name.as_str()) {
                Ok(_) => keys.server_name = Some(name.clone()),
                Err(_) => self.report(
                    format!("{prefix}.server_name"),
                    format!("{name:?} is neither a DNS name nor an IP address"),
                ),
            }
        }
        if let Some(file) = &raw.ca_file {
            // Named here, loaded by the health module (no file I/O in
            // validation).
            let path = PathBuf::from(file);
            self.cert_files.push(CertFile {
                key: format!("{prefix}.ca_file"),
                file: CertFileKind::Ca(path.clone()),
            });
            keys.ca_file = Some(path);
        }
        match (&raw.client_cert, &raw.client_key) {
            (None, None) => {}
            (Some(_), None) => self.report(
                format!("{prefix}.client_cert"),
                "client_cert needs client_key (set both or neither)",
            ),
            (None, Some(_)) => self.report(
                format!("{prefix}.client_key"),
                "client_key needs client_cert (set both or neither)",
            ),
            (Some(cert), Some(key)) => {
                let auth = ClientAuth {
                    cert: PathBuf::from(cert),
                    key: PathBuf::from(key),
                };
                self.cert_files.push(CertFile {
                    key: prefix.to_string(),
                    file: CertFileKind::ClientAuth(auth.clone()),
                });
                keys.client_auth = Some(auth);
            }
        }
        keys
    }
}

/// `path` must be an absolute request target (path and optional query).
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    path.parse::<PathAndQuery>()
        .map(drop)
        .map_err(|e| format!("path {path:?} is not a valid request path: {e}"))
}

/// `expect_status`: a non-empty list of distinct statuses in 100..=599,
/// returned ascending.
fn check_statuses(list: &[i64]) -> Result<Vec<u16>, String> {
    if list.is_empty() {
        return Err("expect_status must list at least one status".into());
    }
    let mut set = BTreeSet::new();
    for &n in list {
        let code = u16::try_from(n)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("status {n} is out of range 100..=599"))?;
        if !set.insert(code) {
            return Err(format!("status {code} is listed twice"));
        }
    }
    Ok(set.into_iter().collect())
}
