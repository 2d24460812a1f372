//! A media plane on the core's own thread and clock: one [`MediaShard`] holding every call's
//! session, and the transcoding pipelines run inline rather than on a worker pool, so the
//! same inputs at the same times give the same outputs. `estuary replay` plays recorded
//! media through it; the live daemon runs the same shard code on its media threads and the
//! same pipelines on its workers, so only timing differs.
//!
//! Sessions are [`MediaSession::replay`] sessions: the browser leg is the plaintext of a
//! recording (no ICE, no DTLS); everything past the SRTP layer is the code every call runs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use estuary_media::shard::MediaShard;
use estuary_media::{Forward, Leg, MediaConfig, MediaSession, Output, Transcoded};
use estuary_rtp::RtpPacket;
use estuary_sdp::MediaPlan;
use estuary_srtp::Certificate;
use estuary_transcoder::{pool::MAX_PAYLOAD, Pipeline, Produced};

use crate::{release_cause, transcode, MediaPlane, MediaPlaneEvent, ReleaseCause};

/// What an [`InlineMedia`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InlineCounters {
    /// Packets a session handed to transcoding.
    pub to_transcoder: u64,
    /// Of those, packets of a codec pair no pipeline converts.
    pub untranscodable: u64,
    /// Frames the pipelines produced.
    pub transcoded: u64,
}

pub struct InlineMedia {
    shard: MediaShard,
    cfg: MediaConfig,
    /// Unused by plaintext sessions, which never handshake; sessions are built with one.
    cert: Certificate,
    /// Where each browser-facing port's browser is, when known before its call's plan.
    browsers: HashMap<u16, SocketAddr>,
    /// Each call's plan, for the transcoding pipelines it needs.
    plans: HashMap<u64, MediaPlan>,
    /// Pipelines by (call, stream, toward), opened on a stream's first packet.
    pipelines: BTreeMap<(u64, usize, Leg), Pipeline>,
    events: VecDeque<MediaPlaneEvent>,
    /// Browser-facing local addresses of every call so far.
    web_locals: Vec<SocketAddr>,
    /// Local addresses of calls that ended.
    ended: Vec<SocketAddr>,
    /// Per leg (web, IMS): the payload types transcoded media is sent with.
    transcoded_pts: [Vec<u8>; 2],
    /// Plans the plane could not take, with when.
    refused: Vec<(Instant, String)>,
    counters: InlineCounters,
    /// The latest `now` the plane was given (for requests met while polling events).
    clock: Instant,
    buf: Vec<u8>,
    frame: Vec<u8>,
}

impl InlineMedia {
    /// A plane of plaintext-browser sessions (see the module documentation).
    pub fn plaintext(now: Instant, cfg: MediaConfig, cert: Certificate) -> InlineMedia {
        InlineMedia {
            shard: MediaShard::new(now, None),
            cfg,
            cert,
            browsers: HashMap::new(),
            plans: HashMap::new(),
            pipelines: BTreeMap::new(),
            events: VecDeque::new(),
            web_locals: Vec::new(),
            ended: Vec::new(),
            transcoded_pts: Default::default(),
            refused: Vec::new(),
            counters: InlineCounters::default(),
            clock: now,
            buf: Vec::with_capacity(estuary_media::MIN_BUFFER),
            frame: vec![0; MAX_PAYLOAD],
        }
    }

    /// The browser of the call that gets browser-facing port `port` is at `browser`: media
    /// may go to it before it sent any (without this, its first packet says where it is).
    pub fn expect_browser(&mut self, port: u16, browser: SocketAddr) {
        self.browsers.insert(port, browser);
    }

    /// Hands the plaintext RTP packet in the buffer to its pipeline, opened on first use.
    fn transcode(&mut self, now: Instant, call: u64, stream: usize, to: Leg) {
        let Ok(p) = RtpPacket::parse(&self.buf) else { return };
        let key = (call, stream, to);
        if !self.pipelines.contains_key(&key) {
            // The first timestamp is 0, not random: a replay compares relative to it.
            let spec = self.plans.get(&call).and_then(|plan| plan.streams.get(stream)).and_then(|s| transcode::spec_for(s, to, 0));
            match spec.map(|s| Pipeline::new(&s)) {
                Some(Ok(pipeline)) => {
                    self.pipelines.insert(key, pipeline);
                }
                _ => {
                    self.counters.untranscodable += 1;
                    return;
                }
            }
        }
        if let Some(pipeline) = self.pipelines.get_mut(&key) {
            pipeline.push(now, p.seq().0, p.timestamp(), p.marker(), p.payload());
        }
        // A video channel produces as it takes packets, not on a timer.
        self.drain(now, key);
    }

    /// Sends what pipeline `key` has due through its call's session.
    fn drain(&mut self, now: Instant, key: (u64, usize, Leg)) {
        let (call, stream, to) = key;
        // Out of the map while the shard is borrowed; put back below.
        let Some(mut pipeline) = self.pipelines.remove(&key) else { return };
        while let Some(produced) = pipeline.poll(now, &mut self.frame) {
            let f = match produced {
                Produced::Frame(f) => f,
                // The decoder of media from the other leg lost its reference.
                Produced::RequestKeyframe => {
                    self.shard.request_keyframe(now, call, stream, to.other());
                    continue;
                }
            };
            self.counters.transcoded += 1;
            let frame = Transcoded { stream, to, payload: f.payload, timestamp: f.timestamp, marker: f.marker };
            if let Forward::Send { from, to } = self.shard.send_transcoded(now, call, frame, &mut self.buf) {
                self.events.push_back(MediaPlaneEvent::Transmit { from, to, data: self.buf.clone() });
            }
        }
        self.pipelines.insert(key, pipeline);
    }

