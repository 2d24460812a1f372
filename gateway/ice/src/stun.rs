//! The STUN side of a lite agent: RFC 7983 demultiplexing, the checks RFC 8489 §6.3 and §9.1.3
//! ask of a server receiving a Binding request, and the responses it sends back.
//!
//! Parsing and message integrity are stun-rs's; this module decides what each outcome means on
//! the wire. The order of the checks is the RFC's, because the order decides the answer:
//!
//! 1. basic checks (RFC 8489 §6.3): header, length, attribute framing, FINGERPRINT when
//!    present (§14.7). A failure drops the datagram silently;
//! 2. class and method: only Binding requests are served; other STUN is dropped;
//! 3. authentication (§9.1.3): USERNAME or MESSAGE-INTEGRITY missing → 400; USERNAME not ours
//!    → 401; integrity wrong → 401. Neither error response carries MESSAGE-INTEGRITY;
//! 4. unknown comprehension-required attributes (§6.3.1) → 420 with UNKNOWN-ATTRIBUTES,
//!    integrity-protected (end of §9.1.3) because the request authenticated.
//!
//! Role conflicts (RFC 8445 §7.3.1.1) are the agent's business and come after these.

use std::net::SocketAddr;

use stun_rs::attributes::ice::{IceControlled, UseCandidate};
use stun_rs::attributes::stun::{
    ErrorCode, Fingerprint, MessageIntegrity, UnknownAttributes, UserName, XorMappedAddress,
};
use stun_rs::error::{StunDecodeError, StunErrorLevel};
use stun_rs::methods::BINDING;
use stun_rs::{
    DecoderContextBuilder, HMACKey, MessageClass, MessageDecoder, MessageDecoderBuilder,
    MessageEncoderBuilder, StunAttributeType, StunErrorType, StunMessageBuilder, TransactionId,
};

use crate::credentials::Credentials;

/// Size of the STUN header (RFC 8489 §5).
const HEADER_LEN: usize = 20;
/// Size of an attribute's type and length fields (RFC 8489 §14).
const ATTR_HEADER_LEN: usize = 4;
/// The magic cookie in network order (RFC 8489 §5).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// Binding request: method 0x001, class request (RFC 8489 §5).
const BINDING_REQUEST: u16 = 0x0001;
/// FINGERPRINT attribute type (RFC 8489 §14.7).
const ATTR_FINGERPRINT: u16 = 0x8028;
/// Longest UNKNOWN-ATTRIBUTES list we send; a request may carry hundreds of attributes and
/// the 420 only has to name enough for the client to see what we refused.
const MAX_UNKNOWN_LISTED: usize = 16;
/// Room for the largest response we build: header, XOR-MAPPED-ADDRESS (IPv6) or ERROR-CODE with
/// reason and UNKNOWN-ATTRIBUTES, MESSAGE-INTEGRITY and FINGERPRINT.
const RESPONSE_CAPACITY: usize = 160;

/// Whether a datagram is STUN, by RFC 7983 §7 (first byte 0..=3) and the RFC 8489 §5 magic
/// cookie. A `true` means "give it to the ICE agent", not that the message is valid.
///
/// Everything on the web-side socket (STUN, DTLS, SRTP/SRTCP) is told apart by this and the
/// other ranges of RFC 7983; the cookie check keeps a short datagram that merely starts with
/// 0..=3 out of the agent.
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN && data[0] <= 3 && data[4..8] == MAGIC_COOKIE
}

/// USERNAME attribute type (RFC 8489 §14.3).
const ATTR_USERNAME: u16 = 0x0006;

