//! Daemon-level metrics, declared once in [`TABLE`] (R15), and the Prometheus text rendering
//! (exposition format 0.0.4) of these plus the engine's own samples.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use estuary_b2bua::{MetricKind, Sample};

/// Every daemon metric. The discriminant indexes [`TABLE`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Metric {
    WsConnections,
    TcpConnections,
    EnginePanics,
    UptimeSeconds,
    WebMessagesReceived,
    ImsMessagesReceived,
    WebMessagesSent,
    ImsMessagesSent,
    ConnectionsRefused,
    FramingErrors,
    OversizeDropped,
    OutputsDropped,
    UnreachableReported,
    MediaPlans,
    UntrustedImsMessages,
    OriginRefused,
    MediaUnroutable,
    MediaUfragClashes,
}

pub struct Def {
    pub metric: Metric,
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
}

const fn def(metric: Metric, name: &'static str, kind: MetricKind, help: &'static str) -> Def {
    Def {
        metric,
        name,
        help,
        kind,
    }
}

use MetricKind::{Counter, Gauge};

/// The one table: name, kind and help of every daemon metric, in [`Metric`] order.
pub const TABLE: &[Def] = &[
    def(
        Metric::WsConnections,
        "estuary_ws_connections",
        Gauge,
        "Open WebSocket connections (WS and WSS).",
    ),
    def(
        Metric::TcpConnections,
        "estuary_tcp_connections",
        Gauge,
        "Open IMS-side TCP connections.",
    ),
    def(
        Metric::EnginePanics,
        "estuary_engine_panics_total",
        Counter,
        "Engine panics caught; the event was dropped.",
    ),
    def(
        Metric::UptimeSeconds,
        "estuary_uptime_seconds",
        Gauge,
        "Seconds since the daemon started.",
    ),
    def(
        Metric::WebMessagesReceived,
        "estuary_web_messages_received_total",
        Counter,
        "SIP messages received from browsers.",
    ),
    def(
        Metric::ImsMessagesReceived,
        "estuary_ims_messages_received_total",
        Counter,
        "SIP messages received from IMS (UDP and TCP).",
    ),
    def(
        Metric::WebMessagesSent,
        "estuary_web_messages_sent_total",
        Counter,
        "SIP messages queued toward browsers.",
    ),
    def(
        Metric::ImsMessagesSent,
        "estuary_ims_messages_sent_total",
        Counter,
        "SIP messages sent or queued toward IMS.",
    ),
    def(
        Metric::ConnectionsRefused,
        "estuary_connections_refused_total",
        Counter,
        "Connections refused by limits.max_ws_connections or max_tcp_connections.",
    ),
    def(
        Metric::FramingErrors,
        "estuary_framing_errors_total",
        Counter,
        "Stream framing errors; each closed its connection.",
    ),
    def(
        Metric::OversizeDropped,
        "estuary_oversize_messages_dropped_total",
        Counter,
        "Messages dropped for exceeding limits.max_message_size.",
    ),
    def(
        Metric::OutputsDropped,
        "estuary_outputs_dropped_total",
        Counter,
        "Engine outputs that could not be delivered (connection gone or stuck).",
    ),
    def(
        Metric::UnreachableReported,
        "estuary_unreachable_total",
        Counter,
        "IMS destinations reported unreachable to the engine.",
    ),
    def(
        Metric::MediaPlans,
        "estuary_media_plans_total",
        Counter,
        "Media plans settled by offer/answer exchanges (initial and re-negotiated).",
    ),
    def(
        Metric::UntrustedImsMessages,
        "estuary_untrusted_ims_messages_total",
        Counter,
        "SIP datagrams and TCP/TLS connections from sources outside ims.trusted_peers, dropped unread.",
    ),
    def(
        Metric::OriginRefused,
        "estuary_ws_origin_refused_total",
        Counter,
        "WebSocket handshakes refused with 403 because their Origin is not in web.allowed_origins.",
    ),
    def(
        Metric::MediaUnroutable,
        "estuary_media_unroutable_total",
        Counter,
        "Datagrams on a media port that no call owns: an unknown ICE username, or a source on a shared browser port that never passed an ICE check.",
    ),
    def(
        Metric::MediaUfragClashes,
        "estuary_media_ufrag_clashes_total",
        Counter,
        "Calls refused because their ICE username fragment was already another call's on the same shared browser port.",
    ),
];

