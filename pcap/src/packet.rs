//! Decoding captured frames: link layer → IPv4/IPv6 → UDP/TCP.
//!
//! Lengths in headers are honoured where they shorten the data (Ethernet pads short frames,
//! some links append a frame check sequence) and reported where they exceed it
//! ([`Packet::truncated`], usually a capture snapshot length). Payloads are slices of the
//! input: decoding never copies or allocates.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::BitOr;

use crate::bytes::{Bytes, Endian};
use crate::error::{DecodeError, Layer};
use crate::LinkType;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
/// 802.1Q customer tag, 802.1ad service tag, and the pre-standard QinQ tag.
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88A8, 0x9100];

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A decoded IP packet with its transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Source address and port (port 0 when no UDP/TCP header was decoded).
    pub src: SocketAddr,
    /// Destination address and port (port 0 when no UDP/TCP header was decoded).
    pub dst: SocketAddr,
    /// The transport protocol and its header fields.
    pub protocol: Protocol,
    /// The transport payload; for [`Protocol::Other`], everything after the IP headers.
    pub payload: &'a [u8],
    /// VLAN id of the outermost 802.1Q/802.1ad tag, if the frame had one.
    pub vlan: Option<u16>,
    /// IPv4 TTL or IPv6 hop limit.
    pub hop_limit: u8,
    /// Set when the packet is an IP fragment. Fragments are not reassembled: the first one
    /// (offset 0) has its transport header decoded and a partial payload, later ones come back
    /// as [`Protocol::Other`] with their raw bytes.
    pub fragment: Option<Fragment>,
    /// The IP or UDP length field claims more bytes than were captured.
    pub truncated: bool,
}

/// The transport layer of a [`Packet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// UDP (RFC 768).
    Udp,
    /// TCP (RFC 9293), with the fields stream reassembly needs.
    Tcp(TcpHeader),
    /// Any other IP protocol number, or a non-first fragment of any protocol.
    Other(u8),
}

/// The TCP header fields Estuary uses (options are skipped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpHeader {
    /// Sequence number of the first payload byte (of the SYN, if set).
    pub seq: u32,
    /// Acknowledgment number (meaningful with [`TcpFlags::ACK`]).
    pub ack: u32,
    /// Control bits.
    pub flags: TcpFlags,
    /// Receive window, unscaled.
    pub window: u16,
}

/// TCP control bits (RFC 9293 §3.1), the low eight bits of the flags field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion window reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for TcpFlags {
    type Output = TcpFlags;
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

/// IP fragmentation fields of a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Identification (16 bits in IPv4, 32 in IPv6).
    pub id: u32,
    /// Offset of this fragment's data in the original payload, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

/// Decodes one captured frame of `linktype` down to its transport payload.
pub fn decode(linktype: LinkType, frame: &[u8]) -> Result<Packet<'_>, DecodeError> {
    let (network, vlan) = match linktype {
        LinkType::ETHERNET => ethernet(frame)?,
        LinkType::LINUX_SLL => linux_sll(frame)?,
        LinkType::LINUX_SLL2 => linux_sll2(frame)?,
        LinkType::NULL | LinkType::LOOP => loopback(frame, linktype)?,
        LinkType::RAW | LinkType::IPV4 | LinkType::IPV6 => (raw_ip(frame)?, None),
        other => {
            return Err(DecodeError::Unsupported {
                layer: Layer::Link,
                value: other.0.into(),
            })
        }
    };
    let mut packet = match network {
        Network::Ipv4(ip) => ipv4(ip)?,
        Network::Ipv6(ip) => ipv6(ip)?,
    };
    packet.vlan = vlan;
    Ok(packet)
}

