//! The worker pool: the one module of this crate with threads and a clock. It *runs* the
//! sans-IO pipelines; it does not define them.
//!
//! Each worker thread owns the pipelines of the channels placed on it (a channel is one
//! direction of one transcoded stream) and is fed through one bounded queue. Network tasks
//! never wait on it: [`Channel::push`] is a `try_send`, and a full queue drops the packet
//! (counted) exactly as a congested link would, so one slow worker cannot stall media. Frames
//! come back through the [`FrameSink`] the channel was opened with, which the driver
//! implements (the daemon wakes the call's media thread); nothing here knows about sockets.
//!
//! Two lanes. Audio channels run on the audio workers, video channels on video workers of
//! their own, at a lower scheduling priority: a video frame takes milliseconds to decode and
//! encode, and must never delay a 20 ms audio frame behind it in a queue or on a core. A
//! video packet that waited longer than [`VIDEO_MAX_LAG`] is dropped rather than worked on:
//! the channel then sees a gap, drops to the next keyframe and asks for one, so a worker that
//! falls behind sheds load instead of queueing it.
//!
//! Channels are spread over a lane's workers round-robin. [`calibrate`] measures what an
//! audio channel costs on this machine, which with the thread count gives the capacity
//! admission control enforces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::g711::Law;
use crate::pipeline::{G711ToOpus, G711ToOpusConfig, OpusToG711, OpusToG711Config, PipelineError, PipelineStats};
use crate::video::channel::{VideoChannel, VideoChannelConfig, VideoOutput, VideoStats};
use crate::video::picture::VideoCodecError;

/// The largest RTP payload a channel takes or produces: 60 ms of G.711 is 480 bytes, an Opus
/// packet at browser rates stays far below this, and video channels write at most
/// [`VideoChannelConfig::max_payload`] (1200 by default).
pub const MAX_PAYLOAD: usize = 1280;

/// Jobs queued per audio worker before pushes are dropped: about 0.4 s of 20 ms packets for
/// 50 channels, far more than a healthy worker ever holds.
const QUEUE: usize = 1024;

/// Jobs queued per video worker: about a second of four 1 Mbit/s streams. The lag limit
/// below, not this, is what keeps latency down.
const VIDEO_QUEUE: usize = 512;

/// A video packet older than this when its worker reaches it is dropped (counted): the
/// worker is behind, and a frame that late is worth less than the keyframe the gap brings.
pub const VIDEO_MAX_LAG: Duration = Duration::from_millis(200);

/// The nice value of video workers (audio workers keep the process's): under contention the
/// scheduler gives audio the core first.
const VIDEO_NICE: i32 = 10;

/// What one channel converts.
#[derive(Clone, Debug)]
pub enum ChannelSpec {
    /// Browser Opus to IMS G.711.
    OpusToG711(OpusToG711Config),
    /// IMS G.711 to browser Opus.
    G711ToOpus(G711ToOpusConfig),
    /// One direction of a transcoded video stream (VP8 <-> H.264).
    Video(VideoChannelConfig),
}

impl ChannelSpec {
    /// Whether the channel runs on the video lane.
    pub fn is_video(&self) -> bool {
        matches!(self, ChannelSpec::Video(_))
    }

    fn build(&self) -> Result<Box<dyn Transcode>, PoolError> {
        Ok(match self {
            ChannelSpec::OpusToG711(c) => Box::new(OpusToG711::new(c.clone())?),
            ChannelSpec::G711ToOpus(c) => Box::new(G711ToOpus::new(c.clone())?),
            ChannelSpec::Video(c) => Box::new(VideoChannel::new(c.clone())?),
        })
    }
}

/// What a channel's receiver asks of the encoder feeding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Send a keyframe next (the receiver's PLI, FIR or SIP INFO picture_fast_update).
    Keyframe,
    /// The receiver's estimate or limit, bits/s (REMB, TMMBR).
    Bitrate(u32),
}

/// A channel's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelStats {
    /// An audio pipeline's.
    Audio(PipelineStats),
    /// A video channel's.
    Video(VideoStats),
}

/// One channel's pipeline run inline, by a driver of its own (`estuary replay` runs them on
/// its virtual clock so that a replay is deterministic); the pool runs the same pipelines on
/// its workers.
pub struct Pipeline(Box<dyn Transcode>);

