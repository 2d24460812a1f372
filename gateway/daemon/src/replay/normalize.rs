//! What of a SIP message a replay compares, as text: the start line, the headers that carry
//! meaning (in order), and the SDP body line by line, with every value the gateway draws at
//! random replaced by a placeholder numbered in order of first appearance (`<1>`, `<2>`...).
//! Two captures of the same behaviour then normalise to the same text even though their tags,
//! branches, Call-IDs, tokens, ICE credentials, keys and ports differ; a value that changes
//! where it should recur (a tag not kept, a Call-ID leaking to the other leg) shows up as a
//! different placeholder.

use std::collections::HashMap;

/// Headers compared, by canonical lower-case name. Everything else (User-Agent, Server,
/// Date, Content-Length, Allow, Supported...) is left out: versions and capability lists are
/// not behaviour.
const HEADERS: &[&str] = &[
    "via", "from", "to", "call-id", "cseq", "contact", "route", "record-route", "path", "service-route",
    "p-asserted-identity", "p-preferred-identity", "content-type", "max-forwards", "expires", "min-expires",
    "require", "reason", "warning", "retry-after", "www-authenticate", "proxy-authenticate", "authorization",
    "proxy-authorization", "rseq", "rack", "session-expires", "event", "refer-to", "p-charging-vector",
];

/// Lower-case long form of a header name (RFC 3261 §7.3.3 compact forms expanded by the SIP
/// crate's own table).
pub(super) fn canonical_name(name: &str) -> String {
    estuary_sip::canonical_name(name.trim()).to_ascii_lowercase()
}

/// Placeholders for one capture side, numbered in order of first appearance.
#[derive(Default)]
struct Tokens {
    seen: HashMap<String, usize>,
}

impl Tokens {
    fn placeholder(&mut self, value: &str) -> String {
        let n = self.seen.len() + 1;
        format!("<{}>", self.seen.entry(value.to_owned()).or_insert(n))
    }

    /// Replaces, in `text`, every word that looks drawn at random: addresses with ports,
    /// long hex strings (fingerprints, keys), and tokens mixing letters and digits (tags,
    /// branches, Call-IDs, ICE credentials, Path tokens). Names such as `alice`, `ims.test`
    /// or `PCMU` stay.
    fn scrub(&mut self, text: &str) -> String {
        self.scrub_with(text, false)
    }

    /// As [`Self::scrub`], and (for SDP) numbers of four digits or more: ports, session
    /// ids, SSRCs, candidate priorities. Payload types, ptimes and counts stay.
    fn scrub_sdp(&mut self, text: &str) -> String {
        self.scrub_with(text, true)
    }

    fn scrub_with(&mut self, text: &str, numbers: bool) -> String {
        let mut out = String::with_capacity(text.len());
        let mut word = String::new();
        // The character before the current word: a number after '/' is a clock rate or a
        // version, not a port.
        let mut before = ' ';
        let mut last = ' ';
        for ch in text.chars().chain(std::iter::once('\u{0}')) {
            // Word characters: what tokens, hosts and numbers are made of.
            if is_word_char(ch) {
                if word.is_empty() {
                    before = last;
                }
                word.push(ch);
            } else {
                if !word.is_empty() {
                    let number = numbers && before != '/' && word.len() >= 4 && word.chars().all(|c| c.is_ascii_digit());
                    if number || looks_random(&word) {
                        out.push_str(&self.placeholder(&word));
                    } else {
                        out.push_str(&word);
                    }
                    word.clear();
                }
                if ch != '\u{0}' {
                    out.push(ch);
                }
            }
            last = ch;
        }
        out
    }
}

/// Whether a scrubbing word character.
fn is_word_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '.' | '_' | '+' | '~' | '!' | '*' | '%')
}

/// The words of `text` as the comparison splits them, with their byte ranges, and whether
/// each is a variable value (drawn at random, an address, a number of four digits or more:
/// ports, SSRCs, session ids). Live replay maps these between captures.
pub(super) fn words(text: &str) -> Vec<(std::ops::Range<usize>, bool)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, ch) in text.char_indices().chain(std::iter::once((text.len(), '\u{0}'))) {
        match (is_word_char(ch), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let w = &text[s..i];
                let number = w.len() >= 4 && w.chars().all(|c| c.is_ascii_digit());
                out.push((s..i, number || looks_random(w)));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Whether a word is a value drawn at random or an address (compared by consistency).
fn looks_random(word: &str) -> bool {
    let w = word.trim_matches(|c: char| matches!(c, ':' | '.' | '=' | '/'));
    if w.is_empty() {
        return false;
    }
    // host:port or a bare IPv4 address.
    if w.parse::<std::net::SocketAddr>().is_ok() || w.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    // sip:user@host forms arrive split at '@' and ';', so words here are single tokens.
    let digits = w.chars().filter(char::is_ascii_digit).count();
    let letters = w.chars().filter(char::is_ascii_alphabetic).count();
    // Hex with separators (fingerprints) or long mixed tokens.
    (w.len() >= 6 && digits > 0 && letters > 0 && !is_word_like(w)) || (w.len() >= 16 && digits + letters >= 16)
}

/// Mixed tokens that are really names: codec names, SIP versions, known words with digits.
fn is_word_like(w: &str) -> bool {
    const KEEP: &[&str] = &["SIP/2.0", "RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "RTP/AVPF", "RTP/SAVPF", "sha-256", "sha-1", "telephone-event", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM", "H264", "G722", "AMR-WB", "IP4", "IP6", "MD5", "opus/48000/2"];
    KEEP.iter().any(|k| w.eq_ignore_ascii_case(k)) || w.contains("/8000") || w.contains("/16000") || w.contains("/48000") || w.contains("/90000") || w.starts_with("z9hG4bK") && w.len() <= 7
}

/// The comparable form of one message.
fn canonical(data: &[u8], tokens: &mut Tokens) -> String {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let mut out = String::new();
    out.push_str(&tokens.scrub(start));
    out.push('\n');
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = canonical_name(name);
        if !HEADERS.contains(&name.as_str()) {
            continue;
        }
        out.push_str(&name);
        out.push_str(": ");
        out.push_str(&tokens.scrub(value.trim()));
        out.push('\n');
    }
    for line in body.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        out.push_str("  ");
        out.push_str(&sdp_line(line, tokens));
        out.push('\n');
    }
    out
}

