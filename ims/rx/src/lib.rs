//! Rx (3GPP TS 29.214), the Application Function side: the P-CSCF part of the gateway asks a
//! PCRF to authorize the QoS of each call's media, and hears back when bearers go away.
//! Sans-IO, on top of estuary-diameter; nothing here knows the gateway, SIP or SDP parsing.
//!
//! # Layering
//!
//! * [`media`]: the input model. A call is [`SessionParams`]: the ICID, the subscriber, the
//!   browser's address and one [`MediaComponent`] per m-line (type, direction, bandwidth,
//!   Codec-Data, the browser ⇄ gateway 5-tuples). The gateway maps its media plan onto it.
//! * `encode` (private): AAR and STR in the AVP order of the TS 29.214 §5.6 ABNF, with the
//!   SDP-to-Rx mapping of TS 29.213 §6.2 (Flow-Status from the direction, Flow-Description
//!   filters from the 5-tuple).
//! * [`client`]: [`RxClient`], one Rx session per call ([`CallKey`]) as a state machine:
//!   initial AAR, update AARs, STR; RAR and ASR from the PCRF; its own answer deadlines;
//!   events and counters.
//! * [`rules`]: the required AVPs of the eight Rx commands for estuary-diameter's validator.
//! * [`pcrf`]: TEST FACILITY, a small PCRF that answers AARs and STRs and sends RAR/ASR.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use estuary_rx::media::*;
//! use estuary_rx::{CallKey, RxClient, RxConfig, RxEvent, TerminationCause};
//! use estuary_rx::pcrf::Pcrf;
//!
//! let mut rx = RxClient::new(RxConfig::new("pcscf.example.org", "example.org", "example.org"), 1 << 32);
//! let mut pcrf = Pcrf::new("pcrf.example.org", "example.org");
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let audio = MediaComponent {
//!     number: 1,
//!     media_type: MediaType::Audio,
//!     direction: Direction::SendRecv,
//!     bandwidth: Bandwidth { ul: Some(64_000), dl: Some(64_000) },
//!     codec_data: vec![],
//!     flows: vec![IpFlow::udp("192.0.2.1:49152".parse().unwrap(), "198.51.100.7:40000".parse().unwrap())],
//!     removed: false,
//! };
//! let params = SessionParams {
//!     af_charging_id: "icid-1".into(),
//!     subscription: None,
//!     framed_ip: "192.0.2.1".parse().unwrap(),
//!     af_application_id: None,
//!     components: vec![audio],
//!     service_urn: None,
//! };
//! rx.start(now, CallKey(7), params).unwrap();
//! let (call, aar) = rx.poll_request().unwrap();
//! assert_eq!(call, CallKey(7));
//! let aaa = pcrf.handle_request(&aar).unwrap();
//! rx.handle_answer(now, &aaa).unwrap();
//! assert!(matches!(rx.poll_event(), Some(RxEvent::Authorized { call: CallKey(7), .. })));
//! rx.end(now, CallKey(7), TerminationCause::Logout).unwrap();
//! let (_, str) = rx.poll_request().unwrap();
//! rx.handle_answer(now, &pcrf.handle_request(&str).unwrap()).unwrap();
//! assert_eq!(rx.poll_event(), Some(RxEvent::Terminated { call: CallKey(7) }));
//! ```

pub mod client;
mod encode;
pub mod error;
pub mod media;
pub mod pcrf;
pub mod rules;
pub mod values;

pub use client::{CallKey, ResultCounts, RxClient, RxConfig, RxCounters, RxEvent, SessionStatus};
pub use error::{ParamError, RxError};
pub use media::{
    codec_data, Bandwidth, Direction, FlowStatus, IpFlow, MediaComponent, MediaType, SdpRole,
    SdpSource, SessionParams, SignallingParams, Subscription, SubscriptionKind, UplinkFilter,
};
pub use rules::{rx_validator, RX_APPLICATION, RX_RULES};
pub use values::{experimental, AarKind, AbortCause, FinalUnitAction, SpecificAction, TerminationCause};
