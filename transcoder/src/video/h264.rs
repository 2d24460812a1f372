//! H.264 over RTP (RFC 6184), packetization modes 0 and 1: a packetizer, a depacketizer and
//! Annex B helpers.
//!
//! Encoders write an access unit (one picture) as an Annex B byte stream: NAL units behind
//! start codes `00 00 01` or `00 00 00 01`. RTP carries the NAL units without start codes,
//! each payload starting with a one-byte header `|F|NRI|Type|` (§5.3):
//!
//! - Type 1–23, a **single NAL unit packet** (§5.6): the NAL unit itself.
//! - Type 24, **STAP-A** (§5.7.1): several small NAL units of one access unit, each behind
//!   a 16-bit size. F is the OR and NRI the maximum of the units' own.
//!
//!   ```text
//!   |F|NRI| 24 | size 1 (16) | NAL unit 1 | size 2 (16) | NAL unit 2 | ...
//!   ```
//!
//! - Type 28, **FU-A** (§5.8): one fragment of a NAL unit too large for a packet. The FU
//!   indicator keeps the NAL unit's F and NRI; the FU header carries Start, End, a reserved
//!   bit and the NAL unit's type. The NAL unit's own header byte is not sent: it is rebuilt
//!   from the two.
//!
//!   ```text
//!   FU indicator |F|NRI| 28 |   FU header |S|E|R| Type |   fragment ...
//!   ```
//!
//! Mode 0 (single NAL unit) allows only the first kind; mode 1 (non-interleaved) all three.
//! STAP-B, MTAP16, MTAP24 and FU-B (types 25, 26, 27, 29) belong to interleaved mode and are
//! refused. The RTP marker is set on the last packet of an access unit (§5.1).

use super::{
    split_evenly, Depacketized, FrameGate, PacketizeError, PayloadError, RtpPayload, SeqStep,
    SeqTracker, VideoFrame, MAX_FRAME_LEN,
};

/// NAL unit type of a non-IDR coded slice.
pub const NAL_SLICE: u8 = 1;
/// NAL unit type of an IDR slice: a decoder can start at its access unit.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;
/// RTP packet type of a STAP-A (§5.7.1).
pub const STAP_A: u8 = 24;
/// RTP packet type of an FU-A (§5.8).
pub const FU_A: u8 = 28;

/// The STAP-A header byte.
const STAP_A_HEADER_LEN: usize = 1;
/// The 16-bit size before each NAL unit in a STAP-A.
const STAP_A_SIZE_LEN: usize = 2;
/// FU indicator and FU header.
const FU_A_HEADER_LEN: usize = 2;
/// The smallest useful `max_payload`: an FU-A with one byte of NAL unit.
const MIN_MAX_PAYLOAD: usize = FU_A_HEADER_LEN + 1;
/// The start code the depacketizer writes before each NAL unit.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The SDP `packetization-mode` (RFC 6184 §8.1); the discriminant is the fmtp value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketizationMode {
    /// Mode 0: one NAL unit per packet, no aggregation or fragmentation. Each NAL unit must
    /// fit in a packet, so the encoder must limit its slice size.
    SingleNal = 0,
    /// Mode 1: single NAL unit packets, STAP-A and FU-A, in decoding order.
    NonInterleaved = 1,
}

/// The NAL units of an Annex B byte stream, without start codes, in order. Bytes before the
/// first start code, empty NAL units and zero bytes ending a NAL unit (trailing_zero_8bits,
/// or the first byte of a 4-byte start code) are skipped. No start code, no NAL units.
pub fn nal_units(annex_b: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = after_start_code(annex_b).unwrap_or_default();
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let nal = match find_start_code(rest) {
            Some(at) => {
                let nal = rest.get(..at).unwrap_or_default();
                rest = after_start_code(rest).unwrap_or_default();
                nal
            }
            None => std::mem::take(&mut rest),
        };
        // A NAL unit never ends in a zero byte (its RBSP ends in a stop bit; cabac_zero_words
        // are escaped to 00 00 03), so zeros here belong to the stream, not the unit.
        let end = nal.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
        if let Some(nal) = nal.get(..end).filter(|nal| !nal.is_empty()) {
            return Some(nal);
        }
    })
}

