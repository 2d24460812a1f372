//! Per-call records (`[records]`): when a call ends, answered or not, one JSON object on one
//! line, logged at info ("call record") and, with `records.dir`, appended to
//! `DIR/YYYY-MM-DD.jsonl` (UTC date of the end).
//!
//! A record joins what the signalling engine knows (who called whom, both Call-IDs, when the
//! call started, was answered and ended, the final status and why it ended) with what the
//! media thread measured (per stream: codecs, transcoding, and per leg the packets received,
//! lost, jitter, and sent). The two arrive separately, in either order (a media failure is
//! reported before the engine ends the call; a normal end after): a writer thread joins them,
//! waiting at most [`MEDIA_WAIT`] for the media half, and does the file I/O, so neither the
//! engine nor a media thread ever waits on a disk.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use estuary_b2bua::{CallSummary, Side};
use estuary_core::PolicyReport;
use estuary_config::RecordsConfig;
use estuary_media::{Leg, LegReport, StreamReport};
use estuary_transcoder::video::channel::VideoStats;
use tracing::{info, warn};

use crate::civil::Utc;
use crate::error::DaemonError;

/// How long a record waits for its media half once signalling reported the end: the media
/// task closes right after the engine's MediaEnd, so this only matters when it is stuck.
pub const MEDIA_WAIT: Duration = Duration::from_secs(3);
/// Records queued toward the writer before new ones are dropped (and counted).
const QUEUE: usize = 4096;

enum Msg {
    Ended { call: u64, summary: Box<CallSummary>, policy: Option<PolicyReport>, at: (Instant, SystemTime) },
    Media { call: u64, media: MediaHalf },
}

/// What the media thread knows of a call at its end: each live stream's report, and the
/// video transcoding channels' counters by (stream index, toward).
#[derive(Default)]
pub struct MediaHalf {
    pub streams: Vec<StreamReport>,
    pub video: Vec<(usize, Leg, VideoStats)>,
}

/// The handle tasks use; cheap to share.
pub struct CallRecords {
    tx: SyncSender<Msg>,
    pub written: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
}

impl CallRecords {
    /// Starts the writer thread; checks that `records.dir` can be created.
    pub fn start(cfg: &RecordsConfig) -> Result<CallRecords, DaemonError> {
        if let Some(dir) = &cfg.dir {
            std::fs::create_dir_all(dir).map_err(|e| DaemonError::setup("records.dir", format!("{}: {e}", dir.display())))?;
        }
        let (tx, rx) = sync_channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut w = Writer { dir: cfg.dir.clone(), file: None, pending: HashMap::new(), written: written.clone(), dropped: dropped.clone() };
        std::thread::Builder::new()
            .name("call-records".into())
            .spawn(move || w.run(rx))
            .map_err(|e| DaemonError::setup("records.dir", format!("writer thread: {e}")))?;
        Ok(CallRecords { tx, written, dropped })
    }

    /// Signalling's half: the call ended.
    /// Signalling's half: the call ended. `policy`: its Rx session, if it had one.
    pub fn ended(&self, call: u64, summary: Box<CallSummary>, policy: Option<PolicyReport>) {
        self.send(Msg::Ended { call, summary, policy, at: (Instant::now(), SystemTime::now()) });
    }

    /// The media thread's half, sent when the call's media stops.
    pub fn media(&self, call: u64, media: MediaHalf) {
        self.send(Msg::Media { call, media });
    }

    /// /metrics counters.
    pub fn samples(&self) -> Vec<estuary_b2bua::Sample> {
        let c = |name, help, v: &AtomicU64| estuary_b2bua::Sample { name, help, kind: estuary_b2bua::MetricKind::Counter, labels: Vec::new(), value: v.load(Ordering::Relaxed) };
        vec![
            c("estuary_call_records_total", "Call records written (logged, and appended to records.dir when set)", &self.written),
            c("estuary_call_records_dropped_total", "Call records lost: queue full or the file could not be written", &self.dropped),
        ]
    }

