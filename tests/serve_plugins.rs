//! Black-box: `focal serve` routes requests to plugins from its plugins directory, picks up a
//! plugin dropped in while it runs (no rebuild, no restart), and survives misbehaving plugins.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::get;

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
    let server = common::serve(&["--data-dir".as_ref(), data.path().as_os_str()]);
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
    let out =
        Command::new(env!("CARGO_BIN_EXE_focal")).args(["plugins", "list", "--data-dir", data.path().to_str().unwrap()]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("hello") && listing.contains("/hello") && listing.contains("hostile"), "{listing}");
    assert!(!listing.contains("broken"), "{listing}");
}
