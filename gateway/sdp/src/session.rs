//! The per-call offer/answer engine: two SDP exchanges, one per leg, kept consistent.
//!
//! Every m-line keeps its index on both legs (RFC 3264 §8: m-lines are never removed or
//! reordered), so stream `i` of the web leg is stream `i` of the IMS leg. An offer from one
//! side becomes an offer to the other ([`SdpSession::offer`]); the other side's answer becomes
//! the answer to the first ([`SdpSession::answer`]) and settles the [`MediaPlan`]. Several
//! answers may arrive for one offer (forked 18x, then the 200); each one re-settles the plan.
//!
//! No I/O: ports come from the caller's [`PortAllocator`], randomness (ICE credentials, SRTP
//! keys, SSRCs) from a generator seeded by the caller (from the OS CSPRNG in production).

use std::net::{IpAddr, SocketAddr};

use estuary_keys::KeySource;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sdp::description::common::Attribute;
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::SessionDescription;

use crate::attr::{self, Direction, Fingerprint, Rtpmap, Setup};
use crate::codec::{browser_decodes, is_auxiliary, is_telephone_event};
use crate::crypto::Crypto;
use crate::error::{ErrorKind, SdpError};
use crate::parse::{self, connection_addr, is_rtp, port};
use crate::plan::{CodecMap, DtlsRole, DtmfMap, Feedback, MediaPlan, SdesKeys, Side, StreamPlan, WebTransport};
use crate::policy::SdpPolicy;

/// The media plane's side of port allocation. Ports stay with the call until it ends; the
/// media layer frees them (with its quarantine) when the call is torn down.
pub trait PortAllocator {
    /// The one local UDP port of the browser-facing BUNDLE transport.
    fn web_port(&mut self) -> Option<u16>;
    /// An even local RTP port toward IMS for stream `index` (RTCP uses the next one).
    fn ims_port(&mut self, index: usize) -> Option<u16>;
}

const WEB_PROTO: &str = "UDP/TLS/RTP/SAVPF";
/// Host candidate priority for the only candidate we have (RFC 8445 §5.1.2.1 with type
/// preference 126, local preference 65535, component 1).
const HOST_PRIORITY: u32 = 2_130_706_431;
/// rtcp-fb values the gateway can honour toward a browser: keyframe requests it can relay or
/// answer. transport-cc and goog-remb need congestion control the gateway does not run.
const WEB_FEEDBACK: [&str; 3] = ["nack", "nack pli", "ccm fir"];
/// rtcp-fb toward a browser on a transcoded video stream. The gateway's own encoder sends to
/// the browser: it answers keyframe requests and follows the browser's REMB estimate, but
/// keeps no packets to retransmit, so no generic NACK (a loss then brings a PLI).
const WEB_TRANSCODED_VIDEO_FEEDBACK: [&str; 3] = ["nack pli", "ccm fir", "goog-remb"];
/// rtcp-fb toward IMS (AVPF profiles) on a transcoded video stream: keyframe requests and
/// TMMBR, as GSMA IR.94 §2.4.3 lists for conversational video, without NACK for the same
/// reason as above.
const IMS_TRANSCODED_VIDEO_FEEDBACK: [&str; 3] = ["nack pli", "ccm fir", "ccm tmmbr"];
const CNAME: &str = "estuary";

/// o= bookkeeping for the SDP we send on one leg (RFC 3264 §8: the version grows by one
/// whenever the content changes, and only then).
struct Origin {
    id: u64,
    version: u64,
    last_body: Option<String>,
}

impl Origin {
    fn stamp(&mut self, sd: &mut SessionDescription) -> String {
        sd.origin.session_id = self.id;
        sd.origin.session_version = self.version;
        let body = parse::print(sd);
        let without_o: String = body.lines().filter(|l| !l.starts_with("o=")).collect();
        if let Some(last) = &self.last_body {
            if *last != without_o {
                self.version += 1;
            }
        }
        self.last_body = Some(without_o);
        sd.origin.session_version = self.version;
        parse::print(sd)
    }
}

/// What the gateway put on the far leg for one m-line, and what each entry maps back to.
#[derive(Clone, Debug, Default)]
struct Offered {
    active: bool,
    candidates: Vec<Candidate>,
    dtmf: Option<DtmfMap>,
    /// Our a=crypto lines offered toward IMS (web offers).
    local_crypto: Vec<Crypto>,
    /// The IMS offer's a=crypto we chose, and our answer to it (IMS offers).
    chosen_crypto: Option<(Crypto, Crypto)>,
    /// From an IMS offer: its address, RTCP, mux and direction (IMS's view).
    ims_remote: Option<(Option<SocketAddr>, Option<SocketAddr>, bool)>,
    ims_offer_direction: Option<Direction>,
    /// From a web offer: the browser's direction (its view) and whether it offered rtcp-rsize.
    web_offer_direction: Option<Direction>,
    web_rsize: bool,
}

#[derive(Clone, Debug)]
struct Candidate {
    web: Rtpmap,
    web_fmtp: Option<String>,
    web_fb: Vec<String>,
    ims: Rtpmap,
    ims_fmtp: Option<String>,
    transcode: bool,
}

impl Candidate {
    fn codec_map(&self) -> CodecMap {
        CodecMap {
            web_pt: self.web.pt,
            web: self.web.clone(),
            ims_pt: self.ims.pt,
            ims: self.ims.clone(),
            transcode: self.transcode,
            web_fmtp: self.web_fmtp.clone(),
            ims_fmtp: self.ims_fmtp.clone(),
        }
    }

    fn transcodes_video(&self) -> bool {
        self.transcode && media_kind_of(&self.web) == "video"
    }

    /// The rtcp-fb values of this payload type the gateway writes toward the browser.
    fn web_feedback(&self) -> impl Iterator<Item = &str> {
        let allowed: &[&str] = if self.transcodes_video() { &WEB_TRANSCODED_VIDEO_FEEDBACK } else { &WEB_FEEDBACK };
        self.web_fb.iter().map(String::as_str).filter(move |fb| allowed.contains(fb))
    }
}

struct Pending {
    from: Side,
    offer: SessionDescription,
    offered: Vec<Offered>,
    /// m-lines whose video transcoding this offer left out (see
    /// [`SdpSession::allow_video_transcoding`]).
    withheld: Vec<usize>,
}

/// Long-lived state of one m-line.
struct Stream {
    kind: String,
    mid: Option<String>,
    ims_port: u16,
    web_ssrc: u32,
    /// Our SDES keys toward IMS, kept across re-offers so a re-INVITE does not re-key
    /// (RFC 4568 §7.1.4 allows either; keeping them avoids a window of undecryptable media).
    ims_crypto: Vec<Crypto>,
}

/// One call's SDP interworking state.
pub struct SdpSession {
    policy: SdpPolicy,
    /// Identifiers that replay may fix (origin ids, SSRCs): seeded.
    rng: StdRng,
    /// Secrets (ICE ufrag/pwd, SDES keys): the OS generator, never the seed.
    keys: KeySource,
    web_origin: Origin,
    ims_origin: Origin,
    web: WebTransport,
    remote_setup: Option<Setup>,
    streams: Vec<Stream>,
    pending: Option<Pending>,
    plan: Option<MediaPlan>,
    /// Bumped whenever an answer settles a new plan.
    plan_version: u64,
    /// Whether offers may bridge video through the transcoder (the signalling engine's
    /// admission control turns it off when the pool has no room for a video channel).
    video_transcoding: bool,
    /// m-lines the offer being built left without their video transcoding.
    withheld: Vec<usize>,
    /// An answer settled a plan in which a stream was refused because video transcoding was
    /// withheld: the call lost its video to the transcoder's capacity.
    video_dropped: bool,
    /// The last session description the IMS side sent, kept when asked
    /// ([`SdpSession::keep_ims_remote`]): what another node needs to take the call over.
    ims_remote: Option<Option<String>>,
}

