//! Operator configuration: TOML text (plus `--set section.key=value` overrides) into typed,
//! validated structs. Checked once, at the edge: the engines receive only values that passed.
//!
//! `etc/estuary.toml` documents every key with its default; [`Config::default`] holds the same
//! values and a test keeps the two in step. Missing keys take the default; unknown sections and
//! keys are errors (a typo must not silently fall back to a default). Every error names the key
//! path or the line ([`ConfigError`]).

mod access;
mod error;
mod cluster;
mod next_hop;
mod reader;
mod rx;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use access::{IpBlock, WebOrigin};
pub use error::ConfigError;
pub use next_hop::{NextHop, NextHopLookup, NextHopTransport};
use reader::{Document, Section};
pub use cluster::ClusterConfig;
pub use rx::{RxConfig, RxOnFailure, RxPeer, RxUplinkFilter};

/// The whole gateway configuration.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    /// `[web]`: browser-facing WebSocket listeners.
    pub web: WebConfig,
    /// `[ims]`: the IMS-facing SIP side.
    pub ims: ImsConfig,
    /// `[sip]`: protocol timers and headers.
    pub sip: SipConfig,
    /// `[registrar]`: registration policy.
    pub registrar: RegistrarConfig,
    /// `[rx]`: Diameter Rx toward the PCRF (QoS for calls' media).
    pub rx: RxConfig,
    /// `[media]`: media addresses and ports.
    pub media: MediaConfig,
    /// `[transcoder]`: the codec worker pool.
    pub transcoder: TranscoderConfig,
    /// `[recording]`: captures.
    pub recording: RecordingConfig,
    /// `[records]`: per-call records.
    pub records: RecordsConfig,
    /// `[admin]`: metrics and health endpoint.
    pub admin: AdminConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[limits]`: resource bounds.
    pub limits: LimitsConfig,
    /// `[cluster]`: shared state for several nodes.
    pub cluster: ClusterConfig,
}

/// `[web]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WebConfig {
    /// Plain WebSocket listener (`web.ws_listen`).
    pub ws_listen: SocketAddr,
    /// Secure WebSocket listener (`web.wss_listen`).
    pub wss_listen: SocketAddr,
    /// Certificate for WSS (`web.tls_cert`, `web.tls_key`).
    pub tls: TlsCertificate,
    /// Host in Via/Record-Route toward browsers; `None` = derive from the listener.
    pub advertised_host: Option<String>,
    /// WebSocket ping period; `None` = no pings (`web.ws_ping_interval_s = 0`).
    pub ws_ping_interval: Option<Duration>,
    /// Origins whose pages may open a WebSocket (`web.allowed_origins`); empty = any. The
    /// demo page's own origin is always allowed.
    pub allowed_origins: Vec<WebOrigin>,
    /// Load balancers whose word on the client's address is taken (`web.trusted_proxies`):
    /// a PROXY protocol header (v1 or v2) before the bytes of a connection from one of them,
    /// or else the last X-Forwarded-For entry of its WebSocket upgrade. Empty: nobody's.
    pub trusted_proxies: Vec<IpBlock>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            ws_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            wss_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls: TlsCertificate::SelfSigned,
            advertised_host: None,
            ws_ping_interval: Some(Duration::from_secs(30)),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Where a TLS certificate (WSS, SIP over TLS toward IMS) comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TlsCertificate {
    /// Generated at start (ECDSA P-256): for labs and demos only.
    #[default]
    SelfSigned,
    /// PEM files given by the operator.
    Pem {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
}

/// `[ims]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImsConfig {
    /// UDP and TCP listener (`ims.listen`).
    pub listen: SocketAddr,
    /// Where requests toward IMS go (`ims.next_hop`).
    pub next_hop: NextHop,
    /// Home domain (`ims.domain`).
    pub domain: String,
    /// Address in Via/Contact/Path toward IMS; `None` = the bound `ims.listen` address.
    pub advertised_address: Option<SocketAddr>,
    /// SIP over TLS toward the core (`ims.tls_*`).
    pub tls: ImsTlsConfig,
    /// Sources whose SIP the IMS listeners accept (`ims.trusted_peers`); empty = the
    /// addresses the next hop resolves to.
    pub trusted_peers: Vec<IpBlock>,
    /// Name servers for the next hop's NAPTR/SRV/A lookups (`ims.dns_servers`); empty: the
    /// system's (/etc/resolv.conf).
    pub dns_servers: Vec<SocketAddr>,
    /// How often a failed next-hop target is probed with OPTIONS, and the targets looked up
    /// again (`ims.next_hop_probe_s`); `None` (0): never.
    pub next_hop_probe: Option<Duration>,
}

/// `ims.tls_listen`, `ims.tls_cert`, `ims.tls_key`, `ims.tls_ca`: SIP over TLS with the core.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImsTlsConfig {
    /// TLS listener for requests from the core; `None` = none. Required when the next hop
    /// uses TLS: the gateway's Contact and Path send the core there.
    pub listen: Option<SocketAddr>,
    /// The gateway's certificate on that listener and, toward the core, as its client
    /// certificate; `SelfSigned` generates one at start (labs only).
    pub certificate: TlsCertificate,
    /// PEM trust anchors the core's certificate must chain to; required with a TLS next hop.
    pub ca: Option<PathBuf>,
}

impl Default for ImsConfig {
    fn default() -> Self {
        ImsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5080)),
            // The built-in test peer, so the defaults run on a machine with no core (`make
            // run`); every deployment names its P-CSCF/S-CSCF here.
            next_hop: NextHop::Builtin,
            domain: "ims.test".to_owned(),
            advertised_address: None,
            tls: ImsTlsConfig::default(),
            trusted_peers: Vec::new(),
            dns_servers: Vec::new(),
            next_hop_probe: Some(Duration::from_secs(30)),
        }
    }
}

/// `[sip]`. Timer defaults are RFC 3261's, tuned for LAN-to-core round trips well under
/// 500 ms; raise T1 on satellite links. Transaction timeouts are 64*T1.
#[derive(Clone, Debug, PartialEq)]
pub struct SipConfig {
    /// RTT estimate (`sip.t1_ms`).
    pub t1: Duration,
    /// Cap on retransmit intervals (`sip.t2_ms`).
    pub t2: Duration,
    /// Maximum message lifetime in the network (`sip.t4_ms`).
    pub t4: Duration,
    /// Max-Forwards on originated requests (`sip.max_forwards`).
    pub max_forwards: u8,
    /// User-Agent/Server value (`sip.user_agent`).
    pub user_agent: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_millis(4000),
            t4: Duration::from_millis(5000),
            max_forwards: 70,
            user_agent: "Estuary/0.1".to_owned(),
        }
    }
}

/// `[registrar]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrarConfig {
    /// What a closed WebSocket does to its registrations (`registrar.on_ws_close`).
    pub on_ws_close: OnWsClose,
    /// Upper bound on requested expiry (`registrar.max_expires_s`).
    pub max_expires: Duration,
    /// Lower bound on accepted expiry (`registrar.min_expires_s`).
    pub min_expires: Duration,
    /// Browsers must register before calling (`registrar.require_registration`).
    pub require_registration: bool,
    /// How long a browser's calls outlive its closed WebSocket, waiting for it to reconnect
    /// and refresh its registration (`registrar.reconnect_grace_s`); zero: they end at once.
    pub reconnect_grace: Duration,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            on_ws_close: OnWsClose::Deregister,
            max_expires: Duration::from_secs(3600),
            min_expires: Duration::from_secs(60),
            require_registration: true,
            reconnect_grace: Duration::ZERO,
        }
    }
}

/// Registration policy when a browser's WebSocket closes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OnWsClose {
    /// Leave the binding until it expires.
    Keep,
    /// De-register toward IMS at once.
    Deregister,
}

