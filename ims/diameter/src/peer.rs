//! One transport connection to one Diameter peer (RFC 6733 §5), sans-IO.
//!
//! The [`Peer`] runs the capabilities exchange (§5.3), the device watchdog (§5.5, RFC 3539
//! §3.4), the disconnect exchange (§5.4), request/answer matching by Hop-by-Hop Identifier with
//! a Tx timer, and the error answers the base protocol sends by itself (§7). It never touches
//! a socket: the driver performs [`Transmit`]s and reports what happened through `handle_*`.
//!
//! Two roles: the *initiator* ([`Peer::new`], then [`Peer::connect`]) asks the driver to open
//! the TCP connection, sends CER and reconnects with back-off after failures; the *responder*
//! ([`Peer::accept`]) serves one connection a remote peer opened, answers its CER, and never
//! reconnects.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::avp::Avp;
use crate::dictionary::{self as dict};
use crate::error::{DecodeError, EncodeError};
use crate::message::{application, command, frame_len, Message};
use crate::result_code;
use crate::validate::{Rejection, Validator};

/// RFC 3539 §3.4.1: "Tw MUST NOT be set lower than 6 seconds".
pub const MIN_WATCHDOG_INTERVAL: Duration = Duration::from_secs(6);
/// RFC 3539 §3.4.1: Tw is jittered by up to ±2 s.
pub const WATCHDOG_JITTER: Duration = Duration::from_secs(2);

/// An application to advertise in CER/CEA (RFC 6733 §5.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Application {
    /// An authentication/authorization application (Rx is `Auth { id: 16777236,
    /// vendor: Some(10415) }`).
    Auth {
        /// Auth-Application-Id.
        id: u32,
        /// With a vendor, advertised inside Vendor-Specific-Application-Id together with a
        /// Supported-Vendor-Id; without, as a top-level Auth-Application-Id.
        vendor: Option<u32>,
    },
    /// An accounting application.
    Acct {
        /// Acct-Application-Id.
        id: u32,
        /// As for [`Application::Auth`].
        vendor: Option<u32>,
    },
}

impl Application {
    /// The Application-Id.
    pub fn id(&self) -> u32 {
        match *self {
            Application::Auth { id, .. } | Application::Acct { id, .. } => id,
        }
    }

    /// The vendor, if vendor-specific.
    pub fn vendor(&self) -> Option<u32> {
        match *self {
            Application::Auth { vendor, .. } | Application::Acct { vendor, .. } => vendor,
        }
    }

    /// Whether `other` (advertised by a peer) serves this application: same kind and id, or
    /// the relay id (RFC 6733 §2.4). Vendors are not compared: peers differ in whether they
    /// wrap 3GPP applications in Vendor-Specific-Application-Id.
    pub fn is_served_by(&self, other: &Application) -> bool {
        let same_kind = matches!(
            (self, other),
            (Application::Auth { .. }, Application::Auth { .. })
                | (Application::Acct { .. }, Application::Acct { .. })
        );
        other.id() == application::RELAY || (same_kind && self.id() == other.id())
    }

    /// The AVP advertising this application.
    fn to_avp(self) -> Avp {
        let (id_key, id, vendor) = match self {
            Application::Auth { id, vendor } => (dict::AUTH_APPLICATION_ID, id, vendor),
            Application::Acct { id, vendor } => (dict::ACCT_APPLICATION_ID, id, vendor),
        };
        match vendor {
            None => Avp::unsigned32(id_key, id),
            Some(vendor) => Avp::grouped(
                dict::VENDOR_SPECIFIC_APPLICATION_ID,
                &[
                    Avp::unsigned32(dict::VENDOR_ID, vendor),
                    Avp::unsigned32(id_key, id),
                ],
            ),
        }
    }
}

/// Disconnect-Cause values (RFC 6733 §5.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisconnectCause {
    /// A reboot is imminent; the receiver MAY reconnect.
    Rebooting,
    /// Resources are constrained; the receiver SHOULD NOT reconnect.
    Busy,
    /// The connection is not needed; the receiver SHOULD NOT reconnect.
    DoNotWantToTalkToYou,
}

impl DisconnectCause {
    /// The Enumerated value.
    pub fn code(self) -> u32 {
        match self {
            DisconnectCause::Rebooting => 0,
            DisconnectCause::Busy => 1,
            DisconnectCause::DoNotWantToTalkToYou => 2,
        }
    }

    /// From the Enumerated value.
    pub fn from_code(code: u32) -> Option<DisconnectCause> {
        match code {
            0 => Some(DisconnectCause::Rebooting),
            1 => Some(DisconnectCause::Busy),
            2 => Some(DisconnectCause::DoNotWantToTalkToYou),
            _ => None,
        }
    }
}

/// Reconnection delays of an initiator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay after a failure; also the delay after a peer's DPR with REBOOTING.
    pub initial: Duration,
    /// Doubling stops here.
    pub max: Duration,
    /// The delay after a DPR with BUSY or DO_NOT_WANT_TO_TALK_TO_YOU. RFC 6733 §5.4.3 says
    /// the receiver SHOULD NOT reconnect; a gateway that needs its PCRF retries after this
    /// much longer pause instead of never.
    pub after_refusal: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            after_refusal: Duration::from_secs(300),
        }
    }
}

