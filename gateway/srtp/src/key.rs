//! SRTP master keys, and the DTLS-SRTP keying material that holds one for each direction.

use std::fmt;

use estuary_keys::KeySource;
use zeroize::Zeroize;

use crate::profile::SrtpProfile;

/// Longest master salt of any profile we run (RFC 3711 §8.2: 112 bits).
const MAX_SALT_LEN: usize = 14;

/// One SRTP master key and master salt (RFC 3711 §3.2.1), bound to the profile they are for.
///
/// The bytes are wiped when the value is dropped, and `Debug` never prints them.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpMasterKey {
    profile: SrtpProfile,
    key: [u8; 16],
    salt: [u8; MAX_SALT_LEN],
}

/// A master key or salt had the wrong length for its profile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{profile}: master key/salt must be {key_len}/{salt_len} bytes, got {got_key}/{got_salt}")]
pub struct KeyLengthError {
    /// The profile the key was meant for.
    pub profile: SrtpProfile,
    /// Required key length.
    pub key_len: usize,
    /// Required salt length.
    pub salt_len: usize,
    /// Key length given.
    pub got_key: usize,
    /// Salt length given.
    pub got_salt: usize,
}

impl SrtpMasterKey {
    /// A master key from its parts; each must have the length the profile requires.
    pub fn new(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<Self, KeyLengthError> {
        if key.len() != profile.master_key_len() || salt.len() != profile.master_salt_len() {
            return Err(KeyLengthError {
                profile,
                key_len: profile.master_key_len(),
                salt_len: profile.master_salt_len(),
                got_key: key.len(),
                got_salt: salt.len(),
            });
        }
        let mut k = SrtpMasterKey {
            profile,
            key: [0; 16],
            salt: [0; MAX_SALT_LEN],
        };
        k.key.copy_from_slice(key);
        k.salt[..salt.len()].copy_from_slice(salt);
        Ok(k)
    }

    /// A master key from `key || salt` concatenated, as SDES carries it (RFC 4568 §6.1).
    pub fn from_concatenated(
        profile: SrtpProfile,
        key_salt: &[u8],
    ) -> Result<Self, KeyLengthError> {
        let kl = profile.master_key_len();
        if key_salt.len() != kl + profile.master_salt_len() {
            return Err(KeyLengthError {
                profile,
                key_len: kl,
                salt_len: profile.master_salt_len(),
                got_key: key_salt.len().min(kl),
                got_salt: key_salt.len().saturating_sub(kl),
            });
        }
        Self::new(profile, &key_salt[..kl], &key_salt[kl..])
    }

    /// A fresh random master key and salt from the OS generator (RFC 4568 §6.1 and RFC 3711
    /// §9.2 require unpredictable keys; a [`KeySource`] cannot be seeded).
    pub fn generate(profile: SrtpProfile, rng: &mut KeySource) -> Self {
        let mut k = SrtpMasterKey {
            profile,
            key: [0; 16],
            salt: [0; MAX_SALT_LEN],
        };
        rng.fill(&mut k.key);
        rng.fill(&mut k.salt[..profile.master_salt_len()]);
        k
    }

    /// The profile this key is for.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// The master key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The master salt bytes.
    pub fn salt(&self) -> &[u8] {
        &self.salt[..self.profile.master_salt_len()]
    }

    /// `key || salt`, as SDES carries it.
    pub fn concatenated(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(30);
        v.extend_from_slice(self.key());
        v.extend_from_slice(self.salt());
        v
    }

    /// The salt zero-padded to 112 bits, the form the AES-CM key derivation takes
    /// (RFC 3711 §4.3.1; for the 96-bit AEAD salt see RFC 7714 §11, as libsrtp pads it).
    pub(crate) fn salt_padded(&self) -> &[u8; MAX_SALT_LEN] {
        &self.salt
    }
}

impl Drop for SrtpMasterKey {
    fn drop(&mut self) {
        self.key.zeroize();
        self.salt.zeroize();
    }
}

impl fmt::Debug for SrtpMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpMasterKey")
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

/// Which side of the DTLS handshake we were. The DTLS client's keys protect what the DTLS
/// client sends (RFC 5764 §4.2), whatever the SDP offer/answer roles were.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DtlsRole {
    /// We sent the ClientHello (`a=setup:active`).
    Client,
    /// We answered it (`a=setup:passive`).
    Server,
}