/// `[media]`.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaConfig {
    /// Media address toward browsers (`media.web_address`).
    pub web_address: IpAddr,
    /// Media address toward IMS (`media.ims_address`).
    pub ims_address: IpAddr,
    /// UDP ports for media (`media.port_min`, `media.port_max`).
    pub ports: PortRange,
    /// The m-line proto offered toward IMS (`media.ims_profile`): RTP/AVP, RTP/AVPF,
    /// RTP/SAVP or RTP/SAVPF (the S forms key SRTP with SDES, RFC 4568).
    pub ims_profile: String,
    /// SDES suites offered with an RTP/SAVP(F) profile, in order (`media.ims_srtp_suites`).
    pub ims_srtp_suites: Vec<estuary_sdp::Suite>,
    /// Offer rtcp-mux toward IMS (`media.ims_rtcp_mux`).
    pub ims_rtcp_mux: bool,
    /// a=ptime on audio toward IMS, 0 for none (`media.ptime_ms`).
    pub ptime_ms: u32,
    /// Audio codecs offered toward IMS, in order (`media.audio_codecs`).
    pub audio_codecs: Vec<estuary_sdp::CodecSpec>,
    /// Video codecs offered toward IMS, in order (`media.video_codecs`).
    pub video_codecs: Vec<estuary_sdp::CodecSpec>,
    /// Relay RFC 4733 DTMF events (`media.telephone_event`).
    pub telephone_event: bool,
    /// How long a released port rests before reuse (`media.port_quarantine_s`).
    pub port_quarantine: Duration,
    /// Latch onto the IMS peer's first source address (`media.latch`).
    pub latch: bool,
    /// No media from either side for this long ends the call, hold excepted
    /// (`media.inactivity_timeout_s`; 0 disables).
    pub inactivity_timeout: Duration,
    /// ICE consent lifetime after the browser's last check (`media.consent_timeout_s`).
    pub consent_timeout: Duration,
    /// Media event loops, each owning whole calls; 0 = one per core (`media.threads`).
    pub threads: usize,
    /// A browser-facing port per call, or one per media thread shared by its calls
    /// (`media.web_port_mode`).
    pub web_port_mode: WebPortMode,
}

/// `media.web_port_mode`: how browser-facing media ports are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebPortMode {
    /// Each call has its own browser-facing port from `media.port_min..port_max`.
    PerCall,
    /// Each media thread has one browser-facing port, shared by all its calls and
    /// demultiplexed by ICE username and source address, as WebRTC SFUs do.
    Shared,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            web_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ims_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: PortRange {
                min: 20000,
                max: 29999,
            },
            ims_profile: "RTP/AVP".to_owned(),
            ims_srtp_suites: vec![
                estuary_sdp::Suite::AesCm128HmacSha1_80,
                estuary_sdp::Suite::AesCm128HmacSha1_32,
            ],
            ims_rtcp_mux: false,
            ptime_ms: 20,
            audio_codecs: vec![codec("PCMU/8000"), codec("PCMA/8000")],
            video_codecs: vec![codec("H264/90000;profile-level-id=42e01f;packetization-mode=1"), codec("H264/90000;profile-level-id=42e01f;packetization-mode=0")],
            telephone_event: true,
            port_quarantine: Duration::from_secs(30),
            latch: true,
            inactivity_timeout: Duration::from_secs(60),
            consent_timeout: Duration::from_secs(30),
            threads: 0,
            web_port_mode: WebPortMode::Shared,
        }
    }
}

/// A built-in codec spec (the defaults above); invariant: these strings parse.
fn codec(s: &str) -> estuary_sdp::CodecSpec {
    estuary_sdp::CodecSpec::parse(s).expect("built-in codec spec")
}

fn parse_codec(s: &str) -> Result<estuary_sdp::CodecSpec, String> {
    estuary_sdp::CodecSpec::parse(s)
        .ok_or_else(|| format!("\"{s}\" is not a codec (name/clock[/channels][;fmtp], e.g. PCMU/8000)"))
}

/// An inclusive UDP port range: `min` is even and >= 1024, `min < max`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port (even: RTP on even ports, RTCP on port+1, RFC 3550 §11).
    pub min: u16,
    /// Last port.
    pub max: u16,
}

/// `[transcoder]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TranscoderConfig {
    /// Worker threads; 0 = one per core (`transcoder.threads`).
    pub threads: usize,
    /// Transcode where the two sides share no codec (`transcoder.enabled`).
    pub enabled: bool,
    /// Transcoding channels admitted at once; 0 = what the pool can carry, measured at
    /// start (`transcoder.max_channels`).
    pub max_channels: usize,
    /// The status refusing a call beyond that: 503 (overload, with Retry-After) or 488
    /// (`transcoder.refuse_status`).
    pub refuse_status: u16,
    /// Transcode video too (VP8 <-> H.264) where the sides share no video codec
    /// (`transcoder.video`).
    pub video: bool,
    /// Video worker threads, below audio's priority; 0 = one per core
    /// (`transcoder.video_threads`).
    pub video_threads: usize,
    /// A call whose video the transcoder has no room for (`transcoder.video_overload`).
    pub video_overload: VideoOverload,
}

/// `transcoder.video_overload`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum VideoOverload {
    /// Refuse the call with `transcoder.refuse_status`.
    RefuseCall,
    /// Refuse its video m-line only; the call goes on with audio.
    DropVideo,
}

impl Default for TranscoderConfig {
    fn default() -> Self {
        TranscoderConfig {
            threads: 0,
            enabled: true,
            max_channels: 0,
            refuse_status: 503,
            video: true,
            video_threads: 0,
            video_overload: VideoOverload::DropVideo,
        }
    }
}

/// `[recording]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordingConfig {
    /// What is captured (`recording.mode`).
    pub mode: RecordingMode,
    /// Where captures go (`recording.dir`).
    pub dir: PathBuf,
    /// A call's capture stops growing at this size, in bytes; 0 = no limit
    /// (`recording.max_file_mb`).
    pub max_file_bytes: u64,
    /// Captures older than this are deleted; zero = kept (`recording.max_age_days`).
    pub max_age: Duration,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            mode: RecordingMode::Off,
            dir: PathBuf::from("recordings"),
            max_file_bytes: 100 * 1024 * 1024,
            max_age: Duration::from_secs(7 * 86_400),
        }
    }
}

/// `[records]`: per-call records (CDRs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordsConfig {
    /// Directory of the daily JSON-lines files (`records.dir`); `None` when the key is empty:
    /// records are then only logged.
    pub dir: Option<PathBuf>,
}

/// What the recorder captures.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RecordingMode {
    /// Nothing.
    Off,
    /// SIP messages on both sides.
    Signalling,
    /// SIP and decrypted media.
    Full,
}

/// `[admin]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    /// HTTP listener for /metrics and /healthz (`admin.listen`).
    pub listen: SocketAddr,
    /// How long a drain (SIGTERM, `estuary drain`) lets calls in progress go on before the
    /// process ends the rest and exits (`admin.drain_timeout_s`).
    pub drain_timeout: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            drain_timeout: Duration::from_secs(600),
        }
    }
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// Filter directive: `level` or `level,target=level,...` (`log.level`).
    pub level: String,
    /// Output format (`log.format`).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log output format.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitsConfig {
    /// Largest SIP message in bytes on any transport (`limits.max_message_size`).
    pub max_message_size: usize,
    /// Concurrent WS+WSS connections (`limits.max_ws_connections`).
    pub max_ws_connections: usize,
    /// Concurrent IMS-side TCP connections (`limits.max_tcp_connections`).
    pub max_tcp_connections: usize,
    /// WS+WSS connections, open or in their handshake, from one IP
    /// (`limits.ws_connections_per_ip`).
    pub ws_connections_per_ip: usize,
    /// Connections from one IP still in their TLS/HTTP handshake (`limits.ws_handshakes_per_ip`).
    pub ws_handshakes_per_ip: usize,
    /// Sustained SIP requests a second from one IP over WebSocket
    /// (`limits.requests_per_second_per_ip`).
    pub requests_per_second_per_ip: u32,
    /// Requests one IP may send at once above that rate (`limits.request_burst_per_ip`).
    pub request_burst_per_ip: u32,
    /// Registrations (pending or active) one IP may hold (`limits.registrations_per_ip`).
    pub registrations_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_size: 65535,
            max_ws_connections: 10000,
            max_tcp_connections: 1000,
            ws_connections_per_ip: 250,
            ws_handshakes_per_ip: 32,
            requests_per_second_per_ip: 100,
            request_burst_per_ip: 200,
            registrations_per_ip: 500,
        }
    }
}

