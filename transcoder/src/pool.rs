//! The worker pool: the one module of this crate with threads and a clock. It *runs* the
//! sans-IO pipelines; it does not define them.
//!
//! Each worker thread owns the pipelines of the channels placed on it (a channel is one
//! direction of one transcoded stream) and is fed through one bounded queue. Network tasks
//! never wait on it: [`Channel::push`] is a `try_send`, and a full queue drops the packet
//! (counted) exactly as a congested link would, so one slow worker cannot stall media. Frames
//! come back through the [`FrameSink`] the channel was opened with, which the driver
//! implements (the daemon wakes the call's task); nothing here knows about sockets or tokio.
//!
//! Channels are spread over workers round-robin. [`calibrate`] measures what one channel
//! costs on this machine, which with the thread count gives the capacity admission control
//! enforces.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::g711::Law;
use crate::pipeline::{G711ToOpus, G711ToOpusConfig, OpusToG711, OpusToG711Config, PipelineError, PipelineStats};

/// The largest RTP payload a channel takes or produces: 60 ms of G.711 is 480 bytes, an Opus
/// packet at browser rates stays far below this.
pub const MAX_PAYLOAD: usize = 1280;

/// Jobs queued per worker before pushes are dropped: about 0.4 s of 20 ms packets for 50
/// channels, far more than a healthy worker ever holds.
const QUEUE: usize = 1024;

/// What one channel converts.
#[derive(Clone, Debug)]
pub enum ChannelSpec {
    /// Browser Opus to IMS G.711.
    OpusToG711(OpusToG711Config),
    /// IMS G.711 to browser Opus.
    G711ToOpus(G711ToOpusConfig),
}

impl ChannelSpec {
    fn build(&self) -> Result<Box<dyn Transcode>, PipelineError> {
        Ok(match self {
            ChannelSpec::OpusToG711(c) => Box::new(OpusToG711::new(c.clone())?),
            ChannelSpec::G711ToOpus(c) => Box::new(G711ToOpus::new(c.clone())?),
        })
    }
}

/// One channel's pipeline run inline, by a driver of its own (`estuary replay` runs them on
/// its virtual clock so that a replay is deterministic); the pool runs the same pipelines on
/// its workers.
pub struct Pipeline(Box<dyn Transcode>);

impl Pipeline {
    /// The pipeline `spec` describes (its codecs are set up here).
    pub fn new(spec: &ChannelSpec) -> Result<Pipeline, PipelineError> {
        spec.build().map(Pipeline)
    }

    /// An RTP packet of the input codec.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) {
        self.0.push(now, seq, timestamp, payload);
    }

    /// The next frame due at `now`, written into `out`.
    pub fn poll<'a>(&mut self, now: Instant, out: &'a mut [u8]) -> Option<OutFrame<'a>> {
        let (timestamp, len, marker) = self.0.poll(now, out)?;
        Some(OutFrame { timestamp, marker, payload: &out[..len] })
    }

    /// When [`Pipeline::poll`] has something next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    /// Its counters so far.
    pub fn stats(&self) -> PipelineStats {
        self.0.stats()
    }
}

/// A frame a channel produced, lent to the sink.
#[derive(Debug)]
pub struct OutFrame<'a> {
    /// RTP timestamp in the output codec's clock, continuous per channel.
    pub timestamp: u32,
    /// Set on the first frame after a start, an idle period or a reset.
    pub marker: bool,
    /// The frame in the output codec.
    pub payload: &'a [u8],
}

/// Where a channel's frames go; called on the worker thread, so it must not block. Returning
/// false (the receiver is gone) closes the channel.
pub trait FrameSink: Send {
    /// Takes one frame; false when nobody will take more.
    fn deliver(&mut self, frame: OutFrame<'_>) -> bool;
}

/// The two pipelines behind one interface.
trait Transcode: Send {
    fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]);
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(u32, usize, bool)>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn stats(&self) -> PipelineStats;
}

impl Transcode for OpusToG711 {
    fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) {
        OpusToG711::push(self, now, seq, timestamp, payload);
    }
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(u32, usize, bool)> {
        OpusToG711::poll(self, now, out).map(|f| (f.timestamp, f.len, f.marker))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        OpusToG711::poll_timeout(self)
    }
    fn stats(&self) -> PipelineStats {
        OpusToG711::stats(self)
    }
}