/// Local identity and timers of one peer connection.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Our Origin-Host (DiameterIdentity).
    pub origin_host: String,
    /// Our Origin-Realm.
    pub origin_realm: String,
    /// Host-IP-Address values for CER/CEA; RFC 6733 §5.3.1 requires at least one.
    pub host_ip_addresses: Vec<IpAddr>,
    /// Our Vendor-Id (0 when we have no enterprise number).
    pub vendor_id: u32,
    /// Product-Name.
    pub product_name: String,
    /// Firmware-Revision, if any.
    pub firmware_revision: Option<u32>,
    /// Origin-State-Id: changes each time our state is lost (RFC 6733 §8.16), e.g. the boot
    /// time in seconds.
    pub origin_state_id: u32,
    /// Applications to advertise; the peer must serve at least one (if any are listed).
    pub applications: Vec<Application>,
    /// Tw, the watchdog interval (RFC 3539 §3.4.1, default 30 s, at least 6 s).
    pub watchdog_interval: Duration,
    /// Tx, how long a request waits for its answer before [`PeerEvent::TimedOut`].
    pub request_timeout: Duration,
    /// Limit for the TCP connect and, separately, for the CER/CEA exchange.
    pub connect_timeout: Duration,
    /// How long to wait for DPA (or the peer's close) after sending DPR.
    pub disconnect_timeout: Duration,
    /// Reconnection delays.
    pub backoff: Backoff,
    /// Dictionary and command rules applied to received messages.
    pub validator: Validator,
}

impl PeerConfig {
    /// Defaults for everything but the identity: product "Estuary", vendor 0, no
    /// applications, Tw 30 s, Tx 5 s, connect 10 s, disconnect 5 s, back-off 1 s to 30 s.
    pub fn new(origin_host: impl Into<String>, origin_realm: impl Into<String>) -> PeerConfig {
        PeerConfig {
            origin_host: origin_host.into(),
            origin_realm: origin_realm.into(),
            host_ip_addresses: Vec::new(),
            vendor_id: 0,
            product_name: "Estuary".to_string(),
            firmware_revision: None,
            origin_state_id: 0,
            applications: Vec::new(),
            watchdog_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            disconnect_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            validator: Validator::base(),
        }
    }
}

/// What the remote peer told us in its CER or CEA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its Origin-Host.
    pub host: String,
    /// Its Origin-Realm.
    pub realm: String,
    /// Applications it advertised (Auth/Acct-Application-Id, alone or inside
    /// Vendor-Specific-Application-Id).
    pub applications: Vec<Application>,
    /// Its Host-IP-Address values (IPv4/IPv6 ones).
    pub host_ip_addresses: Vec<IpAddr>,
    /// Its Vendor-Id.
    pub vendor_id: Option<u32>,
    /// Its Product-Name.
    pub product_name: Option<String>,
    /// Its Origin-State-Id.
    pub origin_state_id: Option<u32>,
}

impl PeerInfo {
    fn from_capabilities(message: &Message) -> PeerInfo {
        let mut applications = Vec::new();
        for avp in &message.avps {
            let key = avp.key();
            if key == dict::AUTH_APPLICATION_ID {
                if let Ok(id) = avp.as_u32() {
                    applications.push(Application::Auth { id, vendor: None });
                }
            } else if key == dict::ACCT_APPLICATION_ID {
                if let Ok(id) = avp.as_u32() {
                    applications.push(Application::Acct { id, vendor: None });
                }
            } else if key == dict::VENDOR_SPECIFIC_APPLICATION_ID {
                let Ok(members) = avp.grouped_avps() else {
                    continue;
                };
                let vendor = members
                    .iter()
                    .find(|a| a.key() == dict::VENDOR_ID)
                    .and_then(|a| a.as_u32().ok());
                for member in &members {
                    let Ok(id) = member.as_u32() else { continue };
                    if member.key() == dict::AUTH_APPLICATION_ID {
                        applications.push(Application::Auth { id, vendor });
                    } else if member.key() == dict::ACCT_APPLICATION_ID {
                        applications.push(Application::Acct { id, vendor });
                    }
                }
            }
        }
        PeerInfo {
            host: message.origin_host().unwrap_or_default().to_string(),
            realm: message.origin_realm().unwrap_or_default().to_string(),
            applications,
            host_ip_addresses: message
                .find_all(dict::HOST_IP_ADDRESS)
                .filter_map(|a| a.as_address().ok())
                .collect(),
            vendor_id: message.find(dict::VENDOR_ID).and_then(|a| a.as_u32().ok()),
            product_name: message
                .find(dict::PRODUCT_NAME)
                .and_then(|a| a.as_utf8().ok())
                .map(str::to_string),
            origin_state_id: message
                .find(dict::ORIGIN_STATE_ID)
                .and_then(|a| a.as_u32().ok()),
        }
    }
}

/// Why a connection (or an attempt at one) ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// The driver reported the TCP connect failed.
    ConnectFailed,
    /// The TCP connect did not complete within `connect_timeout`.
    ConnectTimeout,
    /// CER/CEA did not complete within `connect_timeout`.
    HandshakeTimeout,
    /// The peer answered CER with a non-success Result-Code (RFC 6733 §5.3.2).
    CapabilitiesRejected {
        /// Its Result-Code (0 when absent).
        result_code: u32,
        /// Its Error-Message, if any.
        error_message: Option<String>,
    },
    /// The capabilities exchange found no application in common (5010).
    NoCommonApplication,
    /// No DWA within Tw of our DWR (RFC 3539 §3.4).
    WatchdogExpired,
    /// The byte stream is not Diameter (bad version or length); framing is lost.
    Framing(DecodeError),
    /// The peer broke the protocol (e.g. a request before CEA).
    ProtocolViolation(&'static str),
    /// The peer sent DPR.
    PeerDisconnected(Option<DisconnectCause>),
    /// We disconnected ([`Peer::disconnect`]).
    LocalDisconnect(DisconnectCause),
    /// The transport closed under us.
    TransportClosed,
}

