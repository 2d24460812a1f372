//! Diameter messages (RFC 6733 §3).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    Version    |                 Message Length                |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Command Flags |                  Command Code                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Application-ID                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Hop-by-Hop Identifier                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      End-to-End Identifier                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  AVPs ...
//! ```
//!
//! Command codes and Application-Ids are plain `u32`s: any value decodes, so a message of an
//! application this crate has never heard of is still a [`Message`].

use crate::avp::{decode_avp, Avp, AvpKey};
use crate::dictionary as dict;
use crate::error::{DecodeError, EncodeError};

/// The only Diameter version (RFC 6733 §3).
pub const VERSION: u8 = 1;
/// Fixed header size.
pub const HEADER_LEN: usize = 20;
/// The largest message this crate accepts or sends: 1 MiB. Rx messages are a few kilobytes;
/// the bound keeps a hostile length field from reserving 16 MiB per connection.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

const FLAG_REQUEST: u8 = 0x80;
const FLAG_PROXIABLE: u8 = 0x40;
const FLAG_ERROR: u8 = 0x20;
const FLAG_RETRANSMITTED: u8 = 0x10;

/// Command codes used by the base protocol and the Rx application.
pub mod command {
    /// Capabilities-Exchange (RFC 6733 §5.3).
    pub const CAPABILITIES_EXCHANGE: u32 = 257;
    /// Re-Auth (RFC 6733 §8.3); Rx RAR/RAA.
    pub const RE_AUTH: u32 = 258;
    /// AA (RFC 7155 §3.1); Rx AAR/AAA.
    pub const AA: u32 = 265;
    /// Accounting (RFC 6733 §9.7).
    pub const ACCOUNTING: u32 = 271;
    /// Abort-Session (RFC 6733 §8.5); Rx ASR/ASA.
    pub const ABORT_SESSION: u32 = 274;
    /// Session-Termination (RFC 6733 §8.4); Rx STR/STA.
    pub const SESSION_TERMINATION: u32 = 275;
    /// Device-Watchdog (RFC 6733 §5.5).
    pub const DEVICE_WATCHDOG: u32 = 280;
    /// Disconnect-Peer (RFC 6733 §5.4).
    pub const DISCONNECT_PEER: u32 = 282;
}

/// Application-Ids.
pub mod application {
    /// Diameter common messages: CER/CEA, DWR/DWA, DPR/DPA (RFC 6733 §2.4).
    pub const COMMON: u32 = 0;
    /// Rx (TS 29.214 §5.6, vendor 3GPP).
    pub const RX: u32 = 16_777_236;
    /// Relay: advertised by relay agents, matches every application (RFC 6733 §2.4).
    pub const RELAY: u32 = 0xffff_ffff;
}

/// The Command Flags octet (RFC 6733 §3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CommandFlags {
    /// R: request (clear in answers).
    pub request: bool,
    /// P: proxiable.
    pub proxiable: bool,
    /// E: the answer carries a protocol error (3xxx); never set in requests.
    pub error: bool,
    /// T: a possibly retransmitted request, sent again after a link failover (§5.5.4).
    pub retransmitted: bool,
}

impl CommandFlags {
    /// The wire octet; reserved bits are zero.
    pub fn to_byte(self) -> u8 {
        let mut b = 0;
        if self.request {
            b |= FLAG_REQUEST;
        }
        if self.proxiable {
            b |= FLAG_PROXIABLE;
        }
        if self.error {
            b |= FLAG_ERROR;
        }
        if self.retransmitted {
            b |= FLAG_RETRANSMITTED;
        }
        b
    }

    /// From the wire octet; reserved bits are ignored as RFC 6733 §3 requires.
    pub fn from_byte(b: u8) -> CommandFlags {
        CommandFlags {
            request: b & FLAG_REQUEST != 0,
            proxiable: b & FLAG_PROXIABLE != 0,
            error: b & FLAG_ERROR != 0,
            retransmitted: b & FLAG_RETRANSMITTED != 0,
        }
    }
}