impl std::fmt::Debug for SdpSession {
    /// No keys or ICE passwords in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdpSession")
            .field("streams", &self.streams.len())
            .field("pending", &self.pending.as_ref().map(|p| p.from))
            .field("settled", &self.plan.is_some())
            .finish()
    }
}

impl SdpSession {
    /// `seed` draws the session's identifiers (origin ids, SSRCs), which replay fixes; every
    /// secret (ICE credentials, SDES keys) comes from `keys`, whatever the seed.
    pub fn new(policy: SdpPolicy, seed: u64, mut keys: KeySource) -> SdpSession {
        let mut rng = StdRng::seed_from_u64(seed);
        let web = WebTransport {
            local_port: 0,
            local_ufrag: ice_token(&mut keys, ICE_UFRAG_LEN),
            local_pwd: ice_token(&mut keys, ICE_PWD_LEN),
            remote_ufrag: None,
            remote_pwd: None,
            remote_fingerprints: Vec::new(),
            dtls_role: None,
            remote_candidate: None,
        };
        let web_origin = Origin { id: rng.random_range(1..i64::MAX as u64), version: 1, last_body: None };
        let ims_origin = Origin { id: rng.random_range(1..i64::MAX as u64), version: 1, last_body: None };
        SdpSession {
            policy,
            rng,
            keys,
            web_origin,
            ims_origin,
            web,
            remote_setup: None,
            streams: Vec::new(),
            pending: None,
            plan: None,
            plan_version: 0,
            video_transcoding: true,
            withheld: Vec::new(),
            video_dropped: false,
            ims_remote: None,
        }
    }

    /// Keep the last SDP the IMS side sends (a cluster shares it: see
    /// [`SdpSession::ims_remote_without_keys`]). Off by default: a node alone needs no copy.
    pub fn keep_ims_remote(&mut self) {
        self.ims_remote.get_or_insert(None);
    }

    /// The last SDP the IMS side sent, without its SDES keys (a=crypto lines): another node
    /// that takes the call over replays it as the IMS side's offer, and re-keys.
    pub fn ims_remote_without_keys(&self) -> Option<String> {
        let body = self.ims_remote.as_ref()?.as_ref()?;
        let lines: Vec<&str> = body.lines().filter(|l| !l.starts_with("a=crypto:")).collect();
        Some(lines.join("\r\n") + "\r\n")
    }

    fn remember_ims(&mut self, from: Side, body: &[u8]) {
        if let (Side::Ims, Some(kept)) = (from, self.ims_remote.as_mut()) {
            *kept = Some(String::from_utf8_lossy(body).into_owned());
        }
    }

    /// Whether the next offers may bridge video through the transcoder (default: yes). Off,
    /// a browser offer whose video only the transcoder could carry gets that m-line refused
    /// toward IMS, and an IMS offer gets no transcoded alternative toward the browser.
    pub fn allow_video_transcoding(&mut self, allowed: bool) {
        self.video_transcoding = allowed;
    }

    /// Whether a settled answer refused a video stream that only the withheld transcoder
    /// could have carried (for the call record). Stays true for the rest of the call.
    pub fn video_dropped(&self) -> bool {
        self.video_dropped
    }

    /// The plan settled by the last answer, if any.
    pub fn plan(&self) -> Option<&MediaPlan> {
        self.plan.as_ref()
    }

    /// Grows by one each time an answer settles a plan (0: none yet), so a caller can tell
    /// whether the media plane needs the plan again.
    pub fn plan_version(&self) -> u64 {
        self.plan_version
    }

    /// The codec mapping the pending offer proposes, per m-line: what each payload type the
    /// far side may pick maps to (passthrough or transcode), and the DTMF mapping. Empty
    /// lists for rejected m-lines. For operators' inspection (`estuary sdp`).
    pub fn offered_codecs(&self) -> Vec<(Vec<CodecMap>, Option<DtmfMap>)> {
        let Some(p) = &self.pending else { return Vec::new() };
        p.offered
            .iter()
            .map(|o| {
                let maps = o.candidates.iter().map(Candidate::codec_map).collect();
                (maps, o.dtmf.clone())
            })
            .collect()
    }

    /// Whether an offer is waiting for its answer, and from which side it came.
    pub fn pending_offer(&self) -> Option<Side> {
        self.pending.as_ref().map(|p| p.from)
    }

    /// The far side refused the offer (e.g. 488 or a failed re-INVITE): forget it, keep the
    /// plan of the last completed exchange (RFC 3264 §8: the old session stays in force).
    pub fn reject_pending(&mut self) {
        self.pending = None;
    }

    /// The exchange is complete (the final answer was relayed): later bodies start a new
    /// offer/answer. Until then further answers to the same offer are accepted (forked 18x,
    /// then the 2xx).
    pub fn settle(&mut self) {
        self.pending = None;
    }

    /// An offer arrived from `from`; returns the offer to send to the other side.
    pub fn offer(&mut self, from: Side, body: &[u8], ports: &mut dyn PortAllocator) -> Result<String, SdpError> {
        let offer = parse::parse(body)?;
        self.remember_ims(from, body);
        match from {
            Side::Web => self.offer_from_web(offer, ports),
            Side::Ims => self.offer_from_ims(offer, ports),
        }
    }

    /// The answer to the pending offer arrived from `from`; returns the answer for the side
    /// that made the offer, and settles [`SdpSession::plan`].
    pub fn answer(&mut self, from: Side, body: &[u8]) -> Result<String, SdpError> {
        let answer = parse::parse(body)?;
        self.remember_ims(from, body);
        let Some(pending) = self.pending.take() else {
            return Err(SdpError::mismatch("answer without an offer"));
        };
        if pending.from == from {
            self.pending = Some(pending);
            return Err(SdpError::mismatch("answer from the side that made the offer"));
        }
        if answer.media_descriptions.len() != pending.offer.media_descriptions.len() {
            let reason = format!(
                "answer has {} m-lines, the offer {}",
                answer.media_descriptions.len(),
                pending.offer.media_descriptions.len()
            );
            self.pending = Some(pending);
            return Err(SdpError::mismatch(reason));
        }
        let result = match from {
            Side::Ims => self.answer_from_ims(&pending, &answer),
            Side::Web => self.answer_from_web(&pending, &answer),
        };
        if result.is_ok() {
            let refused = |i: &usize| self.plan.as_ref().and_then(|p| p.streams.get(*i)).is_some_and(|s| !s.active);
            if pending.withheld.iter().any(refused) {
                self.video_dropped = true;
            }
        }
        // Kept for further answers to the same offer (forked 18x, then the 200).
        self.pending = Some(pending);
        result
    }