    fn send(&self, m: Msg) {
        if self.tx.try_send(m).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Signalling's half of a record: the summary, the Rx session, and when the end was reported.
type SignallingHalf = (Box<CallSummary>, Option<PolicyReport>, (Instant, SystemTime));

struct Pending {
    summary: Option<SignallingHalf>,
    media: Option<MediaHalf>,
    /// Written (or forgotten, for a media half alone) at this time at the latest.
    due: Instant,
}

struct Writer {
    dir: Option<PathBuf>,
    /// The open file and its date.
    file: Option<(String, File)>,
    pending: HashMap<u64, Pending>,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        loop {
            let wait = self.pending.values().map(|p| p.due).min().map_or(Duration::from_secs(3600), |d| d.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(Msg::Ended { call, summary, policy, at }) => {
                    let media = summary.media;
                    let p = self.pending.entry(call).or_insert_with(|| Pending { summary: None, media: None, due: Instant::now() + MEDIA_WAIT });
                    p.summary = Some((summary, policy, at));
                    // No media half will come for a call that never had media.
                    if !media {
                        p.due = Instant::now();
                    }
                }
                Ok(Msg::Media { call, media }) => {
                    // A media half alone waits for its call's end (a media failure comes first).
                    let p = self.pending.entry(call).or_insert_with(|| Pending { summary: None, media: None, due: Instant::now() + Duration::from_secs(60) });
                    p.media = Some(media);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let calls: Vec<u64> = self.pending.keys().copied().collect();
                    for call in calls {
                        self.flush(call);
                    }
                    return;
                }
            }
            let now = Instant::now();
            let ready: Vec<u64> = self
                .pending
                .iter()
                .filter(|(_, p)| p.due <= now || (p.summary.is_some() && p.media.is_some()))
                .map(|(c, _)| *c)
                .collect();
            for call in ready {
                self.flush(call);
            }
        }
    }

    /// Writes the record of `call` if its signalling half is in; forgets it either way.
    fn flush(&mut self, call: u64) {
        let Some(p) = self.pending.remove(&call) else { return };
        let Some((summary, policy, at)) = p.summary else { return };
        info!(
            call,
            from = %summary.from,
            to = %summary.to,
            status = summary.status.map_or(0, u32::from),
            reason = summary.reason.as_str(),
            duration_s = summary.answered.map_or(0.0, |a| summary.ended.saturating_duration_since(a).as_secs_f64()),
            "call record"
        );
        if self.dir.is_none() {
            self.written.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (line, end) = render(call, &summary, policy.as_ref(), &p.media.unwrap_or_default(), at);
        match self.append(&end, &line) {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                warn!(call, error = %e, "call record not written");
            }
        }
    }

    fn append(&mut self, end: &Utc, line: &str) -> std::io::Result<()> {
        let date = end.date();
        if self.file.as_ref().is_none_or(|(d, _)| *d != date) {
            let dir = self.dir.as_ref().expect("only called with a directory");
            std::fs::create_dir_all(dir)?;
            let f = OpenOptions::new().create(true).append(true).open(dir.join(format!("{date}.jsonl")))?;
            self.file = Some((date, f));
        }
        let (_, f) = self.file.as_mut().expect("opened above");
        // One write per record: a reader tailing the file never sees half a line from us.
        f.write_all(format!("{line}\n").as_bytes())
    }
}

/// The record as one JSON line, and the UTC time of the end (for the file name).
fn render(call: u64, s: &CallSummary, policy: Option<&PolicyReport>, media: &MediaHalf, (mono, wall): (Instant, SystemTime)) -> (String, Utc) {
    let streams = &media.streams;
    // The engine's instants, placed on the wall clock by the moment the end was reported.
    let wall_of = |t: Instant| wall.checked_sub(mono.saturating_duration_since(t)).unwrap_or(wall);
    let start = Utc::of(wall_of(s.started));
    let end = Utc::of(wall_of(s.ended));
    let mut j = String::with_capacity(512);
    j.push('{');
    let _ = write!(j, "\"call\":{call}");
    field(&mut j, "caller", Some(if s.caller == Side::Web { "web" } else { "ims" }));
    field(&mut j, "from", Some(&s.from));
    field(&mut j, "to", Some(&s.to));
    field(&mut j, "web_call_id", Some(&s.web_call_id));
    field(&mut j, "ims_call_id", Some(&s.ims_call_id));
    field(&mut j, "icid", s.icid.as_deref());
    field(&mut j, "start", Some(&start.rfc3339()));
    field(&mut j, "answer", s.answered.map(|a| Utc::of(wall_of(a)).rfc3339()).as_deref());
    field(&mut j, "end", Some(&end.rfc3339()));
    let ms = |d: Duration| d.as_millis();
    match s.answered {
        Some(a) => {
            let _ = write!(j, ",\"setup_ms\":{},\"duration_s\":{:.3}", ms(a.saturating_duration_since(s.started)), s.ended.saturating_duration_since(a).as_secs_f64());
        }
        None => j.push_str(",\"setup_ms\":null,\"duration_s\":0"),
    }
    match s.status {
        Some(st) => {
            let _ = write!(j, ",\"status\":{st}");
        }
        None => j.push_str(",\"status\":null"),
    }
    field(&mut j, "reason", Some(s.reason.as_str()));
    if let Some(p) = policy {
        // Only for calls described to the PCRF (rx.enabled): the Rx session and how its
        // initial AAR came out, to find the call in the PCRF's records.
        j.push_str(",\"rx\":{");
        let _ = write!(j, "\"session_id\":{}", crate::json::string(&p.session_id));
        field(&mut j, "result", p.result.as_deref());
        j.push('}');
    }
    if s.video_dropped {
        // Only when it happened: the transcoder had no room and the call went on without video.
        j.push_str(",\"video_dropped\":\"transcoding_capacity\"");
    }
    j.push_str(",\"streams\":[");
    for (i, st) in streams.iter().enumerate() {
        if i > 0 {
            j.push(',');
        }
        j.push('{');
        let _ = write!(j, "\"kind\":{}", crate::json::string(&st.kind));
        field(&mut j, "mid", st.mid.as_deref());
        field(&mut j, "web_codec", Some(&st.web_codec));
        field(&mut j, "ims_codec", Some(&st.ims_codec));
        let _ = write!(j, ",\"transcoded\":{}", st.transcoded);
        leg(&mut j, "web", &st.web);
        leg(&mut j, "ims", &st.ims);
        let video: Vec<_> = media.video.iter().filter(|v| v.0 == st.index).collect();
        if !video.is_empty() {
            j.push_str(",\"video_transcoding\":{");
            for (k, (_, to, v)) in video.iter().enumerate() {
                let name = if *to == Leg::Web { "to_web" } else { "to_ims" };
                let _ = write!(
                    j,
                    "{}\"{name}\":{{\"frames_in\":{},\"frames_out\":{},\"frames_skipped\":{},\"keyframes_requested\":{},\"keyframes_forced\":{},\"decode_errors\":{},\"bitrate\":{},\"width\":{},\"height\":{}}}",
                    if k > 0 { "," } else { "" },
                    v.frames_in,
                    v.frames_out,
                    v.frames_skipped,
                    v.keyframes_requested,
                    v.keyframes_forced,
                    v.decode_errors,
                    v.bitrate,
                    v.width,
                    v.height
                );
            }
            j.push('}');
        }
        j.push('}');
    }
    j.push_str("]}");
    (j, end)
}

fn leg(j: &mut String, name: &str, l: &LegReport) {
    let _ = write!(
        j,
        ",\"{name}\":{{\"received\":{},\"lost\":{},\"jitter_ms\":{:.2},\"sent\":{},\"sent_octets\":{}}}",
        l.received, l.lost, l.jitter_ms, l.sent, l.sent_octets
    );
}

/// `,"name":"value"` or `,"name":null`.
fn field(j: &mut String, name: &str, value: Option<&str>) {
    let _ = write!(j, ",\"{name}\":{}", value.map_or_else(|| "null".to_owned(), crate::json::string));
}

#[cfg(test)]
mod tests {
    use estuary_b2bua::EndReason;