    /// Whether `local` is a call's browser-facing address (else an IMS-facing one).
    pub fn is_web_local(&self, local: SocketAddr) -> bool {
        self.web_locals.contains(&local)
    }

    /// Whether `local` belonged to a call that has ended.
    pub fn ended_at(&self, local: SocketAddr) -> bool {
        self.ended.contains(&local)
    }

    /// The payload types transcoded media is sent with on `leg`.
    pub fn transcoded_payload_types(&self, leg: Leg) -> &[u8] {
        &self.transcoded_pts[leg.index()]
    }

    /// Plans the plane could not take: when, and why.
    pub fn refused(&self) -> &[(Instant, String)] {
        &self.refused
    }

    pub fn counters(&self) -> InlineCounters {
        self.counters
    }

    pub fn calls(&self) -> usize {
        self.shard.len()
    }

    fn refuse(&mut self, now: Instant, call: u64, reason: String) {
        self.refused.push((now, format!("call {call}: {reason}")));
        self.events.push_back(MediaPlaneEvent::Failed { call, cause: ReleaseCause::MediaBearerLoss, reason });
    }
}

impl MediaPlane for InlineMedia {
    fn plan(&mut self, now: Instant, call: u64, plan: Box<MediaPlan>) {
        if self.shard.session(call).is_some() {
            if let Err(e) = self.shard.update_plan(now, call, &plan) {
                return self.refuse(now, call, e.to_string());
            }
            // As on the media threads: a stream whose transcoded pair changed starts afresh.
            if let Some(old) = self.plans.get(&call) {
                self.pipelines.retain(|(c, i, _), _| *c != call || transcode::same_transcoding(old, &plan, *i));
            }
        } else {
            let browser = self.browsers.get(&plan.web.local_port).copied();
            let session = match MediaSession::replay(self.cfg.clone(), &plan, &self.cert, now, call, browser) {
                Ok(s) => s,
                Err(e) => return self.refuse(now, call, e.to_string()),
            };
            if let Err(e) = self.shard.add_call(now, call, session) {
                return self.refuse(now, call, e.to_string());
            }
            self.web_locals.push(SocketAddr::new(self.cfg.web_address, plan.web.local_port));
        }
        for c in plan.streams.iter().flat_map(|s| &s.codecs).filter(|c| c.transcode) {
            for (leg, pt) in [(Leg::Web, c.web_pt), (Leg::Ims, c.ims_pt)] {
                if !self.transcoded_pts[leg.index()].contains(&pt) {
                    self.transcoded_pts[leg.index()].push(pt);
                }
            }
        }
        self.plans.insert(call, *plan);
    }

    fn end(&mut self, now: Instant, call: u64) {
        self.pipelines.retain(|(c, _, _), _| *c != call);
        self.plans.remove(&call);
        if let Some(s) = self.shard.end_call(now, call) {
            self.ended.extend(s.local_addresses());
        }
    }

    fn picture_fast_update(&mut self, now: Instant, call: u64, from: crate::Side) {
        self.shard.picture_fast_update(now, call, crate::leg_of(from));
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.pipelines.values().filter_map(Pipeline::poll_timeout).chain(self.shard.poll_timeout()).min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.clock = now;
        self.shard.handle_timeout(now);
        // Frames due from the pipelines go out through their call's session, as the media
        // threads send the workers' frames.
        let due: Vec<_> = self.pipelines.iter().filter(|(_, p)| p.poll_timeout().is_some_and(|t| t <= now)).map(|(k, _)| *k).collect();
        for key in due {
            self.drain(now, key);
        }
    }

    fn handle_datagram(&mut self, now: Instant, local: SocketAddr, source: SocketAddr, data: &[u8]) -> Option<u64> {
        self.clock = now;
        self.buf.clear();
        self.buf.extend_from_slice(data);
        let routed = self.shard.handle_datagram(now, local, source, &mut self.buf);
        match (routed.forward, routed.call) {
            (Forward::Send { from, to }, _) => self.events.push_back(MediaPlaneEvent::Transmit { from, to, data: self.buf.clone() }),
            (Forward::Transcode { stream, to }, Some(call)) => {
                self.counters.to_transcoder += 1;
                self.transcode(now, call, stream, to);
            }
            (Forward::Transcode { .. }, None) => self.counters.to_transcoder += 1,
            (Forward::Consumed, _) => {}
        }
        routed.call
    }

    fn poll_event(&mut self) -> Option<MediaPlaneEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        loop {
            match self.shard.poll_output()? {
                (_, Output::Transmit { from, to, data }) => return Some(MediaPlaneEvent::Transmit { from, to, data }),
                (call, Output::Event(estuary_media::MediaEvent::Failed { cause, reason })) => {
                    return Some(MediaPlaneEvent::Failed { call, cause: release_cause(cause), reason })
                }
                (call, Output::Event(estuary_media::MediaEvent::PictureFastUpdate)) => return Some(MediaPlaneEvent::PictureFastUpdate { call }),
                (call, Output::Event(estuary_media::MediaEvent::IceConnected { remote })) => return Some(MediaPlaneEvent::PathSelected { call, remote }),
                (call, Output::Encoder { stream, to, request }) => {
                    if let Some(p) = self.pipelines.get_mut(&(call, stream, to)) {
                        p.control(self.clock, transcode::control_of(request));
                    }
                }
                // Connection events and recorder taps mean nothing to an inline plane.
                _ => {}
            }
        }
    }
}
