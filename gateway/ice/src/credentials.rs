//! ICE short-term credentials: username fragment and password (RFC 8445 §5.3, RFC 8839 §5.4).

use std::fmt;

use estuary_keys::KeySource;
use stun_rs::HMACKey;

/// Shortest `ice-ufrag` RFC 8839 §5.4 allows.
pub const UFRAG_MIN_LEN: usize = 4;
/// Shortest `ice-pwd` RFC 8839 §5.4 allows.
pub const PWD_MIN_LEN: usize = 22;
/// Longest `ice-ufrag` / `ice-pwd` RFC 8839 §5.4 allows.
pub const CREDENTIAL_MAX_LEN: usize = 256;

/// Length of a generated ufrag: 8 ice-chars are 48 random bits, above the 24 bits
/// RFC 8445 §5.3 asks for.
const GENERATED_UFRAG_LEN: usize = 8;
/// Length of a generated password: 24 ice-chars are 144 random bits, above the 128 bits
/// RFC 8445 §5.3 asks for.
const GENERATED_PWD_LEN: usize = 24;

/// The `ice-char` set of RFC 8839 §5.4 (`ALPHA / DIGIT / "+" / "/"`): exactly 64 symbols,
/// so six random bits pick one without bias.
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a ufrag or password was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The ufrag is shorter than 4 or longer than 256 characters (RFC 8839 §5.4).
    #[error("ice-ufrag must be 4..=256 ice-chars, got {0} bytes")]
    UfragLength(usize),
    /// The password is shorter than 22 or longer than 256 characters (RFC 8839 §5.4).
    #[error("ice-pwd must be 22..=256 ice-chars, got {0} bytes")]
    PwdLength(usize),
    /// A character outside `ALPHA / DIGIT / "+" / "/"` (RFC 8839 §5.4).
    #[error("ice-ufrag and ice-pwd may only contain ALPHA, DIGIT, '+' and '/'")]
    InvalidChar,
}

/// One side's ICE credentials: `a=ice-ufrag` and `a=ice-pwd`.
///
/// Both are checked against the RFC 8839 §5.4 grammar on construction, so every value of this
/// type can key a STUN short-term credential (RFC 8489 §9.1.1) without a fallible step later.
/// `Debug` does not print the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    ufrag: String,
    pwd: String,
    /// The short-term HMAC key derived from `pwd` (RFC 8489 §9.1.1: OpaqueString of the
    /// password; for ice-chars that is the password's bytes).
    key: HMACKey,
}

impl Credentials {
    /// Credentials from SDP (`a=ice-ufrag`, `a=ice-pwd`) or configuration.
    pub fn new(ufrag: impl Into<String>, pwd: impl Into<String>) -> Result<Self, CredentialsError> {
        let ufrag = ufrag.into();
        let pwd = pwd.into();
        if !(UFRAG_MIN_LEN..=CREDENTIAL_MAX_LEN).contains(&ufrag.len()) {
            return Err(CredentialsError::UfragLength(ufrag.len()));
        }
        if !(PWD_MIN_LEN..=CREDENTIAL_MAX_LEN).contains(&pwd.len()) {
            return Err(CredentialsError::PwdLength(pwd.len()));
        }
        if !ufrag
            .bytes()
            .chain(pwd.bytes())
            .all(|b| ICE_CHARS.contains(&b))
        {
            return Err(CredentialsError::InvalidChar);
        }
        // OpaqueString (RFC 8265) accepts every printable ASCII string, and ice-chars are
        // printable ASCII, so this does not fail for a value that passed the checks above;
        // map the error anyway rather than unwrap.
        let key = HMACKey::new_short_term(&pwd).map_err(|_| CredentialsError::InvalidChar)?;
        Ok(Credentials { ufrag, pwd, key })
    }

    /// Fresh local credentials: an 8-character ufrag (48 bits) and a 24-character password
    /// (144 bits), drawn from the OS generator (RFC 8445 §5.3 asks for at least 24 and 128
    /// random bits; the password keys every STUN check, so it is a secret and never seeded).
    pub fn generate(keys: &mut KeySource) -> Self {
        let ufrag = keys.token64(ICE_CHARS, GENERATED_UFRAG_LEN);
        let pwd = keys.token64(ICE_CHARS, GENERATED_PWD_LEN);
        // Invariant: both strings are ice-chars of allowed lengths by construction, and
        // OpaqueString accepts printable ASCII, so `new` cannot refuse them.
        Credentials::new(ufrag, pwd).expect("generated ICE credentials follow RFC 8839 §5.4")
    }

    /// The username fragment (`a=ice-ufrag`).
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// The password (`a=ice-pwd`).
    pub fn pwd(&self) -> &str {
        &self.pwd
    }

    /// The STUN short-term credential key for this password.
    pub(crate) fn key(&self) -> &HMACKey {
        &self.key
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("ufrag", &self.ufrag)
            .field("pwd", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_are_valid_and_differ() {
        let mut keys = KeySource::os();
        let a = Credentials::generate(&mut keys);
        let b = Credentials::generate(&mut keys);
        assert_eq!(a.ufrag().len(), 8);
        assert_eq!(a.pwd().len(), 24);
        assert!(Credentials::new(a.ufrag(), a.pwd()).is_ok());
        assert_ne!(a.ufrag(), b.ufrag());
        assert_ne!(a.pwd(), b.pwd());
    }

    #[test]
    fn grammar_is_enforced() {
        let pwd = "VOkJxbRl1RmTxUk/WvJxBt";
        assert!(Credentials::new("evtj", pwd).is_ok());
        assert_eq!(
            Credentials::new("evt", pwd),
            Err(CredentialsError::UfragLength(3))
        );
        assert_eq!(
            Credentials::new("evtj", "short"),
            Err(CredentialsError::PwdLength(5))
        );
        assert_eq!(
            Credentials::new("ev:j", pwd),
            Err(CredentialsError::InvalidChar)
        );
        assert_eq!(
            Credentials::new("evtj", "VOkJxbRl1RmTxUk WvJxBt"),
            Err(CredentialsError::InvalidChar)
        );
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = Credentials::new("evtj", "VOkJxbRl1RmTxUk/WvJxBt").unwrap();
        assert!(!format!("{c:?}").contains("VOkJ"));
    }
}
