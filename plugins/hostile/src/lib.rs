//! Misbehaves on request, so the host's isolation can be tested: each route does one bad thing.

wit_bindgen::generate!({ world: "endpoint", path: "../../wit" });

use exports::focal::plugin::handler::{Guest, Request, Response};
use focal::plugin::engine;

struct Hostile;

fn text(status: u16, s: String) -> Response {
    Response { status, headers: vec![("content-type".into(), "text/plain".into())], body: s.into_bytes() }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let mut local = [n; 64];
    std::hint::black_box(&mut local);
    if n == u64::MAX { 0 } else { recurse(n + 1) + local[3] }
}

impl Guest for Hostile {
    fn handle(req: Request) -> Response {
        match req.path.trim_start_matches("/hostile") {
            "/ok" => text(200, "ok".into()),
            "/loop" => {
                let mut i = 0u64;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "/alloc" => {
                let mut v: Vec<Vec<u8>> = Vec::new();
                for _ in 0..1024 {
                    v.push(vec![1u8; 1 << 20]);
                }
                text(200, format!("allocated {} MiB", v.len()))
            }
            "/stack" => text(200, format!("{}", recurse(0))),
            "/trap" => panic!("hostile plugin panicked on purpose"),
            "/escape" => {
                let attempts = ["../secret.txt", "/etc/passwd", "/scratch/../secret.txt"];
                let read: Vec<String> = attempts
                    .iter()
                    .map(|p| match std::fs::read_to_string(p) {
                        Ok(s) => format!("{p}: READ {} bytes", s.len()),
                        Err(e) => format!("{p}: denied ({e})"),
                    })
                    .collect();
                text(200, read.join("\n"))
            }
            "/capability" => {
                // Traps (failing this request) unless the manifest grants `engine`.
                let q = engine::queue();
                text(200, format!("queue has {} jobs", q.running_size))
            }
            "/garbage" => Response { status: 999, headers: vec![("bad\nname".into(), "v".into())], body: vec![] },
            other => text(404, format!("no hostile route {other}")),
        }
    }
}

export!(Hostile);