impl Transcode for G711ToOpus {
    fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) {
        G711ToOpus::push(self, now, seq, timestamp, payload);
    }
    fn poll(&mut self, now: Instant, out: &mut [u8]) -> Option<(u32, usize, bool)> {
        G711ToOpus::poll(self, now, out).map(|f| (f.timestamp, f.len, f.marker))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        G711ToOpus::poll_timeout(self)
    }
    fn stats(&self) -> PipelineStats {
        G711ToOpus::stats(self)
    }
}

// Packets travel inline in the queue: no allocation per packet, at the price of a large job.
#[allow(clippy::large_enum_variant)]
enum Job {
    Open { id: u64, pipeline: Box<dyn Transcode>, sink: Box<dyn FrameSink> },
    Packet { id: u64, at: Instant, seq: u16, timestamp: u32, len: u16, data: [u8; MAX_PAYLOAD] },
    Close { id: u64 },
}

/// Pool-wide counters (relaxed atomics, read by /metrics).
#[derive(Debug)]
pub struct PoolStats {
    /// What `full_since_us` counts from.
    epoch: Instant,
    /// Microseconds since `epoch` (+1) of the first refused push of the current run of
    /// refusals; 0 while pushes succeed. Read by the health check: a pool that refuses for a
    /// whole second is not keeping up.
    full_since_us: AtomicU64,
    /// Channels open now.
    pub channels: AtomicU64,
    /// Packets taken by pipelines.
    pub packets_in: AtomicU64,
    /// Frames produced.
    pub frames_out: AtomicU64,
    /// Pushes refused because a worker's queue was full.
    pub queue_full: AtomicU64,
    /// Lost packets concealed, and recovered from Opus FEC, summed over closed channels.
    pub concealed: AtomicU64,
    /// Lost packets recovered from Opus in-band FEC, summed over closed channels.
    pub fec_recovered: AtomicU64,
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
}

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The pipeline refused its configuration.
    #[error("transcoding pipeline: {0}")]
    Pipeline(#[from] PipelineError),
    /// The workers are gone (the pool is shutting down).
    #[error("the transcoder pool has stopped")]
    Stopped,
}

/// The worker threads.
pub struct Pool {
    workers: Vec<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    next_worker: AtomicUsize,
    next_id: AtomicU64,
    stats: Arc<PoolStats>,
}

