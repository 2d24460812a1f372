//! The gateway's DTLS certificate: ECDSA P-256, self-signed, identified by its fingerprint.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rtc_dtls::crypto::CryptoPrivateKey;
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::crypto_provider::RTCCryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::fingerprint::{Fingerprint, HashFunction};

/// An ECDSA P-256 certificate and its private key, as the DTLS side presents it.
///
/// WebRTC certificates are self-signed: what authenticates us is the fingerprint we put in the
/// SDP (RFC 8827 §6.5, RFC 5763 §5), not a CA. One certificate normally serves every call of
/// the process; clone it cheaply (the key is shared).
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    key_pkcs8: Arc<Zeroizing<Vec<u8>>>,
    dtls: rtc_dtls::crypto::Certificate,
    provider: Arc<dyn RTCCryptoProvider>,
}

/// Why a certificate could not be made or loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// Key generation or self-signing failed (the OS random source, most likely).
    #[error("cannot generate certificate: {0}")]
    Generate(String),
    /// The PEM text holds no usable `CERTIFICATE` or PKCS#8 `PRIVATE KEY` block, or the
    /// certificate's DER does not parse.
    #[error("bad PEM or DER: {0}")]
    Pem(String),
    /// The key is not an ECDSA P-256 key.
    #[error("the private key is not ECDSA P-256")]
    NotEcdsaP256,
    /// The certificate does not carry the public half of the key.
    #[error("the certificate does not match the private key")]
    KeyMismatch,
}

impl Certificate {
    /// A fresh key pair and self-signed certificate. The key comes from the operating system's
    /// CSPRNG (through `ring`'s `SystemRandom`); the validity period is rcgen's fixed
    /// 1975..4096, so no clock is read. Browsers ignore validity for DTLS-SRTP.
    pub fn generate() -> Result<Self, CertificateError> {
        let gen = |e: rcgen::Error| CertificateError::Generate(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "estuary");
        let cert = params.self_signed(&key).map_err(gen)?;
        Self::assemble(cert.der().to_vec(), &key)
    }

    /// Load a certificate and its key from PEM text: a `CERTIFICATE` block and a PKCS#8
    /// `PRIVATE KEY` block (as `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`
    /// and [`Certificate::to_pem`] write them). Reading the files is the caller's job.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertificateError> {
        let pem = |e: rustls_pki_types::pem::Error| CertificateError::Pem(e.to_string());
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(pem)?;
        let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(pem)? {
            PrivateKeyDer::Pkcs8(k) => k,
            _ => {
                return Err(CertificateError::Pem(
                    "the key must be PKCS#8 (BEGIN PRIVATE KEY), not SEC1 or PKCS#1".into(),
                ))
            }
        };
        Self::from_der(cert.as_ref(), key.secret_pkcs8_der())
    }

    /// A certificate from its DER encoding and a PKCS#8 DER private key, as `rcgen` or
    /// `rustls-pki-types` hold them. The key must be ECDSA P-256 and match the certificate.
    pub fn from_der(cert_der: &[u8], pkcs8_key_der: &[u8]) -> Result<Self, CertificateError> {
        let key_pair =
            rcgen::KeyPair::try_from(pkcs8_key_der).map_err(|_| CertificateError::NotEcdsaP256)?;
        if !key_pair.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err(CertificateError::NotEcdsaP256);
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| CertificateError::Pem(format!("certificate: {e}")))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key_pair.public_key_raw() {
            return Err(CertificateError::KeyMismatch);
        }
        Self::assemble(cert_der.to_vec(), &key_pair)
    }

    fn assemble(der: Vec<u8>, key: &rcgen::KeyPair) -> Result<Self, CertificateError> {
        // The provider is passed explicitly everywhere (DEPENDENCIES.md): ring, the one
        // provider of the workspace.
        let provider: Arc<dyn RTCCryptoProvider> = Arc::new(RingProvider::new());
        let private_key = CryptoPrivateKey::from_key_pair(key, provider.crypto())
            .map_err(|e| CertificateError::Generate(e.to_string()))?;
        let dtls = rtc_dtls::crypto::Certificate {
            certificate: vec![CertificateDer::from(der.clone())],
            private_key,
        };
        Ok(Certificate {
            der,
            key_pkcs8: Arc::new(Zeroizing::new(key.serialize_der())),
            dtls,
            provider,
        })
    }

    /// The certificate and key as PEM text `(certificate, PKCS#8 key)`, for storing a
    /// generated certificate so the fingerprint survives restarts.
    pub fn to_pem(&self) -> (String, Zeroizing<String>) {
        (
            pem_block("CERTIFICATE", &self.der),
            Zeroizing::new(pem_block("PRIVATE KEY", &self.key_pkcs8)),
        )
    }

    /// The DER encoding, which the fingerprint hashes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The SHA-256 fingerprint for `a=fingerprint` (RFC 8122 §5); `to_string()` gives
    /// `sha-256 AB:CD:...`.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_certificate(HashFunction::Sha256, &self.der)
    }

    pub(crate) fn dtls(&self) -> &rtc_dtls::crypto::Certificate {
        &self.dtls
    }

    pub(crate) fn provider(&self) -> Arc<dyn RTCCryptoProvider> {
        self.provider.clone()
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// RFC 7468 PEM: base64 in 64-column lines between BEGIN and END lines.
fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so any chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_round_trips_through_pem() {
        let c = Certificate::generate().unwrap();
        let fp = c.fingerprint();
        assert_eq!(fp.hash_function(), HashFunction::Sha256);
        let s = fp.to_string();
        assert!(s.starts_with("sha-256 "));
        assert_eq!(s.len(), "sha-256 ".len() + 32 * 3 - 1);
        assert!(s[8..]
            .chars()
            .all(|ch| ch == ':' || ch.is_ascii_digit() || ch.is_ascii_uppercase()));

        let (cert_pem, key_pem) = c.to_pem();
        assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let loaded = Certificate::from_pem(&cert_pem, &key_pem).unwrap();
        assert_eq!(loaded.der(), c.der());
        assert_eq!(loaded.fingerprint(), fp);

        let (cert_der, key_der) = (c.der().to_vec(), c.key_pkcs8.to_vec());
        assert_eq!(
            Certificate::from_der(&cert_der, &key_der)
                .unwrap()
                .fingerprint(),
            fp
        );

        // Two generations never share a key.
        assert_ne!(Certificate::generate().unwrap().fingerprint(), fp);
    }

    #[test]
    fn refuses_a_key_that_is_not_the_certificates() {
        let a = Certificate::generate().unwrap();
        let b = Certificate::generate().unwrap();
        let (cert_a, _) = a.to_pem();
        let (_, key_b) = b.to_pem();
        assert_eq!(
            Certificate::from_pem(&cert_a, &key_b).unwrap_err(),
            CertificateError::KeyMismatch
        );
        assert!(matches!(
            Certificate::from_pem("junk", &key_b),
            Err(CertificateError::Pem(_))
        ));
        assert!(matches!(
            Certificate::from_pem(&cert_a, "junk"),
            Err(CertificateError::Pem(_))
        ));
    }
}
