//! The IMS next hop as RFC 3263 finds it: for a domain without a port, NAPTR records pick the
//! transport and name the SRV records (§4.1), SRV records give the targets in priority order
//! (§4.2) with their priorities and weights, and A/AAAA records their addresses; without NAPTR
//! or SRV records, the domain's own addresses at the default port, in order. The targets go to
//! the signalling engine, which shares requests among the best priority by weight and fails
//! over to the others (estuary_b2bua::next_hops).

use std::net::{IpAddr, SocketAddr};

use estuary_b2bua::next_hops::HopTarget;
use estuary_core::Transport;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

/// A resolver on `servers`, or the system's name servers when there are none.
pub fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let provider = hickory_resolver::net::runtime::TokioRuntimeProvider::default();
    if servers.is_empty() {
        return TokioResolver::builder(provider).and_then(|b| b.build()).map_err(|e| format!("system DNS configuration: {e}"));
    }
    let name_servers = servers
        .iter()
        .map(|s| {
            let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
            udp.port = s.port();
            tcp.port = s.port();
            NameServerConfig::new(s.ip(), true, vec![udp, tcp])
        })
        .collect();
    TokioResolver::builder_with_config(ResolverConfig::from_parts(None, Vec::new(), name_servers), provider)
        .build()
        .map_err(|e| format!("DNS resolver: {e}"))
}

/// The SRV owner name for a transport (RFC 3263 §4.2).
fn srv_name(domain: &str, transport: Transport) -> String {
    match transport {
        Transport::Tls | Transport::Wss => format!("_sips._tcp.{domain}."),
        Transport::Tcp | Transport::Ws => format!("_sip._tcp.{domain}."),
        Transport::Udp => format!("_sip._udp.{domain}."),
    }
}

/// A NAPTR service field's transport (RFC 3263 §4.1), if one we speak.
fn naptr_transport(services: &[u8]) -> Option<Transport> {
    match String::from_utf8_lossy(services).to_ascii_uppercase().as_str() {
        "SIP+D2U" => Some(Transport::Udp),
        "SIP+D2T" => Some(Transport::Tcp),
        "SIPS+D2T" => Some(Transport::Tls),
        _ => None,
    }
}

fn default_port(transport: Transport) -> u16 {
    if transport == Transport::Tls {
        5061
    } else {
        5060
    }
}

/// The addresses of `host` (A and AAAA).
async fn addresses(r: &TokioResolver, host: &str) -> Vec<IpAddr> {
    match r.lookup_ip(host).await {
        Ok(ips) => ips.iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// The targets of an SRV owner name with their priorities and weights (RFC 2782), each
/// target's every address (sharing its weight); empty when there are none.
async fn srv_targets(r: &TokioResolver, name: &str) -> Vec<HopTarget> {
    let Ok(lookup) = r.lookup(name, RecordType::SRV).await else { return Vec::new() };
    let mut records: Vec<(u16, u16, u16, String)> = lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::SRV(srv) => Some((srv.priority, srv.weight, srv.port, srv.target.to_utf8())),
            _ => None,
        })
        .collect();
    // RFC 2782: a target of "." means the service is not offered here.
    records.retain(|r| r.3 != ".");
    records.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<HopTarget> = Vec::new();
    for (priority, weight, port, target) in records {
        let ips = addresses(r, &target).await;
        // A dual-stack target's addresses split its share rather than doubling it.
        let share = if weight == 0 { 0 } else { (weight / u16::try_from(ips.len().max(1)).unwrap_or(u16::MAX)).max(1) };
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            if !out.iter().any(|t| t.addr == addr) {
                out.push(HopTarget { addr, priority, weight: share });
            }
        }
    }
    out
}

/// The next hop's targets and transport for `domain` (RFC 3263 §4). `transport` is the one
/// the URI named, or `None` to let NAPTR (then SRV, UDP first) choose. Err when nothing
/// resolves at all.
pub async fn next_hop_targets(r: &TokioResolver, domain: &str, transport: Option<Transport>) -> Result<(Vec<HopTarget>, Transport), String> {
    let domain = domain.trim_end_matches('.');
    if let Some(t) = transport {
        let targets = srv_targets(r, &srv_name(domain, t)).await;
        if !targets.is_empty() {
            return Ok((targets, t));
        }
        return fallback(r, domain, t).await;
    }
    // §4.1: NAPTR records in order, the first whose transport we speak and whose SRV
    // records give targets.
    if let Ok(lookup) = r.lookup(format!("{domain}."), RecordType::NAPTR).await {
        let mut naptrs: Vec<(u16, u16, Transport, String)> = lookup
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::NAPTR(n) if n.flags.eq_ignore_ascii_case(b"s") => {
                    naptr_transport(&n.services).map(|t| (n.order, n.preference, t, n.replacement.to_utf8()))
                }
                _ => None,
            })
            .collect();
        naptrs.sort_by_key(|n| (n.0, n.1));
        for (_, _, t, replacement) in naptrs {
            let targets = srv_targets(r, &replacement).await;
            if !targets.is_empty() {
                return Ok((targets, t));
            }
        }
    }
    // No usable NAPTR: SRV for each transport we speak (TLS needs ims.tls_*: not guessed).
    for t in [Transport::Udp, Transport::Tcp] {
        let targets = srv_targets(r, &srv_name(domain, t)).await;
        if !targets.is_empty() {
            return Ok((targets, t));
        }
    }
    fallback(r, domain, Transport::Udp).await
}

/// §4.2: no SRV records, the domain's own addresses at the transport's default port.
async fn fallback(r: &TokioResolver, domain: &str, t: Transport) -> Result<(Vec<HopTarget>, Transport), String> {
    let targets = HopTarget::in_order(addresses(r, domain).await.into_iter().map(|ip| SocketAddr::new(ip, default_port(t))));
    if targets.is_empty() {
        return Err(format!("\"{domain}\" has no NAPTR, SRV, A or AAAA records"));
    }
    Ok((targets, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naptr_services_and_srv_names() {
        assert_eq!(naptr_transport(b"SIP+D2U"), Some(Transport::Udp));
        assert_eq!(naptr_transport(b"sip+d2t"), Some(Transport::Tcp));
        assert_eq!(naptr_transport(b"SIPS+D2T"), Some(Transport::Tls));
        assert_eq!(naptr_transport(b"SIP+D2S"), None, "SCTP is not spoken");
        assert_eq!(srv_name("ims.test", Transport::Udp), "_sip._udp.ims.test.");
        assert_eq!(srv_name("ims.test", Transport::Tls), "_sips._tcp.ims.test.");
    }
}
