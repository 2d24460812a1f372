//! The operator demo softphone served on the WS and WSS listeners: `GET /` is the page,
//! `GET /demo/FILE` its files, `GET /demo/config.json` what the page needs to know (the IMS
//! domain, the WebSocket path). The files are `demo/dist/`, embedded at build time by
//! `build.rs`; when the page was not built a short page says how to build it.
//!
//! Everything here is pure (no I/O): `web.rs` writes the bytes [`reply`] returns.

use std::borrow::Cow;

include!(concat!(env!("OUT_DIR"), "/demo_assets.rs"));

const HTML: &str = "text/html; charset=utf-8";

/// Served as the page when `demo/dist/` was absent at build time.
pub const FALLBACK_PAGE: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Estuary</title></head><body><h1>Estuary gateway</h1>\n<p>demo page not built: run \
<code>make demo</code> (or <code>make run</code>)</p>\n<p>SIP over WebSocket is served on this \
listener (subprotocol <code>sip</code>).</p></body></html>\n";

/// Whether the built page is embedded (false: [`FALLBACK_PAGE`] stands in for it).
#[cfg(test)]
fn built() -> bool {
    FILES.iter().any(|(name, _, _)| *name == "index.html")
}

/// The embedded file for a request path: `/`, `/demo` and `/demo/` are the page, `/demo/X`
/// is `dist/X`. Returns the content type and the bytes.
pub fn lookup(path: &str) -> Option<(&'static str, &'static [u8])> {
    let name = match path {
        "/" | "/demo" | "/demo/" => "index.html",
        _ => path.strip_prefix("/demo/")?,
    };
    if let Some((_, content_type, bytes)) = FILES.iter().find(|(n, _, _)| *n == name) {
        return Some((content_type, bytes));
    }
    (name == "index.html").then_some((HTML, FALLBACK_PAGE.as_bytes()))
}

/// The body of `/demo/config.json`: `{"domain": "...", "ws_path": "/"}`.
pub fn config_json(domain: &str) -> String {
    format!(
        "{{\"domain\": {}, \"ws_path\": \"/\"}}\n",
        crate::json::string(domain)
    )
}

/// One complete HTTP answer to a plain (non-upgrade) request on a web listener.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub reason: &'static str,
    pub content_type: &'static str,
    /// Header lines beyond Content-Type/Length, each ending in CRLF.
    pub headers: String,
    pub body: Cow<'static, [u8]>,
}