const SECTIONS: &[&str] = &[
    "web",
    "ims",
    "sip",
    "registrar",
    "rx",
    "media",
    "transcoder",
    "recording",
    "records",
    "admin",
    "log",
    "limits",
    "cluster",
];

impl Config {
    /// Parses TOML text; missing keys take their defaults.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str_with_overrides(text, &[])
    }

    /// Parses TOML text, then applies `section.key=value` overrides on top.
    pub fn from_toml_str_with_overrides(
        text: &str,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let mut doc = Document::parse(text)?;
        for arg in overrides {
            doc.apply_override(arg)?;
        }
        doc.check_sections(SECTIONS)?;
        let config = Config {
            web: web(doc.section("web"))?,
            ims: ims(doc.section("ims"))?,
            sip: sip(doc.section("sip"))?,
            registrar: registrar(doc.section("registrar"))?,
            rx: rx(doc.section("rx"))?,
            media: media(doc.section("media"))?,
            transcoder: transcoder(doc.section("transcoder"))?,
            recording: recording(doc.section("recording"))?,
            records: records(doc.section("records"))?,
            admin: admin(doc.section("admin"))?,
            log: log(doc.section("log"))?,
            limits: limits(doc.section("limits"))?,
            cluster: cluster(doc.section("cluster"))?,
        };
        if config.cluster.enabled && config.registrar.on_ws_close == OnWsClose::Deregister {
            // The browser of a closed WebSocket comes back through another node with the same
            // registration: deregistering it at the core would cut it off there.
            return Err(ConfigError::invalid(
                "registrar.on_ws_close",
                "must be \"keep\" with cluster.enabled (a browser whose WebSocket closed reconnects to another node and goes on with its registration)",
            ));
        }
        Ok(config)
    }

    /// Reads a file, then applies `section.key=value` overrides on top.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Config::from_toml_str_with_overrides(&text, overrides)
    }

    /// One line for `check-config` and the start-up log.
    pub fn summary(&self) -> String {
        format!(
            "ws {} wss {} ({}), ims {} -> {}, domain {}, media {}/{} ports {}-{}, admin {}, recording {}, call records {}",
            self.web.ws_listen,
            self.web.wss_listen,
            match self.web.tls {
                TlsCertificate::SelfSigned => "self-signed",
                TlsCertificate::Pem { .. } => "PEM files",
            },
            self.ims.listen,
            match self.ims.next_hop {
                NextHop::Builtin => "builtin (TEST PEER, not for production)".to_owned(),
                ref uri => uri.to_string(),
            },
            self.ims.domain,
            self.media.web_address,
            self.media.ims_address,
            self.media.ports.min,
            self.media.ports.max,
            self.admin.listen,
            match self.recording.mode {
                RecordingMode::Off => "off",
                RecordingMode::Signalling => "signalling",
                RecordingMode::Full => "full",
            },
            self.records.dir.as_ref().map_or_else(|| "logged".to_owned(), |d| format!("logged and in {}", d.display())),
        )
    }
}

/// `SECTION.tls_cert` and `SECTION.tls_key`: both PEM files, or neither (self-signed).
fn certificate(s: &mut Section, section: &str) -> Result<TlsCertificate, ConfigError> {
    let cert = s.string("tls_cert", "")?;
    let key = s.string("tls_key", "")?;
    match (cert.trim(), key.trim()) {
        ("", "") => Ok(TlsCertificate::SelfSigned),
        ("", _) => Err(ConfigError::invalid(s.path("tls_cert"), format!("must be set when {section}.tls_key is set"))),
        (_, "") => Err(ConfigError::invalid(s.path("tls_key"), format!("must be set when {section}.tls_cert is set"))),
        (c, k) => Ok(TlsCertificate::Pem { cert: c.into(), key: k.into() }),
    }
}

fn web(mut s: Section) -> Result<WebConfig, ConfigError> {
    let d = WebConfig::default();
    let ws_listen = s.parsed("ws_listen", d.ws_listen, "socket address")?;
    let wss_listen = s.parsed("wss_listen", d.wss_listen, "socket address")?;
    let tls = certificate(&mut s, "web")?;
    let advertised_host = s.string("advertised_host", "")?;
    let ping = s.int("ws_ping_interval_s", 30, 0, 3600)?;
    let allowed_origins = s.list("allowed_origins", d.allowed_origins, str::parse::<WebOrigin>)?;
    let trusted_proxies = s.list("trusted_proxies", d.trusted_proxies, str::parse::<IpBlock>)?;
    let advertised_host = match advertised_host.trim() {
        "" => None,
        h if next_hop::is_hostname(h) || h.parse::<IpAddr>().is_ok() => Some(h.to_owned()),
        h => {
            return Err(ConfigError::invalid(
                s.path("advertised_host"),
                format!("invalid host \"{h}\""),
            ))
        }
    };
    // Port 0 (the kernel picks) is how tests run several daemons side by side.
    if ws_listen == wss_listen && ws_listen.port() != 0 {
        return Err(ConfigError::invalid(
            s.path("wss_listen"),
            format!("must differ from web.ws_listen ({wss_listen})"),
        ));
    }
    s.finish()?;
    Ok(WebConfig {
        ws_listen,
        wss_listen,
        tls,
        advertised_host,
        ws_ping_interval: (ping > 0).then(|| Duration::from_secs(ping as u64)),
        allowed_origins,
        trusted_proxies,
    })
}

fn ims(mut s: Section) -> Result<ImsConfig, ConfigError> {
    let d = ImsConfig::default();
    let listen: SocketAddr = s.parsed("listen", d.listen, "socket address")?;
    let next_hop = if s.has("next_hop") {
        let raw = s.string("next_hop", "")?;
        raw.parse::<NextHop>()
            .map_err(|reason| ConfigError::invalid(s.path("next_hop"), reason))?
    } else {
        d.next_hop
    };
    let domain = s.string("domain", &d.domain)?;
    let advertised_address: Option<SocketAddr> =
        s.optional("advertised_address", None, "socket address")?;
    let tls_listen: Option<SocketAddr> = s.optional("tls_listen", None, "socket address")?;
    let certificate = certificate(&mut s, "ims")?;
    let ca = s.string("tls_ca", "")?;
    let ca = (!ca.trim().is_empty()).then(|| PathBuf::from(ca.trim()));
    let trusted_peers = s.list("trusted_peers", d.trusted_peers, str::parse::<IpBlock>)?;
    let dns_servers = s.list("dns_servers", d.dns_servers, |v: &str| {
        v.parse::<SocketAddr>().or_else(|_| v.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53))).map_err(|_| format!("\"{v}\" is not IP or IP:PORT"))
    })?;
    let probe = s.int("next_hop_probe_s", d.next_hop_probe.map_or(0, |p| p.as_secs()) as i64, 0, 3600)?;
    if tls_listen.is_some_and(|a| a.ip().is_unspecified()) && advertised_address.is_none() {
        return Err(ConfigError::invalid(
            s.path("advertised_address"),
            "must be set when ims.tls_listen is a wildcard address (its IP goes into Via/Contact/Path)",
        ));
    }
    if let NextHop::Uri { transport: NextHopTransport::Tls, .. } = next_hop {
        if tls_listen.is_none() {
            return Err(ConfigError::invalid(
                s.path("tls_listen"),
                "must be set when ims.next_hop uses transport=tls (the core reaches the gateway there)",
            ));
        }
        if ca.is_none() {
            return Err(ConfigError::invalid(
                s.path("tls_ca"),
                "must be set when ims.next_hop uses transport=tls (the core's certificate is checked against it)",
            ));
        }
    }
    if !next_hop::is_hostname(domain.trim()) {
        return Err(ConfigError::invalid(
            s.path("domain"),
            format!("invalid domain \"{domain}\""),
        ));
    }
    if let Some(a) = advertised_address {
        if a.ip().is_unspecified() || a.port() == 0 {
            return Err(ConfigError::invalid(
                s.path("advertised_address"),
                format!("must be a reachable address, not {a}"),
            ));
        }
    } else if listen.ip().is_unspecified() {
        // Peers cannot send to 0.0.0.0: the address in Via/Contact must be a real one.
        return Err(ConfigError::invalid(
            s.path("advertised_address"),
            format!("must be set when ims.listen is a wildcard address ({listen})"),
        ));
    }
    s.finish()?;
    Ok(ImsConfig {
        listen,
        next_hop,
        domain: domain.trim().to_owned(),
        advertised_address,
        tls: ImsTlsConfig { listen: tls_listen, certificate, ca },
        dns_servers,
        next_hop_probe: (probe > 0).then(|| Duration::from_secs(probe as u64)),
        trusted_peers,
    })
}

