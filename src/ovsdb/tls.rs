//! `ssl:` remotes: TLS as Open vSwitch does it. Mutual: the relay presents its own
//! certificate (`--private-key`, `--certificate`) and verifies the server's chain against
//! `--ca-cert`, but not the server's host name — certificates made by `ovs-pki` carry none
//! (their subject names a switch id), and OVS itself checks the chain only. TLS 1.2 and
//! 1.3 (all rustls speaks), no OpenSSL.
//!
//! The three files are read again for every connection, as OVS re-reads them when they
//! change: a rotated certificate is used from the next reconnect on, without a restart.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// The files `--private-key`, `--certificate` and `--ca-cert` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub private_key: PathBuf,
    pub certificate: PathBuf,
    pub ca_cert: PathBuf,
}

/// A TLS setting that cannot be used, naming the file and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct TlsFileError {
    pub path: PathBuf,
    pub reason: String,
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsFileError {
    TlsFileError {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, pem_reason(e)))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            format!("no PEM certificate ({what}) in it"),
        ));
    }
    Ok(certs)
}

fn pem_reason(error: rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        other => format!("not a valid PEM file ({other:?})"),
    }
}

impl TlsFiles {
    /// Reads and checks the three files: the client configuration for one connection.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsFileError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in certificates(&self.ca_cert, "the CA certificate")? {
            roots
                .add(ca)
                .map_err(|e| file_error(&self.ca_cert, format!("unusable CA certificate: {e}")))?;
        }
        let chain = certificates(&self.certificate, "the relay's certificate")?;
        let key = PrivateKeyDer::from_pem_file(&self.private_key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => file_error(
                &self.private_key,
                "no RSA, EC or PKCS#8 private key in it (DSA keys are not supported)",
            ),
            other => file_error(&self.private_key, pem_reason(other)),
        })?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| file_error(&self.ca_cert, e))?;
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| file_error(&self.certificate, e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                file_error(
                    &self.private_key,
                    format!("does not go with {}: {e}", self.certificate.display()),
                )
            })
            .map(Arc::new)
    }
}

/// Verifies the peer's chain against the CA, and not its name (see the module comment).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked last, once the chain, validity and usage have passed.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The TLS handshake over `stream` to `host` (SNI only when it is a name, not an address).
pub async fn connect<S>(
    stream: S,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?}: {e}"))
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("TLS handshake failed: {}", describe(&e)))
        })
}

/// An I/O error's text; a TLS failure in it explained (with TLS 1.3 the server's verdict on
/// the relay's certificate only arrives with the first read after the handshake).
pub fn describe(error: &std::io::Error) -> String {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => explain(tls),
        None => error.to_string(),
    }
}

/// A TLS failure in the words an operator needs, with rustls's own after them.
fn explain(error: &rustls::Error) -> String {
    use rustls::AlertDescription as Alert;
    let hint = match error {
        rustls::Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "the server's certificate is not signed by the CA in --ca-cert"
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet (is the clock right?)"
            }
            CertificateError::Other(other)
                if other.to_string().contains("UnsupportedCertVersion") =>
            {
                "the server's certificate is not X.509 v3 (v1 certificates are not supported)"
            }
            _ => "the server's certificate was refused",
        },
        rustls::Error::AlertReceived(
            Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateUnknown
            | Alert::CertificateExpired
            | Alert::AccessDenied,
        ) => "the server refused the relay's certificate (is it signed by a CA the server trusts?)",
        rustls::Error::AlertReceived(Alert::ProtocolVersion | Alert::HandshakeFailure) => {
            "no TLS version or cipher suite in common (the relay speaks TLS 1.2 and 1.3)"
        }
        _ => return error.to_string(),
    };
    format!("{hint} ({error})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_explained_for_operators() {
        let cases = [
            (
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
                "not signed by the CA in --ca-cert",
            ),
            (
                rustls::Error::InvalidCertificate(CertificateError::Expired),
                "has expired",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
                "refused the relay's certificate",
            ),
            (
                rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion),
                "TLS 1.2 and 1.3",
            ),
        ];
        for (error, expected) in cases {
            let io = std::io::Error::new(std::io::ErrorKind::InvalidData, error.clone());
            let text = describe(&io);
            assert!(text.contains(expected), "{error:?}: {text}");
            assert!(text.contains(&error.to_string()), "{text}");
        }
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(describe(&plain), "refused");
    }
}