    /// An offer none of whose streams can be carried. When video transcoding was withheld,
    /// that is the transcoder's capacity (503, try later), not the offer's fault (488).
    fn no_active_stream(&mut self, refusals: Vec<String>) -> SdpError {
        let why = if refusals.is_empty() { "no active stream".to_owned() } else { refusals.join("; ") };
        if std::mem::take(&mut self.withheld).is_empty() {
            SdpError::not_acceptable(why)
        } else {
            SdpError::exhausted(why)
        }
    }

    // ----- browser offers ----------------------------------------------------------------

    fn offer_from_web(&mut self, offer: SessionDescription, ports: &mut dyn PortAllocator) -> Result<String, SdpError> {
        self.learn_web_transport(&offer)?;
        if self.web.local_port == 0 {
            self.web.local_port = ports.web_port().ok_or_else(exhausted)?;
        }
        let mut out = parse::skeleton(0, 0, self.policy.ims_address);
        out.connection_information = Some(parse::connection(self.policy.ims_address));
        let mut offered = Vec::new();
        let mut refusals = Vec::new();
        self.withheld.clear();
        for (i, m) in offer.media_descriptions.iter().enumerate() {
            let mid = attr::get(&m.attributes, "mid").map(str::to_owned);
            self.ensure_stream(i, &m.media_name.media, mid);
            let (md, off) = match self.web_stream_to_ims(&offer, i, m, ports)? {
                Ok(pair) => pair,
                Err(why) => {
                    if port(m) != 0 {
                        refusals.push(format!("m-line {i} ({}): {why}", m.media_name.media));
                    }
                    (rejected_ims_m(m, &self.policy), Offered::default())
                }
            };
            out.media_descriptions.push(md);
            offered.push(off);
        }
        if !offered.iter().any(|o| o.active) {
            return Err(self.no_active_stream(refusals));
        }
        let text = self.ims_origin.stamp(&mut out);
        let withheld = std::mem::take(&mut self.withheld);
        self.pending = Some(Pending { from: Side::Web, offer, offered, withheld });
        Ok(text)
    }

    /// ICE credentials, fingerprints and a=setup of a browser SDP (session or media level).
    fn learn_web_transport(&mut self, sd: &SessionDescription) -> Result<(), SdpError> {
        let first_active = sd.media_descriptions.iter().find(|m| port(m) != 0);
        let look = |key: &str| {
            first_active
                .and_then(|m| attr::get(&m.attributes, key))
                .or_else(|| attr::get(&sd.attributes, key))
                .map(str::to_owned)
        };
        let mut fingerprints = Vec::new();
        for v in attr::all(&sd.attributes, "fingerprint")
            .chain(first_active.into_iter().flat_map(|m| attr::all(&m.attributes, "fingerprint")))
        {
            let f = Fingerprint::parse(v)?;
            if !fingerprints.contains(&f) {
                fingerprints.push(f);
            }
        }
        if first_active.is_none() {
            return Ok(());
        }
        if fingerprints.is_empty() {
            return Err(SdpError::not_acceptable("browser SDP without DTLS fingerprint"));
        }
        let (Some(ufrag), Some(pwd)) = (look("ice-ufrag"), look("ice-pwd")) else {
            return Err(SdpError::not_acceptable("browser SDP without ICE credentials"));
        };
        // RFC 8445 §9: new remote credentials are an ICE restart; the answerer restarts too.
        if self.web.remote_ufrag.as_ref().is_some_and(|u| *u != ufrag) {
            self.web.local_ufrag = ice_token(&mut self.keys, ICE_UFRAG_LEN);
            self.web.local_pwd = ice_token(&mut self.keys, ICE_PWD_LEN);
        }
        self.web.remote_ufrag = Some(ufrag);
        self.web.remote_pwd = Some(pwd);
        self.web.remote_fingerprints = fingerprints;
        self.remote_setup = look("setup").and_then(|s| Setup::parse(&s));
        self.web.remote_candidate = first_active.and_then(|m| preferred_candidate(sd, m));
        Ok(())
    }

    fn ensure_stream(&mut self, i: usize, kind: &str, mid: Option<String>) {
        let ssrc = self.rng.next_u32();
        match self.streams.get_mut(i) {
            Some(s) if s.kind == kind => {
                if mid.is_some() {
                    s.mid = mid;
                }
            }
            // A rejected m-line may be reused for another medium (RFC 3264 §8.3.2... §6).
            Some(s) => *s = Stream { kind: kind.to_owned(), mid, ims_port: s.ims_port, web_ssrc: ssrc, ims_crypto: Vec::new() },
            None => self.streams.push(Stream { kind: kind.to_owned(), mid, ims_port: 0, web_ssrc: ssrc, ims_crypto: Vec::new() }),
        }
    }

