//! Who may talk to the gateway: address blocks (`ims.trusted_peers`) and web origins
//! (`web.allowed_origins`), parsed once here so the daemon only compares.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address or a CIDR block: `192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IpBlock {
    /// The network address (host bits cleared).
    addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    prefix: u8,
}

impl IpBlock {
    /// The block holding exactly `ip`.
    pub fn host(ip: IpAddr) -> IpBlock {
        let ip = ip.to_canonical();
        IpBlock { addr: ip, prefix: if ip.is_ipv4() { 32 } else { 128 } }
    }

    /// Whether `ip` is inside; an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask(u32::from(ip).into(), self.prefix, 32) == u32::from(net).into(),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(ip), self.prefix, 128) == u128::from(net),
            _ => false,
        }
    }
}

/// `v` with all but its first `prefix` of `width` bits cleared.
fn mask(v: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let keep = u32::from(width - prefix.min(width));
    (v >> keep) << keep
}

impl FromStr for IpBlock {
    type Err = String;

    fn from_str(s: &str) -> Result<IpBlock, String> {
        let s = s.trim();
        let (ip, prefix) = match s.split_once('/') {
            None => (s, None),
            Some((ip, p)) => (ip, Some(p)),
        };
        let ip: IpAddr = ip.parse().map_err(|_| format!("\"{s}\" is not an IP address or CIDR block (e.g. 192.0.2.0/24)"))?;
        let ip = ip.to_canonical();
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("\"{s}\": prefix length must be 0..={width}"))?,
        };
        let addr = match ip {
            IpAddr::V4(v) => IpAddr::V4((mask(u32::from(v).into(), prefix, 32) as u32).into()),
            IpAddr::V6(v) => IpAddr::V6(mask(u128::from(v), prefix, 128).into()),
        };
        if addr != ip {
            return Err(format!("\"{s}\" has host bits set; the block is {addr}/{prefix}"));
        }
        Ok(IpBlock { addr, prefix })
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// A web origin, `scheme://host[:port]` (RFC 6454 §6.2 serialisation), compared with the
/// `Origin` header of a WebSocket handshake. Scheme and host are kept in lower case and a
/// scheme's default port is dropped, as browsers serialise them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebOrigin(String);

impl WebOrigin {
    /// The origin as browsers send it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for WebOrigin {
    type Err = String;

    /// Also how the daemon reads an `Origin` header: the same normalisation on both sides.
    fn from_str(s: &str) -> Result<WebOrigin, String> {
        let bad = |why: &str| format!("\"{s}\" is not an origin (scheme://host[:port]): {why}");
        let t = s.trim();
        let (scheme, rest) = t.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(bad("the scheme must be http or https")),
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad("only a host and an optional port, no path"));
        }
        // `[v6]:port`, `[v6]`, `host:port` or `host`.
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, Some(p.parse::<u16>().map_err(|_| bad("bad port"))?)),
            _ => (rest, None),
        };
        let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        if !host_ok {
            return Err(bad("bad host"));
        }
        let host = host.to_ascii_lowercase();
        Ok(WebOrigin(match port {
            Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
            _ => format!("{scheme}://{host}"),
        }))
    }
}

impl fmt::Display for WebOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_print_and_match() {
        let b: IpBlock = "192.0.2.0/24".parse().unwrap();
        assert!(b.contains("192.0.2.77".parse().unwrap()));
        assert!(b.contains("::ffff:192.0.2.1".parse().unwrap()), "IPv4-mapped counts as IPv4");
        assert!(!b.contains("192.0.3.1".parse().unwrap()));
        assert!(!b.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(b.to_string(), "192.0.2.0/24");
        let h: IpBlock = "127.0.0.1".parse().unwrap();
        assert!(h.contains("127.0.0.1".parse().unwrap()) && !h.contains("127.0.0.2".parse().unwrap()));
        assert_eq!(h, IpBlock::host("127.0.0.1".parse().unwrap()));
        assert_eq!(h.to_string(), "127.0.0.1");
        let v6: IpBlock = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()) && !v6.contains("2001:db9::1".parse().unwrap()));
        let all: IpBlock = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        for (bad, why) in [("10.0.0.1/24", "host bits"), ("10.0.0.0/33", "0..=32"), ("core.example", "not an IP"), ("::/129", "0..=128")] {
            let e = bad.parse::<IpBlock>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn origins_normalise_as_browsers_send_them() {
        let o = |s: &str| s.parse::<WebOrigin>().map(|o| o.to_string());
        assert_eq!(o("HTTPS://WebRTC.Example.com:443").unwrap(), "https://webrtc.example.com");
        assert_eq!(o("http://example.com:80").unwrap(), "http://example.com");
        assert_eq!(o("https://example.com:8443").unwrap(), "https://example.com:8443");
        assert_eq!(o("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        assert_eq!(o("http://127.0.0.1").unwrap(), "http://127.0.0.1");
        for (bad, why) in [("example.com", "no scheme"), ("ftp://x", "http or https"), ("https://x/app", "no path"), ("https://x:99999", "bad port"), ("https://", "no path"), ("https://a b", "no path")] {
            let e = o(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
