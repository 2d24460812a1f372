//! SRTP and SRTCP packet protection (RFC 3711, AEAD per RFC 7714), in place and allocation-free.
//!
//! # Why our own implementation
//!
//! `rtc-srtp` 0.21 returns a fresh `BytesMut` from every encrypt and decrypt (one heap
//! allocation per call, measured in `tests/srtp_no_alloc.rs`; more when the parsed
//! `rtp::Header` carries CSRCs or extensions), and its API offers no in-place form. STYLE.md
//! R14 asks the per-packet path to allocate nothing, so this module implements the transforms
//! directly on RustCrypto `aes` (AES-CM keystream, key derivation) and `hmac`/`sha1`
//! (HMAC-SHA1, with SHA-NI where the CPU has it) and on `ring` (AES-128-GCM), all already in the
//! graph through `rtc-dtls`. The output is checked byte for byte against the RFC 3711 and
//! RFC 7714 vectors and against `rtc-srtp` (`tests/srtp_interop.rs`); `benches/srtp.rs` prints
//! the per-packet cost of both: ours is faster for every profile.
//!
//! # Packet state
//!
//! Per SSRC the context keeps the highest packet index seen (from which the rollover counter
//! and `s_l` of RFC 3711 §3.3.1 follow) and a 128-packet replay window (§3.3.2); for SRTCP the
//! last index sent and a window over received indices. State for an SSRC is created by the
//! first packet *that authenticates*, so forged packets cannot grow it.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes128Enc, Block};
use hmac::{Hmac, Mac};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::key::SrtpMasterKey;
use crate::profile::SrtpProfile;

/// Width of the replay window, in packets. RFC 3711 §3.3.2 requires at least 64; libsrtp uses
/// 128, which tolerates the reordering a jittery path produces at video packet rates.
pub const REPLAY_WINDOW: u64 = 128;

/// Most SSRCs one context tracks. Only authenticated packets create state, so reaching this
/// means the keyed peer misbehaves; its packets for new SSRCs are then refused.
const MAX_STREAMS: usize = 1024;

/// Largest SRTCP index (31 bits, RFC 3711 §3.4).
const MAX_SRTCP_INDEX: u32 = 0x7FFF_FFFF;

/// Why a packet was not protected or unprotected. Every variant means "drop this packet"; none
/// leaves the context in a worse state. Counting them per variant is the caller's business.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Shorter than its header (and, when unprotecting, its tag and trailer).
    #[error("packet too short")]
    TooShort,
    /// The version field is not 2 (RFC 3550 §5.1), so this is not RTP/RTCP.
    #[error("not an RTP/RTCP version 2 packet")]
    BadVersion,
    /// The authentication tag did not verify (RFC 3711 §3.3 step 5, RFC 7714 §9.1).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// This index was already received (RFC 3711 §3.3.2).
    #[error("replayed packet")]
    Replayed,
    /// The index is older than the replay window, or from before the stream began.
    #[error("packet older than the replay window")]
    TooOld,
    /// The SRTCP E flag is clear: the peer sent unencrypted SRTCP, which we never negotiate.
    #[error("unencrypted SRTCP refused")]
    UnencryptedSrtcp,
    /// 2^48 SRTP or 2^31 SRTCP packets under one key: RFC 3711 §9.2 requires re-keying.
    #[error("key exhausted: re-key required")]
    KeyExhausted,
    /// The caller's buffer has no room for the tag (protect) or is otherwise too small.
    #[error("buffer too small")]
    BufferTooSmall,
    /// Too many SSRCs on one context.
    #[error("too many SSRCs on one SRTP context")]
    TooManyStreams,
}

/// One SRTP crypto context (RFC 3711 §3.2): a master key, the session keys derived from it for
/// SRTP and SRTCP, and the per-SSRC index and replay state.
///
/// Use one context per direction: one to protect what we send, one to unprotect what we
/// receive. The two directions of a call always have different master keys (RFC 5764 §4.2
/// exports two, and each SDES side offers its own), and a context used both ways would mix the
/// index state of the two.
///
/// All methods work in place. The `Vec` forms grow the packet by the tag; give them a buffer
/// with [`SrtpProfile::rtp_overhead`] (or `rtcp_overhead`) spare capacity and reuse it, and
/// they never allocate.
pub struct SrtpContext {
    profile: SrtpProfile,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    streams: Vec<Stream>,
    /// Index into `streams` of the last SSRC used: most calls carry one or two SSRCs.
    last: usize,
}