    use super::*;

    fn summary(answered: bool) -> CallSummary {
        let t0 = Instant::now();
        CallSummary {
            caller: Side::Web,
            from: "sip:alice@ims.test".into(),
            to: "sip:\"bob\"\\x@ims.test".into(),
            web_call_id: "w1".into(),
            ims_call_id: "i1@127.0.0.1".into(),
            started: t0,
            answered: answered.then(|| t0 + Duration::from_millis(1500)),
            ended: t0 + Duration::from_millis(61_500),
            status: Some(if answered { 200 } else { 486 }),
            reason: if answered { EndReason::Bye(Side::Web) } else { EndReason::Rejected(486) },
            media: answered,
            icid: Some("k2j3h4g5f6d7s8a9".into()),
            video_dropped: false,
        }
    }

    #[test]
    fn a_record_is_one_line_of_valid_json_with_escaped_strings() {
        let s = summary(true);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_533_276);
        let streams = [StreamReport {
            index: 0,
            kind: "audio".into(),
            mid: Some("0".into()),
            web_codec: "opus/48000/2".into(),
            ims_codec: "PCMU/8000".into(),
            transcoded: true,
            web: LegReport { received: 3000, lost: 2, jitter_ms: 1.25, sent: 2999, sent_octets: 100 },
            ims: LegReport::default(),
        }];
        let video = StreamReport { index: 1, kind: "video".into(), mid: Some("1".into()), web_codec: "VP8/90000".into(), ims_codec: "H264/90000".into(), ..streams[0].clone() };
        let to_ims = VideoStats { frames_in: 900, frames_out: 450, frames_skipped: 450, keyframes_requested: 1, keyframes_forced: 2, decode_errors: 0, packets_rejected: 0, bitrate: 384_000, width: 352, height: 264 };
        let media = MediaHalf { streams: vec![streams[0].clone(), video], video: vec![(1, Leg::Ims, to_ims), (1, Leg::Web, VideoStats::default())] };
        let (line, end) = render(7, &s, None, &media, (s.ended, wall));
        assert!(
            line.contains("\"video_transcoding\":{\"to_ims\":{\"frames_in\":900,\"frames_out\":450,\"frames_skipped\":450,\"keyframes_requested\":1,\"keyframes_forced\":2,\"decode_errors\":0,\"bitrate\":384000,\"width\":352,\"height\":264},\"to_web\":{"),
            "{line}"
        );
        assert_eq!(line.matches("video_transcoding").count(), 1, "only on the video stream: {line}");
        assert!(!line.contains("video_dropped"), "said only when it happened: {line}");
        let dropped = CallSummary { video_dropped: true, ..s.clone() };
        let (line, _) = render(7, &dropped, None, &media, (s.ended, wall));
        assert!(line.contains("\"reason\":\"bye_from_web\",\"video_dropped\":\"transcoding_capacity\",\"streams\":["), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(end.rfc3339(), "2026-12-06T05:01:16.000Z");
        assert!(line.starts_with("{\"call\":7,\"caller\":\"web\",\"from\":\"sip:alice@ims.test\",\"to\":\"sip:\\\"bob\\\"\\\\x@ims.test\""), "{line}");
        assert!(line.contains("\"start\":\"2026-12-06T05:00:14.500Z\",\"answer\":\"2026-12-06T05:00:16.000Z\",\"end\":\"2026-12-06T05:01:16.000Z\""), "{line}");
        assert!(line.contains("\"setup_ms\":1500,\"duration_s\":60.000,\"status\":200,\"reason\":\"bye_from_web\""), "{line}");
        assert!(line.contains("\"transcoded\":true,\"web\":{\"received\":3000,\"lost\":2,\"jitter_ms\":1.25,\"sent\":2999,\"sent_octets\":100}"), "{line}");
        // Python's json module is the referee of validity where it is installed.
        if let Ok(mut p) = std::process::Command::new("python3")
            .args(["-c", "import json,sys; r=json.loads(sys.stdin.read()); print(r['streams'][0]['web']['lost'], r['to'])"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            p.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2 sip:\"bob\"\\x@ims.test", "{line}");
        }
    }

