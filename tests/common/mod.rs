//! Helpers shared by the black-box tests: start `focal serve`, talk HTTP/1.1 to it.
#![allow(dead_code)]
pub mod oracle;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `focal serve`; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `focal serve --port 0 ARGS…` and wait for the address it prints.
pub fn serve(args: &[&std::ffi::OsStr]) -> Server {
    // FOCAL_TEST_STDERR=1 shows the server's log when debugging a test.
    spawn(args, if std::env::var_os("FOCAL_TEST_STDERR").is_some() { Stdio::inherit() } else { Stdio::null() })
}

fn spawn(args: &[&std::ffi::OsStr], stderr: Stdio) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_focal"))
        .args(["serve", "--port", "0"])
        .args(args)
        // Hugging Face and GitHub downloads go nowhere: a test never depends on the network.
        .env("HF_MIRROR", "http://127.0.0.1:9")
        .env("GITHUB_MIRROR", "http://127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Server { child, addr }
}

/// `tests/fixtures` (what [`fixtures`] is a folder of).
pub fn all_fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The tiny SDXL's fixtures.
pub fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sdxl")
}

/// `focal serve` with its models, data and outputs under `dir`, plus `extra` arguments.
pub fn serve_in(dir: &std::path::Path, extra: &[&std::ffi::OsStr]) -> Server {
    serve_in_logging(dir, extra, None)
}

/// [`serve_in`] with the server's log written to `log` when given.
fn serve_in_logging(dir: &std::path::Path, extra: &[&std::ffi::OsStr], log: Option<&std::path::Path>) -> Server {
    let (models, data, outputs) = (dir.join("models"), dir.join("data"), dir.join("outputs"));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--models-dir".as_ref(),
        models.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--outputs-dir".as_ref(),
        outputs.as_os_str(),
    ];
    args.extend_from_slice(extra);
    match log {
        Some(log) => serve_logged(&args, log),
        None => serve(&args),
    }
}

/// `focal serve` on the tiny checkpoint with everything under `dir` (models, data, outputs).
pub fn serve_tiny(dir: &std::path::Path, extra: &[&str]) -> Server {
    serve_tiny_logging(dir, extra, None)
}

/// [`serve_tiny`] with the server's log written to `log`.
pub fn serve_tiny_logged(dir: &std::path::Path, extra: &[&str], log: &std::path::Path) -> Server {
    serve_tiny_logging(dir, extra, Some(log))
}

fn serve_tiny_logging(dir: &std::path::Path, extra: &[&str], log: Option<&std::path::Path>) -> Server {
    std::fs::create_dir_all(dir.join("models/checkpoints")).unwrap();
    let ckpt = dir.join("models/checkpoints/tiny.safetensors");
    if !ckpt.exists() {
        std::fs::copy(fixtures().join("tiny-sdxl-a.safetensors"), ckpt).unwrap();
    }
    let mut args: Vec<&std::ffi::OsStr> = vec!["--base-model".as_ref(), "tiny.safetensors".as_ref()];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    serve_in_logging(dir, &args, log)
}

/// POST a text-to-image body with `require_base64` and return the first image's file bytes.
pub fn first_image(addr: &str, body: &str) -> Vec<u8> {
    let (status, raw) = request(addr, "POST", "/v1/generation/text-to-image", "", body);
    let v = json(&raw);
    assert_eq!(status, 200, "{v}");
    let b64 = v[0]["base64"].as_str().unwrap_or_else(|| panic!("no image in {v}"));
    b64decode(b64.split_once(";base64,").map_or(b64, |(_, data)| data))
}

/// Standard base64 encoding for request bodies (an independent implementation).
pub fn b64encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// Standard base64 decoding for test assertions (an independent implementation).
pub fn b64decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (val(c) as u32) << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// One HTTP/1.1 request on a fresh connection: (status, body), chunked bodies decoded.
/// JSON is the default Content-Type; pass one in `headers` to override it.
pub fn request(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, Vec<u8>) {
    let headers = if headers.to_ascii_lowercase().contains("content-type:") {
        headers.to_string()
    } else {
        format!("Content-Type: application/json\r\n{headers}")
    };
    request_bytes(addr, method, path, &headers, body.as_bytes())
}

pub fn request_bytes(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n", body.len()).unwrap();
    // A server may answer (413) before it has read all of a large body; its answer still counts.
    if let Err(e) = s.write_all(body) {
        assert!(matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset), "{e}");
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw[split + 4..].to_vec();
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(&body) } else { body })
}

/// `GET path` with the body as text.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let (status, body) = request(addr, "GET", path, "", "");
    (status, String::from_utf8_lossy(&body).to_string())
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 2 + n + 2..];
    }
}

/// The RGB pixels of a PNG.
pub fn pixels(png: &[u8]) -> Vec<u8> {
    focal_engine::image::RgbImage::decode_png(png).unwrap().data
}

/// A multipart/form-data body: (Content-Type header line, body). Parts whose data is a PNG are
/// sent as file uploads.
pub fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "focaltestboundary";
    let mut body = Vec::new();
    for (name, data) in parts {
        let filename = if data.starts_with(b"\x89PNG") { "; filename=\"in.png\"" } else { "" };
        write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n").unwrap();
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"), body)
}

/// `focal serve --port 0 ARGS…` with its log (stderr) written to `log`.
pub fn serve_logged(args: &[&std::ffi::OsStr], log: &std::path::Path) -> Server {
    spawn(args, std::fs::File::create(log).unwrap().into())
}

/// The log at `log` once it contains `needle` (30 s at most).
pub fn wait_for_log(log: &std::path::Path, needle: &str) -> String {
    let t = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "no {needle:?} in the log:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether the server process is still running.
pub fn alive(server: &mut Server) -> bool {
    matches!(server.child.try_wait(), Ok(None))
}

/// Poll query-job until the job ends; returns its last AsyncJobResponse.
pub fn wait_job(addr: &str, id: &str) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let (status, raw) = request(addr, "GET", &format!("/v1/generation/query-job?job_id={id}"), "", "");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
        let v = json(&raw);
        if matches!(v["job_stage"].as_str(), Some("SUCCESS" | "ERROR")) {
            return v;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(600), "job {id} never finished: {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A PNG of `width`×`height` RGB pixels.
pub fn png_rgb(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.write_header().unwrap().write_image_data(rgb).unwrap();
    out
}

/// Copy fixture models (paths under `tests/fixtures`) into `dir/models/<folder>/`, keeping their
/// file names (Fooocus's), as a models folder holds them.
pub fn install_models(dir: &std::path::Path, models: &[(&str, &str)]) {
    let fixtures = all_fixtures();
    for (folder, source) in models {
        let target = dir.join("models").join(folder);
        std::fs::create_dir_all(&target).unwrap();
        let name = std::path::Path::new(source).file_name().unwrap();
        std::fs::copy(fixtures.join(source), target.join(name)).unwrap();
    }
}

/// A valid PNG (one RGB pixel of data) whose header claims `w`×`h`.
pub fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 1, 1);
    enc.set_color(png::ColorType::Rgb);
    enc.write_header().unwrap().write_image_data(&[1, 2, 3]).unwrap();
    out[16..20].copy_from_slice(&w.to_be_bytes());
    out[20..24].copy_from_slice(&h.to_be_bytes());
    let mut c = 0xFFFF_FFFFu32;
    for &b in &out[12..29] {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    out[29..33].copy_from_slice(&(!c).to_be_bytes());
    out
}