/// The receiver's half of a STUN request's USERNAME (`RFRAG:LFRAG`, RFC 8445 §7.2.2): the
/// ufrag of the agent it is meant for, read without decoding or verifying anything.
///
/// This is for routing only: a media thread that serves many calls on one shared port finds
/// the call by it and hands the datagram to that call's agent, which runs every check.
/// `None` when the datagram is not STUN, its header does not frame it exactly, it has no
/// USERNAME, or the attribute framing breaks before it.
pub fn username_ufrag(data: &[u8]) -> Option<&[u8]> {
    header_type(data)?;
    let value = attributes(data).map_while(Result::ok).find(|a| a.kind == ATTR_USERNAME)?.value;
    let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
    Some(&value[..end])
}

/// What the checks made of one datagram that passed [`is_stun`].
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Drop silently (RFC 8489 §6.3), counted under this reason.
    Drop(DropReason),
    /// Answer with an error response.
    Reject {
        tid: TransactionId,
        error: StunError,
    },
    /// An authenticated Binding request with nothing we refuse; the agent decides the rest.
    Accept(Check),
}

/// Why a STUN datagram was dropped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// Header, length or attribute framing is broken, or stun-rs could not decode an attribute.
    Malformed,
    /// FINGERPRINT present and wrong (RFC 8489 §14.7): not STUN after all, or corrupted.
    Fingerprint,
    /// Well-formed but not a Binding request: responses (a lite agent sends no requests, so
    /// every response is unsolicited), indications, other methods.
    Unexpected,
}

/// The error responses this agent sends, each with its ERROR-CODE (RFC 8489 §14.8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StunError {
    /// 400: USERNAME or MESSAGE-INTEGRITY missing (RFC 8489 §9.1.3).
    BadRequest,
    /// 401: USERNAME not ours or integrity wrong (RFC 8489 §9.1.3).
    Unauthorized,
    /// 420: unknown comprehension-required attributes, listed (RFC 8489 §6.3.1).
    UnknownAttribute(Vec<u16>),
    /// 487: both agents claim the controlled role (RFC 8445 §7.3.1.1).
    RoleConflict,
}

impl StunError {
    fn code(&self) -> u16 {
        match self {
            StunError::BadRequest => 400,
            StunError::Unauthorized => 401,
            StunError::UnknownAttribute(_) => 420,
            StunError::RoleConflict => 487,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            StunError::BadRequest => "Bad Request",
            StunError::Unauthorized => "Unauthorized",
            StunError::UnknownAttribute(_) => "Unknown Attribute",
            StunError::RoleConflict => "Role Conflict",
        }
    }

    /// RFC 8489 §9.1.3: a 400 or 401 answers a request that did not authenticate, so it
    /// carries no MESSAGE-INTEGRITY. Later errors answer an authenticated request and are
    /// protected with the same key (end of §9.1.3).
    fn integrity_protected(&self) -> bool {
        !matches!(self, StunError::BadRequest | StunError::Unauthorized)
    }
}

/// The ICE attributes of an authenticated Binding request (RFC 8445 §7.1.1, §16.1).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Check {
    pub(crate) tid: TransactionId,
    /// USE-CANDIDATE: the controlling peer nominates this pair (RFC 8445 §7.3.1.5, §8.1.1).
    pub(crate) use_candidate: bool,
    /// ICE-CONTROLLED tie-breaker: the peer believes it is controlled.
    pub(crate) ice_controlled: Option<u64>,
}

/// The checks of one credential generation: the local credentials key MESSAGE-INTEGRITY, the
/// remote ufrag (once known) pins the second half of USERNAME.
pub(crate) struct Validator {
    local_ufrag: String,
    remote_ufrag: Option<String>,
    key: HMACKey,
    /// Decodes and, because of `with_validation()`, verifies MESSAGE-INTEGRITY and FINGERPRINT
    /// with the local password. stun-rs verifies nothing without that flag.
    verifying: MessageDecoder,
    /// Decodes without verifying, to learn what a request carries before authenticating it.
    plain: MessageDecoder,
}