impl Pipeline {
    /// The pipeline `spec` describes (its codecs are set up here).
    pub fn new(spec: &ChannelSpec) -> Result<Pipeline, PoolError> {
        spec.build().map(Pipeline)
    }

    /// An RTP packet of the input codec.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) {
        self.0.push(now, seq, timestamp, marker, payload);
    }

    /// The receiver's request (audio pipelines have nothing to do with it).
    pub fn control(&mut self, now: Instant, control: Control) {
        self.0.control(now, control);
    }

    /// The next output due at `now`; a frame is written into `out`.
    pub fn poll<'a>(&mut self, now: Instant, out: &'a mut [u8]) -> Option<Produced<'a>> {
        Some(match self.0.poll(now, out)? {
            Polled::Frame { timestamp, len, marker } => Produced::Frame(OutFrame { timestamp, marker, payload: &out[..len] }),
            Polled::RequestKeyframe => Produced::RequestKeyframe,
        })
    }

    /// When [`Pipeline::poll`] has something next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    /// Its counters so far.
    pub fn stats(&self) -> ChannelStats {
        self.0.stats()
    }
}

/// What a pipeline produced.
#[derive(Debug)]
pub enum Produced<'a> {
    /// A frame (audio) or an RTP payload (video) for the receiver.
    Frame(OutFrame<'a>),
    /// The channel's decoder lost its reference: ask the sender for a keyframe.
    RequestKeyframe,
}

/// A frame a channel produced, lent to the sink.
#[derive(Debug)]
pub struct OutFrame<'a> {
    /// RTP timestamp in the output codec's clock, continuous per channel.
    pub timestamp: u32,
    /// Audio: set on the first frame after a start, an idle period or a reset. Video: the
    /// last packet of a frame.
    pub marker: bool,
    /// The frame in the output codec.
    pub payload: &'a [u8],
}