/// Which network header a link layer announced, and where it starts.
enum Network<'a> {
    Ipv4(&'a [u8]),
    Ipv6(&'a [u8]),
}

fn link_truncated() -> DecodeError {
    DecodeError::Truncated { layer: Layer::Link }
}

/// Ethernet II: destination, source, EtherType.
fn ethernet(frame: &[u8]) -> Result<(Network<'_>, Option<u16>), DecodeError> {
    let mut b = Bytes::new(frame);
    b.skip(12).ok_or_else(link_truncated)?;
    let ethertype = b.be16().ok_or_else(link_truncated)?;
    after_ethertype(ethertype, b)
}

/// Linux cooked v1: packet type, ARPHRD type, address length, 8 address bytes, protocol.
fn linux_sll(frame: &[u8]) -> Result<(Network<'_>, Option<u16>), DecodeError> {
    let mut b = Bytes::new(frame);
    b.skip(14).ok_or_else(link_truncated)?;
    let ethertype = b.be16().ok_or_else(link_truncated)?;
    after_ethertype(ethertype, b)
}

/// Linux cooked v2: protocol first, then reserved, interface index, ARPHRD type, packet type,
/// address length and 8 address bytes.
fn linux_sll2(frame: &[u8]) -> Result<(Network<'_>, Option<u16>), DecodeError> {
    let mut b = Bytes::new(frame);
    let ethertype = b.be16().ok_or_else(link_truncated)?;
    b.skip(18).ok_or_else(link_truncated)?;
    after_ethertype(ethertype, b)
}

/// Follows VLAN tags from an EtherType to the network header. The outermost tag's id is kept.
fn after_ethertype(
    mut ethertype: u16,
    mut b: Bytes<'_>,
) -> Result<(Network<'_>, Option<u16>), DecodeError> {
    let mut vlan = None;
    while ETHERTYPE_VLAN.contains(&ethertype) {
        let tci = b.be16().ok_or_else(link_truncated)?;
        vlan.get_or_insert(tci & 0x0FFF);
        ethertype = b.be16().ok_or_else(link_truncated)?;
    }
    let network = match ethertype {
        ETHERTYPE_IPV4 => Network::Ipv4(b.rest()),
        ETHERTYPE_IPV6 => Network::Ipv6(b.rest()),
        // Below 0x0600 the field is an 802.3 length (LLC follows), not an EtherType.
        other => {
            return Err(DecodeError::Unsupported {
                layer: Layer::Link,
                value: other.into(),
            })
        }
    };
    Ok((network, vlan))
}

/// BSD loopback: a 4-byte address family. `NULL` stores it in the capturing host's byte
/// order (unknown to us), `LOOP` in network order. Families are small numbers, so a value
/// that only fits when read the other way round tells the order.
fn loopback(frame: &[u8], linktype: LinkType) -> Result<(Network<'_>, Option<u16>), DecodeError> {
    let mut b = Bytes::new(frame);
    let word = b.array::<4>().ok_or_else(link_truncated)?;
    let family = match linktype {
        LinkType::LOOP => Endian::Big.u32(word),
        _ => match Endian::Little.u32(word) {
            small @ 0..=0xFFFF => small,
            _ => Endian::Big.u32(word),
        },
    };
    // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 23 (Windows), 24 (NetBSD, OpenBSD),
    // 28 (FreeBSD), 30 (macOS).
    match family {
        2 => Ok((Network::Ipv4(b.rest()), None)),
        10 | 23 | 24 | 28 | 30 => Ok((Network::Ipv6(b.rest()), None)),
        other => Err(DecodeError::Unsupported {
            layer: Layer::Link,
            value: other,
        }),
    }
}

/// Raw IP: the version nibble tells IPv4 from IPv6.
fn raw_ip(frame: &[u8]) -> Result<Network<'_>, DecodeError> {
    match frame.first().map(|b| b >> 4) {
        Some(4) => Ok(Network::Ipv4(frame)),
        Some(6) => Ok(Network::Ipv6(frame)),
        Some(v) => Err(DecodeError::Unsupported {
            layer: Layer::Link,
            value: v.into(),
        }),
        None => Err(link_truncated()),
    }
}