/// Something the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Open the TCP connection now; report with [`Peer::handle_connected`] or
    /// [`Peer::handle_connect_failed`].
    Connect,
    /// Write these bytes to the connection. Consecutive messages are coalesced into one
    /// buffer, so this is one allocation per drain rather than per message.
    Bytes(Vec<u8>),
    /// Close the connection after writing everything queued before it.
    Disconnect,
}

/// Identifies a request we sent; it is the Hop-by-Hop Identifier on this connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u32);

/// What happened, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Capabilities exchanged; requests may flow.
    Up(PeerInfo),
    /// The connection, or an attempt at it, ended. `Up` need not have come before.
    Down(DownReason),
    /// A request from the peer for one of our applications, already validated. Answer it
    /// with [`Peer::send_answer`] (built from [`Message::answer_to`]).
    Request(Message),
    /// The answer to our request `id`.
    Answer {
        /// The request.
        id: RequestId,
        /// The answer.
        answer: Message,
    },
    /// No answer within Tx; the request is given back (e.g. to resend elsewhere with T set).
    TimedOut {
        /// The request.
        id: RequestId,
        /// The request as sent.
        request: Message,
    },
    /// The connection went down while the request was waiting for its answer.
    Undelivered {
        /// The request.
        id: RequestId,
        /// The request as sent.
        request: Message,
    },
}

/// A message [`Peer`] would not send; the message is handed back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is not open.
    #[error("peer connection is not open")]
    NotOpen(Message),
    /// `send_request` was given an answer (R clear).
    #[error("not a request (R bit clear)")]
    NotARequest(Message),
    /// `send_answer` was given a request (R set).
    #[error("not an answer (R bit set)")]
    NotAnAnswer(Message),
    /// The message cannot be encoded.
    #[error("cannot encode: {error}")]
    Encode {
        /// The message.
        message: Message,
        /// Why.
        error: EncodeError,
    },
    /// [`crate::PeerSet`]: no peer is open.
    #[error("no open peer")]
    NoOpenPeer(Message),
    /// [`crate::PeerSet`]: no peer with that index.
    #[error("no such peer")]
    NoSuchPeer(Message),
}

impl SendError {
    /// The message that was not sent.
    pub fn into_message(self) -> Message {
        match self {
            SendError::NotOpen(m)
            | SendError::NotARequest(m)
            | SendError::NotAnAnswer(m)
            | SendError::NoOpenPeer(m)
            | SendError::NoSuchPeer(m)
            | SendError::Encode { message: m, .. } => m,
        }
    }
}

/// The connection state, without its data (see [`Peer::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerStatus {
    /// No connection; maybe a reconnect is scheduled.
    Closed,
    /// The driver is opening TCP.
    Connecting,
    /// CER sent, waiting for CEA (initiator).
    WaitCea,
    /// Connection accepted, waiting for CER (responder).
    WaitCer,
    /// Capabilities exchanged.
    Open,
    /// DPR sent, waiting for DPA or the close.
    Closing,
}

/// End-to-End Identifier source (RFC 6733 §3): the high 12 bits from the low 12 bits of a
/// start time, the low 20 random, then incrementing. Unique for far longer than the required
/// 4 minutes at any realistic request rate, and across restarts.
#[derive(Clone, Debug)]
pub struct EndToEndIds {
    next: u32,
}

impl EndToEndIds {
    /// Seeds from a wall-clock start time (e.g. Unix seconds at process start) and a random
    /// value.
    pub fn new(start_time_secs: u64, random: u32) -> EndToEndIds {
        let high = ((start_time_secs & 0xfff) as u32) << 20;
        EndToEndIds {
            next: high | (random & 0x000f_ffff),
        }
    }

    /// The next identifier.
    pub fn next_id(&mut self) -> u32 {
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        id
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Initiator,
    Responder,
}

/// When to connect again after a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reconnect {
    WithBackoff,
    AfterRefusal,
    Never,
}

#[derive(Clone, Debug)]
enum Watchdog {
    /// Nothing outstanding; send DWR at `fire_at` unless something arrives first.
    Idle { fire_at: Instant },
    /// DWR `hop_by_hop` outstanding; the connection fails at `fire_at` without its DWA.
    AwaitingDwa { fire_at: Instant, hop_by_hop: u32 },
}

impl Watchdog {
    fn fire_at(&self) -> Instant {
        match *self {
            Watchdog::Idle { fire_at } | Watchdog::AwaitingDwa { fire_at, .. } => fire_at,
        }
    }
}

#[derive(Clone, Debug)]
enum State {
    Closed {
        reconnect_at: Option<Instant>,
    },
    Connecting {
        deadline: Instant,
    },
    WaitCea {
        deadline: Instant,
        cer_hop_by_hop: u32,
    },
    WaitCer {
        deadline: Instant,
    },
    Open {
        peer: PeerInfo,
        watchdog: Watchdog,
    },
    Closing {
        deadline: Instant,
        dpr_hop_by_hop: u32,
        cause: DisconnectCause,
    },
}

#[derive(Clone, Debug)]
struct Pending {
    deadline: Instant,
    request: Message,
}

