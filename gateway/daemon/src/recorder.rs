//! Per-call captures (`[recording]`): what crossed the gateway for one call, both legs, in a
//! pcapng file Wireshark opens as is.
//!
//! Every task hands its copies to one writer thread over a bounded queue with `try_send`: a
//! full queue loses the copy (counted), never delays a packet or a SIP message. The thread
//! owns the files: one per call (`DIR/YYYY-MM-DD/HHMMSS-call<N>.pcapng`, opened at the call's
//! first packet, closed 32 s after its end so late replies still land in it) and a daily `signalling.pcapng` for SIP outside calls
//! (REGISTER, OPTIONS, MESSAGE...). Messages are tied to calls by Call-ID: the engine reports
//! both legs' Call-IDs when a call starts.
//!
//! Each file has four interfaces (raw IP, so no invented MAC addresses), named for what they
//! carry: SIP toward browsers (each WebSocket message written as one UDP datagram between the
//! browser's and the listener's addresses), SIP toward IMS, browser media *after SRTP
//! decryption* (each such packet carries a pcapng comment saying so), and IMS media.
//! Checksums are correct, so tshark reports no malformed packet.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use estuary_b2bua::{MetricKind, Sample};
use estuary_config::{RecordingConfig, RecordingMode};
use estuary_pcap::{build_udp, LinkType, PcapNgWriter};
use tracing::{info, warn};

use crate::error::DaemonError;

/// Copies queued toward the writer before new ones are dropped.
const QUEUE: usize = 8192;
/// Buffered bytes are flushed at least this often, so a capture is readable during a call.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often old captures are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// A call's capture stays open this long after the call ended, for what still belongs to it:
/// the far side's 200 to a BYE, retransmissions (64*T1 = 32 s, RFC 3261 Timer J).
const LINGER: Duration = Duration::from_secs(32);

/// Which interface of a capture a packet goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    WebSip = 0,
    ImsSip = 1,
    WebMedia = 2,
    ImsMedia = 3,
}

const LANES: [(&str, Lane); 4] = [
    ("web: SIP over WebSocket (one datagram per message)", Lane::WebSip),
    ("ims: SIP", Lane::ImsSip),
    ("web: media, SRTP decrypted by estuary", Lane::WebMedia),
    ("ims: media", Lane::ImsMedia),
];

/// The comment on every browser media packet: Wireshark labels these "SRTP Encrypted
/// Payload" (the SDP beside them says SRTP), so each says what it really is.
const DECRYPTED: &str = "plaintext: SRTP decrypted by estuary (Decode As RTP to read it)";

enum Rec {
    Sip { at: SystemTime, lane: Lane, src: SocketAddr, dst: SocketAddr, data: Vec<u8> },
    Media { call: u64, at: SystemTime, lane: Lane, src: SocketAddr, dst: SocketAddr, data: Vec<u8> },
    CallStarted { call: u64, call_ids: [String; 2] },
    CallEnded { call: u64 },
    /// A reloaded `[recording]` (SIGHUP): new files go to its directory, with its limits.
    Config(RecordingConfig),
}

#[derive(Default)]
struct Stats {
    written: AtomicU64,
    dropped: AtomicU64,
    over_limit: AtomicU64,
    files: AtomicU64,
}

/// The handle every task records through. Its mode can change while the process runs
/// (SIGHUP): off, SIP only, or SIP and media.
pub struct Recorder {
    tx: SyncSender<Rec>,
    mode: AtomicU8,
    stats: Arc<Stats>,
}

fn mode_code(mode: RecordingMode) -> u8 {
    match mode {
        RecordingMode::Off => 0,
        RecordingMode::Signalling => 1,
        RecordingMode::Full => 2,
    }
}

/// `dir` exists or can be made: what recording into it needs.
fn ensure_dir(cfg: &RecordingConfig) -> Result<(), String> {
    if cfg.mode == RecordingMode::Off {
        return Ok(());
    }
    std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("cannot create {}: {e}", cfg.dir.display()))
}