/// Where a channel's output goes; called on the worker thread, so it must not block.
/// Returning false (the receiver is gone) closes the channel.
pub trait FrameSink: Send {
    /// Takes one frame; false when nobody will take more.
    fn deliver(&mut self, frame: OutFrame<'_>) -> bool;
    /// A video channel's decoder lost its reference: the sender must be asked for a
    /// keyframe (in the form its leg negotiated). False when nobody will take more.
    fn request_keyframe(&mut self) -> bool;
}

/// What a pipeline's `poll` wrote.
enum Polled {
    Frame { timestamp: u32, len: usize, marker: bool },
    RequestKeyframe,
}

/// The pipelines behind one interface.
trait Transcode: Send {
    fn push(&mut self, now: Instant, seq: u16, timestamp: u32, marker: bool, payload: &[u8]);
    fn control(&mut self, now: Instant, control: Control);
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Polled>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn stats(&self) -> ChannelStats;
}

// Audio pipelines restore their own timing from timestamps and sequence numbers: the marker
// and the receiver's requests mean nothing to them.
impl Transcode for OpusToG711 {
    fn push(&mut self, now: Instant, seq: u16, timestamp: u32, _marker: bool, payload: &[u8]) {
        OpusToG711::push(self, now, seq, timestamp, payload);
    }
    fn control(&mut self, _now: Instant, _control: Control) {}
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Polled> {
        OpusToG711::poll(self, now, out).map(|f| Polled::Frame { timestamp: f.timestamp, len: f.len, marker: f.marker })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        OpusToG711::poll_timeout(self)
    }
    fn stats(&self) -> ChannelStats {
        ChannelStats::Audio(OpusToG711::stats(self))
    }
}

impl Transcode for G711ToOpus {
    fn push(&mut self, now: Instant, seq: u16, timestamp: u32, _marker: bool, payload: &[u8]) {
        G711ToOpus::push(self, now, seq, timestamp, payload);
    }
    fn control(&mut self, _now: Instant, _control: Control) {}
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Polled> {
        G711ToOpus::poll(self, now, out).map(|f| Polled::Frame { timestamp: f.timestamp, len: f.len, marker: f.marker })
    }
    fn poll_timeout(&self) -> Option<Instant> {
        G711ToOpus::poll_timeout(self)
    }
    fn stats(&self) -> ChannelStats {
        ChannelStats::Audio(G711ToOpus::stats(self))
    }
}

impl Transcode for VideoChannel {
    fn push(&mut self, now: Instant, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) {
        VideoChannel::push(self, now, seq, timestamp, marker, payload);
    }
    fn control(&mut self, now: Instant, control: Control) {
        match control {
            Control::Keyframe => self.request_keyframe(now),
            Control::Bitrate(bps) => self.set_bitrate(now, bps),
        }
    }
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<Polled> {
        if VideoChannel::poll_timeout(self).is_some_and(|t| t <= now) {
            self.handle_timeout(now);
        }
        loop {
            match self.poll_output()? {
                VideoOutput::RequestKeyframe => return Some(Polled::RequestKeyframe),
                VideoOutput::Rtp { timestamp, payload } => {
                    // Never larger than `max_payload`, which a spec keeps within MAX_PAYLOAD;
                    // a payload that is not would be cut, so it is skipped instead.
                    let Some(dst) = out.get_mut(..payload.data.len()) else { continue };
                    dst.copy_from_slice(&payload.data);
                    return Some(Polled::Frame { timestamp, len: payload.data.len(), marker: payload.marker });
                }
            }
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        VideoChannel::poll_timeout(self)
    }
    fn stats(&self) -> ChannelStats {
        ChannelStats::Video(VideoChannel::stats(self))
    }
}

// Packets travel inline in the queue: no allocation per packet, at the price of a large job.
#[allow(clippy::large_enum_variant)]
enum Job {
    Open { id: u64, pipeline: Box<dyn Transcode>, sink: Box<dyn FrameSink>, shared: Arc<SharedStats> },
    Packet { id: u64, at: Instant, seq: u16, timestamp: u32, marker: bool, len: u16, data: [u8; MAX_PAYLOAD] },
    Control { id: u64, at: Instant, control: Control },
    Close { id: u64 },
}

/// Pool-wide counters (relaxed atomics, read by /metrics).
#[derive(Debug)]
pub struct PoolStats {
    /// What `full_since_us` counts from.
    epoch: Instant,
    /// Microseconds since `epoch` (+1) of the first refused audio push of the current run of
    /// refusals; 0 while pushes succeed. Read by the health check: a pool that refuses for a
    /// whole second is not keeping up.
    full_since_us: AtomicU64,
    /// Audio channels open now.
    pub channels: AtomicU64,
    /// Packets taken by audio pipelines.
    pub packets_in: AtomicU64,
    /// Audio frames produced.
    pub frames_out: AtomicU64,
    /// Audio pushes refused because a worker's queue was full.
    pub queue_full: AtomicU64,
    /// Lost packets concealed, and recovered from Opus FEC, summed over closed channels.
    pub concealed: AtomicU64,
    /// Lost packets recovered from Opus in-band FEC, summed over closed channels.
    pub fec_recovered: AtomicU64,
    /// Video channels open now.
    pub video_channels: AtomicU64,
    /// Whole video frames the channels reassembled.
    pub video_frames_in: AtomicU64,
    /// Video frames encoded and sent.
    pub video_frames_out: AtomicU64,
    /// Keyframe requests the channels sent toward their senders.
    pub video_keyframes_requested: AtomicU64,
    /// Keyframes the channels' receivers asked for and got.
    pub video_keyframes_forced: AtomicU64,
    /// Video packets dropped because a worker's queue was full or they waited longer than
    /// [`VIDEO_MAX_LAG`].
    pub video_dropped: AtomicU64,
    /// Nanoseconds the video workers spent on jobs (reassembly, decoding, scaling, encoding,
    /// packetising): with `video_frames_in`, what a video frame costs on this machine.
    pub video_busy_ns: AtomicU64,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            epoch: Instant::now(),
            full_since_us: AtomicU64::new(0),
            channels: AtomicU64::new(0),
            packets_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            concealed: AtomicU64::new(0),
            fec_recovered: AtomicU64::new(0),
            video_channels: AtomicU64::new(0),
            video_frames_in: AtomicU64::new(0),
            video_busy_ns: AtomicU64::new(0),
            video_frames_out: AtomicU64::new(0),
            video_keyframes_requested: AtomicU64::new(0),
            video_keyframes_forced: AtomicU64::new(0),
            video_dropped: AtomicU64::new(0),
        }
    }
}

