//! The engine's boundary: what a driver feeds in and what it must carry out.
//!
//! The driver (the tokio daemon, or the replay harness) owns sockets and the clock. It calls
//! [`crate::B2bua::handle_input`] for every event, then drains [`crate::B2bua::poll_output`]
//! until it returns `None`, then sleeps until [`crate::B2bua::poll_timeout`] (or the next
//! input) and feeds [`Input::Timeout`].

use std::net::SocketAddr;
use std::time::Instant;

/// One transport connection the driver owns: a WebSocket (web side) or a TCP connection
/// (IMS side). Ids are assigned by the driver and never reused within a process lifetime.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Which network the traffic belongs to. Nothing learned on one side is written to the other.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// Browsers: SIP over WebSocket (RFC 7118).
    Web,
    /// The IMS core: SIP over UDP or TCP.
    Ims,
}

/// SIP transport protocol of a flow, as written in Via (`SIP/2.0/<T>`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    /// SIP over TLS toward the core (RFC 3261 §26.3.1).
    Tls,
    Ws,
    Wss,
}

impl Transport {
    /// The Via transport token (RFC 3261 §20.42, RFC 7118 §5.2).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// Reliable transports get no retransmissions (RFC 3261 §17.1.1.2).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// Where a message came from, or must go to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// A WebSocket connection from a browser.
    Web { conn: ConnId },
    /// A UDP datagram or TCP connection on the IMS side. For TCP the driver reuses an open
    /// connection to `remote` or opens one (RFC 3261 §18.1.1, §18.2.2).
    Ims { transport: Transport, remote: SocketAddr },
}

