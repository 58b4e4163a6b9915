//! Field tables: one description per request field (type, default, range, allowed values) that
//! serves both validation (pydantic-style, lax like the seed's pydantic 2) and the OpenAPI
//! schema, so the two cannot drift apart.

use serde_json::{json, Map, Value};

#[derive(Clone, Copy)]
pub enum Kind {
    Str,
    /// A string of at most this many characters (pydantic `constr(max_length=…)`).
    Text(usize),
    /// `null` allowed (pydantic `Optional[str]`).
    OptStr,
    Int(i64, i64),
    Float(f64, f64),
    /// `null` allowed.
    OptFloat(f64, f64),
    Bool,
    /// One of the listed strings (422 otherwise).
    Enum(&'static [&'static str]),
    StrList,
    /// A list of enum values.
    EnumList(&'static [&'static str]),
    /// A nested object described by another table.
    Object(&'static [Field]),
    /// A list of nested objects.
    ObjectList(&'static [Field]),
    /// An uploaded file (multipart only).
    File,
}

#[derive(Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// Default as JSON text; `None` means required.
    pub default: Option<&'static str>,
}

pub const fn field(name: &'static str, kind: Kind, default: &'static str) -> Field {
    Field { name, kind, default: Some(default) }
}

pub const fn required(name: &'static str, kind: Kind) -> Field {
    Field { name, kind, default: None }
}

/// One pydantic error item.
pub use http_kit::fastapi::error_item;

fn expected_list(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

fn number_text(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// Values from a form arrive as strings; JSON values as themselves. Lax coercion as pydantic's.
fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

fn as_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(*b as i64 as f64),
        _ => None,
    }
}

fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) if n.as_i64() == Some(0) => Some(false),
        Value::Number(n) if n.as_i64() == Some(1) => Some(true),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
            "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Validate `obj` against `fields`: returns the object with defaults filled in and values
/// normalised (numbers as numbers, …), plus pydantic-style errors located under `loc`.
/// Unknown keys are ignored, as pydantic does.
pub fn parse(fields: &[Field], obj: &Map<String, Value>, loc: &[Value], errors: &mut Vec<Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for f in fields {
        let here: Vec<Value> = loc.iter().cloned().chain([json!(f.name)]).collect();
        let Some(v) = obj.get(f.name) else {
            match f.default {
                Some(d) => {
                    // Through `check` too, so a defaulted nested object gets its own defaults.
                    let default: Value = serde_json::from_str(d).expect("field defaults are valid JSON");
                    out.insert(f.name.into(), check(f.kind, &default, &here, errors).unwrap_or(default));
                }
                None => errors.push(error_item("missing", &here, "Field required", &Value::Null, None)),
            }
            continue;
        };
        if let Some(value) = check(f.kind, v, &here, errors) {
            out.insert(f.name.into(), value);
        }
    }
    out
}

fn range_errors(v: f64, min: f64, max: f64, input: &Value, here: &[Value], errors: &mut Vec<Value>) -> bool {
    if v < min {
        let msg = format!("Input should be greater than or equal to {}", number_text(min));
        errors.push(error_item("greater_than_equal", here, &msg, input, Some(json!({"ge": min}))));
        false
    } else if v > max {
        let msg = format!("Input should be less than or equal to {}", number_text(max));
        errors.push(error_item("less_than_equal", here, &msg, input, Some(json!({"le": max}))));
        false
    } else {
        true
    }
}

