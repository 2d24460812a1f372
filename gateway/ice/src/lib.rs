//! ICE-lite agent (RFC 8445 §2.5, controlled role) with consent freshness (RFC 7675), sans-IO,
//! STUN by stun-rs.
//!
//! The gateway answers browsers with `a=ice-lite`, its own ufrag/pwd and host candidates. One
//! [`IceLite`] serves one BUNDLE transport. The browser, a full agent and always controlling,
//! sends STUN Binding requests; the agent checks and answers them, selects the pair the browser
//! nominates, and watches that the browser keeps checking it.
//!
//! # Driving it
//!
//! ```text
//! let mut ice = IceLite::new(IceConfig::new(Credentials::generate(&mut rng)), now);
//! loop {
//!     // 1. a datagram arrived on the web-side socket
//!     if is_stun(data) { ice.handle_input(now, Input::Receive { local, source, data })?; }
//!     // 2. or the deadline passed
//!     ice.handle_timeout(now);
//!     // 3. drain outputs: after ANY call that takes `&mut self`, until None
//!     while let Some(out) = ice.poll_output() {
//!         match out {
//!             Output::Transmit(t) => socket(t.from).send_to(&t.data, t.to),
//!             Output::Event(IceEvent::Nominated { local, remote }) => media.send(local, remote),
//!             Output::Event(IceEvent::ConsentExpired { .. }) => media.stop_sending(),
//!             Output::Event(IceEvent::Failed { .. }) => call.end(),
//!         }
//!     }
//!     // 4. sleep until the next deadline, re-read after every drain
//!     let wake = ice.poll_timeout();
//! }
//! ```
//!
//! The drain rule: after [`IceLite::handle_input`], [`IceLite::handle_timeout`],
//! [`IceLite::restart`] or [`IceLite::set_remote_credentials`], call [`IceLite::poll_output`]
//! until it returns `None`, then re-read [`IceLite::poll_timeout`].
//!
//! Queries for the media layer: [`IceLite::selected`] (where to send; `None` means do not send),
//! [`IceLite::is_consented`] (accept DTLS/SRTP only from checked sources),
//! [`IceLite::local_credentials`] (for the SDP).
//!
//! # Time
//!
//! Nothing here reads a clock: `now` comes with every call, and timers exist only as the
//! deadline [`IceLite::poll_timeout`] returns. A deadline is reached when `now >= deadline`.
//!
//! - **Initial** ([`IceSettings::initial_timeout`], 30 s): from creation until the first
//!   nomination; expiry emits [`IceEvent::Failed`] with [`FailReason::NoNomination`].
//! - **Consent** ([`IceSettings::consent_timeout`], 30 s, RFC 7675 §5.1): a lite agent sends no
//!   checks, so it applies consent from the answering side. The browser sends a Binding request
//!   on the selected pair about every 5 s; each valid one (authenticated, no role conflict,
//!   on exactly the selected local and remote address) restarts the timer. Expiry emits
//!   [`IceEvent::ConsentExpired`].
//! - **Teardown** ([`IceSettings::teardown_after`], 0 s): from consent expiry; a new nomination
//!   in between revives the call, otherwise [`IceEvent::Failed`] with
//!   [`FailReason::ConsentLost`].
//!
//! # Not done here
//!
//! - No checks, no candidate gathering, no remote candidate list: a lite agent needs none
//!   (RFC 8445 §2.5). TCP candidates (RFC 6544) are not supported.
//! - No keepalives (RFC 8445 §11): media and RTCP on the selected pair serve.
//! - No rate limiting of error responses; the driver may cap STUN per source.
//!
//! # Panics
//!
//! None on input: every datagram is bounds-checked and decoded by stun-rs into a `Result`. The
//! one `expect` (in [`Credentials::generate`]) guards an internal invariant.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agent;
mod credentials;
mod stun;

pub use agent::{
    FailReason, IceConfig, IceCounters, IceError, IceEvent, IceLite, IceSettings, IceState, Input,
    Output, Timer, Transmit,
};
pub use credentials::{
    Credentials, CredentialsError, CREDENTIAL_MAX_LEN, PWD_MIN_LEN, UFRAG_MIN_LEN,
};
pub use stun::{is_stun, username_ufrag};