impl SrtpContext {
    /// A context keyed from `master` with the key derivation of RFC 3711 §4.3 (key derivation
    /// rate 0, so the session keys are derived once).
    pub fn new(master: &SrtpMasterKey) -> Self {
        let profile = master.profile();
        SrtpContext {
            profile,
            rtp: SessionKeys::derive(master, Labels::SRTP),
            rtcp: SessionKeys::derive(master, Labels::SRTCP),
            streams: Vec::new(),
            last: 0,
        }
    }

    /// The profile the context runs.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Protect an RTP packet in place: encrypt the payload and append the tag (RFC 3711 §3.3,
    /// RFC 7714 §8). On error the packet is unchanged.
    pub fn protect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let len = packet.len();
        packet.resize(len + self.profile.rtp_overhead(), 0);
        finish_vec(packet, len, |buf| self.protect_rtp_in_place(buf, len))
    }

    /// Unprotect an SRTP packet in place: check replay, verify the tag, decrypt, and strip the
    /// tag (RFC 3711 §3.3, RFC 7714 §9). On error drop the packet: with GCM its bytes may
    /// have been overwritten.
    pub fn unprotect_rtp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let n = self.unprotect_rtp_in_place(packet)?;
        packet.truncate(n);
        Ok(())
    }

    /// Protect an RTCP compound packet in place: encrypt, append E flag and SRTCP index, and
    /// the tag (RFC 3711 §3.4, RFC 7714 §9). On error the packet is unchanged.
    pub fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let len = packet.len();
        packet.resize(len + self.profile.rtcp_overhead(), 0);
        finish_vec(packet, len, |buf| self.protect_rtcp_in_place(buf, len))
    }

    /// Unprotect an SRTCP packet in place. On error drop the packet.
    pub fn unprotect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let n = self.unprotect_rtcp_in_place(packet)?;
        packet.truncate(n);
        Ok(())
    }

    /// Protect the RTP packet in `buf[..len]`, writing the tag after it; returns the protected
    /// length. `buf` needs [`SrtpProfile::rtp_overhead`] bytes past `len`.
    pub fn protect_rtp_in_place(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtp_overhead();
        if len > buf.len() || buf.len() - len < overhead {
            return Err(SrtpError::BufferTooSmall);
        }
        let hdr = rtp_header_len(&buf[..len])?;
        let (seq, ssrc) = rtp_seq_ssrc(buf);
        let slot = self.stream_slot(ssrc)?;
        let top = self.streams[slot].rtp.as_ref().map(|r| r.top);
        let index = estimate_index(top, seq).ok_or(SrtpError::TooOld)?;
        if index >> 48 != 0 {
            return Err(SrtpError::KeyExhausted);
        }
        let roc = (index >> 16) as u32;
        match &self.rtp {
            SessionKeys::Cm { aes, salt, auth } => {
                aes_cm_xor(aes, &cm_iv(salt, ssrc, index), &mut buf[hdr..len]);
                let tag = hmac_sha1(auth, &buf[..len], &roc.to_be_bytes());
                buf[len..len + overhead].copy_from_slice(&tag[..overhead]);
            }
            SessionKeys::Gcm { aead, salt } => {
                let (head, rest) = buf.split_at_mut(hdr);
                let nonce = Nonce::assume_unique_for_key(gcm_rtp_iv(salt, ssrc, index));
                let tag = aead
                    .seal_in_place_separate_tag(nonce, Aad::from(&*head), &mut rest[..len - hdr])
                    // ring fails only for inputs over 2^36 bytes; a packet is at most 64 KiB.
                    .map_err(|_| SrtpError::TooShort)?;
                buf[len..len + overhead].copy_from_slice(tag.as_ref());
            }
        }
        self.streams[slot]
            .rtp
            .get_or_insert(Replay::new(index))
            .advance(index);
        Ok(len + overhead)
    }

    /// Unprotect the SRTP packet that fills `buf`; returns the length of the RTP packet left
    /// at the start of `buf`.
    pub fn unprotect_rtp_in_place(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtp_overhead();
        let hdr = rtp_header_len(buf)?;
        if buf.len() < hdr + overhead {
            return Err(SrtpError::TooShort);
        }
        let end = buf.len() - overhead;
        let (seq, ssrc) = rtp_seq_ssrc(buf);
        let slot = self.find_stream(ssrc);
        let replay = slot.and_then(|s| self.streams[s].rtp.as_ref());
        // RFC 3711 §3.3.1 / Appendix A: guess the index from s_l and ROC.
        let index = estimate_index(replay.map(|r| r.top), seq).ok_or(SrtpError::TooOld)?;
        if index >> 48 != 0 {
            return Err(SrtpError::KeyExhausted);
        }
        if let Some(r) = replay {
            r.check(index)?;
        }
        let roc = (index >> 16) as u32;
        match &self.rtp {
            SessionKeys::Cm { aes, salt, auth } => {
                // §3.3 step 5: authenticate before decrypting.
                let tag = hmac_sha1(auth, &buf[..end], &roc.to_be_bytes());
                if !bool::from(tag[..overhead].ct_eq(&buf[end..])) {
                    return Err(SrtpError::AuthenticationFailed);
                }
                aes_cm_xor(aes, &cm_iv(salt, ssrc, index), &mut buf[hdr..end]);
            }
            SessionKeys::Gcm { aead, salt } => {
                let (head, rest) = buf.split_at_mut(hdr);
                let nonce = Nonce::assume_unique_for_key(gcm_rtp_iv(salt, ssrc, index));
                aead.open_in_place(nonce, Aad::from(&*head), rest)
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
            }
        }
        // Only now, with the packet authentic, may its index move the state (§3.3.1).
        let slot = self.stream_slot(ssrc)?;
        self.streams[slot]
            .rtp
            .get_or_insert(Replay::new(index))
            .accept(index);
        Ok(end)
    }

    /// Protect the RTCP packet in `buf[..len]`; returns the protected length. `buf` needs
    /// [`SrtpProfile::rtcp_overhead`] bytes past `len`.
    pub fn protect_rtcp_in_place(
        &mut self,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        if len > buf.len() || buf.len() - len < overhead {
            return Err(SrtpError::BufferTooSmall);
        }
        check_rtcp_header(&buf[..len])?;
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let slot = self.stream_slot(ssrc)?;
        // RFC 3711 §3.4 counts from zero; like libsrtp (and rtc-srtp) the first packet carries
        // index 1, which keeps our output byte-identical with theirs. Receivers do not care.
        let index = self.streams[slot].rtcp_tx + 1;
        if index > MAX_SRTCP_INDEX {
            return Err(SrtpError::KeyExhausted);
        }
        let e_index = (0x8000_0000 | index).to_be_bytes();
        match &self.rtcp {
            SessionKeys::Cm { aes, salt, auth } => {
                aes_cm_xor(aes, &cm_iv(salt, ssrc, u64::from(index)), &mut buf[8..len]);
                buf[len..len + 4].copy_from_slice(&e_index);
                let tag = hmac_sha1(auth, &buf[..len + 4], &[]);
                buf[len + 4..len + overhead].copy_from_slice(&tag[..overhead - 4]);
            }
            SessionKeys::Gcm { aead, salt } => {
                // RFC 7714 §9.2: AAD is the first 8 header bytes and E || SRTCP index.
                let aad = rtcp_gcm_aad(buf, e_index);
                let nonce = Nonce::assume_unique_for_key(gcm_rtcp_iv(salt, ssrc, index));
                let tag = aead
                    .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut buf[8..len])
                    .map_err(|_| SrtpError::TooShort)?;
                buf[len..len + 16].copy_from_slice(tag.as_ref());
                buf[len + 16..len + 20].copy_from_slice(&e_index);
            }
        }
        self.streams[slot].rtcp_tx = index;
        Ok(len + overhead)
    }

    /// Unprotect the SRTCP packet that fills `buf`; returns the length of the RTCP packet left
    /// at the start of `buf`.
    pub fn unprotect_rtcp_in_place(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let overhead = self.profile.rtcp_overhead();
        if buf.len() < 8 + overhead {
            return Err(SrtpError::TooShort);
        }
        check_rtcp_header(buf)?;
        let ssrc = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let len = buf.len();
        // The E||index word sits before the HMAC tag (RFC 3711 §3.4), after the AEAD tag
        // (RFC 7714 §9, Figure 3); either way it closes the authenticated part.
        let e_at = if self.profile.is_aead() {
            len - 4
        } else {
            len - overhead
        };
        let e_index = [buf[e_at], buf[e_at + 1], buf[e_at + 2], buf[e_at + 3]];
        let word = u32::from_be_bytes(e_index);
        if word & 0x8000_0000 == 0 {
            return Err(SrtpError::UnencryptedSrtcp);
        }
        let index = word & MAX_SRTCP_INDEX;
        let slot = self.find_stream(ssrc);
        if let Some(r) = slot.and_then(|s| self.streams[s].rtcp_rx.as_ref()) {
            r.check(u64::from(index))?;
        }
        let plain_len = len - overhead;
        match &self.rtcp {
            SessionKeys::Cm { aes, salt, auth } => {
                let tag = hmac_sha1(auth, &buf[..len - 10], &[]);
                if !bool::from(tag[..10].ct_eq(&buf[len - 10..])) {
                    return Err(SrtpError::AuthenticationFailed);
                }
                aes_cm_xor(
                    aes,
                    &cm_iv(salt, ssrc, u64::from(index)),
                    &mut buf[8..plain_len],
                );
            }
            SessionKeys::Gcm { aead, salt } => {
                let aad = rtcp_gcm_aad(buf, e_index);
                let nonce = Nonce::assume_unique_for_key(gcm_rtcp_iv(salt, ssrc, index));
                aead.open_in_place(nonce, Aad::from(aad), &mut buf[8..len - 4])
                    .map_err(|_| SrtpError::AuthenticationFailed)?;
            }
        }
        let slot = self.stream_slot(ssrc)?;
        let idx = u64::from(index);
        self.streams[slot]
            .rtcp_rx
            .get_or_insert(Replay::new(idx))
            .accept(idx);
        Ok(plain_len)
    }

    fn find_stream(&mut self, ssrc: u32) -> Option<usize> {
        if self.streams.get(self.last).is_some_and(|s| s.ssrc == ssrc) {
            return Some(self.last);
        }
        let i = self.streams.iter().position(|s| s.ssrc == ssrc)?;
        self.last = i;
        Some(i)
    }

    fn stream_slot(&mut self, ssrc: u32) -> Result<usize, SrtpError> {
        if let Some(i) = self.find_stream(ssrc) {
            return Ok(i);
        }
        if self.streams.len() >= MAX_STREAMS {
            return Err(SrtpError::TooManyStreams);
        }
        self.streams.push(Stream {
            ssrc,
            rtp: None,
            rtcp_rx: None,
            rtcp_tx: 0,
        });
        self.last = self.streams.len() - 1;
        Ok(self.last)
    }

    /// Test hook: make the next SRTCP packet for `ssrc` carry `index` (RFC 7714 §17 vectors).
    #[cfg(test)]
    pub(crate) fn set_next_srtcp_index(&mut self, ssrc: u32, index: u32) {
        let slot = self.stream_slot(ssrc).expect("one stream");
        self.streams[slot].rtcp_tx = index - 1;
    }

    /// Test hook: a context keyed with session keys directly, as the RFC 7714 vectors give them.
    #[cfg(test)]
    pub(crate) fn from_session_keys(profile: SrtpProfile, key: &[u8; 16], salt: &[u8]) -> Self {
        let keys = || SessionKeys::from_parts(profile, key, salt, &[0; 20]);
        SrtpContext {
            profile,
            rtp: keys(),
            rtcp: keys(),
            streams: Vec::new(),
            last: 0,
        }
    }
}

