//! Operator config to the signalling engine's config: the one place where `[ims]`, `[sip]`,
//! `[registrar]` and `[web]` keys meet [`B2buaConfig`] fields.

use std::net::SocketAddr;

use estuary_b2bua::next_hops::HopTarget;
use estuary_b2bua::{B2buaConfig, OnWsClose, Transport};
use estuary_config::{Config, NextHop, NextHopTransport};
use estuary_transaction::TimerConfig;

use crate::error::DaemonError;

/// Addresses the listeners actually bound (the config may ask for port 0).
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    pub ws: SocketAddr,
    pub wss: SocketAddr,
    pub ims: SocketAddr,
    /// `ims.tls_listen`, when set.
    pub ims_tls: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// `ims.next_hop` after name resolution.
#[derive(Clone, Debug)]
pub struct ResolvedNextHop {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The name the core's TLS certificate must carry: the next hop's host as configured.
    pub host: String,
    /// Every address the host resolved to: the default `ims.trusted_peers`.
    pub resolved: Vec<std::net::IpAddr>,
    /// The targets with their SRV priorities and weights (RFC 3263), best priority first.
    pub targets: Vec<HopTarget>,
}

impl ResolvedNextHop {
    fn from_targets(targets: Vec<HopTarget>, transport: Transport, host: String) -> Option<ResolvedNextHop> {
        let addr = targets.first()?.addr;
        let mut resolved: Vec<std::net::IpAddr> = Vec::new();
        for t in &targets {
            if !resolved.contains(&t.addr.ip()) {
                resolved.push(t.addr.ip());
            }
        }
        Some(ResolvedNextHop { addr, transport, host, resolved, targets })
    }
}

/// Resolves `ims.next_hop` once at start; a name that does not resolve stops the daemon
/// rather than failing every call later.
pub async fn resolve_next_hop(cfg: &Config) -> Result<ResolvedNextHop, DaemonError> {
    match &cfg.ims.next_hop {
        // TEST FACILITY: the peer runs in this process and the gateway talks to it over UDP
        // exactly as to a real P-CSCF.
        NextHop::Builtin => {
            let addr = crate::builtin_peer::start(cfg).await?;
            Ok(ResolvedNextHop { addr, transport: Transport::Udp, host: "builtin".into(), resolved: vec![addr.ip()], targets: HopTarget::in_order([addr]) })
        }
        NextHop::Uri { host, port, transport, lookup } => {
            let transport = match transport {
                NextHopTransport::Udp => Transport::Udp,
                NextHopTransport::Tcp => Transport::Tcp,
                NextHopTransport::Tls => Transport::Tls,
            };
            if *lookup != estuary_config::NextHopLookup::Address {
                let resolver = crate::dns::resolver(&cfg.ims.dns_servers).map_err(|e| DaemonError::setup("ims.dns_servers", e))?;
                let wanted = (*lookup == estuary_config::NextHopLookup::Srv).then_some(transport);
                let (targets, chosen) = crate::dns::next_hop_targets(&resolver, host, wanted)
                    .await
                    .map_err(|e| DaemonError::setup("ims.next_hop", e))?;
                if chosen == Transport::Tls && cfg.ims.tls.listen.is_none() {
                    return Err(DaemonError::setup("ims.next_hop", format!("NAPTR records of \"{host}\" choose TLS: write ;transport=tls and set ims.tls_listen and ims.tls_ca")));
                }
                return ResolvedNextHop::from_targets(targets, chosen, host.clone())
                    .ok_or_else(|| DaemonError::setup("ims.next_hop", format!("\"{host}\" has no target")));
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| {
                    DaemonError::setup("ims.next_hop", format!("cannot resolve \"{host}\": {e}"))
                })?
                .collect();
            // Several addresses of one name are one target (the first); its others are still
            // trusted as sources.
            let mut hop = ResolvedNextHop::from_targets(HopTarget::in_order(addrs), transport, host.clone())
                .ok_or_else(|| DaemonError::setup("ims.next_hop", format!("\"{host}\" has no address")))?;
            hop.targets.truncate(1);
            Ok(hop)
        }
    }
}