impl Pool {
    /// Starts `threads` workers (at least one).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let stats = Arc::new(PoolStats::default());
        let mut workers = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (tx, rx) = sync_channel(QUEUE);
            let stats = stats.clone();
            let handle = std::thread::Builder::new().name(format!("transcode-{i}")).spawn(move || run(rx, &stats))?;
            workers.push(tx);
            handles.push(handle);
        }
        Ok(Pool { workers, threads: handles, next_worker: AtomicUsize::new(0), next_id: AtomicU64::new(1), stats })
    }

    /// Worker threads running.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Pool-wide counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Opens a channel converting per `spec`, whose frames go to `sink`. The pipeline is
    /// built here (allocation happens on the caller, once), then moved to a worker.
    pub fn open(&self, spec: &ChannelSpec, sink: Box<dyn FrameSink>) -> Result<Channel, PoolError> {
        let pipeline = spec.build()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let w = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let tx = self.workers[w].clone();
        // Opening waits for room: it happens once per call, never on the packet path.
        tx.send(Job::Open { id, pipeline, sink }).map_err(|_| PoolError::Stopped)?;
        self.stats.channels.fetch_add(1, Ordering::Relaxed);
        Ok(Channel { id, tx, stats: self.stats.clone() })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queues ends the workers once every channel handle is gone too.
        self.workers.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The network side's handle on one channel; dropping it closes the channel.
pub struct Channel {
    id: u64,
    tx: SyncSender<Job>,
    stats: Arc<PoolStats>,
}

impl Channel {
    /// Queues an RTP payload that arrived at `at`. Never blocks: false if the worker's queue
    /// is full or the payload too large (the packet is dropped, as on a congested link).
    pub fn push(&self, at: Instant, seq: u16, timestamp: u32, payload: &[u8]) -> bool {
        if payload.len() > MAX_PAYLOAD {
            return false;
        }
        let mut data = [0u8; MAX_PAYLOAD];
        data[..payload.len()].copy_from_slice(payload);
        let job = Job::Packet { id: self.id, at, seq, timestamp, len: payload.len() as u16, data };
        match self.tx.try_send(job) {
            Ok(()) => {
                self.stats.accepted();
                true
            }
            Err(TrySendError::Full(_)) => {
                self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
                self.stats.refused(at);
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // A close must not be lost to a full queue: wait for room (rare, and never on the
        // packet path: a channel closes once per call or codec change).
        let _ = self.tx.send(Job::Close { id: self.id });
        self.stats.channels.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Slot {
    pipeline: Box<dyn Transcode>,
    sink: Box<dyn FrameSink>,
}

/// One worker: take jobs until the queue closes, running each pipeline when its next frame
/// is due.
fn run(rx: Receiver<Job>, stats: &PoolStats) {
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
        match job {
            Some(Job::Open { id, pipeline, sink }) => {
                slots.insert(id, Slot { pipeline, sink });
            }
            Some(Job::Packet { id, at, seq, timestamp, len, data }) => {
                if let Some(s) = slots.get_mut(&id) {
                    stats.packets_in.fetch_add(1, Ordering::Relaxed);
                    s.pipeline.push(at, seq, timestamp, &data[..usize::from(len)]);
                }
            }
            Some(Job::Close { id }) => {
                if let Some(s) = slots.remove(&id) {
                    let st = s.pipeline.stats();
                    stats.concealed.fetch_add(st.concealed, Ordering::Relaxed);
                    stats.fec_recovered.fetch_add(st.fec_recovered, Ordering::Relaxed);
                }
            }
            None => {}
        }
        let now = Instant::now();
        slots.retain(|_, s| {
            while let Some((timestamp, len, marker)) = s.pipeline.poll(now, &mut out) {
                stats.frames_out.fetch_add(1, Ordering::Relaxed);
                if !s.sink.deliver(OutFrame { timestamp, marker, payload: &out[..len] }) {
                    return false;
                }
            }
            true
        });
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
    }

    #[test]
    fn a_channel_on_a_worker_turns_g711_into_opus_frames_in_real_time() {
        let pool = Pool::new(2).unwrap();
        let (tx, rx) = mpsc::channel();
        let spec = ChannelSpec::G711ToOpus(G711ToOpusConfig { law: Law::Mu, initial_timestamp: 9600, ..G711ToOpusConfig::default() });
        let ch = pool.open(&spec, Box::new(ToChannel(tx))).unwrap();
        assert_eq!(pool.stats().channels.load(Ordering::Relaxed), 1);
        let start = Instant::now();
        for k in 0..15u16 {
            assert!(ch.push(start + Duration::from_millis(20 * u64::from(k)), k, u32::from(k) * 160, &[0xffu8; 160]));
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
        let pool = Pool::new(1).unwrap();
        let (tx, rx) = mpsc::channel();
        drop(rx);
        let spec = ChannelSpec::G711ToOpus(G711ToOpusConfig { law: Law::A, ..G711ToOpusConfig::default() });
        let ch = pool.open(&spec, Box::new(ToChannel(tx))).unwrap();
        assert!(!ch.push(Instant::now(), 0, 0, &[0u8; MAX_PAYLOAD + 1]));
        assert!(ch.push(Instant::now(), 0, 0, &[0xd5u8; 160]));
        std::thread::sleep(Duration::from_millis(150));
        // Further pushes are still accepted (the slot is gone; nothing panics).
        assert!(ch.push(Instant::now(), 1, 160, &[0xd5u8; 160]));
    }

    #[test]
    fn calibration_measures_a_positive_cost() {
        let c = calibrate(Duration::from_millis(400)).unwrap();
        assert!(c.cost_per_second > Duration::ZERO && c.pairs_per_core > 0.0, "{c:?}");
        // 20 frames in; all but the jitter buffers' start-up delay come back out.
        assert!(c.frames >= 14, "{c:?}");
    }
}