/// Shrink a `Vec` that was grown for the tag back to what the in-place call produced.
fn finish_vec(
    packet: &mut Vec<u8>,
    len: usize,
    f: impl FnOnce(&mut [u8]) -> Result<usize, SrtpError>,
) -> Result<(), SrtpError> {
    match f(packet) {
        Ok(n) => {
            packet.truncate(n);
            Ok(())
        }
        Err(e) => {
            packet.truncate(len);
            Err(e)
        }
    }
}

/// Per-SSRC state.
struct Stream {
    ssrc: u32,
    /// Highest SRTP index processed and, when receiving, the replay window below it.
    rtp: Option<Replay>,
    /// Replay window over received SRTCP indices.
    rtcp_rx: Option<Replay>,
    /// Last SRTCP index sent; 0 before the first.
    rtcp_tx: u32,
}

/// RFC 3711 §3.3.2 replay list as a sliding bitmap: bit `i` of `mask` is set when index
/// `top - i` has been received.
#[derive(Clone, Copy)]
struct Replay {
    top: u64,
    mask: u128,
}

impl Replay {
    fn new(index: u64) -> Self {
        Replay {
            top: index,
            mask: 0,
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.top {
            return Ok(());
        }
        let age = self.top - index;
        if age >= REPLAY_WINDOW {
            Err(SrtpError::TooOld)
        } else if self.mask & (1u128 << age) != 0 {
            Err(SrtpError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Record an authenticated index.
    fn accept(&mut self, index: u64) {
        if index > self.top {
            let shift = index - self.top;
            self.mask = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.mask << shift
            };
            self.mask |= 1;
            self.top = index;
        } else {
            self.mask |= 1u128 << (self.top - index);
        }
    }

    /// Sender side: only the highest index matters.
    fn advance(&mut self, index: u64) {
        self.top = self.top.max(index);
    }
}

/// RFC 3711 Appendix A: the packet index `i = 2^16 * v + SEQ` for a received SEQ, given the
/// highest index so far (`None` before the first packet, when ROC is 0). `None` when the
/// guess would put the packet before index 0.
fn estimate_index(top: Option<u64>, seq: u16) -> Option<u64> {
    let Some(top) = top else {
        return Some(u64::from(seq));
    };
    let roc = top >> 16;
    let s_l = (top & 0xFFFF) as i32;
    let seq_i = i32::from(seq);
    let v = if s_l < 32768 {
        if seq_i - s_l > 32768 {
            roc.checked_sub(1)?
        } else {
            roc
        }
    } else if s_l - 32768 > seq_i {
        roc + 1
    } else {
        roc
    };
    Some((v << 16) | u64::from(seq))
}

/// The RTP header length (fixed part, CSRCs, extension) of `pkt`, bounds-checked.
fn rtp_header_len(pkt: &[u8]) -> Result<usize, SrtpError> {
    if pkt.len() < 12 {
        return Err(SrtpError::TooShort);
    }
    if pkt[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    let mut len = 12 + 4 * usize::from(pkt[0] & 0x0F);
    if pkt[0] & 0x10 != 0 {
        // RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words, then the words.
        let words = pkt.get(len + 2..len + 4).ok_or(SrtpError::TooShort)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if pkt.len() < len {
        return Err(SrtpError::TooShort);
    }
    Ok(len)
}

/// Sequence number and SSRC of a packet already checked to hold 12 bytes.
fn rtp_seq_ssrc(pkt: &[u8]) -> (u16, u32) {
    (
        u16::from_be_bytes([pkt[2], pkt[3]]),
        u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
    )
}

fn check_rtcp_header(pkt: &[u8]) -> Result<(), SrtpError> {
    if pkt.len() < 8 {
        return Err(SrtpError::TooShort);
    }
    if pkt[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    Ok(())
}

fn rtcp_gcm_aad(buf: &[u8], e_index: [u8; 4]) -> [u8; 12] {
    let mut aad = [0u8; 12];
    aad[..8].copy_from_slice(&buf[..8]);
    aad[8..].copy_from_slice(&e_index);
    aad
}

/// The session keys for one of SRTP or SRTCP.
// The CM variant is large (AES round keys plus two SHA-1 states) but lives as long as the
// context and is never moved per packet; boxing it would add an indirection to every packet.
#[allow(clippy::large_enum_variant)]
enum SessionKeys {
    /// AES-CM encryption (RFC 3711 §4.1.1) with HMAC-SHA1 authentication (§4.2.1).
    Cm {
        aes: Aes128Enc,
        salt: [u8; 14],
        auth: Hmac<Sha1>,
    },
    /// AES-GCM (RFC 7714): one key, a 96-bit salt.
    Gcm { aead: LessSafeKey, salt: [u8; 12] },
}

/// RFC 3711 §4.3.2 key derivation labels for one protocol: encryption, authentication, salt.
#[derive(Clone, Copy)]
struct Labels {
    enc: u8,
    auth: u8,
    salt: u8,
}

impl Labels {
    const SRTP: Labels = Labels {
        enc: 0x00,
        auth: 0x01,
        salt: 0x02,
    };
    const SRTCP: Labels = Labels {
        enc: 0x03,
        auth: 0x04,
        salt: 0x05,
    };
}

impl SessionKeys {
    fn derive(master: &SrtpMasterKey, labels: Labels) -> Self {
        let prf = master_prf(master);
        let salt_len = master.profile().master_salt_len();
        let mut key = [0u8; 16];
        let mut salt = [0u8; 14];
        let mut auth = [0u8; 20];
        derive(&prf, master.salt_padded(), labels.enc, &mut key);
        derive(
            &prf,
            master.salt_padded(),
            labels.salt,
            &mut salt[..salt_len],
        );
        if !master.profile().is_aead() {
            derive(&prf, master.salt_padded(), labels.auth, &mut auth);
        }
        let keys = Self::from_parts(master.profile(), &key, &salt[..salt_len], &auth);
        zeroize::Zeroize::zeroize(&mut key);
        zeroize::Zeroize::zeroize(&mut salt);
        zeroize::Zeroize::zeroize(&mut auth);
        keys
    }

    fn from_parts(profile: SrtpProfile, key: &[u8; 16], salt: &[u8], auth: &[u8; 20]) -> Self {
        if profile.is_aead() {
            let mut s = [0u8; 12];
            s.copy_from_slice(&salt[..12]);
            // A 16-byte key is exactly what AES_128_GCM takes, so this cannot fail.
            let unbound = UnboundKey::new(&aead::AES_128_GCM, key).expect("16-byte AES-128 key");
            SessionKeys::Gcm {
                aead: LessSafeKey::new(unbound),
                salt: s,
            }
        } else {
            let mut s = [0u8; 14];
            s.copy_from_slice(&salt[..14]);
            SessionKeys::Cm {
                aes: Aes128Enc::new(&(*key).into()),
                salt: s,
                // Any key length is valid for HMAC, so this cannot fail.
                auth: <Hmac<Sha1> as Mac>::new_from_slice(auth).expect("HMAC takes any key length"),
            }
        }
    }
}

/// The AES-CM PRF keyed with the master key (RFC 3711 §4.3.3).
fn master_prf(master: &SrtpMasterKey) -> Aes128Enc {
    let mut k = [0u8; 16];
    k.copy_from_slice(master.key());
    let aes = Aes128Enc::new(&k.into());
    zeroize::Zeroize::zeroize(&mut k);
    aes
}

/// RFC 3711 §4.3.1 with key derivation rate 0: `x = (label || r) XOR master_salt` with r = 0,
/// the 56-bit key_id right-aligned under the 112-bit salt (so the label lands on byte 7), and
/// the output is the AES-CM keystream from IV `x * 2^16`. For the 96-bit AEAD salt the salt is
/// zero-padded on the right first, as RFC 7714 §11 and libsrtp do.
fn derive(prf: &Aes128Enc, salt14: &[u8; 14], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt14);
    iv[7] ^= label;
    out.fill(0);
    aes_cm_xor(prf, &iv, out);
}

/// XOR `data` with the AES counter-mode keystream starting at block `iv` (RFC 3711 §4.1.1).
/// The block counter is the low 16 bits of the IV, which RFC 3711 leaves zero; a packet is at
/// most 2^16 blocks so the 128-bit increment never carries out of them.
fn aes_cm_xor(aes: &Aes128Enc, iv: &[u8; 16], data: &mut [u8]) {
    // Eight blocks at a time lets the AES-NI backend pipeline its rounds.
    const BATCH: usize = 8;
    let base = u128::from_be_bytes(*iv);
    let mut counter = base;
    let mut blocks = [Block::default(); BATCH];
    for chunk in data.chunks_mut(16 * BATCH) {
        let n = chunk.len().div_ceil(16);
        for b in &mut blocks[..n] {
            *b = counter.to_be_bytes().into();
            counter = counter.wrapping_add(1);
        }
        aes.encrypt_blocks(&mut blocks[..n]);
        // Whole blocks as 128-bit words, the tail byte by byte.
        for (d, k) in chunk.chunks_mut(16).zip(&blocks[..n]) {
            if let Ok(word) = <&mut [u8; 16]>::try_from(&mut *d) {
                let k: [u8; 16] = (*k).into();
                *word = (u128::from_ne_bytes(*word) ^ u128::from_ne_bytes(k)).to_ne_bytes();
            } else {
                for (d, k) in d.iter_mut().zip(k.iter()) {
                    *d ^= *k;
                }
            }
        }
    }
}

/// RFC 3711 §4.1.1: `IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)`.
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *d ^= s;
    }
    iv
}

/// RFC 7714 §8.1: `IV = (0x0000 || SSRC || ROC || SEQ) XOR salt`; ROC || SEQ is the index.
fn gcm_rtp_iv(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut iv = *salt;
    for (d, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[6..12].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *d ^= s;
    }
    iv
}

/// RFC 7714 §9.1: `IV = (0x0000 || SSRC || 0x0000 || 0 || SRTCP index) XOR salt`.
fn gcm_rtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut iv = *salt;
    for (d, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..12].iter_mut().zip(index.to_be_bytes()) {
        *d ^= s;
    }
    iv
}

/// HMAC-SHA1 over `a || b` (RFC 3711 §4.2.1; `b` is the ROC for SRTP, empty for SRTCP). The
/// keyed state is cloned on the stack, so the key schedule is not redone per packet.
fn hmac_sha1(key: &Hmac<Sha1>, a: &[u8], b: &[u8]) -> [u8; 20] {
    let mut mac = key.clone();
    mac.update(a);
    mac.update(b);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_vectors::{hex, Vectors};

    fn rfc3711() -> Vectors {
        Vectors::parse(include_str!("../tests/vectors/rfc3711.txt"))
    }

    fn rfc7714() -> Vectors {
        Vectors::parse(include_str!("../tests/vectors/rfc7714.txt"))
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream for session key and salt, SSRC 0, index 0.
    #[test]
    fn rfc3711_b2_aes_cm_keystream() {
        let v = rfc3711();
        let key: [u8; 16] = v.bytes("b2.session_key").try_into().unwrap();
        let salt: [u8; 14] = v.bytes("b2.session_salt").try_into().unwrap();
        let iv = cm_iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), v.bytes("b2.iv"));
        let aes = Aes128Enc::new(&key.into());
        let mut stream = vec![0u8; 0xFF02 * 16];
        aes_cm_xor(&aes, &iv, &mut stream);
        for (name, block) in [
            ("b2.block_0000", 0x0000),
            ("b2.block_0001", 0x0001),
            ("b2.block_0002", 0x0002),
            ("b2.block_feff", 0xFEFF),
            ("b2.block_ff00", 0xFF00),
            ("b2.block_ff01", 0xFF01),
        ] {
            assert_eq!(
                &stream[block * 16..block * 16 + 16],
                &v.bytes(name)[..],
                "{name}"
            );
        }
    }

    /// RFC 3711 Appendix B.3: session keys from the master key, key derivation rate 0.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let v = rfc3711();
        let master = SrtpMasterKey::new(
            SrtpProfile::Aes128CmSha1_80,
            &v.bytes("b3.master_key"),
            &v.bytes("b3.master_salt"),
        )
        .unwrap();
        let prf = master_prf(&master);
        let mut key = [0u8; 16];
        derive(&prf, master.salt_padded(), 0x00, &mut key);
        assert_eq!(key.to_vec(), v.bytes("b3.cipher_key"));
        let mut salt = [0u8; 14];
        derive(&prf, master.salt_padded(), 0x02, &mut salt);
        assert_eq!(salt.to_vec(), v.bytes("b3.cipher_salt"));
        // The RFC lists 94 bytes of the authentication keystream; HMAC-SHA1 uses the first 20.
        let expected = v.bytes("b3.auth_key");
        let mut auth = vec![0u8; expected.len()];
        derive(&prf, master.salt_padded(), 0x01, &mut auth);
        assert_eq!(auth, expected);
    }

