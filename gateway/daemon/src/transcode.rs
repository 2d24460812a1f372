//! The daemon's side of transcoding: the worker pool (started once, its capacity measured at
//! start for admission control) and, per call, the channels its media thread opens when the
//! session hands it a packet of a transcoded stream ([`CallTranscoding`]). Frames come back
//! through the media thread's bounded [`FrameQueue`], which wakes its poller.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estuary_b2bua::{MetricKind, Sample};
use estuary_config::Config;
use estuary_media::Leg;
use estuary_rtp::RtpPacket;
use estuary_core::transcode::{control_of, same_transcoding, spec_for};
use estuary_sdp::MediaPlan;
use estuary_media::EncoderRequest;
use estuary_transcoder::video::channel::VideoStats;
use estuary_transcoder::{pool::MAX_PAYLOAD, Channel, FrameSink, OutFrame, Pool};
use std::sync::mpsc::{SyncSender, TrySendError};
use tracing::{info, warn};

use crate::error::DaemonError;
use crate::media::Wakeup;

/// Share of the measured capacity admitted: the workers share the cores with the relay, the
/// signalling and the OS.
const HEADROOM: f64 = 0.5;

/// What a video frame through one channel is taken to cost until the pool has measured it
/// ([`PoolStats::video_cost_per_frame`]): a 640x480 frame decoded and encoded, with room to
/// spare, so that the first video calls are not over-admitted.
///
/// [`PoolStats::video_cost_per_frame`]: estuary_transcoder::pool::PoolStats::video_cost_per_frame
const VIDEO_FRAME_COST_PRIOR: Duration = Duration::from_millis(8);

/// The frame rate a video stream is charged for: what browsers send by default.
const VIDEO_CHARGED_FPS: u32 = 30;

/// The pool and what it can carry.
pub struct Transcoder {
    pub pool: Pool,
    /// Audio channels admitted at once (`transcoder.max_channels`, or measured).
    pub capacity: usize,
    /// CPU time one audio channel (both directions) takes per second, as calibrated.
    audio_channel_cost: Duration,
}