/// The type field of a NAL unit header (its low 5 bits); 0 (unspecified) for an empty slice.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |header| header & 0x1f)
}

fn find_start_code(data: &[u8]) -> Option<usize> {
    data.windows(3).position(|w| w == [0, 0, 1])
}

fn after_start_code(data: &[u8]) -> Option<&[u8]> {
    data.get(find_start_code(data)? + 3..)
}

/// Cuts H.264 access units into RTP payloads of at most `max_payload` bytes.
#[derive(Clone, Debug)]
pub struct H264Packetizer {
    mode: PacketizationMode,
    max_payload: usize,
}

impl H264Packetizer {
    /// A packetizer for `mode`. `max_payload` must be at least 3 (an FU-A with one byte).
    pub fn new(mode: PacketizationMode, max_payload: usize) -> Self {
        H264Packetizer { mode, max_payload }
    }

    /// Appends the payloads for one access unit, in Annex B form, to `out`, the last with
    /// `marker` set; returns how many. In mode 1 consecutive NAL units that fit one packet
    /// together go in a STAP-A (parameter sets with their slice, typically), a NAL unit that
    /// fits alone goes alone, and a larger one is cut into FU-As of near-equal size. On error
    /// nothing is appended.
    pub fn packetize(
        &self,
        access_unit: &[u8],
        out: &mut Vec<RtpPayload>,
    ) -> Result<usize, PacketizeError> {
        if self.max_payload < MIN_MAX_PAYLOAD {
            return Err(PacketizeError::MaxPayloadTooSmall {
                max: self.max_payload,
                min: MIN_MAX_PAYLOAD,
            });
        }
        let first = out.len();
        let result = match self.mode {
            PacketizationMode::SingleNal => self.single_nal_units(access_unit, out),
            PacketizationMode::NonInterleaved => self.non_interleaved(access_unit, out),
        };
        if let Err(e) = result {
            out.truncate(first);
            return Err(e);
        }
        match out.get_mut(first..).and_then(|ours| ours.last_mut()) {
            Some(last) => last.marker = true,
            None => return Err(PacketizeError::Empty),
        }
        Ok(out.len() - first)
    }

    fn single_nal_units(&self, au: &[u8], out: &mut Vec<RtpPayload>) -> Result<(), PacketizeError> {
        for nal in nal_units(au) {
            if nal.len() > self.max_payload {
                return Err(PacketizeError::NalTooLarge {
                    size: nal.len(),
                    max: self.max_payload,
                });
            }
            push_payload(out, nal.to_vec());
        }
        Ok(())
    }

    fn non_interleaved(&self, au: &[u8], out: &mut Vec<RtpPayload>) -> Result<(), PacketizeError> {
        let mut waiting = Aggregate::default();
        for nal in nal_units(au) {
            if nal.len() > self.max_payload {
                waiting.flush(out);
                self.fragment(nal, out);
            } else {
                if !waiting.fits(nal, self.max_payload) {
                    waiting.flush(out);
                }
                waiting.nals.push(nal);
            }
        }
        waiting.flush(out);
        Ok(())
    }

    /// FU-As for a NAL unit larger than a packet (so at least two: S and E never meet).
    fn fragment(&self, nal: &[u8], out: &mut Vec<RtpPayload>) {
        let Some((&header, body)) = nal.split_first() else {
            return;
        };
        let indicator = header & 0xe0 | FU_A;
        let mut fragments = split_evenly(body.len(), self.max_payload - FU_A_HEADER_LEN).peekable();
        let mut start = true;
        while let Some(range) = fragments.next() {
            let end = fragments.peek().is_none();
            let fu_header = u8::from(start) << 7 | u8::from(end) << 6 | header & 0x1f;
            let mut data = Vec::with_capacity(FU_A_HEADER_LEN + range.len());
            data.extend_from_slice(&[indicator, fu_header]);
            data.extend_from_slice(body.get(range).unwrap_or_default());
            push_payload(out, data);
            start = false;
        }
    }
}

fn push_payload(out: &mut Vec<RtpPayload>, data: Vec<u8>) {
    out.push(RtpPayload {
        data,
        marker: false,
    });
}