fn sip(mut s: Section) -> Result<SipConfig, ConfigError> {
    let d = SipConfig::default();
    let ms = |d: Duration| d.as_millis() as i64;
    let t1 = s.int("t1_ms", ms(d.t1), 1, 60_000)?;
    let t2 = s.int("t2_ms", ms(d.t2), 1, 600_000)?;
    let t4 = s.int("t4_ms", ms(d.t4), 1, 600_000)?;
    let max_forwards = s.int("max_forwards", d.max_forwards.into(), 1, 255)?;
    let user_agent = s.string("user_agent", &d.user_agent)?;
    if t2 < t1 {
        return Err(ConfigError::invalid(
            s.path("t2_ms"),
            format!("must be at least sip.t1_ms ({t2} < {t1})"),
        ));
    }
    // A header value: printable text only, so it cannot break the message (RFC 3261 §25.1).
    if user_agent.bytes().any(|b| b.is_ascii_control()) || user_agent.trim().is_empty() {
        return Err(ConfigError::invalid(
            s.path("user_agent"),
            "must be non-empty printable text",
        ));
    }
    s.finish()?;
    Ok(SipConfig {
        t1: Duration::from_millis(t1 as u64),
        t2: Duration::from_millis(t2 as u64),
        t4: Duration::from_millis(t4 as u64),
        // Invariant: range-checked to 1..=255 above.
        max_forwards: max_forwards as u8,
        user_agent: user_agent.trim().to_owned(),
    })
}

fn registrar(mut s: Section) -> Result<RegistrarConfig, ConfigError> {
    let d = RegistrarConfig::default();
    let on_ws_close = s.choice(
        "on_ws_close",
        d.on_ws_close,
        &[
            ("keep", OnWsClose::Keep),
            ("deregister", OnWsClose::Deregister),
        ],
    )?;
    let secs = |d: Duration| d.as_secs() as i64;
    // RFC 3261 §10.2.1.1 caps Expires at 2^32-1; a week is already far beyond practice.
    let max = s.int("max_expires_s", secs(d.max_expires), 1, 604_800)?;
    let min = s.int("min_expires_s", secs(d.min_expires), 1, 604_800)?;
    if min > max {
        return Err(ConfigError::invalid(
            s.path("min_expires_s"),
            format!("must not exceed registrar.max_expires_s ({min} > {max})"),
        ));
    }
    let require_registration = s.boolean("require_registration", d.require_registration)?;
    let grace = s.int("reconnect_grace_s", secs(d.reconnect_grace), 0, 300)?;
    if grace > 0 && on_ws_close == OnWsClose::Deregister {
        return Err(ConfigError::invalid(
            s.path("reconnect_grace_s"),
            "needs registrar.on_ws_close = \"keep\" (the calls wait for the same registration to come back)",
        ));
    }
    s.finish()?;
    Ok(RegistrarConfig {
        on_ws_close,
        max_expires: Duration::from_secs(max as u64),
        min_expires: Duration::from_secs(min as u64),
        require_registration,
        reconnect_grace: Duration::from_secs(grace as u64),
    })
}

fn rx(mut s: Section) -> Result<RxConfig, ConfigError> {
    let d = RxConfig::default();
    let enabled = s.boolean("enabled", d.enabled)?;
    let peers = s.list("peers", d.peers, str::parse::<RxPeer>)?;
    if let Some((i, p, j)) = peers
        .iter()
        .enumerate()
        .find_map(|(i, p)| peers[..i].iter().position(|q| q.same_as(p)).map(|j| (i, p, j)))
    {
        return Err(ConfigError::invalid(
            format!("{}[{i}]", s.path("peers")),
            format!("\"{p}\" repeats rx.peers[{j}]"),
        ));
    }
    if enabled && peers.is_empty() {
        return Err(ConfigError::invalid(
            s.path("peers"),
            "must name at least one PCRF peer when rx.enabled is true",
        ));
    }
    let origin_host = s.string("origin_host", &d.origin_host)?;
    let origin_host = diameter_identity(&s, "origin_host", &origin_host)?;
    let origin_realm = s.string("origin_realm", &d.origin_realm)?;
    let origin_realm = diameter_identity(&s, "origin_realm", &origin_realm)?;
    let destination_realm = s.string("destination_realm", &d.destination_realm)?;
    let destination_realm = diameter_identity(&s, "destination_realm", &destination_realm)?;
    // Empty = not sent: the realm routes the request to a PCRF.
    let destination_host = s.string("destination_host", "")?;
    let destination_host = match destination_host.trim() {
        "" => None,
        h => Some(diameter_identity(&s, "destination_host", h)?),
    };
    let on_failure = s.choice(
        "on_failure",
        d.on_failure,
        &[("open", RxOnFailure::Open), ("closed", RxOnFailure::Closed)],
    )?;
    let timeout = s.int("timeout_ms", d.timeout.as_millis() as i64, 100, 30_000)?;
    let signalling = s.boolean("signalling", d.signalling)?;
    // RFC 3539 §3.4.1: Tw must not be set below 6 seconds.
    let watchdog = s.int("watchdog_s", d.watchdog.as_secs() as i64, 6, 300)?;
    let uplink_filter = s.choice(
        "uplink_filter",
        d.uplink_filter,
        &[("in", RxUplinkFilter::In), ("out", RxUplinkFilter::Out)],
    )?;
    let out_of_credit = s.boolean("out_of_credit", d.out_of_credit)?;
    s.finish()?;
    Ok(RxConfig {
        enabled,
        peers,
        origin_host,
        origin_realm,
        destination_realm,
        destination_host,
        on_failure,
        timeout: Duration::from_millis(timeout as u64),
        signalling,
        watchdog: Duration::from_secs(watchdog as u64),
        uplink_filter,
        out_of_credit,
    })
}

/// `value` trimmed, if it is a DiameterIdentity (RFC 6733 §4.3.1); the error names `key`.
fn diameter_identity(s: &Section, key: &str, value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    if rx::is_diameter_identity(v) {
        Ok(v.to_owned())
    } else {
        Err(ConfigError::invalid(
            s.path(key),
            format!("invalid DiameterIdentity \"{value}\" (an FQDN: letters, digits, '-' and '.')"),
        ))
    }
}

