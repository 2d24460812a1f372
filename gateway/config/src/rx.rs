//! `[rx]`: Diameter Rx toward the PCRF (3GPP TS 29.214), the P-CSCF's request for the
//! bearers a call's media needs. Checked here, so the daemon gets only values that passed.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use crate::next_hop::is_hostname;

/// `[rx]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxConfig {
    /// Send AAR/STR for calls at all (`rx.enabled`); off by default, as most labs have no PCRF.
    pub enabled: bool,
    /// Diameter peers, primary first, then failover peers in order (`rx.peers`).
    pub peers: Vec<RxPeer>,
    /// Our Origin-Host, the P-CSCF's DiameterIdentity (`rx.origin_host`).
    pub origin_host: String,
    /// Our Origin-Realm (`rx.origin_realm`).
    pub origin_realm: String,
    /// The PCRF's realm, Destination-Realm (`rx.destination_realm`).
    pub destination_realm: String,
    /// Destination-Host on initial requests; `None` = not sent, the realm routes
    /// (`rx.destination_host`).
    pub destination_host: Option<String>,
    /// What a call does when the PCRF refuses or cannot be reached (`rx.on_failure`).
    pub on_failure: RxOnFailure,
    /// How long an AAR or STR waits for its answer (`rx.timeout_ms`).
    pub timeout: Duration,
    /// Also authorize the signalling path at registration, AF_SIGNALLING (`rx.signalling`).
    pub signalling: bool,
    /// RFC 3539 Tw: a quiet connection is probed with DWR this often (`rx.watchdog_s`).
    pub watchdog: Duration,
    /// Direction keyword of the uplink Flow-Description (`rx.uplink_filter`).
    pub uplink_filter: RxUplinkFilter,
    /// Subscribe to INDICATION_OF_OUT_OF_CREDIT, the Rel8 feature (`rx.out_of_credit`).
    pub out_of_credit: bool,
}

impl Default for RxConfig {
    fn default() -> Self {
        RxConfig {
            enabled: false,
            peers: vec![RxPeer {
                host: "127.0.0.1".to_owned(),
                port: DIAMETER_PORT,
            }],
            origin_host: "pcscf.ims.test".to_owned(),
            origin_realm: "ims.test".to_owned(),
            destination_realm: "ims.test".to_owned(),
            destination_host: None,
            on_failure: RxOnFailure::Open,
            timeout: Duration::from_millis(2000),
            signalling: false,
            watchdog: Duration::from_secs(30),
            uplink_filter: RxUplinkFilter::In,
            out_of_credit: true,
        }
    }
}

/// One Diameter peer, `HOST[:PORT]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RxPeer {
    /// DNS name or IP literal (IPv6 without brackets), resolved by the daemon.
    pub host: String,
    /// Default 3868 (RFC 6733 §2.1).
    pub port: u16,
}

/// RFC 6733 §2.1: Diameter over TCP or SCTP listens on 3868.
const DIAMETER_PORT: u16 = 3868;

/// `rx.on_failure`: a call whose AAR is refused, times out or finds no peer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RxOnFailure {
    /// The call goes on without dedicated bearers (best effort); the failure is counted.
    Open,
    /// The call is refused: no call without the QoS the PCRF grants.
    Closed,
}

/// `rx.uplink_filter`: how the uplink Flow-Description reads (TS 29.214 §5.3.8).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RxUplinkFilter {
    /// "permit in ... from UE to network", the rule from Rel-8 on.
    In,
    /// "permit out ... from UE to network": before Rel-8 only "out" was used and the
    /// addresses told the direction. For old PCRFs only.
    Out,
}

const PEER_FORM: &str = "expected HOST[:PORT], an IPv6 address in brackets";

impl FromStr for RxPeer {
    type Err = String;

