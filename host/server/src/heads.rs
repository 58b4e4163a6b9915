//! Request heads checked before hyper reads them, so a malformed or oversized request gets the
//! same JSON error body as every other 4xx. (hyper answers its own parse errors itself, with an
//! empty body and no hook to change it.)
//!
//! [`HeadCheck`] wraps a connection's socket. It follows the incoming byte stream message by
//! message (request framing is unambiguous: `Transfer-Encoding: chunked`, else
//! `Content-Length`, else no body) and checks each head with `httparse`, hyper's own parser,
//! under limits below hyper's. Bytes of good messages pass through untouched; at the first bad
//! head hyper sees the end of the stream instead, finishes what it was writing, and our error
//! response goes out when it shuts the connection down.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest request head (request line plus headers).
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Longest request target.
pub const MAX_URI_BYTES: usize = 16 << 10;
/// Most header fields (hyper's own default).
pub const MAX_HEADERS: usize = 100;

/// Where the incoming stream is.
enum Framing {
    /// At (or inside) a request head; holds the head bytes seen so far.
    Head(Vec<u8>),
    /// Inside a body of known length: bytes left.
    Body(u64),
    /// Inside a chunked body: the chunk-size line so far.
    ChunkSize(Vec<u8>),
    /// Inside chunk data: bytes left, then its CRLF.
    ChunkData(u64),
    /// The trailer section after the last chunk: the current line so far.
    Trailer(Vec<u8>),
    /// Not HTTP/1 we can follow (e.g. an HTTP/2 preface): pass everything to hyper.
    PassThrough,
    /// A bad head was found: nothing more reaches hyper.
    Rejected,
}

pub struct HeadCheck<S> {
    inner: S,
    framing: Framing,
    /// Checked bytes not yet handed to hyper.
    ready: Vec<u8>,
    /// The JSON error response to write before shutting down.
    error: Option<Vec<u8>>,
    written: usize,
}

impl<S> HeadCheck<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, framing: Framing::Head(Vec::new()), ready: Vec::new(), error: None, written: 0 }
    }

    /// Follow `bytes` through the framing; good bytes go to `ready`.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.framing {
                Framing::PassThrough => {
                    self.ready.extend_from_slice(bytes);
                    return;
                }
                Framing::Rejected => return,
                Framing::Body(left) | Framing::ChunkData(left) => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    self.ready.extend_from_slice(&bytes[..n]);
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        // After a body the next head; after a chunk's data its CRLF and size.
                        let next = if matches!(self.framing, Framing::Body(_)) {
                            Framing::Head(Vec::new())
                        } else {
                            Framing::ChunkSize(Vec::new())
                        };
                        self.framing = next;
                    }
                }
                Framing::ChunkSize(line) | Framing::Trailer(line) => {
                    let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(bytes);
                        self.ready.extend_from_slice(bytes);
                        if line.len() > MAX_HEAD_BYTES {
                            // Not something we can follow; hyper judges the body itself.
                            self.framing = Framing::PassThrough;
                        }
                        return;
                    };
                    line.extend_from_slice(&bytes[..=end]);
                    self.ready.extend_from_slice(&bytes[..=end]);
                    bytes = &bytes[end + 1..];
                    let text = String::from_utf8_lossy(line).trim().to_string();
                    self.framing = if matches!(self.framing, Framing::Trailer(_)) {
                        if text.is_empty() {
                            Framing::Head(Vec::new())
                        } else {
                            Framing::Trailer(Vec::new())
                        }
                    } else if text.is_empty() {
                        // The CRLF that ends a chunk's data.
                        Framing::ChunkSize(Vec::new())
                    } else {
                        match u64::from_str_radix(text.split(';').next().unwrap_or("").trim(), 16) {
                            Ok(0) => Framing::Trailer(Vec::new()),
                            Ok(n) => Framing::ChunkData(n),
                            Err(_) => Framing::PassThrough,
                        }
                    };
                }
                Framing::Head(head) => {
                    if head.is_empty() && bytes.starts_with(b"PRI * HTTP/2") {
                        self.framing = Framing::PassThrough;
                        continue;
                    }
                    let before = head.len();
                    head.extend_from_slice(bytes);
                    match check_head(head) {
                        Ok(None) => {
                            if head.len() > MAX_HEAD_BYTES {
                                return self.reject(431, "request head over the limit of 64 KiB");
                            }
                            return;
                        }
                        Ok(Some((len, body))) => {
                            // The whole head (earlier reads held it back) goes to hyper at once.
                            let used = len - before;
                            self.ready.extend_from_slice(&head[..len]);
                            bytes = &bytes[used..];
                            self.framing = body;
                        }
                        Err((status, detail)) => return self.reject(status, &detail),
                    }
                }
            }
        }
    }

    fn reject(&mut self, status: u16, detail: &str) {
        tracing::debug!(status, "request head refused: {detail}");
        self.framing = Framing::Rejected;
        self.error = Some(error_response(status, detail));
    }
}

