//! VP8 over RTP (RFC 7741): the payload descriptor, a packetizer and a depacketizer.
//!
//! Every VP8 RTP payload starts with a payload descriptor (§4.2), then a piece of the VP8
//! frame as the encoder wrote it:
//!
//! ```text
//!        0 1 2 3 4 5 6 7
//!       +-+-+-+-+-+-+-+-+
//!       |X|R|N|S|R| PID | (REQUIRED)
//!       +-+-+-+-+-+-+-+-+
//!  X:   |I|L|T|K| RSV   | (OPTIONAL)
//!       +-+-+-+-+-+-+-+-+
//!  I:   |M| PictureID   | (OPTIONAL)
//!       +-+-+-+-+-+-+-+-+
//!  M:   | PictureID     | (second byte when M = 1: a 15-bit PictureID)
//!       +-+-+-+-+-+-+-+-+
//!  L:   |   TL0PICIDX   | (OPTIONAL)
//!       +-+-+-+-+-+-+-+-+
//!  T/K: |TID|Y| KEYIDX  | (OPTIONAL)
//!       +-+-+-+-+-+-+-+-+
//! ```
//!
//! A frame starts in the packet with S = 1 and PID = 0, whose data begins with the VP8
//! frame tag (§4.3, RFC 6386 §9.1); the RTP marker is set on its last packet and all its
//! packets carry the same timestamp.
//!
//! This packetizer writes a 15-bit PictureID in every packet (as libwebrtc does, so a
//! receiver can tell frames apart after loss) and PID = 0 throughout: partition boundaries
//! are not tracked, which §4.2 allows ("MAY be kept at 0 for all packets"). The R and RSV
//! bits are written as 0 and ignored on reception, as §4.2 requires of receivers.

use super::{
    split_evenly, Depacketized, FrameGate, PacketizeError, PayloadError, RtpPayload, SeqStep,
    SeqTracker, VideoFrame, MAX_FRAME_LEN,
};

/// Length of the descriptor this packetizer writes: the required byte, the X byte and a
/// 15-bit PictureID.
pub const DESCRIPTOR_LEN: usize = 4;

/// PictureIDs wrap at 15 bits (§4.2, M = 1).
const PICTURE_ID_MASK: u16 = 0x7fff;

/// Whether a VP8 frame (or the first packet's data of one) is a key frame: the P bit, the
/// least significant bit of the frame tag's first byte, is 0 (RFC 7741 §4.3, RFC 6386
/// §9.1: the "inverse key frame flag"). Meaningful only at the start of a frame: the
/// packet with S = 1 and PID = 0.
pub fn is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|tag| tag & 0x01 == 0)
}

/// The PictureID field, in whichever width the sender chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PictureId {
    /// M = 0: 7 bits.
    Short(u8),
    /// M = 1: 15 bits.
    Long(u16),
}

impl PictureId {
    /// The numeric value.
    pub fn value(self) -> u16 {
        match self {
            PictureId::Short(id) => u16::from(id & 0x7f),
            PictureId::Long(id) => id & PICTURE_ID_MASK,
        }
    }
}

/// The temporal layer fields of the T/K byte, present when T = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemporalLayer {
    /// TID: the temporal layer index, 0..=3.
    pub index: u8,
    /// Y: this frame depends only on the base layer (layer sync).
    pub sync: bool,
}

/// The VP8 payload descriptor (RFC 7741 §4.2). Optional fields are `Some` when present.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// N: the frame is not used as a reference; a receiver may discard it.
    pub non_reference: bool,
    /// S: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition index, 0..=7, of the packet's first byte.
    pub partition_index: u8,
    /// I: PictureID.
    pub picture_id: Option<PictureId>,
    /// L: TL0PICIDX, the running index of the base temporal layer.
    pub tl0_pic_idx: Option<u8>,
    /// T: TID and Y.
    pub temporal_layer: Option<TemporalLayer>,
    /// K: KEYIDX, the running index of temporal key frames, 0..=31.
    pub key_index: Option<u8>,
}