/// Why the daemon ended calls from the media plane: the `cause` label of
/// `estuary_media_failures_total`, in [`MEDIA_FAILURE_CAUSES`] order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MediaFailure {
    Inactivity,
    Ice,
    Dtls,
    DtlsClosed,
    /// The daemon could not run the call's media (ports, a plan it cannot apply).
    Local,
    /// A bug: the media thread panicked on this call's input. The call was dropped, the
    /// thread and its other calls went on.
    Internal,
}

const MEDIA_FAILURE_CAUSES: [&str; 6] = ["inactivity", "ice", "dtls", "dtls_closed", "local", "internal"];

/// The media counters exported, in [`estuary_media::MediaCounters::entries`] order: family
/// name, help, label name.
const MEDIA_FAMILIES: [(&str, &str, &str, &str); 5] = [
    ("transcoder", "estuary_media_transcoder_packets_total", "Packets handed to the transcoder (in) and frames it produced that were sent (out).", "direction"),
    ("packets", "estuary_media_packets_total", "RTP packets relayed, by direction.", "direction"),
    ("rtcp", "estuary_media_rtcp_packets_total", "RTCP compound packets taken in and sent (reports, feedback, BYE).", "direction"),
    ("feedback", "estuary_media_feedback_total", "PLI/FIR/NACK translated to the other leg, or dropped because that leg cannot take them.", "outcome"),
    ("dropped", "estuary_media_dropped_total", "Media datagrams dropped, by reason.", "reason"),
];
const MEDIA_ENTRIES: usize = 17;

/// Live values, one atomic per [`TABLE`] row.
pub struct Stats {
    values: Vec<AtomicU64>,
    media_failures: [AtomicU64; MEDIA_FAILURE_CAUSES.len()],
    /// Sums of every call's media counters, flushed by call tasks about once a second (never
    /// per packet: these atomics are shared by all calls).
    media: [AtomicU64; MEDIA_ENTRIES],
    started: Instant,
}

impl Stats {
    pub fn new() -> Self {
        debug_assert!(
            TABLE
                .iter()
                .enumerate()
                .all(|(i, d)| d.metric as usize == i),
            "TABLE out of order"
        );
        Stats {
            values: TABLE.iter().map(|_| AtomicU64::new(0)).collect(),
            media_failures: Default::default(),
            media: Default::default(),
            started: Instant::now(),
        }
    }