    /// RFC 7714 §16.1.1: AEAD_AES_128_GCM SRTP, session key and salt given directly.
    #[test]
    fn rfc7714_srtp_aead_aes_128_gcm() {
        let v = rfc7714();
        let key: [u8; 16] = v.bytes("key").try_into().unwrap();
        let salt = v.bytes("salt");
        assert_eq!(
            gcm_rtp_iv(&salt.clone().try_into().unwrap(), 0x5501_a0b2, 0xf17b).to_vec(),
            v.bytes("rtp_iv")
        );
        let mut tx = SrtpContext::from_session_keys(SrtpProfile::AeadAes128Gcm, &key, &salt);
        let mut pkt = v.bytes("rtp_plain");
        tx.protect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt, v.bytes("rtp_protected"));
        let mut rx = SrtpContext::from_session_keys(SrtpProfile::AeadAes128Gcm, &key, &salt);
        rx.unprotect_rtp(&mut pkt).unwrap();
        assert_eq!(pkt, v.bytes("rtp_plain"));
        // One flipped ciphertext bit fails authentication.
        let mut bad = v.bytes("rtp_protected");
        bad[20] ^= 1;
        let mut rx = SrtpContext::from_session_keys(SrtpProfile::AeadAes128Gcm, &key, &salt);
        assert_eq!(
            rx.unprotect_rtp(&mut bad),
            Err(SrtpError::AuthenticationFailed)
        );
    }

    /// RFC 7714 §17.1.1: AEAD_AES_128_GCM SRTCP, SRTCP index 0x5d4.
    #[test]
    fn rfc7714_srtcp_aead_aes_128_gcm() {
        let v = rfc7714();
        let key: [u8; 16] = v.bytes("key").try_into().unwrap();
        let salt = v.bytes("salt");
        assert_eq!(
            gcm_rtcp_iv(&salt.clone().try_into().unwrap(), 0x4d61_7273, 0x5d4).to_vec(),
            v.bytes("rtcp_iv")
        );
        let mut tx = SrtpContext::from_session_keys(SrtpProfile::AeadAes128Gcm, &key, &salt);
        tx.set_next_srtcp_index(0x4d61_7273, 0x5d4);
        let mut pkt = v.bytes("rtcp_plain");
        tx.protect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt, v.bytes("rtcp_protected"));
        let mut rx = SrtpContext::from_session_keys(SrtpProfile::AeadAes128Gcm, &key, &salt);
        rx.unprotect_rtcp(&mut pkt).unwrap();
        assert_eq!(pkt, v.bytes("rtcp_plain"));
    }

    #[test]
    fn index_estimation_follows_appendix_a() {
        assert_eq!(estimate_index(None, 7), Some(7));
        // Wrap forward: s_l high, SEQ small -> ROC + 1.
        assert_eq!(estimate_index(Some(65_530), 3), Some(65_536 + 3));
        // Late packet from before a wrap: s_l small, SEQ high -> ROC - 1.
        assert_eq!(estimate_index(Some(65_536 + 2), 65_534), Some(65_534));
        // Before the start of the stream.
        assert_eq!(estimate_index(Some(100), 65_000), None);
    }

    #[test]
    fn replay_window_slides() {
        let mut r = Replay::new(1000);
        r.accept(1000);
        assert_eq!(r.check(1000), Err(SrtpError::Replayed));
        assert_eq!(r.check(999), Ok(()));
        r.accept(999);
        assert_eq!(r.check(999), Err(SrtpError::Replayed));
        r.accept(1200);
        assert_eq!(r.check(1200 - REPLAY_WINDOW), Err(SrtpError::TooOld));
        assert_eq!(r.check(1200 - REPLAY_WINDOW + 1), Ok(()));
        assert_eq!(r.check(1000), Err(SrtpError::TooOld));
    }

    #[test]
    fn header_length_counts_csrcs_and_extension() {
        let mut p = vec![0x80u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(rtp_header_len(&p), Ok(12));
        p[0] = 0x92; // X=1, CC=2
        p.extend_from_slice(&[0; 8]); // two CSRCs
        p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 1, 2, 3, 4]); // one-word extension
        assert_eq!(rtp_header_len(&p), Ok(12 + 8 + 4 + 4));
        assert_eq!(rtp_header_len(&p[..27]), Err(SrtpError::TooShort));
        assert_eq!(rtp_header_len(&[0x40; 12]), Err(SrtpError::BadVersion));
        let _ = hex("00");
    }
}