/// A decoded fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message Length (header plus AVPs).
    pub length: u32,
    /// Command Flags.
    pub flags: CommandFlags,
    /// Command Code.
    pub command_code: u32,
    /// Application-Id.
    pub application_id: u32,
    /// Hop-by-Hop Identifier.
    pub hop_by_hop: u32,
    /// End-to-End Identifier.
    pub end_to_end: u32,
}

impl Header {
    /// Decodes the first 20 bytes; checks version and length bounds but not that `buf` holds
    /// the whole message.
    pub fn decode(buf: &[u8]) -> Result<Header, DecodeError> {
        // Report a wrong version or length before a short buffer: it is the real fault.
        frame_len(buf)?;
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        };
        let length = check_version_and_length(h)?;
        let word = |i: usize| u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Ok(Header {
            length,
            flags: CommandFlags::from_byte(h[4]),
            command_code: word(4) & 0x00ff_ffff,
            application_id: word(8),
            hop_by_hop: word(12),
            end_to_end: word(16),
        })
    }
}

/// Checks version (byte 0) and length (bytes 1..4) of a header; `h` has at least 4 bytes.
fn check_version_and_length(h: &[u8]) -> Result<u32, DecodeError> {
    if h[0] != VERSION {
        return Err(DecodeError::UnsupportedVersion(h[0]));
    }
    let length = u32::from_be_bytes([0, h[1], h[2], h[3]]);
    let len = length as usize;
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) || len % 4 != 0 {
        return Err(DecodeError::InvalidMessageLength(length));
    }
    Ok(length)
}

/// How many bytes the message at the start of a TCP stream buffer occupies, once known.
///
/// `Ok(None)`: fewer than 4 bytes, or the message is not complete yet (read more).
/// `Ok(Some(n))`: the first `n` bytes are one message (not yet otherwise checked).
/// `Err(_)`: not a Diameter stream (wrong version, impossible length); close the connection,
/// since framing cannot be recovered (RFC 6733 §3: the length is the only delimiter).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if let Some(&version) = buf.first() {
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
    }
    let Some(h) = buf.get(..4) else {
        return Ok(None);
    };
    let len = check_version_and_length(h)? as usize;
    Ok(if buf.len() >= len { Some(len) } else { None })
}

/// A Diameter message: header fields and its AVPs in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Command Flags.
    pub flags: CommandFlags,
    /// Command Code (24 bits on the wire).
    pub command_code: u32,
    /// Application-Id.
    pub application_id: u32,
    /// Hop-by-Hop Identifier.
    pub hop_by_hop: u32,
    /// End-to-End Identifier.
    pub end_to_end: u32,
    /// The AVPs.
    pub avps: Vec<Avp>,
}

impl Message {
    /// A request (R set) with P set, as application requests are (clear it for CER/DWR/DPR,
    /// which RFC 6733 §5 sends non-proxiable). Identifiers are zero until a peer assigns them.
    pub fn request(command_code: u32, application_id: u32) -> Message {
        Message {
            flags: CommandFlags {
                request: true,
                proxiable: true,
                ..CommandFlags::default()
            },
            command_code,
            application_id,
            hop_by_hop: 0,
            end_to_end: 0,
            avps: Vec::new(),
        }
    }

    /// The skeleton of an answer to `request` (RFC 6733 §6.2): same command, application,
    /// Hop-by-Hop and End-to-End identifiers and P bit; R, E and T clear; Session-Id copied
    /// first (its fixed position, §8.8) and every Proxy-Info copied in order. The caller adds
    /// Result-Code, Origin-Host, Origin-Realm and the rest.
    pub fn answer_to(request: &Message) -> Message {
        let mut avps = Vec::new();
        if let Some(session) = request.find(dict::SESSION_ID) {
            avps.push(session.clone());
        }
        avps.extend(request.find_all(dict::PROXY_INFO).cloned());
        Message {
            flags: CommandFlags {
                request: false,
                proxiable: request.flags.proxiable,
                error: false,
                retransmitted: false,
            },
            command_code: request.command_code,
            application_id: request.application_id,
            hop_by_hop: request.hop_by_hop,
            end_to_end: request.end_to_end,
            avps,
        }
    }

