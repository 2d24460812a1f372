//! SDES: SRTP keys carried in SDP `a=crypto` attributes (RFC 4568), as IMS uses them.
//!
//! ```text
//! a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]
//! key-params = key-param *(";" key-param)
//! key-param  = "inline:" base64(master key || master salt) ["|" lifetime] ["|" MKI ":" length]
//! ```
//!
//! Parsing is faithful to the grammar of RFC 4568 §9.1/§9.2: it accepts suites we do not run,
//! several keys, and MKIs, so the caller can see every offered line and format it back.
//! Whether a line is *usable* is a separate question, answered by [`CryptoAttribute::master_key`]
//! with a typed [`SdesError`]; when no offered line is usable the caller answers 488
//! (RFC 4568 §7.1.2, RFC 3261 §21.4.26).

use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use estuary_keys::KeySource;
use zeroize::Zeroizing;

use crate::key::SrtpMasterKey;
use crate::profile::SrtpProfile;
use crate::srtp::SrtpContext;

/// Base64 decoding that takes keys with or without `=` padding: RFC 4568 §6.1 says RFC 4648
/// base64, and some endpoints strip the padding of the 28-byte AEAD key||salt.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One `a=crypto` attribute (RFC 4568 §4).
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoAttribute {
    /// Identifies the line within the media description; the answer echoes the tag it picked
    /// (RFC 4568 §4: 1 to 9 digits).
    pub tag: u32,
    /// The crypto suite.
    pub suite: CryptoSuite,
    /// The keys, in order. We can only use a single key without MKI.
    pub keys: Vec<KeyParam>,
    /// Session parameters, verbatim (RFC 4568 §6.3).
    pub session_params: Vec<String>,
}

/// The crypto suite of an `a=crypto` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CryptoSuite {
    /// A suite we run.
    Srtp(SrtpProfile),
    /// Any other suite name, kept verbatim (e.g. `F8_128_HMAC_SHA1_80`).
    Unknown(String),
}

/// One `inline:` key parameter (RFC 4568 §6.1).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyParam {
    /// Master key followed by master salt.
    pub key_salt: Zeroizing<Vec<u8>>,
    /// Master key lifetime, if given.
    pub lifetime: Option<Lifetime>,
    /// Master key identifier, if given. We do not support MKI.
    pub mki: Option<Mki>,
}

/// The master key lifetime: how many packets the key may protect (RFC 4568 §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// `2^n`.
    PowerOfTwo(u8),
    /// A plain decimal packet count.
    Packets(u64),
}

/// A master key identifier and its length in bytes on the wire (RFC 4568 §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mki {
    /// The MKI value.
    pub value: u64,
    /// Its length in bytes (1 to 128).
    pub length: u8,
}

/// Why an `a=crypto` line cannot be parsed or used. Each is a reason to skip the line; when
/// every offered line fails, answer 488 Not Acceptable Here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdesError {
    /// Not RFC 4568 syntax.
    #[error("malformed a=crypto: {0}")]
    Malformed(&'static str),
    /// A crypto suite we do not run.
    #[error("unsupported crypto suite {0}")]
    UnknownSuite(String),
    /// A key method other than `inline`.
    #[error("unsupported key method {0}")]
    UnsupportedKeyMethod(String),
    /// The key carries an MKI: our SRTP has no MKI support (neither has rtc-srtp).
    #[error("MKI is not supported")]
    Mki,
    /// More than one key (which needs MKI to tell them apart, RFC 4568 §6.1).
    #[error("more than one key is not supported")]
    MultipleKeys,
    /// The key||salt is not as long as the suite requires.
    #[error("{suite}: key||salt must be {want} bytes, got {got}")]
    BadKeyLength {
        /// The suite.
        suite: SrtpProfile,
        /// Required length.
        want: usize,
        /// Given length.
        got: usize,
    },
    /// A session parameter we cannot honour (KDR, UNENCRYPTED_*, UNAUTHENTICATED_SRTP,
    /// FEC_KEY, or an unknown mandatory one).
    #[error("unsupported session parameter {0}")]
    UnsupportedSessionParam(String),
}

impl CryptoAttribute {
    /// An attribute offering `key` under `tag`, with no lifetime, MKI or session parameters.
    pub fn new(tag: u32, key: &SrtpMasterKey) -> Self {
        CryptoAttribute {
            tag,
            suite: CryptoSuite::Srtp(key.profile()),
            keys: vec![KeyParam {
                key_salt: Zeroizing::new(key.concatenated()),
                lifetime: None,
                mki: None,
            }],
            session_params: Vec::new(),
        }
    }

