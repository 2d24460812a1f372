//! The IMS next hop: a SIP URI reduced to what routing needs, or the built-in test peer.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// Where every request toward IMS is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// A SIP server, `sip:HOST[:PORT][;transport=udp|tcp|tls]`.
    Uri {
        /// IP literal (IPv6 without brackets) or DNS name, resolved by the daemon at start.
        host: String,
        /// Default 5060 (RFC 3261 §19.1.2).
        port: u16,
        /// Default UDP (RFC 3261 §18.1.1 for a URI without `transport`).
        transport: NextHopTransport,
        /// How the daemon finds the targets (RFC 3263 §4).
        lookup: NextHopLookup,
    },
    /// The built-in IMS test peer (echo and tone users), for demos and tests.
    Builtin,
}

/// How a next hop's targets are found (RFC 3263 §4.1, §4.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum NextHopLookup {
    /// An IP literal, or a name with a port: its addresses (A/AAAA), at that port.
    Address,
    /// A domain with a transport and no port: the SRV records of that transport, else its
    /// addresses at the default port.
    Srv,
    /// A domain with neither: NAPTR records choose the transport and name the SRV records,
    /// else SRV for each transport, else its addresses (UDP, 5060).
    Naptr,
}

/// Transports the gateway speaks toward IMS.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum NextHopTransport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS on TCP (RFC 3261 §26.3.1), the core's certificate checked against
    /// `ims.tls_ca`.
    Tls,
}

const FORM: &str = "expected \"sip:HOST[:PORT][;transport=udp|tcp|tls]\" or \"builtin\"";

impl FromStr for NextHop {
    type Err = String;

    /// Parses the operator's value; the error is the reason, without the key.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("builtin") {
            return Ok(NextHop::Builtin);
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(format!("{FORM}, found \"{s}\""));
        };
        if !scheme.eq_ignore_ascii_case("sip") {
            return Err(format!(
                "scheme \"{scheme}\" is not supported (sip, or builtin)"
            ));
        }
        let mut parts = rest.split(';');
        // Invariant: split always yields at least one item.
        let hostport = parts.next().unwrap_or("");
        if hostport.contains('@') {
            return Err("a user part is not allowed in the next hop".into());
        }
        let (host, port) = split_host_port(hostport)?;
        let mut transport = NextHopTransport::Udp;
        let mut transport_given = false;
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            match name.to_ascii_lowercase().as_str() {
                "transport" => {
                    transport_given = true;
                    transport = match value.to_ascii_lowercase().as_str() {
                        "udp" => NextHopTransport::Udp,
                        "tcp" => NextHopTransport::Tcp,
                        "tls" => NextHopTransport::Tls,
                        _ => {
                            return Err(format!(
                                "transport \"{value}\" is not supported (udp, tcp, tls)"
                            ))
                        }
                    }
                }
                // Loose routing is what the gateway does anyway (RFC 3261 §16.12).
                "lr" => {}
                _ => return Err(format!("unknown URI parameter \"{name}\" (transport, lr)")),
            }
        }
        // RFC 3263 §4.1/§4.2: a numeric host or an explicit port is used as is; a domain
        // without a port is looked up in DNS (SRV, and NAPTR when no transport is given).
        let numeric = host.parse::<std::net::IpAddr>().is_ok();
        let lookup = match (numeric || port.is_some(), transport_given) {
            (true, _) => NextHopLookup::Address,
            (false, true) => NextHopLookup::Srv,
            (false, false) => NextHopLookup::Naptr,
        };
        // RFC 3261 §19.1.2: 5061 for SIP over TLS, 5060 otherwise.
        let port = port.unwrap_or(if transport == NextHopTransport::Tls { 5061 } else { 5060 });
        Ok(NextHop::Uri {
            host,
            port,
            transport,
            lookup,
        })
    }
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("unclosed IPv6 reference \"{hostport}\""));
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address \"{addr}\""));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("invalid host \"{hostport}\""))?,
            ),
        };
        (addr.to_owned(), port)
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if !is_hostname(host) {
            return Err(format!("invalid host \"{host}\""));
        }
        (host.to_owned(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => Some(p),
            _ => return Err(format!("invalid port \"{p}\"")),
        },
    };
    Ok((host, port))
}