/// `fingerprint` is the DTLS certificate's (see `tls::dtls_identity`).
pub fn b2bua_config(
    cfg: &Config,
    bound: &Bound,
    next_hop: ResolvedNextHop,
    fingerprint: estuary_sdp::Fingerprint,
    transcode_capacity: Option<usize>,
) -> B2buaConfig {
    // Config validation guarantees an explicit address when ims.listen is a wildcard. Over
    // TLS the core must come back to the TLS listener: its port, the advertised IP.
    let advertised = cfg.ims.advertised_address.unwrap_or(bound.ims);
    let ims_advertised = match (next_hop.transport, bound.ims_tls) {
        (Transport::Tls, Some(tls)) => {
            let ip = cfg.ims.advertised_address.map_or(tls.ip(), |a| a.ip());
            SocketAddr::new(ip, tls.port())
        }
        _ => advertised,
    };
    B2buaConfig {
        ims_advertised,
        ims_transport: next_hop.transport,
        next_hop: next_hop.addr,
        next_hop_targets: next_hop.targets.clone(),
        next_hop_probe: cfg.ims.next_hop_probe,
        domain: cfg.ims.domain.clone(),
        web_advertised_host: cfg
            .web
            .advertised_host
            .clone()
            .unwrap_or_else(|| web_host(bound.wss)),
        timers: TimerConfig {
            t1: cfg.sip.t1,
            t2: cfg.sip.t2,
            t4: cfg.sip.t4,
        },
        max_forwards: cfg.sip.max_forwards.into(),
        on_ws_close: match cfg.registrar.on_ws_close {
            estuary_config::OnWsClose::Keep => OnWsClose::Keep,
            estuary_config::OnWsClose::Deregister => OnWsClose::Deregister,
        },
        reconnect_grace: cfg.registrar.reconnect_grace,
        max_expires: u32::try_from(cfg.registrar.max_expires.as_secs()).unwrap_or(u32::MAX),
        min_expires: u32::try_from(cfg.registrar.min_expires.as_secs()).unwrap_or(u32::MAX),
        require_registration: cfg.registrar.require_registration,
        user_agent: Some(cfg.sip.user_agent.clone()),
        sdp: sdp_policy(cfg, Some(fingerprint)),
        port_quarantine: cfg.media.port_quarantine,
        // transcoder.max_channels, or the pool's measured capacity (transcode::Transcoder).
        transcode_channels: transcode_capacity,
        transcode_refusal: cfg.transcoder.refuse_status,
        video_overload: match cfg.transcoder.video_overload {
            estuary_config::VideoOverload::RefuseCall => estuary_b2bua::VideoOverload::RefuseCall,
            estuary_config::VideoOverload::DropVideo => estuary_b2bua::VideoOverload::DropVideo,
        },
        // The driver sets the pool's figure before the first request (Engine::on_event).
        registrations_per_source: cfg.limits.registrations_per_ip,
        // Closed policy holds the callee's answer for the PCRF's decision.
        policy_gate: cfg.rx.enabled && cfg.rx.on_failure == estuary_config::RxOnFailure::Closed,
        signalling_policy: cfg.rx.enabled && cfg.rx.signalling,
        share_state: cfg.cluster.enabled,
        sip_front: cfg.cluster.sip_front.clone().filter(|_| cfg.cluster.enabled),
        // Not operator keys: the 503 Retry-After keeps the engine's default.
        ..B2buaConfig::default()
    }
}

/// A media session's tuning from `[media]`. `wall_clock` anchors the NTP time of sender
/// reports (`None`: counted from the Unix epoch, as a replay on a virtual clock has it);
/// `tap` copies every packet for the recorder.
pub fn media_config(cfg: &Config, wall_clock: Option<estuary_rtp::WallClock>, tap: bool) -> estuary_media::MediaConfig {
    estuary_media::MediaConfig {
        web_address: cfg.media.web_address,
        ims_address: cfg.media.ims_address,
        latch: cfg.media.latch,
        inactivity_timeout: cfg.media.inactivity_timeout,
        ice: estuary_ice::IceSettings { consent_timeout: cfg.media.consent_timeout, ..estuary_ice::IceSettings::default() },
        wall_clock,
        tap,
    }
}

