//! Building packets for the capture writers: raw IPv4/IPv6 with UDP or TCP, and Ethernet.
//!
//! Every checksum is filled in, so tools that validate them (Wireshark, tshark) show recorded
//! calls without warnings. Fixed choices: IPv4 identification 0 with Don't Fragment set (the
//! packets are never fragmented), TTL and hop limit 64, traffic class and flow label 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::checksum::{internet_checksum, Sum};
use crate::error::BuildError;
use crate::packet::{TcpFlags, TcpHeader};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const DEFAULT_TTL: u8 = 64;

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// 02:00:00:00:00:01, a locally administered unicast address for recorded traffic whose
    /// real link addresses are unknown.
    pub const LOCAL_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    /// 02:00:00:00:00:02, the other end.
    pub const LOCAL_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
}

/// Builds a raw IP packet carrying one UDP datagram, checksums filled in.
pub fn build_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, BuildError> {
    let mut out = Vec::with_capacity(48 + payload.len());
    write_udp(&mut out, src, dst, payload)?;
    Ok(out)
}

/// Appends a raw IP packet carrying one UDP datagram to `out` (for reusing one buffer).
pub fn write_udp(
    out: &mut Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Result<(), BuildError> {
    let segment_len = transport_len(src, dst, 8, payload)?;
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(segment_len as u16).to_be_bytes());
    let sum = Sum::default()
        .add_pseudo_header(src.ip(), dst.ip(), IPPROTO_UDP, segment_len)
        .add(&udp)
        .add(payload)
        .finish();
    // RFC 768: a computed 0 is sent as all ones; 0 on the wire means "no checksum".
    let sum = if sum == 0 { 0xFFFF } else { sum };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    write_ip_header(out, src.ip(), dst.ip(), IPPROTO_UDP, segment_len);
    out.extend_from_slice(&udp);
    out.extend_from_slice(payload);
    Ok(())
}

/// Builds a raw IP packet carrying one TCP segment (no options), checksums filled in.
pub fn build_tcp(
    src: SocketAddr,
    dst: SocketAddr,
    header: &TcpHeader,
    payload: &[u8],
) -> Result<Vec<u8>, BuildError> {
    let mut out = Vec::with_capacity(60 + payload.len());
    write_tcp(&mut out, src, dst, header, payload)?;
    Ok(out)
}

/// Appends a raw IP packet carrying one TCP segment to `out` (for reusing one buffer).
pub fn write_tcp(
    out: &mut Vec<u8>,
    src: SocketAddr,
    dst: SocketAddr,
    header: &TcpHeader,
    payload: &[u8],
) -> Result<(), BuildError> {
    let segment_len = transport_len(src, dst, 20, payload)?;
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&src.port().to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    tcp[4..8].copy_from_slice(&header.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&header.ack.to_be_bytes());
    // Data offset 5 words (no options), then the control bits.
    tcp[12] = 5 << 4;
    tcp[13] = header.flags.0;
    tcp[14..16].copy_from_slice(&header.window.to_be_bytes());
    let sum = Sum::default()
        .add_pseudo_header(src.ip(), dst.ip(), IPPROTO_TCP, segment_len)
        .add(&tcp)
        .add(payload)
        .finish();
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    write_ip_header(out, src.ip(), dst.ip(), IPPROTO_TCP, segment_len);
    out.extend_from_slice(&tcp);
    out.extend_from_slice(payload);
    Ok(())
}

/// One TCP connection as raw IP packets, the way a dissector wants to see it: the three-way
/// handshake first, then one segment per [`TcpConversation::segment`] with sequence and
/// acknowledgement numbers that follow on. For handing a stream protocol we speak (Diameter,
/// SIP over TCP) to Wireshark's dissectors from a test.
#[derive(Clone, Debug)]
pub struct TcpConversation {
    client: SocketAddr,
    server: SocketAddr,
    client_seq: u32,
    server_seq: u32,
}

impl TcpConversation {
    /// The conversation and its handshake's three packets (SYN, SYN-ACK, ACK).
    pub fn open(client: SocketAddr, server: SocketAddr) -> Result<(TcpConversation, Vec<Vec<u8>>), BuildError> {
        let (c, s) = (1000u32, 5000u32);
        let header = |seq, ack, flags| TcpHeader { seq, ack, flags, window: 65_535 };
        let handshake = vec![
            build_tcp(client, server, &header(c, 0, TcpFlags::SYN), &[])?,
            build_tcp(server, client, &header(s, c + 1, TcpFlags::SYN | TcpFlags::ACK), &[])?,
            build_tcp(client, server, &header(c + 1, s + 1, TcpFlags::ACK), &[])?,
        ];
        Ok((TcpConversation { client, server, client_seq: c + 1, server_seq: s + 1 }, handshake))
    }