    /// One browser m-line toward IMS. The outer error aborts the offer (no ports); the inner
    /// one rejects only this stream, with the reason.
    #[allow(clippy::type_complexity)]
    fn web_stream_to_ims(
        &mut self,
        offer: &SessionDescription,
        i: usize,
        m: &MediaDescription,
        ports: &mut dyn PortAllocator,
    ) -> Result<Result<(MediaDescription, Offered), String>, SdpError> {
        let kind = m.media_name.media.to_ascii_lowercase();
        if port(m) == 0 {
            return Ok(Err("rejected by the browser".into()));
        }
        if !is_rtp(m) || (kind != "audio" && kind != "video") {
            return Ok(Err(format!("{kind} is not carried toward IMS")));
        }
        let web_codecs = codecs_of(m);
        let specs = if kind == "audio" { &self.policy.audio } else { &self.policy.video };
        let mut candidates = Vec::new();
        for spec in specs {
            if let Some(c) = web_codecs.iter().find(|c| spec.matches(&c.0, c.1.as_deref())) {
                if !candidates.iter().any(|x: &Candidate| x.web.pt == c.0.pt) {
                    candidates.push(Candidate {
                        web: c.0.clone(),
                        web_fmtp: c.1.clone(),
                        web_fb: c.2.clone(),
                        ims: c.0.clone(),
                        ims_fmtp: c.1.clone(),
                        transcode: false,
                    });
                }
            }
        }
        if candidates.is_empty() {
            let mut used: Vec<u8> = web_codecs.iter().map(|c| c.0.pt).collect();
            for pair in self.policy.transcode.iter().filter(|p| p.kind() == kind) {
                let Some(w) = web_codecs.iter().find(|c| pair.web.matches(&c.0, c.1.as_deref())) else { continue };
                if candidates.iter().any(|x: &Candidate| pair.ims.matches(&x.ims, x.ims_fmtp.as_deref())) {
                    continue;
                }
                if kind == "video" && !self.video_transcoding {
                    if !self.withheld.contains(&i) {
                        self.withheld.push(i);
                    }
                    continue;
                }
                let pt = pair.ims.static_pt().unwrap_or_else(|| free_dynamic_pt(&used, 96));
                used.push(pt);
                candidates.push(Candidate {
                    web: w.0.clone(),
                    web_fmtp: w.1.clone(),
                    web_fb: w.2.clone(),
                    ims: pair.ims.rtpmap(pt),
                    ims_fmtp: pair.ims.fmtp.clone(),
                    transcode: true,
                });
            }
        }
        if candidates.is_empty() && self.withheld.contains(&i) {
            return Ok(Err("video transcoding capacity exhausted".into()));
        }
        if candidates.is_empty() {
            return Ok(Err(format!("no common or transcodable codec (browser offers {})", names(&web_codecs))));
        }
        let dtmf = if kind == "audio" && self.policy.telephone_event {
            event_on_clock(&web_codecs, candidates[0].web.clock).map(|te| {
                let used: Vec<u8> = candidates.iter().map(|c| c.ims.pt).collect();
                let ims_pt = if te.clock == 8000 && !used.contains(&te.pt) { te.pt } else { free_dynamic_pt(&used, 101) };
                DtmfMap { web_pt: te.pt, web_clock: te.clock, ims_pt, ims_clock: 8000 }
            })
        } else {
            None
        };
        let stream = &mut self.streams[i];
        if stream.ims_port == 0 {
            stream.ims_port = ports.ims_port(i).ok_or_else(exhausted)?;
        }
        let ims_port = stream.ims_port;
        let profile = &self.policy.ims;
        let mut md = media(&kind, ims_port, profile.proto(), candidates.iter().map(|c| c.ims.pt).chain(dtmf.as_ref().map(|d| d.ims_pt)));
        for c in &candidates {
            md.attributes.push(attr::value("rtpmap", c.ims.to_string()));
            if let Some(f) = &c.ims_fmtp {
                md.attributes.push(attr::value("fmtp", format!("{} {f}", c.ims.pt)));
            }
            if profile.avpf {
                if c.transcodes_video() {
                    for fb in IMS_TRANSCODED_VIDEO_FEEDBACK {
                        md.attributes.push(attr::value("rtcp-fb", format!("{} {fb}", c.ims.pt)));
                    }
                } else {
                    for fb in c.web_fb.iter().filter(|fb| WEB_FEEDBACK.contains(&fb.as_str())) {
                        md.attributes.push(attr::value("rtcp-fb", format!("{} {fb}", c.ims.pt)));
                    }
                }
            }
        }
        if let Some(d) = &dtmf {
            md.attributes.push(attr::value("rtpmap", format!("{} telephone-event/8000", d.ims_pt)));
            md.attributes.push(attr::value("fmtp", format!("{} 0-15", d.ims_pt)));
        }
        if kind == "audio" {
            if let Some(p) = profile.ptime {
                md.attributes.push(attr::value("ptime", p.to_string()));
            }
        }
        let web_dir = Direction::of(&offer.attributes, &m.attributes);
        md.attributes.push(attr::property(web_dir.as_str()));
        if profile.rtcp_mux {
            md.attributes.push(attr::property("rtcp-mux"));
        }
        let same_suites = stream.ims_crypto.iter().map(|c| c.suite()).eq(profile.srtp.iter().map(|s| Some(*s)));
        if !same_suites {
            stream.ims_crypto = profile
                .srtp
                .iter()
                .enumerate()
                .map(|(tag, suite)| Crypto::generate(tag as u32 + 1, *suite, &mut self.keys))
                .collect();
        }
        let local_crypto = stream.ims_crypto.clone();
        for c in &local_crypto {
            md.attributes.push(attr::value("crypto", c.to_string()));
        }
        let off = Offered {
            active: true,
            candidates,
            dtmf,
            local_crypto,
            web_offer_direction: Some(web_dir),
            web_rsize: attr::get(&m.attributes, "rtcp-rsize").is_some(),
            ..Offered::default()
        };
        Ok(Ok((md, off)))
    }

    // ----- IMS answers to browser offers -------------------------------------------------

    fn answer_from_ims(&mut self, pending: &Pending, answer: &SessionDescription) -> Result<String, SdpError> {
        // Our role follows the browser's offer: active -> passive, passive -> active; for
        // actpass, passive initially and afterwards the role already in use, so a re-offer
        // does not start a new DTLS association (RFC 8842 §5.3, §5.5).
        let role = match (self.remote_setup, self.web.dtls_role) {
            (Some(Setup::Passive), _) => DtlsRole::Client,
            (Some(Setup::Active), _) => DtlsRole::Server,
            (_, Some(kept)) => kept,
            _ => DtlsRole::Server,
        };
        let mut out = parse::skeleton(0, 0, self.policy.web_address);
        let mut plans = Vec::new();
        for (i, (wm, am)) in pending.offer.media_descriptions.iter().zip(&answer.media_descriptions).enumerate() {
            let off = &pending.offered[i];
            let stream = &self.streams[i];
            let mut plan = base_plan(i, stream);
            if !off.active || port(am) == 0 {
                out.media_descriptions.push(rejected_web_m(wm, stream.mid.as_deref()));
                plans.push(plan);
                continue;
            }
            let ims_srtp = if off.local_crypto.is_empty() {
                None
            } else {
                let theirs = attr::all(&am.attributes, "crypto")
                    .filter_map(|v| Crypto::parse(v).ok())
                    .find(|c| off.local_crypto.iter().any(|o| o.tag == c.tag && o.suite_name.eq_ignore_ascii_case(&c.suite_name)))
                    .ok_or_else(|| SdpError::mismatch(format!("m-line {i}: IMS answer has no a=crypto matching the offer")))?;
                let suite = theirs.usable().map_err(|e| SdpError::not_acceptable(format!("m-line {i}: {e}")))?;
                let ours = off.local_crypto.iter().find(|o| o.tag == theirs.tag).map(|o| o.keys[0].key_salt.clone()).unwrap_or_default();
                Some(SdesKeys { suite, local_key_salt: ours, remote_key_salt: theirs.keys[0].key_salt.clone() })
            };
            let (codecs, dtmf) = map_answer_formats(am, off, Side::Ims)
                .ok_or_else(|| SdpError::mismatch(format!("m-line {i}: IMS answer names no payload type of the offer")))?;
            let ims_dir = Direction::of(&answer.attributes, &am.attributes);
            let (rtp, rtcp) = ims_remote(answer, am);
            let mux = attr::get(&am.attributes, "rtcp-mux").is_some() && self.policy.ims.rtcp_mux;
            let web_offer_dir = off.web_offer_direction.unwrap_or(Direction::SendRecv);
            // Gateway's view: it sends to IMS what the browser sends, if IMS receives and gave
            // an address; it sends to the browser what IMS sends, if the browser receives.
            let to_ims = web_offer_dir.sends() && ims_dir.receives() && rtp.is_some();
            let to_web = ims_dir.sends() && web_offer_dir.receives();
            plan.active = true;
            plan.ims_remote_rtp = rtp;
            plan.ims_remote_rtcp = if mux { rtp } else { rtcp };
            plan.ims_rtcp_mux = mux;
            plan.ims_direction = Direction::from_flags(to_ims, ims_dir.sends());
            plan.web_direction = Direction::from_flags(to_web, web_offer_dir.sends() && to_ims);
            // What our answer to the browser lists (web_media) and what IMS answered, for the
            // primary codec.
            if let Some(primary) = codecs.first() {
                if let Some(c) = off.candidates.iter().find(|c| c.web.pt == primary.web_pt) {
                    plan.web_feedback = Feedback::from_values(c.web_feedback());
                }
                plan.ims_feedback = Feedback::from_values(attr::rtcp_fb_for(&am.attributes, primary.ims_pt));
            }
            plan.codecs = codecs;
            plan.dtmf = dtmf;
            plan.ims_srtp = ims_srtp;
            plan.ims_ptime = ptime_of(am);
            plan.ims_max_bitrate = max_bitrate_of(answer, am);
            let md = self.web_media(wm, &plan, off, Setup::from_role(role), off.web_rsize);
            out.media_descriptions.push(md);
            plans.push(plan);
        }
        self.web.dtls_role = Some(role);
        self.finish_web_sdp(&mut out, &plans);
        let text = self.web_origin.stamp(&mut out);
        self.plan = Some(MediaPlan { web: self.web.clone(), streams: plans });
        self.plan_version += 1;
        Ok(text)
    }

