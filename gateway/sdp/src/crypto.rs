//! SDES: the `a=crypto` attribute of RFC 4568 §9.1 and the SRTP suites the gateway keys.
//!
//! ```text
//! a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]
//! key-params = "inline:" <base64(master key || master salt)> ["|" lifetime] ["|" MKI ":" length]
//! ```
//!
//! The SRTP layer has no MKI support (DEPENDENCIES.md), so a key with an MKI is parsed, kept
//! visible to the caller, and an offer carrying only such keys is refused with a reason.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use estuary_keys::KeySource;

use crate::error::SdpError;

/// SRTP crypto suites the gateway speaks toward IMS.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// RFC 4568 §6.2.1.
    AesCm128HmacSha1_80,
    /// RFC 4568 §6.2.2.
    AesCm128HmacSha1_32,
    /// RFC 7714 §14.2.
    AeadAes128Gcm,
}

impl Suite {
    pub const ALL: [Suite; 3] =
        [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32, Suite::AeadAes128Gcm];

    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    pub fn from_name(s: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|x| x.name().eq_ignore_ascii_case(s))
    }

    /// Master key and master salt lengths in bytes.
    pub fn key_salt_len(self) -> (usize, usize) {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => (16, 14),
            Suite::AeadAes128Gcm => (16, 12),
        }
    }
}

/// One `inline:` key parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyParam {
    /// Master key followed by master salt.
    pub key_salt: Vec<u8>,
    /// The lifetime as written (`2^31` or a decimal count), if any.
    pub lifetime: Option<String>,
    /// `(value, length in bytes)` of the MKI, if any.
    pub mki: Option<(u64, u8)>,
}

/// A parsed `a=crypto` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    /// The suite as written; [`Crypto::suite`] says whether we support it.
    pub suite_name: String,
    pub keys: Vec<KeyParam>,
    /// Session parameters (e.g. `UNENCRYPTED_SRTCP`, `KDR=...`), as written.
    pub session_params: Vec<String>,
}

impl Crypto {
    pub fn parse(v: &str) -> Result<Crypto, SdpError> {
        let bad = |why: &str| SdpError::malformed(format!("bad a=crypto \"{v}\": {why}"));
        let mut fields = v.split_ascii_whitespace();
        let tag = fields
            .next()
            .filter(|t| (1..=9).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("tag must be 1-9 digits"))?;
        let suite_name = fields.next().ok_or_else(|| bad("no crypto-suite"))?.to_owned();
        let key_field = fields.next().ok_or_else(|| bad("no key-params"))?;
        let mut keys = Vec::new();
        for kp in key_field.split(';') {
            let Some(rest) = kp.strip_prefix("inline:") else {
                return Err(bad("only the inline key method exists (RFC 4568 §6.1)"));
            };
            let mut parts = rest.split('|');
            let b64 = parts.next().unwrap_or_default();
            let key_salt = STANDARD.decode(b64).map_err(|_| bad("key is not base64"))?;
            let mut lifetime = None;
            let mut mki = None;
            for p in parts {
                if let Some((value, len)) = p.split_once(':') {
                    let value = value.parse().map_err(|_| bad("bad MKI value"))?;
                    let len: u8 = len.parse().ok().filter(|l| (1..=128).contains(l)).ok_or_else(|| bad("bad MKI length"))?;
                    mki = Some((value, len));
                } else if lifetime.is_none() && mki.is_none() && valid_lifetime(p) {
                    lifetime = Some(p.to_owned());
                } else {
                    return Err(bad("bad lifetime or MKI"));
                }
            }
            keys.push(KeyParam { key_salt, lifetime, mki });
        }
        let session_params = fields.map(str::to_owned).collect();
        let c = Crypto { tag, suite_name, keys, session_params };
        if let Some(s) = c.suite() {
            let (k, salt) = s.key_salt_len();
            if c.keys.iter().any(|kp| kp.key_salt.len() != k + salt) {
                return Err(bad(&format!("{} needs {} bytes of key and salt", s.name(), k + salt)));
            }
        }
        Ok(c)
    }

    pub fn suite(&self) -> Option<Suite> {
        Suite::from_name(&self.suite_name)
    }

