//! Black-box: `focal serve` routes requests to plugins from its plugins directory, picks up a
//! plugin dropped in while it runs (no rebuild, no restart), and survives misbehaving plugins.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(["serve", "--port", "0", "--data-dir", data_dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_else(|| panic!("no address in {line:?}")).to_string();
    Server { child, addr }
}

/// Minimal HTTP/1.1 GET: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn built(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(focal_runtime::BUILT_PLUGINS_DIR).join(format!("{name}.wasm"))).unwrap()
}

fn wait_for(addr: &str, path: &str, status: u16) -> String {
    let t = Instant::now();
    loop {
        let (s, body) = get(addr, path);
        if s == status {
            return body;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{path} still answers {s}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_plugin_dropped_into_a_running_server_serves_its_route() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path());
    let plugins = data.path().join("plugins");

    let (status, body) = get(&server.addr, "/hello/Ada");
    assert_eq!(status, 404);
    assert_eq!(body, r#"{"detail":"Not Found"}"#);

    std::fs::write(plugins.join("hello.toml"), "name = \"hello\"\nroutes = [\"/hello\"]\n[config]\ngreeting = \"Bonjour\"\n").unwrap();
    std::fs::write(plugins.join("hello.wasm"), built("hello")).unwrap();
    let body = wait_for(&server.addr, "/hello/Ada", 200);
    assert_eq!(body, r#"{"greeting": "Bonjour, Ada!"}"#);

    // Changing the manifest reloads the plugin.
    std::fs::write(plugins.join("hello.toml"), "name = \"hello\"\nroutes = [\"/hello\"]\n[config]\ngreeting = \"Hallo\"\n").unwrap();
    let t = Instant::now();
    while get(&server.addr, "/hello/Ada").1 != r#"{"greeting": "Hallo, Ada!"}"# {
        assert!(t.elapsed() < Duration::from_secs(30), "manifest change not picked up");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A broken file is refused without disturbing what is served.
    std::fs::write(plugins.join("broken.wasm"), b"\0asm garbage").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(&server.addr, "/hello/Bob").0, 200);

    // A plugin that spins gets 504 after its budget; the other plugin keeps answering meanwhile.
    std::fs::write(plugins.join("hostile.toml"), "name = \"hostile\"\nroutes = [\"/hostile\"]\n[limits]\ntimeout_ms = 1500\n").unwrap();
    std::fs::write(plugins.join("hostile.wasm"), built("hostile")).unwrap();
    wait_for(&server.addr, "/hostile/ok", 200);
    let addr = server.addr.clone();
    let spinner = std::thread::spawn(move || get(&addr, "/hostile/loop"));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(get(&server.addr, "/hello/Eve").0, 200);
    assert!(t.elapsed() < Duration::from_millis(500));
    let (status, body) = spinner.join().unwrap();
    assert_eq!(status, 504);
    assert!(body.contains("time limit"), "{body}");

    // `focal plugins list` shows what the directory holds.
    let out = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(["plugins", "list", "--data-dir", data.path().to_str().unwrap()])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("hello") && listing.contains("/hello") && listing.contains("hostile"), "{listing}");
    assert!(!listing.contains("broken"), "{listing}");
}