    /// A browser-facing m-line for an active stream (offer or answer).
    fn web_media(&self, like: &MediaDescription, plan: &StreamPlan, off: &Offered, setup: Setup, rsize: bool) -> MediaDescription {
        let mut pts: Vec<u8> = Vec::new();
        for c in &plan.codecs {
            if !pts.contains(&c.web_pt) {
                pts.push(c.web_pt);
            }
        }
        if let Some(d) = &plan.dtmf {
            pts.push(d.web_pt);
        }
        let web = &self.web;
        let mut md = media(&like.media_name.media, web.local_port, WEB_PROTO, pts.iter().copied());
        md.connection_information = Some(parse::connection(self.policy.web_address));
        let a = &mut md.attributes;
        a.push(attr::value("rtcp", format!("{} {}", web.local_port, ip_words(self.policy.web_address))));
        a.push(attr::value("ice-ufrag", web.local_ufrag.clone()));
        a.push(attr::value("ice-pwd", web.local_pwd.clone()));
        a.push(attr::value("fingerprint", self.policy.fingerprint.to_string()));
        a.push(attr::value("setup", setup.as_str()));
        if let Some(mid) = &plan.mid {
            a.push(attr::value("mid", mid.clone()));
        }
        a.push(attr::property(plan.web_direction.as_str()));
        a.push(attr::value("msid", format!("{CNAME} {}{}", plan.kind, plan.index)));
        a.push(attr::property("rtcp-mux"));
        if rsize {
            a.push(attr::property("rtcp-rsize"));
        }
        for pt in &pts {
            let Some(c) = off.candidates.iter().find(|c| c.web.pt == *pt) else { continue };
            a.push(attr::value("rtpmap", c.web.to_string()));
            for fb in c.web_feedback() {
                a.push(attr::value("rtcp-fb", format!("{pt} {fb}")));
            }
            if let Some(f) = &c.web_fmtp {
                a.push(attr::value("fmtp", format!("{pt} {f}")));
            }
        }
        if let Some(d) = &plan.dtmf {
            a.push(attr::value("rtpmap", format!("{} telephone-event/{}", d.web_pt, d.web_clock)));
            a.push(attr::value("fmtp", format!("{} 0-15", d.web_pt)));
        }
        a.push(attr::value("ssrc", format!("{} cname:{CNAME}", plan.web_ssrc)));
        a.push(attr::value(
            "candidate",
            format!("1 1 udp {HOST_PRIORITY} {} {} typ host", self.policy.web_address, web.local_port),
        ));
        a.push(attr::property("end-of-candidates"));
        md
    }

    /// Session-level lines of a browser-facing SDP: BUNDLE over the active streams, ICE-lite.
    fn finish_web_sdp(&self, out: &mut SessionDescription, plans: &[StreamPlan]) {
        let mids: Vec<&str> = plans.iter().filter(|p| p.active).filter_map(|p| p.mid.as_deref()).collect();
        if !mids.is_empty() {
            out.attributes.push(attr::value("group", format!("BUNDLE {}", mids.join(" "))));
        }
        out.attributes.push(attr::property("ice-lite"));
        out.attributes.push(attr::value("msid-semantic", format!(" WMS {CNAME}")));
    }

    // ----- IMS offers --------------------------------------------------------------------

    fn offer_from_ims(&mut self, offer: SessionDescription, ports: &mut dyn PortAllocator) -> Result<String, SdpError> {
        if self.web.local_port == 0 {
            self.web.local_port = ports.web_port().ok_or_else(exhausted)?;
        }
        let mut out = parse::skeleton(0, 0, self.policy.web_address);
        let mut offered = Vec::new();
        let mut plans = Vec::new();
        let mut refusals = Vec::new();
        self.withheld.clear();
        for (i, m) in offer.media_descriptions.iter().enumerate() {
            let kind = m.media_name.media.clone();
            let mid = self.streams.get(i).and_then(|s| s.mid.clone()).unwrap_or_else(|| i.to_string());
            self.ensure_stream(i, &kind, Some(mid));
            match self.ims_stream_to_web(&offer, i, m, ports)? {
                Ok((plan, off)) => {
                    let md = self.web_media(m, &plan, &off, Setup::ActPass, false);
                    out.media_descriptions.push(md);
                    offered.push(off);
                    plans.push(plan);
                }
                Err(why) => {
                    if port(m) != 0 {
                        refusals.push(format!("m-line {i} ({kind}): {why}"));
                    }
                    out.media_descriptions.push(rejected_web_m(m, self.streams[i].mid.as_deref()));
                    offered.push(Offered::default());
                    plans.push(base_plan(i, &self.streams[i]));
                }
            }
        }
        if !offered.iter().any(|o| o.active) {
            return Err(self.no_active_stream(refusals));
        }
        self.finish_web_sdp(&mut out, &plans);
        let text = self.web_origin.stamp(&mut out);
        let withheld = std::mem::take(&mut self.withheld);
        self.pending = Some(Pending { from: Side::Ims, offer, offered, withheld });
        Ok(text)
    }