    /// Appends an AVP (builder style).
    #[must_use]
    pub fn with(mut self, avp: Avp) -> Message {
        self.avps.push(avp);
        self
    }

    /// Appends an AVP.
    pub fn push(&mut self, avp: Avp) {
        self.avps.push(avp);
    }

    /// Whether R is set.
    pub fn is_request(&self) -> bool {
        self.flags.request
    }

    /// The first top-level AVP with `key`.
    pub fn find(&self, key: AvpKey) -> Option<&Avp> {
        self.avps.iter().find(|a| a.key() == key)
    }

    /// Every top-level AVP with `key`, in order.
    pub fn find_all(&self, key: AvpKey) -> impl Iterator<Item = &Avp> {
        self.avps.iter().filter(move |a| a.key() == key)
    }

    /// Result-Code, if present and well formed.
    pub fn result_code(&self) -> Option<u32> {
        self.find(dict::RESULT_CODE).and_then(|a| a.as_u32().ok())
    }

    /// Experimental-Result-Code inside Experimental-Result, if present and well formed.
    pub fn experimental_result_code(&self) -> Option<u32> {
        let group = self.find(dict::EXPERIMENTAL_RESULT)?;
        group
            .find_in_group(dict::EXPERIMENTAL_RESULT_CODE)
            .ok()
            .flatten()
            .and_then(|a| a.as_u32().ok())
    }

    /// Session-Id text, if present and UTF-8.
    pub fn session_id(&self) -> Option<&str> {
        self.find(dict::SESSION_ID).and_then(|a| a.as_utf8().ok())
    }

    /// Origin-Host text, if present and UTF-8.
    pub fn origin_host(&self) -> Option<&str> {
        self.find(dict::ORIGIN_HOST)
            .and_then(|a| a.as_identity().ok())
    }

    /// Origin-Realm text, if present and UTF-8.
    pub fn origin_realm(&self) -> Option<&str> {
        self.find(dict::ORIGIN_REALM)
            .and_then(|a| a.as_identity().ok())
    }

