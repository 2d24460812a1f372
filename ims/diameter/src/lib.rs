//! The Diameter base protocol (RFC 6733) as a sans-IO engine: codec, dictionary, validation,
//! the peer connection state machine and a failover set of peers. The Rx application
//! (TS 29.214, toward a PCRF) builds on it in its own crate.
//!
//! # Layering
//!
//! * [`avp`] and [`message`]: the wire format. An [`Avp`] is header fields plus raw data;
//!   typed constructors build it and typed accessors read it, returning `Result`. A
//!   [`Message`] is the header plus AVPs in order. Codes are open `u32`s: unknown command
//!   codes, applications and AVPs decode and re-encode unchanged. Decoding uses a bounded
//!   reader and never panics; every fault is a [`DecodeError`] that knows its RFC 6733 §7
//!   Result-Code and Failed-AVP. [`frame_len`] cuts messages out of a TCP byte stream.
//! * [`dictionary`]: static, sorted tables of AVP definitions (base protocol, the IETF AVPs
//!   Rx reuses, the Rx AVPs of TS 29.214 §5.3) with name, data type and M-bit rule, and
//!   constants for their keys (`dictionary::SESSION_ID`, `dictionary::MEDIA_TYPE`...).
//! * [`validate`]: RFC 6733 §4.1/§7 checks of a received message against the dictionary and
//!   per-command required AVPs (table-driven, extensible by an application crate), yielding
//!   the error answer (5001, 5005, 5014, 3xxx with the E bit...).
//! * [`peer`]: one connection to one peer: CER/CEA, DWR/DWA watchdog (RFC 3539), DPR/DPA,
//!   request/answer matching with a Tx timer, reconnection with back-off.
//! * [`peers`]: an ordered [`PeerSet`] (first = primary) with failover of requests to the
//!   next open peer with the T flag (§5.5.4) and duplicate detection of requests we receive.
//!
//! # The run loop
//!
//! Nothing here does I/O, reads a clock or draws ambient randomness. Time enters as
//! `now: Instant`; randomness (End-to-End identifier low bits, watchdog jitter) is seeded from
//! an injected `rand::RngCore`; the wall-clock start time for End-to-End identifiers is a
//! constructor argument. A driver owns the TCP socket and a timer and loops:
//!
//! 1. push one input: [`Peer::handle_connected`], [`Peer::handle_connect_failed`],
//!    [`Peer::handle_bytes`] (stream data, cut anywhere), [`Peer::handle_closed`],
//!    [`Peer::handle_timeout`], or an application call ([`Peer::send_request`],
//!    [`Peer::send_answer`], [`Peer::disconnect`]);
//! 2. drain [`Peer::poll_transmit`] until `None`, performing each [`Transmit`] in order:
//!    `Connect` (open TCP), `Bytes` (write them), `Disconnect` (close after writing what came
//!    before);
//! 3. drain [`Peer::poll_event`] until `None`;
//! 4. read [`Peer::poll_timeout`] and arm the timer; call `handle_timeout` when it fires.
//!
//! Draining fully after *every* input matters: the deadline from step 4 is only correct once
//! the queues are empty, and transmits must reach the socket in the order they were queued.
//! [`PeerSet`] has the same shape with a peer index on inputs, transmits and events.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use estuary_diameter::{Application, Peer, PeerConfig, Transmit};
//!
//! let mut config = PeerConfig::new("pcscf.example.org", "example.org");
//! config.host_ip_addresses.push("192.0.2.10".parse().unwrap());
//! config.applications.push(Application::Auth { id: 16_777_236, vendor: Some(10_415) });
//! use rand::SeedableRng;
//! let mut rng = rand::rngs::StdRng::seed_from_u64(7);
//! let mut peer = Peer::new(config, 1_700_000_000, &mut rng);
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! peer.connect(now);
//! assert_eq!(peer.poll_transmit(), Some(Transmit::Connect));
//! peer.handle_connected(now);
//! assert!(matches!(peer.poll_transmit(), Some(Transmit::Bytes(cer)) if cer[0] == 1));
//! assert!(peer.poll_timeout().unwrap() <= now + Duration::from_secs(10));
//! ```

pub mod avp;
pub mod dictionary;
pub mod error;
pub mod message;
pub mod peer;
pub mod peers;
pub mod validate;

pub use avp::{Avp, AvpIter, AvpKey};
pub use dictionary::{AvpDef, DataType, Dictionary, MBit};
pub use error::{AvpHeader, DecodeError, EncodeError, ValueError};
pub use message::{frame_len, CommandFlags, Header, Message, MAX_MESSAGE_LEN};
pub use peer::{
    Application, Backoff, DisconnectCause, DownReason, EndToEndIds, Peer, PeerConfig, PeerEvent,
    PeerInfo, PeerStatus, RequestId, SendError, Transmit,
};
pub use peers::{FailureCause, PeerSet, PeerSetEvent, SetRequestId};
pub use validate::{Accepted, CommandRule, Rejection, Validator};