    /// Parses one `rx.peers` entry; the error quotes the entry but not the key.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (host, port) = if let Some(v6) = s.strip_prefix('[') {
            let Some((addr, after)) = v6.split_once(']') else {
                return Err(format!("\"{s}\": unclosed IPv6 reference ({PEER_FORM})"));
            };
            let Ok(addr) = addr.parse::<Ipv6Addr>() else {
                return Err(format!("\"{s}\": invalid IPv6 address \"{addr}\""));
            };
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("\"{s}\": {PEER_FORM}"))?,
                ),
            };
            (addr.to_string(), port)
        } else {
            let (host, port) = match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            if host.is_empty() {
                return Err(format!("\"{s}\": empty host ({PEER_FORM})"));
            }
            if port.is_some_and(|p| p.contains(':')) {
                return Err(format!(
                    "\"{s}\": an IPv6 address must be in brackets, e.g. [2001:db8::1]:3868"
                ));
            }
            if !is_hostname(host) {
                return Err(format!("\"{s}\": invalid host \"{host}\""));
            }
            (host.to_owned(), port)
        };
        let port = match port {
            None => DIAMETER_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(format!("\"{s}\": invalid port \"{p}\" (1-65535)")),
            },
        };
        Ok(RxPeer { host, port })
    }
}

impl RxPeer {
    /// Whether `other` is the same peer: names compare without case, addresses by value.
    pub(crate) fn same_as(&self, other: &RxPeer) -> bool {
        self.port == other.port
            && match (self.host.parse::<IpAddr>(), other.host.parse::<IpAddr>()) {
                (Ok(a), Ok(b)) => a == b,
                _ => self.host.eq_ignore_ascii_case(&other.host),
            }
    }
}

impl fmt::Display for RxPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A DiameterIdentity (RFC 6733 §4.3.1, an FQDN): labels of letters, digits and hyphens.
/// No trailing dot: peers compare identities and realms as plain strings.
pub(crate) fn is_diameter_identity(s: &str) -> bool {
    is_hostname(s) && !s.ends_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_display() {
        let p = |s: &str| s.parse::<RxPeer>().unwrap();
        assert_eq!(
            p("pcrf.ims.test"),
            RxPeer {
                host: "pcrf.ims.test".into(),
                port: 3868
            }
        );
        assert_eq!(
            p("10.0.0.9:3870"),
            RxPeer {
                host: "10.0.0.9".into(),
                port: 3870
            }
        );
        assert_eq!(
            p("[2001:DB8::9]"),
            RxPeer {
                host: "2001:db8::9".into(),
                port: 3868
            }
        );
        for s in ["pcrf.ims.test:3868", "10.0.0.9:3870", "[2001:db8::9]:3868"] {
            assert_eq!(p(s).to_string(), s);
        }
        assert!(p("PCRF:3868").same_as(&p("pcrf")));
        assert!(p("[::1]").same_as(&p("[0::1]:3868")));
        assert!(!p("pcrf:3868").same_as(&p("pcrf:3869")));
    }

    #[test]
    fn bad_peers_are_refused_with_the_entry() {
        let err = |s: &str| s.parse::<RxPeer>().unwrap_err();
        assert_eq!(err("pcrf:0"), "\"pcrf:0\": invalid port \"0\" (1-65535)");
        assert_eq!(err("pcrf:"), "\"pcrf:\": invalid port \"\" (1-65535)");
        assert_eq!(err("pcrf:x"), "\"pcrf:x\": invalid port \"x\" (1-65535)");
        assert_eq!(
            err(":3868"),
            "\":3868\": empty host (expected HOST[:PORT], an IPv6 address in brackets)"
        );
        assert_eq!(
            err("2001:db8::1"),
            "\"2001:db8::1\": an IPv6 address must be in brackets, e.g. [2001:db8::1]:3868"
        );
        assert_eq!(
            err("[::1"),
            "\"[::1\": unclosed IPv6 reference (expected HOST[:PORT], an IPv6 address in brackets)"
        );
        assert_eq!(err("[pcrf]"), "\"[pcrf]\": invalid IPv6 address \"pcrf\"");
        assert_eq!(
            err("[::1]3868"),
            "\"[::1]3868\": expected HOST[:PORT], an IPv6 address in brackets"
        );
        assert_eq!(err("pcrf_1"), "\"pcrf_1\": invalid host \"pcrf_1\"");
    }

    #[test]
    fn diameter_identities() {
        assert!(is_diameter_identity("pcscf.ims.test"));
        assert!(is_diameter_identity("ims.mnc001.mcc001.3gppnetwork.org"));
        for bad in ["", "pcscf ims", "ims.test.", "-x.test", "a..b", "p@ims"] {
            assert!(!is_diameter_identity(bad), "{bad}");
        }
    }
}