    #[allow(clippy::type_complexity)]
    fn ims_stream_to_web(
        &mut self,
        offer: &SessionDescription,
        i: usize,
        m: &MediaDescription,
        ports: &mut dyn PortAllocator,
    ) -> Result<Result<(StreamPlan, Offered), String>, SdpError> {
        let kind = m.media_name.media.to_ascii_lowercase();
        if port(m) == 0 {
            return Ok(Err("rejected by IMS".into()));
        }
        if !is_rtp(m) || (kind != "audio" && kind != "video") {
            return Ok(Err(format!("{kind} is not carried toward browsers")));
        }
        let secure = m.media_name.protos.iter().any(|p| p.to_ascii_uppercase().starts_with("SAVP"));
        let chosen_crypto = if secure {
            let mut why = "no a=crypto".to_owned();
            let mut chosen = None;
            for v in attr::all(&m.attributes, "crypto") {
                match Crypto::parse(v).map_err(|e| e.reason).and_then(|c| c.usable().map(|s| (c, s))) {
                    Ok((c, suite)) => {
                        let kept = self.streams[i].ims_crypto.first().filter(|o| o.tag == c.tag && o.suite() == Some(suite)).cloned();
                        let ours = kept.unwrap_or_else(|| Crypto::generate(c.tag, suite, &mut self.keys));
                        self.streams[i].ims_crypto = vec![ours.clone()];
                        chosen = Some((c, ours));
                        break;
                    }
                    Err(e) => why = e,
                }
            }
            match chosen {
                Some(c) => Some(c),
                None => return Ok(Err(format!("no usable SDES key: {why}"))),
            }
        } else {
            None
        };
        let ims_codecs = codecs_of(m);
        let mut candidates: Vec<Candidate> = ims_codecs
            .iter()
            .filter(|c| !is_telephone_event(&c.0) && browser_decodes(&c.0) && media_kind_of(&c.0) == kind)
            .map(|c| Candidate {
                web: c.0.clone(),
                web_fmtp: c.1.clone(),
                web_fb: if kind == "video" { vec!["nack pli".into(), "ccm fir".into()] } else { Vec::new() },
                ims: c.0.clone(),
                ims_fmtp: c.1.clone(),
                transcode: false,
            })
            .collect();
        // Audio transcodes only when nothing passes through: every browser takes G.711. Video
        // also offers the transcoded codec beside the core's, because a browser may lack the
        // core's (Firefox without the OpenH264 plug-in has VP8 only); the browser's answer
        // picks, and passthrough wins when it takes both (`answer_from_web`).
        if candidates.is_empty() || kind == "video" {
            // Payload types are unique across the browser's BUNDLE group (RFC 8843 §9.1), and
            // every m-line of this offer goes into it.
            let mut used: Vec<u8> = offer.media_descriptions.iter().flat_map(|m| m.media_name.formats.iter().filter_map(|f| attr::parse_pt(f))).collect();
            for pair in self.policy.transcode.iter().filter(|p| p.kind() == kind) {
                let Some(ic) = ims_codecs.iter().find(|c| pair.ims.matches(&c.0, c.1.as_deref())) else { continue };
                if candidates.iter().any(|x| x.web.encoding.eq_ignore_ascii_case(&pair.web.encoding)) {
                    continue;
                }
                if kind == "video" && !self.video_transcoding {
                    if !self.withheld.contains(&i) {
                        self.withheld.push(i);
                    }
                    continue;
                }
                let pt = pair.web.static_pt().unwrap_or_else(|| free_dynamic_pt(&used, if kind == "video" { 96 } else { 111 }));
                used.push(pt);
                let web_fmtp = pair.web.fmtp.clone().or_else(|| pair.web.is("opus").then(|| "minptime=10;useinbandfec=1".to_owned()));
                let web_fb = if kind == "video" { WEB_TRANSCODED_VIDEO_FEEDBACK.map(str::to_owned).to_vec() } else { Vec::new() };
                candidates.push(Candidate {
                    web: pair.web.rtpmap(pt),
                    web_fmtp,
                    web_fb,
                    ims: ic.0.clone(),
                    ims_fmtp: ic.1.clone(),
                    transcode: true,
                });
            }
        }
        if candidates.is_empty() {
            return Ok(Err(format!("no codec a browser can take (IMS offers {})", names(&ims_codecs))));
        }
        let dtmf = if kind == "audio" && self.policy.telephone_event {
            let web_clock = candidates[0].web.clock;
            event_on_clock(&ims_codecs, web_clock).map(|te| {
                let used: Vec<u8> = candidates.iter().map(|c| c.web.pt).collect();
                let web_pt = if web_clock == te.clock && !used.contains(&te.pt) { te.pt } else { free_dynamic_pt(&used, 110) };
                DtmfMap { web_pt, web_clock, ims_pt: te.pt, ims_clock: te.clock }
            })
        } else {
            None
        };
        let stream = &mut self.streams[i];
        if stream.ims_port == 0 {
            stream.ims_port = ports.ims_port(i).ok_or_else(exhausted)?;
        }
        let (rtp, rtcp) = ims_remote(offer, m);
        let mux = attr::get(&m.attributes, "rtcp-mux").is_some() && self.policy.ims.rtcp_mux;
        let mut dir = Direction::of(&offer.attributes, &m.attributes);
        if rtp.is_none() {
            // Legacy hold (RFC 3264 §8.4, c=0.0.0.0): IMS receives nothing.
            dir = Direction::from_flags(dir.sends(), false);
        }
        let mut plan = base_plan(i, stream);
        plan.active = true;
        // As the gateway will speak toward the browser: the IMS stance, mirrored.
        plan.web_direction = dir;
        plan.ims_ptime = ptime_of(m);
        plan.ims_max_bitrate = max_bitrate_of(offer, m);
        plan.codecs = candidates.iter().map(Candidate::codec_map).collect();
        plan.dtmf = dtmf.clone();
        let off = Offered {
            active: true,
            candidates,
            dtmf,
            chosen_crypto,
            ims_remote: Some((rtp, if mux { rtp } else { rtcp }, mux)),
            ims_offer_direction: Some(dir),
            ..Offered::default()
        };
        Ok(Ok((plan, off)))
    }

    // ----- browser answers to IMS offers -------------------------------------------------

    fn answer_from_web(&mut self, pending: &Pending, answer: &SessionDescription) -> Result<String, SdpError> {
        self.learn_web_transport(answer)?;
        let role = match self.remote_setup {
            Some(Setup::Active) => DtlsRole::Server,
            Some(Setup::Passive) => DtlsRole::Client,
            _ => return Err(SdpError::not_acceptable("browser answer must say a=setup:active or passive (RFC 8842 §5.3)")),
        };
        let mut out = parse::skeleton(0, 0, self.policy.ims_address);
        out.connection_information = Some(parse::connection(self.policy.ims_address));
        let mut plans = Vec::new();
        for (i, (im, wm)) in pending.offer.media_descriptions.iter().zip(&answer.media_descriptions).enumerate() {
            let off = &pending.offered[i];
            let stream = &self.streams[i];
            let mut plan = base_plan(i, stream);
            if let Some(mid) = attr::get(&wm.attributes, "mid") {
                plan.mid = Some(mid.to_owned());
            }
            if !off.active || port(wm) == 0 {
                let mut md = media(&im.media_name.media, 0, &parse::proto(im), im.media_name.formats.first().cloned());
                md.media_name.formats.truncate(1);
                out.media_descriptions.push(md);
                plans.push(plan);
                continue;
            }
            let (mut codecs, dtmf) = map_answer_formats(wm, off, Side::Web)
                .ok_or_else(|| SdpError::mismatch(format!("m-line {i}: browser answer names no payload type of the offer")))?;
            // A browser that takes the core's codec and the transcoded one gets passthrough:
            // no transcoder for a stream that does not need it.
            if codecs.iter().any(|c| !c.transcode) {
                codecs.retain(|c| !c.transcode);
            }
            plan.ims_ptime = ptime_of(im);
            plan.ims_max_bitrate = max_bitrate_of(&pending.offer, im);
            let browser = Direction::of(&answer.attributes, &wm.attributes);
            let ims = off.ims_offer_direction.unwrap_or(Direction::SendRecv);
            let (rtp, rtcp, mux) = off.ims_remote.unwrap_or((None, None, false));
            let to_ims = browser.sends() && ims.receives();
            let from_ims = ims.sends() && browser.receives();
            plan.active = true;
            plan.ims_remote_rtp = rtp;
            plan.ims_remote_rtcp = rtcp;
            plan.ims_rtcp_mux = mux;
            plan.ims_direction = Direction::from_flags(to_ims, from_ims);
            plan.web_direction = Direction::from_flags(from_ims, to_ims);
            if let Some(primary) = codecs.first() {
                plan.web_feedback = Feedback::from_values(attr::rtcp_fb_for(&wm.attributes, primary.web_pt));
                plan.ims_feedback = Feedback::from_values(attr::rtcp_fb_for(&im.attributes, primary.ims_pt));
            }
            plan.codecs = codecs;
            plan.dtmf = dtmf;
            plan.ims_srtp = off.chosen_crypto.as_ref().map(|(theirs, ours)| SdesKeys {
                suite: ours.suite().unwrap_or(crate::crypto::Suite::AesCm128HmacSha1_80),
                local_key_salt: ours.keys[0].key_salt.clone(),
                remote_key_salt: theirs.keys[0].key_salt.clone(),
            });
            let mut pts: Vec<u8> = Vec::new();
            for c in &plan.codecs {
                if !pts.contains(&c.ims_pt) {
                    pts.push(c.ims_pt);
                }
            }
            let mut md = media(&im.media_name.media, stream.ims_port, &parse::proto(im), pts.iter().copied().chain(plan.dtmf.as_ref().map(|d| d.ims_pt)));
            for pt in &pts {
                let Some(c) = off.candidates.iter().find(|c| c.ims.pt == *pt) else { continue };
                md.attributes.push(attr::value("rtpmap", c.ims.to_string()));
                if let Some(f) = &c.ims_fmtp {
                    md.attributes.push(attr::value("fmtp", format!("{pt} {f}")));
                }
            }
            if let Some(d) = &plan.dtmf {
                md.attributes.push(attr::value("rtpmap", format!("{} telephone-event/{}", d.ims_pt, d.ims_clock)));
                if let Some(f) = attr::fmtp_for(&im.attributes, d.ims_pt) {
                    md.attributes.push(attr::value("fmtp", format!("{} {f}", d.ims_pt)));
                }
            }
            for key in ["ptime", "maxptime"] {
                if let Some(v) = attr::get(&im.attributes, key) {
                    md.attributes.push(attr::value(key, v));
                }
            }
            md.attributes.push(attr::property(plan.ims_direction.as_str()));
            if mux {
                md.attributes.push(attr::property("rtcp-mux"));
            }
            if let Some((_, ours)) = &off.chosen_crypto {
                md.attributes.push(attr::value("crypto", ours.to_string()));
            }
            out.media_descriptions.push(md);
            plans.push(plan);
        }
        for (p, s) in plans.iter().zip(self.streams.iter_mut()) {
            s.mid = p.mid.clone();
        }
        self.web.dtls_role = Some(role);
        let text = self.ims_origin.stamp(&mut out);
        self.plan = Some(MediaPlan { web: self.web.clone(), streams: plans });
        self.plan_version += 1;
        Ok(text)
    }
}