impl Recorder {
    /// Starts the writer thread (idle while `recording.mode = "off"`).
    pub fn start(cfg: &RecordingConfig) -> Result<Arc<Recorder>, DaemonError> {
        ensure_dir(cfg).map_err(|e| DaemonError::setup("recording.dir", e))?;
        let (tx, rx) = sync_channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let writer = Writer::new(cfg.clone(), stats.clone());
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| DaemonError::setup("recording.mode", format!("cannot start the recorder: {e}")))?;
        if cfg.mode != RecordingMode::Off {
            info!(mode = ?cfg.mode, dir = %cfg.dir.display(), "recording calls");
        }
        Ok(Arc::new(Recorder { tx, mode: AtomicU8::new(mode_code(cfg.mode)), stats }))
    }

    /// A recorder that records nothing until reconfigured (tests' contexts).
    #[cfg(test)]
    pub fn off() -> Arc<Recorder> {
        Recorder::start(&RecordingConfig { mode: RecordingMode::Off, ..RecordingConfig::default() }).expect("a recorder that is off starts")
    }

    /// Applies a reloaded `[recording]`: the mode at once (calls set up from now on record
    /// media as it says), the directory and limits for files opened from now on. A directory
    /// that cannot be made is refused and nothing changes.
    pub fn reconfigure(&self, cfg: &RecordingConfig) -> Result<(), String> {
        ensure_dir(cfg)?;
        if self.tx.try_send(Rec::Config(cfg.clone())).is_err() {
            return Err("the recorder's queue is full; try again".into());
        }
        self.mode.store(mode_code(cfg.mode), Ordering::Relaxed);
        Ok(())
    }

    /// Whether SIP messages are recorded (`signalling` or `full`).
    pub fn records_sip(&self) -> bool {
        self.mode.load(Ordering::Relaxed) >= 1
    }

    /// Whether media is recorded too (`full`).
    pub fn records_media(&self) -> bool {
        self.mode.load(Ordering::Relaxed) >= 2
    }

    fn send(&self, rec: Rec) {
        if self.tx.try_send(rec).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A SIP message that crossed `lane` (nothing while recording is off).
    pub fn sip(&self, lane: Lane, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        if self.records_sip() {
            self.send(Rec::Sip { at: SystemTime::now(), lane, src, dst, data: data.to_vec() });
        }
    }

    /// A plaintext media packet of `call` on `lane`.
    pub fn media(&self, call: u64, lane: Lane, src: SocketAddr, dst: SocketAddr, data: Vec<u8>) {
        if self.records_media() {
            self.send(Rec::Media { call, at: SystemTime::now(), lane, src, dst, data });
        }
    }

    pub fn call_started(&self, call: u64, web_call_id: String, ims_call_id: String) {
        self.send(Rec::CallStarted { call, call_ids: [web_call_id, ims_call_id] });
    }

    pub fn call_ended(&self, call: u64) {
        self.send(Rec::CallEnded { call });
    }

    pub fn samples(&self) -> Vec<Sample> {
        let c = |name, help, v: &AtomicU64| Sample { name, help, kind: MetricKind::Counter, labels: Vec::new(), value: v.load(Ordering::Relaxed) };
        vec![
            c("estuary_recording_packets_total", "Packets and SIP messages written to captures", &self.stats.written),
            c("estuary_recording_dropped_total", "Copies lost because the recorder's queue was full", &self.stats.dropped),
            c("estuary_recording_over_limit_total", "Copies not written because the call's capture reached recording.max_file_mb", &self.stats.over_limit),
            c("estuary_recording_files_total", "Capture files opened", &self.stats.files),
        ]
    }
}

struct Capture {
    writer: PcapNgWriter<BufWriter<File>>,
    bytes: u64,
}

impl Capture {
    fn create(path: &Path) -> Result<Capture, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut writer = PcapNgWriter::new_named(BufWriter::new(file), LinkType::RAW, LANES[0].0).map_err(|e| e.to_string())?;
        for (name, _) in &LANES[1..] {
            writer.add_named_interface(LinkType::RAW, name).map_err(|e| e.to_string())?;
        }
        Ok(Capture { writer, bytes: 0 })
    }
}

