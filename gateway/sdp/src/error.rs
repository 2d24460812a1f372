//! What can go wrong with an SDP body, and the SIP answer each failure deserves.

/// Why an SDP body was refused. [`SdpError::status`] is the SIP status the B2BUA sends back to
/// the side that sent the body; `reason` goes into the reason phrase or a Warning header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SdpError {
    pub kind: ErrorKind,
    pub reason: String,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not SDP, or SDP that breaks RFC 8866 syntax (400).
    Malformed,
    /// Valid SDP the gateway cannot accept: no usable stream, no common or transcodable codec,
    /// a WebRTC offer without DTLS fingerprint, an unsupported SRTP suite (488).
    NotAcceptable,
    /// The media layer has no ports or transcoding channels left (503, try again later).
    Exhausted,
    /// An answer that does not fit the offer (m-line count, order), or an offer/answer call
    /// out of sequence (the B2BUA treats it like 488 and ends the exchange).
    Mismatch,
}

impl SdpError {
    pub fn malformed(reason: impl Into<String>) -> Self {
        SdpError { kind: ErrorKind::Malformed, reason: reason.into() }
    }

    pub fn not_acceptable(reason: impl Into<String>) -> Self {
        SdpError { kind: ErrorKind::NotAcceptable, reason: reason.into() }
    }

    /// A resource the call needs is used up (ports, transcoding channels): 503.
    pub fn exhausted(reason: impl Into<String>) -> Self {
        SdpError { kind: ErrorKind::Exhausted, reason: reason.into() }
    }

    pub fn mismatch(reason: impl Into<String>) -> Self {
        SdpError { kind: ErrorKind::Mismatch, reason: reason.into() }
    }

    /// The SIP status code for this failure (RFC 3261 §21: 400, 488, 503).
    pub fn status(&self) -> u16 {
        match self.kind {
            ErrorKind::Malformed => 400,
            ErrorKind::NotAcceptable | ErrorKind::Mismatch => 488,
            ErrorKind::Exhausted => 503,
        }
    }
}