impl Transcoder {
    /// Starts the workers and measures a channel's cost; `None` when transcoding is off.
    pub fn start(cfg: &Config) -> Result<Option<Arc<Transcoder>>, DaemonError> {
        if !cfg.transcoder.enabled {
            return Ok(None);
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let threads = match cfg.transcoder.threads {
            0 => cores,
            n => n,
        };
        // Video workers only when video is transcoded; they sleep until a channel opens.
        let video_threads = match (cfg.transcoder.video, cfg.transcoder.video_threads) {
            (false, _) => 0,
            (true, 0) => cores,
            (true, n) => n,
        };
        let pool = Pool::new(threads, video_threads).map_err(|e| DaemonError::setup("transcoder.threads", format!("cannot start workers: {e}")))?;
        let cal = estuary_transcoder::calibrate(Duration::from_millis(250))
            .map_err(|e| DaemonError::setup("transcoder.enabled", format!("calibration: {e}")))?;
        // A channel is one transcoded stream, both directions: the pair calibration timed.
        let measured = (threads as f64 * cal.pairs_per_core * HEADROOM).floor() as usize;
        let capacity = match cfg.transcoder.max_channels {
            0 => measured.max(1),
            n => n,
        };
        info!(
            threads,
            video_threads,
            pair_cost_ms_per_s = cal.cost_per_second.as_secs_f64() * 1e3,
            measured_channels = measured,
            capacity,
            "transcoder ready (a channel is one transcoded stream, both directions)"
        );
        Ok(Some(Arc::new(Transcoder { pool, capacity, audio_channel_cost: cal.cost_per_second })))
    }

    /// What one transcoded video stream costs, in audio channels: both its directions at
    /// [`VIDEO_CHARGED_FPS`], from the pool's measured cost per frame once it has one (the
    /// first video calls), from [`VIDEO_FRAME_COST_PRIOR`] before.
    pub fn video_channel_cost(&self) -> usize {
        let per_frame = self.pool.stats().video_cost_per_frame().unwrap_or(VIDEO_FRAME_COST_PRIOR);
        video_cost_in_audio_channels(per_frame, self.audio_channel_cost)
    }

    pub fn samples(&self) -> Vec<Sample> {
        let s = self.pool.stats();
        let gauge = |name, help, value: u64| Sample { name, help, kind: MetricKind::Gauge, labels: Vec::new(), value };
        let counter = |name, help, value: &std::sync::atomic::AtomicU64| Sample {
            name,
            help,
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: value.load(Ordering::Relaxed),
        };
        vec![
            gauge("estuary_transcoder_capacity_channels", "Transcoding channels (one transcoded stream, both directions) admitted at once", self.capacity as u64),
            gauge("estuary_transcoder_threads", "Transcoder worker threads", self.pool.threads() as u64),
            gauge("estuary_transcoder_channels_open", "Transcoding pipelines running on the workers (two per channel)", s.channels.load(Ordering::Relaxed)),
            counter("estuary_transcoder_packets_total", "Packets taken by transcoding pipelines", &s.packets_in),
            counter("estuary_transcoder_frames_total", "Frames produced by transcoding pipelines", &s.frames_out),
            counter("estuary_transcoder_queue_full_total", "Packets dropped because a worker's queue was full", &s.queue_full),
            counter("estuary_transcoder_concealed_total", "Lost packets concealed (closed channels)", &s.concealed),
            counter("estuary_transcoder_fec_recovered_total", "Lost Opus packets recovered from in-band FEC (closed channels)", &s.fec_recovered),
            gauge("estuary_transcoder_video_cost_channels", "What a transcoded video stream is charged, in audio channels (measured on the first video calls)", self.video_channel_cost() as u64),
            gauge("estuary_transcoder_video_threads", "Video transcoding worker threads (lower priority than audio)", self.pool.video_threads() as u64),
            gauge("estuary_transcoder_video_channels_open", "Video transcoding channels running (one per direction of a stream)", s.video_channels.load(Ordering::Relaxed)),
            counter("estuary_transcoder_video_frames_in_total", "Whole video frames reassembled from RTP by transcoding channels", &s.video_frames_in),
            counter("estuary_transcoder_video_frames_out_total", "Video frames encoded and sent by transcoding channels", &s.video_frames_out),
            counter("estuary_transcoder_video_keyframes_requested_total", "Keyframe requests sent toward video senders after a loss", &s.video_keyframes_requested),
            counter("estuary_transcoder_video_keyframes_forced_total", "Keyframes sent because a video receiver asked", &s.video_keyframes_forced),
            counter("estuary_transcoder_video_dropped_total", "Video packets dropped because a worker was behind", &s.video_dropped),
        ]
    }
}

/// `per_frame` through each of a stream's two directions at [`VIDEO_CHARGED_FPS`], over what
/// an audio channel costs a second; at least 1.
fn video_cost_in_audio_channels(per_frame: Duration, audio_channel: Duration) -> usize {
    let video = per_frame.as_secs_f64() * 2.0 * f64::from(VIDEO_CHARGED_FPS);
    (video / audio_channel.as_secs_f64().max(1e-9)).ceil().max(1.0) as usize
}

/// A transcoded frame on its way back to the call's media thread.
pub struct TcFrame {
    pub call: u64,
    pub stream: usize,
    pub to: Leg,
    pub timestamp: u32,
    pub marker: bool,
    len: u16,
    data: [u8; MAX_PAYLOAD],
}

impl TcFrame {
    pub fn payload(&self) -> &[u8] {
        &self.data[..usize::from(self.len)]
    }
}

/// What a worker hands back to a call's media thread.
// Frames travel inline, as in the pool's own queue: no allocation per frame.
#[allow(clippy::large_enum_variant)]
pub enum FromWorker {
    Frame(TcFrame),
    /// The channel decoding stream `stream`'s media from leg `from` lost its reference: that
    /// leg's sender must send a keyframe.
    KeyframeNeeded { call: u64, stream: usize, from: Leg },
}

/// A media thread's queue of transcoded frames (all its calls'), and how to wake it.
#[derive(Clone)]
pub struct FrameQueue {
    tx: SyncSender<FromWorker>,
    wakeup: Arc<Wakeup>,
}

impl FrameQueue {
    pub fn new(tx: SyncSender<FromWorker>, wakeup: Arc<Wakeup>) -> FrameQueue {
        FrameQueue { tx, wakeup }
    }

