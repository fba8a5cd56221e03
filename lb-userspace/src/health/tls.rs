//! TLS for health checks: the rustls client configuration of a check, the
//! handshake, and an orderly close that surfaces a late rejection.
//!
//! Every check is a full handshake: session resumption is off, so a server
//! certificate that expired or was replaced is verified again on the next
//! check instead of hiding behind a resumed session.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::pem::{self, PemError};
use super::reason::Failure;
use crate::config::read::FileContents;
use crate::config::{ClientAuth, TlsParams};

/// ALPN offered by `tls` checks. The Talos API is gRPC (HTTP/2) and Go TLS
/// servers refuse a client whose ALPN list shares nothing with theirs.
pub const ALPN_TLS: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN offered by `https` checks: the request is HTTP/1.1.
pub const ALPN_HTTPS: &[&[u8]] = &[b"http/1.1"];

/// Why the TLS client of a check could not be set up. Each variant names the
/// configuration key at fault ([`TlsSetupError::key`]).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// `ca_file` is unreadable, not PEM, or holds no usable CA certificate.
    #[error("ca_file: {0}")]
    CaFile(PemError),
    /// `client_cert` is unreadable or holds no certificate.
    #[error("client_cert: {0}")]
    ClientCert(PemError),
    /// `client_key` is unreadable or holds no private key.
    #[error("client_key: {0}")]
    ClientKey(PemError),
    /// rustls refused the key (unsupported type, or not the key of `client_cert`).
    #[error("client_key: not usable with client_cert: {0}")]
    ClientAuth(rustls::Error),
    /// rustls refused the protocol settings (should not happen with the
    /// built-in provider).
    #[error("tls: {0}")]
    Protocol(rustls::Error),
}

impl TlsSetupError {
    /// The configuration key this error concerns.
    pub fn key(&self) -> &'static str {
        match self {
            TlsSetupError::CaFile(_) => "ca_file",
            TlsSetupError::ClientCert(_) => "client_cert",
            TlsSetupError::ClientKey(_) | TlsSetupError::ClientAuth(_) => "client_key",
            TlsSetupError::Protocol(_) => "kind",
        }
    }

    /// The message without the key.
    pub fn message(&self) -> String {
        match self {
            TlsSetupError::CaFile(e)
            | TlsSetupError::ClientCert(e)
            | TlsSetupError::ClientKey(e) => e.to_string(),
            TlsSetupError::ClientAuth(e) => format!("not usable with client_cert: {e}"),
            TlsSetupError::Protocol(e) => e.to_string(),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration of a check: server certificates
/// verified against `tls.ca_file` (or, without one, accepted unverified),
/// the client certificate if configured, `alpn` offered, no resumption.
/// The PEM files come from `files`, as read with the configuration.
pub fn client_config(
    tls: &TlsParams,
    alpn: &[&[u8]],
    files: &FileContents,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Protocol)?;
    let builder = match &tls.ca_file {
        Some(path) => builder.with_root_certificates(roots(path, files)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(
                provider.signature_verification_algorithms,
            ))),
    };
    let mut config = match &tls.client_auth {
        Some(auth) => {
            let (certs, key) = client_auth(auth, files)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(TlsSetupError::ClientAuth)?
        }
        None => builder.with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The trust anchors of the CA bundle `path`.
fn roots(path: &Path, files: &FileContents) -> Result<rustls::RootCertStore, TlsSetupError> {
    let data = pem::contents(files, path).map_err(TlsSetupError::CaFile)?;
    pem::roots(path, data).map_err(TlsSetupError::CaFile)
}

/// The client certificate chain and key of `auth`.
fn client_auth(
    auth: &ClientAuth,
    files: &FileContents,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
    let cert = pem::contents(files, &auth.cert).map_err(TlsSetupError::ClientCert)?;
    let key = pem::contents(files, &auth.key).map_err(TlsSetupError::ClientKey)?;
    Ok((
        pem::certs(&auth.cert, cert).map_err(TlsSetupError::ClientCert)?,
        pem::key(&auth.key, key).map_err(TlsSetupError::ClientKey)?,
    ))
}

/// Checks that the CA bundle `path` holds usable trust anchors.
pub fn check_ca(path: &Path, files: &FileContents) -> Result<(), TlsSetupError> {
    roots(path, files).map(drop)
}

/// Checks that rustls can use a client certificate and key together
/// (supported key type, key of the certificate).
pub fn check_client_auth(auth: &ClientAuth, files: &FileContents) -> Result<(), TlsSetupError> {
    let (certs, key) = client_auth(auth, files)?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(TlsSetupError::ClientAuth)?;
    Ok(())
}

/// Accepts any server certificate: the verifier of checks without a
/// `ca_file`.
///
/// Why it exists: a gateway often has no copy of the cluster CA (anonymous
/// clusters, a CA rotated by the installer), yet "does the node complete a
/// TLS handshake / answer `/readyz`" is still a far better signal than a TCP
/// connect. The daemon logs once at start-up that such checks do not verify
/// certificates. The handshake signature is still checked, so the server
/// must at least hold the key of the certificate it presents.
#[derive(Debug)]
struct AcceptAnyServerCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Runs the TLS handshake over `io`.
pub async fn handshake<S>(
    connector: &TlsConnector,
    server_name: ServerName<'static>,
    io: S,
) -> Result<TlsStream<S>, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    connector
        .connect(server_name, io)
        .await
        .map_err(|e| tls_failure(&e))
}

/// Closes a TLS connection in order: sends `close_notify` and a FIN, then
/// reads until the server closes too. With TLS 1.3 the server checks the
/// client certificate only after the client's handshake is complete, so a
/// rejection (e.g. `CertificateRequired`) arrives as an alert here, not
/// during [`handshake`]. A server that closes without `close_notify` is fine;
/// an alert or another read error is a failure. Bounded by the caller's
/// timeout, like every part of a check.
pub async fn close<S>(mut stream: TlsStream<S>) -> Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // A server that already went away makes the shutdown fail; what it sent
    // before that (an alert?) is still readable below.
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && rustls_error(&e).is_none() => {
                return Ok(())
            }
            Err(e) => return Err(tls_failure(&e)),
        }
    }
}

