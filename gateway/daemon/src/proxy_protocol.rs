//! The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2), receiving side,
//! sans-IO: a load balancer in TCP mode (WSS passed through) writes one header before the
//! client's bytes, naming the client's address and the one it connected to. Only connections
//! from `web.trusted_proxies` are read for it; anyone else could write any address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes that open a version 2 header.
pub const V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
/// A version 1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Bytes to read before a header can be told from a client's own first bytes (a TLS
/// ClientHello or an HTTP request line are longer).
pub const PROBE: usize = 16;

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// The proxy relays a client: its address, and the address it connected to (the front).
    Proxied { client: SocketAddr, front: SocketAddr },
    /// The proxy speaks for itself (v2 LOCAL, e.g. a health check; v1 UNKNOWN).
    Local,
}

/// The outcome of [`parse`] on the first bytes of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed: at least this many in all.
    Incomplete(usize),
    /// The bytes are not a PROXY header (the client's own data starts here).
    Absent,
    /// A header of `len` bytes; the client's data follows it.
    Complete { len: usize, header: Header },
    /// A header that cannot be read.
    Invalid(&'static str),
}

/// Reads a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.len() < PROBE {
        return Parsed::Incomplete(PROBE);
    }
    if buf[..12] == V2_SIGNATURE {
        return parse_v2(buf);
    }
    if buf.starts_with(b"PROXY ") {
        return parse_v1(buf);
    }
    Parsed::Absent
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0F);
    if version != 2 {
        return Parsed::Invalid("PROXY v2: version is not 2");
    }
    let len = PROBE + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if buf.len() < len {
        return Parsed::Incomplete(len);
    }
    let body = &buf[PROBE..len];
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let header = match command {
        0 => Header::Local,
        1 => {
            let (family, transport) = (buf[13] >> 4, buf[13] & 0x0F);
            match (family, transport) {
                (1, 1) if body.len() >= 12 => {
                    let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
                    Header::Proxied {
                        client: SocketAddr::new(ip(&body[0..4]), port(&body[8..10])),
                        front: SocketAddr::new(ip(&body[4..8]), port(&body[10..12])),
                    }
                }
                (2, 1) if body.len() >= 36 => {
                    let ip = |b: &[u8]| {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(&b[..16]);
                        IpAddr::V6(Ipv6Addr::from(a))
                    };
                    Header::Proxied {
                        client: SocketAddr::new(ip(&body[0..16]), port(&body[32..34])),
                        front: SocketAddr::new(ip(&body[16..32]), port(&body[34..36])),
                    }
                }
                // UNSPEC or UNIX: the proxy gives no usable address; treat as its own.
                (0 | 3, _) => Header::Local,
                (1 | 2, 1) => return Parsed::Invalid("PROXY v2: address block too short"),
                _ => return Parsed::Invalid("PROXY v2: not a TCP connection"),
            }
        }
        _ => return Parsed::Invalid("PROXY v2: unknown command"),
    };
    Parsed::Complete { len, header }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX { Parsed::Invalid("PROXY v1: no CRLF within 107 bytes") } else { Parsed::Incomplete(buf.len() + 1) };
    };
    let len = end + 2;
    if len > V1_MAX {
        return Parsed::Invalid("PROXY v1: longer than 107 bytes");
    }
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Invalid("PROXY v1: not ASCII");
    };
    let words: Vec<&str> = line.split(' ').collect();
    let header = match words.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header::Local,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let (Ok(src), Ok(dst), Ok(sport), Ok(dport)) = (src.parse::<IpAddr>(), dst.parse::<IpAddr>(), sport.parse::<u16>(), dport.parse::<u16>()) else {
                return Parsed::Invalid("PROXY v1: bad address or port");
            };
            if (*family == "TCP4") != src.is_ipv4() || src.is_ipv4() != dst.is_ipv4() {
                return Parsed::Invalid("PROXY v1: address family mismatch");
            }
            Header::Proxied { client: SocketAddr::new(src, sport), front: SocketAddr::new(dst, dport) }
        }
        _ => return Parsed::Invalid("PROXY v1: malformed line"),
    };
    Parsed::Complete { len, header }
}