impl Validator {
    pub(crate) fn new(local: &Credentials, remote: Option<&Credentials>) -> Self {
        let ctx = DecoderContextBuilder::default()
            .with_key(local.key().clone())
            .with_validation()
            .build();
        Validator {
            local_ufrag: local.ufrag().to_owned(),
            remote_ufrag: remote.map(|r| r.ufrag().to_owned()),
            key: local.key().clone(),
            verifying: MessageDecoderBuilder::default().with_context(ctx).build(),
            plain: MessageDecoder::default(),
        }
    }

    pub(crate) fn set_remote_ufrag(&mut self, ufrag: &str) {
        self.remote_ufrag = Some(ufrag.to_owned());
    }

    /// The key for MESSAGE-INTEGRITY on responses (RFC 8489 §9.1.3: the key the request used).
    pub(crate) fn key(&self) -> &HMACKey {
        &self.key
    }

    /// Runs the checks of the module doc, in order, on a datagram that passed [`is_stun`].
    pub(crate) fn check(&self, data: &[u8]) -> Verdict {
        // 1. Basic checks, RFC 8489 §6.3.
        let Some(msg_type) = header_type(data) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let fingerprint_at = match scan_attributes(data) {
            Ok(at) => at,
            Err(()) => return Verdict::Drop(DropReason::Malformed),
        };
        if let Some(at) = fingerprint_at {
            if !fingerprint_valid(data, at) {
                return Verdict::Drop(DropReason::Fingerprint);
            }
        }
        // 2. Only Binding requests get an answer. Any other class or method is dropped: a lite
        //    agent has no transactions a response could belong to (RFC 8445 §2.5), and a
        //    Binding indication (a keepalive, RFC 8445 §11) asks for nothing.
        if msg_type != BINDING_REQUEST {
            return Verdict::Drop(DropReason::Unexpected);
        }
        let msg = match self.plain.decode(data) {
            Ok((msg, _)) if msg.class() == MessageClass::Request && msg.method() == BINDING => msg,
            _ => return Verdict::Drop(DropReason::Malformed),
        };
        let tid = *msg.transaction_id();
        let reject = |error| Verdict::Reject { tid, error };

        // 3. Authentication, RFC 8489 §9.1.3 (short-term credentials, as RFC 8445 §7.2.2 and
        //    §7.3 require). A request protected only by MESSAGE-INTEGRITY-SHA256 counts as
        //    missing integrity: ICE checks carry MESSAGE-INTEGRITY (RFC 8445 §7.2.2).
        let username = msg.get::<UserName>().and_then(|a| a.as_user_name().ok());
        let Some(username) = username else {
            return reject(StunError::BadRequest);
        };
        if msg.get::<MessageIntegrity>().is_none() {
            return reject(StunError::BadRequest);
        }
        if !self.username_matches(username.as_str()) {
            return reject(StunError::Unauthorized);
        }
        match self.verifying.decode(data) {
            Ok(_) => {}
            Err(e) if integrity_failed(&e) => return reject(StunError::Unauthorized),
            // Framing and FINGERPRINT were checked above and the plain decode succeeded, so no
            // other failure is expected here; drop rather than guess an answer.
            Err(_) => return Verdict::Drop(DropReason::Malformed),
        }

        // 4. Unknown comprehension-required attributes (types below 0x8000), RFC 8489 §6.3.1.
        //    stun-rs has already left out attributes after MESSAGE-INTEGRITY (§14.5).
        let mut unknown: Vec<u16> = Vec::new();
        let required = msg
            .attributes()
            .iter()
            .filter(|a| a.is_unknown())
            .map(|a| a.attribute_type())
            .filter(|t| t.is_comprehension_required());
        for t in required {
            if unknown.len() < MAX_UNKNOWN_LISTED && !unknown.contains(&t.as_u16()) {
                unknown.push(t.as_u16());
            }
        }
        if !unknown.is_empty() {
            return reject(StunError::UnknownAttribute(unknown));
        }

        Verdict::Accept(Check {
            tid,
            use_candidate: msg.get::<UseCandidate>().is_some(),
            ice_controlled: msg
                .get::<IceControlled>()
                .and_then(|a| a.as_ice_controlled().ok())
                .map(|v| *v.as_ref()),
        })
    }