/// NAL units that fit in a packet, waiting to go out together.
#[derive(Debug, Default)]
struct Aggregate<'a> {
    nals: Vec<&'a [u8]>,
}

impl Aggregate<'_> {
    /// Whether `nal` joins the waiting units in a STAP-A of at most `max_payload` bytes (the
    /// first always does: alone it goes as a single NAL unit packet).
    fn fits(&self, nal: &[u8], max_payload: usize) -> bool {
        if self.nals.is_empty() {
            return true;
        }
        let units = || self.nals.iter().chain([&nal]);
        // A size field counts 16 bits: a larger unit (with a jumbo max_payload) goes alone.
        let countable = units().all(|n| u16::try_from(n.len()).is_ok());
        let stap_a_len =
            STAP_A_HEADER_LEN + units().map(|n| STAP_A_SIZE_LEN + n.len()).sum::<usize>();
        countable && stap_a_len <= max_payload
    }

    /// Sends the waiting units: one alone as a single NAL unit packet, more as a STAP-A.
    fn flush(&mut self, out: &mut Vec<RtpPayload>) {
        match self.nals.as_slice() {
            [] => {}
            [nal] => push_payload(out, nal.to_vec()),
            nals => {
                // §5.7: F is 1 if any unit's F is; NRI is the highest of the units'.
                let (f, nri) = nals.iter().fold((0, 0), |(f, nri), nal| {
                    let header = nal.first().copied().unwrap_or(0);
                    (f | header & 0x80, nri.max(header & 0x60))
                });
                let mut data = vec![f | nri | STAP_A];
                for nal in nals {
                    let size = u16::try_from(nal.len()).unwrap_or(u16::MAX);
                    data.extend_from_slice(&size.to_be_bytes());
                    data.extend_from_slice(nal);
                }
                push_payload(out, data);
            }
        }
        self.nals.clear();
    }
}