/// Something that happened at the driver.
#[derive(Debug)]
pub enum Input<'a> {
    /// A connection was accepted (WebSocket after the `sip` subprotocol upgrade) or opened.
    ConnectionOpened { conn: ConnId, side: Side, transport: Transport, local: SocketAddr, remote: SocketAddr },
    /// One whole SIP message: a WebSocket message, a UDP datagram, or one message framed out of
    /// a TCP stream by Content-Length.
    Receive { flow: Flow, conn: Option<ConnId>, remote: SocketAddr, data: &'a [u8] },
    /// The connection is gone (close frame, reset, idle timeout).
    ConnectionClosed { conn: ConnId },
    /// The driver could not deliver to an IMS destination (connect refused, ICMP, TCP reset).
    Unreachable { flow: Flow },
    /// The time returned by `poll_timeout` has come.
    Timeout,
    /// The media plane gave up on a call (DTLS failure, lost ICE consent, no media): end it
    /// with BYE on both legs, each carrying `cause` as a Reason header.
    MediaFailed { call: u64, reason: &'a str, cause: ReleaseCause },
    /// The media plane needs a keyframe from the IMS leg's video sender, which negotiated no
    /// RTCP keyframe request (no PLI, no FIR): ask in SIP, with an INFO carrying RFC 5168's
    /// picture_fast_update.
    PictureFastUpdate { call: u64 },
    /// The policy function (Rx toward the PCRF) decided about a call's media.
    Policy { call: u64, decision: PolicyDecision<'a> },
    /// The PCRF reported the bearer under a browser connection's signalling gone (loss or
    /// release of bearer, or an abort, on its AF_SIGNALLING session). TS 23.228 §5.2.2.6 asks
    /// the P-CSCF to release that UE's sessions and to refuse requests toward it until it
    /// registers again or its registration expires: its calls end with BYE (Reason
    /// RELEASE_CAUSE 3) and its bindings answer 480 until a REGISTER refreshes them.
    SignallingLost { conn: ConnId },
    /// The process is stopping (SIGINT, or a drain that ran out of time): every call is
    /// ended now, BYE on answered legs and 487/CANCEL on unanswered ones, so neither side is
    /// left holding a dialog.
    Shutdown,
    /// The cluster's shared state answered the engine's [`Output::StateQuery`] number `query`
    /// (see [`crate::cluster`]).
    StateAnswer { query: u64, answer: crate::cluster::StateAnswer },
    /// Another node of the cluster took over the registration with this binding token (its
    /// browser came back there) and asks for its calls ([`Output::HandOverWanted`]). Once the
    /// shared state confirms that a live node other than this one holds it, its answered
    /// calls are handed over and the binding forgotten here.
    HandOverWanted { token: &'a str },
    /// The process is stopping after a drain that ran out, and another node of the cluster
    /// is up: answered calls are handed over rather than ended (their last copy shared and
    /// marked for any node to take, their media stopped, no BYE); their browsers reconnect
    /// to another node, which takes them over. What is not answered is left for
    /// [`Input::Shutdown`].
    HandOver,
}

/// A registration as a cluster shares it (`B2buaConfig::share_state`): what another
/// node needs to know of it. No secret is in it (the digest exchange is the core's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedRegistration {
    /// The token of the gateway's Contact and Path toward IMS: the binding's name.
    pub token: String,
    /// The address-of-record.
    pub aor: String,
    /// RFC 5626 `+sip.instance` and `reg-id` of the browser's Contact.
    pub instance: Option<String>,
    pub reg_id: Option<String>,
    /// The browser's Contact, as it sent it.
    pub web_contact: String,
    /// The Call-ID of the browser's REGISTER dialog: a browser that reconnects to another
    /// node goes on with it (JsSIP keeps it for the life of the page).
    pub web_call_id: String,
    /// The Service-Route the registrar returned (RFC 3608).
    pub service_route: Vec<String>,
    /// The REGISTER dialog toward IMS: Call-ID and last CSeq.
    pub ims_call_id: String,
    pub ims_cseq: u32,
    /// The browser's address.
    pub source: std::net::IpAddr,
    /// Seconds the registrar granted.
    pub expires_in: u32,
}

/// An answered call as a cluster shares it (`B2buaConfig::share_state`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedCall {
    pub call: u64,
    /// Both dialogs, the caller's first (their flows are this node's own).
    pub legs: [crate::call::Leg; 2],
    /// The media ports the call holds on this node.
    pub ports: Vec<u16>,
    pub icid: Option<String>,
    /// The token of the browser registration the call runs under: a browser that reconnects
    /// elsewhere finds its calls by it.
    pub binding: Option<String>,
    /// The IMS side's last SDP, without keys (see `SdpSession::ims_remote_without_keys`).
    pub ims_sdp: Option<String>,
    /// The call's Rx session (TS 29.214), when the driver's policy function opened one: the
    /// engine leaves it empty and carries it through a take-over
    /// ([`Output::CallAdopted`]).
    pub rx_session: Option<String>,
    /// When the caller's INVITE arrived and when the call was answered, on the node that set
    /// it up: a node that takes the call over writes the whole call's record.
    pub started: std::time::Instant,
    pub answered: std::time::Instant,
    /// This node answered the call or took it over just now: the copy replaces any other.
    /// Otherwise it refreshes this node's copy, and is dropped when the call is no longer
    /// this node's there (another node took it over, or it ended) - a write that Redis got
    /// late never takes a call back.
    pub claim: bool,
    /// The last copy of a call this node handed over ([`Input::HandOver`],
    /// [`Input::HandOverWanted`]): any node may take it, though this node is alive.
    pub handed_over: bool,
}

/// A browser connection's signalling path, for the policy function (Rx AF_SIGNALLING,
/// TS 29.214 §4.4.5a): reported only with `B2buaConfig::signalling_policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignallingPath {
    /// The connection now carries an active, reachable registration (its first).
    Up {
        conn: ConnId,
        /// The registered public identity (the first binding's AOR).
        identity: String,
        /// The browser's end of the connection, as the gateway's socket sees it.
        browser: SocketAddr,
        /// The gateway's end (its WebSocket listener).
        local: SocketAddr,
    },
    /// It no longer does: its last registration expired or was removed, the PCRF reported
    /// the path lost, or the connection closed.
    Down { conn: ConnId },
}

/// Who and what a call's media belongs to, for the policy function (see
/// `B2bua::policy_subject`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySubject {
    /// AF-Charging-Identifier: the call's ICID, else the IMS dialog's Call-ID.
    pub charging_id: String,
    /// The browser's registered public identity (its AOR), if it registered.
    pub identity: Option<String>,
    /// The browser's address as the gateway saw it (its WebSocket peer, or the client a
    /// trusted proxy reported).
    pub browser_ip: Option<std::net::IpAddr>,
    /// The side that placed the call.
    pub caller: Side,
}