    /// A fresh key for `suite` from the OS generator (RFC 4568 §6.1, RFC 3711 §9.2: keys
    /// must be unpredictable), no lifetime, no MKI.
    pub fn generate(tag: u32, suite: Suite, keys: &mut KeySource) -> Crypto {
        let (k, s) = suite.key_salt_len();
        let mut key_salt = vec![0u8; k + s];
        keys.fill(&mut key_salt);
        Crypto {
            tag,
            suite_name: suite.name().to_owned(),
            keys: vec![KeyParam { key_salt, lifetime: None, mki: None }],
            session_params: Vec::new(),
        }
    }

    /// Whether the SRTP layer can use this line: a known suite, one key, no MKI, and no
    /// session parameter we would have to honour (RFC 4568 §6.3: unknown ones make the line
    /// unusable).
    pub fn usable(&self) -> Result<Suite, String> {
        let suite = self.suite().ok_or_else(|| format!("unsupported SRTP suite {}", self.suite_name))?;
        if self.keys.len() != 1 {
            return Err("several master keys per line are not supported".to_owned());
        }
        if self.keys[0].mki.is_some() {
            return Err("MKI is not supported".to_owned());
        }
        if let Some(p) = self.session_params.first() {
            return Err(format!("session parameter {p} is not supported"));
        }
        Ok(suite)
    }
}

fn valid_lifetime(p: &str) -> bool {
    match p.strip_prefix("2^") {
        Some(exp) => exp.parse::<u8>().is_ok_and(|e| e <= 64),
        None => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

impl fmt::Display for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.tag, self.suite_name)?;
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "inline:{}", STANDARD.encode(&k.key_salt))?;
            if let Some(l) = &k.lifetime {
                write!(f, "|{l}")?;
            }
            if let Some((v, len)) = k.mki {
                write!(f, "|{v}:{len}")?;
            }
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4568 §4 example line.
    const RFC4568_EXAMPLE: &str =
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";

    #[test]
    fn rfc4568_example_parses_and_prints_back() {
        let c = Crypto::parse(RFC4568_EXAMPLE).unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.suite(), Some(Suite::AesCm128HmacSha1_80));
        assert_eq!(c.keys[0].key_salt.len(), 30);
        assert_eq!(c.keys[0].lifetime.as_deref(), Some("2^20"));
        assert_eq!(c.keys[0].mki, Some((1, 4)));
        assert_eq!(c.to_string(), RFC4568_EXAMPLE);
        assert_eq!(c.usable(), Err("MKI is not supported".to_owned()));
    }

    #[test]
    fn ims_style_lines_are_usable() {
        let c = Crypto::parse("2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj").unwrap();
        assert_eq!(c.usable(), Ok(Suite::AesCm128HmacSha1_32));
        let c = Crypto::parse("1 AES_CM_128_HMAC_SHA1_80 inline:d0RmdmcmVCspeEc3QGZiNWpVLFJhQX1cfHAwJSoj|2^31").unwrap();
        assert_eq!(c.usable(), Ok(Suite::AesCm128HmacSha1_80));
    }

    #[test]
    fn refusals_say_why() {
        for (line, why) in [
            ("x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "tag"),
            ("1 AES_CM_128_HMAC_SHA1_80", "no key-params"),
            ("1 AES_CM_128_HMAC_SHA1_80 uri:x", "inline"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:!!!", "base64"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA", "30 bytes"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^99", "lifetime"),
        ] {
            let e = Crypto::parse(line).unwrap_err();
            assert!(e.reason.contains(why), "{line}: {e}");
        }
        let c = Crypto::parse("1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR").unwrap();
        assert_eq!(c.usable(), Err("unsupported SRTP suite F8_128_HMAC_SHA1_80".to_owned()));
        let c = Crypto::parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTCP").unwrap();
        assert!(c.usable().unwrap_err().contains("UNENCRYPTED_SRTCP"));
    }

    #[test]
    fn generated_keys_have_the_suite_lengths_and_differ() {
        let mut keys = KeySource::os();
        let a = Crypto::generate(1, Suite::AeadAes128Gcm, &mut keys);
        let b = Crypto::generate(1, Suite::AeadAes128Gcm, &mut keys);
        assert_eq!(a.keys[0].key_salt.len(), 28);
        assert_ne!(a.keys[0].key_salt, b.keys[0].key_salt);
        assert_eq!(Crypto::parse(&a.to_string()).unwrap(), a);
    }
}