/// A DNS name or IPv4 literal: labels of letters, digits and hyphens (RFC 3261 §25.1 `host`).
pub(crate) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::Builtin => f.write_str("builtin"),
            NextHop::Uri {
                host,
                port,
                transport,
                lookup,
            } => {
                let t = match transport {
                    NextHopTransport::Udp => "udp",
                    NextHopTransport::Tcp => "tcp",
                    NextHopTransport::Tls => "tls",
                };
                match lookup {
                    NextHopLookup::Naptr => return write!(f, "sip:{host}"),
                    NextHopLookup::Srv => return write!(f, "sip:{host};transport={t}"),
                    NextHopLookup::Address => {}
                }
                if host.contains(':') {
                    write!(f, "sip:[{host}]:{port};transport={t}")
                } else {
                    write!(f, "sip:{host}:{port};transport={t}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(host: &str, port: u16, transport: NextHopTransport) -> NextHop {
        with_lookup(host, port, transport, NextHopLookup::Address)
    }

    fn with_lookup(host: &str, port: u16, transport: NextHopTransport, lookup: NextHopLookup) -> NextHop {
        NextHop::Uri {
            host: host.into(),
            port,
            transport,
            lookup,
        }
    }

    #[test]
    fn accepts_the_usual_forms() {
        use NextHopTransport::*;
        assert_eq!(
            "sip:127.0.0.1:5060;transport=udp".parse(),
            Ok(uri("127.0.0.1", 5060, Udp))
        );
        assert_eq!(
            "SIP:pcscf.ims.test;transport=TCP;lr".parse(),
            Ok(with_lookup("pcscf.ims.test", 5060, Tcp, NextHopLookup::Srv)),
            "RFC 3263 §4.2: a domain with a transport and no port is looked up by SRV"
        );
        assert_eq!("sip:ims.test".parse(), Ok(with_lookup("ims.test", 5060, Udp, NextHopLookup::Naptr)), "§4.1: NAPTR");
        assert_eq!("sip:core.ims.test:5070".parse(), Ok(with_lookup("core.ims.test", 5070, Udp, NextHopLookup::Address)), "a port: A/AAAA");
        assert_eq!("sip:10.0.0.1:5070".parse(), Ok(uri("10.0.0.1", 5070, Udp)));
        assert_eq!(
            "sip:[::1]:5062;transport=tcp".parse(),
            Ok(uri("::1", 5062, Tcp))
        );
        assert_eq!("builtin".parse(), Ok(NextHop::Builtin));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "sip:127.0.0.1:5060;transport=udp",
            "sip:[::1]:5062;transport=tcp",
            "sip:ims.test",
            "sip:ims.test;transport=tcp",
            "builtin",
        ] {
            assert_eq!(s.parse::<NextHop>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_with_a_reason() {
        let err = |s: &str| s.parse::<NextHop>().unwrap_err();
        assert_eq!(
            err("sip:h;transport=sctp"),
            "transport \"sctp\" is not supported (udp, tcp, tls)"
        );
        assert_eq!(
            err("sips:h"),
            "scheme \"sips\" is not supported (sip, or builtin)"
        );
        assert_eq!(
            err("tel:+123"),
            "scheme \"tel\" is not supported (sip, or builtin)"
        );
        assert!(err("10.0.0.1").starts_with("expected"));
        assert_eq!(err("sip:h:0"), "invalid port \"0\"");
        assert_eq!(err("sip:h:99999"), "invalid port \"99999\"");
        assert_eq!(err("sip:a@h"), "a user part is not allowed in the next hop");
        assert_eq!(
            err("sip:h;maddr=x"),
            "unknown URI parameter \"maddr\" (transport, lr)"
        );
        assert_eq!(err("sip:"), "invalid host \"\"");
        assert_eq!(err("sip:[::1"), "unclosed IPv6 reference \"[::1\"");
        assert_eq!(err("sip:bad_host"), "invalid host \"bad_host\"");
    }
}