/// IPv4 (RFC 791 §3.1).
fn ipv4(ip: &[u8]) -> Result<Packet<'_>, DecodeError> {
    const L: Layer = Layer::Ipv4;
    let truncated = || DecodeError::Truncated { layer: L };
    let mut b = Bytes::new(ip);
    let version_ihl = b.u8().ok_or_else(truncated)?;
    if version_ihl >> 4 != 4 {
        return Err(DecodeError::Malformed {
            layer: L,
            reason: "version is not 4",
        });
    }
    let header_len = usize::from(version_ihl & 0x0F) * 4;
    if header_len < 20 {
        return Err(DecodeError::Malformed {
            layer: L,
            reason: "header length below 20 bytes",
        });
    }
    let _tos = b.u8().ok_or_else(truncated)?;
    let total_len = usize::from(b.be16().ok_or_else(truncated)?);
    let id = b.be16().ok_or_else(truncated)?;
    let flags_offset = b.be16().ok_or_else(truncated)?;
    let ttl = b.u8().ok_or_else(truncated)?;
    let protocol = b.u8().ok_or_else(truncated)?;
    let _checksum = b.be16().ok_or_else(truncated)?;
    let src = Ipv4Addr::from(b.array::<4>().ok_or_else(truncated)?);
    let dst = Ipv4Addr::from(b.array::<4>().ok_or_else(truncated)?);
    b.skip(header_len - 20).ok_or_else(truncated)?;

    // Total length 0 is what captures of TCP segmentation offload show: take what is there.
    let (end, truncated_ip) = if total_len == 0 {
        (ip.len(), false)
    } else if total_len < header_len {
        return Err(DecodeError::Malformed {
            layer: L,
            reason: "total length below header length",
        });
    } else {
        (total_len.min(ip.len()), total_len > ip.len())
    };
    let body = ip.get(header_len..end).unwrap_or_default();

    let more = flags_offset & 0x2000 != 0;
    let offset = (flags_offset & 0x1FFF) << 3;
    let fragment = (more || offset != 0).then_some(Fragment {
        id: id.into(),
        offset,
        more,
    });
    let ip = IpHeader {
        src: src.into(),
        dst: dst.into(),
        protocol,
        hop_limit: ttl,
        fragment,
        truncated: truncated_ip,
    };
    transport(ip, body)
}

/// IPv6 (RFC 8200 §3), skipping extension headers (§4).
fn ipv6(ip: &[u8]) -> Result<Packet<'_>, DecodeError> {
    const L: Layer = Layer::Ipv6;
    let truncated = || DecodeError::Truncated { layer: L };
    let mut b = Bytes::new(ip);
    let first = b.be32().ok_or_else(truncated)?;
    if first >> 28 != 6 {
        return Err(DecodeError::Malformed {
            layer: L,
            reason: "version is not 6",
        });
    }
    let payload_len = usize::from(b.be16().ok_or_else(truncated)?);
    let mut next = b.u8().ok_or_else(truncated)?;
    let hop_limit = b.u8().ok_or_else(truncated)?;
    let src = Ipv6Addr::from(b.array::<16>().ok_or_else(truncated)?);
    let dst = Ipv6Addr::from(b.array::<16>().ok_or_else(truncated)?);

    // Payload length 0 means a jumbogram (RFC 2675) or an offloaded capture: take the rest.
    let available = b.remaining();
    let (len, truncated_ip) = match payload_len {
        0 => (available, false),
        n => (n.min(available), n > available),
    };
    let mut b = Bytes::new(b.take(len).unwrap_or_default());

    let mut fragment = None;
    loop {
        match next {
            // Hop-by-Hop, Routing, Destination Options, Mobility, HIP, Shim6: length in 8-octet
            // units, not counting the first 8.
            0 | 43 | 60 | 135 | 139 | 140 => {
                next = b.u8().ok_or_else(truncated)?;
                let units = usize::from(b.u8().ok_or_else(truncated)?);
                b.skip(units * 8 + 6).ok_or_else(truncated)?;
            }
            // Authentication Header (RFC 4302 §2.2): length in 4-octet units, minus 2.
            51 => {
                next = b.u8().ok_or_else(truncated)?;
                let units = usize::from(b.u8().ok_or_else(truncated)?);
                b.skip(units * 4 + 6).ok_or_else(truncated)?;
            }
            // Fragment header (§4.5): fixed 8 bytes.
            44 => {
                next = b.u8().ok_or_else(truncated)?;
                let _reserved = b.u8().ok_or_else(truncated)?;
                let offset_flags = b.be16().ok_or_else(truncated)?;
                let id = b.be32().ok_or_else(truncated)?;
                let offset = offset_flags & 0xFFF8;
                let more = offset_flags & 1 != 0;
                fragment = Some(Fragment { id, offset, more });
                if offset != 0 {
                    // Later fragments hold no further headers.
                    break;
                }
            }
            _ => break,
        }
    }
    let ip = IpHeader {
        src: src.into(),
        dst: dst.into(),
        protocol: next,
        hop_limit,
        fragment,
        truncated: truncated_ip,
    };
    transport(ip, b.rest())
}