/// One Diameter peer connection. See the crate docs for the run loop.
#[derive(Debug)]
pub struct Peer {
    config: PeerConfig,
    role: Role,
    state: State,
    rng: StdRng,
    next_hop_by_hop: u32,
    end_to_end: EndToEndIds,
    pending: BTreeMap<u32, Pending>,
    deadlines: BTreeSet<(Instant, u32)>,
    rx: Vec<u8>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<PeerEvent>,
    backoff: Duration,
}

impl Peer {
    /// An initiator, closed until [`Peer::connect`]. `start_time_secs` is a wall-clock start
    /// time (Unix seconds) for End-to-End Identifiers; `rng` seeds the identifiers and the
    /// watchdog jitter.
    pub fn new(config: PeerConfig, start_time_secs: u64, rng: &mut impl RngCore) -> Peer {
        Peer::with_role(
            config,
            Role::Initiator,
            start_time_secs,
            rng,
            State::Closed { reconnect_at: None },
        )
    }

    /// A responder for a connection the remote peer opened: it waits for CER.
    pub fn accept(
        config: PeerConfig,
        start_time_secs: u64,
        rng: &mut impl RngCore,
        now: Instant,
    ) -> Peer {
        let deadline = now + config.connect_timeout;
        Peer::with_role(
            config,
            Role::Responder,
            start_time_secs,
            rng,
            State::WaitCer { deadline },
        )
    }

    fn with_role(
        config: PeerConfig,
        role: Role,
        start_time_secs: u64,
        rng: &mut impl RngCore,
        state: State,
    ) -> Peer {
        let mut own_rng = StdRng::from_rng(rng);
        let end_to_end = EndToEndIds::new(start_time_secs, own_rng.next_u32());
        let next_hop_by_hop = own_rng.next_u32();
        let backoff = config.backoff.initial;
        Peer {
            config,
            role,
            state,
            rng: own_rng,
            next_hop_by_hop,
            end_to_end,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            rx: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            backoff,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// The connection state.
    pub fn status(&self) -> PeerStatus {
        match self.state {
            State::Closed { .. } => PeerStatus::Closed,
            State::Connecting { .. } => PeerStatus::Connecting,
            State::WaitCea { .. } => PeerStatus::WaitCea,
            State::WaitCer { .. } => PeerStatus::WaitCer,
            State::Open { .. } => PeerStatus::Open,
            State::Closing { .. } => PeerStatus::Closing,
        }
    }

    /// Whether requests can be sent.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// The remote peer's capabilities while open.
    pub fn peer_info(&self) -> Option<&PeerInfo> {
        match &self.state {
            State::Open { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// Requests waiting for answers.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Starts connecting now if closed (initiator), cancelling any scheduled reconnect.
    pub fn connect(&mut self, now: Instant) {
        if self.role == Role::Initiator && matches!(self.state, State::Closed { .. }) {
            self.begin_connect(now);
        }
    }

    /// The TCP connection is up: send CER (RFC 6733 §5.3).
    pub fn handle_connected(&mut self, now: Instant) {
        if !matches!(self.state, State::Connecting { .. }) {
            tracing::warn!(status = ?self.status(), "connected outside Connecting; ignored");
            return;
        }
        let mut cer = Message::request(command::CAPABILITIES_EXCHANGE, application::COMMON);
        cer.flags.proxiable = false;
        cer.hop_by_hop = self.allocate_hop_by_hop();
        cer.end_to_end = self.end_to_end.next_id();
        cer.avps = self.capabilities(None);
        let cer_hop_by_hop = cer.hop_by_hop;
        self.queue(&cer);
        self.state = State::WaitCea {
            deadline: now + self.config.connect_timeout,
            cer_hop_by_hop,
        };
    }

    /// The TCP connect failed.
    pub fn handle_connect_failed(&mut self, now: Instant) {
        if matches!(self.state, State::Connecting { .. }) {
            self.close(
                now,
                DownReason::ConnectFailed,
                false,
                Reconnect::WithBackoff,
            );
        }
    }

    /// The transport closed (EOF, reset, or the driver's own close).
    pub fn handle_closed(&mut self, now: Instant) {
        match self.state {
            State::Closed { .. } => {}
            State::Connecting { .. } => self.close(
                now,
                DownReason::ConnectFailed,
                false,
                Reconnect::WithBackoff,
            ),
            State::Closing { cause, .. } => self.close(
                now,
                DownReason::LocalDisconnect(cause),
                false,
                Reconnect::Never,
            ),
            _ => self.close(
                now,
                DownReason::TransportClosed,
                false,
                Reconnect::WithBackoff,
            ),
        }
    }

    /// Bytes read from the connection, in stream order and cut anywhere.
    pub fn handle_bytes(&mut self, now: Instant, data: &[u8]) {
        if !self.has_transport() {
            tracing::debug!(len = data.len(), "bytes without a connection; dropped");
            return;
        }
        // Taken out so frames can borrow it while the handlers borrow `self`.
        let mut buf = std::mem::take(&mut self.rx);
        buf.extend_from_slice(data);
        let mut start = 0;
        while self.has_transport() {
            match frame_len(&buf[start..]) {
                Ok(Some(len)) => {
                    self.on_frame(now, &buf[start..start + len]);
                    start += len;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "framing lost");
                    self.close(now, DownReason::Framing(e), true, Reconnect::WithBackoff);
                }
            }
        }
        if self.has_transport() {
            buf.drain(..start);
        } else {
            buf.clear();
        }
        self.rx = buf;
    }

    /// Timers: Tx expiries, watchdog, handshake and close limits, reconnection.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, hop_by_hop)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(pending) = self.pending.remove(&hop_by_hop) {
                self.events.push_back(PeerEvent::TimedOut {
                    id: RequestId(hop_by_hop),
                    request: pending.request,
                });
            }
        }
        match self.state {
            State::Closed {
                reconnect_at: Some(at),
            } if at <= now => self.begin_connect(now),
            State::Connecting { deadline } if deadline <= now => self.close(
                now,
                DownReason::ConnectTimeout,
                true,
                Reconnect::WithBackoff,
            ),
            State::WaitCea { deadline, .. } | State::WaitCer { deadline } if deadline <= now => {
                self.close(
                    now,
                    DownReason::HandshakeTimeout,
                    true,
                    Reconnect::WithBackoff,
                )
            }
            State::Open {
                watchdog: Watchdog::Idle { fire_at },
                ..
            } if fire_at <= now => {
                let hop_by_hop = self.send_dwr();
                let fire_at = now + self.jittered_tw();
                if let State::Open { watchdog, .. } = &mut self.state {
                    *watchdog = Watchdog::AwaitingDwa {
                        fire_at,
                        hop_by_hop,
                    };
                }
            }
            State::Open {
                watchdog: Watchdog::AwaitingDwa { fire_at, .. },
                ..
            } if fire_at <= now => {
                // Simplification of RFC 3539's SUSPECT state: one missed DWA fails the link.
                self.close(
                    now,
                    DownReason::WatchdogExpired,
                    true,
                    Reconnect::WithBackoff,
                )
            }
            State::Closing {
                deadline, cause, ..
            } if deadline <= now => self.close(
                now,
                DownReason::LocalDisconnect(cause),
                true,
                Reconnect::Never,
            ),
            _ => {}
        }
    }

    /// Sends DPR (RFC 6733 §5.4) and closes on DPA or after `disconnect_timeout`; no
    /// reconnection follows. Before the connection is open it just closes.
    pub fn disconnect(&mut self, now: Instant, cause: DisconnectCause) {
        match self.state {
            State::Open { .. } => {
                let mut dpr = Message::request(command::DISCONNECT_PEER, application::COMMON);
                dpr.flags.proxiable = false;
                dpr.hop_by_hop = self.allocate_hop_by_hop();
                dpr.end_to_end = self.end_to_end.next_id();
                dpr.avps = vec![
                    Avp::identity(dict::ORIGIN_HOST, &self.config.origin_host),
                    Avp::identity(dict::ORIGIN_REALM, &self.config.origin_realm),
                    Avp::unsigned32(dict::DISCONNECT_CAUSE, cause.code()),
                ];
                let dpr_hop_by_hop = dpr.hop_by_hop;
                self.queue(&dpr);
                self.state = State::Closing {
                    deadline: now + self.config.disconnect_timeout,
                    dpr_hop_by_hop,
                    cause,
                };
            }
            State::Closed { .. } => self.state = State::Closed { reconnect_at: None },
            State::Closing { .. } => {}
            State::Connecting { .. } | State::WaitCea { .. } | State::WaitCer { .. } => self.close(
                now,
                DownReason::LocalDisconnect(cause),
                true,
                Reconnect::Never,
            ),
        }
    }

    /// Sends a request, assigning fresh Hop-by-Hop and End-to-End Identifiers. Its answer
    /// comes as [`PeerEvent::Answer`] with the returned id, or [`PeerEvent::TimedOut`] after
    /// Tx.
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: Message,
    ) -> Result<RequestId, SendError> {
        request.end_to_end = self.end_to_end.next_id();
        self.forward_request(now, request)
    }