/// `Ok(None)`: the head is not complete yet; `Ok(Some((head length, what follows)))`; or the
/// status and message for a bad head.
fn check_head(head: &[u8]) -> Result<Option<(usize, Framing)>, (u16, String)> {
    // Empty lines before a request line are allowed (RFC 9112 §2.2); httparse skips them.
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            // A request line alone can already be too long.
            if !head.contains(&b'\n') && head.len() > MAX_URI_BYTES + 64 {
                return Err((414, format!("request target over the limit of {MAX_URI_BYTES} bytes")));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err((431, format!("more than {MAX_HEADERS} header fields"))),
        Err(e) => return Err((400, format!("malformed request: {e}"))),
    };
    if req.path.is_some_and(|p| p.len() > MAX_URI_BYTES) {
        return Err((414, format!("request target over the limit of {MAX_URI_BYTES} bytes")));
    }
    if len > MAX_HEAD_BYTES {
        return Err((431, "request head over the limit of 64 KiB".into()));
    }
    let values = |name: &'static str| -> Vec<String> {
        req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value).to_string()).collect()
    };
    let codings: Vec<String> =
        values("transfer-encoding").iter().flat_map(|v| v.split(',').map(|c| c.trim().to_ascii_lowercase()).collect::<Vec<_>>()).collect();
    if !codings.is_empty() {
        if codings.last().map(String::as_str) != Some("chunked") || req.version != Some(1) {
            return Err((400, "Transfer-Encoding must end with chunked".into()));
        }
        return Ok(Some((len, Framing::ChunkSize(Vec::new()))));
    }
    let mut length: Option<u64> = None;
    for v in values("content-length") {
        for part in v.split(',') {
            let n: u64 = part.trim().parse().map_err(|_| (400, format!("invalid Content-Length {v:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err((400, "conflicting Content-Length values".into()));
            }
            length = Some(n);
        }
    }
    Ok(Some((
        len,
        match length {
            Some(n) if n > 0 => Framing::Body(n),
            _ => Framing::Head(Vec::new()),
        },
    )))
}

/// A complete response with the host's JSON error body; the connection closes after it.
fn error_response(status: u16, detail: &str) -> Vec<u8> {
    let reason = axum::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let body = serde_json::json!({ "detail": detail }).to_string();
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadCheck<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(out.remaining());
                out.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if matches!(this.framing, Framing::Rejected) {
                // End of stream for hyper: it finishes what it writes, then shuts down.
                return Poll::Ready(Ok(()));
            }
            let mut buf = [0u8; 16 << 10];
            let mut read = ReadBuf::new(&mut buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.feed(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadCheck<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(error) = &this.error {
            while this.written < error.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &error[this.written..]))?;
                if n == 0 {
                    break;
                }
                this.written += n;
            }
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Vec<u8>, Option<String>) {
        let mut h = HeadCheck::new(());
        // Byte by byte, as the worst split a socket can give.
        for b in input {
            h.feed(std::slice::from_ref(b));
        }
        (h.ready, h.error.map(|e| String::from_utf8(e).unwrap()))
    }

    #[test]
    fn good_messages_pass_through_whatever_their_framing() {
        let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: v\r\n\r\nGET /d HTTP/1.1\r\n\r\n";
        let (ready, error) = run(stream);
        assert_eq!(ready, stream);
        assert!(error.is_none());
    }

    #[test]
    fn a_bad_head_after_good_messages_is_answered_in_json() {
        let good: &[u8] = b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nGET";
        for (bad, status) in [
            (b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec(), "400"),
            (b"GET /x HTTP/1.1\r\nContent-Length: -4\r\n\r\n".to_vec(), "400"),
            (b"G(T /x HTTP/1.1\r\n\r\n".to_vec(), "400"),
            (format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_BYTES + 1)).into_bytes(), "414"),
            (format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1)).into_bytes(), "431"),
            (format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(MAX_HEAD_BYTES)).into_bytes(), "431"),
        ] {
            let (ready, error) = run(&[good, &bad].concat());
            assert_eq!(ready, good, "{status}");
            let error = error.unwrap_or_else(|| panic!("{status}: not refused"));
            assert!(error.starts_with(&format!("HTTP/1.1 {status} ")), "{error}");
            assert!(error.contains("content-type: application/json") && error.contains("{\"detail\":"), "{error}");
        }
    }
}