impl Setup {
    /// What the gateway writes once its DTLS role is settled.
    fn from_role(role: DtlsRole) -> Setup {
        match role {
            DtlsRole::Server => Setup::Passive,
            DtlsRole::Client => Setup::Active,
        }
    }
}

/// The codecs of an m-line in format order: (rtpmap, fmtp, rtcp-fb), auxiliary formats
/// (rtx, red, FEC, CN) left out; telephone-event kept.
fn codecs_of(m: &MediaDescription) -> Vec<CodecEntry> {
    m.media_name
        .formats
        .iter()
        .filter_map(|f| attr::parse_pt(f))
        .filter_map(|pt| {
            let r = attr::rtpmap_for(&m.attributes, pt)?;
            if is_auxiliary(&r) {
                return None;
            }
            let fmtp = attr::fmtp_for(&m.attributes, pt).map(str::to_owned);
            let fb = attr::rtcp_fb_for(&m.attributes, pt).into_iter().map(str::to_owned).collect();
            Some((r, fmtp, fb))
        })
        .collect()
}

type CodecEntry = (Rtpmap, Option<String>, Vec<String>);

/// `PCMU/8000, opus/48000` for refusal reasons.
fn names(codecs: &[CodecEntry]) -> String {
    codecs.iter().map(|c| format!("{}/{}", c.0.encoding, c.0.clock)).collect::<Vec<_>>().join(", ")
}

/// The telephone-event format to relay: the one on `clock` (nothing to rescale), else the
/// first offered.
fn event_on_clock(codecs: &[CodecEntry], clock: u32) -> Option<&Rtpmap> {
    let mut events = codecs.iter().map(|c| &c.0).filter(|r| is_telephone_event(r));
    let first = events.clone().next();
    events.find(|r| r.clock == clock).or(first)
}

/// Which payload types of the answer's m-line map to what was offered, by payload type
/// number first and by codec when the answerer renumbered (RFC 3264 §6.1 allows it for what
/// the answerer receives). `None` when nothing maps.
fn map_answer_formats(am: &MediaDescription, off: &Offered, answerer: Side) -> Option<(Vec<CodecMap>, Option<DtmfMap>)> {
    let mut codecs = Vec::new();
    let mut dtmf = None;
    for pt in am.media_name.formats.iter().filter_map(|f| attr::parse_pt(f)) {
        let r = attr::rtpmap_for(&am.attributes, pt);
        if let Some(d) = &off.dtmf {
            let offered_pt = if answerer == Side::Ims { d.ims_pt } else { d.web_pt };
            if pt == offered_pt || r.as_ref().is_some_and(is_telephone_event) {
                dtmf = Some(d.clone());
                continue;
            }
        }
        let far = |c: &Candidate| if answerer == Side::Ims { c.ims.clone() } else { c.web.clone() };
        let hit = off.candidates.iter().find(|c| far(c).pt == pt).or_else(|| {
            let r = r.as_ref()?;
            off.candidates.iter().find(|c| {
                let f = far(c);
                f.encoding.eq_ignore_ascii_case(&r.encoding) && f.clock == r.clock
            })
        });
        if let Some(c) = hit {
            if !codecs.iter().any(|m: &CodecMap| m.web_pt == c.web.pt && m.ims_pt == c.ims.pt) {
                let mut map = c.codec_map();
                // The answerer's fmtp states what it receives (an H.264 level, VP8 max-fs).
                if let Some(f) = attr::fmtp_for(&am.attributes, pt) {
                    let theirs = if answerer == Side::Ims { &mut map.ims_fmtp } else { &mut map.web_fmtp };
                    *theirs = Some(f.to_owned());
                }
                codecs.push(map);
            }
        }
    }
    (!codecs.is_empty()).then_some((codecs, dtmf))
}

/// Where IMS wants RTP and RTCP for this m-line: `None` for an unspecified (hold) address.
fn ims_remote(sd: &SessionDescription, m: &MediaDescription) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let Some(ip) = connection_addr(sd, m).filter(|ip| !ip.is_unspecified()) else { return (None, None) };
    let rtp_port = port(m);
    // RFC 3605: a=rtcp:<port> [IN IP4 <addr>]; otherwise RTP port + 1.
    let rtcp = attr::get(&m.attributes, "rtcp")
        .and_then(|v| {
            let mut w = v.split_ascii_whitespace();
            let p: u16 = w.next()?.parse().ok()?;
            let addr = match (w.next(), w.next(), w.next()) {
                (Some(_), Some(_), Some(a)) => a.parse().ok()?,
                _ => ip,
            };
            Some(SocketAddr::new(addr, p))
        })
        .or_else(|| Some(SocketAddr::new(ip, rtp_port.checked_add(1)?)));
    (Some(SocketAddr::new(ip, rtp_port)), rtcp)
}

/// An m-line's a=ptime in milliseconds (RFC 4566 §6), if given and sane.
fn ptime_of(m: &MediaDescription) -> Option<u32> {
    attr::get(&m.attributes, "ptime").and_then(|v| v.trim().parse().ok()).filter(|p| (1..=200).contains(p))
}