impl PoolStats {
    /// How long pushes have been refused without a success in between, at `now`; `None`
    /// while the queues take packets.
    pub fn full_for(&self, now: Instant) -> Option<Duration> {
        match self.full_since_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(now.saturating_duration_since(self.epoch + Duration::from_micros(us - 1))),
        }
    }

    fn refused(&self, at: Instant) {
        let us = at.saturating_duration_since(self.epoch).as_micros() as u64 + 1;
        // Only the first refusal of a run sets the start.
        let _ = self.full_since_us.compare_exchange(0, us, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn accepted(&self) {
        // A load first: the common case (never full) writes nothing to this shared line.
        if self.full_since_us.load(Ordering::Relaxed) != 0 {
            self.full_since_us.store(0, Ordering::Relaxed);
        }
    }

    /// What one video frame through one channel (reassembled, decoded, scaled, encoded)
    /// costs on the workers, averaged over every frame so far; `None` until
    /// [`VIDEO_COST_FRAMES`] frames have been through, as the first frames (keyframes, encoder
    /// warm-up) are not typical.
    pub fn video_cost_per_frame(&self) -> Option<Duration> {
        let frames = self.video_frames_in.load(Ordering::Relaxed);
        (frames >= VIDEO_COST_FRAMES).then(|| Duration::from_nanos(self.video_busy_ns.load(Ordering::Relaxed) / frames))
    }

    /// Adds what a video channel counted since `last`.
    fn video_progress(&self, last: &VideoStats, now: &VideoStats) {
        let add = |c: &AtomicU64, a: u64, b: u64| {
            if b > a {
                c.fetch_add(b - a, Ordering::Relaxed);
            }
        };
        add(&self.video_frames_in, last.frames_in, now.frames_in);
        add(&self.video_frames_out, last.frames_out, now.frames_out);
        add(&self.video_keyframes_requested, last.keyframes_requested, now.keyframes_requested);
        add(&self.video_keyframes_forced, last.keyframes_forced, now.keyframes_forced);
    }
}

/// One channel's counters, written by its worker and read through its [`Channel`] (for the
/// call record): atomics of that channel alone, no lock.
#[derive(Debug, Default)]
struct SharedStats {
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    frames_skipped: AtomicU64,
    keyframes_requested: AtomicU64,
    keyframes_forced: AtomicU64,
    decode_errors: AtomicU64,
    packets_rejected: AtomicU64,
    bitrate: AtomicU64,
    size: AtomicU64,
}

impl SharedStats {
    fn store(&self, s: &VideoStats) {
        let r = Ordering::Relaxed;
        self.frames_in.store(s.frames_in, r);
        self.frames_out.store(s.frames_out, r);
        self.frames_skipped.store(s.frames_skipped, r);
        self.keyframes_requested.store(s.keyframes_requested, r);
        self.keyframes_forced.store(s.keyframes_forced, r);
        self.decode_errors.store(s.decode_errors, r);
        self.packets_rejected.store(s.packets_rejected, r);
        self.bitrate.store(u64::from(s.bitrate), r);
        self.size.store(u64::from(s.width) << 32 | u64::from(s.height), r);
    }

    fn load(&self) -> VideoStats {
        let r = Ordering::Relaxed;
        let size = self.size.load(r);
        VideoStats {
            frames_in: self.frames_in.load(r),
            frames_out: self.frames_out.load(r),
            frames_skipped: self.frames_skipped.load(r),
            keyframes_requested: self.keyframes_requested.load(r),
            keyframes_forced: self.keyframes_forced.load(r),
            decode_errors: self.decode_errors.load(r),
            packets_rejected: self.packets_rejected.load(r),
            bitrate: self.bitrate.load(r) as u32,
            width: (size >> 32) as u32,
            height: size as u32,
        }
    }
}

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The audio pipeline refused its configuration.
    #[error("transcoding pipeline: {0}")]
    Pipeline(#[from] PipelineError),
    /// The video channel refused its configuration, or a codec would not start.
    #[error("video channel: {0}")]
    Video(#[from] VideoCodecError),
    /// The workers are gone (the pool is shutting down).
    #[error("the transcoder pool has stopped")]
    Stopped,
}

/// The workers of one kind of channel.
struct Lane {
    workers: Vec<SyncSender<Job>>,
    next: AtomicUsize,
}

impl Lane {
    fn pick(&self) -> Option<SyncSender<Job>> {
        let n = self.workers.len();
        (n > 0).then(|| self.workers[self.next.fetch_add(1, Ordering::Relaxed) % n].clone())
    }
}

/// The worker threads.
pub struct Pool {
    audio: Lane,
    video: Lane,
    threads: Vec<JoinHandle<()>>,
    next_id: AtomicU64,
    stats: Arc<PoolStats>,
}

impl Pool {
    /// Starts `audio` audio workers (at least one) and `video` video workers; with no video
    /// workers, video channels share the audio workers.
    pub fn new(audio: usize, video: usize) -> std::io::Result<Pool> {
        let stats = Arc::new(PoolStats::default());
        let mut threads = Vec::new();
        let mut lane = |kind: Kind, n: usize| -> std::io::Result<Lane> {
            let mut workers = Vec::new();
            for i in 0..n {
                let (tx, rx) = sync_channel(if kind == Kind::Video { VIDEO_QUEUE } else { QUEUE });
                let stats = stats.clone();
                let name = match kind {
                    Kind::Audio => format!("transcode-{i}"),
                    Kind::Video => format!("video-{i}"),
                };
                threads.push(std::thread::Builder::new().name(name).spawn(move || run(rx, &stats, kind))?);
                workers.push(tx);
            }
            Ok(Lane { workers, next: AtomicUsize::new(0) })
        };
        let audio = lane(Kind::Audio, audio.max(1))?;
        let video = lane(Kind::Video, video)?;
        Ok(Pool { audio, video, threads, next_id: AtomicU64::new(1), stats })
    }

    /// Audio worker threads running.
    pub fn threads(&self) -> usize {
        self.audio.workers.len()
    }

    /// Video worker threads running (0: video shares the audio workers).
    pub fn video_threads(&self) -> usize {
        self.video.workers.len()
    }

    /// Pool-wide counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Opens a channel converting per `spec`, whose output goes to `sink`. The pipeline is
    /// built here (allocation happens on the caller, once), then moved to a worker.
    pub fn open(&self, spec: &ChannelSpec, sink: Box<dyn FrameSink>) -> Result<Channel, PoolError> {
        let pipeline = spec.build()?;
        let video = spec.is_video();
        let tx = if video { self.video.pick().or_else(|| self.audio.pick()) } else { self.audio.pick() };
        let tx = tx.ok_or(PoolError::Stopped)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(SharedStats::default());
        // Opening waits for room: it happens once per call, never on the packet path.
        tx.send(Job::Open { id, pipeline, sink, shared: shared.clone() }).map_err(|_| PoolError::Stopped)?;
        let open = if video { &self.stats.video_channels } else { &self.stats.channels };
        open.fetch_add(1, Ordering::Relaxed);
        Ok(Channel { id, video, tx, stats: self.stats.clone(), shared })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queues ends the workers once every channel handle is gone too.
        self.audio.workers.clear();
        self.video.workers.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The network side's handle on one channel; dropping it closes the channel.
pub struct Channel {
    id: u64,
    video: bool,
    tx: SyncSender<Job>,
    stats: Arc<PoolStats>,
    shared: Arc<SharedStats>,
}

impl Channel {
    /// Queues an RTP payload that arrived at `at`. Never blocks: false if the worker's queue
    /// is full or the payload too large (the packet is dropped, as on a congested link).
    pub fn push(&self, at: Instant, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> bool {
        if payload.len() > MAX_PAYLOAD {
            return false;
        }
        let mut data = [0u8; MAX_PAYLOAD];
        data[..payload.len()].copy_from_slice(payload);
        let job = Job::Packet { id: self.id, at, seq, timestamp, marker, len: payload.len() as u16, data };
        match self.tx.try_send(job) {
            Ok(()) => {
                if !self.video {
                    self.stats.accepted();
                }
                true
            }
            Err(TrySendError::Full(_)) if self.video => {
                self.stats.video_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Full(_)) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                self.stats.refused(at);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Passes the receiver's request to the channel's encoder. Never blocks: false if the
    /// queue is full (receivers repeat keyframe requests, and send estimates periodically).
    pub fn control(&self, at: Instant, control: Control) -> bool {
        self.tx.try_send(Job::Control { id: self.id, at, control }).is_ok()
    }

    /// A video channel's counters so far (as of its worker's last packet); `None` for audio.
    pub fn video_stats(&self) -> Option<VideoStats> {
        self.video.then(|| self.shared.load())
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // A close must not be lost to a full queue: wait for room (rare, and never on the
        // packet path: a channel closes once per call or codec change).
        let _ = self.tx.send(Job::Close { id: self.id });
        let open = if self.video { &self.stats.video_channels } else { &self.stats.channels };
        open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Audio,
    Video,
}

struct Slot {
    pipeline: Box<dyn Transcode>,
    sink: Box<dyn FrameSink>,
    shared: Arc<SharedStats>,
    /// A video channel's counters as last published.
    published: Option<VideoStats>,
}

impl Slot {
    /// Hands everything due to the sink; false when the sink is gone.
    fn drain(&mut self, now: Instant, out: &mut [u8], stats: &PoolStats) -> bool {
        while let Some(p) = self.pipeline.poll(now, out) {
            let taken = match p {
                Polled::Frame { timestamp, len, marker } => {
                    if self.published.is_none() {
                        stats.frames_out.fetch_add(1, Ordering::Relaxed);
                    }
                    self.sink.deliver(OutFrame { timestamp, marker, payload: &out[..len] })
                }
                Polled::RequestKeyframe => self.sink.request_keyframe(),
            };
            if !taken {
                return false;
            }
        }
        // Audio slots publish nothing per frame (their counters are folded in at close).
        if let Some(last) = &mut self.published {
            if let ChannelStats::Video(now) = self.pipeline.stats() {
                if now != *last {
                    stats.video_progress(last, &now);
                    self.shared.store(&now);
                    *last = now;
                }
            }
        }
        true
    }
}

/// Lowers the calling thread's scheduling priority to [`VIDEO_NICE`]. On Linux the nice
/// value belongs to the thread, so the audio workers and media threads keep theirs.
#[allow(unsafe_code)]
fn lower_priority() -> std::io::Result<()> {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, VIDEO_NICE)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One worker: take jobs until the queue closes, running each pipeline when its next output
/// is due.
/// Frames a video channel must have been through before [`PoolStats::video_cost_per_frame`]
/// answers: a few seconds of one call.
pub const VIDEO_COST_FRAMES: u64 = 90;

fn run(rx: Receiver<Job>, stats: &PoolStats, kind: Kind) {
    if kind == Kind::Video {
        // Not fatal: the video lane still runs, only without the priority gap.
        let _ = lower_priority();
    }
    let mut slots: HashMap<u64, Slot> = HashMap::new();
    let mut out = [0u8; MAX_PAYLOAD];
    loop {
        let next = slots.values().filter_map(|s| s.pipeline.poll_timeout()).min();
        let job = match next {
            // The pool is the driver: its clock feeds the pipelines' `now`.
            Some(t) => match rx.recv_timeout(t.saturating_duration_since(Instant::now())) {
                Ok(j) => Some(j),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(j) => Some(j),
                Err(_) => return,
            },
        };
        let now = Instant::now();
        let timed = kind == Kind::Video;
        match job {
            Some(Job::Open { id, pipeline, sink, shared }) => {
                let published = match pipeline.stats() {
                    ChannelStats::Video(v) => Some(v),
                    ChannelStats::Audio(_) => None,
                };
                slots.insert(id, Slot { pipeline, sink, shared, published });
            }
            Some(Job::Packet { id, at, seq, timestamp, marker, len, data }) => {
                if let Some(s) = slots.get_mut(&id) {
                    if s.published.is_some() && now.saturating_duration_since(at) > VIDEO_MAX_LAG {
                        // Behind: the gap this leaves makes the channel ask for a keyframe.
                        stats.video_dropped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        if s.published.is_none() {
                            stats.packets_in.fetch_add(1, Ordering::Relaxed);
                        }
                        s.pipeline.push(at, seq, timestamp, marker, &data[..usize::from(len)]);
                    }
                }
            }
            Some(Job::Control { id, at, control }) => {
                if let Some(s) = slots.get_mut(&id) {
                    s.pipeline.control(at, control);
                }
            }
            Some(Job::Close { id }) => {
                if let Some(s) = slots.remove(&id) {
                    if let ChannelStats::Audio(st) = s.pipeline.stats() {
                        stats.concealed.fetch_add(st.concealed, Ordering::Relaxed);
                        stats.fec_recovered.fetch_add(st.fec_recovered, Ordering::Relaxed);
                    }
                }
            }
            None => {}
        }
        slots.retain(|_, s| s.drain(now, &mut out, stats));
        if timed {
            // Frames take milliseconds: two clock reads per job are noise beside them.
            stats.video_busy_ns.fetch_add(now.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// What transcoding costs on this machine, measured by running one channel pair (Opus to
/// G.711 and back, 20 ms frames of a voiced test signal) flat out on the calling thread.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// CPU time one bidirectional channel pair needs per second of audio.
    pub cost_per_second: Duration,
    /// How many such pairs one core carries in real time.
    pub pairs_per_core: f64,
    /// G.711 frames that made the round trip (so the figure timed real work).
    pub frames: u32,
}

/// Frame `k` (20 ms at 8 kHz) of the calibration signal: two harmonics of a 180 Hz voice
/// under a 4 Hz syllable envelope. Benchmarks time raw codecs on the same frames.
pub fn voiced_frame(k: usize) -> [i16; 160] {
    let mut f = [0i16; 160];
    for (i, s) in f.iter_mut().enumerate() {
        let t = (k * 160 + i) as f64 / 8000.0;
        let env = 0.6 + 0.4 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
        *s = (env * 7000.0 * ((2.0 * std::f64::consts::PI * 180.0 * t).sin() + 0.4 * (2.0 * std::f64::consts::PI * 900.0 * t).sin())) as i16;
    }
    f
}

/// Runs `seconds` of audio through an [`OpusToG711`] and a [`G711ToOpus`] as fast as the
/// pipelines go (frames pushed and polled on a simulated clock) and times it. A quarter of a
/// second of audio takes a few milliseconds in a release build.
pub fn calibrate(audio: Duration) -> Result<Calibration, PipelineError> {
    let law = Law::Mu;
    let mut enc = G711ToOpus::new(G711ToOpusConfig { law, ..G711ToOpusConfig::default() })?;
    let mut dec = OpusToG711::new(OpusToG711Config { law, ..OpusToG711Config::default() })?;
    let frames = (audio.as_millis() / 20).max(5) as u32;
    // A second of a varying voiced signal, looped: a repeated 20 ms frame would be a
    // periodic signal the encoder finds unusually cheap.
    let signal: Vec<[u8; 160]> = (0..50)
        .map(|k| {
            let mut g711 = [0u8; 160];
            law.encode(&voiced_frame(k), &mut g711);
            g711
        })
        .collect();
    let mut opus = [0u8; MAX_PAYLOAD];
    let mut back = [0u8; MAX_PAYLOAD];
    let start = Instant::now();
    let mut opus_seq = 0u16;
    let mut round_trips = 0u32;
    let t0 = Instant::now();
    for k in 0..frames {
        // Simulated time: G.711 frame k arrives at 20 ms * k; whatever each pipeline has due
        // by then is produced and fed to the next.
        let now = start + Duration::from_millis(20 * u64::from(k));
        enc.push(now, k as u16, k * 160, &signal[k as usize % signal.len()]);
        while let Some(t) = enc.poll_timeout().filter(|t| *t <= now) {
            let Some(f) = enc.poll(t, &mut opus) else { break };
            dec.push(t, opus_seq, f.timestamp, &opus[..f.len]);
            opus_seq = opus_seq.wrapping_add(1);
        }
        while let Some(t) = dec.poll_timeout().filter(|t| *t <= now) {
            if dec.poll(t, &mut back).is_none() {
                break;
            }
            round_trips += 1;
        }
    }
    let spent = t0.elapsed();
    let seconds = f64::from(frames) * 0.02;
    let cost = spent.div_f64(seconds);
    Ok(Calibration { cost_per_second: cost, pairs_per_core: 1.0 / cost.as_secs_f64().max(1e-9), frames: round_trips })
}

#[cfg(test)]
mod tests {
    #[test]
    fn full_for_measures_one_run_of_refusals() {
        let s = PoolStats::default();
        let t0 = s.epoch + Duration::from_millis(10);
        assert_eq!(s.full_for(t0), None);
        s.refused(t0);
        s.refused(t0 + Duration::from_millis(500));
        assert_eq!(s.full_for(t0 + Duration::from_millis(1500)), Some(Duration::from_millis(1500)), "from the first refusal");
        s.accepted();
        assert_eq!(s.full_for(t0 + Duration::from_secs(5)), None, "one accepted push ends the run");
    }

    use super::*;
    use std::sync::mpsc;

    struct ToChannel(mpsc::Sender<(u32, bool, usize)>);

    impl FrameSink for ToChannel {
        fn deliver(&mut self, f: OutFrame<'_>) -> bool {
            self.0.send((f.timestamp, f.marker, f.payload.len())).is_ok()
        }
        fn request_keyframe(&mut self) -> bool {
            panic!("an audio channel asked for a keyframe")
        }
    }

    #[test]
    fn a_channel_on_a_worker_turns_g711_into_opus_frames_in_real_time() {
        let pool = Pool::new(2, 0).unwrap();
        let (tx, rx) = mpsc::channel();
        let spec = ChannelSpec::G711ToOpus(G711ToOpusConfig { law: Law::Mu, initial_timestamp: 9600, ..G711ToOpusConfig::default() });
        let ch = pool.open(&spec, Box::new(ToChannel(tx))).unwrap();
        assert_eq!(pool.stats().channels.load(Ordering::Relaxed), 1);
        let start = Instant::now();
        for k in 0..15u16 {
            assert!(ch.push(start + Duration::from_millis(20 * u64::from(k)), k, u32::from(k) * 160, false, &[0xffu8; 160]));
            std::thread::sleep(Duration::from_millis(20));
        }
        let frames: Vec<_> = rx.try_iter().collect();
        assert!(frames.len() >= 8, "{} frames in 300 ms: {frames:?}", frames.len());
        assert_eq!(frames[0].0, 9600, "the configured first timestamp");
        assert!(frames[0].1, "marker on the first frame");
        assert!(frames.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(960)), "{frames:?}");
        drop(ch);
        // The close reaches the worker; the counters follow.
        assert_eq!(pool.stats().channels.load(Ordering::Relaxed), 0);
        assert!(pool.stats().packets_in.load(Ordering::Relaxed) >= 15);
    }

    #[test]
    fn a_sink_whose_receiver_is_gone_closes_the_channel_and_oversized_payloads_are_refused() {
        let pool = Pool::new(1, 0).unwrap();
        let (tx, rx) = mpsc::channel();
        drop(rx);
        let spec = ChannelSpec::G711ToOpus(G711ToOpusConfig { law: Law::A, ..G711ToOpusConfig::default() });
        let ch = pool.open(&spec, Box::new(ToChannel(tx))).unwrap();
        assert!(!ch.push(Instant::now(), 0, 0, false, &[0u8; MAX_PAYLOAD + 1]));
        assert!(ch.push(Instant::now(), 0, 0, false, &[0xd5u8; 160]));
        std::thread::sleep(Duration::from_millis(150));
        // Further pushes are still accepted (the slot is gone; nothing panics).
        assert!(ch.push(Instant::now(), 1, 160, false, &[0xd5u8; 160]));
    }

    #[test]
    fn calibration_measures_a_positive_cost() {
        let c = calibrate(Duration::from_millis(400)).unwrap();
        assert!(c.cost_per_second > Duration::ZERO && c.pairs_per_core > 0.0, "{c:?}");
        // 20 frames in; all but the jitter buffers' start-up delay come back out.
        assert!(c.frames >= 14, "{c:?}");
    }
}
