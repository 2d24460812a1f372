//! HTTP Digest for SIP (RFC 2617, RFC 7616 with MD5; RFC 3261 §22.4), as a UA computes it.

use md5::{Digest, Md5};

use crate::msg::auth_param;

/// Lower-case hex MD5 of `s`.
pub fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The credentials a UA answers `challenge` (a WWW-Authenticate or Proxy-Authenticate value)
/// with, for `method` on `uri`. `nc` counts uses of this nonce (1 for the first),
/// `cnonce` is the client nonce. Returns the Authorization / Proxy-Authorization value.
///
/// qop=auth is used when the challenge offers it; without qop the RFC 2069 form is used.
/// Only MD5 (the algorithm IMS digest registrars and JsSIP use) is supported: another
/// algorithm is an error.
pub fn authorization(
    challenge: &str,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, String> {
    if !challenge
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("digest")
    {
        return Err(format!("not a Digest challenge: {challenge}"));
    }
    let realm = auth_param(challenge, "realm").ok_or("challenge without realm")?;
    let nonce = auth_param(challenge, "nonce").ok_or("challenge without nonce")?;
    let algorithm = auth_param(challenge, "algorithm").unwrap_or_else(|| "MD5".to_owned());
    if !algorithm.eq_ignore_ascii_case("MD5") {
        return Err(format!("unsupported digest algorithm {algorithm}"));
    }
    let opaque = auth_param(challenge, "opaque");
    let qop_auth = auth_param(challenge, "qop")
        .is_some_and(|q| q.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth")));
    let ha1 = md5_hex(&format!("{username}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = if qop_auth {
        md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
    } else {
        md5_hex(&format!("{ha1}:{nonce}:{ha2}"))
    };
    let mut out = format!(
        "Digest algorithm=MD5, username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
    );
    if let Some(o) = opaque {
        out.push_str(&format!(", opaque=\"{o}\""));
    }
    if qop_auth {
        out.push_str(&format!(", qop=auth, cnonce=\"{cnonce}\", nc={nc}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5, with the SIP method and URI changed back to its HTTP example.
    #[test]
    fn rfc2617_example() {
        let challenge = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let v = authorization(
            challenge,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle Of Life",
            "0a4f113b",
            1,
        )
        .unwrap();
        assert!(
            v.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{v}"
        );
        assert!(v.contains("nc=00000001"), "{v}");
        assert!(
            v.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#),
            "{v}"
        );
    }

    #[test]
    fn without_qop() {
        let v = authorization(
            r#"Digest realm="r", nonce="n""#,
            "REGISTER",
            "sip:r",
            "u",
            "p",
            "c",
            1,
        )
        .unwrap();
        let expect = md5_hex(&format!(
            "{}:n:{}",
            md5_hex("u:r:p"),
            md5_hex("REGISTER:sip:r")
        ));
        assert!(v.contains(&expect));
        assert!(!v.contains("qop"));
    }
}