/// What `m` (in `sd`) asks to receive at most, bits/s: b=TIAS, else b=AS (kbit/s), on the
/// m-line, else on the session.
fn max_bitrate_of(sd: &SessionDescription, m: &MediaDescription) -> Option<u32> {
    fn of(lines: &[sdp::description::common::Bandwidth]) -> Option<u64> {
        let find = |t: &str| lines.iter().find(|b| !b.experimental && b.bandwidth_type.eq_ignore_ascii_case(t));
        find("TIAS").map(|b| b.bandwidth).or_else(|| find("AS").map(|b| b.bandwidth.saturating_mul(1000)))
    }
    of(&m.bandwidth).or_else(|| of(&sd.bandwidth)).filter(|b| *b > 0).map(|b| u32::try_from(b).unwrap_or(u32::MAX))
}

fn base_plan(i: usize, s: &Stream) -> StreamPlan {
    StreamPlan {
        index: i,
        kind: s.kind.clone(),
        mid: s.mid.clone(),
        active: false,
        ims_local_port: s.ims_port,
        ims_remote_rtp: None,
        ims_remote_rtcp: None,
        ims_rtcp_mux: false,
        web_direction: Direction::Inactive,
        ims_direction: Direction::Inactive,
        codecs: Vec::new(),
        dtmf: None,
        ims_srtp: None,
        web_ssrc: s.web_ssrc,
        web_feedback: Feedback::default(),
        ims_feedback: Feedback::default(),
        ims_ptime: None,
        ims_max_bitrate: None,
    }
}

fn media(kind: &str, port: u16, proto: &str, pts: impl IntoIterator<Item = impl ToString>) -> MediaDescription {
    MediaDescription {
        media_name: MediaName {
            media: kind.to_owned(),
            port: RangedPort { value: port as isize, range: None },
            protos: proto.split('/').map(str::to_owned).collect(),
            formats: pts.into_iter().map(|p| p.to_string()).collect(),
        },
        media_title: None,
        connection_information: None,
        bandwidth: Vec::new(),
        encryption_key: None,
        attributes: Vec::<Attribute>::new(),
    }
}

/// A browser m-line refused toward IMS: the same medium with port 0 and one format (RFC 3264
/// §6: a rejected stream keeps its place).
fn rejected_ims_m(m: &MediaDescription, policy: &SdpPolicy) -> MediaDescription {
    let proto = if is_rtp(m) { policy.ims.proto().to_owned() } else { parse::proto(m) };
    let first = m.media_name.formats.first().cloned().unwrap_or_else(|| "0".to_owned());
    media(&m.media_name.media, 0, &proto, [first])
}

/// A refused m-line toward the browser: port 0, its mid kept so BUNDLE bookkeeping matches.
fn rejected_web_m(m: &MediaDescription, mid: Option<&str>) -> MediaDescription {
    let proto = if is_rtp(m) { WEB_PROTO.to_owned() } else { parse::proto(m) };
    let first = m.media_name.formats.first().cloned().unwrap_or_else(|| "0".to_owned());
    let mut md = media(&m.media_name.media, 0, &proto, [first]);
    md.connection_information = Some(parse::connection(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)));
    if let Some(mid) = mid {
        md.attributes.push(attr::value("mid", mid));
    }
    md
}

fn media_kind_of(r: &Rtpmap) -> &'static str {
    if r.clock == 90000 {
        "video"
    } else {
        "audio"
    }
}

/// The first dynamic payload type (96-127) from `preferred` on that is not in `used`.
fn free_dynamic_pt(used: &[u8], preferred: u8) -> u8 {
    (preferred..=127).chain(96..preferred).find(|p| !used.contains(p)).unwrap_or(preferred)
}

fn ip_words(ip: IpAddr) -> String {
    format!("IN {} {ip}", if ip.is_ipv4() { "IP4" } else { "IP6" })
}

/// 8 ice-chars: 48 random bits, above the 24 RFC 8445 §5.3 asks for.
const ICE_UFRAG_LEN: usize = 8;
/// 24 ice-chars: 144 random bits, above the 128 RFC 8445 §5.3 asks for.
const ICE_PWD_LEN: usize = 24;

/// An ICE ufrag/pwd of `len` ice-chars (RFC 8839 §5.4: ALPHA / DIGIT / "+" / "/", 64 symbols).
fn ice_token(keys: &mut KeySource, len: usize) -> String {
    const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    keys.token64(ICE_CHARS, len)
}

fn exhausted() -> SdpError {
    SdpError { kind: ErrorKind::Exhausted, reason: "no media ports left".to_owned() }
}


/// The browser's preferred address in one m-line: its highest-priority UDP candidate for
/// component 1 (RTP) whose connection address is an IP address (RFC 8839 §5.1), else the
/// c=/m= address when it is a real one (not 0.0.0.0 and port 9, the "no candidate yet" form
/// of RFC 8840 §4.1).
fn preferred_candidate(sd: &SessionDescription, m: &MediaDescription) -> Option<SocketAddr> {
    let best = attr::all(&m.attributes, "candidate")
        .filter_map(|v| {
            let f: Vec<&str> = v.split_ascii_whitespace().collect();
            let [_, component, transport, priority, address, port, ..] = f.as_slice() else { return None };
            if *component != "1" || !transport.eq_ignore_ascii_case("udp") {
                return None;
            }
            let ip: IpAddr = address.parse().ok()?;
            Some((priority.parse::<u32>().ok()?, SocketAddr::new(ip, port.parse().ok()?)))
        })
        .max_by_key(|(priority, _)| *priority)
        .map(|(_, addr)| addr);
    best.or_else(|| {
        let ip = connection_addr(sd, m)?;
        let p = port(m);
        (!ip.is_unspecified() && p != 9 && p != 0).then(|| SocketAddr::new(ip, p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preferred(sdp: &str) -> Option<SocketAddr> {
        let sd = parse::parse(sdp.replace('\n', "\r\n").as_bytes()).unwrap();
        preferred_candidate(&sd, &sd.media_descriptions[0])
    }

    const HEAD: &str = "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\n";

    #[test]
    fn the_browsers_address_is_its_best_udp_rtp_candidate_then_c_and_m() {
        // Chromium's real offer (conformance corpus): one UDP host candidate, one TCP.
        let chromium = include_str!("../../../conformance/sdp/cases/chromium-audio/1-web-offer.sdp");
        assert_eq!(preferred(chromium), Some("127.0.0.1:48911".parse().unwrap()));
        let mixed = format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\nc=IN IP4 0.0.0.0\n\
             a=candidate:1 1 udp 2122260223 3c1f2a4e-0f7e-4a6b.local 50000 typ host\n\
             a=candidate:2 2 udp 2122260222 192.0.2.7 50001 typ host\n\
             a=candidate:3 1 udp 1686052607 198.51.100.9 61000 typ srflx raddr 0.0.0.0 rport 0\n\
             a=candidate:4 1 tcp 2122260223 192.0.2.7 9 typ host tcptype active\n\
             a=candidate:5 1 udp 41885439 203.0.113.5 3478 typ relay\n"
        );
        assert_eq!(preferred(&mixed), Some("198.51.100.9:61000".parse().unwrap()), "mDNS names, RTCP and TCP are skipped");
        let mdns_only = format!("{HEAD}m=audio 50000 UDP/TLS/RTP/SAVPF 111\nc=IN IP4 192.0.2.8\na=candidate:1 1 udp 2122260223 x.local 50000 typ host\n");
        assert_eq!(preferred(&mdns_only), Some("192.0.2.8:50000".parse().unwrap()));
        let none_yet = format!("{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\nc=IN IP4 0.0.0.0\n");
        assert_eq!(preferred(&none_yet), None);
    }
}
