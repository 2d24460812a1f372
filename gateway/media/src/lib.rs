//! One call's media, sans-IO: the browser leg (ICE-lite, DTLS-SRTP, BUNDLE, rtcp-mux), the IMS
//! legs (one RTP and one RTCP port per m-line, plain RTP or SDES-SRTP, symmetric-RTP latching),
//! and the relay between them, all driven by the [`estuary_sdp::MediaPlan`] the SDP engine
//! settled.
//!
//! # Driving it
//!
//! Every datagram that arrives on one of the call's local addresses goes to
//! [`MediaSession::handle_datagram`] in a buffer the driver reuses (capacity of at least
//! [`MIN_BUFFER`], so protecting in place never reallocates). Media is relayed *in that
//! buffer*: the return value says from which local address to which remote one the driver sends
//! it, or that the packet was consumed. Control traffic (STUN answers, DTLS flights) and events
//! come out of [`MediaSession::poll_output`]; deadlines from [`MediaSession::poll_timeout`], fed
//! back with [`MediaSession::handle_timeout`]. After any call that takes `&mut self`, drain
//! `poll_output` to `None`, then re-read `poll_timeout`.
//!
//! # The per-packet path
//!
//! Browser → IMS: RFC 7983 demux, consent check on the source (ICE), SRTP unprotect, stream by
//! payload type, payload type mapped to the IMS leg's, SSRC/sequence/timestamp continued by a
//! [`estuary_rtp::StreamRewriter`], header extensions stripped (the IMS leg negotiated none),
//! SDES protect if the IMS leg uses SRTP. IMS → browser is the mirror, without extensions to
//! strip and with DTLS-SRTP protect. No allocation and no lock on this path; counters are plain
//! integers the driver reads with [`MediaSession::counters`].
//!
//! RTCP is terminated per leg (see [`rtcp`]): each leg gets SR/RR and SDES about what it
//! exchanged with the gateway every ~5 s, what arrives is authenticated and read, not
//! forwarded, and only feedback (PLI, FIR, NACK) crosses, translated into the other leg's SSRCs
//! and sequence numbers where that leg negotiated it. Streams that need transcoding are not
//! relayed here; the transcoder (issue 5) takes them.

pub mod rtcp;
pub mod shard;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use estuary_ice::{Credentials, IceConfig, IceEvent, IceLite};
use estuary_rtp::rtcp::{write, Compound, RtcpPacket, TmmbEntry};
use estuary_rtp::{classify, ClockRate, PacketKind, Pt, RtpPacket, RtpPacketMut, Rewrite, SeqNo, Ssrc, StreamRewriter, WallClock};
use estuary_sdp::{MediaPlan, StreamPlan};
use estuary_srtp::{Certificate, DtlsEndpoint, DtlsEvent, DtlsFailure, SrtpContext, SrtpMasterKey, SrtpProfile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The smallest datagram buffer the driver may pass: a full Ethernet-MTU packet plus the
/// largest SRTP tag.
pub const MIN_BUFFER: usize = 1500 + 16;

/// How long a call outlives the browser's DTLS `close_notify` before it ends as a bearer
/// loss. A hanging-up browser sends its BYE over the WebSocket at the same moment as it closes
/// the peer connection; the two travel different paths, and the BYE must win so the call
/// ends as `bye_from_web`. A browser that closed without a BYE is still gone within a second.
pub const DTLS_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Tuning of a session.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// Address of the web-side socket (host candidate).
    pub web_address: IpAddr,
    /// Address of the IMS-side sockets (SDP c= toward IMS).
    pub ims_address: IpAddr,
    /// Learn the IMS peer's address from the first packet it sends (symmetric RTP, for cores
    /// behind NAT); otherwise only the SDP address is accepted and used.
    pub latch: bool,
    /// No media from either side for this long (hold excepted) ends the call.
    pub inactivity_timeout: Duration,
    /// ICE consent and nomination timers.
    pub ice: estuary_ice::IceSettings,
    /// Wall-clock time for the NTP timestamps of sender reports, read once by the driver.
    /// `None` (tests): NTP time counts from the Unix epoch at session start, which keeps
    /// round-trip estimates right and only the absolute time wrong.
    pub wall_clock: Option<WallClock>,
    /// Copy every media and RTCP packet in plaintext to [`Output::Tap`] (call recording):
    /// browser media after SRTP decryption and before encryption, IMS media as on the wire
    /// (SDES decrypted). Off: nothing is copied, nothing allocated.
    pub tap: bool,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            web_address: IpAddr::from([127, 0, 0, 1]),
            ims_address: IpAddr::from([127, 0, 0, 1]),
            latch: true,
            inactivity_timeout: Duration::from_secs(60),
            ice: estuary_ice::IceSettings::default(),
            wall_clock: None,
            tap: false,
        }
    }
}

/// What to do with the datagram just handled.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Send the buffer (rewritten in place) from our `from` socket to `to`.
    Send { from: SocketAddr, to: SocketAddr },
    /// The buffer holds a plaintext RTP packet of stream `stream` whose codec the other leg
    /// does not have: hand its payload to the transcoder, whose frames come back through
    /// [`MediaSession::send_transcoded`] toward `to`.
    Transcode { stream: usize, to: Leg },
    /// Nothing to relay (control traffic, terminated RTCP, or dropped: see the counters).
    Consumed,
}

/// A frame the transcoder produced for stream `stream` toward `to`: `payload` in that leg's
/// codec, with the transcoder's continuous `timestamp` (that leg's clock) and `marker`.
#[derive(Copy, Clone, Debug)]
pub struct Transcoded<'a> {
    pub stream: usize,
    pub to: Leg,
    pub payload: &'a [u8],
    pub timestamp: u32,
    pub marker: bool,
}

/// One side of the gateway, as a destination of media.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leg {
    Web,
    Ims,
}

impl Leg {
    /// 0 for the browser leg, 1 for the IMS leg: the index into per-leg arrays.
    pub fn index(self) -> usize {
        match self {
            Leg::Web => 0,
            Leg::Ims => 1,
        }
    }

    pub fn other(self) -> Leg {
        match self {
            Leg::Web => Leg::Ims,
            Leg::Ims => Leg::Web,
        }
    }
}

/// Output other than relayed media.
#[derive(Debug)]
pub enum Output {
    Transmit { from: SocketAddr, to: SocketAddr, data: Vec<u8> },
    Event(MediaEvent),
    /// A plaintext copy of a media packet for the recorder ([`MediaConfig::tap`]).
    Tap { leg: Leg, from: SocketAddr, to: SocketAddr, data: Vec<u8> },
    /// The receiver on leg `to` of transcoded stream `stream` asked something of the encoder
    /// that feeds it (its PLI, FIR, REMB or TMMBR): for the transcoder's channel toward `to`.
    /// Relaying it to the other leg's sender would be pointless: that sender feeds a decoder.
    Encoder { stream: usize, to: Leg, request: EncoderRequest },
}

/// What a receiver asks of a transcoder's encoder.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EncoderRequest {
    /// Send a keyframe next.
    Keyframe,
    /// Keep within this many bits/s (an estimate or a limit).
    MaxBitrate(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// The browser nominated a candidate pair (media may flow to it): the first one, and
    /// again whenever the nominated remote address changes (a new network, an ICE restart),
    /// so policy can describe the flow the access network really carries.
    IceConnected { remote: SocketAddr },
    /// DTLS finished and the browser's certificate matched its SDP fingerprint.
    DtlsConnected { profile: SrtpProfile },
    /// The call must end: consent lost, DTLS failure (a fingerprint mismatch is an attack),
    /// no media for too long.
    Failed { cause: FailCause, reason: String },
    /// The IMS leg's video sender must send a keyframe, and that leg negotiated no RTCP to ask
    /// with (no PLI, no FIR): signalling asks, with SIP INFO (RFC 5168).
    PictureFastUpdate,
}

