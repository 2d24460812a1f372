//! Typed errors. Nothing in this crate panics on input; every refusal is one of these.

use crate::client::CallKey;

/// Session parameters the encoder cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// AF-Charging-Identifier must be the ICID; an empty one binds nothing.
    #[error("the AF charging identifier (ICID) is empty")]
    EmptyChargingId,
    /// Media-Component-Number 0 is reserved for AF signalling (TS 29.214 §5.3.17).
    #[error("media component number 0 is reserved for AF signalling")]
    ZeroComponentNumber,
    /// Two components with the same number.
    #[error("media component number {0} appears twice")]
    DuplicateComponentNumber(u32),
    /// More than the two Codec-Data AVPs TS 29.214 §5.3.16 allows.
    #[error("media component {component} has {count} Codec-Data values; at most 2 are allowed")]
    TooManyCodecData {
        /// The component.
        component: u32,
        /// How many were given.
        count: usize,
    },
    /// A flow whose two ends are of different address families.
    #[error("media component {component} has a flow mixing IPv4 and IPv6")]
    MixedAddressFamilies {
        /// The component.
        component: u32,
    },
    /// A signalling session describes at least one flow.
    #[error("a signalling session needs at least one flow")]
    NoSignallingFlow,
    /// Codec-Data must start with the media section's "m=" line (TS 29.214 §5.3.7).
    #[error("Codec-Data needs an m= line first")]
    CodecDataWithoutMLine,
}

/// Why an [`crate::RxClient`] call or input was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    /// `start` for a call that already has an Rx session.
    #[error("call {0:?} already has an Rx session")]
    CallExists(CallKey),
    /// No Rx session for the call (never started, or over).
    #[error("call {0:?} has no Rx session")]
    UnknownCall(CallKey),
    /// `update` while the session is being terminated.
    #[error("the Rx session of call {0:?} is terminating")]
    Terminating(CallKey),
    /// The session parameters cannot be encoded.
    #[error("invalid session parameters: {0}")]
    InvalidParams(#[from] ParamError),
    /// An answer was expected but the R bit is set.
    #[error("expected an answer, got a request (command {0})")]
    NotAnAnswer(u32),
    /// A request was expected but the R bit is clear.
    #[error("expected a request, got an answer (command {0})")]
    NotARequest(u32),
    /// The message has no usable Session-Id.
    #[error("message without a Session-Id")]
    MissingSessionId,
    /// No session of ours has this Session-Id (late answer after the session ended).
    #[error("no Rx session with Session-Id {0:?}")]
    UnknownSession(String),
    /// The answer failed validation (RFC 6733 §7); it is dropped and the request's own
    /// deadline decides.
    #[error("malformed answer ({result_code}): {detail}")]
    MalformedAnswer {
        /// What an error answer to it would have carried (5001, 5005, 5014...).
        result_code: u32,
        /// Why.
        detail: String,
    },
    /// An answer or failure for a known session that matches no outstanding request of it
    /// (a late AAA after the session moved on).
    #[error("call {call:?} has no command {command_code} outstanding")]
    NotOutstanding {
        /// The session's call.
        call: CallKey,
        /// The command.
        command_code: u32,
    },
}
