//! RFC 7983 demultiplexing of one UDP 5-tuple carrying STUN, DTLS, RTP and RTCP, with the RTP/RTCP
//! split of RFC 5761 §4.

/// What a datagram on a multiplexed port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// STUN (RFC 7983 §7: first byte 0..=3).
    Stun,
    /// DTLS (first byte 20..=63).
    Dtls,
    /// RTP or SRTP (first byte 128..=191, second byte's payload type outside 64..=95).
    Rtp,
    /// RTCP or SRTCP (first byte 128..=191, payload-type bits 64..=95, i.e. RTCP packet types
    /// 192..=223 with the marker bit set).
    Rtcp,
    /// Anything else: ZRTP (16..=19), TURN channels (64..=79), empty datagrams, and the ranges
    /// RFC 7983 leaves unassigned. Drop it.
    Unknown,
}

/// Classifies a datagram by its first byte (RFC 7983 §7) and, for RTP/RTCP, its second.
///
/// RFC 5761 §4: when RTP and RTCP share a port, RTP payload types 64..=95 are not used, so the
/// seven bits after the marker tell them apart: RTCP's packet types SR=200..XR=207 read as
/// payload types 72..=79. This only routes the datagram; the parsers validate it.
pub fn classify(buf: &[u8]) -> PacketKind {
    let Some(&first) = buf.first() else {
        return PacketKind::Unknown;
    };
    match first {
        0..=3 => PacketKind::Stun,
        20..=63 => PacketKind::Dtls,
        128..=191 => match buf.get(1) {
            Some(b) if (64..=95).contains(&(b & 0x7f)) => PacketKind::Rtcp,
            Some(_) => PacketKind::Rtp,
            None => PacketKind::Unknown,
        },
        _ => PacketKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_ranges() {
        // A STUN binding request starts 0x00 0x01; a DTLS ClientHello record starts 0x16 = 22.
        assert_eq!(classify(&[0x00, 0x01, 0, 0]), PacketKind::Stun);
        assert_eq!(classify(&[3]), PacketKind::Stun);
        assert_eq!(classify(&[22, 0xfe, 0xfd]), PacketKind::Dtls);
        assert_eq!(classify(&[20]), PacketKind::Dtls);
        assert_eq!(classify(&[63]), PacketKind::Dtls);
        assert_eq!(classify(&[4]), PacketKind::Unknown);
        assert_eq!(classify(&[16]), PacketKind::Unknown); // ZRTP
        assert_eq!(classify(&[64, 0]), PacketKind::Unknown); // TURN channel
        assert_eq!(classify(&[192, 0]), PacketKind::Unknown);
        assert_eq!(classify(&[]), PacketKind::Unknown);
        assert_eq!(classify(&[0x80]), PacketKind::Unknown);
    }

    #[test]
    fn rtp_versus_rtcp() {
        assert_eq!(classify(&[0x80, 111]), PacketKind::Rtp); // Opus
        assert_eq!(classify(&[0x80, 0x80 | 111]), PacketKind::Rtp); // Opus, marker set
        assert_eq!(classify(&[0x80, 0]), PacketKind::Rtp); // PCMU
        assert_eq!(classify(&[0x80, 63]), PacketKind::Rtp);
        assert_eq!(classify(&[0x80, 96]), PacketKind::Rtp);
        for pt in 200u8..=207 {
            assert_eq!(classify(&[0x81, pt]), PacketKind::Rtcp, "pt {pt}");
        }
        assert_eq!(classify(&[0x80, 192]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x80, 223]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x80, 224]), PacketKind::Rtp);
        assert_eq!(classify(&[0xbf, 64]), PacketKind::Rtcp);
    }
}