fn media(mut s: Section) -> Result<MediaConfig, ConfigError> {
    let d = MediaConfig::default();
    let web_address = s.parsed("web_address", d.web_address, "IP address")?;
    let ims_address = s.parsed("ims_address", d.ims_address, "IP address")?;
    let min = s.int("port_min", d.ports.min.into(), 1024, 65535)?;
    let max = s.int("port_max", d.ports.max.into(), 1024, 65535)?;
    if min >= max {
        return Err(ConfigError::invalid(
            s.path("port_min"),
            format!("must be less than media.port_max ({min} >= {max})"),
        ));
    }
    if min % 2 != 0 {
        return Err(ConfigError::invalid(
            s.path("port_min"),
            format!("must be even (RTP on even ports, RTCP on the next), found {min}"),
        ));
    }
    let ims_profile = s.choice(
        "ims_profile",
        "RTP/AVP",
        &[
            ("RTP/AVP", "RTP/AVP"),
            ("RTP/AVPF", "RTP/AVPF"),
            ("RTP/SAVP", "RTP/SAVP"),
            ("RTP/SAVPF", "RTP/SAVPF"),
        ],
    )?;
    let ims_srtp_suites = s.list("ims_srtp_suites", d.ims_srtp_suites, |x| {
        estuary_sdp::Suite::from_name(x).ok_or_else(|| {
            format!("\"{x}\" is not one of AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM")
        })
    })?;
    if ims_profile.contains("SAVP") && ims_srtp_suites.is_empty() {
        return Err(ConfigError::invalid(
            s.path("ims_srtp_suites"),
            format!("must name at least one suite when media.ims_profile is {ims_profile}"),
        ));
    }
    let ims_rtcp_mux = s.boolean("ims_rtcp_mux", d.ims_rtcp_mux)?;
    let ptime_ms = s.int("ptime_ms", d.ptime_ms.into(), 0, 200)? as u32;
    let audio_codecs = s.list("audio_codecs", d.audio_codecs, parse_codec)?;
    let video_codecs = s.list("video_codecs", d.video_codecs, parse_codec)?;
    if audio_codecs.is_empty() {
        return Err(ConfigError::invalid(s.path("audio_codecs"), "must name at least one codec"));
    }
    let telephone_event = s.boolean("telephone_event", d.telephone_event)?;
    let quarantine = s.int("port_quarantine_s", d.port_quarantine.as_secs() as i64, 0, 3600)?;
    let latch = s.boolean("latch", d.latch)?;
    let inactivity = s.int(
        "inactivity_timeout_s",
        d.inactivity_timeout.as_secs() as i64,
        0,
        86400,
    )?;
    // RFC 7675 §5.1 fixes 30 s; shorter values are for labs and tests.
    let consent = s.int("consent_timeout_s", d.consent_timeout.as_secs() as i64, 1, 300)?;
    let threads = s.int("threads", d.threads as i64, 0, 1024)? as usize;
    let web_port_mode = s.choice("web_port_mode", d.web_port_mode, &[("per_call", WebPortMode::PerCall), ("shared", WebPortMode::Shared)])?;
    s.finish()?;
    // Invariant: both range-checked to 1024..=65535 above.
    Ok(MediaConfig {
        web_address,
        ims_address,
        ports: PortRange {
            min: min as u16,
            max: max as u16,
        },
        ims_profile: ims_profile.to_owned(),
        ims_srtp_suites,
        ims_rtcp_mux,
        ptime_ms,
        audio_codecs,
        video_codecs,
        telephone_event,
        port_quarantine: Duration::from_secs(quarantine as u64),
        latch,
        inactivity_timeout: Duration::from_secs(inactivity as u64),
        consent_timeout: Duration::from_secs(consent as u64),
        threads,
        web_port_mode,
    })
}

fn transcoder(mut s: Section) -> Result<TranscoderConfig, ConfigError> {
    let d = TranscoderConfig::default();
    let threads = s.int("threads", d.threads as i64, 0, 1024)?;
    let enabled = s.boolean("enabled", d.enabled)?;
    let max_channels = s.int("max_channels", d.max_channels as i64, 0, 1_000_000)? as usize;
    let refuse_status = s.int("refuse_status", d.refuse_status.into(), 100, 699)? as u16;
    if refuse_status != 503 && refuse_status != 488 {
        return Err(ConfigError::invalid(s.path("refuse_status"), format!("must be 503 or 488, not {refuse_status}")));
    }
    let video = s.boolean("video", d.video)?;
    let video_threads = s.int("video_threads", d.video_threads as i64, 0, 1024)? as usize;
    let video_overload = s.choice(
        "video_overload",
        d.video_overload,
        &[("refuse_call", VideoOverload::RefuseCall), ("drop_video", VideoOverload::DropVideo)],
    )?;
    s.finish()?;
    Ok(TranscoderConfig {
        threads: threads as usize,
        enabled,
        max_channels,
        refuse_status,
        video,
        video_threads,
        video_overload,
    })
}

fn recording(mut s: Section) -> Result<RecordingConfig, ConfigError> {
    let d = RecordingConfig::default();
    let mode = s.choice(
        "mode",
        d.mode,
        &[
            ("off", RecordingMode::Off),
            ("signalling", RecordingMode::Signalling),
            ("full", RecordingMode::Full),
        ],
    )?;
    let dir = s.string("dir", &d.dir.to_string_lossy())?;
    if dir.trim().is_empty() {
        return Err(ConfigError::invalid(s.path("dir"), "must not be empty"));
    }
    let max_mb = s.int("max_file_mb", (d.max_file_bytes / (1024 * 1024)) as i64, 0, 100_000)?;
    let max_days = s.int("max_age_days", (d.max_age.as_secs() / 86_400) as i64, 0, 3650)?;
    s.finish()?;
    Ok(RecordingConfig {
        mode,
        dir: PathBuf::from(dir.trim()),
        max_file_bytes: max_mb as u64 * 1024 * 1024,
        max_age: Duration::from_secs(max_days as u64 * 86_400),
    })
}

fn records(mut s: Section) -> Result<RecordsConfig, ConfigError> {
    let dir = s.string("dir", "")?;
    s.finish()?;
    let dir = dir.trim();
    Ok(RecordsConfig { dir: (!dir.is_empty()).then(|| PathBuf::from(dir)) })
}

fn admin(mut s: Section) -> Result<AdminConfig, ConfigError> {
    let d = AdminConfig::default();
    let listen = s.parsed("listen", d.listen, "socket address")?;
    let drain = s.int("drain_timeout_s", d.drain_timeout.as_secs() as i64, 0, 86_400)?;
    s.finish()?;
    Ok(AdminConfig { listen, drain_timeout: Duration::from_secs(drain as u64) })
}

fn log(mut s: Section) -> Result<LogConfig, ConfigError> {
    let d = LogConfig::default();
    let level = s.string("level", &d.level)?;
    let format = s.choice(
        "format",
        d.format,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    )?;
    if !is_log_filter(level.trim()) {
        return Err(ConfigError::invalid(
            s.path("level"),
            format!("invalid filter \"{level}\" (error, warn, info, debug, trace, or level,target=level,...)"),
        ));
    }
    s.finish()?;
    Ok(LogConfig {
        level: level.trim().to_owned(),
        format,
    })
}

/// `level` or `target=level` items separated by commas: the subset of tracing's filter
/// syntax an operator needs, checked here so a typo fails at check-config time.
fn is_log_filter(s: &str) -> bool {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |l: &str| LEVELS.iter().any(|x| x.eq_ignore_ascii_case(l.trim()));
    !s.is_empty()
        && s.split(',').all(|item| match item.split_once('=') {
            None => is_level(item),
            Some((target, level)) => {
                !target.trim().is_empty()
                    && target
                        .trim()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_:-.".contains(&b))
                    && is_level(level)
            }
        })
}

fn cluster(mut s: Section) -> Result<ClusterConfig, ConfigError> {
    let d = ClusterConfig::default();
    let enabled = s.boolean("enabled", d.enabled)?;
    let redis = s.string("redis", &d.redis)?.trim().to_owned();
    let node_id = s.string("node_id", &d.node_id)?.trim().to_owned();
    if let Some(rest) = redis.strip_prefix("redis-sentinel://") {
        // redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER
        let (hosts, master) = rest.split_once('/').unwrap_or((rest, ""));
        let hosts_ok = !hosts.is_empty() && hosts.split(',').all(|h| host_port(h.trim()).is_some());
        if !hosts_ok || master.is_empty() || master.contains('/') {
            return Err(ConfigError::invalid(s.path("redis"), format!("\"{redis}\" is not redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER")));
        }
    } else if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
        return Err(ConfigError::invalid(s.path("redis"), format!("\"{redis}\" is not a redis:// URL")));
    }
    if !node_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        return Err(ConfigError::invalid(s.path("node_id"), format!("\"{node_id}\": letters, digits, '-', '_' and '.' only (it names Redis keys)")));
    }
    if enabled && node_id.is_empty() {
        return Err(ConfigError::invalid(s.path("node_id"), "must be set when cluster.enabled (each node's keys carry it)"));
    }
    let front = s.string("sip_front", "")?.trim().to_owned();
    let sip_front = match front.as_str() {
        "" => None,
        text => Some(host_port(text).ok_or_else(|| ConfigError::invalid(s.path("sip_front"), format!("\"{text}\" is not HOST:PORT")))?),
    };
    s.finish()?;
    Ok(ClusterConfig { enabled, redis, node_id, sip_front })
}