/// The client an HTTP proxy names in X-Forwarded-For: the last entry, the one the trusted
/// proxy appended (earlier ones were written by whoever sent the request). No port.
pub fn forwarded_for(header: &str) -> Option<IpAddr> {
    let last = header.rsplit(',').next()?.trim();
    // "[2001:db8::1]" and "192.0.2.1:1234" forms are tolerated.
    let bare = last.strip_prefix('[').and_then(|l| l.split(']').next()).unwrap_or(last);
    bare.parse::<IpAddr>().ok().or_else(|| bare.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(0x20 | command);
        b.push(family);
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn version_2_tcp4_and_tcp6_name_client_and_front() {
        // 192.0.2.10:51000 -> 198.51.100.1:443, then a TLV (ignored) and the client's data.
        let mut body = vec![192, 0, 2, 10, 198, 51, 100, 1];
        body.extend_from_slice(&51000u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]); // PP2_TYPE_NOOP
        let mut buf = v2(1, 0x11, &body);
        let header_len = buf.len();
        buf.extend_from_slice(b"\x16\x03\x01 client hello");
        assert_eq!(
            parse(&buf),
            Parsed::Complete { len: header_len, header: Header::Proxied { client: "192.0.2.10:51000".parse().unwrap(), front: "198.51.100.1:443".parse().unwrap() } }
        );
        assert_eq!(parse(&buf[..20]), Parsed::Incomplete(header_len), "the length field tells how much to read");

        let mut body6 = Vec::new();
        body6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend_from_slice(&"2001:db8::ff".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend_from_slice(&40000u16.to_be_bytes());
        body6.extend_from_slice(&8443u16.to_be_bytes());
        assert_eq!(
            parse(&v2(1, 0x21, &body6)),
            Parsed::Complete { len: 16 + 36, header: Header::Proxied { client: "[2001:db8::1]:40000".parse().unwrap(), front: "[2001:db8::ff]:8443".parse().unwrap() } }
        );
    }

    #[test]
    fn version_2_local_and_faults() {
        assert_eq!(parse(&v2(0, 0x00, &[])), Parsed::Complete { len: 16, header: Header::Local });
        assert!(matches!(parse(&v2(1, 0x11, &[1, 2, 3])), Parsed::Invalid(_)));
        assert!(matches!(parse(&v2(1, 0x12, &[0; 12])), Parsed::Invalid(_)), "UDP is not a WebSocket");
        assert!(matches!(parse(&v2(7, 0x11, &[0; 12])), Parsed::Invalid(_)));
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        assert!(matches!(parse(&wrong_version), Parsed::Invalid(_)));
    }

    #[test]
    fn version_1_lines() {
        let line = b"PROXY TCP4 192.0.2.10 198.51.100.1 51000 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line),
            Parsed::Complete { len: 46, header: Header::Proxied { client: "192.0.2.10:51000".parse().unwrap(), front: "198.51.100.1:443".parse().unwrap() } }
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n"), Parsed::Complete { len: 15, header: Header::Local });
        assert_eq!(parse(b"PROXY TCP4 192.0.2.10 19"), Parsed::Incomplete(25));
        assert!(matches!(parse(b"PROXY TCP4 192.0.2.10 2001:db8::1 1 2\r\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"PROXY TCP4 192.0.2.10 198.51.100.1 99999 443\r\n"), Parsed::Invalid(_)));
        let endless: Vec<u8> = b"PROXY ".iter().copied().chain(std::iter::repeat_n(b'A', 120)).collect();
        assert!(matches!(parse(&endless), Parsed::Invalid(_)));
    }

    #[test]
    fn other_first_bytes_are_the_clients_own() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Absent);
        assert_eq!(parse(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdef"), Parsed::Absent);
        assert_eq!(parse(b"GET"), Parsed::Incomplete(PROBE));
    }

    #[test]
    fn forwarded_for_takes_the_last_entry() {
        assert_eq!(forwarded_for("203.0.113.9, 192.0.2.10"), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(forwarded_for("192.0.2.10"), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(forwarded_for("[2001:db8::1]"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(forwarded_for("192.0.2.10:1234"), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(forwarded_for("unknown"), None);
    }
}
