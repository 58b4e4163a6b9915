//! Black-box: the host decides what plugins may only ask for. Through the real binary with a
//! misbehaving component (`plugins/hostile`): response framing stays the host's (the next
//! request on a keep-alive connection gets its own answer), a flooded plugin cannot starve the
//! others, a plugin's log lines cannot forge host lines, and route or name takeovers are refused
//! with a warning while the built-in keeps every route.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::get;

fn built(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(focal_runtime::BUILT_PLUGINS_DIR).join(format!("{name}.wasm"))).unwrap()
}

fn install(plugins: &Path, file: &str, component: &str, manifest: &str) {
    std::fs::write(plugins.join(format!("{file}.toml")), manifest).unwrap();
    std::fs::write(plugins.join(format!("{file}.wasm")), built(component)).unwrap();
}

fn wait_for(addr: &str, path: &str, status: u16) {
    let t = Instant::now();
    while get(addr, path).0 != status {
        assert!(t.elapsed() < Duration::from_secs(30), "{path} never answered {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One response read off a keep-alive connection by its own framing: (status, headers, body).
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "connection closed; head so far: {head:?}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let lower = head.to_ascii_lowercase();
    let body = if lower.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break body;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = lower.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        body
    };
    (status, head, body)
}

#[test]
fn plugin_framing_headers_cannot_desync_a_keep_alive_connection() {
    let data = tempfile::tempdir().unwrap();
    let server = common::serve(&["--data-dir".as_ref(), data.path().as_os_str()]);
    install(&data.path().join("plugins"), "hostile", "hostile", "name = \"hostile\"\nroutes = [\"/hostile\"]\n");
    wait_for(&server.addr, "/hostile/ok", 200);

    let stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let expectations: [(&str, &[u8]); 4] = [
        ("/hostile/framing/short-length", b"okHTTP/1.1 200 OK\r\nx-smuggled: 1\r\ncontent-length: 9\r\n\r\nsmuggled!"),
        ("/hostile/framing/long-length", b"short"),
        ("/hostile/framing/double-length", b"hello"),
        ("/hostile/framing/chunked", b"chunked?"),
    ];
    for (path, expected) in expectations {
        write!(writer, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (status, head, body) = read_response(&mut reader);
        assert_eq!(status, 200, "{path}");
        assert_eq!(body, expected, "{path}: the whole body, framed by the host");
        assert!(!head.to_ascii_lowercase().contains("upgrade"), "{path}: {head}");
        // The next request on the same connection gets its own answer, not the plugin's tail.
        let (status, head, body) = read_response(&mut reader);
        assert_eq!((status, body.as_slice()), (200, &b"\"pong\""[..]), "{path}: {head}");
        assert!(!head.contains("x-smuggled"), "{path}: {head}");
    }
    // A header hyper cannot send: 502 naming the plugin.
    let (status, body) = get(&server.addr, "/hostile/framing/bad-value");
    assert_eq!(status, 502);
    assert!(body.contains("plugin 'hostile'"), "{body}");
}

#[test]
fn a_flooded_plugin_cannot_starve_the_others() {
    let data = tempfile::tempdir().unwrap();
    let server = common::serve(&["--data-dir".as_ref(), data.path().as_os_str()]);
    let plugins = data.path().join("plugins");
    install(&plugins, "hostile", "hostile", "name = \"hostile\"\nroutes = [\"/hostile\"]\n[limits]\ntimeout_ms = 5000\n");
    install(&plugins, "hello", "hello", "name = \"hello\"\nroutes = [\"/hello\"]\n");
    wait_for(&server.addr, "/hostile/ok", 200);
    wait_for(&server.addr, "/hello/x", 200);

    let flood: Vec<_> = (0..300)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || get(&addr, "/hostile/sleep"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..30 {
        let (status, body) = get(&server.addr, "/ping");
        assert_eq!((status, body.as_str()), (200, "\"pong\""), "ping {i} during the flood");
        assert_eq!(get(&server.addr, "/hello/Ada").0, 200, "hello {i} during the flood");
    }
    let answers: Vec<(u16, String)> = flood.into_iter().map(|t| t.join().unwrap()).collect();
    let slept = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert!(slept >= 32, "the plugin's own share was served: {slept}");
    assert_eq!(slept + refused.len(), 300, "only 200 or 503: {answers:?}");
    assert!(refused.iter().all(|(_, b)| b.contains("plugin 'hostile'")), "{:?}", refused.first());
}

#[test]
fn plugin_log_lines_are_escaped_prefixed_and_capped() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let server = common::serve_logged(&["--data-dir".as_ref(), data.path().as_os_str()], &log);
    install(
        &data.path().join("plugins"),
        "hostile",
        "hostile",
        "name = \"hostile\"\nroutes = [\"/hostile\"]\n[limits]\ntimeout_ms = 30000\n",
    );
    wait_for(&server.addr, "/hostile/ok", 200);
    assert_eq!(get(&server.addr, "/hostile/log").0, 200);
    let text = common::wait_for_log(&log, "innocent");
    let line = text.lines().find(|l| l.contains("innocent")).unwrap();
    assert!(line.contains("[hostile] innocent\\n2026-01-01T00:00:00.000000Z ERROR"), "{line}");
    assert!(line.contains("\\u{1b}[31mred"), "the escape is written out: {line}");
    assert!(!text.contains('\u{1b}'), "no raw ANSI escape in the log");
    assert!(!text.lines().any(|l| l.starts_with("2026-01-01T00:00:00.000000Z")), "a forged line:\n{text}");

    // A flood of log lines is cut at the per-request budget.
    let before = std::fs::metadata(&log).unwrap().len();
    assert_eq!(get(&server.addr, "/hostile/log-flood").0, 200);
    let text = common::wait_for_log(&log, "log limit reached");
    let grown = std::fs::metadata(&log).unwrap().len() - before;
    assert!(grown < 512 << 10, "{grown} bytes of log for one request");
    assert!(text.matches("flood line").count() < 1000);
}

#[test]
fn route_and_name_takeovers_are_refused_and_the_builtin_keeps_its_routes() {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("server.log");
    let server = common::serve_logged(&["--data-dir".as_ref(), data.path().as_os_str()], &log);
    let plugins = data.path().join("plugins");
    let addr = server.addr.clone();

    // A plugin claiming "/" (the built-in Fooocus-API's route) is refused, with a warning naming both.
    install(&plugins, "aa_root", "hello", "name = \"aa_root\"\nroutes = [\"/\"]\n");
    let text = common::wait_for_log(&log, "aa_root.wasm refused");
    let warn = text.lines().find(|l| l.contains("aa_root.wasm refused")).unwrap();
    assert!(warn.contains("WARN") && warn.contains("'/'") && warn.contains("fooocus_api"), "{warn}");
    for path in ["/ping", "/v1/engines/styles", "/docs", "/openapi.json"] {
        assert_eq!(get(&addr, path).0, 200, "{path} still served by the built-in");
    }

    // A second file with a serving plugin's name is refused; the first keeps serving.
    install(&plugins, "hx", "hostile", "name = \"hx\"\nroutes = [\"/hostile\"]\n");
    wait_for(&addr, "/hostile/ok", 200);
    install(&plugins, "zz_dupname", "hello", "name = \"hx\"\nroutes = [\"/hostile\"]\n");
    let text = common::wait_for_log(&log, "zz_dupname.wasm refused");
    let warn = text.lines().find(|l| l.contains("zz_dupname.wasm refused")).unwrap();
    assert!(warn.contains("WARN") && warn.contains("'hx'") && warn.contains("hx.wasm"), "{warn}");
    assert_eq!(get(&addr, "/hostile/ok"), (200, "ok".to_string()));

    // A refused file is remembered until it changes: not compiled and logged on every poll.
    std::thread::sleep(Duration::from_secs(3));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("aa_root.wasm refused").count(), 1, "{text}");
    assert_eq!(text.matches("zz_dupname.wasm refused").count(), 1, "{text}");

    // The operator can mark a replacement explicitly.
    install(&plugins, "aa_root", "hello", "name = \"aa_root\"\nroutes = [\"/\"]\nreplaces = \"fooocus_api\"\n");
    common::wait_for_log(&log, "takes over route '/' from plugin 'fooocus_api'");
    let t = Instant::now();
    while !get(&addr, "/anything").1.contains("greeting") {
        assert!(t.elapsed() < Duration::from_secs(30), "the replacement never served /");
        std::thread::sleep(Duration::from_millis(100));
    }
}
