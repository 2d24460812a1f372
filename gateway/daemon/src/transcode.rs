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
use estuary_core::transcode::{same_transcoding, spec_for};
use estuary_sdp::MediaPlan;
use estuary_transcoder::{pool::MAX_PAYLOAD, Channel, FrameSink, OutFrame, Pool};
use std::sync::mpsc::{SyncSender, TrySendError};
use tracing::{info, warn};

use crate::error::DaemonError;
use crate::media::Wakeup;

/// Share of the measured capacity admitted: the workers share the cores with the relay, the
/// signalling and the OS.
const HEADROOM: f64 = 0.5;

/// The pool and what it can carry.
pub struct Transcoder {
    pub pool: Pool,
    /// Channels admitted at once (`transcoder.max_channels`, or measured).
    pub capacity: usize,
}

impl Transcoder {
    /// Starts the workers and measures a channel's cost; `None` when transcoding is off.
    pub fn start(cfg: &Config) -> Result<Option<Arc<Transcoder>>, DaemonError> {
        if !cfg.transcoder.enabled {
            return Ok(None);
        }
        let threads = match cfg.transcoder.threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let pool = Pool::new(threads).map_err(|e| DaemonError::setup("transcoder.threads", format!("cannot start workers: {e}")))?;
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
            pair_cost_ms_per_s = cal.cost_per_second.as_secs_f64() * 1e3,
            measured_channels = measured,
            capacity,
            "transcoder ready (a channel is one transcoded stream, both directions)"
        );
        Ok(Some(Arc::new(Transcoder { pool, capacity })))
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
        ]
    }
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

/// A media thread's queue of transcoded frames (all its calls'), and how to wake it.
#[derive(Clone)]
pub struct FrameQueue {
    tx: SyncSender<TcFrame>,
    wakeup: Arc<Wakeup>,
}

impl FrameQueue {
    pub fn new(tx: SyncSender<TcFrame>, wakeup: Arc<Wakeup>) -> FrameQueue {
        FrameQueue { tx, wakeup }
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
        // A full queue drops the frame (the thread is behind); a closed one ends the channel.
        match self.queue.tx.try_send(frame) {
            Ok(()) => {
                self.queue.wakeup.wake();
                true
            }
            Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Disconnected(_)) => false,
        }
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
            ch.push(Instant::now(), p.seq().0, p.timestamp(), p.payload());
        }
    }

    /// A new plan: channels of streams whose transcoded codec pair changed (or that no longer
    /// transcode) close; they reopen on the next packet.
    pub fn plan_changed(&mut self, old: &MediaPlan, new: &MediaPlan) {
        self.channels.retain(|(i, _), _| same_transcoding(old, new, *i));
        self.refused.retain(|i| same_transcoding(old, new, *i));
    }
}