impl Vp8Descriptor {
    /// Whether this packet starts a frame: the start of partition 0.
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_index == 0
    }

    /// Reads the descriptor at the start of an RTP payload; returns it and the frame data
    /// after it. The R and RSV bits are ignored (§4.2). Lenient where the meaning is
    /// unambiguous: L = 1 with T = 0 is read as written, though §4.2 asks senders to set T
    /// with L.
    pub fn parse(payload: &[u8]) -> Result<(Vp8Descriptor, &[u8]), PayloadError> {
        let truncated = PayloadError::Truncated {
            what: "VP8 payload descriptor",
        };
        let (&first, mut rest) = payload.split_first().ok_or(truncated)?;
        let mut d = Vp8Descriptor {
            non_reference: first & 0x20 != 0,
            start_of_partition: first & 0x10 != 0,
            partition_index: first & 0x07,
            ..Vp8Descriptor::default()
        };
        let mut next = || -> Result<u8, PayloadError> {
            let (&b, tail) = rest.split_first().ok_or(truncated)?;
            rest = tail;
            Ok(b)
        };
        if first & 0x80 != 0 {
            let ext = next()?;
            if ext & 0x80 != 0 {
                let b = next()?;
                d.picture_id = Some(if b & 0x80 != 0 {
                    PictureId::Long(u16::from(b & 0x7f) << 8 | u16::from(next()?))
                } else {
                    PictureId::Short(b)
                });
            }
            if ext & 0x40 != 0 {
                d.tl0_pic_idx = Some(next()?);
            }
            let (has_tid, has_keyidx) = (ext & 0x20 != 0, ext & 0x10 != 0);
            if has_tid || has_keyidx {
                let b = next()?;
                d.temporal_layer = has_tid.then_some(TemporalLayer {
                    index: b >> 6,
                    sync: b & 0x20 != 0,
                });
                d.key_index = has_keyidx.then_some(b & 0x1f);
            }
        }
        if rest.is_empty() {
            return Err(PayloadError::NoData);
        }
        Ok((d, rest))
    }

    /// The descriptor's length on the wire.
    pub fn encoded_len(&self) -> usize {
        let mut len = 1;
        if self.has_extension() {
            len += 1;
            len += match self.picture_id {
                Some(PictureId::Short(_)) => 1,
                Some(PictureId::Long(_)) => 2,
                None => 0,
            };
            len += usize::from(self.tl0_pic_idx.is_some());
            len += usize::from(self.temporal_layer.is_some() || self.key_index.is_some());
        }
        len
    }

    /// Appends the descriptor to `out`. Fields are masked to their widths; X is set when any
    /// optional field is present.
    pub fn write(&self, out: &mut Vec<u8>) {
        let x = self.has_extension();
        out.push(
            u8::from(x) << 7
                | u8::from(self.non_reference) << 5
                | u8::from(self.start_of_partition) << 4
                | (self.partition_index & 0x07),
        );
        if !x {
            return;
        }
        let has_tk = self.temporal_layer.is_some() || self.key_index.is_some();
        out.push(
            u8::from(self.picture_id.is_some()) << 7
                | u8::from(self.tl0_pic_idx.is_some()) << 6
                | u8::from(self.temporal_layer.is_some()) << 5
                | u8::from(self.key_index.is_some()) << 4,
        );
        match self.picture_id {
            Some(PictureId::Short(id)) => out.push(id & 0x7f),
            Some(PictureId::Long(id)) => {
                let id = id & PICTURE_ID_MASK;
                out.push(0x80 | (id >> 8) as u8);
                out.push(id as u8);
            }
            None => {}
        }
        if let Some(idx) = self.tl0_pic_idx {
            out.push(idx);
        }
        if has_tk {
            let (tid, sync) = self
                .temporal_layer
                .map_or((0, false), |t| (t.index & 0x03, t.sync));
            out.push(tid << 6 | u8::from(sync) << 5 | (self.key_index.unwrap_or(0) & 0x1f));
        }
    }

    fn has_extension(&self) -> bool {
        self.picture_id.is_some()
            || self.tl0_pic_idx.is_some()
            || self.temporal_layer.is_some()
            || self.key_index.is_some()
    }
}

/// Cuts VP8 frames into RTP payloads of at most `max_payload` bytes, each with a
/// [`DESCRIPTOR_LEN`]-byte descriptor carrying the frame's 15-bit PictureID.
#[derive(Clone, Debug)]
pub struct Vp8Packetizer {
    max_payload: usize,
    picture_id: u16,
}

impl Vp8Packetizer {
    /// A packetizer whose first frame gets PictureID `first_picture_id` (masked to 15 bits;
    /// RFC 7741 §4.2 allows a random start). `max_payload` must exceed [`DESCRIPTOR_LEN`].
    pub fn new(max_payload: usize, first_picture_id: u16) -> Self {
        Vp8Packetizer {
            max_payload,
            picture_id: first_picture_id & PICTURE_ID_MASK,
        }
    }

    /// The PictureID the next frame will carry.
    pub fn next_picture_id(&self) -> u16 {
        self.picture_id
    }