/// The network-layer facts the transport decoder needs.
struct IpHeader {
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    protocol: u8,
    hop_limit: u8,
    fragment: Option<Fragment>,
    truncated: bool,
}

impl IpHeader {
    fn packet<'a>(&self, protocol: Protocol, ports: (u16, u16), payload: &'a [u8]) -> Packet<'a> {
        Packet {
            src: socket(self.src, ports.0),
            dst: socket(self.dst, ports.1),
            protocol,
            payload,
            vlan: None,
            hop_limit: self.hop_limit,
            fragment: self.fragment,
            truncated: self.truncated,
        }
    }
}

fn socket(ip: std::net::IpAddr, port: u16) -> SocketAddr {
    match ip {
        std::net::IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, port)),
        std::net::IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, port, 0, 0)),
    }
}

/// UDP (RFC 768) or TCP (RFC 9293 §3.1) on top of an IP payload.
fn transport(mut ip: IpHeader, body: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if ip.fragment.is_some_and(|f| f.offset != 0) {
        return Ok(ip.packet(Protocol::Other(ip.protocol), (0, 0), body));
    }
    let first_fragment = ip.fragment.is_some();
    let mut b = Bytes::new(body);
    match ip.protocol {
        IPPROTO_UDP => {
            const L: Layer = Layer::Udp;
            let truncated = || DecodeError::Truncated { layer: L };
            let src = b.be16().ok_or_else(truncated)?;
            let dst = b.be16().ok_or_else(truncated)?;
            let len = usize::from(b.be16().ok_or_else(truncated)?);
            let _checksum = b.be16().ok_or_else(truncated)?;
            let data = b.rest();
            // Length 0 is only legal for IPv6 jumbograms (RFC 2675 §4): take the rest.
            let payload = match len {
                0 => data,
                1..=7 => {
                    return Err(DecodeError::Malformed {
                        layer: L,
                        reason: "length below 8",
                    })
                }
                n => {
                    let n = n - 8;
                    if n > data.len() && !first_fragment {
                        ip.truncated = true;
                    }
                    data.get(..n).unwrap_or(data)
                }
            };
            Ok(ip.packet(Protocol::Udp, (src, dst), payload))
        }
        IPPROTO_TCP => {
            const L: Layer = Layer::Tcp;
            let truncated = || DecodeError::Truncated { layer: L };
            let src = b.be16().ok_or_else(truncated)?;
            let dst = b.be16().ok_or_else(truncated)?;
            let seq = b.be32().ok_or_else(truncated)?;
            let ack = b.be32().ok_or_else(truncated)?;
            let offset_flags = b.be16().ok_or_else(truncated)?;
            let window = b.be16().ok_or_else(truncated)?;
            let _checksum_urgent = b.be32().ok_or_else(truncated)?;
            let header_len = usize::from(offset_flags >> 12) * 4;
            if header_len < 20 {
                return Err(DecodeError::Malformed {
                    layer: L,
                    reason: "data offset below 5",
                });
            }
            b.skip(header_len - 20).ok_or_else(truncated)?;
            let header = TcpHeader {
                seq,
                ack,
                flags: TcpFlags(offset_flags as u8),
                window,
            };
            Ok(ip.packet(Protocol::Tcp(header), (src, dst), b.rest()))
        }
        other => Ok(ip.packet(Protocol::Other(other), (0, 0), body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_tcp, build_udp, wrap_ethernet, MacAddr};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn udp_over_each_link_type() {
        let ip = build_udp(addr("10.0.0.1:5060"), addr("10.0.0.2:5080"), b"INVITE").unwrap();
        let check = |linktype, frame: &[u8], vlan| {
            let p = decode(linktype, frame).unwrap();
            assert_eq!(
                (p.src, p.dst),
                (addr("10.0.0.1:5060"), addr("10.0.0.2:5080"))
            );
            assert_eq!(
                (p.protocol, p.payload, p.vlan),
                (Protocol::Udp, &b"INVITE"[..], vlan)
            );
            assert!(!p.truncated && p.fragment.is_none());
        };
        check(LinkType::RAW, &ip, None);
        check(LinkType::IPV4, &ip, None);

        let eth = wrap_ethernet(&ip, MacAddr::LOCAL_A, MacAddr::LOCAL_B).unwrap();
        check(LinkType::ETHERNET, &eth, None);
        // Ethernet padding and a frame check sequence after the IP packet are ignored.
        let mut padded = eth.clone();
        padded.extend([0; 10]);
        check(LinkType::ETHERNET, &padded, None);

        // 802.1Q tag (VLAN 42, priority 5) inside an 802.1ad tag (VLAN 7).
        let mut qinq = eth[..12].to_vec();
        qinq.extend([0x88, 0xA8, 0x00, 0x07, 0x81, 0x00, 0xA0, 0x2A, 0x08, 0x00]);
        qinq.extend(&ip);
        check(LinkType::ETHERNET, &qinq, Some(7));

        // Linux SLL: outgoing (4), ARPHRD_ETHER (1), 6-byte address padded to 8, IPv4.
        let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        sll.extend(&ip);
        check(LinkType::LINUX_SLL, &sll, None);

        // Linux SLL2: protocol, reserved, ifindex 3, ARPHRD_ETHER, outgoing, 6, address.
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0,
        ];
        sll2.extend(&ip);
        check(LinkType::LINUX_SLL2, &sll2, None);

        // BSD loopback, AF_INET = 2 in little- and big-endian host order, and LOOP.
        for header in [[2, 0, 0, 0], [0, 0, 0, 2]] {
            let mut null = header.to_vec();
            null.extend(&ip);
            check(LinkType::NULL, &null, None);
        }
        let mut lo = vec![0, 0, 0, 2];
        lo.extend(&ip);
        check(LinkType::LOOP, &lo, None);
    }

    #[test]
    fn ipv6_with_extension_headers_and_tcp() {
        let header = TcpHeader {
            seq: 1000,
            ack: 2000,
            flags: TcpFlags::PSH | TcpFlags::ACK,
            window: 512,
        };
        let ip = build_tcp(
            addr("[2001:db8::1]:443"),
            addr("[2001:db8::2]:50000"),
            &header,
            b"GET",
        )
        .unwrap();
        let p = decode(LinkType::RAW, &ip).unwrap();
        assert_eq!(p.protocol, Protocol::Tcp(header));
        assert_eq!((p.payload, p.hop_limit), (&b"GET"[..], 64));
        assert!(header.flags.contains(TcpFlags::ACK) && !header.flags.contains(TcpFlags::SYN));

        // Insert a Hop-by-Hop (8 bytes) and a Destination Options (16 bytes) header.
        let mut ext = ip[..40].to_vec();
        ext[6] = 0; // next header: Hop-by-Hop
        ext.extend([60, 0, 1, 4, 0, 0, 0, 0]); // → Destination Options, PadN
        ext.extend([6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // → TCP
        ext.extend(&ip[40..]);
        let plen = (ext.len() - 40) as u16;
        ext[4..6].copy_from_slice(&plen.to_be_bytes());
        let p = decode(LinkType::RAW, &ext).unwrap();
        assert_eq!(
            (p.protocol, p.payload),
            (Protocol::Tcp(header), &b"GET"[..])
        );
        assert_eq!(p.src, addr("[2001:db8::1]:443"));
    }

    #[test]
    fn ipv4_fragments_are_flagged() {
        let mut ip = build_udp(addr("10.0.0.1:1"), addr("10.0.0.2:2"), &[7; 100]).unwrap();
        // First fragment: MF set, offset 0; the UDP header decodes.
        ip[6] = 0x20;
        let p = decode(LinkType::RAW, &ip).unwrap();
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(
            p.fragment,
            Some(Fragment {
                id: 0,
                offset: 0,
                more: true
            })
        );
        // Later fragment: offset 185 × 8 = 1480; no transport header.
        ip[6..8].copy_from_slice(&185u16.to_be_bytes());
        let p = decode(LinkType::RAW, &ip).unwrap();
        assert_eq!(p.protocol, Protocol::Other(17));
        assert_eq!(
            p.fragment,
            Some(Fragment {
                id: 0,
                offset: 1480,
                more: false
            })
        );
        assert_eq!((p.src.port(), p.payload.len()), (0, 108));
    }

    #[test]
    fn snaplen_cut_is_flagged_not_rejected() {
        let ip = build_udp(addr("10.0.0.1:1"), addr("10.0.0.2:2"), &[7; 100]).unwrap();
        let p = decode(LinkType::RAW, &ip[..60]).unwrap();
        assert!(p.truncated);
        assert_eq!(p.payload.len(), 32);
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let ip = build_udp(addr("10.0.0.1:1"), addr("10.0.0.2:2"), b"x").unwrap();
        let mut bad = ip.clone();
        bad[0] = 0x44; // IHL 4
        assert!(matches!(
            decode(LinkType::RAW, &bad),
            Err(DecodeError::Malformed {
                layer: Layer::Ipv4,
                ..
            })
        ));
        assert_eq!(
            decode(LinkType::RAW, &ip[..10]),
            Err(DecodeError::Truncated { layer: Layer::Ipv4 })
        );
        assert_eq!(
            decode(LinkType::RAW, &ip[..24]),
            Err(DecodeError::Truncated { layer: Layer::Udp })
        );
        assert_eq!(
            decode(LinkType::RAW, &[]),
            Err(DecodeError::Truncated { layer: Layer::Link })
        );
        assert_eq!(
            decode(LinkType(147), &ip),
            Err(DecodeError::Unsupported {
                layer: Layer::Link,
                value: 147
            })
        );
        let mut arp = vec![0; 12];
        arp.extend([0x08, 0x06]);
        assert_eq!(
            decode(LinkType::ETHERNET, &arp),
            Err(DecodeError::Unsupported {
                layer: Layer::Link,
                value: 0x0806
            })
        );
        let mut udp_len = ip.clone();
        udp_len[24..26].copy_from_slice(&3u16.to_be_bytes());
        assert!(matches!(
            decode(LinkType::RAW, &udp_len),
            Err(DecodeError::Malformed {
                layer: Layer::Udp,
                ..
            })
        ));
    }
}