impl Reply {
    /// The response as bytes; without the body for HEAD (Content-Length stays the GET one).
    pub fn to_bytes(&self, with_body: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len(),
            self.headers
        )
        .into_bytes();
        if with_body {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The answer to `method path` on a web listener. `host` is the request's Host header: the
/// page may open a WebSocket back to exactly that origin (`wss://` when `secure`, `ws://` on
/// the plain listener) and nowhere else. `domain` goes into `/demo/config.json`.
pub fn reply(method: &str, path: &str, host: Option<&str>, secure: bool, domain: &str) -> Reply {
    let mut headers = security_headers(host, secure);
    let (status, reason, content_type, body): (
        u16,
        &'static str,
        &'static str,
        Cow<'static, [u8]>,
    ) = match method {
        "GET" | "HEAD" => {
            if path == "/demo/config.json" {
                let body = config_json(domain).into_bytes();
                (200, "OK", "application/json", Cow::Owned(body))
            } else if let Some((content_type, bytes)) = lookup(path) {
                (200, "OK", content_type, Cow::Borrowed(bytes))
            } else {
                (
                    404,
                    "Not Found",
                    "text/plain; charset=utf-8",
                    Cow::Borrowed(b"not found\n"),
                )
            }
        }
        _ => {
            headers.push_str("Allow: GET, HEAD\r\n");
            (
                405,
                "Method Not Allowed",
                "text/plain; charset=utf-8",
                Cow::Borrowed(b""),
            )
        }
    };
    Reply {
        status,
        reason,
        content_type,
        headers,
        body,
    }
}

/// Cache-Control, nosniff and a Content-Security-Policy that lets the page load only its own
/// files and connect only to its own origin and that origin's WebSocket.
pub fn security_headers(host: Option<&str>, secure: bool) -> String {
    let ws_origin = host.filter(|h| plain_host(h)).map(|h| {
        let scheme = if secure { "wss" } else { "ws" };
        format!(" {scheme}://{h}")
    });
    format!(
        "Cache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\n\
         X-Frame-Options: DENY\r\n\
         Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; \
         img-src 'self' data:; media-src 'self' blob: mediastream:; connect-src 'self'{}; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n",
        ws_origin.unwrap_or_default()
    )
}

/// `host[:port]`, `[v6]:port`: nothing that could end the header or widen the policy.
fn plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_at_the_root_and_under_demo() {
        let (content_type, root) = lookup("/").unwrap();
        assert_eq!(content_type, HTML);
        assert_eq!(lookup("/demo/").unwrap().1, root);
        assert_eq!(lookup("/demo/index.html").unwrap().1, root);
        if built() {
            let page = std::str::from_utf8(root).unwrap();
            assert!(page.contains("/demo/app.js"), "{page}");
            assert_eq!(
                lookup("/demo/app.js").unwrap().0,
                "text/javascript; charset=utf-8"
            );
            assert_eq!(
                lookup("/demo/style.css").unwrap().0,
                "text/css; charset=utf-8"
            );
        } else {
            assert_eq!(root, FALLBACK_PAGE.as_bytes());
        }
    }

    #[test]
    fn unknown_and_escaping_paths_are_not_found() {
        for path in [
            "/x",
            "/demo/nope.js",
            "/demo/../Cargo.toml",
            "/demo//index.html",
            "",
            "/demoindex.html",
        ] {
            assert!(lookup(path).is_none(), "{path}");
        }
        assert_eq!(reply("GET", "/nope", None, true, "d").status, 404);
        let r = reply("POST", "/", None, true, "d");
        assert_eq!(r.status, 405);
        assert!(r.headers.contains("Allow: GET, HEAD\r\n"));
    }

    #[test]
    fn config_json_escapes_the_domain() {
        assert_eq!(
            config_json("ims.test"),
            "{\"domain\": \"ims.test\", \"ws_path\": \"/\"}\n"
        );
        assert_eq!(
            config_json("a\"b\\c</script>\n"),
            "{\"domain\": \"a\\\"b\\\\c\\u003c/script\\u003e\\u000a\", \"ws_path\": \"/\"}\n"
        );
    }

    #[test]
    fn the_policy_names_the_request_origin_only_when_it_is_a_plain_host() {
        let h = security_headers(Some("127.0.0.1:8443"), true);
        assert!(
            h.contains("connect-src 'self' wss://127.0.0.1:8443;"),
            "{h}"
        );
        let h = security_headers(Some("[::1]:8080"), false);
        assert!(h.contains("connect-src 'self' ws://[::1]:8080;"), "{h}");
        for hostile in ["evil; script-src *", "a\r\nSet-Cookie: x", "a b", "*", ""] {
            let h = security_headers(Some(hostile), true);
            assert!(h.contains("connect-src 'self'; "), "{hostile:?}: {h}");
        }
        assert!(security_headers(None, true).contains("connect-src 'self'; "));
    }

    #[test]
    fn head_keeps_the_length_and_drops_the_body() {
        let r = reply("HEAD", "/demo/config.json", Some("h"), true, "ims.test");
        let get = String::from_utf8(r.to_bytes(true)).unwrap();
        let head = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(get.starts_with(&head) && get.len() > head.len());
        assert!(head.contains(&format!("Content-Length: {}\r\n", r.body.len())));
        assert!(head.ends_with("\r\n\r\n"));
    }
}