/// What the PCRF (through the core's Rx client) said about a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyDecision<'a> {
    /// The media is authorized: an answer held for it (`B2buaConfig::policy_gate`) goes on.
    Authorized,
    /// The media was refused, or the PCRF did not answer in time, and policy is closed: an
    /// unanswered call is refused toward the caller (503 or 580, with a Warning giving
    /// `reason`) and its callee's side ended; an answered one is ended with BYE.
    Refused { reason: &'a str },
    /// The access bearer is gone (RAR with loss or release of bearer, TS 29.214 §4.4.6.2):
    /// BYE on both legs, Reason RELEASE_CAUSE 3.
    BearerLost,
    /// The PCRF aborted the session (ASR, TS 29.214 §4.4.6.1): the IP-CAN session, and every
    /// bearer of it, is gone. BYE on both legs, Reason RELEASE_CAUSE 3.
    Aborted,
    /// The subscriber's credit for the media ran out (RAR with INDICATION_OF_OUT_OF_CREDIT,
    /// TS 29.214 §4.4.6.3): the PCEF stops, redirects or restricts the flows, so the call is
    /// ended with BYE on both legs (no RELEASE_CAUSE fits; none is sent).
    OutOfCredit,
}

/// Why the gateway itself ends a call, sent in the BYEs' Reason header (RFC 3326) with the
/// RELEASE_CAUSE protocol of 3GPP TS 24.229 §7.2A.18, which IMS cores log and charge on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseCause {
    /// No RTP/RTCP for the configured time (cause 2).
    RtpTimeout,
    /// The media path is gone: ICE consent lost, DTLS failed or closed (cause 3).
    MediaBearerLoss,
}

impl ReleaseCause {
    /// The Reason header value.
    pub fn reason_value(self) -> &'static str {
        match self {
            ReleaseCause::RtpTimeout => "RELEASE_CAUSE;cause=2;text=\"RTP/RTCP time-out\"",
            ReleaseCause::MediaBearerLoss => "RELEASE_CAUSE;cause=3;text=\"Media bearer loss\"",
        }
    }
}

/// Something the driver must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Send one SIP message. On WebSocket it is one text frame.
    Transmit { flow: Flow, data: Vec<u8> },
    /// Close a connection (e.g. after a policy violation).
    Close { conn: ConnId },
    /// A call's media plan was settled or changed by an offer/answer exchange: the media plane
    /// (re)configures the call's session from it.
    Media { call: u64, plan: Box<estuary_sdp::MediaPlan> },
    /// The call ended: the media plane drops its session and sockets.
    MediaEnd { call: u64 },
    /// A call was created: the Call-IDs of its two dialogs (browser leg, IMS leg), so the
    /// driver can tie messages of either leg to the call (per-call recording).
    CallStarted { call: u64, web_call_id: String, ims_call_id: String },
    /// The call is gone (answered or not); nothing more belongs to it. The summary is what
    /// signalling knows for the call's record.
    CallEnded { call: u64, summary: Box<CallSummary> },
    /// A browser connection's signalling path came up or went down.
    SignallingPath(SignallingPath),
    /// A registration became active or was refreshed (share it).
    RegistrationShared(Box<SharedRegistration>),
    /// A shared registration is gone (expired, removed, deregistered).
    RegistrationRemoved { token: String, web_call_id: String },
    /// A call was answered (share it).
    CallShared(Box<SharedCall>),
    /// A call another node carried was taken over (see [`crate::cluster`]): its Rx session
    /// there, if it had one, is for the policy function to release.
    CallAdopted { call: u64, rx_session: Option<String> },
    /// A shared call ended; `dialogs` are its two Call-IDs (the shared state names the call
    /// by them too).
    CallUnshared { call: u64, dialogs: [String; 2], binding: Option<String> },
    /// Leg `from` asked in SIP (an INFO with RFC 5168's picture_fast_update) for a keyframe of
    /// the video it receives; the gateway answered it and the media plane provides one.
    KeyframeRequested { call: u64, from: Side },
    /// A message names a registration this node does not hold: look it up in the cluster's
    /// shared state and answer with [`Input::StateAnswer`] (see [`crate::cluster`]).
    StateQuery { query: u64, ask: crate::cluster::StateQuery },
    /// This node took over the registration with this binding token while another node still
    /// carries calls of it (or still announces itself): ask the cluster's nodes to hand them
    /// over (each answers with its own [`Input::HandOverWanted`]).
    HandOverWanted { token: String },
}

