//! SIP message syntax (RFC 3261 §7, §19, §20, §25): faithful parse and print, URIs, stream
//! framing. No state, no I/O, no clock.
//!
//! # Driving it
//!
//! ```text
//! bytes ──► StreamFramer (TCP/TLS only) ──► Message::parse ──► Request::validate ──► layers above
//!                                                │ Err                │ Err
//!                                                ▼                    ▼
//!                              salvage_for_400 / salvage_response: the 400/505 to send back
//! ```
//!
//! 1. On a stream transport, push bytes into a [`StreamFramer`] and take [`Frame`]s out; on UDP
//!    or WebSocket (RFC 7118 §5: one message per WebSocket message) the datagram is the frame.
//! 2. [`Message::parse`] checks syntax only: the start line, the header lines and
//!    Content-Length framing. Header values are stored raw and parsed on demand by the typed
//!    accessors on [`Headers`] (`vias()`, `from()`, `cseq()`...), so one odd header nobody asks
//!    about cannot fail a message, and everything prints back as received.
//! 3. [`Request::validate`] checks what a UAS must check before acting (mandatory headers present
//!    once and parseable, CSeq method, Request-URI headers, ...). [`Response::validate`] does
//!    the same for responses, which are dropped, never answered, when they fail.
//! 4. Every failure is a [`ParseError`] whose [`ParseErrorKind`] names its wire answer
//!    ([`ParseErrorKind::status_code`]): drop, 400 (with `reason` as the phrase), 505 or 416
//!    (STYLE R5). [`salvage_for_400`] builds the 400 from the raw lines of a request too broken
//!    to parse; [`response_to`] builds any response to a parsed request (RFC 3261 §8.2.6.2).
//! 5. [`Message::to_bytes`] prints header names, values and order as stored, the reason phrase
//!    exactly, and always a correct Content-Length.
//!
//! # What it accepts
//!
//! Everything RFC 4475 §3.1.1 calls valid (the conformance crate runs all 49 torture messages):
//! LWS and folding anywhere RFC 3261 allows it, compact header names (§7.3.3), escaped user parts
//! kept escaped, unknown methods, schemes, transports and headers, empty and UTF-8 reason
//! phrases, binary bodies. Leniencies beyond the grammar, each harmless to the layers above:
//! bare LF line ends, `#` in user parts, `_` in host names, any visible ASCII in a Call-ID,
//! `SIP/2.0 100` without the second SP.
//!
//! # What it does not do
//!
//! No transaction or dialog state, no URI comparison (§19.1.4), no %-decoding, no SDP. It never
//! panics on input: readers are bounds-checked, parsing is linear in the input and nothing
//! recurses on it (STYLE R6; `tests/hostile.rs` throws mutated torture messages at it).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cseq;
mod error;
pub mod framing;
mod header;
mod message;
mod method;
mod name_addr;
mod param;
mod scan;
mod uri;
mod via;

pub use cseq::CSeq;
pub use error::{ParseError, ParseErrorKind};
pub use framing::{Frame, FramingError, StreamFramer};
pub use header::{canonical_name, names_match, Header, Headers};
pub use message::{response_to, salvage_for_400, salvage_response, Message, Request, Response};
pub use method::Method;
pub use name_addr::{ContactValue, NameAddr};
pub use param::Param;
pub use uri::{Scheme, Uri};
pub use via::{Via, BRANCH_MAGIC_COOKIE};
