//! The host's HTTP request and response as plugins see them (every contract version has the
//! same two records; the conversions are below).

use crate::bindings::{v0_1, v0_2};

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path without the query string, e.g. `/v1/generation/text-to-image`.
    pub path: String,
    /// Raw query string without the leading `?` (empty when absent).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

macro_rules! http_conversions {
    ($request:ty, $response:ty) => {
        impl From<Request> for $request {
            fn from(r: Request) -> Self {
                Self { method: r.method, path: r.path, query: r.query, headers: r.headers, body: r.body }
            }
        }
        impl From<$response> for Response {
            fn from(r: $response) -> Self {
                Self { status: r.status, headers: r.headers, body: r.body }
            }
        }
    };
}

http_conversions!(v0_1::Request, v0_1::Response);
http_conversions!(v0_2::Request, v0_2::Response);