    /// Sends a request keeping its End-to-End Identifier and T flag as given, assigning only
    /// the Hop-by-Hop Identifier: for a retransmission after failover (RFC 6733 §5.5.4) or a
    /// caller that numbers requests itself.
    pub fn forward_request(
        &mut self,
        now: Instant,
        mut request: Message,
    ) -> Result<RequestId, SendError> {
        if !request.flags.request {
            return Err(SendError::NotARequest(request));
        }
        if !self.is_open() {
            return Err(SendError::NotOpen(request));
        }
        request.hop_by_hop = self.allocate_hop_by_hop();
        if let Err(error) = self.try_queue(&request) {
            return Err(SendError::Encode {
                message: request,
                error,
            });
        }
        let deadline = now + self.config.request_timeout;
        let hop_by_hop = request.hop_by_hop;
        self.deadlines.insert((deadline, hop_by_hop));
        self.pending
            .insert(hop_by_hop, Pending { deadline, request });
        Ok(RequestId(hop_by_hop))
    }

    /// Sends an answer to a request from [`PeerEvent::Request`].
    pub fn send_answer(&mut self, _now: Instant, answer: Message) -> Result<(), SendError> {
        if answer.flags.request {
            return Err(SendError::NotAnAnswer(answer));
        }
        if !matches!(self.state, State::Open { .. } | State::Closing { .. }) {
            return Err(SendError::NotOpen(answer));
        }
        match self.try_queue(&answer) {
            Ok(()) => Ok(()),
            Err(error) => Err(SendError::Encode {
                message: answer,
                error,
            }),
        }
    }

