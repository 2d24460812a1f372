//! The WSS certificate: the operator's PEM files, or a self-signed ECDSA P-256 certificate
//! generated at start for labs. rustls runs on the `ring` provider only, passed explicitly
//! (no process-wide default), so a second provider can never sneak in (DEPENDENCIES.md).

use std::net::SocketAddr;
use std::sync::Arc;

use std::path::Path;

use estuary_config::{ImsConfig, TlsCertificate, WebConfig};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::error::DaemonError;

pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// SHA-256 of the leaf certificate, `AB:CD:...`, as browsers and SDP show it.
    pub fingerprint: String,
    pub self_signed: bool,
}

/// The operator's PEM chain and key (`SECTION.tls_cert`, `SECTION.tls_key`).
fn pem_identity(
    (cert_key, key_key): (&'static str, &'static str),
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), DaemonError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| DaemonError::setup(cert_key, format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(DaemonError::setup(cert_key, format!("{}: no certificate found", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| DaemonError::setup(key_key, format!("{}: {e}", key.display())))?;
    Ok((chain, key))
}

pub fn load(web: &WebConfig, wss_bound: SocketAddr) -> Result<Tls, DaemonError> {
    let (chain, key, self_signed) = match &web.tls {
        TlsCertificate::Pem { cert, key } => {
            let (chain, key) = pem_identity(("web.tls_cert", "web.tls_key"), cert, key)?;
            (chain, key, false)
        }
        TlsCertificate::SelfSigned => {
            let (cert, key) = self_signed_for(web.advertised_host.as_deref(), wss_bound, "web.tls_cert")?;
            (vec![cert], key, true)
        }
    };
    let fingerprint = sha256_fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DaemonError::setup("web.tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            DaemonError::setup("web.tls_key", format!("does not fit web.tls_cert: {e}"))
        })?;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        fingerprint,
        self_signed,
    })
}

/// rcgen's default key is ECDSA P-256 with SHA-256: small, fast, and accepted by every browser.
fn self_signed_for(
    advertised_host: Option<&str>,
    bound: SocketAddr,
    key_name: &'static str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), DaemonError> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if let Some(host) = advertised_host {
        names.push(host.to_owned());
    }
    let ip = bound.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    names.dedup();
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| {
        DaemonError::setup(key_name, format!("cannot generate a self-signed certificate: {e}"))
    })?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    Ok((generated.cert.der().clone(), key))
}

/// SIP over TLS with the core: the listener's acceptor (`ims.tls_listen`) and, when trust
/// anchors are configured (`ims.tls_ca`), the connector that checks the core's certificate
/// and presents the operator's certificate as the client's.
pub struct ImsTls {
    pub acceptor: TlsAcceptor,
    pub connector: Option<tokio_rustls::TlsConnector>,
    pub fingerprint: String,
    pub self_signed: bool,
}

pub fn load_ims(ims: &ImsConfig, listener: SocketAddr) -> Result<ImsTls, DaemonError> {
    let (chain, key, self_signed) = match &ims.tls.certificate {
        TlsCertificate::Pem { cert, key } => {
            let (chain, key) = pem_identity(("ims.tls_cert", "ims.tls_key"), cert, key)?;
            (chain, key, false)
        }
        TlsCertificate::SelfSigned => {
            let advertised = ims.advertised_address.map(|a| a.ip().to_string());
            let (cert, key) = self_signed_for(advertised.as_deref(), listener, "ims.tls_cert")?;
            (vec![cert], key, true)
        }
    };
    let fingerprint = sha256_fingerprint(&chain[0]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DaemonError::setup("ims.tls_cert", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| DaemonError::setup("ims.tls_key", format!("does not fit ims.tls_cert: {e}")))?;
    let connector = match &ims.tls.ca {
        None => None,
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| DaemonError::setup("ims.tls_ca", format!("{}: {e}", ca.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(DaemonError::setup("ims.tls_ca", format!("{}: no usable certificate", ca.display())));
            }
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| DaemonError::setup("ims.tls_ca", e.to_string()))?
                .with_root_certificates(roots);
            // Mutual TLS with the operator's certificate; a generated one would only be
            // refused by a core that asks for client certificates.
            let client = if self_signed {
                builder.with_no_client_auth()
            } else {
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| DaemonError::setup("ims.tls_key", format!("does not fit ims.tls_cert: {e}")))?
            };
            Some(tokio_rustls::TlsConnector::from(Arc::new(client)))
        }
    };
    Ok(ImsTls { acceptor: TlsAcceptor::from(Arc::new(server)), connector, fingerprint, self_signed })
}

/// The gateway's DTLS identity toward browsers (RFC 5763 §5): an ECDSA P-256 self-signed
/// certificate made at start. The media plane terminates DTLS with it and every
/// browser-facing SDP carries its SHA-256 fingerprint, so the two cannot drift apart.
pub struct DtlsIdentity {
    pub cert: estuary_srtp::Certificate,
    /// `sha-256 AB:CD:...` (RFC 8122 §5), in the SDP engine's type.
    pub fingerprint: estuary_sdp::Fingerprint,
}

pub fn dtls_identity() -> Result<DtlsIdentity, DaemonError> {
    let cert = estuary_srtp::Certificate::generate()
        .map_err(|e| DaemonError::setup("media", format!("cannot generate the DTLS certificate: {e}")))?;
    let fingerprint = estuary_sdp::Fingerprint::parse(&cert.fingerprint().to_string())
        .map_err(|e| DaemonError::setup("media", format!("DTLS fingerprint: {e}")))?;
    Ok(DtlsIdentity { cert, fingerprint })
}

pub fn sha256_fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
