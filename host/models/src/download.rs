//! Model downloads: into `<dest>.part`, resumed with an HTTP `Range` request when a previous
//! attempt was cut off, checked against a sha256 when one is known, then renamed into place —
//! so a models folder never holds a half-written model under its real name.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

#[derive(Debug)]
pub enum DownloadError {
    /// The server could not be reached (no network, DNS, refused).
    Offline {
        url: String,
        dest: PathBuf,
        reason: String,
    },
    Http {
        url: String,
        status: u16,
    },
    /// The finished file's sha256 is not the expected one; the file was deleted.
    Corrupt {
        dest: PathBuf,
        expected: String,
        actual: String,
    },
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The transfer stopped early; the partial file is kept for the next attempt.
    Interrupted {
        url: String,
        part: PathBuf,
        have: u64,
        reason: String,
    },
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownloadError::Offline { url, dest, reason } => {
                write!(f, "cannot reach {url} ({reason}); are you offline? Download it by hand and put it at {}", dest.display())
            }
            DownloadError::Http { url, status } => write!(f, "{url}: HTTP {status}"),
            DownloadError::Corrupt { dest, expected, actual } => write!(
                f,
                "{}: sha256 {actual} does not match the expected {expected}; the file was deleted, run the download again",
                dest.display()
            ),
            DownloadError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            DownloadError::Interrupted { url, part, have, reason } => {
                write!(f, "download of {url} interrupted after {have} bytes ({reason}); run it again to resume from {}", part.display())
            }
        }
    }
}

impl std::error::Error for DownloadError {}

/// Bytes so far and the total when the server said it.
pub type Progress<'a> = &'a mut dyn FnMut(u64, Option<u64>);

pub struct Downloader {
    client: reqwest::blocking::Client,
}

/// `HF_MIRROR` (as in Fooocus) replaces the Hugging Face host; `GITHUB_MIRROR` the GitHub one
/// (facexlib's face detector is a GitHub release asset).
fn mirrored(url: &str) -> String {
    let mirror = |url: String, var: &str, host: &str| match std::env::var(var) {
        Ok(m) if !m.is_empty() => url.replacen(host, m.trim_end_matches('/'), 1),
        _ => url,
    };
    mirror(mirror(url.to_string(), "HF_MIRROR", "https://huggingface.co"), "GITHUB_MIRROR", "https://github.com")
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

fn sha256_file(path: &Path) -> std::io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut f = File::open(path)?;
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hasher)
}

/// Map an I/O error to one naming `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |error| DownloadError::Io { path: path.to_path_buf(), error }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Downloader {
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            // No overall timeout: checkpoints are gigabytes. Stalls end the read instead.
            .timeout(None)
            .user_agent(concat!("focal/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    /// Download `url` to `dest` unless it is already there. `sha256` (hex) is checked when given.
    pub fn fetch(&self, url: &str, dest: &Path, sha256: Option<&str>, progress: Progress) -> Result<PathBuf, DownloadError> {
        if dest.is_file() {
            return Ok(dest.to_path_buf());
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let url = mirrored(url);
        let part = part_path(dest);
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let mut request = self.client.get(&url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut response =
            request.send().map_err(|e| DownloadError::Offline { url: url.clone(), dest: dest.to_path_buf(), reason: root_cause(&e) })?;
        let status = response.status().as_u16();
        // 206: the server resumes; 200: it sends everything again (start over); 416: the part
        // is already complete.
        let (mut file, mut hasher, mut done) = match status {
            206 if have > 0 => {
                let hasher = sha256_file(&part).map_err(io(&part))?;
                (OpenOptions::new().append(true).open(&part).map_err(io(&part))?, hasher, have)
            }
            200 => (File::create(&part).map_err(io(&part))?, Sha256::new(), 0),
            416 if have > 0 => return self.finish(dest, &part, sha256_file(&part).map_err(io(&part))?, sha256),
            _ => return Err(DownloadError::Http { url, status }),
        };
        let total = response.content_length().map(|n| n + done);
        progress(done, total);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(DownloadError::Interrupted { url, part, have: done, reason: e.to_string() }),
            };
            file.write_all(&buf[..n]).map_err(io(&part))?;
            hasher.update(&buf[..n]);
            done += n as u64;
            progress(done, total);
        }
        file.sync_all().map_err(io(&part))?;
        if total.is_some_and(|t| done < t) {
            return Err(DownloadError::Interrupted { url, part, have: done, reason: "the connection closed early".into() });
        }
        self.finish(dest, &part, hasher, sha256)
    }

    fn finish(&self, dest: &Path, part: &Path, hasher: Sha256, sha256: Option<&str>) -> Result<PathBuf, DownloadError> {
        let actual = hex(&hasher.finalize());
        if let Some(expected) = sha256 {
            if !actual.eq_ignore_ascii_case(expected) {
                let _ = std::fs::remove_file(part);
                return Err(DownloadError::Corrupt { dest: dest.to_path_buf(), expected: expected.to_lowercase(), actual });
            }
        }
        std::fs::rename(part, dest).map_err(|error| DownloadError::Io { path: dest.to_path_buf(), error })?;
        tracing::info!(file = %dest.display(), sha256 = %actual, "downloaded");
        Ok(dest.to_path_buf())
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}