/// What the signalling engine knows of a finished call, for its record (the driver adds the
/// media plane's report and wall-clock times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSummary {
    /// The side that placed the call.
    pub caller: Side,
    /// The caller's URI (From) and the callee's (To), without display names or tags.
    pub from: String,
    pub to: String,
    pub web_call_id: String,
    pub ims_call_id: String,
    /// The caller's INVITE arrived.
    pub started: Instant,
    /// The callee's 2xx was relayed to the caller.
    pub answered: Option<Instant>,
    pub ended: Instant,
    /// The final response the caller's INVITE got: 200 when answered; `None` when the caller
    /// was gone before one was due.
    pub status: Option<u16>,
    pub reason: EndReason,
    /// A video stream was refused because the transcoder had no room for it
    /// (`transcoder.video_overload = "drop_video"`): the call went on without video.
    pub video_dropped: bool,
    /// A media plan reached the media plane, so a media report follows (MediaEnd).
    pub media: bool,
    /// The IMS Charging Identifier (P-Charging-Vector icid-value): generated by the gateway for
    /// browser calls, the core's for calls from IMS; correlates this record with the core's.
    pub icid: Option<String>,
}

/// Why a call ended, for its record. The first cause wins: a BYE that follows the gateway's
/// own decision does not overwrite it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// A BYE from that side.
    Bye(Side),
    /// The caller gave up before the answer (CANCEL).
    Cancelled,
    /// The callee refused with this final response.
    Rejected(u16),
    /// No final response came, or the transport failed: the gateway answered the caller
    /// with this status (408, 503).
    NoAnswer(u16),
    /// An offer or answer could not be interworked (the status sent, 488 or 503).
    SdpRefused(u16),
    /// The caller never acknowledged the 2xx (RFC 3261 §13.3.1.4).
    NoAck,
    /// The media plane gave up.
    Media(ReleaseCause),
    /// The browser's WebSocket closed while the call was up or being set up.
    ConnectionLost,
    /// A session timer was negotiated (RFC 4028) and no refresh came before it ran out.
    SessionExpired,
    /// Policy is closed and the PCRF refused the media (or did not answer): the status the
    /// caller got (503, 580), or none when the call was already answered.
    PolicyRefused(Option<u16>),
    /// The PCRF aborted the Rx session (ASR).
    PolicyAborted,
    /// The PCRF reported the subscriber out of credit for the call's media.
    OutOfCredit,
    /// The gateway was stopping ([`Input::Shutdown`]).
    Shutdown,
    /// The PCRF reported the browser's signalling path lost ([`Input::SignallingLost`]).
    SignallingLost,
    /// A call taken over from a node that died could not get its media back: a leg refused
    /// the re-INVITE that moves it here (its status).
    ReanchorFailed(u16),
    /// The call goes on at another node of the cluster, which took it over from this one
    /// ([`Input::HandOver`], [`Input::HandOverWanted`]): this node's record covers its part.
    HandedOver,
}

impl EndReason {
    /// A stable token for records and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Bye(Side::Web) => "bye_from_web",
            EndReason::Bye(Side::Ims) => "bye_from_ims",
            EndReason::Cancelled => "cancelled",
            EndReason::Rejected(_) => "rejected",
            EndReason::NoAnswer(_) => "no_answer",
            EndReason::SdpRefused(_) => "sdp_refused",
            EndReason::NoAck => "no_ack",
            EndReason::Media(ReleaseCause::RtpTimeout) => "rtp_timeout",
            EndReason::Media(ReleaseCause::MediaBearerLoss) => "media_bearer_loss",
            EndReason::ConnectionLost => "connection_lost",
            EndReason::SessionExpired => "session_expired",
            EndReason::PolicyRefused(_) => "policy_refused",
            EndReason::PolicyAborted => "policy_aborted",
            EndReason::SignallingLost => "signalling_bearer_loss",
            EndReason::OutOfCredit => "out_of_credit",
            EndReason::Shutdown => "gateway_shutdown",
            EndReason::ReanchorFailed(_) => "reanchor_failed",
            EndReason::HandedOver => "handed_over",
        }
    }

    /// The final response the caller got because of this ending, when it ended the call
    /// before an answer.
    pub fn status(self) -> Option<u16> {
        match self {
            EndReason::Cancelled => Some(487),
            EndReason::Rejected(s) | EndReason::NoAnswer(s) | EndReason::SdpRefused(s) => Some(s),
            EndReason::PolicyRefused(s) => s,
            _ => None,
        }
    }
}

/// One metric sample, rendered by the driver (Prometheus text on /metrics).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub labels: Vec<(&'static str, String)>,
    pub value: u64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}