    /// Queues without blocking: a full queue drops (the thread is behind; true, the channel
    /// goes on), a closed one ends the channel (false).
    fn offer(&self, item: FromWorker) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => {
                self.wakeup.wake();
                true
            }
            Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Delivers a channel's frames into its call's media thread (on the worker thread: never
/// blocks).
struct CallSink {
    queue: FrameQueue,
    call: u64,
    stream: usize,
    to: Leg,
}

impl FrameSink for CallSink {
    fn deliver(&mut self, f: OutFrame<'_>) -> bool {
        let mut data = [0u8; MAX_PAYLOAD];
        let len = f.payload.len().min(MAX_PAYLOAD);
        data[..len].copy_from_slice(&f.payload[..len]);
        let frame = TcFrame { call: self.call, stream: self.stream, to: self.to, timestamp: f.timestamp, marker: f.marker, len: len as u16, data };
        self.queue.offer(FromWorker::Frame(frame))
    }

    fn request_keyframe(&mut self) -> bool {
        // The channel toward `to` decodes what the other leg sends.
        self.queue.offer(FromWorker::KeyframeNeeded { call: self.call, stream: self.stream, from: self.to.other() })
    }
}

/// One call's transcoding channels, opened on first use and closed with the call or when a
/// re-offer changes the stream's codecs.
pub struct CallTranscoding {
    transcoder: Arc<Transcoder>,
    channels: HashMap<(usize, Leg), Channel>,
    /// Streams whose codec pair the pool cannot convert (logged once).
    refused: Vec<usize>,
    queue: FrameQueue,
    call: u64,
}

impl CallTranscoding {
    pub fn new(transcoder: Arc<Transcoder>, call: u64, queue: FrameQueue) -> CallTranscoding {
        CallTranscoding { transcoder, channels: HashMap::new(), refused: Vec::new(), queue, call }
    }

    /// The session handed over the plaintext RTP packet in `rtp` of `stream`, bound for `to`.
    pub fn push(&mut self, plan: &MediaPlan, stream: usize, to: Leg, rtp: &[u8]) {
        let Ok(p) = RtpPacket::parse(rtp) else { return };
        if !self.channels.contains_key(&(stream, to)) {
            if self.refused.contains(&stream) {
                return;
            }
            let Some(spec) = plan.streams.get(stream).and_then(|s| spec_for(s, to, rand::random())) else {
                warn!(call = self.call, stream, "no transcoding pipeline for this codec pair; its media is dropped");
                self.refused.push(stream);
                return;
            };
            let sink = Box::new(CallSink { queue: self.queue.clone(), call: self.call, stream, to });
            match self.transcoder.pool.open(&spec, sink) {
                Ok(ch) => {
                    self.channels.insert((stream, to), ch);
                }
                Err(e) => {
                    warn!(call = self.call, stream, error = %e, "cannot open a transcoding channel");
                    self.refused.push(stream);
                    return;
                }
            }
        }
        if let Some(ch) = self.channels.get(&(stream, to)) {
            ch.push(Instant::now(), p.seq().0, p.timestamp(), p.marker(), p.payload());
        }
    }

    /// The receiver on leg `to` of stream `stream` asked something of the encoder feeding
    /// it. Before the channel's first packet there is no encoder yet; its first frame will be
    /// a keyframe anyway.
    pub fn control(&self, stream: usize, to: Leg, request: EncoderRequest) {
        if let Some(ch) = self.channels.get(&(stream, to)) {
            ch.control(Instant::now(), control_of(request));
        }
    }

    /// The video channels' counters, by (stream, toward), for the call record.
    pub fn video_stats(&self) -> Vec<(usize, Leg, VideoStats)> {
        let mut v: Vec<_> = self.channels.iter().filter_map(|(&(i, to), ch)| ch.video_stats().map(|s| (i, to, s))).collect();
        v.sort_by_key(|e| (e.0, e.1));
        v
    }

    /// A new plan: channels of streams whose transcoded codec pair changed (or that no longer
    /// transcode) close; they reopen on the next packet.
    pub fn plan_changed(&mut self, old: &MediaPlan, new: &MediaPlan) {
        self.channels.retain(|(i, _), _| same_transcoding(old, new, *i));
        self.refused.retain(|i| same_transcoding(old, new, *i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_stream_is_charged_both_directions_at_thirty_frames_in_audio_channels() {
        // 5 ms a frame, two directions, 30 frames: 300 ms a second; audio at 2 ms a second.
        assert_eq!(video_cost_in_audio_channels(Duration::from_millis(5), Duration::from_millis(2)), 150);
        // Rounded up, never below one channel, and no division by a zero calibration.
        assert_eq!(video_cost_in_audio_channels(Duration::from_micros(10), Duration::from_millis(2)), 1);
        assert_eq!(video_cost_in_audio_channels(Duration::from_micros(35), Duration::from_millis(1)), 3);
        assert!(video_cost_in_audio_channels(Duration::from_millis(5), Duration::ZERO) > 1_000_000);
    }
}