    /// One segment carrying `payload` (PSH, ACK), from the client or from the server.
    pub fn segment(&mut self, from_client: bool, payload: &[u8]) -> Result<Vec<u8>, BuildError> {
        let flags = TcpFlags::PSH | TcpFlags::ACK;
        let len = payload.len() as u32;
        if from_client {
            let header = TcpHeader { seq: self.client_seq, ack: self.server_seq, flags, window: 65_535 };
            let packet = build_tcp(self.client, self.server, &header, payload)?;
            self.client_seq = self.client_seq.wrapping_add(len);
            Ok(packet)
        } else {
            let header = TcpHeader { seq: self.server_seq, ack: self.client_seq, flags, window: 65_535 };
            let packet = build_tcp(self.server, self.client, &header, payload)?;
            self.server_seq = self.server_seq.wrapping_add(len);
            Ok(packet)
        }
    }
}

/// Wraps a raw IPv4 or IPv6 packet in an Ethernet II header, for [`LinkType::ETHERNET`]
/// captures. The EtherType follows the IP version nibble.
///
/// [`LinkType::ETHERNET`]: crate::LinkType::ETHERNET
pub fn wrap_ethernet(ip: &[u8], src: MacAddr, dst: MacAddr) -> Result<Vec<u8>, BuildError> {
    let ethertype: u16 = match ip.first().map(|b| b >> 4) {
        Some(4) => 0x0800,
        Some(6) => 0x86DD,
        _ => return Err(BuildError::NotIp),
    };
    let mut frame = Vec::with_capacity(14 + ip.len());
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(ip);
    Ok(frame)
}

/// Checks the address families agree and the segment fits in one IP packet; returns the
/// transport segment length (header plus payload).
fn transport_len(
    src: SocketAddr,
    dst: SocketAddr,
    header_len: usize,
    payload: &[u8],
) -> Result<u32, BuildError> {
    // IPv4's total length covers its own 20-byte header; IPv6's payload length does not.
    let ip_overhead = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => 20,
        (SocketAddr::V6(_), SocketAddr::V6(_)) => 0,
        _ => return Err(BuildError::AddressFamilyMismatch),
    };
    let len = header_len + payload.len();
    if len + ip_overhead > usize::from(u16::MAX) {
        return Err(BuildError::PayloadTooLarge(payload.len()));
    }
    Ok(len as u32)
}

/// Appends the IPv4 or IPv6 header; the families were checked by [`transport_len`].
fn write_ip_header(out: &mut Vec<u8>, src: IpAddr, dst: IpAddr, protocol: u8, segment_len: u32) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => write_ipv4_header(out, s, d, protocol, segment_len),
        (s, d) => write_ipv6_header(out, v6(s), v6(d), protocol, segment_len),
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// RFC 791 §3.1, with the header checksum computed over the finished header.
fn write_ipv4_header(out: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, len: u32) {
    let mut h = [0u8; 20];
    h[0] = 0x45; // version 4, 5 words
    h[2..4].copy_from_slice(&((len + 20) as u16).to_be_bytes());
    h[6] = 0x40; // Don't Fragment
    h[8] = DEFAULT_TTL;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let sum = internet_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&h);
}