    /// The next thing the driver must do. Drain until `None` after every input.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the application. Drain until `None` after every input.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// When to call [`Peer::handle_timeout`] next; read after draining.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match &self.state {
            State::Closed { reconnect_at } => *reconnect_at,
            State::Connecting { deadline }
            | State::WaitCea { deadline, .. }
            | State::WaitCer { deadline }
            | State::Closing { deadline, .. } => Some(*deadline),
            State::Open { watchdog, .. } => Some(watchdog.fire_at()),
        };
        let request = self.deadlines.first().map(|(t, _)| *t);
        match (state, request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- internals ----

    fn has_transport(&self) -> bool {
        !matches!(self.state, State::Closed { .. } | State::Connecting { .. })
    }

    fn begin_connect(&mut self, now: Instant) {
        self.state = State::Connecting {
            deadline: now + self.config.connect_timeout,
        };
        self.transmits.push_back(Transmit::Connect);
    }

    /// Ends the connection: `Down`, pending requests `Undelivered`, maybe `Disconnect`, and a
    /// reconnection per `reconnect` (initiators only).
    fn close(
        &mut self,
        now: Instant,
        reason: DownReason,
        close_transport: bool,
        reconnect: Reconnect,
    ) {
        if close_transport {
            self.transmits.push_back(Transmit::Disconnect);
        } else {
            // The transport is already gone: bytes for it can never be written.
            self.transmits.retain(|t| !matches!(t, Transmit::Bytes(_)));
        }
        self.rx.clear();
        tracing::info!(peer = ?self.peer_info().map(|p| &p.host), ?reason, "diameter peer down");
        self.events.push_back(PeerEvent::Down(reason));
        self.deadlines.clear();
        for (hop_by_hop, pending) in std::mem::take(&mut self.pending) {
            self.events.push_back(PeerEvent::Undelivered {
                id: RequestId(hop_by_hop),
                request: pending.request,
            });
        }
        let reconnect_at = match (self.role, reconnect) {
            (Role::Responder, _) | (_, Reconnect::Never) => None,
            (Role::Initiator, Reconnect::WithBackoff) => {
                let at = now + self.backoff;
                self.backoff = (self.backoff * 2).min(self.config.backoff.max);
                Some(at)
            }
            (Role::Initiator, Reconnect::AfterRefusal) => {
                Some(now + self.config.backoff.after_refusal)
            }
        };
        self.state = State::Closed { reconnect_at };
    }

    fn open(&mut self, now: Instant, peer: PeerInfo) {
        tracing::info!(host = %peer.host, realm = %peer.realm, "diameter peer open");
        self.backoff = self.config.backoff.initial;
        let fire_at = now + self.jittered_tw();
        self.events.push_back(PeerEvent::Up(peer.clone()));
        self.state = State::Open {
            peer,
            watchdog: Watchdog::Idle { fire_at },
        };
    }

    /// Tw ± 2 s (RFC 3539 §3.4.1), Tw at least 6 s.
    fn jittered_tw(&mut self) -> Duration {
        let tw = self.config.watchdog_interval.max(MIN_WATCHDOG_INTERVAL);
        let span = WATCHDOG_JITTER.as_millis() as u64;
        let offset = self.rng.random_range(0..=2 * span);
        (tw + Duration::from_millis(offset)) - WATCHDOG_JITTER
    }

    fn allocate_hop_by_hop(&mut self) -> u32 {
        // RFC 6733 §3: unique on the connection at any given time.
        loop {
            let id = self.next_hop_by_hop;
            self.next_hop_by_hop = self.next_hop_by_hop.wrapping_add(1);
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    fn try_queue(&mut self, message: &Message) -> Result<(), EncodeError> {
        if let Some(Transmit::Bytes(buf)) = self.transmits.back_mut() {
            return message.encode(buf);
        }
        let mut buf = Vec::with_capacity(message.encoded_len());
        message.encode(&mut buf)?;
        self.transmits.push_back(Transmit::Bytes(buf));
        Ok(())
    }

    /// Queues a message this module built; those are far below the size limit.
    fn queue(&mut self, message: &Message) {
        if let Err(e) = self.try_queue(message) {
            tracing::error!(error = %e, command = message.command_code, "cannot encode own message");
        }
    }

    /// The CER/CEA body (RFC 6733 §5.3.1, §5.3.2), with Result-Code first for a CEA.
    fn capabilities(&self, result_code: Option<u32>) -> Vec<Avp> {
        let c = &self.config;
        let mut avps = Vec::new();
        if let Some(code) = result_code {
            avps.push(Avp::unsigned32(dict::RESULT_CODE, code));
        }
        avps.push(Avp::identity(dict::ORIGIN_HOST, &c.origin_host));
        avps.push(Avp::identity(dict::ORIGIN_REALM, &c.origin_realm));
        for ip in &c.host_ip_addresses {
            avps.push(Avp::address(dict::HOST_IP_ADDRESS, *ip));
        }
        avps.push(Avp::unsigned32(dict::VENDOR_ID, c.vendor_id));
        avps.push(Avp::utf8(dict::PRODUCT_NAME, &c.product_name));
        avps.push(Avp::unsigned32(dict::ORIGIN_STATE_ID, c.origin_state_id));
        let mut vendors: Vec<u32> = c
            .applications
            .iter()
            .filter_map(Application::vendor)
            .collect();
        vendors.sort_unstable();
        vendors.dedup();
        for vendor in vendors {
            avps.push(Avp::unsigned32(dict::SUPPORTED_VENDOR_ID, vendor));
        }
        for app in &c.applications {
            avps.push(app.to_avp());
        }
        if let Some(rev) = c.firmware_revision {
            avps.push(Avp::unsigned32(dict::FIRMWARE_REVISION, rev));
        }
        avps
    }

    fn serves_common_application(&self, peer: &PeerInfo) -> bool {
        self.config.applications.is_empty()
            || self.config.applications.iter().any(|ours| {
                peer.applications
                    .iter()
                    .any(|theirs| ours.is_served_by(theirs))
            })
    }

    fn advertises(&self, application_id: u32) -> bool {
        self.config
            .applications
            .iter()
            .any(|a| a.id() == application_id)
    }

    fn send_dwr(&mut self) -> u32 {
        let mut dwr = Message::request(command::DEVICE_WATCHDOG, application::COMMON);
        dwr.flags.proxiable = false;
        dwr.hop_by_hop = self.allocate_hop_by_hop();
        dwr.end_to_end = self.end_to_end.next_id();
        dwr.avps = vec![
            Avp::identity(dict::ORIGIN_HOST, &self.config.origin_host),
            Avp::identity(dict::ORIGIN_REALM, &self.config.origin_realm),
            Avp::unsigned32(dict::ORIGIN_STATE_ID, self.config.origin_state_id),
        ];
        self.queue(&dwr);
        dwr.hop_by_hop
    }

    /// An answer with Origin-Host, Origin-Realm and Result-Code; `extra` follows.
    fn simple_answer(&self, request: &Message, code: u32, extra: Vec<Avp>) -> Message {
        let mut answer = Message::answer_to(request);
        answer.push(Avp::unsigned32(dict::RESULT_CODE, code));
        answer.push(Avp::identity(dict::ORIGIN_HOST, &self.config.origin_host));
        answer.push(Avp::identity(dict::ORIGIN_REALM, &self.config.origin_realm));
        answer.avps.extend(extra);
        answer
    }

    fn reject(&mut self, request: &Message, rejection: &Rejection) {
        tracing::debug!(
            command = request.command_code,
            result_code = rejection.result_code,
            detail = %rejection.error_message,
            "rejecting request"
        );
        let answer = rejection.answer(request, &self.config.origin_host, &self.config.origin_realm);
        self.queue(&answer);
    }

    fn on_frame(&mut self, now: Instant, frame: &[u8]) {
        let (message, fault) = match Message::decode_partial(frame) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.close(now, DownReason::Framing(e), true, Reconnect::WithBackoff);
                return;
            }
        };
        // RFC 3539 §3.4.1: any message received resets the watchdog timer.
        if self.is_open() {
            let fire_at = now + self.jittered_tw();
            if let State::Open { watchdog, .. } = &mut self.state {
                match watchdog {
                    Watchdog::Idle { fire_at: at } | Watchdog::AwaitingDwa { fire_at: at, .. } => {
                        *at = fire_at
                    }
                }
            }
        }
        if message.flags.request {
            self.on_request(now, message, fault);
        } else {
            self.on_answer(now, message, fault);
        }
    }

    fn on_request(&mut self, now: Instant, request: Message, fault: Option<DecodeError>) {
        match self.state {
            State::WaitCer { .. } => return self.on_cer(now, request, fault),
            State::WaitCea { .. } => {
                return self.close(
                    now,
                    DownReason::ProtocolViolation("request before CEA"),
                    true,
                    Reconnect::WithBackoff,
                )
            }
            State::Open { .. } | State::Closing { .. } => {}
            State::Closed { .. } | State::Connecting { .. } => return,
        }
        if let Some(fault) = fault {
            let rejection =
                Rejection::from_decode_error(&fault, self.config.validator.dictionary());
            return self.reject(&request, &rejection);
        }
        if request.application_id == application::COMMON {
            return self.on_base_request(now, request);
        }
        if !self.advertises(request.application_id) {
            let rejection = Rejection::new(
                result_code::APPLICATION_UNSUPPORTED,
                format!("application {} not advertised", request.application_id),
            );
            return self.reject(&request, &rejection);
        }
        match self.config.validator.validate(&request) {
            Ok(accepted) => {
                if !accepted.unknown_avps.is_empty() {
                    tracing::debug!(unknown = ?accepted.unknown_avps, "request carries unknown optional AVPs");
                }
                self.events.push_back(PeerEvent::Request(request));
            }
            Err(rejection) => self.reject(&request, &rejection),
        }
    }

    fn on_base_request(&mut self, now: Instant, request: Message) {
        let known = matches!(
            request.command_code,
            command::DEVICE_WATCHDOG | command::DISCONNECT_PEER | command::CAPABILITIES_EXCHANGE
        );
        if !known {
            let rejection = Rejection::new(
                result_code::COMMAND_UNSUPPORTED,
                format!("command {} is not supported", request.command_code),
            );
            return self.reject(&request, &rejection);
        }
        if let Err(rejection) = self.config.validator.validate(&request) {
            return self.reject(&request, &rejection);
        }
        match request.command_code {
            command::DEVICE_WATCHDOG => {
                let state_id = Avp::unsigned32(dict::ORIGIN_STATE_ID, self.config.origin_state_id);
                let dwa = self.simple_answer(&request, result_code::SUCCESS, vec![state_id]);
                self.queue(&dwa);
            }
            command::DISCONNECT_PEER => {
                let cause = request
                    .find(dict::DISCONNECT_CAUSE)
                    .and_then(|a| a.as_u32().ok())
                    .and_then(DisconnectCause::from_code);
                let dpa = self.simple_answer(&request, result_code::SUCCESS, Vec::new());
                self.queue(&dpa);
                let reconnect = match cause {
                    Some(DisconnectCause::Busy | DisconnectCause::DoNotWantToTalkToYou) => {
                        Reconnect::AfterRefusal
                    }
                    Some(DisconnectCause::Rebooting) | None => Reconnect::WithBackoff,
                };
                self.close(now, DownReason::PeerDisconnected(cause), true, reconnect);
            }
            _ => {
                // CER on an open connection (RFC 6733 §5.6: only in Wait-for-CER states).
                let rejection = Rejection::new(
                    result_code::UNABLE_TO_COMPLY,
                    "capabilities already exchanged",
                );
                self.reject(&request, &rejection);
            }
        }
    }

    /// Responder: the first message must be CER (RFC 6733 §5.3, §5.6 R-Open).
    fn on_cer(&mut self, now: Instant, cer: Message, fault: Option<DecodeError>) {
        let is_cer = cer.application_id == application::COMMON
            && cer.command_code == command::CAPABILITIES_EXCHANGE;
        if !is_cer {
            return self.close(
                now,
                DownReason::ProtocolViolation("first request is not CER"),
                true,
                Reconnect::Never,
            );
        }
        let rejection = match fault {
            Some(fault) => Err(Rejection::from_decode_error(
                &fault,
                self.config.validator.dictionary(),
            )),
            None => self.config.validator.validate(&cer).map(|_| ()),
        };
        if let Err(rejection) = rejection {
            self.reject(&cer, &rejection);
            return self.close(
                now,
                DownReason::ProtocolViolation("invalid CER"),
                true,
                Reconnect::Never,
            );
        }
        let peer = PeerInfo::from_capabilities(&cer);
        let common = self.serves_common_application(&peer);
        let code = if common {
            result_code::SUCCESS
        } else {
            result_code::NO_COMMON_APPLICATION
        };
        let mut cea = Message::answer_to(&cer);
        cea.avps.extend(self.capabilities(Some(code)));
        self.queue(&cea);
        if common {
            self.open(now, peer);
        } else {
            // RFC 6733 §5.3: "SHOULD disconnect the transport layer connection".
            self.close(now, DownReason::NoCommonApplication, true, Reconnect::Never);
        }
    }

    fn on_answer(&mut self, now: Instant, answer: Message, fault: Option<DecodeError>) {
        match &mut self.state {
            State::WaitCea { cer_hop_by_hop, .. } => {
                let is_cea = answer.command_code == command::CAPABILITIES_EXCHANGE
                    && answer.hop_by_hop == *cer_hop_by_hop;
                if !is_cea || fault.is_some() {
                    return self.close(
                        now,
                        DownReason::ProtocolViolation("expected a valid CEA"),
                        true,
                        Reconnect::WithBackoff,
                    );
                }
                self.on_cea(now, answer);
            }
            State::WaitCer { .. } => self.close(
                now,
                DownReason::ProtocolViolation("answer before CER"),
                true,
                Reconnect::Never,
            ),
            State::Closed { .. } | State::Connecting { .. } => {}
            State::Open { watchdog, .. } => {
                if answer.command_code == command::DEVICE_WATCHDOG
                    && answer.application_id == application::COMMON
                {
                    if let Watchdog::AwaitingDwa {
                        fire_at,
                        hop_by_hop,
                    } = *watchdog
                    {
                        if hop_by_hop == answer.hop_by_hop {
                            *watchdog = Watchdog::Idle { fire_at };
                        }
                    }
                    return;
                }
                self.deliver_answer(answer, fault);
            }
            State::Closing {
                dpr_hop_by_hop,
                cause,
                ..
            } => {
                if answer.command_code == command::DISCONNECT_PEER
                    && answer.hop_by_hop == *dpr_hop_by_hop
                {
                    let cause = *cause;
                    return self.close(
                        now,
                        DownReason::LocalDisconnect(cause),
                        true,
                        Reconnect::Never,
                    );
                }
                self.deliver_answer(answer, fault);
            }
        }
    }

    fn on_cea(&mut self, now: Instant, cea: Message) {
        let code = cea.result_code().unwrap_or(0);
        if !result_code::is_success(code) {
            let error_message = cea
                .find(dict::ERROR_MESSAGE)
                .and_then(|a| a.as_utf8().ok())
                .map(str::to_string);
            return self.close(
                now,
                DownReason::CapabilitiesRejected {
                    result_code: code,
                    error_message,
                },
                true,
                Reconnect::WithBackoff,
            );
        }
        if let Err(rejection) = self.config.validator.validate(&cea) {
            tracing::warn!(detail = %rejection.error_message, "invalid CEA");
            return self.close(
                now,
                DownReason::ProtocolViolation("invalid CEA"),
                true,
                Reconnect::WithBackoff,
            );
        }
        let peer = PeerInfo::from_capabilities(&cea);
        if !self.serves_common_application(&peer) {
            return self.close(
                now,
                DownReason::NoCommonApplication,
                true,
                Reconnect::WithBackoff,
            );
        }
        self.open(now, peer);
    }

    fn deliver_answer(&mut self, answer: Message, fault: Option<DecodeError>) {
        if let Some(fault) = fault {
            // The request stays pending and times out; the caller may retry.
            tracing::warn!(error = %fault, hop_by_hop = answer.hop_by_hop, "malformed answer dropped");
            return;
        }
        match self.pending.remove(&answer.hop_by_hop) {
            Some(pending) => {
                self.deadlines
                    .remove(&(pending.deadline, answer.hop_by_hop));
                self.events.push_back(PeerEvent::Answer {
                    id: RequestId(answer.hop_by_hop),
                    answer,
                });
            }
            // RFC 6733 §6.2: an answer matching no pending request is discarded.
            None => tracing::debug!(hop_by_hop = answer.hop_by_hop, "unmatched answer discarded"),
        }
    }
}