    /// Appends the payloads for `frame` to `out`, the last with `marker` set, and returns how
    /// many. Packets are of near-equal size. On error nothing is appended and the PictureID
    /// does not advance.
    pub fn packetize(
        &mut self,
        frame: &[u8],
        out: &mut Vec<RtpPayload>,
    ) -> Result<usize, PacketizeError> {
        if self.max_payload <= DESCRIPTOR_LEN {
            return Err(PacketizeError::MaxPayloadTooSmall {
                max: self.max_payload,
                min: DESCRIPTOR_LEN + 1,
            });
        }
        if frame.is_empty() {
            return Err(PacketizeError::Empty);
        }
        let chunks = split_evenly(frame.len(), self.max_payload - DESCRIPTOR_LEN);
        let first = out.len();
        for (i, range) in chunks.enumerate() {
            let descriptor = Vp8Descriptor {
                start_of_partition: i == 0,
                picture_id: Some(PictureId::Long(self.picture_id)),
                ..Vp8Descriptor::default()
            };
            let mut data = Vec::with_capacity(DESCRIPTOR_LEN + range.len());
            descriptor.write(&mut data);
            data.extend_from_slice(frame.get(range).unwrap_or_default());
            out.push(RtpPayload {
                data,
                marker: false,
            });
        }
        if let Some(last) = out.last_mut() {
            last.marker = true;
        }
        self.picture_id = self.picture_id.wrapping_add(1) & PICTURE_ID_MASK;
        Ok(out.len() - first)
    }
}

/// A frame being collected.
#[derive(Debug)]
struct PartialFrame {
    timestamp: u32,
    data: Vec<u8>,
    keyframe: bool,
}

/// Where the depacketizer stands within the stream of frames.
#[derive(Debug)]
enum Assembly {
    /// Between frames: the next packet must start one.
    Idle,
    /// Collecting a frame whose start arrived.
    Collecting(PartialFrame),
    /// Throwing away the rest of a frame (by its timestamp) that lost a packet or its start.
    Discarding {
        /// The damaged frame's RTP timestamp.
        timestamp: u32,
    },
}

/// Reassembles VP8 frames from RTP payloads pushed in sequence order. See the
/// [module docs](super) for the loss rules.
#[derive(Debug)]
pub struct Vp8Depacketizer {
    sequence: SeqTracker,
    assembly: Assembly,
    gate: FrameGate,
}

impl Default for Vp8Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Vp8Depacketizer {
    /// A depacketizer that waits for the first keyframe.
    pub fn new() -> Self {
        Vp8Depacketizer {
            sequence: SeqTracker::default(),
            assembly: Assembly::Idle,
            gate: FrameGate::default(),
        }
    }

    /// Whether frames are being dropped until a keyframe (repeat the request on a timer).
    pub fn awaiting_keyframe(&self) -> bool {
        self.gate.awaiting_keyframe()
    }

    /// Takes one RTP payload with its header's sequence number, timestamp and marker bit.
    pub fn push(&mut self, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Depacketized {
        // An empty payload is padding: it keeps the sequence unbroken and carries nothing.
        let parsed = if payload.is_empty() {
            None
        } else {
            match Vp8Descriptor::parse(payload) {
                Ok(parsed) => Some(parsed),
                Err(e) => return Depacketized::Rejected(e),
            }
        };
        match self.sequence.step(seq) {
            SeqStep::Stale => return self.gate.outcome(),
            SeqStep::Gap => self.lose_frame(),
            SeqStep::First | SeqStep::Next => {}
        }
        let Some((descriptor, data)) = parsed else {
            return self.gate.outcome();
        };
        let starts_frame = descriptor.starts_frame();
        // A new frame (by its start or its timestamp) before the marker: the old one's end is
        // missing, though the sequence says nothing was lost.
        match &self.assembly {
            Assembly::Collecting(f) if starts_frame || f.timestamp != timestamp => {
                self.lose_frame();
            }
            Assembly::Discarding { timestamp: t } if *t != timestamp => {
                self.assembly = Assembly::Idle;
            }
            _ => {}
        }
        match &mut self.assembly {
            Assembly::Idle if starts_frame => {
                self.assembly = Assembly::Collecting(PartialFrame {
                    timestamp,
                    data: data.to_vec(),
                    keyframe: is_keyframe(data),
                });
            }
            Assembly::Idle => {
                // Its first packet never came.
                self.gate.lost();
                self.assembly = Assembly::Discarding { timestamp };
            }
            Assembly::Collecting(f) if f.data.len() + data.len() > MAX_FRAME_LEN => {
                self.lose_frame();
                self.assembly = Assembly::Discarding { timestamp };
            }
            Assembly::Collecting(f) => f.data.extend_from_slice(data),
            Assembly::Discarding { .. } => {}
        }
        if marker {
            if let Assembly::Collecting(f) = std::mem::replace(&mut self.assembly, Assembly::Idle) {
                self.gate.finished(VideoFrame {
                    data: f.data,
                    timestamp: f.timestamp,
                    keyframe: f.keyframe,
                });
            }
        }
        self.gate.outcome()
    }

    /// Drops whatever is being assembled and starts waiting for a keyframe.
    fn lose_frame(&mut self) {
        self.assembly = Assembly::Idle;
        self.gate.lost();
    }
}