    /// RFC 8445 §7.2.2 / §7.3: a check toward us carries `USERNAME = <our ufrag>:<their ufrag>`.
    ///
    /// Until the remote ufrag is known (an offer we sent whose answer has not arrived; the
    /// browser can check before its answer reaches us, RFC 8445 §7.3) any second half is
    /// accepted: the first half and MESSAGE-INTEGRITY with our password already prove the
    /// sender read our SDP. Once known, the second half must match exactly.
    fn username_matches(&self, username: &str) -> bool {
        let Some((ours, theirs)) = username.split_once(':') else {
            return false;
        };
        ours == self.local_ufrag && self.remote_ufrag.as_deref().is_none_or(|r| r == theirs)
    }
}

/// Encodes the answer to a request: a success response with XOR-MAPPED-ADDRESS = `mapped`
/// (RFC 8489 §14.2, RFC 8445 §7.3.1.2), or `error`. Integrity-protected responses use `key`;
/// every response ends with FINGERPRINT, which ICE puts on all its STUN messages (RFC 8445
/// §7) so the browser's demultiplexer can trust it. `None` only if stun-rs refuses
/// to encode, which would be our bug.
pub(crate) fn encode_response(
    tid: TransactionId,
    answer: Result<SocketAddr, &StunError>,
    key: &HMACKey,
) -> Option<Vec<u8>> {
    let builder = match answer {
        Ok(mapped) => StunMessageBuilder::new(BINDING, MessageClass::SuccessResponse)
            .with_transaction_id(tid)
            // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; the browser knows
            // them as IPv4, so map them back before they go on the wire.
            .with_attribute(XorMappedAddress::from(SocketAddr::new(
                mapped.ip().to_canonical(),
                mapped.port(),
            )))
            .with_attribute(MessageIntegrity::new(key.clone())),
        Err(error) => {
            let code = stun_rs::ErrorCode::new(error.code(), error.reason()).ok()?;
            let mut builder = StunMessageBuilder::new(BINDING, MessageClass::ErrorResponse)
                .with_transaction_id(tid)
                .with_attribute(ErrorCode::from(code));
            if let StunError::UnknownAttribute(types) = error {
                let mut list = UnknownAttributes::default();
                types.iter().for_each(|t| list.add(*t));
                builder = builder.with_attribute(list);
            }
            if error.integrity_protected() {
                builder = builder.with_attribute(MessageIntegrity::new(key.clone()));
            }
            builder
        }
    };
    let msg = builder.with_attribute(Fingerprint::default()).build();
    let mut buf = vec![0u8; RESPONSE_CAPACITY];
    let len = MessageEncoderBuilder::default()
        .build()
        .encode(&mut buf, &msg)
        .ok()?;
    buf.truncate(len);
    Some(buf)
}

/// The 14-bit message type after the RFC 8489 §6.3 header checks: leading bits zero, magic
/// cookie, a length that is a multiple of 4 and covers the datagram exactly (over UDP a
/// datagram carries one whole message, nothing more).
fn header_type(data: &[u8]) -> Option<u16> {
    if !is_stun(data) {
        return None;
    }
    let msg_type = u16::from_be_bytes([data[0], data[1]]);
    let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
    (msg_type & 0xC000 == 0 && length % 4 == 0 && HEADER_LEN + length == data.len())
        .then_some(msg_type)
}

/// One attribute TLV: where it starts, its type and its value (unpadded).
struct Attribute<'a> {
    at: usize,
    kind: u16,
    value: &'a [u8],
}

