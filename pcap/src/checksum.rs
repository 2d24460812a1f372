//! The Internet checksum (RFC 1071) and the UDP/TCP pseudo-header sums (RFC 768, RFC 9293
//! §3.1, RFC 8200 §8.1).

use std::net::IpAddr;

/// One's-complement sum of 16-bit big-endian words, carried in a wide accumulator and folded
/// once at the end (RFC 1071 §2, "deferred carries").
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sum(u64);

impl Sum {
    /// Adds `data` as 16-bit words. Only the last piece of a sum may have odd length: an odd
    /// byte is padded with a zero on the right (RFC 1071 §4.1).
    pub(crate) fn add(mut self, data: &[u8]) -> Self {
        let mut words = data.chunks_exact(2);
        for w in &mut words {
            self.0 += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            self.0 += u64::from(u16::from_be_bytes([*last, 0]));
        }
        self
    }

    pub(crate) fn add_u16(mut self, v: u16) -> Self {
        self.0 += u64::from(v);
        self
    }

    /// Adds the pseudo-header that UDP and TCP checksums cover: addresses, protocol, length.
    pub(crate) fn add_pseudo_header(
        self,
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        len: u32,
    ) -> Self {
        let sum = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.add(&s.octets()).add(&d.octets()),
            (s, d) => self.add(&ipv6_octets(s)).add(&ipv6_octets(d)),
        };
        // Length as 32 bits (IPv6) or 16 (IPv4): the same words for lengths below 65536.
        sum.add_u16((len >> 16) as u16)
            .add_u16(len as u16)
            .add_u16(protocol.into())
    }

    /// The checksum: the complement of the folded sum.
    pub(crate) fn finish(self) -> u16 {
        let mut s = self.0;
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        !(s as u16)
    }
}

fn ipv6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The Internet checksum of `data` (RFC 1071): the one's complement of the one's-complement
/// sum of its 16-bit words. Over a header that includes its own correct checksum, it is 0.
pub fn internet_checksum(data: &[u8]) -> u16 {
    Sum::default().add(data).finish()
}

/// The UDP or TCP checksum of `segment` (header and payload) between `src` and `dst`, with
/// the pseudo-header for `protocol` (17 = UDP, 6 = TCP). With the segment's checksum field
/// zeroed this is the value to send; over a segment as received it is 0 if the checksum holds.
/// Mixed address families are summed as IPv4-mapped IPv6 addresses.
pub fn transport_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    Sum::default()
        .add_pseudo_header(src, dst, protocol, len)
        .add(segment)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_numerical_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7. Words 0001 + f203 + f4f5 + f6f7 =
        // 0x2ddf0; folding the carry gives ddf0 + 2 = 0xddf2, and its complement is 0x220d.
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn odd_length_pads_with_zero() {
        // 0x0102 + 0x0300 = 0x0402 → !0x0402 = 0xfbfd.
        assert_eq!(internet_checksum(&[1, 2, 3]), 0xfbfd);
        assert_eq!(internet_checksum(&[]), 0xffff);
    }

    #[test]
    fn ipv4_header_by_hand() {
        // 45 00 0073 0000 4000 40 11 [0000] c0a80001 c0a800c7 (192.168.0.1 → 192.168.0.199):
        // 4500 + 0073 + 0000 + 4000 + 4011 + c0a8 + 0001 + c0a8 + 00c7 = 0x2479c;
        // 479c + 2 = 0x479e; !0x479e = 0xb861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(internet_checksum(&h), 0);
    }
}