/// What ended a call's media, for the signalling plane's Reason header and for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailCause {
    /// No media from either side for `inactivity_timeout` (hold excepted).
    Inactivity,
    /// The browser never nominated a pair, or its consent lapsed (RFC 7675).
    Ice,
    /// The DTLS handshake failed, or the certificate did not match the SDP fingerprint.
    Dtls,
    /// The browser closed DTLS (close_notify): it is gone.
    DtlsClosed,
}

/// What one leg of a stream exchanged with the gateway, for the call's record: media packets
/// received from the far end, loss and jitter of its current stream (RFC 3550 §A.3, §A.8;
/// they restart when its SSRC changes), and what the gateway sent on that leg.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LegReport {
    pub received: u64,
    /// Cumulative loss; negative when duplicates outnumber losses.
    pub lost: i64,
    pub jitter_ms: f64,
    pub sent: u64,
    pub sent_octets: u64,
}

/// One m-line at the end of a call.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamReport {
    /// The m-line's index in the plan.
    pub index: usize,
    /// `audio`, `video`.
    pub kind: String,
    pub mid: Option<String>,
    /// The primary codec on each leg (`opus/48000/2`, `PCMU/8000`), and whether the
    /// transcoder bridged them.
    pub web_codec: String,
    pub ims_codec: String,
    pub transcoded: bool,
    pub web: LegReport,
    pub ims: LegReport,
}

/// Per-session counters (plain integers: one session is owned by one task).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaCounters {
    pub web_to_ims: u64,
    pub ims_to_web: u64,
    pub rtcp_in: u64,
    /// Compound RTCP packets the gateway sent (reports, translated feedback, BYE).
    pub rtcp_out: u64,
    /// PLI/FIR/NACK translated to the other leg.
    pub feedback_relayed: u64,
    /// Feedback the other leg cannot take (not negotiated, no media yet, no keys).
    pub feedback_dropped: u64,
    pub dropped_no_consent: u64,
    pub dropped_no_keys: u64,
    pub dropped_srtp: u64,
    pub dropped_unknown_stream: u64,
    pub dropped_unroutable: u64,
    pub dropped_malformed: u64,
    /// Packets handed to the transcoder, and its frames sent on.
    pub to_transcoder: u64,
    pub from_transcoder: u64,
    /// Transcoded frames with nowhere to go (stream gone, leg not reachable).
    pub dropped_transcoded: u64,
    pub dropped_direction: u64,
    /// Packets of a source the stream already left, or before its first packet (see
    /// `estuary_rtp::StreamRewriter`).
    pub dropped_stale: u64,
}

impl MediaCounters {
    /// Every counter as (family, label, value), for a driver exporting them: `packets` by
    /// direction, `rtcp` in/out, `feedback` relayed/dropped, `dropped` by reason.
    pub fn entries(&self) -> [(&'static str, &'static str, u64); 17] {
        [
            ("transcoder", "in", self.to_transcoder),
            ("transcoder", "out", self.from_transcoder),
            ("packets", "web_to_ims", self.web_to_ims),
            ("packets", "ims_to_web", self.ims_to_web),
            ("rtcp", "in", self.rtcp_in),
            ("rtcp", "out", self.rtcp_out),
            ("feedback", "relayed", self.feedback_relayed),
            ("feedback", "dropped", self.feedback_dropped),
            ("dropped", "no_consent", self.dropped_no_consent),
            ("dropped", "no_keys", self.dropped_no_keys),
            ("dropped", "srtp", self.dropped_srtp),
            ("dropped", "unknown_stream", self.dropped_unknown_stream),
            ("dropped", "unroutable", self.dropped_unroutable),
            ("dropped", "malformed", self.dropped_malformed),
            ("dropped", "transcoded", self.dropped_transcoded),
            ("dropped", "direction", self.dropped_direction),
            ("dropped", "stale", self.dropped_stale),
        ]
    }
}

/// Why a session could not be built from a plan.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("the plan has no web transport credentials or DTLS role yet")]
    Incomplete,
    #[error("bad ICE credentials in the plan: {0}")]
    Ice(String),
    #[error("DTLS setup: {0}")]
    Dtls(String),
    #[error("SDES keys for stream {0}: {1}")]
    Sdes(usize, String),
}

/// Give the packet in `buf` the other leg's payload type and carry it into that leg's SSRC,
/// sequence and timestamp space. False: drop it.
fn retag(now: Instant, buf: &mut [u8], pt: u8, rewriter: &mut StreamRewriter) -> bool {
    match RtpPacketMut::parse(buf) {
        Ok(mut p) => p.set_pt(Pt(pt)),
        Err(_) => return false,
    }
    matches!(rewriter.rewrite(now, buf), Ok(Rewrite::Forward { .. }))
}

/// One m-line's relay state.
struct Stream {
    plan: StreamPlan,
    ims_rtp: SocketAddr,
    ims_rtcp: SocketAddr,
    /// Where the IMS peer's RTP goes: from the SDP, then latched to its real source.
    ims_remote_rtp: Option<SocketAddr>,
    ims_remote_rtcp: Option<SocketAddr>,
    latched: bool,
    /// SDES-SRTP toward IMS (RFC 4568), when the core's SDP asked for it. Boxed: most IMS
    /// legs are plain RTP/AVP, and two contexts inline would be 3.5 KiB in every stream.
    ims_tx: Option<Box<SrtpContext>>,
    ims_rx: Option<Box<SrtpContext>>,
    to_ims: StreamRewriter,
    to_web: StreamRewriter,
    rtcp_web: rtcp::LegRtcp,
    rtcp_ims: rtcp::LegRtcp,
    /// Transcoded frames enter the leg's rewriter as one more source, with this SSRC and
    /// their own sequence numbers, so a switch between relayed and transcoded media (a
    /// re-INVITE changing codecs) is a source switch the far end sees as one stream.
    transcoded_ssrc: Ssrc,
    transcoded_seq: [SeqNo; 2],
    /// Per leg (as `Leg as usize`): the newest transcoded frame sent there (its timestamp and
    /// when), which places RFC 4733 events rescaled to that leg's clock on the same timeline.
    transcoded_clock: [Option<(u32, Instant)>; 2],
    /// Per leg: the event being relayed (its input timestamp and the output one chosen), so
    /// all packets of one event keep one timestamp (RFC 4733 §2.3.1).
    event_ts: [Option<(u32, u32)>; 2],
}

impl Stream {
    /// Carries media on both legs (an m-line either side rejected has no RTCP either).
    fn is_live(&self) -> bool {
        self.plan.active && self.plan.ims_local_port != 0
    }
}


/// What protects the browser leg's media.
// Inline, not boxed: a session holds exactly one for its whole life, and a box would add a
// pointer chase to every packet.
#[allow(clippy::large_enum_variant)]
enum WebKeys {
    /// DTLS has not finished: nothing crosses.
    Pending,
    /// DTLS-SRTP keys (RFC 5764), both directions.
    Srtp { tx: SrtpContext, rx: SrtpContext },
    /// The browser closed DTLS (`close_notify`): nothing can be sent to it any more, what it
    /// still sends is taken until the call ends.
    Closed { rx: SrtpContext },
    /// REPLAY ONLY ([`MediaSession::replay`]): the leg carries the plaintext a recording
    /// holds (the recorder writes browser media decrypted), from the browser's recorded
    /// address, without ICE. No configuration reaches it: only `estuary replay` builds such a
    /// session.
    Plaintext,
}

