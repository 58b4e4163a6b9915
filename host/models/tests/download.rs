//! The downloader against a local HTTP server: resume after an interrupted transfer, sha256
//! check, progress, and the offline message.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use focal_models::{DownloadError, Downloader};
use sha2::{Digest, Sha256};

/// What the test server saw: the Range header of each request.
type Log = Arc<Mutex<Vec<Option<String>>>>;

/// Serve `data` at any path; the first `cut_first` requests stop after half the bytes.
fn server(data: Vec<u8>, cut_first: usize) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/model.safetensors", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    range = Some(v.trim().trim_end_matches('-').to_string());
                }
            }
            seen.lock().unwrap().push(range.clone());
            let start: usize = range.as_deref().map(|r| r.parse().unwrap()).unwrap_or(0);
            let body = &data[start..];
            let status = if start > 0 { "206 Partial Content" } else { "200 OK" };
            write!(stream, "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
            let send = if n < cut_first { &body[..body.len() / 2] } else { body };
            stream.write_all(send).unwrap();
        }
    });
    (url, log)
}

fn data() -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect()
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let data = data();
    let (url, log) = server(data.clone(), 1);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("checkpoints/model.safetensors");
    let d = Downloader::new().unwrap();

    let mut seen = Vec::new();
    let err = d.fetch(&url, &dest, Some(&sha(&data)), &mut |done, total| seen.push((done, total))).unwrap_err();
    assert!(matches!(err, DownloadError::Interrupted { have: 1_500_000, .. }), "{err}");
    assert!(!dest.exists(), "nothing under the real name before it is complete");
    assert_eq!(std::fs::metadata(dir.path().join("checkpoints/model.safetensors.part")).unwrap().len(), 1_500_000);
    // Progress is reported against the full size and only grows.
    assert!(seen.iter().all(|&(_, t)| t == Some(3_000_000)));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));

    let mut last = (0, None);
    d.fetch(&url, &dest, Some(&sha(&data)), &mut |done, total| last = (done, total)).unwrap();
    assert_eq!(last, (3_000_000, Some(3_000_000)));
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(*log.lock().unwrap(), vec![None, Some("1500000".to_string())], "the second request resumed");
    // Present: nothing is fetched again.
    d.fetch(&url, &dest, None, &mut |_, _| panic!("no transfer")).unwrap();
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[test]
fn a_corrupt_download_is_detected_and_removed() {
    let data = data();
    let (url, _) = server(data.clone(), 0);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("model.safetensors");
    let wrong = sha(b"something else");
    let err = Downloader::new().unwrap().fetch(&url, &dest, Some(&wrong), &mut |_, _| {}).unwrap_err();
    match &err {
        DownloadError::Corrupt { expected, actual, .. } => assert_eq!((expected, actual), (&wrong, &sha(&data))),
        other => panic!("{other}"),
    }
    assert!(!dest.exists() && !dir.path().join("model.safetensors.part").exists());
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn an_unreachable_server_says_where_to_put_the_file() {
    // A port that was just free: connection refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("checkpoints/x.safetensors");
    let err = Downloader::new().unwrap().fetch(&format!("http://127.0.0.1:{port}/x"), &dest, None, &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, DownloadError::Offline { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("offline") && msg.contains("checkpoints/x.safetensors"), "{msg}");
}
