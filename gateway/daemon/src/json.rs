//! The little JSON the daemon writes by hand (the demo page's config, call records): string
//! escaping per RFC 8259 §7.

/// `s` as a JSON string. Beyond what RFC 8259 requires, `<`, `>`, `&`, U+2028 and U+2029 are
/// escaped too, so the text is safe to embed anywhere, HTML included.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Keeps the JSON safe to embed anywhere, HTML included.
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