    pub fn inc(&self, m: Metric) {
        self.values[m as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, m: Metric, n: u64) {
        if n > 0 {
            self.values[m as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn dec(&self, m: Metric) {
        // Saturating: a gauge must never wrap to 2^64 on an unbalanced decrement.
        let _ = self.values[m as usize].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
    }

    pub fn get(&self, m: Metric) -> u64 {
        match m {
            Metric::UptimeSeconds => self.started.elapsed().as_secs(),
            _ => self.values[m as usize].load(Ordering::Relaxed),
        }
    }

    pub fn media_failed(&self, cause: MediaFailure) {
        self.media_failures[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds what a call's session counted since its last flush (`now` minus `flushed`).
    pub fn media_flush(&self, now: &estuary_media::MediaCounters, flushed: &estuary_media::MediaCounters) {
        for ((slot, (_, _, n)), (_, _, f)) in self.media.iter().zip(now.entries()).zip(flushed.entries()) {
            if n > f {
                slot.fetch_add(n - f, Ordering::Relaxed);
            }
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        let mut all: Vec<Sample> = TABLE
            .iter()
            .map(|d| Sample {
                name: d.name,
                help: d.help,
                kind: d.kind,
                labels: Vec::new(),
                value: self.get(d.metric),
            })
            .collect();
        all.extend(MEDIA_FAILURE_CAUSES.iter().zip(&self.media_failures).map(|(cause, v)| {
            Sample {
                name: "estuary_media_failures_total",
                help: "Calls the media plane ended, by cause (each ended with BYE on both legs).",
                kind: Counter,
                labels: vec![("cause", (*cause).to_owned())],
                value: v.load(Ordering::Relaxed),
            }
        }));
        let entries = estuary_media::MediaCounters::default().entries();
        for ((family, label, _), v) in entries.iter().zip(&self.media) {
            let Some((_, name, help, label_name)) = MEDIA_FAMILIES.iter().find(|f| f.0 == *family) else { continue };
            all.push(Sample {
                name,
                help,
                kind: Counter,
                labels: vec![(label_name, (*label).to_owned())],
                value: v.load(Ordering::Relaxed),
            });
        }
        all
    }
}

/// Engine samples plus daemon samples. A family both declare is the daemon's: it owns the
/// sockets, and a duplicate series would make the whole exposition invalid.
pub fn merge(engine: Vec<Sample>, daemon: Vec<Sample>) -> Vec<Sample> {
    let mut all: Vec<Sample> = engine
        .into_iter()
        .filter(|s| !TABLE.iter().any(|d| d.name == s.name))
        .collect();
    all.extend(daemon);
    all
}

/// Prometheus text format 0.0.4: one HELP and TYPE per family, then its samples.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut families: Vec<&'static str> = Vec::new();
    for s in samples {
        if !families.contains(&s.name) {
            families.push(s.name);
        }
    }
    for name in families {
        let mut members = samples.iter().filter(|s| s.name == name).peekable();
        // Invariant: `name` came from `samples`, so the family has a first member.
        let Some(first) = members.peek() else {
            continue;
        };
        let kind = match first.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}", escape_help(first.help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in members {
            out.push_str(name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_enum_order_and_names_are_unique() {
        for (i, d) in TABLE.iter().enumerate() {
            assert_eq!(d.metric as usize, i, "{}", d.name);
            assert!(
                TABLE.iter().filter(|e| e.name == d.name).count() == 1,
                "{}",
                d.name
            );
            assert!(d.name.starts_with("estuary_"));
            assert_eq!(
                d.kind == MetricKind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn renders_families_labels_and_escapes() {
        let s = |labels: Vec<(&'static str, String)>, value| Sample {
            name: "estuary_x_total",
            help: "X with \\ and\nnewline.",
            kind: MetricKind::Counter,
            labels,
            value,
        };
        let text = render(&[
            s(vec![("side", "web".into())], 3),
            Sample {
                name: "estuary_g",
                help: "G.",
                kind: MetricKind::Gauge,
                labels: vec![],
                value: 1,
            },
            s(vec![("side", "i\"m\\s\n".into()), ("k", "v".into())], 4),
        ]);
        assert_eq!(
            text,
            "# HELP estuary_x_total X with \\\\ and\\nnewline.\n# TYPE estuary_x_total counter\n\
             estuary_x_total{side=\"web\"} 3\nestuary_x_total{side=\"i\\\"m\\\\s\\n\",k=\"v\"} 4\n\
             # HELP estuary_g G.\n# TYPE estuary_g gauge\nestuary_g 1\n"
        );
    }

    #[test]
    fn daemon_families_win_over_engine_duplicates() {
        let engine = vec![
            Sample {
                name: "estuary_ws_connections",
                help: "",
                kind: MetricKind::Gauge,
                labels: vec![],
                value: 9,
            },
            Sample {
                name: "estuary_calls_active",
                help: "",
                kind: MetricKind::Gauge,
                labels: vec![],
                value: 2,
            },
        ];
        let merged = merge(engine, Stats::new().samples());
        let ws: Vec<_> = merged
            .iter()
            .filter(|s| s.name == "estuary_ws_connections")
            .collect();
        assert_eq!(ws.len(), 1);
        assert_eq!(ws[0].value, 0);
        assert!(merged.iter().any(|s| s.name == "estuary_calls_active"));
    }

    #[test]
    fn gauges_do_not_wrap() {
        let st = Stats::new();
        st.dec(Metric::WsConnections);
        assert_eq!(st.get(Metric::WsConnections), 0);
        st.inc(Metric::WsConnections);
        assert_eq!(st.get(Metric::WsConnections), 1);
    }
}
