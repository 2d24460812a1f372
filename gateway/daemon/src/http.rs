//! Just enough HTTP/1.1 for the admin endpoint and for telling a plain GET from a WebSocket
//! upgrade on the web listeners. One request per connection; the response closes it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Largest request head accepted; browsers' upgrade requests are well under 2 KiB.
pub const MAX_HEAD: usize = 8192;

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The peer closed before a complete head.
    Eof,
    /// No blank line within [`MAX_HEAD`] bytes.
    TooLarge,
    Io(io::ErrorKind),
}

/// Reads until the blank line ending the head. Returns every byte read (which may run past
/// the head) and the length of the head including its CRLFCRLF.
pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<(Vec<u8>, usize), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| HeadError::Io(e.kind()))?;
        if n == 0 {
            return Err(HeadError::Eof);
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((buf, from + i + 4));
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// A parsed request line and headers.
#[derive(Debug)]
pub struct RequestHead {
    pub method: String,
    /// The path without its query string.
    pub path: String,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    /// `None` for anything that is not `METHOD SP TARGET SP HTTP/1.x` plus `name: value` lines.
    pub fn parse(head: &[u8]) -> Option<RequestHead> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let method = request_line.next()?;
        let target = request_line.next()?;
        let version = request_line.next()?;
        if request_line.next().is_some()
            || method.is_empty()
            || !method.bytes().all(|b| b.is_ascii_uppercase())
            || !version.starts_with("HTTP/1.")
        {
            return None;
        }
        let mut headers = Vec::new();
        for line in lines.take_while(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let path = target.split('?').next().unwrap_or(target).to_owned();
        Some(RequestHead {
            method: method.to_owned(),
            path,
            headers,
        })
    }

    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Upgrade: websocket` (RFC 6455 §4.2.1), the only upgrade we serve.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header("upgrade").is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
    }
}

/// Writes a complete response and closes our side.
pub async fn respond<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: u16,
    reason: &str,
    extra_headers: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    s.flush().await?;
    s.shutdown().await
}

/// A stream that first replays bytes already read (the request head we inspected), so the
/// WebSocket handshake can parse the request itself.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_head_split_across_reads_and_keeps_the_rest() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            client
                .write_all(b"GET /x?y HTTP/1.1\r\nHost: a\r")
                .await
                .unwrap();
            client.write_all(b"\n\r\nrest").await.unwrap();
        });
        let (buf, len) = read_head(&mut server).await.unwrap();
        assert_eq!(&buf[len..], b"rest");
        let head = RequestHead::parse(&buf[..len]).unwrap();
        assert_eq!((head.method.as_str(), head.path.as_str()), ("GET", "/x"));
        assert_eq!(head.header("HOST"), Some("a"));
        assert!(!head.is_websocket_upgrade());
    }

    #[tokio::test]
    async fn refuses_endless_heads() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'A'; MAX_HEAD + 10]).await.unwrap();
        assert_eq!(read_head(&mut server).await, Err(HeadError::TooLarge));
    }

    #[test]
    fn rejects_non_http() {
        assert!(RequestHead::parse(b"\x16\x03\x01garbage\r\n\r\n").is_none());
        assert!(RequestHead::parse(b"INVITE sip:a@b SIP/2.0\r\n\r\n").is_none());
        assert!(RequestHead::parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n").is_none());
        let h = RequestHead::parse(b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\n\r\n").unwrap();
        assert!(h.is_websocket_upgrade());
    }

    #[tokio::test]
    async fn prefixed_replays_then_reads_inner() {
        let mut s = Prefixed::new(b"abc".to_vec(), &b"def"[..]);
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "abcdef");
    }
}