/// Result-Code values (RFC 6733 §7.1).
pub mod result_code {
    /// 2001 DIAMETER_SUCCESS.
    pub const SUCCESS: u32 = 2001;
    /// 2002 DIAMETER_LIMITED_SUCCESS.
    pub const LIMITED_SUCCESS: u32 = 2002;
    /// 3001 DIAMETER_COMMAND_UNSUPPORTED.
    pub const COMMAND_UNSUPPORTED: u32 = 3001;
    /// 3002 DIAMETER_UNABLE_TO_DELIVER.
    pub const UNABLE_TO_DELIVER: u32 = 3002;
    /// 3003 DIAMETER_REALM_NOT_SERVED.
    pub const REALM_NOT_SERVED: u32 = 3003;
    /// 3004 DIAMETER_TOO_BUSY.
    pub const TOO_BUSY: u32 = 3004;
    /// 3005 DIAMETER_LOOP_DETECTED.
    pub const LOOP_DETECTED: u32 = 3005;
    /// 3006 DIAMETER_REDIRECT_INDICATION.
    pub const REDIRECT_INDICATION: u32 = 3006;
    /// 3007 DIAMETER_APPLICATION_UNSUPPORTED.
    pub const APPLICATION_UNSUPPORTED: u32 = 3007;
    /// 3008 DIAMETER_INVALID_HDR_BITS.
    pub const INVALID_HDR_BITS: u32 = 3008;
    /// 3009 DIAMETER_INVALID_AVP_BITS.
    pub const INVALID_AVP_BITS: u32 = 3009;
    /// 3010 DIAMETER_UNKNOWN_PEER.
    pub const UNKNOWN_PEER: u32 = 3010;
    /// 4001 DIAMETER_AUTHENTICATION_REJECTED.
    pub const AUTHENTICATION_REJECTED: u32 = 4001;
    /// 4002 DIAMETER_OUT_OF_SPACE.
    pub const OUT_OF_SPACE: u32 = 4002;
    /// 4003 ELECTION_LOST.
    pub const ELECTION_LOST: u32 = 4003;
    /// 5001 DIAMETER_AVP_UNSUPPORTED.
    pub const AVP_UNSUPPORTED: u32 = 5001;
    /// 5002 DIAMETER_UNKNOWN_SESSION_ID.
    pub const UNKNOWN_SESSION_ID: u32 = 5002;
    /// 5003 DIAMETER_AUTHORIZATION_REJECTED.
    pub const AUTHORIZATION_REJECTED: u32 = 5003;
    /// 5004 DIAMETER_INVALID_AVP_VALUE.
    pub const INVALID_AVP_VALUE: u32 = 5004;
    /// 5005 DIAMETER_MISSING_AVP.
    pub const MISSING_AVP: u32 = 5005;
    /// 5006 DIAMETER_RESOURCES_EXCEEDED.
    pub const RESOURCES_EXCEEDED: u32 = 5006;
    /// 5007 DIAMETER_CONTRADICTING_AVPS.
    pub const CONTRADICTING_AVPS: u32 = 5007;
    /// 5008 DIAMETER_AVP_NOT_ALLOWED.
    pub const AVP_NOT_ALLOWED: u32 = 5008;
    /// 5009 DIAMETER_AVP_OCCURS_TOO_MANY_TIMES.
    pub const AVP_OCCURS_TOO_MANY_TIMES: u32 = 5009;
    /// 5010 DIAMETER_NO_COMMON_APPLICATION.
    pub const NO_COMMON_APPLICATION: u32 = 5010;
    /// 5011 DIAMETER_UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: u32 = 5011;
    /// 5012 DIAMETER_UNABLE_TO_COMPLY.
    pub const UNABLE_TO_COMPLY: u32 = 5012;
    /// 5013 DIAMETER_INVALID_BIT_IN_HEADER.
    pub const INVALID_BIT_IN_HEADER: u32 = 5013;
    /// 5014 DIAMETER_INVALID_AVP_LENGTH.
    pub const INVALID_AVP_LENGTH: u32 = 5014;
    /// 5015 DIAMETER_INVALID_MESSAGE_LENGTH.
    pub const INVALID_MESSAGE_LENGTH: u32 = 5015;
    /// 5016 DIAMETER_INVALID_AVP_BIT_COMBO.
    pub const INVALID_AVP_BIT_COMBO: u32 = 5016;
    /// 5017 DIAMETER_NO_COMMON_SECURITY.
    pub const NO_COMMON_SECURITY: u32 = 5017;

    /// 2xxx: success (RFC 6733 §7.1.2).
    pub fn is_success(code: u32) -> bool {
        (2000..3000).contains(&code)
    }

    /// 3xxx: protocol error, answered with the E bit (RFC 6733 §7.1.3).
    pub fn is_protocol_error(code: u32) -> bool {
        (3000..4000).contains(&code)
    }
}