impl WebKeys {
    /// Turns the packet in `buf` into plaintext; false when SRTP refuses it or there are no
    /// keys to receive with (callers check [`Self::can_receive`] first).
    fn unprotect(&mut self, buf: &mut Vec<u8>, rtcp: bool) -> bool {
        let rx = match self {
            WebKeys::Pending => return false,
            WebKeys::Plaintext => return true,
            WebKeys::Srtp { rx, .. } | WebKeys::Closed { rx } => rx,
        };
        let r = if rtcp { rx.unprotect_rtcp(buf) } else { rx.unprotect_rtp(buf) };
        r.is_ok()
    }

    /// Protects the plaintext in `buf` for the browser; false when SRTP refuses it or there
    /// are no keys to send with (callers check [`Self::can_send`] first).
    fn protect(&mut self, buf: &mut Vec<u8>, rtcp: bool) -> bool {
        let tx = match self {
            WebKeys::Pending | WebKeys::Closed { .. } => return false,
            WebKeys::Plaintext => return true,
            WebKeys::Srtp { tx, .. } => tx,
        };
        let r = if rtcp { tx.protect_rtcp(buf) } else { tx.protect_rtp(buf) };
        r.is_ok()
    }

    fn can_receive(&self) -> bool {
        !matches!(self, WebKeys::Pending)
    }

    fn can_send(&self) -> bool {
        matches!(self, WebKeys::Srtp { .. } | WebKeys::Plaintext)
    }
}

/// When a session next needs [`MediaSession::handle_timeout`], by how late it may run.
///
/// A driver wakes once for many calls by rounding deadlines up to a grid: a fine one for
/// `exact`, a coarse one for `lenient`, so that an idle call's reports and expiries share a
/// wake-up with every other call's instead of each costing one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// Protocol retransmissions (DTLS flights) and the close grace: on time.
    pub exact: Option<Instant>,
    /// Deadlines that tolerate a fraction of a second: RTCP reports (their interval is
    /// randomised over 0.5..1.5 of at least 5 s anyway, RFC 3550 §6.3.1), consent expiry
    /// (30 s, RFC 7675) and the inactivity timeout.
    pub lenient: Option<Instant>,
}

/// One call's media. See the crate documentation for the drive loop.
pub struct MediaSession {
    cfg: MediaConfig,
    web_local: SocketAddr,
    ice: IceLite,
    dtls: DtlsEndpoint,
    web_keys: WebKeys,
    /// The browser's nominated address; `None` until nominated or after consent expired.
    web_remote: Option<SocketAddr>,
    /// The browser address last reported in [`MediaEvent::IceConnected`].
    reported_remote: Option<SocketAddr>,
    /// Where the browser's last DTLS record came from (an address that passed a check):
    /// where handshake flights go until a pair is nominated.
    dtls_peer: Option<SocketAddr>,
    streams: Vec<Stream>,
    outputs: VecDeque<Output>,
    counters: MediaCounters,
    last_media: Instant,
    failed: bool,
    /// The browser sent `close_notify`: the call fails at this instant unless signalling
    /// ends it first ([`DTLS_CLOSE_GRACE`]).
    closed_until: Option<Instant>,
    rng: StdRng,
    wall: WallClock,
    /// The ICE and DTLS engines' deadlines, re-read only after they took input or a timeout
    /// (asking them per packet cost more than relaying it: `make bench`).
    ice_timeout: Option<Instant>,
    dtls_timeout: Option<Instant>,
}

impl MediaSession {
    /// A session for `plan` (settled by an answer). `cert` is the gateway's DTLS certificate,
    /// whose fingerprint the plan's SDP carried; `seed` (from a CSPRNG) draws the initial RTP
    /// sequence numbers and timestamps.
    pub fn new(cfg: MediaConfig, plan: &MediaPlan, cert: &Certificate, now: Instant, seed: u64) -> Result<MediaSession, MediaError> {
        let web = &plan.web;
        let role = match web.dtls_role.ok_or(MediaError::Incomplete)? {
            estuary_sdp::DtlsRole::Client => estuary_srtp::DtlsRole::Client,
            estuary_sdp::DtlsRole::Server => estuary_srtp::DtlsRole::Server,
        };
        let local = Credentials::new(web.local_ufrag.clone(), web.local_pwd.clone()).map_err(|e| MediaError::Ice(e.to_string()))?;
        let mut ice_cfg = IceConfig::new(local);
        ice_cfg.settings = cfg.ice.clone();
        let mut rng = StdRng::seed_from_u64(seed);
        ice_cfg.tie_breaker = rng.random();
        let mut ice = IceLite::new(ice_cfg, now);
        if let (Some(u), Some(p)) = (&web.remote_ufrag, &web.remote_pwd) {
            if let Ok(c) = Credentials::new(u.clone(), p.clone()) {
                ice.set_remote_credentials(c);
            }
        }
        let fingerprints = web
            .remote_fingerprints
            .iter()
            .filter_map(|f| estuary_srtp::Fingerprint::parse(&f.to_string()).ok())
            .collect();
        // Both profiles a browser may pick (DEPENDENCIES.md: Chromium takes CM_80, Firefox GCM).
        let profiles = [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmSha1_80];
        let dtls = DtlsEndpoint::new(role, cert, fingerprints, &profiles, now).map_err(|e| MediaError::Dtls(e.to_string()))?;
        let cfg_wall = cfg.wall_clock.unwrap_or(WallClock::new(now, SystemTime::UNIX_EPOCH));
        let mut s = MediaSession {
            web_local: SocketAddr::new(cfg.web_address, web.local_port),
            cfg,
            ice,
            dtls,
            web_keys: WebKeys::Pending,
            web_remote: None,
            reported_remote: None,
            dtls_peer: None,
            streams: Vec::new(),
            outputs: VecDeque::new(),
            counters: MediaCounters::default(),
            last_media: now,
            failed: false,
            closed_until: None,
            rng,
            wall: cfg_wall,
            ice_timeout: None,
            dtls_timeout: None,
        };
        s.ice_timeout = s.ice.poll_timeout();
        s.update_plan(plan, now)?;
        s.drain_dtls(now);
        Ok(s)
    }

    /// REPLAY ONLY: a session whose browser leg is the plaintext of a recording, as if ICE had
    /// nominated `browser` (or, when the replay cannot tell yet, the source of the first
    /// browser packet) and DTLS had finished: `estuary replay` feeds it the decrypted
    /// browser media the recorder wrote and reads what it would have encrypted. Everything
    /// past the SRTP layer (stream demux, payload type mapping, rewriting, RFC 4733, RTCP,
    /// transcoding hand-off) is the code every call runs. Not reachable from configuration.
    pub fn replay(cfg: MediaConfig, plan: &MediaPlan, cert: &Certificate, now: Instant, seed: u64, browser: Option<SocketAddr>) -> Result<MediaSession, MediaError> {
        let mut s = MediaSession::new(cfg, plan, cert, now, seed)?;
        s.web_keys = WebKeys::Plaintext;
        s.web_remote = browser;
        // No ICE: consent cannot expire, and no DTLS flight will be sent.
        s.ice_timeout = None;
        s.dtls_timeout = None;
        s.outputs.clear();
        Ok(s)
    }