    /// The encoded size.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.avps.iter().map(Avp::padded_len).sum::<usize>()
    }

    /// Appends the encoding to `out`. On error nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let len = self.encoded_len();
        if len > MAX_MESSAGE_LEN {
            return Err(EncodeError::TooLong(len));
        }
        out.reserve(len);
        out.push(VERSION);
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.push(self.flags.to_byte());
        out.extend_from_slice(&(self.command_code & 0x00ff_ffff).to_be_bytes()[1..]);
        out.extend_from_slice(&self.application_id.to_be_bytes());
        out.extend_from_slice(&self.hop_by_hop.to_be_bytes());
        out.extend_from_slice(&self.end_to_end.to_be_bytes());
        for avp in &self.avps {
            avp.encode(out);
        }
        Ok(())
    }

    /// The encoding in a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one message; any fault is an error.
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        match Message::decode_partial(buf)? {
            (message, None) => Ok(message),
            (_, Some(error)) => Err(error),
        }
    }

    /// Decodes as much as possible, for answering a faulty request (RFC 6733 §7).
    ///
    /// `Err` means the header itself is unusable (length, version). Otherwise the message
    /// holds every AVP before the first faulty one, and the fault (header flags, AVP length or
    /// AVP bits) comes alongside, so the answer can still carry Session-Id and the
    /// identifiers.
    pub fn decode_partial(buf: &[u8]) -> Result<(Message, Option<DecodeError>), DecodeError> {
        let header = Header::decode(buf)?;
        let len = header.length as usize;
        if buf.len() < len {
            return Err(DecodeError::Truncated {
                needed: len,
                available: buf.len(),
            });
        }
        if buf.len() > len {
            return Err(DecodeError::TrailingBytes {
                length: len,
                available: buf.len(),
            });
        }
        let mut message = Message {
            flags: header.flags,
            command_code: header.command_code,
            application_id: header.application_id,
            hop_by_hop: header.hop_by_hop,
            end_to_end: header.end_to_end,
            avps: Vec::new(),
        };
        // RFC 6733 §3: E "MUST NOT be set in request messages".
        let mut fault = if header.flags.request && header.flags.error {
            Some(DecodeError::InvalidHeaderBits { flags: buf[4] })
        } else {
            None
        };
        let mut rest = &buf[HEADER_LEN..len];
        while !rest.is_empty() {
            match decode_avp(rest) {
                Ok((avp, used)) => {
                    message.avps.push(avp);
                    rest = &rest[used..];
                }
                Err(e) => {
                    fault.get_or_insert(e);
                    break;
                }
            }
        }
        Ok((message, fault))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dwr() -> Message {
        let mut m = Message::request(command::DEVICE_WATCHDOG, application::COMMON);
        m.flags.proxiable = false;
        m.hop_by_hop = 0x0102_0304;
        m.end_to_end = 0x0a0b_0c0d;
        m.with(Avp::identity(dict::ORIGIN_HOST, "a.b"))
            .with(Avp::identity(dict::ORIGIN_REALM, "b"))
    }

    #[test]
    fn dwr_bytes_by_hand() {
        let bytes = dwr().to_bytes().unwrap();
        #[rustfmt::skip]
        let expected = [
            1, 0, 0, 44,            // version 1, length 20 + 12 + 12 = 44
            0x80, 0, 1, 0x18,       // R, command 280
            0, 0, 0, 0,             // application 0
            1, 2, 3, 4,             // hop-by-hop
            0x0a, 0x0b, 0x0c, 0x0d, // end-to-end
            0, 0, 1, 8, 0x40, 0, 0, 11, b'a', b'.', b'b', 0, // Origin-Host, len 11, 1 pad
            0, 0, 1, 0x28, 0x40, 0, 0, 9, b'b', 0, 0, 0,     // Origin-Realm 296, len 9, 3 pad
        ];
        assert_eq!(bytes, expected);
        assert_eq!(frame_len(&bytes), Ok(Some(44)));
        assert_eq!(Message::decode(&bytes), Ok(dwr()));
    }

    #[test]
    fn frame_len_waits_and_rejects() {
        let bytes = dwr().to_bytes().unwrap();
        assert_eq!(frame_len(&[]), Ok(None));
        assert_eq!(frame_len(&bytes[..3]), Ok(None));
        assert_eq!(frame_len(&bytes[..43]), Ok(None));
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        assert_eq!(frame_len(&two), Ok(Some(44)));
        assert_eq!(frame_len(&[2]), Err(DecodeError::UnsupportedVersion(2)));
        assert_eq!(
            frame_len(&[1, 0, 0, 16]),
            Err(DecodeError::InvalidMessageLength(16))
        );
        assert_eq!(
            frame_len(&[1, 0, 0, 22]),
            Err(DecodeError::InvalidMessageLength(22))
        );
        assert_eq!(
            frame_len(&[1, 0x10, 0, 4]),
            Err(DecodeError::InvalidMessageLength(0x10_0004))
        );
    }

    #[test]
    fn decode_rejects_truncated_and_trailing() {
        let bytes = dwr().to_bytes().unwrap();
        assert!(matches!(
            Message::decode(&bytes[..36]),
            Err(DecodeError::Truncated {
                needed: 44,
                available: 36
            })
        ));
        assert!(matches!(
            Message::decode(&bytes[..10]),
            Err(DecodeError::Truncated { needed: 20, .. })
        ));
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 4]);
        assert!(matches!(
            Message::decode(&long),
            Err(DecodeError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn error_bit_on_request_is_invalid_hdr_bits() {
        let mut bytes = dwr().to_bytes().unwrap();
        bytes[4] |= 0x20;
        let (message, fault) = Message::decode_partial(&bytes).unwrap();
        assert_eq!(fault, Some(DecodeError::InvalidHeaderBits { flags: 0xa0 }));
        assert_eq!(
            fault.unwrap().result_code(),
            crate::result_code::INVALID_HDR_BITS
        );
        assert_eq!(message.avps.len(), 2);
    }

    #[test]
    fn partial_decode_keeps_avps_before_the_fault() {
        let mut m = dwr();
        m.avps.insert(0, Avp::utf8(dict::SESSION_ID, "s;1"));
        let mut bytes = m.to_bytes().unwrap();
        // Corrupt the Origin-Realm length (last AVP, starts 12 bytes from the end) to 200.
        let at = bytes.len() - 12 + 7;
        bytes[at] = 200;
        let (partial, fault) = Message::decode_partial(&bytes).unwrap();
        assert_eq!(partial.session_id(), Some("s;1"));
        assert_eq!(partial.avps.len(), 2);
        let fault = fault.unwrap();
        assert_eq!(fault.result_code(), crate::result_code::INVALID_AVP_LENGTH);
        let failed = fault
            .failed_avp(crate::dictionary::Dictionary::standard())
            .unwrap();
        assert_eq!(failed.key(), dict::ORIGIN_REALM);
        assert!(
            failed.data.is_empty(),
            "DiameterIdentity has no minimum length"
        );
    }

    #[test]
    fn answer_to_copies_ids_session_and_proxy_info() {
        let proxy = |host: &str| {
            Avp::grouped(
                dict::PROXY_INFO,
                &[
                    Avp::identity(dict::PROXY_HOST, host),
                    Avp::octets(dict::PROXY_STATE, host.as_bytes().to_vec()),
                ],
            )
        };
        let mut req = Message::request(command::RE_AUTH, application::RX);
        req.flags.retransmitted = true;
        req.hop_by_hop = 7;
        req.end_to_end = 9;
        let req = req
            .with(Avp::identity(dict::ORIGIN_HOST, "pcrf"))
            .with(proxy("p1"))
            .with(Avp::utf8(dict::SESSION_ID, "pcscf;1;2"))
            .with(proxy("p2"));
        let ans = Message::answer_to(&req);
        assert!(!ans.flags.request && ans.flags.proxiable && !ans.flags.retransmitted);
        assert_eq!((ans.hop_by_hop, ans.end_to_end), (7, 9));
        assert_eq!(
            (ans.command_code, ans.application_id),
            (258, application::RX)
        );
        assert_eq!(ans.avps[0].key(), dict::SESSION_ID);
        assert_eq!(ans.avps[1], proxy("p1"));
        assert_eq!(ans.avps[2], proxy("p2"));
        assert_eq!(ans.avps.len(), 3);
    }

    #[test]
    fn command_code_keeps_24_bits_and_flags_round_trip() {
        for b in [0u8, 0x80, 0xc0, 0x90, 0x40, 0x20, 0xf0] {
            assert_eq!(CommandFlags::from_byte(b).to_byte(), b);
        }
        let mut m = Message::request(0x00ab_cdef, 0xdead_beef);
        m.flags.retransmitted = true;
        let back = Message::decode(&m.to_bytes().unwrap()).unwrap();
        assert_eq!(back.command_code, 0x00ab_cdef);
        assert_eq!(back.application_id, 0xdead_beef);
        assert!(back.flags.retransmitted);
    }

    #[test]
    fn oversize_message_is_refused() {
        let m = Message::request(1, 1).with(Avp::octets(AvpKey::base(1), vec![0; MAX_MESSAGE_LEN]));
        let mut out = vec![7];
        assert!(matches!(m.encode(&mut out), Err(EncodeError::TooLong(_))));
        assert_eq!(out, [7]);
    }
}