/// `HOST:PORT` as written into a SIP URI: a host name, an IPv4 address or a bracketed IPv6
/// address, and a port from 1 to 65535.
fn host_port(text: &str) -> Option<String> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')),
    };
    host_ok.then(|| format!("{host}:{port}"))
}

fn limits(mut s: Section) -> Result<LimitsConfig, ConfigError> {
    let d = LimitsConfig::default();
    let size = s.int(
        "max_message_size",
        d.max_message_size as i64,
        1024,
        1_048_576,
    )?;
    let ws = s.int(
        "max_ws_connections",
        d.max_ws_connections as i64,
        1,
        1_000_000,
    )?;
    let tcp = s.int(
        "max_tcp_connections",
        d.max_tcp_connections as i64,
        1,
        1_000_000,
    )?;
    let per_ip = s.int("ws_connections_per_ip", d.ws_connections_per_ip as i64, 1, 1_000_000)?;
    let handshakes = s.int("ws_handshakes_per_ip", d.ws_handshakes_per_ip as i64, 1, 1_000_000)?;
    let rate = s.int("requests_per_second_per_ip", d.requests_per_second_per_ip.into(), 1, 1_000_000)?;
    let burst = s.int("request_burst_per_ip", d.request_burst_per_ip.into(), 1, 1_000_000)?;
    let registrations = s.int("registrations_per_ip", d.registrations_per_ip as i64, 1, 10_000_000)?;
    if handshakes > per_ip {
        return Err(ConfigError::invalid(
            s.path("ws_handshakes_per_ip"),
            format!("must not exceed limits.ws_connections_per_ip ({handshakes} > {per_ip})"),
        ));
    }
    s.finish()?;
    Ok(LimitsConfig {
        max_message_size: size as usize,
        max_ws_connections: ws as usize,
        max_tcp_connections: tcp as usize,
        ws_connections_per_ip: per_ip as usize,
        ws_handshakes_per_ip: handshakes as usize,
        requests_per_second_per_ip: rate as u32,
        request_burst_per_ip: burst as u32,
        registrations_per_ip: registrations as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml_str(text).unwrap_err().to_string()
    }

    fn with(overrides: &[&str]) -> Result<Config, ConfigError> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Config::from_toml_str_with_overrides("", &o)
    }

    #[test]
    fn a_tls_next_hop_needs_a_tls_listener_and_trust_anchors() {
        let e = with(&["ims.next_hop=sip:core.ims.test;transport=tls"]).unwrap_err().to_string();
        assert!(e.starts_with("ims.tls_listen: must be set when ims.next_hop uses transport=tls"), "{e}");
        let e = with(&["ims.next_hop=sip:core.ims.test;transport=tls", "ims.tls_listen=127.0.0.1:5081"]).unwrap_err().to_string();
        assert!(e.starts_with("ims.tls_ca: must be set"), "{e}");
        let c = with(&["ims.next_hop=sip:core.ims.test;transport=tls", "ims.tls_listen=127.0.0.1:5081", "ims.tls_ca=/etc/estuary/core-ca.pem"]).unwrap();
        assert_eq!(
            c.ims.next_hop,
            NextHop::Uri { host: "core.ims.test".into(), port: 5061, transport: NextHopTransport::Tls, lookup: NextHopLookup::Srv },
            "RFC 3261 §19.1.2: 5061 for TLS (the port the A/AAAA fallback uses); RFC 3263 §4.2: SRV first"
        );
        assert_eq!((c.ims.tls.listen, c.ims.tls.ca.as_deref(), &c.ims.tls.certificate), (Some("127.0.0.1:5081".parse().unwrap()), Some(Path::new("/etc/estuary/core-ca.pem")), &TlsCertificate::SelfSigned));
        assert_eq!(err("[ims]\ntls_key = \"k.pem\""), "ims.tls_cert: must be set when ims.tls_key is set");
        assert_eq!(with(&["ims.next_hop=sip:10.0.0.5"]).unwrap().ims.next_hop.to_string(), "sip:10.0.0.5:5060;transport=udp");
    }

    #[test]
    fn trusted_peers_and_allowed_origins_parse_and_name_the_bad_item() {
        let d = Config::default();
        assert!(d.ims.trusted_peers.is_empty() && d.web.allowed_origins.is_empty() && d.web.trusted_proxies.is_empty());
        let c = with(&["web.trusted_proxies=10.0.0.0/24, 127.0.0.5"]).unwrap();
        assert_eq!(c.web.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.0/24", "127.0.0.5"]);
        let c = with(&["ims.trusted_peers=10.1.0.0/16, 192.0.2.7", "web.allowed_origins=https://WebRTC.example.com:443,http://127.0.0.1:8080"]).unwrap();
        assert_eq!(c.ims.trusted_peers.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.1.0.0/16", "192.0.2.7"]);
        assert_eq!(c.web.allowed_origins.iter().map(WebOrigin::as_str).collect::<Vec<_>>(), ["https://webrtc.example.com", "http://127.0.0.1:8080"]);
        let e = err("[ims]\ntrusted_peers = [\"10.0.0.0/8\", \"core.example\"]");
        assert!(e.starts_with("ims.trusted_peers[1]: \"core.example\" is not an IP address"), "{e}");
        let e = err("[web]\nallowed_origins = [\"https://x/app\"]");
        assert!(e.starts_with("web.allowed_origins[0]: "), "{e}");
    }

    #[test]
    fn rx_is_off_by_default_toward_a_local_pcrf() {
        let c = Config::from_toml_str("[rx]\n").unwrap();
        assert_eq!(c.rx, RxConfig::default());
        let rx = &c.rx;
        assert!(!rx.enabled && !rx.signalling && rx.out_of_credit);
        assert_eq!(rx.peers, [RxPeer { host: "127.0.0.1".into(), port: 3868 }]);
        assert_eq!((rx.origin_host.as_str(), rx.origin_realm.as_str(), rx.destination_realm.as_str()), ("pcscf.ims.test", "ims.test", "ims.test"));
        assert_eq!(rx.destination_host, None);
        assert_eq!((rx.on_failure, rx.uplink_filter), (RxOnFailure::Open, RxUplinkFilter::In));
        assert_eq!((rx.timeout, rx.watchdog), (Duration::from_millis(2000), Duration::from_secs(30)));
    }

    #[test]
    fn a_full_rx_section_parses() {
        let c = Config::from_toml_str(
            "[rx]\n\
             enabled = true\n\
             peers = [\"pcrf1.ims.example:3870\", \"pcrf2.ims.example\", \"10.0.0.9\", \"[2001:db8::9]:3868\", \"[2001:db8::a]\"]\n\
             origin_host = \"pcscf1.ims.example\"\n\
             origin_realm = \"ims.example\"\n\
             destination_realm = \"epc.example\"\n\
             destination_host = \"pcrf1.epc.example\"\n\
             on_failure = \"closed\"\n\
             timeout_ms = 1500\n\
             signalling = false\n\
             watchdog_s = 6\n\
             uplink_filter = \"out\"\n\
             out_of_credit = false\n",
        )
        .unwrap();
        let peer = |host: &str, port| RxPeer { host: host.into(), port };
        assert_eq!(
            c.rx,
            RxConfig {
                enabled: true,
                peers: vec![
                    peer("pcrf1.ims.example", 3870),
                    peer("pcrf2.ims.example", 3868),
                    peer("10.0.0.9", 3868),
                    peer("2001:db8::9", 3868),
                    peer("2001:db8::a", 3868),
                ],
                origin_host: "pcscf1.ims.example".into(),
                origin_realm: "ims.example".into(),
                destination_realm: "epc.example".into(),
                destination_host: Some("pcrf1.epc.example".into()),
                on_failure: RxOnFailure::Closed,
                timeout: Duration::from_millis(1500),
                signalling: false,
                watchdog: Duration::from_secs(6),
                uplink_filter: RxUplinkFilter::Out,
                out_of_credit: false,
            }
        );
        assert_eq!(c.rx.peers.iter().map(ToString::to_string).collect::<Vec<_>>()[3..], ["[2001:db8::9]:3868", "[2001:db8::a]:3868"]);
        // `--set` takes a comma-separated list; an empty one is fine while Rx is off.
        let c = with(&["rx.peers=pcrf-a:3868, [::1]:3869", "rx.destination_host="]).unwrap();
        assert_eq!(c.rx.peers, [peer("pcrf-a", 3868), peer("::1", 3869)]);
        assert_eq!(c.rx.destination_host, None);
        assert!(with(&["rx.peers="]).unwrap().rx.peers.is_empty());
    }

    #[test]
    fn a_reconnection_grace_needs_registrations_kept() {
        assert_eq!(Config::default().registrar.reconnect_grace, Duration::ZERO);
        let c = with(&["registrar.on_ws_close=keep", "registrar.reconnect_grace_s=15"]).unwrap();
        assert_eq!(c.registrar.reconnect_grace, Duration::from_secs(15));
        assert!(err("[registrar]\nreconnect_grace_s = 5").starts_with("registrar.reconnect_grace_s: needs registrar.on_ws_close = \"keep\""));
        assert!(err("[registrar]\non_ws_close = \"keep\"\nreconnect_grace_s = 301").starts_with("registrar.reconnect_grace_s"));
    }

    #[test]
    fn the_cluster_section_parses_and_names_its_faults() {
        let d = Config::default().cluster;
        assert!(!d.enabled && d.node_id.is_empty());
        let c = with(&["cluster.enabled=true", "cluster.node_id=node-a", "cluster.redis=redis://10.0.0.9:6380/2", "registrar.on_ws_close=keep"]).unwrap();
        assert_eq!(c.cluster, ClusterConfig { enabled: true, redis: "redis://10.0.0.9:6380/2".into(), node_id: "node-a".into(), sip_front: None });
        assert_eq!(with(&["cluster.sip_front=sbc.ims.test:5060"]).unwrap().cluster.sip_front.as_deref(), Some("sbc.ims.test:5060"));
        assert_eq!(with(&["cluster.sip_front=[2001:db8::1]:5060"]).unwrap().cluster.sip_front.as_deref(), Some("[2001:db8::1]:5060"));
        assert_eq!(err("[cluster]\nsip_front = \"10.0.0.1\""), "cluster.sip_front: \"10.0.0.1\" is not HOST:PORT");
        assert_eq!(err("[cluster]\nsip_front = \"sip:10.0.0.1:5060\""), "cluster.sip_front: \"sip:10.0.0.1:5060\" is not HOST:PORT");
        assert_eq!(err("[cluster]\nenabled = true"), "cluster.node_id: must be set when cluster.enabled (each node's keys carry it)");
        assert!(
            err("[cluster]\nenabled = true\nnode_id = \"a\"").starts_with("registrar.on_ws_close: must be \"keep\" with cluster.enabled"),
            "a cluster keeps the registrations of closed WebSockets"
        );
        assert_eq!(err("[cluster]\nredis = \"10.0.0.9:6379\""), "cluster.redis: \"10.0.0.9:6379\" is not a redis:// URL");
        let sentinel = "redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/estuary";
        assert_eq!(with(&[&format!("cluster.redis={sentinel}")]).unwrap().cluster.redis, sentinel);
        assert_eq!(
            err("[cluster]\nredis = \"redis-sentinel://10.0.0.1:26379\""),
            "cluster.redis: \"redis-sentinel://10.0.0.1:26379\" is not redis-sentinel://HOST:PORT[,HOST:PORT...]/MASTER"
        );
        assert!(err("[cluster]\nnode_id = \"a b\"").starts_with("cluster.node_id: \"a b\": letters"));
    }

    #[test]
    fn rx_errors_name_the_key() {
        assert!(with(&["rx.signalling=true"]).unwrap().rx.signalling);
        assert_eq!(err("[rx]\nsignalling = \"yes\""), "rx.signalling: expected true or false, found string");
        assert_eq!(
            err("[rx]\npeers = [\"pcrf:3868\", \"pcrf2:70000\"]"),
            "rx.peers[1]: \"pcrf2:70000\": invalid port \"70000\" (1-65535)"
        );
        assert_eq!(err("[rx]\npeers = [\"pcrf:0\"]"), "rx.peers[0]: \"pcrf:0\": invalid port \"0\" (1-65535)");
        assert_eq!(
            err("[rx]\npeers = [\":3868\"]"),
            "rx.peers[0]: \":3868\": empty host (expected HOST[:PORT], an IPv6 address in brackets)"
        );
        assert_eq!(
            err("[rx]\npeers = [\"pcrf-a\", \"pcrf-b\", \"PCRF-A:3868\"]"),
            "rx.peers[2]: \"PCRF-A:3868\" repeats rx.peers[0]"
        );
        assert_eq!(
            err("[rx]\nenabled = true\npeers = []"),
            "rx.peers: must name at least one PCRF peer when rx.enabled is true"
        );
        assert_eq!(err("[rx]\npeers = 3868"), "rx.peers: expected an array of strings, found integer");
        assert_eq!(err("[rx]\non_failure = \"maybe\""), "rx.on_failure: \"maybe\" is not one of open, closed");
        assert_eq!(err("[rx]\nuplink_filter = \"both\""), "rx.uplink_filter: \"both\" is not one of in, out");
        assert_eq!(err("[rx]\ntimeout_ms = 50"), "rx.timeout_ms: must be between 100 and 30000, found 50");
        assert_eq!(err("[rx]\nwatchdog_s = 3"), "rx.watchdog_s: must be between 6 and 300, found 3");
        assert_eq!(
            err("[rx]\norigin_host = \"pcscf ims\""),
            "rx.origin_host: invalid DiameterIdentity \"pcscf ims\" (an FQDN: letters, digits, '-' and '.')"
        );
        for key in ["origin_realm", "destination_realm", "destination_host"] {
            let e = with(&[&format!("rx.{key}=ims_test")]).unwrap_err();
            assert_eq!(e.key(), Some(format!("rx.{key}").as_str()), "{e}");
        }
        assert_eq!(err("[rx]\norigin_realm = \"\""), "rx.origin_realm: invalid DiameterIdentity \"\" (an FQDN: letters, digits, '-' and '.')");
        assert_eq!(err("[rx]\nenabled = \"yes\""), "rx.enabled: expected true or false, found string");
        assert_eq!(err("[rx]\npcrf = \"x\""), "unknown key rx.pcrf");
    }

    #[test]
    fn call_records_are_logged_only_unless_a_directory_is_given() {
        assert_eq!(Config::default().records.dir, None);
        assert_eq!(with(&["records.dir=/var/log/estuary/cdr"]).unwrap().records.dir, Some(PathBuf::from("/var/log/estuary/cdr")));
        assert_eq!(with(&["records.dir=  "]).unwrap().records.dir, None);
        assert!(with(&["records.dir=/x"]).unwrap().summary().ends_with("call records logged and in /x"));
        assert_eq!(err("[records]\npath = \"x\""), "unknown key records.path");
    }

    #[test]
    fn empty_text_is_all_defaults() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err("[web]\nws_listen = \"127.0.0.1:1\"\nbroken = = 3\n");
        assert!(e.starts_with("line 3: TOML syntax error"), "{e}");
    }

    #[test]
    fn unknown_sections_and_keys_are_errors() {
        assert_eq!(
            err("[web]\nwsl_listen = \"127.0.0.1:1\""),
            "unknown key web.wsl_listen"
        );
        assert_eq!(
            err("[webb]\nws_listen = \"127.0.0.1:1\""),
            "unknown section [webb]"
        );
        assert_eq!(err("stray = 1"), "unknown key stray");
        assert_eq!(err("web = 1"), "web: expected a [web] section");
    }

    #[test]
    fn type_and_form_errors_name_the_key() {
        assert_eq!(
            err("[web]\nws_listen = \"127.0.0.1\""),
            "web.ws_listen: invalid socket address \"127.0.0.1\""
        );
        assert_eq!(
            err("[web]\nws_listen = 8080"),
            "web.ws_listen: expected a string, found integer"
        );
        assert_eq!(
            err("[media]\nport_min = \"x\""),
            "media.port_min: expected an integer, found string"
        );
        assert_eq!(
            err("[media]\nweb_address = \"localhost\""),
            "media.web_address: invalid IP address \"localhost\""
        );
        assert_eq!(
            err("[recording]\nmode = \"audio\""),
            "recording.mode: \"audio\" is not one of off, signalling, full"
        );
        assert_eq!(
            err("[log]\nformat = \"xml\""),
            "log.format: \"xml\" is not one of text, json"
        );
        assert!(
            err("[log]\nlevel = \"verbose\"").starts_with("log.level: invalid filter \"verbose\"")
        );
        assert_eq!(
            err("[transcoder]\nvideo_overload = \"degrade\""),
            "transcoder.video_overload: \"degrade\" is not one of refuse_call, drop_video"
        );
    }

    #[test]
    fn transcoder_admission_keys() {
        let c = with(&["transcoder.max_channels=40", "transcoder.refuse_status=488"]).unwrap();
        assert_eq!((c.transcoder.max_channels, c.transcoder.refuse_status), (40, 488));
        assert_eq!(
            err("[transcoder]\nrefuse_status = 486"),
            "transcoder.refuse_status: must be 503 or 488, not 486"
        );
    }

    #[test]
    fn ranges_and_relations() {
        assert_eq!(
            err("[media]\nport_min = 30000"),
            "media.port_min: must be less than media.port_max (30000 >= 29999)"
        );
        assert_eq!(
            err("[media]\nport_min = 80"),
            "media.port_min: must be between 1024 and 65535, found 80"
        );
        assert!(err("[media]\nport_min = 20001").starts_with("media.port_min: must be even"));
        assert_eq!(
            err("[limits]\nmax_message_size = 100"),
            "limits.max_message_size: must be between 1024 and 1048576, found 100"
        );
        assert_eq!(
            err("[sip]\nt1_ms = 5000\nt2_ms = 4000"),
            "sip.t2_ms: must be at least sip.t1_ms (4000 < 5000)"
        );
        assert_eq!(
            err("[registrar]\nmin_expires_s = 7200"),
            "registrar.min_expires_s: must not exceed registrar.max_expires_s (7200 > 3600)"
        );
        assert_eq!(
            err("[web]\ntls_cert = \"c.pem\""),
            "web.tls_key: must be set when web.tls_cert is set"
        );
        assert_eq!(
            err("[web]\nwss_listen = \"127.0.0.1:8080\""),
            "web.wss_listen: must differ from web.ws_listen (127.0.0.1:8080)"
        );
        assert_eq!(
            err("[ims]\nlisten = \"0.0.0.0:5080\""),
            "ims.advertised_address: must be set when ims.listen is a wildcard address (0.0.0.0:5080)"
        );
        assert_eq!(
            err("[sip]\nuser_agent = \"a\\r\\nX: y\""),
            "sip.user_agent: must be non-empty printable text"
        );
        assert_eq!(
            err("[registrar]\nrequire_registration = \"no\""),
            "registrar.require_registration: expected true or false, found string"
        );
        let c = with(&["registrar.require_registration=false"]).unwrap();
        assert!(!c.registrar.require_registration);
        assert_eq!(
            err("[media]\naudio_codecs = [\"PCMU/8000\", \"AMR\"]"),
            "media.audio_codecs[1]: \"AMR\" is not a codec (name/clock[/channels][;fmtp], e.g. PCMU/8000)"
        );
        assert_eq!(err("[media]\naudio_codecs = []"), "media.audio_codecs: must name at least one codec");
        assert_eq!(
            err("[media]\nims_srtp_suites = [\"F8_128_HMAC_SHA1_80\"]"),
            "media.ims_srtp_suites[0]: \"F8_128_HMAC_SHA1_80\" is not one of AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM"
        );
        assert_eq!(
            err("[media]\nims_profile = \"RTP/SAVP\"\nims_srtp_suites = []"),
            "media.ims_srtp_suites: must name at least one suite when media.ims_profile is RTP/SAVP"
        );
        assert_eq!(
            err("[media]\nims_profile = \"UDP/TLS\""),
            "media.ims_profile: \"UDP/TLS\" is not one of RTP/AVP, RTP/AVPF, RTP/SAVP, RTP/SAVPF"
        );
        let c = with(&["media.audio_codecs=PCMA/8000, opus/48000/2"]).unwrap();
        assert_eq!(c.media.audio_codecs.len(), 2);
        assert!(c.media.audio_codecs[1].is("opus"));
    }

    #[test]
    fn next_hop_errors_name_the_key() {
        assert_eq!(
            err("[ims]\nnext_hop = \"sip:10.0.0.1;transport=sctp\""),
            "ims.next_hop: transport \"sctp\" is not supported (udp, tcp, tls)"
        );
        let c = Config::from_toml_str("[ims]\nnext_hop = \"builtin\"").unwrap();
        assert_eq!(c.ims.next_hop, NextHop::Builtin);
    }

    #[test]
    fn overrides_take_toml_values_or_plain_text() {
        let c = with(&[
            "ims.next_hop=sip:10.0.0.1:5060",
            "media.port_min=20002",
            "web.ws_listen=127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(
            c.ims.next_hop,
            NextHop::Uri {
                host: "10.0.0.1".into(),
                port: 5060,
                transport: NextHopTransport::Udp,
                lookup: NextHopLookup::Address,
            }
        );
        assert_eq!(c.media.ports.min, 20002);
        assert_eq!(c.web.ws_listen, "127.0.0.1:0".parse().unwrap());
        // A value that happens to be TOML still reaches a string key as its text.
        let c = with(&[
            "sip.user_agent=1.5",
            "ims.domain=\"example.net\"",
            "log.level=debug",
        ])
        .unwrap();
        assert_eq!(c.sip.user_agent, "1.5");
        assert_eq!(c.ims.domain, "example.net");
        assert_eq!(c.log.level, "debug");
        // Empty clears a path, multi-line text is not smuggled in as extra keys.
        assert_eq!(
            with(&["web.tls_cert=", "web.tls_key="]).unwrap().web.tls,
            TlsCertificate::SelfSigned
        );
        assert_eq!(
            with(&["sip.user_agent=a\nt1_ms = 1"])
                .unwrap_err()
                .to_string(),
            "sip.user_agent: must be non-empty printable text"
        );
    }

    #[test]
    fn overrides_apply_on_top_of_the_file() {
        let o = vec![
            "media.port_max=40001".to_string(),
            "media.port_min=30000".to_string(),
        ];
        let c = Config::from_toml_str_with_overrides(
            "[media]\nport_min = 20000\nport_max = 21000\n",
            &o,
        )
        .unwrap();
        assert_eq!(
            c.media.ports,
            PortRange {
                min: 30000,
                max: 40001
            }
        );
    }

    #[test]
    fn override_errors() {
        assert_eq!(
            with(&["media.port_min=30000"]).unwrap_err().to_string(),
            "media.port_min: must be less than media.port_max (30000 >= 29999)"
        );
        assert_eq!(
            with(&["web.wsl_listen=x"]).unwrap_err().to_string(),
            "unknown key web.wsl_listen"
        );
        assert_eq!(
            with(&["nosuch.key=1"]).unwrap_err().to_string(),
            "unknown section [nosuch]"
        );
        assert_eq!(
            with(&["port_min=1"]).unwrap_err().to_string(),
            "--set port_min=1: expected section.key=value"
        );
        assert_eq!(
            with(&["media.port_min"]).unwrap_err().to_string(),
            "--set media.port_min: expected section.key=value"
        );
        assert_eq!(
            with(&["a.b.c=1"]).unwrap_err().to_string(),
            "--set a.b.c=1: expected section.key=value"
        );
        let e = with(&["media.port_min=abc"]).unwrap_err();
        assert_eq!(e.key(), Some("media.port_min"));
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let e = Config::load(Path::new("/nonexistent/estuary.toml"), &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/estuary.toml: "),
            "{e}"
        );
    }
}