    /// A new plan after a re-offer (hold, resume, codec or address change, added streams):
    /// streams keep their rewriters, so the other leg sees one continuous stream.
    /// The inactivity clock restarts at `now`: after a resume from hold silence so far was
    /// expected.
    pub fn update_plan(&mut self, plan: &MediaPlan, now: Instant) -> Result<(), MediaError> {
        self.last_media = now;
        // New credentials are an ICE restart (RFC 8445 §9): media keeps flowing on the
        // selected pair until the browser nominates one under the new credentials.
        let web = &plan.web;
        if web.local_ufrag != self.ice.local_credentials().ufrag() {
            let local = Credentials::new(web.local_ufrag.clone(), web.local_pwd.clone()).map_err(|e| MediaError::Ice(e.to_string()))?;
            let remote = match (&web.remote_ufrag, &web.remote_pwd) {
                (Some(u), Some(p)) => Credentials::new(u.clone(), p.clone()).ok(),
                _ => None,
            };
            self.ice.restart(now, local, remote);
            self.ice_timeout = self.ice.poll_timeout();
        }
        for sp in &plan.streams {
            let ims_rtp = SocketAddr::new(self.cfg.ims_address, sp.ims_local_port);
            let ims_rtcp = if sp.ims_rtcp_mux { ims_rtp } else { SocketAddr::new(self.cfg.ims_address, sp.ims_local_port.wrapping_add(1)) };
            let (ims_tx, ims_rx) = match &sp.ims_srtp {
                Some(k) => {
                    let profile = SrtpProfile::from_sdes_name(k.suite.name()).ok_or_else(|| MediaError::Sdes(sp.index, k.suite.name().into()))?;
                    let tx = SrtpMasterKey::from_concatenated(profile, &k.local_key_salt).map_err(|e| MediaError::Sdes(sp.index, e.to_string()))?;
                    let rx = SrtpMasterKey::from_concatenated(profile, &k.remote_key_salt).map_err(|e| MediaError::Sdes(sp.index, e.to_string()))?;
                    (Some(Box::new(SrtpContext::new(&tx))), Some(Box::new(SrtpContext::new(&rx))))
                }
                None => (None, None),
            };
            match self.streams.get_mut(sp.index) {
                Some(st) => {
                    // Same keys keep their contexts (replay windows, ROC); new keys replace them.
                    if st.plan.ims_srtp != sp.ims_srtp {
                        st.ims_tx = ims_tx;
                        st.ims_rx = ims_rx;
                    }
                    if st.plan.ims_remote_rtp != sp.ims_remote_rtp {
                        st.ims_remote_rtp = sp.ims_remote_rtp;
                        st.ims_remote_rtcp = sp.ims_remote_rtcp;
                        st.latched = false;
                    }
                    st.ims_rtp = ims_rtp;
                    st.ims_rtcp = ims_rtcp;
                    st.plan = sp.clone();
                }
                None => {
                    let clock = |web: bool| {
                        sp.codecs.first().map_or(ClockRate::NARROWBAND, |c| ClockRate(if web { c.web.clock } else { c.ims.clock }))
                    };
                    let to_ims = StreamRewriter::new(Ssrc(self.rng.random()), clock(false), SeqNo(self.rng.random()), self.rng.random());
                    let to_web = StreamRewriter::new(Ssrc(sp.web_ssrc), clock(true), SeqNo(self.rng.random()), self.rng.random());
                    let rtcp_web = rtcp::LegRtcp::new(to_web.out_ssrc(), clock(true), now, &mut self.rng);
                    let rtcp_ims = rtcp::LegRtcp::new(to_ims.out_ssrc(), clock(false), now, &mut self.rng);
                    self.streams.push(Stream {
                        plan: sp.clone(),
                        ims_rtp,
                        ims_rtcp,
                        ims_remote_rtp: sp.ims_remote_rtp,
                        ims_remote_rtcp: sp.ims_remote_rtcp,
                        latched: false,
                        ims_tx,
                        ims_rx,
                        to_ims,
                        to_web,
                        rtcp_web,
                        rtcp_ims,
                        transcoded_ssrc: Ssrc(self.rng.random()),
                        transcoded_seq: [SeqNo(self.rng.random()), SeqNo(self.rng.random())],
                        transcoded_clock: [None, None],
                        event_ts: [None, None],
                    });
                }
            }
        }
        Ok(())
    }

    /// The local addresses this session receives on: the web socket, then each active IMS
    /// stream's RTP and RTCP ports.
    pub fn local_addresses(&self) -> Vec<SocketAddr> {
        let mut v = vec![self.web_local];
        for s in self.streams.iter().filter(|s| s.plan.ims_local_port != 0) {
            v.push(s.ims_rtp);
            if s.ims_rtcp != s.ims_rtp {
                v.push(s.ims_rtcp);
            }
        }
        v
    }

    /// The gateway's ICE ufrag toward the browser: the first half of every check's USERNAME.
    pub fn local_ufrag(&self) -> &str {
        self.ice.local_credentials().ufrag()
    }

    /// The browser-facing address this session receives on.
    pub fn web_local(&self) -> SocketAddr {
        self.web_local
    }

    /// Whether `remote` has passed an ICE check of this session and still holds consent.
    pub fn web_consented(&self, remote: SocketAddr) -> bool {
        self.ice.is_consented(remote)
    }

    pub fn counters(&self) -> &MediaCounters {
        &self.counters
    }

    /// Per live stream, what each leg exchanged (for the call's record; allocates, so call it
    /// once, at the end).
    pub fn report(&self) -> Vec<StreamReport> {
        let name = |r: &estuary_sdp::Rtpmap| match r.channels {
            Some(c) if c > 1 => format!("{}/{}/{c}", r.encoding, r.clock),
            _ => format!("{}/{}", r.encoding, r.clock),
        };
        self.streams
            .iter()
            .filter(|s| s.is_live())
            .map(|s| {
                let primary = s.plan.codecs.first();
                StreamReport {
                    index: s.plan.index,
                    kind: s.plan.kind.clone(),
                    mid: s.plan.mid.clone(),
                    web_codec: primary.map(|c| name(&c.web)).unwrap_or_default(),
                    ims_codec: primary.map(|c| name(&c.ims)).unwrap_or_default(),
                    transcoded: s.plan.transcodes(),
                    web: s.rtcp_web.report(),
                    ims: s.rtcp_ims.report(),
                }
            })
            .collect()
    }

    /// A datagram arrived on `local` from `source`. Media is rewritten in `buf` and
    /// [`Forward::Send`] says where it goes; everything else is consumed (drain
    /// [`Self::poll_output`] afterwards).
    pub fn handle_datagram(&mut self, now: Instant, local: SocketAddr, source: SocketAddr, buf: &mut Vec<u8>) -> Forward {
        if self.failed {
            return Forward::Consumed;
        }
        if local == self.web_local {
            return self.on_web_datagram(now, source, buf);
        }
        match self.streams.iter().position(|s| s.ims_rtp == local || s.ims_rtcp == local) {
            Some(i) => self.on_ims_datagram(now, i, local, source, buf),
            None => {
                self.counters.dropped_unroutable += 1;
                Forward::Consumed
            }
        }
    }

