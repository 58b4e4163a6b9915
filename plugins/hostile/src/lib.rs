//! Misbehaves on request, so the host's isolation can be tested: each route does one bad thing.

wit_bindgen::generate!({ world: "endpoint", path: "../../wit/focal-plugin@0.1.0" });

use exports::focal::plugin::handler::{Guest, Request, Response};
use focal::plugin::{engine, files, log};

struct Hostile;

fn text(status: u16, s: String) -> Response {
    Response { status, headers: vec![("content-type".into(), "text/plain".into())], body: s.into_bytes() }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    let mut local = [n; 64];
    std::hint::black_box(&mut local);
    if n == u64::MAX {
        0
    } else {
        recurse(n + 1) + local[3]
    }
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
            // Framing attacks: the host must frame the response itself.
            "/framing/short-length" => Response {
                status: 200,
                headers: vec![("content-length".into(), "2".into())],
                body: b"okHTTP/1.1 200 OK\r\nx-smuggled: 1\r\ncontent-length: 9\r\n\r\nsmuggled!".to_vec(),
            },
            "/framing/long-length" => {
                Response { status: 200, headers: vec![("Content-Length".into(), "500".into())], body: b"short".to_vec() }
            }
            "/framing/double-length" => Response {
                status: 200,
                headers: vec![("content-length".into(), "5".into()), ("content-length".into(), "50".into())],
                body: b"hello".to_vec(),
            },
            "/framing/chunked" => Response {
                status: 200,
                headers: vec![
                    ("transfer-encoding".into(), "chunked".into()),
                    ("connection".into(), "keep-alive, upgrade".into()),
                    ("upgrade".into(), "h2c".into()),
                ],
                body: b"chunked?".to_vec(),
            },
            "/framing/bad-value" => Response { status: 200, headers: vec![("x-ok".into(), "a\u{7f}b".into())], body: vec![] },
            // Holds its instance for a while (inside its time limit), for flood tests.
            "/sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(1500));
                text(200, "slept".into())
            }
            // Tries to forge a host log line and restyle the terminal.
            "/log" => {
                log::log(
                    log::Level::Info,
                    "innocent\n2026-01-01T00:00:00.000000Z ERROR focal_server::registry: plugin loaded plugin=fooocus_api \u{1b}[31mred\u{1b}[0m",
                );
                text(200, "logged".into())
            }
            "/log-flood" => {
                for i in 0..100_000 {
                    log::log(log::Level::Info, &format!("flood line {i} {}", "x".repeat(100)));
                }
                text(200, "flooded".into())
            }
            // Reach for another owner's job and file: `?job=ID&file=DATE/NAME` (the host must answer
            // as if they did not exist).
            "/peek" => {
                let param = |key: &str| {
                    req.query.split('&').find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('='))).unwrap_or("").to_string()
                };
                let (job, file) = (param("job"), param("file"));
                let (queue, history) = engine::history(Some(&job), 0, 100);
                let (all_queue, all_history) = engine::history(None, 0, 1000);
                let listed = all_queue.iter().chain(&all_history).any(|j| j.id == job);
                text(
                    200,
                    format!(
                        "get={} history={} listed={} image_file={} preview={} file={}",
                        engine::get(&job).is_some(),
                        queue.len() + history.len(),
                        listed,
                        engine::image_file(&job, 0).is_some(),
                        engine::preview(&job).is_some(),
                        files::read(&file, None).is_some()
                    ),
                )
            }
            other => text(404, format!("no hostile route {other}")),
        }
    }
}

export!(Hostile);