struct Writer {
    cfg: RecordingConfig,
    stats: Arc<Stats>,
    calls: HashMap<u64, Option<Capture>>,
    by_call_id: HashMap<String, u64>,
    call_ids: HashMap<u64, [String; 2]>,
    /// Ended calls and when; their files close after [`LINGER`].
    ended: HashMap<u64, Instant>,
    /// The day's file for SIP outside calls, and its date.
    general: Option<(String, Capture)>,
}

impl Writer {
    fn new(cfg: RecordingConfig, stats: Arc<Stats>) -> Writer {
        Writer { cfg, stats, calls: HashMap::new(), by_call_id: HashMap::new(), call_ids: HashMap::new(), ended: HashMap::new(), general: None }
    }

    fn run(mut self, rx: Receiver<Rec>) {
        let mut last_flush = Instant::now();
        let mut last_sweep: Option<Instant> = None;
        loop {
            // Idle (nothing open, no call tracked), wake only for the hourly sweep.
            let busy = !(self.calls.is_empty() && self.call_ids.is_empty() && self.ended.is_empty() && self.general.is_none());
            match rx.recv_timeout(if busy { FLUSH_EVERY } else { SWEEP_EVERY }) {
                Ok(rec) => self.take(rec),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_flush.elapsed() >= FLUSH_EVERY {
                self.flush();
                self.close_lingering();
                last_flush = Instant::now();
            }
            if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) && self.cfg.mode != RecordingMode::Off {
                sweep(&self.cfg.dir, self.cfg.max_age);
                last_sweep = Some(Instant::now());
            }
        }
        self.flush();
    }

    fn take(&mut self, rec: Rec) {
        match rec {
            Rec::CallStarted { call, call_ids } => {
                for id in &call_ids {
                    self.by_call_id.insert(id.clone(), call);
                }
                self.call_ids.insert(call, call_ids);
            }
            Rec::CallEnded { call } => {
                self.ended.insert(call, Instant::now());
            }
            Rec::Sip { at, lane, src, dst, data } => {
                match call_id_of(&data).and_then(|id| self.by_call_id.get(id).copied()) {
                    Some(call) => self.write_call(call, at, lane, src, dst, &data),
                    None => self.write_general(at, lane, src, dst, &data),
                }
            }
            Rec::Media { call, at, lane, src, dst, data } => self.write_call(call, at, lane, src, dst, &data),
            Rec::Config(cfg) => {
                if cfg.dir != self.cfg.dir {
                    // The day's signalling file moves with the directory; calls' files stay
                    // where they started.
                    if let Some((_, mut c)) = self.general.take() {
                        let _ = c.writer.flush();
                    }
                }
                info!(mode = ?cfg.mode, dir = %cfg.dir.display(), "recording reconfigured");
                self.cfg = cfg;
            }
        }
    }

    fn write_call(&mut self, call: u64, at: SystemTime, lane: Lane, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        let (dir, max) = (self.cfg.dir.clone(), self.cfg.max_file_bytes);
        let slot = self.calls.entry(call).or_insert_with(|| {
            let (date, time) = utc_date_time(at);
            let path = dir.join(&date).join(format!("{time}-call{call}.pcapng"));
            match Capture::create(&path) {
                Ok(c) => {
                    self.stats.files.fetch_add(1, Ordering::Relaxed);
                    Some(c)
                }
                Err(e) => {
                    warn!(call, error = %e, "cannot create the call's capture; not recording it");
                    None
                }
            }
        });
        if let Some(c) = slot {
            write(c, max, &self.stats, at, lane, src, dst, data);
        }
    }

    fn write_general(&mut self, at: SystemTime, lane: Lane, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        let (date, _) = utc_date_time(at);
        if self.general.as_ref().is_none_or(|(d, _)| *d != date) {
            let path = self.cfg.dir.join(&date).join("signalling.pcapng");
            // A second start on the same day continues in a new file rather than truncating.
            let path = if path.exists() { unique(&path) } else { path };
            match Capture::create(&path) {
                Ok(c) => {
                    self.stats.files.fetch_add(1, Ordering::Relaxed);
                    self.general = Some((date, c));
                }
                Err(e) => {
                    warn!(error = %e, "cannot create the signalling capture");
                    return;
                }
            }
        }
        if let Some((_, c)) = self.general.as_mut() {
            // The daily file is not a call's: no per-call size limit.
            write(c, 0, &self.stats, at, lane, src, dst, data);
        }
    }