/// One RTP payload, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H264Packet<'a> {
    /// A whole NAL unit.
    Single(&'a [u8]),
    /// The aggregation units after the STAP-A header, sizes checked.
    StapA(&'a [u8]),
    /// A piece of a NAL unit.
    FuA(Fragment<'a>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fragment<'a> {
    /// The fragmented NAL unit's header, rebuilt from FU indicator and FU header.
    nal_header: u8,
    start: bool,
    end: bool,
    data: &'a [u8],
}

impl<'a> H264Packet<'a> {
    fn parse(payload: &'a [u8]) -> Result<H264Packet<'a>, PayloadError> {
        let (&header, rest) = payload.split_first().ok_or(PayloadError::Truncated {
            what: "H.264 payload header",
        })?;
        match header & 0x1f {
            1..=23 => Ok(H264Packet::Single(payload)),
            STAP_A => {
                if rest.is_empty() {
                    return Err(PayloadError::Truncated { what: "STAP-A" });
                }
                stap_a_units(rest).try_for_each(|unit| unit.map(|_| ()))?;
                Ok(H264Packet::StapA(rest))
            }
            FU_A => {
                let (&fu_header, data) = rest.split_first().ok_or(PayloadError::Truncated {
                    what: "FU-A header",
                })?;
                let fragment = Fragment {
                    nal_header: header & 0xe0 | fu_header & 0x1f,
                    start: fu_header & 0x80 != 0,
                    end: fu_header & 0x40 != 0,
                    data,
                };
                if !matches!(fu_header & 0x1f, 1..=23) {
                    return Err(PayloadError::Malformed("FU-A NAL unit type"));
                }
                if fragment.start && fragment.end {
                    // §5.8: a NAL unit that fits one packet must not be sent as an FU.
                    return Err(PayloadError::Malformed("FU-A with both start and end bits"));
                }
                Ok(H264Packet::FuA(fragment))
            }
            other => Err(PayloadError::UnsupportedPacketType(other)),
        }
    }

    /// Whether this packet surely opens an access unit, so that one met just after a gap is
    /// whole: an access unit delimiter or a sequence parameter set comes first (H.264
    /// §7.4.1.2.3), and a slice whose first_mb_in_slice is 0 begins its picture.
    fn begins_access_unit(&self) -> bool {
        let (header, next) = match *self {
            H264Packet::Single(nal) => (nal.first().copied(), nal.get(1).copied()),
            H264Packet::StapA(units) => {
                let first = stap_a_units(units)
                    .next()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                (first.first().copied(), first.get(1).copied())
            }
            H264Packet::FuA(f) if f.start => (Some(f.nal_header), f.data.first().copied()),
            H264Packet::FuA(_) => (None, None),
        };
        match header.map(|h| h & 0x1f) {
            Some(NAL_AUD | NAL_SPS) => true,
            // first_mb_in_slice is the slice header's first field, ue(v): 0 is the single bit 1.
            Some(NAL_SLICE | NAL_IDR) => next.is_some_and(|b| b & 0x80 != 0),
            _ => false,
        }
    }
}

/// The NAL units of a STAP-A after its header; an `Err` ends the iteration.
fn stap_a_units(mut units: &[u8]) -> impl Iterator<Item = Result<&[u8], PayloadError>> {
    std::iter::from_fn(move || {
        if units.is_empty() {
            return None;
        }
        let unit = first_stap_a_unit(units);
        units = unit.map_or(&[], |(_, rest)| rest);
        Some(unit.map(|(nal, _)| nal))
    })
}

/// Splits the first aggregation unit (a 16-bit size, then the NAL unit) off `units`.
fn first_stap_a_unit(units: &[u8]) -> Result<(&[u8], &[u8]), PayloadError> {
    let (size, rest) =
        units
            .split_first_chunk::<STAP_A_SIZE_LEN>()
            .ok_or(PayloadError::Truncated {
                what: "STAP-A NAL unit size",
            })?;
    match usize::from(u16::from_be_bytes(*size)) {
        0 => Err(PayloadError::Malformed("empty NAL unit in STAP-A")),
        size => rest.split_at_checked(size).ok_or(PayloadError::Truncated {
            what: "STAP-A NAL unit",
        }),
    }
}

/// The packet does not continue the access unit: the unit is lost.
#[derive(Clone, Copy, Debug)]
struct Broken;

/// An access unit being collected, in Annex B form.
#[derive(Debug)]
struct AccessUnit {
    timestamp: u32,
    data: Vec<u8>,
    idr: bool,
    /// The type of the NAL unit an FU-A has started and not yet ended.
    open_fragment: Option<u8>,
}

impl AccessUnit {
    fn new(timestamp: u32) -> Self {
        AccessUnit {
            timestamp,
            data: Vec::new(),
            idr: false,
            open_fragment: None,
        }
    }

    fn add(&mut self, packet: &H264Packet<'_>) -> Result<(), Broken> {
        match *packet {
            H264Packet::Single(nal) => self.add_nal(nal),
            H264Packet::StapA(units) => {
                stap_a_units(units).try_for_each(|unit| self.add_nal(unit.map_err(|_| Broken)?))
            }
            H264Packet::FuA(f) if f.start => {
                if self.open_fragment.is_some() {
                    // The fragment before never ended.
                    return Err(Broken);
                }
                self.add_nal(&[f.nal_header])?;
                self.open_fragment = Some(f.nal_header & 0x1f);
                self.extend(f.data)
            }
            H264Packet::FuA(f) => {
                if self.open_fragment != Some(f.nal_header & 0x1f) {
                    // Its start is missing, or it belongs to another NAL unit.
                    return Err(Broken);
                }
                if f.end {
                    self.open_fragment = None;
                }
                self.extend(f.data)
            }
        }
    }

    /// Starts a NAL unit with its start code.
    fn add_nal(&mut self, nal: &[u8]) -> Result<(), Broken> {
        if self.open_fragment.is_some() {
            return Err(Broken);
        }
        self.idr |= nal_type(nal) == NAL_IDR;
        self.extend(&START_CODE)?;
        self.extend(nal)
    }

    fn extend(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        if self.data.len() + bytes.len() > MAX_FRAME_LEN {
            return Err(Broken);
        }
        self.data.extend_from_slice(bytes);
        Ok(())
    }
}

/// Where the depacketizer stands within the stream of access units.
#[derive(Debug)]
enum Assembly {
    /// Between access units: the next packet starts one.
    Idle,
    /// Collecting an access unit.
    Collecting(AccessUnit),
    /// Throwing away the rest of an access unit (by its timestamp) that lost a packet.
    Discarding {
        /// The damaged access unit's RTP timestamp.
        timestamp: u32,
    },
}

/// Reassembles H.264 access units from RTP payloads of packetization mode 0 or 1 pushed in
/// sequence order. See the [module docs](super) for the loss rules.
#[derive(Debug)]
pub struct H264Depacketizer {
    sequence: SeqTracker,
    assembly: Assembly,
    gate: FrameGate,
}

impl Default for H264Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl H264Depacketizer {
    /// A depacketizer that waits for the first access unit with an IDR slice.
    pub fn new() -> Self {
        H264Depacketizer {
            sequence: SeqTracker::default(),
            assembly: Assembly::Idle,
            gate: FrameGate::default(),
        }
    }

    /// Whether access units are being dropped until an IDR (repeat the request on a timer).
    pub fn awaiting_keyframe(&self) -> bool {
        self.gate.awaiting_keyframe()
    }

    /// Takes one RTP payload with its header's sequence number, timestamp and marker bit.
    ///
    /// An access unit is handed out on its marker, or when a packet with a new timestamp
    /// shows it ended without one. After a gap (or at the start), a packet is taken as the
    /// start of an access unit only if it surely is one (an access unit delimiter, a sequence
    /// parameter set, or a picture's first slice); otherwise its access unit is discarded, so
    /// a picture whose first packets were lost is never passed on as whole.
    pub fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Depacketized {
        // An empty payload is padding: it keeps the sequence unbroken and carries nothing.
        let packet = if payload.is_empty() {
            None
        } else {
            match H264Packet::parse(payload) {
                Ok(packet) => Some(packet),
                Err(e) => return Depacketized::Rejected(e),
            }
        };
        let step = self.sequence.step(seq);
        match step {
            SeqStep::Stale => return self.gate.outcome(),
            SeqStep::Gap => {
                self.assembly = Assembly::Idle;
                self.gate.lost();
            }
            SeqStep::First | SeqStep::Next => {}
        }
        let Some(packet) = packet else {
            return self.gate.outcome();
        };

        // A new timestamp ends the access unit before it.
        match std::mem::replace(&mut self.assembly, Assembly::Idle) {
            Assembly::Collecting(au) if au.timestamp != timestamp => self.end_access_unit(au),
            Assembly::Discarding { timestamp: t } if t != timestamp => {}
            unchanged => self.assembly = unchanged,
        }

        let trusted = matches!(step, SeqStep::Next) || packet.begins_access_unit();
        self.assembly = match std::mem::replace(&mut self.assembly, Assembly::Idle) {
            Assembly::Idle if trusted => self.add(AccessUnit::new(timestamp), &packet),
            Assembly::Idle => {
                // Its first packets were lost (or came before we joined).
                self.gate.lost();
                Assembly::Discarding { timestamp }
            }
            Assembly::Collecting(au) => self.add(au, &packet),
            discarding @ Assembly::Discarding { .. } => discarding,
        };

        if marker {
            if let Assembly::Collecting(au) = std::mem::replace(&mut self.assembly, Assembly::Idle)
            {
                self.end_access_unit(au);
            }
        }
        self.gate.outcome()
    }

    fn add(&mut self, mut au: AccessUnit, packet: &H264Packet<'_>) -> Assembly {
        match au.add(packet) {
            Ok(()) => Assembly::Collecting(au),
            Err(Broken) => {
                self.gate.lost();
                Assembly::Discarding {
                    timestamp: au.timestamp,
                }
            }
        }
    }

    /// An access unit ended: whole unless a fragment is still open.
    fn end_access_unit(&mut self, au: AccessUnit) {
        if au.open_fragment.is_some() {
            self.gate.lost();
            return;
        }
        self.gate.finished(VideoFrame {
            data: au.data,
            timestamp: au.timestamp,
            keyframe: au.idr,
        });
    }
}
