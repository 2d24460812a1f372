//! DTLS-SRTP handshake, SRTP/SRTCP protection and SDES keys for Estuary, sans-IO.
//!
//! Media security on both legs of the gateway:
//!
//! - **WebRTC leg**: keys come from a DTLS handshake (RFC 5764) authenticated by the certificate
//!   fingerprints in the SDP (RFC 5763, RFC 8122). [`DtlsEndpoint`] runs the handshake over
//!   `rtc-dtls` and ends in [`DtlsEvent::Connected`] with the exported [`SrtpKeyMaterial`], or
//!   [`DtlsEvent::Failed`] — a fingerprint mismatch ends there, never in `Connected`.
//! - **IMS leg**: keys travel in SDP `a=crypto` lines (SDES, RFC 4568): [`CryptoAttribute`].
//! - **Both**: [`SrtpContext`] protects and unprotects RTP and RTCP in place with replay
//!   protection (RFC 3711, RFC 7714) for AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32 and
//!   AEAD_AES_128_GCM, with no allocation per packet.
//!
//! # Driving the DTLS endpoint
//!
//! ```no_run
//! use std::time::Instant;
//! use estuary_srtp::{Certificate, DtlsEndpoint, DtlsEvent, DtlsRole, Output, SrtpContext, SrtpProfile};
//!
//! let cert = Certificate::generate()?; // once per process; put cert.fingerprint() in the SDP
//! let now = Instant::now(); // in the engine, `now` always comes from the driver
//! let remote = vec!["sha-256 AB:...".parse()?];
//! let profiles = [SrtpProfile::Aes128CmSha1_80, SrtpProfile::AeadAes128Gcm];
//! let mut dtls = DtlsEndpoint::new(DtlsRole::Server, &cert, remote, &profiles, now)?;
//! // On every datagram whose first byte is 20..=63 (RFC 7983): dtls.handle_input(now, &d).
//! // At dtls.poll_timeout(): dtls.handle_timeout(now). After either, drain:
//! while let Some(out) = dtls.poll_output() {
//!     match out {
//!         Output::Transmit(datagram) => { /* send to the ICE-selected peer */ }
//!         Output::Event(DtlsEvent::Connected { keys, .. }) => {
//!             let tx = SrtpContext::new(keys.local(dtls.role()));
//!             let rx = SrtpContext::new(keys.remote(dtls.role()));
//!         }
//!         Output::Event(DtlsEvent::Failed(why)) => { /* tear the call down */ }
//!         Output::Event(DtlsEvent::Closed) => {}
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Time, randomness, I/O
//!
//! Nothing here reads a clock (`now` is passed in), opens a socket or spawns. Randomness: SDES
//! keys come from a caller-supplied `estuary_keys::KeySource` (the OS generator, never a seed); the DTLS certificate key and the
//! handshake randoms come from `ring`'s OS-backed `SystemRandom` inside `rtc-dtls` (the
//! handshake random's first four bytes are wall-clock seconds, per RFC 5246 §7.4.1.2, read by
//! `rtc-dtls` itself).
//!
//! # What this crate does not do
//!
//! - MKI (neither did `rtc-srtp`): lines with MKI are parsed and refused with [`SdesError::Mki`].
//! - Key derivation rates other than 0, re-keying, DTLS renegotiation, DTLS 1.3.
//! - SRTP with encrypted header extensions (RFC 6904) or cryptex (RFC 9335).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cert;
mod dtls;
mod fingerprint;
mod key;
mod profile;
mod sdes;
mod srtp;

pub use cert::{Certificate, CertificateError};
pub use dtls::{
    DtlsConfig, DtlsEndpoint, DtlsEvent, DtlsFailure, DtlsInputError, DtlsSetupError, Output,
};
pub use fingerprint::{Fingerprint, FingerprintError, HashFunction};
pub use key::{DtlsRole, KeyLengthError, SrtpKeyMaterial, SrtpMasterKey};
pub use profile::SrtpProfile;
pub use sdes::{CryptoAttribute, CryptoSuite, KeyParam, Lifetime, Mki, SdesError};
pub use srtp::{SrtpContext, SrtpError, REPLAY_WINDOW};

/// Standard vectors stored as `name = hex` text files under `tests/vectors/`.
#[cfg(test)]
mod test_vectors {
    use std::collections::HashMap;

    pub(crate) struct Vectors(HashMap<String, Vec<u8>>);

    impl Vectors {
        /// `name = hex` lines; an indented line continues the previous value; `#` comments.
        pub(crate) fn parse(text: &str) -> Self {
            let mut map: HashMap<String, String> = HashMap::new();
            let mut last = None;
            for line in text.lines() {
                let line = line.split('#').next().unwrap_or_default();
                if line.trim().is_empty() {
                    continue;
                }
                if line.starts_with(' ') {
                    let name: &String = last.as_ref().expect("continuation line after a value");
                    map.get_mut(name).expect("known name").push_str(line);
                } else {
                    let (k, v) = line.split_once('=').expect("name = hex");
                    last = Some(k.trim().to_owned());
                    map.insert(k.trim().to_owned(), v.to_owned());
                }
            }
            Vectors(map.into_iter().map(|(k, v)| (k, hex(&v))).collect())
        }

        pub(crate) fn bytes(&self, name: &str) -> Vec<u8> {
            self.0
                .get(name)
                .unwrap_or_else(|| panic!("no vector {name}"))
                .clone()
        }
    }

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }
}