/// The SDP interworking policy from `[media]` and `[transcoder]`. `fingerprint` is the DTLS
/// certificate's; `None` (the `sdp` tool) writes an all-zero placeholder.
pub fn sdp_policy(cfg: &Config, fingerprint: Option<estuary_sdp::Fingerprint>) -> estuary_sdp::SdpPolicy {
    let m = &cfg.media;
    let d = estuary_sdp::SdpPolicy::default();
    let secure = m.ims_profile.contains("SAVP");
    estuary_sdp::SdpPolicy {
        ims_address: m.ims_address,
        web_address: m.web_address,
        ims: estuary_sdp::ImsProfile {
            srtp: if secure { m.ims_srtp_suites.clone() } else { Vec::new() },
            avpf: m.ims_profile.ends_with('F'),
            rtcp_mux: m.ims_rtcp_mux,
            ptime: (m.ptime_ms > 0).then_some(m.ptime_ms),
        },
        audio: m.audio_codecs.clone(),
        video: m.video_codecs.clone(),
        // What the transcoder implements; the operator only switches it on or off. Video pairs
        // bridge a browser to whichever of the core's video codecs it lacks.
        transcode: match (cfg.transcoder.enabled, cfg.transcoder.video) {
            (false, _) => Vec::new(),
            (true, false) => d.transcode,
            (true, true) => d.transcode.into_iter().chain(estuary_sdp::TranscodePair::video(&m.video_codecs)).collect(),
        },
        telephone_event: m.telephone_event,
        fingerprint: fingerprint.unwrap_or(d.fingerprint),
    }
}

/// Browsers never route on our Via/Record-Route host (they reuse the WebSocket, RFC 7118
/// §5), so a wildcard listener may fall back to a reserved name (RFC 2606 `.invalid`).
fn web_host(listener: SocketAddr) -> String {
    match listener.ip() {
        ip if ip.is_unspecified() => "estuary.invalid".to_owned(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_map_to_the_listeners() {
        let cfg = Config::default();
        let bound = Bound {
            ims_tls: None,
            ws: "127.0.0.1:8080".parse().unwrap(),
            wss: "127.0.0.1:8443".parse().unwrap(),
            ims: "127.0.0.1:5080".parse().unwrap(),
            admin: "127.0.0.1:9090".parse().unwrap(),
        };
        let hop = ResolvedNextHop {
            addr: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            host: "127.0.0.1".into(),
            resolved: vec!["127.0.0.1".parse().unwrap()],
            targets: HopTarget::in_order(["127.0.0.1:5060".parse().unwrap()]),
        };
        let b = b2bua_config(&cfg, &bound, hop.clone(), estuary_sdp::SdpPolicy::default().fingerprint, None);
        assert_eq!(b.ims_advertised, bound.ims);
        assert_eq!(b.next_hop, hop.addr);
        // Over TLS the core comes back to the TLS listener: Via/Contact/Path name it.
        let tls = Bound { ims_tls: Some("127.0.0.1:5081".parse().unwrap()), ..bound };
        let hop = ResolvedNextHop { transport: Transport::Tls, ..hop };
        let b = b2bua_config(&cfg, &tls, hop, estuary_sdp::SdpPolicy::default().fingerprint, None);
        assert_eq!((b.ims_advertised, b.ims_transport), ("127.0.0.1:5081".parse().unwrap(), Transport::Tls));
        assert_eq!(b.web_advertised_host, "127.0.0.1");
        assert_eq!(b.domain, "ims.test");
        assert_eq!(b.max_forwards, 70);
        assert_eq!(b.timers, TimerConfig::default());
        assert_eq!(web_host("0.0.0.0:1".parse().unwrap()), "estuary.invalid");
        assert_eq!(web_host("[::1]:1".parse().unwrap()), "[::1]");
    }
}
