//! The cost of serving a route through a plugin: the example `hello` plugin (fresh sandboxed
//! instance per request) against the same JSON answered by a native axum handler, in one run,
//! over loopback HTTP/1.1 keep-alive connections, on a 2-worker tokio runtime.
//!
//! Run: `cargo bench -p focal-server --bench plugin_path` (prints p50/p99 latency, throughput
//! and the plugin/native ratios).
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use focal_runtime::{HostOptions, PluginHost};
use focal_server::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SEQUENTIAL: usize = 3000;
const CONNECTIONS: usize = 16;
const THROUGHPUT_FOR: Duration = Duration::from_secs(3);

/// One keep-alive HTTP/1.1 connection that reads `Content-Length` bodies.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self { stream, buf: Vec::with_capacity(4096) }
    }

    async fn get(&mut self, path: &str) -> u16 {
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        self.stream.write_all(req.as_bytes()).await.unwrap();
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&self.buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    return text[9..12].parse().unwrap();
                }
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn latency(addr: std::net::SocketAddr, path: &str) -> (Duration, Duration) {
    let mut conn = Conn::open(addr).await;
    for _ in 0..200 {
        assert_eq!(conn.get(path).await, 200);
    }
    let mut times = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let t = Instant::now();
        assert_eq!(conn.get(path).await, 200);
        times.push(t.elapsed());
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

async fn throughput(addr: std::net::SocketAddr, path: &'static str) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await;
                let mut n = 0u64;
                while start.elapsed() < THROUGHPUT_FOR {
                    assert_eq!(conn.get(path).await, 200);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let wasm = std::fs::read(std::path::Path::new(focal_runtime::BUILT_PLUGINS_DIR).join("hello.wasm")).unwrap();
        std::fs::write(dir.path().join("hello.wasm"), wasm).unwrap();
        let host = Arc::new(PluginHost::new(HostOptions::default(), focal_runtime::services::Services::default()).unwrap());
        let registry = Registry::load(&host, dir.path());
        assert!(registry.route("/hello/x").is_some());
        // The same answer, natively.
        let native = axum::Router::new().route(
            "/native/{name}",
            get(|axum::extract::Path(name): axum::extract::Path<String>| async move {
                ([("content-type", "application/json")], format!("{{\"greeting\": \"Hello, {name}!\"}}"))
            }),
        );
        let app = native.merge(focal_server::router(host, registry, &Default::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let (np50, np99) = latency(addr, "/native/Ada").await;
        let (pp50, pp99) = latency(addr, "/hello/Ada").await;
        let nt = throughput(addr, "/native/Ada").await;
        let pt = throughput(addr, "/hello/Ada").await;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("plugin path: GET /hello/{{name}} (fresh instance per request) vs the same route in native axum");
        println!("2 tokio workers, loopback HTTP/1.1 keep-alive; latency over {SEQUENTIAL} sequential requests, throughput over {}s with {CONNECTIONS} connections", THROUGHPUT_FOR.as_secs());
        println!("{:<14} {:>12} {:>12} {:>14}", "route", "p50 µs", "p99 µs", "requests/s");
        println!("{:<14} {:>12.1} {:>12.1} {:>14.0}", "native", us(np50), us(np99), nt);
        println!("{:<14} {:>12.1} {:>12.1} {:>14.0}", "plugin", us(pp50), us(pp99), pt);
        println!(
            "overhead: p50 +{:.1} µs ({:.2}×), p99 {:.2}×, throughput {:.2}× of native",
            us(pp50) - us(np50),
            us(pp50) / us(np50),
            us(pp99) / us(np99),
            pt / nt
        );
    });
}
