//! `multipart/form-data` for the v1 image routes: parts split on the boundary, then turned into
//! the JSON shape the field tables validate (repeatable comma-separated lists, JSON-string
//! `loras`/`advanced_params`, files kept aside).

use serde_json::{json, Map, Value};

pub use http_kit::{parse, Part};

use crate::fields::{Field, Kind};
use crate::focal::plugin::log;

/// Uploaded files by field name, in form order.
pub type Uploads = Vec<(String, Vec<u8>)>;

/// Parts → (fields as JSON, files by field name). Files are recognised by the field table, so
/// python-requests style uploads without a filename or content type work.
pub fn to_fields(parts: Vec<Part>, fields: &[Field]) -> (Map<String, Value>, Uploads) {
    let mut map = Map::new();
    let mut files = Vec::new();
    for part in parts {
        let kind = fields.iter().find(|f| f.name == part.name).map(|f| f.kind);
        let text = || String::from_utf8_lossy(&part.data).into_owned();
        match kind {
            Some(Kind::File) => {
                if !part.data.is_empty() {
                    map.insert(part.name.clone(), json!("<file>"));
                    files.push((part.name, part.data));
                }
            }
            Some(Kind::StrList | Kind::EnumList(_)) => {
                // Repeatable, and each value split on commas.
                let list = map.entry(part.name.clone()).or_insert_with(|| json!([]));
                for item in text().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    list.as_array_mut().unwrap().push(json!(item));
                }
            }
            Some(Kind::Object(_)) => {
                let value = serde_json::from_str(&text()).unwrap_or_else(|e| {
                    // The seed silently uses the defaults for bad advanced_params JSON.
                    log::log(log::Level::Warn, &format!("{}: invalid JSON ({e}); using the defaults", part.name));
                    json!({})
                });
                map.insert(part.name, value);
            }
            // Invalid JSON stays a string and fails validation as "not a list", naming the field.
            Some(Kind::ObjectList(_)) => {
                let t = text();
                map.insert(part.name, serde_json::from_str(&t).unwrap_or(json!(t)));
            }
            Some(Kind::OptStr | Kind::OptFloat(..)) if part.data.is_empty() => {
                map.insert(part.name, Value::Null);
            }
            _ => {
                map.insert(part.name, json!(text()));
            }
        }
    }
    (map, files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::field;

    #[test]
    fn fields_files_and_lists() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na cat\r\n--XX\r\nContent-Disposition: form-data; name=\"input_image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\r\nbin\r\n--XX\r\nContent-Disposition: form-data; name=\"style_selections\"\r\n\r\nA, B\r\n--XX\r\nContent-Disposition: form-data; name=\"style_selections\"\r\n\r\nC\r\n--XX--\r\n";
        let parts = parse("multipart/form-data; boundary=XX", body).unwrap();
        let table =
            [field("prompt", Kind::Str, "\"\""), field("input_image", Kind::File, "null"), field("style_selections", Kind::StrList, "[]")];
        let (map, files) = to_fields(parts, &table);
        assert_eq!(map["prompt"], "a cat");
        assert_eq!(map["style_selections"], json!(["A", "B", "C"]));
        assert_eq!(files[0].0, "input_image");
    }
}