    fn on_web_datagram(&mut self, now: Instant, source: SocketAddr, buf: &mut Vec<u8>) -> Forward {
        match classify(buf) {
            PacketKind::Stun | PacketKind::Dtls if self.replaying() => Forward::Consumed,
            PacketKind::Stun => {
                let input = estuary_ice::Input::Receive { local: self.web_local, source, data: buf };
                if self.ice.handle_input(now, input).is_err() {
                    self.counters.dropped_malformed += 1;
                }
                self.drain_ice();
                Forward::Consumed
            }
            PacketKind::Dtls => {
                if !self.ice.is_consented(source) {
                    self.counters.dropped_no_consent += 1;
                    return Forward::Consumed;
                }
                self.dtls_peer = Some(source);
                let _ = self.dtls.handle_input(now, buf);
                self.drain_dtls(now);
                Forward::Consumed
            }
            PacketKind::Rtcp => {
                if self.web_ready(source) {
                    if self.web_keys.unprotect(buf, true) {
                        self.counters.rtcp_in += 1;
                        self.tap(Leg::Web, source, self.web_local, buf);
                        self.on_rtcp(now, Leg::Web, None, buf);
                    } else {
                        self.counters.dropped_srtp += 1;
                    }
                }
                Forward::Consumed
            }
            PacketKind::Rtp => self.web_rtp(now, source, buf),
            PacketKind::Unknown => {
                self.counters.dropped_malformed += 1;
                Forward::Consumed
            }
        }
    }

    /// A replay session ([`Self::replay`]).
    fn replaying(&self) -> bool {
        matches!(self.web_keys, WebKeys::Plaintext)
    }

    /// A plaintext copy for the recorder, when it is on.
    fn tap(&mut self, leg: Leg, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        if self.cfg.tap {
            self.outputs.push_back(Output::Tap { leg, from, to, data: data.to_vec() });
        }
    }

    /// Whether media from `source` on the web leg may be taken: ICE consent (the recorded
    /// browser's address in a replay) and SRTP keys.
    fn web_ready(&mut self, source: SocketAddr) -> bool {
        let consented = if self.replaying() { *self.web_remote.get_or_insert(source) == source } else { self.ice.is_consented(source) };
        if !consented {
            self.counters.dropped_no_consent += 1;
            return false;
        }
        if !self.web_keys.can_receive() {
            self.counters.dropped_no_keys += 1;
            return false;
        }
        true
    }

