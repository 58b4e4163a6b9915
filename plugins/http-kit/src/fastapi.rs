//! FastAPI's validation errors, as the Fooocus-API answers them: 422 with
//! `{"detail": [{"type", "loc", "msg", "input", "ctx"?}, …], "body": …}`.

use serde_json::{json, Value};

/// Bodies larger than this (as JSON text) are not echoed back in a 422.
const MAX_ECHOED_BODY: usize = 64 << 10;

/// One entry of `detail`: the error kind (`missing`, `enum`, …), where (`["body", "image"]`), the
/// message, the input and optional context.
pub fn error_item(kind: &str, loc: &[Value], msg: &str, input: &Value, ctx: Option<Value>) -> Value {
    let mut item = json!({"type": kind, "loc": loc, "msg": msg, "input": input});
    if let Some(ctx) = ctx {
        item["ctx"] = ctx;
    }
    item
}

/// The 422 body; a request body over 64 KiB is echoed as `null` (sending megabytes back helps nobody).
pub fn unprocessable_body(detail: Vec<Value>, body: Value) -> Value {
    let body = if body.to_string().len() > MAX_ECHOED_BODY { Value::Null } else { body };
    json!({"detail": detail, "body": body})
}
