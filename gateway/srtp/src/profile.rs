//! The SRTP protection profiles (crypto suites) this crate keys and runs.

use std::fmt;

/// An SRTP protection profile: cipher, authentication and key sizes together.
///
/// The same three profiles are named twice on the wire: in DTLS `use_srtp` by a 16-bit id
/// (RFC 5764 §4.1.2, RFC 7714 §14.2) and in SDES `a=crypto` by a suite name (RFC 4568 §6.2,
/// RFC 7714 §14.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 3711 §5, RFC 4568 §6.2.1).
    /// What Chromium picks when it is the DTLS client.
    Aes128CmSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit SRTP tag (RFC 4568 §6.2.2). SRTCP still
    /// carries an 80-bit tag (RFC 5764 §4.1.2). Common toward IMS over SDES.
    Aes128CmSha1_32,
    /// AES-128 in Galois/Counter mode with a 128-bit tag (RFC 7714). What Firefox picks when it
    /// is the DTLS client.
    AeadAes128Gcm,
}

impl SrtpProfile {
    /// Every profile, in our order of preference for DTLS-SRTP offers.
    pub const ALL: [SrtpProfile; 3] = [
        SrtpProfile::Aes128CmSha1_80,
        SrtpProfile::AeadAes128Gcm,
        SrtpProfile::Aes128CmSha1_32,
    ];

    /// The SDES suite name (RFC 4568 §6.2, RFC 7714 §14.1).
    pub fn sdes_name(self) -> &'static str {
        match self {
            SrtpProfile::Aes128CmSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpProfile::Aes128CmSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The profile an SDES suite name denotes, if we support it. Suite names are matched
    /// exactly, as the RFC 4568 §9.2 grammar spells them.
    pub fn from_sdes_name(name: &str) -> Option<SrtpProfile> {
        SrtpProfile::ALL.into_iter().find(|p| p.sdes_name() == name)
    }

    /// The DTLS `use_srtp` protection profile id (RFC 5764 §4.1.2, RFC 7714 §14.2).
    pub fn dtls_id(self) -> u16 {
        match self {
            SrtpProfile::Aes128CmSha1_80 => 0x0001,
            SrtpProfile::Aes128CmSha1_32 => 0x0002,
            SrtpProfile::AeadAes128Gcm => 0x0007,
        }
    }

    /// The profile a `use_srtp` id denotes, if we support it.
    pub fn from_dtls_id(id: u16) -> Option<SrtpProfile> {
        SrtpProfile::ALL.into_iter().find(|p| p.dtls_id() == id)
    }

    /// Master key length in bytes.
    pub fn master_key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes: 112 bits for AES-CM (RFC 3711 §8.2), 96 bits for AEAD
    /// (RFC 7714 §12).
    pub fn master_salt_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 | SrtpProfile::Aes128CmSha1_32 => 14,
            SrtpProfile::AeadAes128Gcm => 12,
        }
    }

    /// Bytes an SRTP packet grows by when protected: the authentication tag (RFC 3711 §3.1),
    /// or the AEAD tag (RFC 7714 §8.2).
    pub fn rtp_overhead(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 => 10,
            SrtpProfile::Aes128CmSha1_32 => 4,
            SrtpProfile::AeadAes128Gcm => 16,
        }
    }

    /// Bytes an SRTCP packet grows by when protected: the 4-byte E flag and index plus the tag.
    /// The _32 profile still uses an 80-bit tag on SRTCP (RFC 5764 §4.1.2, RFC 4568 §6.2.2).
    pub fn rtcp_overhead(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 | SrtpProfile::Aes128CmSha1_32 => 4 + 10,
            SrtpProfile::AeadAes128Gcm => 4 + 16,
        }
    }

    pub(crate) fn is_aead(self) -> bool {
        matches!(self, SrtpProfile::AeadAes128Gcm)
    }
}

impl fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sdes_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_round_trip() {
        for p in SrtpProfile::ALL {
            assert_eq!(SrtpProfile::from_sdes_name(p.sdes_name()), Some(p));
            assert_eq!(SrtpProfile::from_dtls_id(p.dtls_id()), Some(p));
        }
        assert_eq!(SrtpProfile::from_sdes_name("F8_128_HMAC_SHA1_80"), None);
        assert_eq!(SrtpProfile::from_dtls_id(0x0008), None);
    }
}
