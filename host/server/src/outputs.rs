//! The outputs folder: finished images written as PNG, JPEG or WebP (with Fooocus-style
//! metadata when asked), served back at `/files/<date>/<name>`, converted on request.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use focal_core::services::{File, FileService};
use focal_core::Owner;
use focal_engine::image::RgbImage;

/// Software tag written with the metadata, as Fooocus writes `Fooocus v2.5.5`.
const SOFTWARE: &str = concat!("focal v", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Webp,
}

impl Format {
    /// From a file extension or `save_extension` value (`png`, `jpg`, `jpeg`, `webp`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(Format::Png),
            "jpg" | "jpeg" => Some(Format::Jpeg),
            "webp" => Some(Format::Webp),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
            Format::Webp => "image/webp",
        }
    }
}

/// Metadata as Fooocus embeds it: the serialized parameters and the scheme that wrote them.
pub struct Embedded<'a> {
    pub parameters: &'a str,
    pub scheme: &'a str,
}

/// Encode `img`; PNG gets tEXt `parameters` + `fooocus_scheme`, JPEG/WebP an EXIF block with
/// UserComment (parameters), Software and MakerNote (scheme), the tags Fooocus uses.
pub fn encode(img: &RgbImage, format: Format, meta: Option<&Embedded>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        Format::Png => {
            let mut enc = png::Encoder::new(&mut out, img.width, img.height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            if let Some(m) = meta {
                enc.add_text_chunk("parameters".into(), m.parameters.into())?;
                enc.add_text_chunk("fooocus_scheme".into(), m.scheme.into())?;
            }
            let mut w = enc.write_header()?;
            w.write_image_data(&img.data)?;
            w.finish()?;
        }
        Format::Jpeg => {
            let (w, h) = (u16::try_from(img.width)?, u16::try_from(img.height)?);
            let mut enc = jpeg_encoder::Encoder::new(&mut out, 95);
            enc.set_progressive(true);
            enc.set_optimized_huffman_tables(true);
            if let Some(m) = meta {
                enc.add_app_segment(1, exif(m))?;
            }
            enc.encode(&img.data, w, h, jpeg_encoder::ColorType::Rgb)?;
        }
        Format::Webp => {
            let mut enc = image_webp::WebPEncoder::new(&mut out);
            if let Some(m) = meta {
                enc.set_exif_metadata(exif(m));
            }
            enc.encode(&img.data, img.width, img.height, image_webp::ColorType::Rgb8)?;
        }
    }
    Ok(out)
}

/// `Exif\0\0` + a little-endian TIFF block whose IFD0 holds Software (0x0131, ASCII),
/// UserComment (0x9286) and MakerNote (0x927C), as PIL writes Fooocus's `Image.Exif`.
fn exif(m: &Embedded) -> Vec<u8> {
    let software = [SOFTWARE.as_bytes(), b"\0"].concat();
    let entries: [(u16, u16, &[u8]); 3] = [(0x0131, 2, &software), (0x9286, 7, m.parameters.as_bytes()), (0x927C, 7, m.scheme.as_bytes())];
    let ifd_len = 2 + entries.len() * 12 + 4;
    let mut data_offset = 8 + ifd_len;
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    let mut data = Vec::new();
    for (tag, kind, value) in entries {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&kind.to_le_bytes());
        tiff.extend_from_slice(&(value.len() as u32).to_le_bytes());
        if value.len() <= 4 {
            let mut inline = [0u8; 4];
            inline[..value.len()].copy_from_slice(value);
            tiff.extend_from_slice(&inline);
        } else {
            tiff.extend_from_slice(&(data_offset as u32).to_le_bytes());
            data.extend_from_slice(value);
            if value.len() % 2 == 1 {
                data.push(0); // TIFF values start on word boundaries
            }
            data_offset = 8 + ifd_len + data.len();
        }
    }
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    tiff.extend_from_slice(&data);
    [b"Exif\0\0".as_slice(), &tiff].concat()
}

