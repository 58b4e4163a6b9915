//! Black-box: the operator's plugin policy (`policy.toml` in the plugins folder) refuses plugins that
//! request ungranted capabilities or higher limits, naming what was refused; and a plugin replaced
//! on disk under a request loop switches versions cleanly (no failed request, never back to the old).
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{get, json};

fn built(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(focal_runtime::BUILT_PLUGINS_DIR).join(format!("{name}.wasm"))).unwrap()
}

/// Write through a temporary name and rename, as an operator's deploy would (no torn file).
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[test]
fn the_policy_refuses_what_it_does_not_grant() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("data/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    put(
        &plugins.join("policy.toml"),
        b"[default]\ncapabilities = []\nmax_memory_mb = 64\n[plugins.studio]\ncapabilities = [\"engine\", \"files\"]\nmax_memory_mb = 64\n",
    );
    put(&plugins.join("hello.wasm"), &built("hello"));
    put(&plugins.join("hello.toml"), b"name = \"hello\"\nroutes = [\"/hello\"]\ncapabilities = [\"fetch\"]\n");
    put(&plugins.join("studio.wasm"), &built("studio"));
    put(&plugins.join("studio.toml"), &std::fs::read("plugins/studio/plugin.toml").unwrap());
    let log = dir.path().join("serve.log");
    let server = common::serve_tiny_logged(dir.path(), &[], &log);
    let text = common::wait_for_log(&log, "requests what the operator's policy.toml does not grant: capability fetch");
    assert_eq!(get(&server.addr, "/hello/Ada").0, 404, "hello was refused:\n{text}");
    // The studio example's manifest asks 256 MiB; the policy grants it 64.
    common::wait_for_log(&log, "memory_mb 256 (granted 64)");
    assert_eq!(get(&server.addr, "/studio/catalog").0, 404);
    // The operator grants more: the refused plugin loads on the next scan.
    put(&plugins.join("policy.toml"), b"[default]\ncapabilities = [\"fetch\", \"engine\", \"files\"]\nmax_memory_mb = 1024\n");
    let t = Instant::now();
    while get(&server.addr, "/hello/Ada").0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(30), "hello never loaded after the grant");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_hot_replace_under_load_switches_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("data/plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    put(&plugins.join("hello.wasm"), &built("hello"));
    put(&plugins.join("hello.toml"), b"name = \"hello\"\nroutes = [\"/hello\"]\n[config]\ngreeting = \"One\"\n");
    let server = common::serve_tiny(dir.path(), &[]);
    let addr = server.addr.clone();
    assert_eq!(get(&addr, "/hello/Ada").0, 200);
    let seen = std::thread::scope(|s| {
        let looping = s.spawn(|| {
            let mut seen = Vec::new();
            let t = Instant::now();
            loop {
                let (status, body) = get(&addr, "/hello/Ada");
                assert_eq!(status, 200, "a request failed during the replace: {body}");
                let greeting = json(body.as_bytes())["greeting"].as_str().unwrap().to_string();
                let switched = greeting.starts_with("Two");
                seen.push(greeting);
                if switched && seen.iter().filter(|g| g.starts_with("Two")).count() >= 20 {
                    return seen;
                }
                assert!(t.elapsed() < Duration::from_secs(60), "never switched");
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        put(&plugins.join("hello.toml"), b"name = \"hello\"\nroutes = [\"/hello\"]\n[config]\ngreeting = \"Two\"\n");
        looping.join().unwrap()
    });
    let first_two = seen.iter().position(|g| g.starts_with("Two")).unwrap();
    assert!(first_two > 0, "the old version served first");
    assert!(seen[..first_two].iter().all(|g| g.starts_with("One")) && seen[first_two..].iter().all(|g| g.starts_with("Two")), "{seen:?}");
}