/// The rustls error an I/O error from tokio-rustls carries, if any.
pub fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// `tls: <cause>` for an error during or right after the handshake: the
/// rustls error (certificate verification, alert received, …) when there is
/// one, else the I/O error.
pub fn tls_failure(e: &io::Error) -> Failure {
    match rustls_error(e) {
        Some(tls) => Failure::Tls(tls.to_string()),
        None => Failure::Tls(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::test_pki::TestCa;
    use std::path::PathBuf;

    /// [`super::client_config`] with the files `tls` names read as a
    /// configuration load reads them (unreadable ones left out).
    fn client_config(tls: &TlsParams, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsSetupError> {
        let mut files = FileContents::default();
        let auth = tls.client_auth.iter().flat_map(|a| [&a.cert, &a.key]);
        for p in tls.ca_file.iter().chain(auth) {
            if let Ok(data) = pem::read(p) {
                files.insert(p.clone(), data);
            }
        }
        super::client_config(tls, alpn, &files)
    }

    fn params(ca: Option<PathBuf>, auth: Option<(PathBuf, PathBuf)>) -> TlsParams {
        TlsParams {
            server_name: None,
            ca_file: ca,
            client_auth: auth.map(|(cert, key)| ClientAuth { cert, key }),
        }
    }

    #[test]
    fn builds_with_and_without_ca_and_client_cert() {
        let ca = TestCa::new("ca");
        let client = ca.client("client", "lb");
        let c = client_config(&params(None, None), ALPN_TLS).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(!c.client_auth_cert_resolver.has_certs());
        let c = client_config(
            &params(
                Some(ca.ca_file()),
                Some((client.cert_file.clone(), client.key_file.clone())),
            ),
            ALPN_HTTPS,
        )
        .unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(c.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn bad_files_name_their_key() {
        let ca = TestCa::new("ca");
        let a = ca.client("a", "a");
        let b = ca.client("b", "b");
        let missing = ca.dir().join("missing.pem");

        let e = client_config(&params(Some(missing.clone()), None), ALPN_TLS).unwrap_err();
        assert_eq!(e.key(), "ca_file");
        assert!(e.message().contains("missing.pem"), "{e}");
        // A key file is not a CA bundle.
        let e = client_config(&params(Some(a.key_file.clone()), None), ALPN_TLS).unwrap_err();
        assert_eq!(e.key(), "ca_file");
        assert!(e.to_string().starts_with("ca_file: "), "{e}");

        let e = client_config(
            &params(None, Some((a.key_file.clone(), a.key_file.clone()))),
            ALPN_TLS,
        )
        .unwrap_err();
        assert_eq!(e.key(), "client_cert", "{e}");
        let e = client_config(
            &params(None, Some((a.cert_file.clone(), a.cert_file.clone()))),
            ALPN_TLS,
        )
        .unwrap_err();
        assert_eq!(e.key(), "client_key", "{e}");
        // b's key does not belong to a's certificate.
        let e = client_config(
            &params(None, Some((a.cert_file.clone(), b.key_file.clone()))),
            ALPN_TLS,
        )
        .unwrap_err();
        assert!(matches!(e, TlsSetupError::ClientAuth(_)), "{e}");
        assert_eq!(e.key(), "client_key");
    }

    #[test]
    fn io_errors_carrying_rustls_errors_are_unwrapped() {
        let inner = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let e = io::Error::new(io::ErrorKind::InvalidData, inner.clone());
        assert_eq!(rustls_error(&e), Some(&inner));
        assert_eq!(tls_failure(&e), Failure::Tls(inner.to_string()));
        let e = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(rustls_error(&e), None);
        assert_eq!(tls_failure(&e), Failure::Tls(e.to_string()));
    }
}
