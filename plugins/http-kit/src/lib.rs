//! Shared pieces of focal's HTTP endpoint plugins (no bindings, so every contract version can use
//! them): `multipart/form-data` bodies split into parts, query-string parameters, and FastAPI's
//! validation-error body, which Fooocus-API clients read.

pub mod fastapi;

/// One part of a `multipart/form-data` body: its field name and bytes.
pub struct Part {
    pub name: String,
    pub data: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn disposition_param(header: &str, key: &str) -> Option<String> {
    header.split(';').map(str::trim).find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim().trim_matches('"').to_string())
    })
}

pub fn parse(content_type: &str, body: &[u8]) -> Result<Vec<Part>, String> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_string())
        .filter(|_| content_type.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
        .ok_or("expected a multipart/form-data body with a boundary")?;
    let delim = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut pos = find(body, &delim, 0).ok_or("multipart body without its boundary")? + delim.len();
    loop {
        if body[pos..].starts_with(b"--") {
            break;
        }
        let head_start = pos + if body[pos..].starts_with(b"\r\n") { 2 } else { 0 };
        let head_end = find(body, b"\r\n\r\n", head_start).ok_or("multipart part without headers")?;
        let next = find(body, &[b"\r\n".as_slice(), &delim].concat(), head_end + 4).ok_or("multipart body is not terminated")?;
        let headers = String::from_utf8_lossy(&body[head_start..head_end]);
        let disposition = headers
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .ok_or("multipart part without Content-Disposition")?;
        let name = disposition_param(disposition, "name").ok_or("multipart part without a name")?;
        parts.push(Part { name, data: body[head_end + 4..next].to_vec() });
        pos = next + 2 + delim.len();
        if pos > body.len() {
            return Err("multipart body is truncated".into());
        }
    }
    Ok(parts)
}

/// The first header named `name` (any case).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `+` and `%XX` decoded, as form query strings are written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `key` in a query string (`a=1&b=x%20y`), decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| percent_decode(k) == key)
        .map(|(_, v)| percent_decode(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_form() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na cat\r\n--XX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\r\nbin\r\n--XX--\r\n";
        let parts = parse("multipart/form-data; boundary=XX", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!((parts[0].name.as_str(), parts[0].data.as_slice()), ("prompt", b"a cat".as_slice()));
        assert_eq!(parts[1].data, b"\x89PNG\r\n\r\nbin");
        assert!(parse("application/json", body).is_err());
        assert!(
            parse("multipart/form-data; boundary=XX", b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated").is_err()
        );
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(query_param("a=1&image_type=An%69me&c", "image_type").as_deref(), Some("Anime"));
        assert_eq!(query_param("q=a+b", "q").as_deref(), Some("a b"));
        assert_eq!(query_param("c", "c").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "b"), None);
    }
}