    #[test]
    fn a_call_described_to_the_pcrf_names_its_rx_session_and_result() {
        let s = summary(true);
        let rx = PolicyReport { session_id: "pcscf.ims.test;1;7".into(), result: Some("2001".into()) };
        let (line, _) = render(4, &s, Some(&rx), &MediaHalf::default(), (s.ended, SystemTime::now()));
        assert!(line.contains(",\"reason\":\"bye_from_web\",\"rx\":{\"session_id\":\"pcscf.ims.test;1;7\",\"result\":\"2001\"},\"streams\":["), "{line}");
        let (line, _) = render(4, &s, None, &MediaHalf::default(), (s.ended, SystemTime::now()));
        assert!(!line.contains("\"rx\""), "only when Rx is on: {line}");
    }

    #[test]
    fn an_unanswered_call_has_null_answer_and_no_streams() {
        let s = summary(false);
        let (line, _) = render(1, &s, None, &MediaHalf::default(), (s.ended, SystemTime::now()));
        assert!(line.contains("\"answer\":null,") && line.contains("\"setup_ms\":null,\"duration_s\":0,\"status\":486,\"reason\":\"rejected\",\"streams\":[]}"), "{line}");
    }

    #[test]
    fn records_join_both_halves_in_either_order_and_land_in_the_days_file() {
        let dir = std::env::temp_dir().join(format!("estuary-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let r = CallRecords::start(&RecordsConfig { dir: Some(dir.clone()) }).unwrap();
        // Media first (a media failure), then the end; then an end, then its media.
        r.media(1, MediaHalf::default());
        r.ended(1, Box::new(summary(true)), None);
        r.ended(2, Box::new(summary(true)), None);
        r.media(2, MediaHalf::default());
        // No media half will come for a call that had none.
        r.ended(3, Box::new(summary(false)), None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.written.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let day = Utc::of(SystemTime::now()).date();
        let text = std::fs::read_to_string(dir.join(format!("{day}.jsonl"))).unwrap();
        let calls: Vec<&str> = text.lines().map(|l| &l[..l.find(',').unwrap()]).collect();
        assert_eq!(calls.len(), 3, "{text}");
        for c in ["{\"call\":1", "{\"call\":2", "{\"call\":3"] {
            assert!(calls.contains(&c), "{text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
