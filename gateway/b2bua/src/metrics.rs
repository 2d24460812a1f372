//! Signalling counters, declared once here and rendered by the driver.

use std::collections::BTreeMap;

use crate::io::{MetricKind, Sample, Side};

fn side_label(side: Side) -> &'static str {
    match side {
        Side::Web => "web",
        Side::Ims => "ims",
    }
}

/// Counters the engine keeps; gauges are computed from state when sampled.
#[derive(Default, Debug)]
pub(crate) struct Counters {
    requests: BTreeMap<(Side, String), u64>,
    responses: BTreeMap<(Side, u16), u64>,
    parse_errors: BTreeMap<Side, u64>,
    dropped: BTreeMap<Side, u64>,
    calls_started: u64,
    calls_failed: BTreeMap<u16, u64>,
    transcoding_refused: u64,
    fast_update_sent: u64,
    next_hop_down: u64,
    adopted_registrations: u64,
    adopted_calls: u64,
    handed_over: u64,
    proxied_to_node: u64,
}

impl Counters {
    /// An inbound request of `method` on `side`.
    pub(crate) fn request(&mut self, side: Side, method: &str) {
        *self.requests.entry((side, method.to_owned())).or_default() += 1;
    }

    /// An inbound response of status `code` on `side`.
    pub(crate) fn response(&mut self, side: Side, code: u16) {
        *self.responses.entry((side, code / 100)).or_default() += 1;
    }

    pub(crate) fn parse_error(&mut self, side: Side) {
        *self.parse_errors.entry(side).or_default() += 1;
    }

    pub(crate) fn dropped(&mut self, side: Side) {
        *self.dropped.entry(side).or_default() += 1;
    }

    pub(crate) fn call_started(&mut self) {
        self.calls_started += 1;
    }

    pub(crate) fn transcoding_refused(&mut self) {
        self.transcoding_refused += 1;
    }

    pub(crate) fn next_hop_down(&mut self) {
        self.next_hop_down += 1;
    }

    /// A registration another node made was taken over from the cluster's shared state.
    pub(crate) fn adopted_registration(&mut self) {
        self.adopted_registrations += 1;
    }

    /// A call another node answered was taken over from the cluster's shared state.
    pub(crate) fn adopted_call(&mut self) {
        self.adopted_calls += 1;
    }

    /// An answered call was handed over to another node of the cluster.
    pub(crate) fn handed_over(&mut self) {
        self.handed_over += 1;
    }

    /// A request from the core was proxied to the node holding its browser.
    pub(crate) fn proxied_to_node(&mut self) {
        self.proxied_to_node += 1;
    }

    pub(crate) fn fast_update_sent(&mut self) {
        self.fast_update_sent += 1;
    }

    pub(crate) fn call_failed(&mut self, code: u16) {
        *self.calls_failed.entry(code).or_default() += 1;
    }

    pub(crate) fn samples(&self, calls: usize, registrations: usize, transcoding: usize, out: &mut Vec<Sample>) {
        let gauge = |name, help, value: usize| Sample {
            name,
            help,
            kind: MetricKind::Gauge,
            labels: Vec::new(),
            value: value as u64,
        };
        out.push(gauge("estuary_calls_active", "Calls with both legs set up or being set up", calls));
        out.push(gauge("estuary_registrations_active", "Browser contacts registered toward IMS", registrations));
        out.push(gauge(
            "estuary_transcoding_channels_active",
            "Transcoding channels held by calls (settled plans and admitted offers)",
            transcoding,
        ));
        out.push(Sample {
            name: "estuary_transcoding_refused_total",
            help: "Offers refused because the transcoding capacity was exhausted",
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: self.transcoding_refused,
        });
        out.push(Sample {
            name: "estuary_cluster_registrations_adopted_total",
            help: "Registrations another node (or this node before a restart) made, taken over from the cluster's shared state when their browser reconnected here",
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: self.adopted_registrations,
        });
        out.push(Sample {
            name: "estuary_cluster_calls_adopted_total",
            help: "Answered calls another node carried, taken over from the cluster's shared state when their browser reconnected here",
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: self.adopted_calls,
        });
        out.push(Sample {
            name: "estuary_cluster_calls_handed_over_total",
            help: "Answered calls this node handed over to another node of the cluster (their browser came back there, or a drain ran out)",
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: self.handed_over,
        });
        out.push(Sample {
            name: "estuary_cluster_proxied_total",
            help: "Requests from the core proxied to the node whose WebSocket carries their browser",
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: self.proxied_to_node,
        });
        out.push(Sample {
            name: "estuary_picture_fast_update_sent_total",
            help: "Keyframe requests sent to IMS as SIP INFO (RFC 5168), where the leg negotiated no RTCP feedback",
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: self.fast_update_sent,
        });
        out.push(Sample {
            name: "estuary_calls_total",
            help: "Calls started (INVITEs accepted for relay)",
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: self.calls_started,
        });
        for (code, n) in &self.calls_failed {
            out.push(Sample {
                name: "estuary_calls_failed_total",
                help: "Calls that ended before answer, by final status sent to the caller",
                kind: MetricKind::Counter,
                labels: vec![("code", code.to_string())],
                value: *n,
            });
        }
        out.push(Sample {
            name: "estuary_ims_next_hop_failures_total",
            help: "Times an IMS next-hop target was marked down (timeout, unreachable or 503) and requests moved to the next",
            kind: MetricKind::Counter,
            labels: Vec::new(),
            value: self.next_hop_down,
        });
        for ((side, method), n) in &self.requests {
            out.push(Sample {
                name: "estuary_sip_requests_total",
                help: "SIP requests received, by side and method",
                kind: MetricKind::Counter,
                labels: vec![("side", side_label(*side).to_owned()), ("method", method.clone())],
                value: *n,
            });
        }
        for ((side, class), n) in &self.responses {
            out.push(Sample {
                name: "estuary_sip_responses_total",
                help: "SIP responses received, by side and class",
                kind: MetricKind::Counter,
                labels: vec![("side", side_label(*side).to_owned()), ("class", format!("{class}xx"))],
                value: *n,
            });
        }
        for side in [Side::Web, Side::Ims] {
            out.push(Sample {
                name: "estuary_sip_parse_errors_total",
                help: "SIP messages that failed to parse or validate",
                kind: MetricKind::Counter,
                labels: vec![("side", side_label(side).to_owned())],
                value: self.parse_errors.get(&side).copied().unwrap_or(0),
            });
            out.push(Sample {
                name: "estuary_sip_dropped_total",
                help: "SIP messages dropped without a response (unparseable, stray, or unroutable)",
                kind: MetricKind::Counter,
                labels: vec![("side", side_label(side).to_owned())],
                value: self.dropped.get(&side).copied().unwrap_or(0),
            });
        }
    }
}