    /// Closes the captures of calls that ended more than [`LINGER`] ago.
    fn close_lingering(&mut self) {
        let done: Vec<u64> = self.ended.iter().filter(|(_, at)| at.elapsed() >= LINGER).map(|(c, _)| *c).collect();
        for call in done {
            self.ended.remove(&call);
            if let Some(Some(mut c)) = self.calls.remove(&call) {
                let _ = c.writer.flush();
            }
            for id in self.call_ids.remove(&call).into_iter().flatten() {
                self.by_call_id.remove(&id);
            }
        }
    }

    fn flush(&mut self) {
        for c in self.calls.values_mut().flatten() {
            let _ = c.writer.flush();
        }
        if let Some((_, c)) = self.general.as_mut() {
            let _ = c.writer.flush();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write(c: &mut Capture, max: u64, stats: &Stats, at: SystemTime, lane: Lane, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
    if max > 0 && c.bytes >= max {
        stats.over_limit.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // Mixed address families cannot form one IP packet; such a pair is not recorded.
    let Ok(ip) = build_udp(src, dst, data) else { return };
    let ts = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let written = match lane {
        Lane::WebMedia => c.writer.write_commented_packet_on(lane as u32, ts, &ip, DECRYPTED),
        _ => c.writer.write_packet_on(lane as u32, ts, &ip),
    };
    if written.is_ok() {
        c.bytes += ip.len() as u64 + 32 + if lane == Lane::WebMedia { 8 + DECRYPTED.len().next_multiple_of(4) as u64 } else { 0 };
        stats.written.fetch_add(1, Ordering::Relaxed);
    }
}

/// The Call-ID of a SIP message (full or compact form), without parsing the rest.
fn call_id_of(data: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(data.get(..data.len().min(4096))?).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name == "i").then(|| value.trim())
    })
}

/// `YYYY-MM-DD` and `HHMMSS` (UTC) of `t`.
fn utc_date_time(t: SystemTime) -> (String, String) {
    let u = crate::civil::Utc::of(t);
    (u.date(), u.compact_time())
}

/// `path` with `-N` before the extension, for the first N not taken.
fn unique(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    (1..)
        .map(|n| path.with_file_name(format!("{stem}-{n}.pcapng")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.to_path_buf())
}

/// Deletes captures older than `max_age` under `dir` (and the date folders they leave empty).
fn sweep(dir: &Path, max_age: Duration) {
    if max_age.is_zero() {
        return;
    }
    let Ok(days) = std::fs::read_dir(dir) else { return };
    for day in days.flatten().filter(|d| d.path().is_dir()) {
        let Ok(files) = std::fs::read_dir(day.path()) else { continue };
        for f in files.flatten() {
            let old = f.metadata().and_then(|m| m.modified()).ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age > max_age);
            if old && f.path().extension().is_some_and(|e| e == "pcapng") {
                let _ = std::fs::remove_file(f.path());
            }
        }
        let _ = std::fs::remove_dir(day.path()); // only succeeds when empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        assert_eq!(utc_date_time(t), ("2026-11-30".to_owned(), "005320".to_owned()));
        assert_eq!(utc_date_time(UNIX_EPOCH), ("1970-01-01".to_owned(), "000000".to_owned()));
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_date_time(leap).0, "2000-02-29");
    }

    #[test]
    fn call_ids_are_found_in_full_and_compact_form() {
        assert_eq!(call_id_of(b"INVITE sip:a SIP/2.0\r\nVia: x\r\nCall-ID: abc@h\r\n\r\nv=0"), Some("abc@h"));
        assert_eq!(call_id_of(b"SIP/2.0 200 OK\r\ni:  zz \r\n\r\n"), Some("zz"));
        assert_eq!(call_id_of(b"SIP/2.0 200 OK\r\n\r\nCall-ID: body"), None);
        assert_eq!(call_id_of(&[0xff, 0xfe]), None);
    }
}
