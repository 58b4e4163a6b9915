//! Reading a client's request body under the `--max-body-mb` bound.
//!
//! Answering 413 and closing while the client is still sending makes the kernel reset the
//! connection, and a reset can discard the 413 before the client reads it (it sees "broken
//! pipe" instead). So, as nginx's lingering close does, an over-limit body is read on and thrown
//! away — never stored — for a bounded number of bytes and seconds before the answer goes out.
//! A client that sent `Expect: 100-continue` with an over-limit `Content-Length` is answered at
//! once: it has sent nothing yet and waits for our word.
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use http_body_util::BodyExt;

/// At most this many bytes past the limit are read and discarded before a 413.
const DRAIN_BYTES: usize = 256 << 20;
/// And for at most this long.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The body was over `limit` bytes.
#[derive(Debug)]
pub struct TooLarge;

/// The whole body when it holds at most `limit` bytes.
pub async fn read_bounded(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, TooLarge> {
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    let expects_continue = headers.get("expect").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && declared.is_some_and(|n| n > limit as u64) {
        return Err(TooLarge);
    }
    let mut body = body;
    let mut kept = Vec::with_capacity(declared.map_or(0, |n| n.min(limit as u64) as usize));
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else { continue };
        if kept.len() + data.len() > limit {
            drain(body).await;
            return Err(TooLarge);
        }
        kept.extend_from_slice(&data);
    }
    Ok(Bytes::from(kept))
}

/// Reads and drops what is left of `body`, within the drain bounds.
async fn drain(mut body: Body) {
    let reading = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, reading).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (axum::http::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_read_whole_and_larger_ones_refused() {
        let ok = read_bounded(&headers(&[]), Body::from(vec![7u8; 100]), 100).await.unwrap();
        assert_eq!(ok.len(), 100);
        assert!(read_bounded(&headers(&[]), Body::from(vec![7u8; 101]), 100).await.is_err());
    }

    #[tokio::test]
    async fn an_expect_continue_client_is_refused_before_it_sends() {
        // The body would be small, but the declared length decides: nothing is read.
        let h = headers(&[("content-length", "1000"), ("expect", "100-continue")]);
        assert!(read_bounded(&h, Body::from(vec![1u8; 10]), 100).await.is_err());
        let h = headers(&[("content-length", "10"), ("expect", "100-continue")]);
        assert_eq!(read_bounded(&h, Body::from(vec![1u8; 10]), 100).await.unwrap().len(), 10);
    }
}