    fn web_rtp(&mut self, now: Instant, source: SocketAddr, buf: &mut Vec<u8>) -> Forward {
        if !self.web_ready(source) {
            return Forward::Consumed;
        }
        if !self.web_keys.unprotect(buf, false) {
            self.counters.dropped_srtp += 1;
            return Forward::Consumed;
        }
        self.tap(Leg::Web, source, self.web_local, buf);
        let Ok(pkt) = RtpPacket::parse(buf) else {
            self.counters.dropped_malformed += 1;
            return Forward::Consumed;
        };
        let pt = pkt.pt().0;
        // BUNDLE demux by payload type: each m-line's payload types are its own.
        let found = self.streams.iter().enumerate().find_map(|(i, s)| {
            let c = s.plan.codecs.iter().find(|c| c.web_pt == pt).map(|c| (c.ims_pt, c.transcode, false));
            let d = s.plan.dtmf.as_ref().filter(|d| d.web_pt == pt).map(|d| (d.ims_pt, false, d.web_clock != d.ims_clock));
            c.or(d).map(|(ims_pt, transcode, rescale)| (i, ims_pt, transcode, rescale))
        });
        let Some((i, ims_pt, transcode, rescale)) = found else {
            self.counters.dropped_unknown_stream += 1;
            return Forward::Consumed;
        };
        self.last_media = now;
        let st = &mut self.streams[i];
        st.rtcp_web.on_media_received(now, &pkt);
        if !st.plan.active || !st.plan.ims_direction.sends() || !st.plan.web_direction.receives() {
            self.counters.dropped_direction += 1;
            return Forward::Consumed;
        }
        if transcode {
            self.counters.to_transcoder += 1;
            return Forward::Transcode { stream: i, to: Leg::Ims };
        }
        // The IMS leg negotiated no header extensions.
        match estuary_rtp::strip_extension(buf) {
            Ok(n) => buf.truncate(n),
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return Forward::Consumed;
            }
        }
        if rescale && !self.rescale_event(now, i, Leg::Ims, buf) {
            return Forward::Consumed;
        }
        match self.emit_to_ims(now, i, ims_pt, buf) {
            Some(f) => {
                self.counters.web_to_ims += 1;
                f
            }
            None => Forward::Consumed,
        }
    }

    /// The plaintext RTP packet in `buf` leaves on stream `i`'s IMS leg with payload type
    /// `pt`: rewritten into the leg's SSRC/sequence/timestamp space, counted for RTCP,
    /// protected if SDES. `None`: dropped (counted).
    fn emit_to_ims(&mut self, now: Instant, i: usize, pt: u8, buf: &mut Vec<u8>) -> Option<Forward> {
        let st = &mut self.streams[i];
        let Some(to) = st.ims_remote_rtp else {
            self.counters.dropped_unroutable += 1;
            return None;
        };
        if !retag(now, buf, pt, &mut st.to_ims) {
            self.counters.dropped_stale += 1;
            return None;
        }
        if let Ok(p) = RtpPacket::parse(buf) {
            st.rtcp_ims.on_media_sent(now, &p);
        }
        let from = st.ims_rtp;
        self.tap(Leg::Ims, from, to, buf);
        let st = &mut self.streams[i];
        if let Some(tx) = st.ims_tx.as_mut() {
            if tx.protect_rtp(buf).is_err() {
                self.counters.dropped_srtp += 1;
                return None;
            }
        }
        Some(Forward::Send { from: st.ims_rtp, to })
    }

    /// As [`Self::emit_to_ims`] toward the browser (DTLS-SRTP keys needed).
    fn emit_to_web(&mut self, now: Instant, i: usize, pt: u8, buf: &mut Vec<u8>) -> Option<Forward> {
        let st = &mut self.streams[i];
        let Some(to) = self.web_remote.filter(|_| self.web_keys.can_send()) else {
            self.counters.dropped_no_keys += 1;
            return None;
        };
        if !retag(now, buf, pt, &mut st.to_web) {
            self.counters.dropped_stale += 1;
            return None;
        }
        if let Ok(p) = RtpPacket::parse(buf) {
            st.rtcp_web.on_media_sent(now, &p);
        }
        self.tap(Leg::Web, self.web_local, to, buf);
        if !self.web_keys.protect(buf, false) {
            self.counters.dropped_srtp += 1;
            return None;
        }
        Some(Forward::Send { from: self.web_local, to })
    }

    /// An RFC 4733 event packet in `buf` (plaintext) whose clock differs on the leg `to`
    /// (telephone-event/48000 with Opus, /8000 with G.711): its durations are rescaled and it
    /// joins the transcoded audio's source on that leg, its timestamp placed on the audio's
    /// timeline at the moment the event started (RFC 4733 §2.3.1: every packet of an event
    /// keeps the start timestamp). False: not an event, dropped (counted).
    fn rescale_event(&mut self, now: Instant, i: usize, to: Leg, buf: &mut [u8]) -> bool {
        let st = &mut self.streams[i];
        let Some(d) = st.plan.dtmf.clone() else { return false };
        let (from_clock, to_clock) = match to {
            Leg::Ims => (d.web_clock, d.ims_clock),
            Leg::Web => (d.ims_clock, d.web_clock),
        };
        let Ok(in_ts) = RtpPacket::parse(buf).map(|p| p.timestamp()) else {
            self.counters.dropped_malformed += 1;
            return false;
        };
        let leg = to as usize;
        let out_ts = match st.event_ts[leg] {
            Some((event, out)) if event == in_ts => out,
            _ => {
                // The audio timeline now: the last transcoded frame's timestamp advanced by
                // the time since it left. Before any audio, any start will do.
                let out = st.transcoded_clock[leg].map_or(in_ts, |(ts, at)| {
                    let ticks = ClockRate(to_clock).ticks(now.saturating_duration_since(at));
                    ts.wrapping_add(ticks as u32)
                });
                st.event_ts[leg] = Some((in_ts, out));
                out
            }
        };
        // Durations rescaled by the shared RFC 4733 helper; the timestamp it maps is replaced
        // by the audio timeline's below.
        let mut scaler = estuary_rtp::TimestampScaler::new(ClockRate(from_clock), ClockRate(to_clock));
        if estuary_rtp::rescale_telephone_event(buf, &mut scaler).is_err() {
            self.counters.dropped_malformed += 1;
            return false;
        }
        let Ok(mut p) = RtpPacketMut::parse(buf) else { return false };
        let seq = &mut st.transcoded_seq[leg];
        *seq = seq.next();
        p.set_seq(*seq);
        p.set_ssrc(st.transcoded_ssrc);
        p.set_timestamp(out_ts);
        true
    }

    /// A frame the transcoder produced, written as RTP into `buf` (capacity [`MIN_BUFFER`])
    /// and sent like relayed media; the returned [`Forward`] says where.
    pub fn send_transcoded(&mut self, now: Instant, frame: Transcoded<'_>, buf: &mut Vec<u8>) -> Forward {
        let Transcoded { stream, to, payload, timestamp, marker } = frame;
        let Some(st) = self.streams.get_mut(stream) else {
            self.counters.dropped_transcoded += 1;
            return Forward::Consumed;
        };
        let Some(codec) = st.plan.codecs.iter().find(|c| c.transcode) else {
            // A re-offer found a common codec meanwhile: late frames have no place.
            self.counters.dropped_transcoded += 1;
            return Forward::Consumed;
        };
        let sends = match to {
            Leg::Ims => st.plan.ims_direction.sends(),
            Leg::Web => st.plan.web_direction.sends(),
        };
        if self.failed || !st.plan.active || !sends {
            self.counters.dropped_transcoded += 1;
            return Forward::Consumed;
        }
        let pt = if to == Leg::Ims { codec.ims_pt } else { codec.web_pt };
        let seq = &mut st.transcoded_seq[to as usize];
        *seq = seq.next();
        st.transcoded_clock[to as usize] = Some((timestamp, now));
        let header = estuary_rtp::RtpHeader { marker, pt: Pt(pt), seq: *seq, timestamp, ssrc: st.transcoded_ssrc };
        buf.resize(MIN_BUFFER, 0);
        let Ok(n) = header.write_with_payload(payload, buf) else {
            self.counters.dropped_transcoded += 1;
            return Forward::Consumed;
        };
        buf.truncate(n);
        let sent = match to {
            Leg::Ims => self.emit_to_ims(now, stream, pt, buf),
            Leg::Web => self.emit_to_web(now, stream, pt, buf),
        };
        match sent {
            Some(f) => {
                self.counters.from_transcoder += 1;
                f
            }
            None => Forward::Consumed,
        }
    }

    fn on_ims_datagram(&mut self, now: Instant, i: usize, local: SocketAddr, source: SocketAddr, buf: &mut Vec<u8>) -> Forward {
        let latch = self.cfg.latch;
        let st = &mut self.streams[i];
        let is_rtcp = local == st.ims_rtcp && (st.ims_rtcp != st.ims_rtp || classify(buf) == PacketKind::Rtcp);
        if is_rtcp {
            let ok = match st.ims_rx.as_mut() {
                Some(rx) => rx.unprotect_rtcp(buf).is_ok(),
                None => true,
            };
            if ok {
                self.counters.rtcp_in += 1;
                if latch && !st.latched {
                    st.ims_remote_rtcp = Some(source);
                }
                self.tap(Leg::Ims, source, local, buf);
                self.on_rtcp(now, Leg::Ims, Some(i), buf);
            } else {
                self.counters.dropped_srtp += 1;
            }
            return Forward::Consumed;
        }
        // Symmetric RTP (RFC 4961): the first authentic packet fixes where we send.
        if !latch && st.ims_remote_rtp.is_some_and(|r| r != source) {
            self.counters.dropped_unroutable += 1;
            return Forward::Consumed;
        }
        if let Some(rx) = st.ims_rx.as_mut() {
            if rx.unprotect_rtp(buf).is_err() {
                self.counters.dropped_srtp += 1;
                return Forward::Consumed;
            }
        }
        self.tap(Leg::Ims, source, local, buf);
        let st = &mut self.streams[i];
        let Ok(pkt) = RtpPacket::parse(buf) else {
            self.counters.dropped_malformed += 1;
            return Forward::Consumed;
        };
        if latch && !st.latched {
            st.ims_remote_rtp = Some(source);
            st.latched = true;
        }
        self.last_media = now;
        st.rtcp_ims.on_media_received(now, &pkt);
        let pt = pkt.pt().0;
        let mapped = st
            .plan
            .codecs
            .iter()
            .find(|c| c.ims_pt == pt)
            .map(|c| (c.web_pt, c.transcode, false))
            .or_else(|| st.plan.dtmf.as_ref().filter(|d| d.ims_pt == pt).map(|d| (d.web_pt, false, d.web_clock != d.ims_clock)));
        let Some((web_pt, transcode, rescale)) = mapped else {
            self.counters.dropped_unknown_stream += 1;
            return Forward::Consumed;
        };
        if !st.plan.active || !st.plan.web_direction.sends() || !st.plan.ims_direction.receives() {
            self.counters.dropped_direction += 1;
            return Forward::Consumed;
        }
        if transcode {
            self.counters.to_transcoder += 1;
            return Forward::Transcode { stream: i, to: Leg::Web };
        }
        if rescale && !self.rescale_event(now, i, Leg::Web, buf) {
            return Forward::Consumed;
        }
        match self.emit_to_web(now, i, web_pt, buf) {
            Some(f) => {
                self.counters.ims_to_web += 1;
                f
            }
            None => Forward::Consumed,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        // A replay has neither ICE nor DTLS to run.
        if !self.replaying() {
            self.ice.handle_timeout(now);
            self.drain_ice();
            self.dtls.handle_timeout(now);
            self.drain_dtls(now);
        }
        if self.closed_until.is_some_and(|t| now >= t) {
            self.fail(FailCause::DtlsClosed, "DTLS closed by the browser".to_owned());
            return;
        }
        self.send_reports(now, false);
        if self.on_hold() {
            // Silence is expected on hold; the clock starts again when the hold ends.
            self.last_media = now;
        } else if self.inactivity_deadline().is_some_and(|d| now >= d) {
            let reason = format!("no media for {} s", self.cfg.inactivity_timeout.as_secs());
            self.fail(FailCause::Inactivity, reason);
        }
    }

    /// When the call ends for lack of media; `None` when disabled (a zero timeout), failed,
    /// or on hold.
    fn inactivity_deadline(&self) -> Option<Instant> {
        (!self.failed && !self.cfg.inactivity_timeout.is_zero() && !self.on_hold())
            .then(|| self.last_media + self.cfg.inactivity_timeout)
    }

    /// Every active stream is held (no direction sends anything): silence is expected.
    fn on_hold(&self) -> bool {
        self.streams
            .iter()
            .filter(|s| s.plan.active)
            .all(|s| !s.plan.web_direction.receives() && !s.plan.ims_direction.receives())
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Self::handle_timeout`] is next needed: the earlier of [`Self::poll_due`]'s two.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = self.poll_due();
        due.exact.into_iter().chain(due.lenient).min()
    }

    /// The session's deadlines, split by how late they may run (see [`Due`]).
    pub fn poll_due(&self) -> Due {
        if self.failed {
            return Due::default();
        }
        let reports = self.streams.iter().filter(|s| s.is_live()).map(|s| s.rtcp_web.next_report().min(s.rtcp_ims.next_report())).min();
        Due {
            exact: self.dtls_timeout.into_iter().chain(self.closed_until).min(),
            lenient: [self.ice_timeout, self.inactivity_deadline(), reports].into_iter().flatten().min(),
        }
    }

    /// The call is over: an RTCP BYE (after a last report) on every leg that can still be
    /// reached, so both far ends stop expecting media at once (RFC 3550 §6.6). The session
    /// takes nothing afterwards; drain [`Self::poll_output`] to send them.
    pub fn close(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        self.send_reports(now, true);
        self.failed = true;
    }

    /// A compound report on every leg that is due, or on every leg followed by a BYE when
    /// the call ends (`bye`).
    fn send_reports(&mut self, now: Instant, bye: bool) {
        let ntp = self.wall.ntp(now);
        for i in 0..self.streams.len() {
            if !self.streams[i].is_live() {
                continue;
            }
            for leg in [Leg::Web, Leg::Ims] {
                let st = &mut self.streams[i];
                let r = match leg {
                    Leg::Web => &mut st.rtcp_web,
                    Leg::Ims => &mut st.rtcp_ims,
                };
                if !r.take_due(now, &mut self.rng) && !bye {
                    continue;
                }
                let mut data = vec![0u8; rtcp::MAX_COMPOUND];
                let mut n = r.write_report(now, ntp, &mut data);
                if bye {
                    n += write::bye(&mut data[n..], &[r.ssrc()], None).unwrap_or(0);
                }
                data.truncate(n);
                self.send_rtcp(i, leg, data);
            }
        }
    }

    /// Protects (SRTCP where the leg uses SRTP) and queues an RTCP compound for `leg` of
    /// stream `i`. False when that leg cannot be reached yet (no nominated pair, no keys, no
    /// address).
    fn send_rtcp(&mut self, i: usize, leg: Leg, mut data: Vec<u8>) -> bool {
        if data.is_empty() {
            return false;
        }
        let (from, to) = match leg {
            Leg::Web => {
                let Some(to) = self.web_remote.filter(|_| self.web_keys.can_send()) else { return false };
                self.tap(Leg::Web, self.web_local, to, &data);
                if !self.web_keys.protect(&mut data, true) {
                    return false;
                }
                (self.web_local, to)
            }
            Leg::Ims => {
                let Some(to) = self.streams[i].ims_remote_rtcp else { return false };
                self.tap(Leg::Ims, self.streams[i].ims_rtcp, to, &data);
                let st = &mut self.streams[i];
                if let Some(tx) = st.ims_tx.as_mut() {
                    if tx.protect_rtcp(&mut data).is_err() {
                        return false;
                    }
                }
                (st.ims_rtcp, to)
            }
        };
        self.counters.rtcp_out += 1;
        self.outputs.push_back(Output::Transmit { from, to, data });
        true
    }

    /// A plaintext compound RTCP packet from `leg` (for IMS, arrived on stream `ims_stream`'s
    /// port): SRs feed our report blocks, feedback about a stream we send on that leg goes to
    /// the other leg. Everything else was counted and ends here.
    fn on_rtcp(&mut self, now: Instant, leg: Leg, ims_stream: Option<usize>, buf: &[u8]) {
        for p in Compound::new(buf) {
            let Ok(p) = p else {
                self.counters.dropped_malformed += 1;
                return;
            };
            match p {
                RtcpPacket::SenderReport(sr) => {
                    let (ssrc, ntp) = (sr.ssrc(), sr.info().ntp);
                    for st in &mut self.streams {
                        match leg {
                            Leg::Web => st.rtcp_web.on_sender_report(now, ssrc, ntp),
                            Leg::Ims => st.rtcp_ims.on_sender_report(now, ssrc, ntp),
                        }
                    }
                }
                RtcpPacket::Pli(pli) => {
                    if let Some(i) = self.sending_stream(leg, ims_stream, pli.media) {
                        self.keyframe_request(i, leg);
                    }
                }
                RtcpPacket::Fir(fir) => {
                    for e in fir.entries() {
                        let Some(i) = self.sending_stream(leg, ims_stream, e.ssrc) else { continue };
                        let st = &mut self.streams[i];
                        let r = if leg == Leg::Web { &mut st.rtcp_web } else { &mut st.rtcp_ims };
                        if r.on_fir(e.seq_nr) {
                            self.keyframe_request(i, leg);
                        }
                    }
                }
                // The browser's estimate covers the streams it lists; only an encoder of ours
                // can follow it (a relayed stream's sender is the core, which has no REMB).
                RtcpPacket::Afb(afb) if leg == Leg::Web => {
                    let Some(remb) = afb.remb() else { continue };
                    let bitrate = u32::try_from(remb.bitrate).unwrap_or(u32::MAX);
                    for ssrc in remb.ssrcs() {
                        let Some(i) = self.sending_stream(leg, ims_stream, ssrc) else { continue };
                        if self.streams[i].plan.transcodes() {
                            self.counters.feedback_relayed += 1;
                            self.outputs.push_back(Output::Encoder { stream: i, to: leg, request: EncoderRequest::MaxBitrate(bitrate) });
                        }
                    }
                }
                RtcpPacket::Tmmbr(tmmbr) if leg == Leg::Ims => {
                    for e in tmmbr.entries() {
                        let Some(i) = self.sending_stream(leg, ims_stream, e.ssrc) else { continue };
                        if !self.streams[i].plan.transcodes() {
                            self.counters.feedback_dropped += 1;
                            continue;
                        }
                        let bitrate = u32::try_from(e.bitrate).unwrap_or(u32::MAX);
                        self.counters.feedback_relayed += 1;
                        self.outputs.push_back(Output::Encoder { stream: i, to: leg, request: EncoderRequest::MaxBitrate(bitrate) });
                        // RFC 5104 §3.5.4.2: the media sender confirms what it now keeps to.
                        let st = &self.streams[i];
                        let mut data = vec![0u8; rtcp::MAX_COMPOUND];
                        let tuple = TmmbEntry { ssrc: tmmbr.sender, ..e };
                        if let Some(n) = st.rtcp_ims.write_tmmbn(tuple, &mut data) {
                            data.truncate(n);
                            self.send_rtcp(i, Leg::Ims, data);
                        }
                    }
                }
                RtcpPacket::Nack(nack) => {
                    let Some(i) = self.sending_stream(leg, ims_stream, nack.media) else { continue };
                    let st = &self.streams[i];
                    let mut data = vec![0u8; rtcp::MAX_COMPOUND];
                    // Sequence numbers we sent on `leg` map back to those the other leg's
                    // sender used; the request goes to that sender.
                    let n = match leg {
                        Leg::Web => st.rtcp_ims.remote_ssrc().and_then(|media| {
                            st.rtcp_ims.write_nack(st.plan.ims_feedback, media, nack.lost().filter_map(|s| st.to_web.incoming_seq(s)), &mut data)
                        }),
                        Leg::Ims => st.rtcp_web.remote_ssrc().and_then(|media| {
                            st.rtcp_web.write_nack(st.plan.web_feedback, media, nack.lost().filter_map(|s| st.to_ims.incoming_seq(s)), &mut data)
                        }),
                    };
                    self.relay_feedback(i, leg, n, data);
                }
                _ => {}
            }
        }
    }

    /// The stream whose outgoing SSRC on `leg` is `media` (on IMS, only the stream whose port
    /// the packet arrived on).
    fn sending_stream(&self, leg: Leg, ims_stream: Option<usize>, media: Ssrc) -> Option<usize> {
        match leg {
            Leg::Web => self.streams.iter().position(|s| s.is_live() && s.rtcp_web.ssrc() == media),
            Leg::Ims => ims_stream.filter(|&i| self.streams[i].rtcp_ims.ssrc() == media),
        }
    }

    /// `from` asked for a key frame of stream `i`: ask the other leg's sender in the form that
    /// leg negotiated.
    /// On a transcoded stream the request is for our encoder toward `from`.
    fn keyframe_request(&mut self, i: usize, from: Leg) {
        if self.streams[i].plan.transcodes() {
            self.counters.feedback_relayed += 1;
            self.outputs.push_back(Output::Encoder { stream: i, to: from, request: EncoderRequest::Keyframe });
            return;
        }
        self.ask_sender_for_keyframe(i, from.other());
    }

    /// The transcoder's decoder of stream `stream`'s media from leg `from` lost its reference
    /// (a lost packet, a decode error): ask that leg's sender for a keyframe, in the form the
    /// leg negotiated (PLI, else FIR; an IMS leg with neither is asked by SIP INFO).
    pub fn request_keyframe(&mut self, stream: usize, from: Leg) {
        if stream < self.streams.len() && !self.failed {
            self.ask_sender_for_keyframe(stream, from);
        }
    }

    /// Leg `from` asked in signalling (SIP INFO, RFC 5168) for a keyframe of the video it
    /// receives, which names no stream: every live video stream toward it gets one.
    pub fn picture_fast_update(&mut self, from: Leg) {
        if self.failed {
            return;
        }
        for i in 0..self.streams.len() {
            if self.streams[i].is_live() && self.streams[i].plan.kind == "video" {
                self.keyframe_request(i, from);
            }
        }
    }

    /// A PLI or FIR to the sender on leg `sender`; where that is the IMS leg and it negotiated
    /// neither, a SIP INFO through signalling ([`MediaEvent::PictureFastUpdate`]).
    fn ask_sender_for_keyframe(&mut self, i: usize, sender: Leg) {
        let from = sender.other();
        let st = &mut self.streams[i];
        if sender == Leg::Ims && !st.plan.ims_feedback.pli && !st.plan.ims_feedback.fir {
            self.counters.feedback_relayed += 1;
            self.outputs.push_back(Output::Event(MediaEvent::PictureFastUpdate));
            return;
        }
        let mut data = vec![0u8; rtcp::MAX_COMPOUND];
        let n = match from {
            Leg::Web => st.rtcp_ims.remote_ssrc().and_then(|m| st.rtcp_ims.write_keyframe_request(st.plan.ims_feedback, m, &mut data)),
            Leg::Ims => st.rtcp_web.remote_ssrc().and_then(|m| st.rtcp_web.write_keyframe_request(st.plan.web_feedback, m, &mut data)),
        };
        self.relay_feedback(i, from, n, data);
    }

    fn relay_feedback(&mut self, i: usize, from: Leg, written: Option<usize>, mut data: Vec<u8>) {
        let to = if from == Leg::Web { Leg::Ims } else { Leg::Web };
        let sent = written.is_some_and(|n| {
            data.truncate(n);
            self.send_rtcp(i, to, data)
        });
        if sent {
            self.counters.feedback_relayed += 1;
        } else {
            self.counters.feedback_dropped += 1;
        }
    }

    fn fail(&mut self, cause: FailCause, reason: String) {
        if !self.failed {
            self.failed = true;
            self.outputs.push_back(Output::Event(MediaEvent::Failed { cause, reason }));
        }
    }

    fn drain_ice(&mut self) {
        while let Some(o) = self.ice.poll_output() {
            match o {
                estuary_ice::Output::Transmit(t) => self.outputs.push_back(Output::Transmit { from: t.from, to: t.to, data: t.data }),
                estuary_ice::Output::Event(IceEvent::Nominated { remote, .. }) => {
                    let moved = self.web_remote != Some(remote) && self.reported_remote != Some(remote);
                    self.web_remote = Some(remote);
                    if moved {
                        self.reported_remote = Some(remote);
                        self.outputs.push_back(Output::Event(MediaEvent::IceConnected { remote }));
                    }
                }
                estuary_ice::Output::Event(IceEvent::ConsentExpired { .. }) => self.web_remote = None,
                estuary_ice::Output::Event(IceEvent::Failed { reason }) => self.fail(FailCause::Ice, format!("ICE: {reason:?}")),
            }
        }
        self.ice_timeout = self.ice.poll_timeout();
    }

    fn drain_dtls(&mut self, now: Instant) {
        while let Some(o) = self.dtls.poll_output() {
            match o {
                estuary_srtp::Output::Transmit(data) => {
                    // Flights go to the nominated pair; before nomination, to the checked
                    // address the browser's DTLS came from: RFC 8445 §12.1 lets data flow on
                    // a valid pair, and browsers nominate a lite agent's pair only after
                    // their check succeeded, by which time their ClientHello has left.
                    // Never to an address whose consent has lapsed (RFC 7675).
                    let checked = self.dtls_peer.filter(|a| self.ice.is_consented(*a));
                    if let Some(to) = self.web_remote.or(checked) {
                        self.outputs.push_back(Output::Transmit { from: self.web_local, to, data });
                    }
                }
                estuary_srtp::Output::Event(DtlsEvent::Connected { profile, keys }) => {
                    let role = self.dtls.role();
                    self.web_keys = WebKeys::Srtp { tx: SrtpContext::new(keys.local(role)), rx: SrtpContext::new(keys.remote(role)) };
                    self.outputs.push_back(Output::Event(MediaEvent::DtlsConnected { profile }));
                }
                estuary_srtp::Output::Event(DtlsEvent::Failed(f)) => {
                    let reason = match f {
                        DtlsFailure::FingerprintMismatch => "DTLS: the browser's certificate does not match its SDP fingerprint".to_owned(),
                        other => format!("DTLS: {other}"),
                    };
                    self.fail(FailCause::Dtls, reason);
                }
                estuary_srtp::Output::Event(DtlsEvent::Closed) => {
                    // Nothing more can be sent to the browser; wait briefly for its BYE.
                    self.web_keys = match std::mem::replace(&mut self.web_keys, WebKeys::Pending) {
                        WebKeys::Srtp { rx, .. } | WebKeys::Closed { rx } => WebKeys::Closed { rx },
                        other => other,
                    };
                    self.closed_until.get_or_insert(now + DTLS_CLOSE_GRACE);
                }
            }
        }
        self.dtls_timeout = self.dtls.poll_timeout();
    }
}