/// `<root>/files/<YYYY-MM-DD>/<name>` as the Fooocus-API lays it out.
#[derive(Clone)]
pub struct Outputs {
    root: PathBuf,
}

impl Outputs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The host's own files under `files/`, each tenant's under `tenants/<name>/files/`: the same
    /// `<date>/<name>` path names a different file for each owner.
    fn files_dir(&self, owner: &Owner) -> PathBuf {
        if owner.0.is_empty() {
            return self.root.join("files");
        }
        let plain = owner.0.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let dir = if plain { owner.0.clone() } else { format!("x{}", owner.0.bytes().map(|b| format!("{b:02x}")).collect::<String>()) };
        self.root.join("tenants").join(dir).join("files")
    }

    /// Write `bytes` as `owner`'s `<date>/<name>` (server-local date); returns the relative path.
    pub fn save(&self, owner: &Owner, name: &str, bytes: &[u8]) -> Result<String> {
        let date = chrono::Local::now().format("%Y-%m-%d").to_string();
        let dir = self.files_dir(owner).join(&date);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)?;
        Ok(format!("{date}/{name}"))
    }

    /// The file at a relative `<date>/<name>` path, or `None` for anything else (no `..`, no
    /// nested folders, image extensions only).
    pub fn resolve(&self, owner: &Owner, rel: &str) -> Option<PathBuf> {
        let (date, name) = rel.split_once('/')?;
        let date_ok =
            date.len() == 10 && date.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
        let name_ok = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\', '\0'])
            && Path::new(name).extension().and_then(|e| e.to_str()).and_then(Format::from_extension).is_some();
        (date_ok && name_ok).then(|| self.files_dir(owner).join(date).join(name))
    }

    /// The bytes of the regular file at `rel`, only when its real path stays inside the outputs
    /// folder: outputs folders are often shared mounts, and a symlink placed there (to a file or
    /// a folder elsewhere) must not be served.
    pub fn read_file(&self, owner: &Owner, rel: &str) -> Option<Vec<u8>> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.resolve(owner, rel)?;
        let root = self.files_dir(owner).canonicalize().ok()?;
        let parent = path.parent()?.canonicalize().ok()?;
        if parent.parent() != Some(root.as_path()) {
            return None;
        }
        // O_NOFOLLOW: the last component may not be a symlink, even one swapped in after the check.
        let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    pub fn remove(&self, owner: &Owner, rel: &str) {
        if let Some(p) = self.resolve(owner, rel) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl FileService for Outputs {
    fn read(&self, owner: &Owner, rel: &str, format: Option<&str>) -> Option<File> {
        let path = self.resolve(owner, rel)?;
        let bytes = self.read_file(owner, rel)?;
        let stored = Format::from_extension(path.extension()?.to_str()?)?;
        let wanted = format.and_then(Format::from_extension).unwrap_or(stored);
        if wanted == stored {
            return Some(File { content_type: stored.content_type().into(), body: bytes });
        }
        let converted = crate::decode::decode(&bytes, &crate::decode::ImageLimits::default()).and_then(|img| encode(&img, wanted, None));
        match converted {
            Ok(body) => Some(File { content_type: wanted.content_type().into(), body }),
            Err(e) => {
                tracing::warn!(file = %path.display(), "cannot convert to {wanted:?}: {e:#}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> RgbImage {
        let data = (0..16 * 8 * 3).map(|i| (i * 7 % 251) as u8).collect();
        RgbImage { width: 16, height: 8, data }
    }

    #[test]
    fn every_format_round_trips_and_png_is_lossless() {
        let meta = Embedded { parameters: "{\"prompt\": \"a cat\"}", scheme: "fooocus" };
        for format in [Format::Png, Format::Jpeg, Format::Webp] {
            let bytes = encode(&image(), format, Some(&meta)).unwrap();
            let back = crate::decode::decode(&bytes, &crate::decode::ImageLimits::default()).unwrap();
            assert_eq!((back.width, back.height), (16, 8), "{format:?}");
            if format != Format::Jpeg {
                assert_eq!(back.data, image().data, "{format:?} is lossless");
            }
            let text = String::from_utf8_lossy(&bytes);
            assert!(text.contains("{\"prompt\": \"a cat\"}") && text.contains("fooocus"), "{format:?} carries the metadata");
        }
    }

    #[test]
    fn exif_block_is_valid_tiff() {
        let block = exif(&Embedded { parameters: "abc", scheme: "a1111" });
        let tiff = &block[6..];
        assert_eq!(&tiff[..4], b"II*\0");
        let count = u16::from_le_bytes([tiff[8], tiff[9]]);
        assert_eq!(count, 3);
        // UserComment: 3 bytes inline.
        let e = &tiff[10 + 12..10 + 24];
        assert_eq!(u16::from_le_bytes([e[0], e[1]]), 0x9286);
        assert_eq!(&e[8..11], b"abc");
        // MakerNote: 5 bytes at an offset inside the block.
        let e = &tiff[10 + 24..10 + 36];
        let off = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as usize;
        assert_eq!(&tiff[off..off + 5], b"a1111");
    }

    #[test]
    fn symlinks_out_of_the_outputs_folder_are_not_served() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("secret.png"), b"secret").unwrap();
        let outputs = Outputs::new(root.path());
        let me = Owner::default();
        let saved = outputs.save(&me, "real-0.png", b"real").unwrap();
        assert_eq!(outputs.read_file(&me, &saved).as_deref(), Some(&b"real"[..]));
        let date = saved.split('/').next().unwrap();
        let day = root.path().join("files").join(date);
        std::os::unix::fs::symlink(elsewhere.path().join("secret.png"), day.join("link.png")).unwrap();
        assert!(outputs.read_file(&me, &format!("{date}/link.png")).is_none(), "a symlinked file");
        assert!(outputs.read(&me, &format!("{date}/link.png"), None).is_none());
        // A dated folder that is itself a link to a folder elsewhere.
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("files/2020-01-01")).unwrap();
        assert!(outputs.read_file(&me, "2020-01-01/secret.png").is_none(), "a symlinked folder");
        // A link inside the folder to another output is refused too (only regular files are served).
        std::os::unix::fs::symlink(day.join("real-0.png"), day.join("alias.png")).unwrap();
        assert!(outputs.read_file(&me, &format!("{date}/alias.png")).is_none());
    }

    #[test]
    fn only_dated_image_files_resolve() {
        let o = Outputs::new("/tmp/out");
        assert!(o.resolve(&Owner::default(), "2024-01-02/a-0.png").is_some());
        assert!(o.resolve(&Owner::default(), "2024-01-02/a-0.webp").is_some());
        for bad in ["../x.png", "2024-01-02/../../etc/passwd", "2024-01-02/x.txt", "2024-1-2/x.png", "2024-01-02/sub/x.png", "x.png"] {
            assert!(o.resolve(&Owner::default(), bad).is_none(), "{bad}");
        }
    }

    /// The same `<date>/<name>` is a different file for each owner; one owner never reads another's.
    #[test]
    fn owners_have_separate_folders() {
        let root = tempfile::tempdir().unwrap();
        let o = Outputs::new(root.path());
        let (host, a, b) = (Owner::default(), Owner("alice".into()), Owner("bob".into()));
        let rel = o.save(&a, "x-0.png", b"alice").unwrap();
        assert_eq!(o.read_file(&a, &rel).as_deref(), Some(&b"alice"[..]));
        assert!(o.read_file(&b, &rel).is_none() && o.read_file(&host, &rel).is_none());
        assert!(o.read(&b, &rel, None).is_none());
        assert!(root.path().join("tenants/alice/files").join(&rel).is_file());
        o.remove(&b, &rel);
        assert!(o.read_file(&a, &rel).is_some(), "b cannot remove a's file");
    }
}