fn check(kind: Kind, v: &Value, here: &[Value], errors: &mut Vec<Value>) -> Option<Value> {
    let err = |errors: &mut Vec<Value>, t: &str, msg: &str| {
        errors.push(error_item(t, here, msg, v, None));
        None
    };
    match kind {
        Kind::Str => match v {
            Value::String(_) => Some(v.clone()),
            _ => err(errors, "string_type", "Input should be a valid string"),
        },
        Kind::Text(max) => match v {
            Value::String(text) if text.chars().count() > max => {
                let msg = format!("String should have at most {max} characters");
                // The input is echoed shortened: sending megabytes back helps nobody.
                let input = json!(format!("{}…", text.chars().take(64).collect::<String>()));
                errors.push(error_item("string_too_long", here, &msg, &input, Some(json!({"max_length": max}))));
                None
            }
            Value::String(_) => Some(v.clone()),
            _ => err(errors, "string_type", "Input should be a valid string"),
        },
        Kind::OptStr => match v {
            Value::String(_) | Value::Null => Some(v.clone()),
            _ => err(errors, "string_type", "Input should be a valid string"),
        },
        Kind::Int(min, max) => match as_int(v) {
            Some(i) => range_errors(i as f64, min as f64, max as f64, v, here, errors).then(|| json!(i)),
            None if v.is_string() => err(errors, "int_parsing", "Input should be a valid integer, unable to parse string as an integer"),
            None => err(errors, "int_type", "Input should be a valid integer"),
        },
        Kind::Float(min, max) => match as_float(v) {
            Some(f) => range_errors(f, min, max, v, here, errors).then(|| json!(f)),
            None if v.is_string() => err(errors, "float_parsing", "Input should be a valid number, unable to parse string as a number"),
            None => err(errors, "float_type", "Input should be a valid number"),
        },
        Kind::OptFloat(min, max) => {
            if v.is_null() || v.as_str().is_some_and(|s| s.is_empty() || s == "null" || s == "None") {
                Some(Value::Null)
            } else {
                check(Kind::Float(min, max), v, here, errors)
            }
        }
        Kind::Bool => match as_bool(v) {
            Some(b) => Some(json!(b)),
            None if v.is_string() => err(errors, "bool_parsing", "Input should be a valid boolean, unable to interpret input"),
            None => err(errors, "bool_type", "Input should be a valid boolean"),
        },
        Kind::Enum(allowed) => match v.as_str() {
            Some(s) if allowed.contains(&s) => Some(v.clone()),
            _ => {
                let expected = expected_list(allowed);
                errors.push(error_item("enum", here, &format!("Input should be {expected}"), v, Some(json!({"expected": expected}))));
                None
            }
        },
        Kind::StrList => match v {
            Value::Array(items) if items.iter().all(Value::is_string) => Some(v.clone()),
            Value::Array(_) => err(errors, "string_type", "Input should be a valid string"),
            _ => err(errors, "list_type", "Input should be a valid list"),
        },
        Kind::EnumList(allowed) => match v {
            Value::Array(items) => {
                let checked: Vec<Option<Value>> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at: Vec<Value> = here.iter().cloned().chain([json!(i)]).collect();
                        check(Kind::Enum(allowed), item, &at, errors)
                    })
                    .collect();
                checked.into_iter().collect::<Option<Vec<_>>>().map(Value::Array)
            }
            _ => err(errors, "list_type", "Input should be a valid list"),
        },
        Kind::Object(fields) => match v {
            Value::Object(o) => {
                let before = errors.len();
                let parsed = parse(fields, o, here, errors);
                (errors.len() == before).then_some(Value::Object(parsed))
            }
            _ => err(errors, "model_type", "Input should be a valid dictionary or object to extract fields from"),
        },
        Kind::ObjectList(fields) => match v {
            Value::Array(items) => {
                let before = errors.len();
                let parsed: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let at: Vec<Value> = here.iter().cloned().chain([json!(i)]).collect();
                        check(Kind::Object(fields), item, &at, errors).unwrap_or(Value::Null)
                    })
                    .collect();
                (errors.len() == before).then_some(Value::Array(parsed))
            }
            _ => err(errors, "list_type", "Input should be a valid list"),
        },
        Kind::File => Some(v.clone()),
    }
}