/// RFC 8200 §3, no extension headers.
fn write_ipv6_header(out: &mut Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr, protocol: u8, len: u32) {
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&[protocol, DEFAULT_TTL]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, transport_checksum, LinkType, Protocol, TcpFlags};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_udp_checksums_by_hand() {
        // 192.0.2.1:5060 → 192.0.2.2:5060, payload "ab" (0x61 0x62).
        let ip = build_udp(addr("192.0.2.1:5060"), addr("192.0.2.2:5060"), b"ab").unwrap();
        assert_eq!(ip.len(), 30);

        // IPv4 header words: 4500 001e 0000 4000 4011 [csum] c000 0201 c000 0202
        //   4500 + 001e = 451e; + 4000 = 851e; + 4011 = c52f; + c000 = 1852f;
        //   + 0201 = 18730; + c000 = 24730; + 0202 = 24932
        //   fold: 4932 + 2 = 4934; complement: b6cb.
        assert_eq!(
            ip[..10],
            [0x45, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11]
        );
        assert_eq!(ip[10..12], [0xb6, 0xcb]);

        // UDP: pseudo-header c000 0201 c000 0202 0011 000a, header 13c4 13c4 000a [csum], 6162
        //   c000 + 0201 = c201; + c000 = 18201; + 0202 = 18403; + 0011 = 18414; + 000a = 1841e
        //   + 13c4 = 197e2; + 13c4 = 1aba6; + 000a = 1abb0; + 6162 = 20d12
        //   fold: 0d12 + 2 = 0d14; complement: f2eb.
        assert_eq!(ip[20..26], [0x13, 0xc4, 0x13, 0xc4, 0x00, 0x0a]);
        assert_eq!(ip[26..28], [0xf2, 0xeb]);
        assert_eq!(ip[28..], *b"ab");

        // And the verifying direction: both sum to zero over data that includes them.
        assert_eq!(internet_checksum(&ip[..20]), 0);
        let (s, d) = (addr("192.0.2.1:0").ip(), addr("192.0.2.2:0").ip());
        assert_eq!(transport_checksum(s, d, 17, &ip[20..]), 0);
    }

    #[test]
    fn ipv6_udp_and_tcp_checksums_verify() {
        let (src, dst) = (addr("[2001:db8::a]:3478"), addr("[fe80::1]:40000"));
        for payload in [&b""[..], b"odd", &[0xFF; 1201]] {
            let ip = build_udp(src, dst, payload).unwrap();
            assert_eq!(ip.len(), 48 + payload.len());
            assert_ne!(ip[46..48], [0, 0], "IPv6 UDP checksum is mandatory");
            assert_eq!(transport_checksum(src.ip(), dst.ip(), 17, &ip[40..]), 0);

            let h = TcpHeader {
                seq: 7,
                ack: 9,
                flags: TcpFlags::SYN,
                window: 65535,
            };
            let ip = build_tcp(src, dst, &h, payload).unwrap();
            assert_eq!(transport_checksum(src.ip(), dst.ip(), 6, &ip[40..]), 0);
            let p = decode(LinkType::RAW, &ip).unwrap();
            assert_eq!((p.protocol, p.payload), (Protocol::Tcp(h), payload));
        }
        let h = TcpHeader::default();
        let ip = build_tcp(addr("10.1.1.1:1"), addr("10.1.1.2:2"), &h, b"xyz").unwrap();
        assert_eq!(internet_checksum(&ip[..20]), 0);
        assert_eq!(
            transport_checksum(
                addr("10.1.1.1:1").ip(),
                addr("10.1.1.2:2").ip(),
                6,
                &ip[20..]
            ),
            0
        );
    }

    #[test]
    fn caller_errors_are_reported() {
        let (v4, v6) = (addr("10.0.0.1:1"), addr("[::1]:1"));
        assert_eq!(
            build_udp(v4, v6, b""),
            Err(BuildError::AddressFamilyMismatch)
        );
        assert_eq!(
            build_tcp(v6, v4, &TcpHeader::default(), b""),
            Err(BuildError::AddressFamilyMismatch)
        );
        let big = vec![0; 65_528];
        assert_eq!(
            build_udp(v4, v4, &big[..65_508]),
            Err(BuildError::PayloadTooLarge(65_508))
        );
        assert_eq!(
            build_udp(v6, v6, &big),
            Err(BuildError::PayloadTooLarge(65_528))
        );
        assert!(build_udp(v4, v4, &big[..65_507]).is_ok());
        assert!(build_udp(v6, v6, &big[..65_527]).is_ok());
        assert_eq!(
            wrap_ethernet(b"\x50", MacAddr::LOCAL_A, MacAddr::LOCAL_B),
            Err(BuildError::NotIp)
        );
        assert_eq!(
            wrap_ethernet(b"", MacAddr::LOCAL_A, MacAddr::LOCAL_B),
            Err(BuildError::NotIp)
        );
    }

    #[test]
    fn write_appends_to_a_reused_buffer() {
        let mut buf = b"keep".to_vec();
        write_udp(&mut buf, addr("10.0.0.1:1"), addr("10.0.0.2:2"), b"x").unwrap();
        assert_eq!(&buf[..4], b"keep");
        assert_eq!(decode(LinkType::RAW, &buf[4..]).unwrap().payload, b"x");
    }
}