/// The attribute TLVs after the header, with bounds checks: each value and its padding must
/// fit in the datagram (RFC 8489 §14). An `Err` ends the walk: the framing is broken.
fn attributes(data: &[u8]) -> impl Iterator<Item = Result<Attribute<'_>, ()>> {
    let mut pos = HEADER_LEN;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let Some(head) = data.get(pos..pos + ATTR_HEADER_LEN) else {
            pos = data.len();
            return Some(Err(()));
        };
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let at = pos;
        let next = pos + ATTR_HEADER_LEN + len.next_multiple_of(4);
        if next > data.len() {
            pos = data.len();
            return Some(Err(()));
        }
        pos = next;
        Some(Ok(Attribute { at, kind, value: &data[at + ATTR_HEADER_LEN..at + ATTR_HEADER_LEN + len] }))
    })
}

/// Walks the attribute TLVs. `Ok(Some(offset))` names where FINGERPRINT starts; it must be the
/// last attribute (RFC 8489 §14.7). `Err` means the framing is broken.
fn scan_attributes(data: &[u8]) -> Result<Option<usize>, ()> {
    let mut fingerprint = None;
    for attr in attributes(data) {
        let attr = attr?;
        if fingerprint.is_some() {
            return Err(()); // an attribute after FINGERPRINT
        }
        if attr.kind == ATTR_FINGERPRINT {
            if attr.value.len() != 4 {
                return Err(());
            }
            fingerprint = Some(attr.at);
        }
    }
    Ok(fingerprint)
}

/// RFC 8489 §14.7: CRC-32 of the message up to FINGERPRINT, XOR 0x5354554e. FINGERPRINT is last
/// (checked by `scan_attributes`), so the header's length already covers it as the RFC wants.
fn fingerprint_valid(data: &[u8], at: usize) -> bool {
    let Some(value) = data.get(at + ATTR_HEADER_LEN..at + ATTR_HEADER_LEN + 4) else {
        return false;
    };
    let value: [u8; 4] = [value[0], value[1], value[2], value[3]];
    Fingerprint::from(value).validate(&data[..at])
}

/// Whether stun-rs refused the message because MESSAGE-INTEGRITY did not verify.
fn integrity_failed(e: &StunDecodeError) -> bool {
    matches!(
        &e.0,
        StunErrorLevel::Attribute(a)
            if a.attr_type == Some(MessageIntegrity::get_type())
                && a.error.error_type == StunErrorType::ValidationFailed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7983_ranges() {
        let mut msg = [0u8; 20];
        msg[4..8].copy_from_slice(&MAGIC_COOKIE);
        assert!(is_stun(&msg));
        msg[0] = 3;
        assert!(is_stun(&msg));
        msg[0] = 20; // DTLS
        assert!(!is_stun(&msg));
        msg[0] = 0x80; // RTP
        assert!(!is_stun(&msg));
        msg[0] = 0;
        msg[4] = 0; // no cookie: RFC 3489 or noise
        assert!(!is_stun(&msg));
        assert!(!is_stun(&[0u8; 19]));
        assert!(!is_stun(&[]));
    }

    #[test]
    fn scan_rejects_truncated_and_trailing_attributes() {
        let mut msg = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
        msg.extend_from_slice(&[0; 12]);
        msg.extend_from_slice(&[0x80, 0x22, 0x00, 0x05, b'a', b'b', b'c', b'd']); // 5 > 4 left
        assert_eq!(scan_attributes(&msg), Err(()));
        let mut msg = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xA4, 0x42];
        msg.extend_from_slice(&[0; 12]);
        msg.extend_from_slice(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]); // FINGERPRINT...
        msg.extend_from_slice(&[0x80, 0x22, 0x00, 0x04, 1, 2, 3, 4]); // ...not last
        assert_eq!(scan_attributes(&msg), Err(()));
    }

    #[test]
    fn header_length_must_cover_the_datagram() {
        let mut msg = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        msg.extend_from_slice(&[0; 12]);
        assert_eq!(header_type(&msg), Some(BINDING_REQUEST));
        msg.push(0);
        assert_eq!(header_type(&msg), None);
    }
}