/// JSON Schema of a field table (OpenAPI 3.1 dialect).
pub fn schema(fields: &[Field]) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in fields {
        let mut s = kind_schema(f.kind);
        match f.default {
            Some(d) => {
                s["default"] = serde_json::from_str(d).unwrap();
            }
            None => required.push(json!(f.name)),
        }
        s["title"] = json!(f
            .name
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|h| h.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "));
        props.insert(f.name.into(), s);
    }
    let mut out = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        out["required"] = Value::Array(required);
    }
    out
}

fn kind_schema(kind: Kind) -> Value {
    match kind {
        Kind::Str => json!({"type": "string"}),
        Kind::Text(max) => json!({"type": "string", "maxLength": max}),
        Kind::OptStr => json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
        Kind::Int(min, max) => json!({"type": "integer", "minimum": min, "maximum": max}),
        Kind::Float(min, max) => json!({"type": "number", "minimum": min, "maximum": max}),
        Kind::OptFloat(min, max) => json!({"anyOf": [{"type": "number", "minimum": min, "maximum": max}, {"type": "null"}]}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Enum(allowed) => json!({"type": "string", "enum": allowed}),
        Kind::StrList => json!({"type": "array", "items": {"type": "string"}}),
        Kind::EnumList(allowed) => json!({"type": "array", "items": {"type": "string", "enum": allowed}}),
        Kind::Object(fields) => schema(fields),
        Kind::ObjectList(fields) => json!({"type": "array", "items": schema(fields)}),
        Kind::File => json!({"type": "string", "format": "binary"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &[Field] = &[
        field("n", Kind::Int(1, 32), "1"),
        field("p", Kind::Enum(&["Speed", "Quality"]), "\"Speed\""),
        field("b", Kind::Bool, "false"),
        required("r", Kind::Str),
    ];

    fn run(v: Value) -> (Map<String, Value>, Vec<Value>) {
        let mut errors = vec![];
        let out = parse(T, v.as_object().unwrap(), &[json!("body")], &mut errors);
        (out, errors)
    }

    #[test]
    fn defaults_coercion_and_errors_like_pydantic() {
        let (out, errors) = run(json!({"r": "x", "n": "5", "b": "True", "extra": 1}));
        const NESTED: &[Field] = &[field("o", Kind::Object(T), r#"{"r": "y"}"#)];
        let mut e = vec![];
        let nested = parse(NESTED, &Map::new(), &[], &mut e);
        assert_eq!(nested["o"], json!({"n": 1, "p": "Speed", "b": false, "r": "y"}), "defaults inside a defaulted object");
        assert!(errors.is_empty());
        assert_eq!(out, json!({"n": 5, "p": "Speed", "b": true, "r": "x"}).as_object().unwrap().clone());
        let (_, errors) = run(json!({"n": 33, "p": "Fast"}));
        let kinds: Vec<&str> = errors.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["less_than_equal", "enum", "missing"]);
        assert_eq!(errors[1]["msg"], "Input should be 'Speed' or 'Quality'");
        assert_eq!(errors[2]["loc"], json!(["body", "r"]));
    }

    #[test]
    fn an_over_long_text_is_refused_with_a_short_echo() {
        const P: &[Field] = &[field("prompt", Kind::Text(10), "\"\"")];
        let mut errors = vec![];
        let out = parse(P, json!({"prompt": "a".repeat(1000)}).as_object().unwrap(), &[json!("body")], &mut errors);
        assert!(out.get("prompt").is_none());
        assert_eq!(errors[0]["type"], "string_too_long");
        assert_eq!(errors[0]["loc"], json!(["body", "prompt"]));
        assert_eq!(errors[0]["ctx"]["max_length"], 10);
        assert!(errors[0]["input"].as_str().unwrap().chars().count() <= 65);
        let mut errors = vec![];
        parse(P, json!({"prompt": "é".repeat(10)}).as_object().unwrap(), &[], &mut errors);
        assert!(errors.is_empty(), "characters, not bytes");
    }
}