/// The SRTP master keys a DTLS-SRTP handshake exports, already split per RFC 5764 §4.2:
/// `client_write_SRTP_master_key`, `server_write_SRTP_master_key`, then the two salts.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeyMaterial {
    /// Protects what the DTLS client sends.
    pub client: SrtpMasterKey,
    /// Protects what the DTLS server sends.
    pub server: SrtpMasterKey,
}

impl SrtpKeyMaterial {
    /// The label RFC 5764 §4.2 gives to the TLS exporter (RFC 5705).
    pub const EXPORTER_LABEL: &'static str = "EXTRACTOR-dtls_srtp";

    /// Length of the exporter output for `profile`: two keys and two salts.
    pub fn exporter_len(profile: SrtpProfile) -> usize {
        2 * (profile.master_key_len() + profile.master_salt_len())
    }

    /// Split the exporter output `client_key | server_key | client_salt | server_salt`
    /// (RFC 5764 §4.2). Fails if the length is not [`Self::exporter_len`].
    pub fn from_exporter(profile: SrtpProfile, material: &[u8]) -> Result<Self, KeyLengthError> {
        let kl = profile.master_key_len();
        let sl = profile.master_salt_len();
        if material.len() != Self::exporter_len(profile) {
            return Err(KeyLengthError {
                profile,
                key_len: 2 * kl,
                salt_len: 2 * sl,
                got_key: material.len().min(2 * kl),
                got_salt: material.len().saturating_sub(2 * kl),
            });
        }
        let (keys, salts) = material.split_at(2 * kl);
        Ok(SrtpKeyMaterial {
            client: SrtpMasterKey::new(profile, &keys[..kl], &salts[..sl])?,
            server: SrtpMasterKey::new(profile, &keys[kl..], &salts[sl..])?,
        })
    }

    /// The key we protect outgoing packets with, given our DTLS role.
    pub fn local(&self, role: DtlsRole) -> &SrtpMasterKey {
        match role {
            DtlsRole::Client => &self.client,
            DtlsRole::Server => &self.server,
        }
    }

    /// The key we unprotect incoming packets with, given our DTLS role.
    pub fn remote(&self, role: DtlsRole) -> &SrtpMasterKey {
        match role {
            DtlsRole::Client => &self.server,
            DtlsRole::Server => &self.client,
        }
    }
}

impl fmt::Debug for SrtpKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeyMaterial")
            .field("profile", &self.client.profile)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_split_follows_rfc5764() {
        let p = SrtpProfile::Aes128CmSha1_80;
        let material: Vec<u8> = (0..60).collect();
        let k = SrtpKeyMaterial::from_exporter(p, &material).unwrap();
        assert_eq!(k.client.key(), &material[0..16]);
        assert_eq!(k.server.key(), &material[16..32]);
        assert_eq!(k.client.salt(), &material[32..46]);
        assert_eq!(k.server.salt(), &material[46..60]);
        assert_eq!(k.local(DtlsRole::Client), &k.client);
        assert_eq!(k.remote(DtlsRole::Client), &k.server);
        assert_eq!(k.local(DtlsRole::Server), &k.server);

        let g = SrtpProfile::AeadAes128Gcm;
        let material: Vec<u8> = (0..56).collect();
        let k = SrtpKeyMaterial::from_exporter(g, &material).unwrap();
        assert_eq!(k.server.salt(), &material[44..56]);
        assert!(SrtpKeyMaterial::from_exporter(g, &material[..55]).is_err());
    }

    #[test]
    fn debug_hides_key_bytes() {
        let k = SrtpMasterKey::new(SrtpProfile::Aes128CmSha1_80, &[0xAB; 16], &[0xCD; 14]).unwrap();
        let s = format!("{k:?}");
        // Neither the decimal nor the hex rendering of the key or salt bytes appears.
        assert!(
            !s.contains("171") && !s.contains("205") && !s.contains("AB"),
            "{s}"
        );
    }
}