/// One SDP line: credentials, fingerprints and keys are whole placeholders (their alphabets
/// include separators), everything else is scrubbed word by word.
fn sdp_line(line: &str, tokens: &mut Tokens) -> String {
    for attr in ["a=ice-ufrag:", "a=ice-pwd:"] {
        if let Some(v) = line.strip_prefix(attr) {
            return format!("{attr}{}", tokens.placeholder(v.trim()));
        }
    }
    if let Some(v) = line.strip_prefix("a=fingerprint:") {
        let (hash, value) = v.trim().split_once(' ').unwrap_or(("", v));
        return format!("a=fingerprint:{hash} {}", tokens.placeholder(value.trim()));
    }
    if let Some((before, key)) = line.split_once("inline:") {
        let (key, rest) = key.split_once('|').map_or((key, String::new()), |(k, r)| (k, format!("|{r}")));
        return format!("{}inline:{}{rest}", tokens.scrub_sdp(before), tokens.placeholder(key.trim()));
    }
    tokens.scrub_sdp(line)
}

/// The comparable form of one side's messages, retransmissions (byte-identical repeats)
/// folded, tokens numbered across the side.
pub fn sequence<'a>(messages: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    let mut tokens = Tokens::default();
    let mut seen: Vec<&[u8]> = Vec::new();
    let mut out = Vec::new();
    for m in messages {
        if seen.contains(&m) {
            continue;
        }
        seen.push(m);
        out.push(canonical(m, &mut tokens));
    }
    out
}

/// A line diff: `-` lines only in `expected`, `+` lines only in `actual`, in order.
pub fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    // Longest common subsequence: messages are a few dozen lines.
    let mut lcs = vec![vec![0usize; a.len() + 1]; e.len() + 1];
    for i in (0..e.len()).rev() {
        for j in (0..a.len()).rev() {
            lcs[i][j] = if e[i] == a[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < e.len() || j < a.len() {
        if i < e.len() && j < a.len() && e[i] == a[j] {
            out.push_str(&format!("    {}\n", e[i]));
            i += 1;
            j += 1;
        } else if j < a.len() && (i == e.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("  + {}\n", a[j]));
            j += 1;
        } else {
            out.push_str(&format!("  - {}\n", e[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "INVITE sip:bob@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK7f3k2q9x\r\nFrom: <sip:alice@ims.test>;tag=9fa3b2c1\r\nTo: <sip:bob@ims.test>\r\nCall-ID: 4k2j3h4g5f6d7s8a\r\nCSeq: 1 INVITE\r\nUser-Agent: Estuary/0.1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\no=- 1234567 1 IN IP4 127.0.0.1\r\nm=audio 30000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n";

    #[test]
    fn random_values_are_matched_by_consistency() {
        let b = A.replace("7f3k2q9x", "aa11bb22").replace("9fa3b2c1", "0c0d0e0f").replace("4k2j3h4g5f6d7s8a", "zz99yy88xx77ww66").replace("30000", "30010").replace("Estuary/0.1", "Estuary/0.2");
        assert_eq!(sequence([A.as_bytes()].into_iter()), sequence([b.as_bytes()].into_iter()));
        let text = &sequence([A.as_bytes()].into_iter())[0];
        assert!(text.contains("from: <sip:alice@ims.test>;tag=<"), "{text}");
        assert!(text.contains("PCMU/8000") && !text.contains("User-Agent"), "{text}");
    }

    #[test]
    fn a_changed_behaviour_is_a_difference() {
        // The same tag where a fresh one belongs, a different status: both show.
        let first = sequence([A.as_bytes(), A.replace("INVITE sip", "ACK sip").as_bytes()].into_iter());
        let changed = A.replace("INVITE sip", "ACK sip").replace("CSeq: 1 INVITE", "CSeq: 2 INVITE");
        let second = sequence([A.as_bytes(), changed.as_bytes()].into_iter());
        assert_ne!(first, second);
        let d = diff(&first[1], &second[1]);
        assert!(d.contains("  - cseq: 1 INVITE") && d.contains("  + cseq: 2 INVITE"), "{d}");
        // Retransmissions fold.
        assert_eq!(sequence([A.as_bytes(), A.as_bytes()].into_iter()).len(), 1);
    }
}