    /// An attribute with a fresh key for `profile` from the CSPRNG `rng` (RFC 4568 §6.1:
    /// keys must be random and unique per direction and session).
    pub fn generate(tag: u32, profile: SrtpProfile, rng: &mut KeySource) -> Self {
        Self::new(tag, &SrtpMasterKey::generate(profile, rng))
    }

    /// Parse an attribute value: `1 AES_CM_128_HMAC_SHA1_80 inline:...`. A leading `a=crypto:`
    /// or `crypto:` is accepted and ignored.
    pub fn parse(s: &str) -> Result<Self, SdesError> {
        let s = s.trim();
        let s = s.strip_prefix("a=").unwrap_or(s);
        let s = s.strip_prefix("crypto:").unwrap_or(s);
        let mut fields = s.split([' ', '\t']).filter(|f| !f.is_empty());

        let tag = fields.next().ok_or(SdesError::Malformed("empty"))?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SdesError::Malformed("tag must be 1 to 9 digits"));
        }
        // Nine digits always fit a u32.
        let tag: u32 = tag.parse().map_err(|_| SdesError::Malformed("tag"))?;

        let suite = fields
            .next()
            .ok_or(SdesError::Malformed("no crypto suite"))?;
        if !suite
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(SdesError::Malformed(
                "crypto suite must be letters, digits and _",
            ));
        }
        let suite = match SrtpProfile::from_sdes_name(suite) {
            Some(p) => CryptoSuite::Srtp(p),
            None => CryptoSuite::Unknown(suite.to_owned()),
        };

        let key_params = fields
            .next()
            .ok_or(SdesError::Malformed("no key parameters"))?;
        let keys = key_params
            .split(';')
            .map(KeyParam::parse)
            .collect::<Result<Vec<_>, _>>()?;

        let session_params = fields.map(str::to_owned).collect();
        Ok(CryptoAttribute {
            tag,
            suite,
            keys,
            session_params,
        })
    }

    /// The master key this line gives, if we can run it: a supported suite, exactly one
    /// `inline` key without MKI, the right key length, and no session parameter we cannot
    /// honour. The lifetime is accepted but not enforced (we never re-key; calls are far
    /// shorter than 2^31 packets).
    pub fn master_key(&self) -> Result<SrtpMasterKey, SdesError> {
        let profile = match &self.suite {
            CryptoSuite::Srtp(p) => *p,
            CryptoSuite::Unknown(name) => return Err(SdesError::UnknownSuite(name.clone())),
        };
        let key = match self.keys.as_slice() {
            [key] => key,
            _ => return Err(SdesError::MultipleKeys),
        };
        if key.mki.is_some() {
            return Err(SdesError::Mki);
        }
        for p in &self.session_params {
            check_session_param(p)?;
        }
        SrtpMasterKey::from_concatenated(profile, &key.key_salt).map_err(|_| {
            SdesError::BadKeyLength {
                suite: profile,
                want: profile.master_key_len() + profile.master_salt_len(),
                got: key.key_salt.len(),
            }
        })
    }

    /// An SRTP context for the key this line carries. An offer's or answer's line keys what
    /// *its sender* protects (RFC 4568 §5.1), so the remote's line gives the context for
    /// unprotecting, and ours the one for protecting.
    pub fn context(&self) -> Result<SrtpContext, SdesError> {
        Ok(SrtpContext::new(&self.master_key()?))
    }

    /// The first usable line among `offered` whose suite is in `acceptable`, with its key
    /// (RFC 4568 §7.1.2: the answerer picks one offered line and echoes its tag). When none is
    /// usable, the error of the last line tried, for the 488's reason.
    pub fn select<'a>(
        offered: &'a [CryptoAttribute],
        acceptable: &[SrtpProfile],
    ) -> Result<(&'a CryptoAttribute, SrtpMasterKey), SdesError> {
        let mut last = SdesError::Malformed("no a=crypto line");
        for line in offered {
            match line.master_key() {
                Ok(k) if acceptable.contains(&k.profile()) => return Ok((line, k)),
                Ok(k) => last = SdesError::UnknownSuite(k.profile().sdes_name().to_owned()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Our answer to the offered line `offer`: same tag and suite, our own fresh key.
    pub fn answer(
        offer: &CryptoAttribute,
        rng: &mut KeySource,
    ) -> Result<Self, SdesError> {
        let profile = offer.master_key()?.profile();
        Ok(Self::generate(offer.tag, profile, rng))
    }
}

fn check_session_param(p: &str) -> Result<(), SdesError> {
    let name = p.split('=').next().unwrap_or(p);
    match name {
        // No FEC runs between us and the peer, so its order relative to SRTP is moot.
        "FEC_ORDER" => Ok(()),
        // A window-size hint (RFC 4568 §6.3.7); our window is fixed at 128.
        "WSH" => Ok(()),
        // RFC 4568 §6.3: parameters starting with "-" may be ignored when not understood.
        _ if name.starts_with('-') => Ok(()),
        // KDR, UNENCRYPTED_SRTP, UNENCRYPTED_SRTCP, UNAUTHENTICATED_SRTP, FEC_KEY and anything
        // unknown would change the transform.
        _ => Err(SdesError::UnsupportedSessionParam(p.to_owned())),
    }
}

impl KeyParam {
    fn parse(s: &str) -> Result<Self, SdesError> {
        let (method, info) = s
            .split_once(':')
            .ok_or(SdesError::Malformed("key-param lacks ':'"))?;
        if !method.eq_ignore_ascii_case("inline") {
            return Err(SdesError::UnsupportedKeyMethod(method.to_owned()));
        }
        let mut parts = info.split('|');
        let b64 = parts.next().unwrap_or_default();
        if b64.is_empty() {
            return Err(SdesError::Malformed("empty key"));
        }
        let key_salt = Zeroizing::new(
            LENIENT_B64
                .decode(b64)
                .map_err(|_| SdesError::Malformed("key is not base64"))?,
        );
        let mut lifetime = None;
        let mut mki = None;
        for part in parts {
            // Lifetime then MKI, each optional (RFC 4568 §9.2); an MKI has a ':'.
            if let Some((value, length)) = part.split_once(':') {
                if mki.is_some() {
                    return Err(SdesError::Malformed("two MKIs"));
                }
                mki = Some(Mki::parse(value, length)?);
            } else if lifetime.is_some() || mki.is_some() {
                return Err(SdesError::Malformed(
                    "lifetime must come once, before the MKI",
                ));
            } else {
                lifetime = Some(Lifetime::parse(part)?);
            }
        }
        Ok(KeyParam {
            key_salt,
            lifetime,
            mki,
        })
    }
}

impl Lifetime {
    fn parse(s: &str) -> Result<Self, SdesError> {
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if let Some(exp) = s.strip_prefix("2^") {
            if !digits(exp) {
                return Err(SdesError::Malformed("lifetime exponent"));
            }
            let e: u8 = exp
                .parse()
                .map_err(|_| SdesError::Malformed("lifetime exponent"))?;
            if e > 63 {
                return Err(SdesError::Malformed("lifetime exponent over 63"));
            }
            Ok(Lifetime::PowerOfTwo(e))
        } else if digits(s) {
            Ok(Lifetime::Packets(
                s.parse().map_err(|_| SdesError::Malformed("lifetime"))?,
            ))
        } else {
            Err(SdesError::Malformed("lifetime"))
        }
    }
}

impl Mki {
    fn parse(value: &str, length: &str) -> Result<Self, SdesError> {
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if !digits(value) || !digits(length) || length.len() > 3 {
            return Err(SdesError::Malformed("MKI must be digits ':' 1 to 3 digits"));
        }
        let value = value
            .parse()
            .map_err(|_| SdesError::Malformed("MKI value too large"))?;
        let length: u8 = length
            .parse()
            .map_err(|_| SdesError::Malformed("MKI length"))?;
        if !(1..=128).contains(&length) {
            return Err(SdesError::Malformed("MKI length must be 1 to 128"));
        }
        Ok(Mki { value, length })
    }
}

impl fmt::Display for CryptoSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoSuite::Srtp(p) => f.write_str(p.sdes_name()),
            CryptoSuite::Unknown(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lifetime::PowerOfTwo(e) => write!(f, "2^{e}"),
            Lifetime::Packets(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for KeyParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inline:{}", STANDARD.encode(self.key_salt.as_slice()))?;
        if let Some(l) = self.lifetime {
            write!(f, "|{l}")?;
        }
        if let Some(m) = self.mki {
            write!(f, "|{}:{}", m.value, m.length)?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyParam")
            .field("key_salt_len", &self.key_salt.len())
            .field("lifetime", &self.lifetime)
            .field("mki", &self.mki)
            .finish()
    }
}

/// The attribute value, without `a=crypto:`: `1 AES_CM_128_HMAC_SHA1_80 inline:...`.
impl fmt::Display for CryptoAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.tag, self.suite)?;
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{k}")?;
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CryptoAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoAttribute")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("keys", &self.keys)
            .field("session_params", &self.session_params)
            .finish()
    }
}
