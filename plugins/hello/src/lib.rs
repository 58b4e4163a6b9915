//! The plugin-author example: a new route served by a running focal without rebuilding it.
//! `GET /hello/{name}` answers `{"greeting": "<greeting>, <name>!"}`, where the greeting comes from
//! the plugin's manifest (`[config] greeting = "…"`).
//! Built against the current contract, `focal:plugin@0.2.0`.

wit_bindgen::generate!({ world: "endpoint", path: "../../wit/focal-plugin@0.2.0" });

use exports::focal::plugin::handler::{Guest, Request, Response};
use focal::plugin::{config, log};

struct Hello;

impl Guest for Hello {
    fn handle(req: Request) -> Response {
        let name = req.path.rsplit('/').next().filter(|s| !s.is_empty()).unwrap_or("world");
        let greeting = config::get("greeting").unwrap_or_else(|| "Hello".to_string());
        log::log(log::Level::Info, &format!("greeting {name}"));
        let body = format!("{{\"greeting\": \"{greeting}, {}!\"}}", escape(name));
        Response { status: 200, headers: vec![("content-type".into(), "application/json".into())], body: body.into_bytes() }
    }
}

/// Minimal JSON string escaping for the echoed name.
fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' => "\\\"".chars().collect::<Vec<_>>(),
            '\\' => "\\\\".chars().collect(),
            c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32).chars().collect(),
            c => vec![c],
        })
        .collect()
}

export!(Hello);
