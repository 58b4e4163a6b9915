//! The ESRGAN upscaler against Fooocus's own code (tests/fixtures/upscale/make_upscaler_refs.py:
//! a tiny random RRDBNet in Fooocus's file format and name, run through `perform_upscale`'s
//! steps), and the torch-file reader's refusals.

use std::io::Write;
use std::path::PathBuf;

use candle_core::Device;
use focal_engine::esrgan::{Esrgan, FOOOCUS_UPSCALER};
use focal_engine::image::RgbImage;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/upscale")
}

fn png(name: &str) -> RgbImage {
    RgbImage::decode_png(&std::fs::read(dir().join(name)).unwrap()).unwrap()
}

#[test]
fn fooocus_upscaler_matches_fooocus_including_tiles() {
    let model = Esrgan::load(&dir().join(FOOOCUS_UPSCALER), &Device::Cpu).unwrap();
    assert_eq!(model.scale, 4);
    for case in ["small", "tiled"] {
        let out = model.upscale(&png(&format!("{case}-input.png")), &Device::Cpu).unwrap();
        let want = png(&format!("{case}-x4.png"));
        assert_eq!((out.width, out.height), (want.width, want.height), "{case}");
        let max = out.data.iter().zip(&want.data).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(max <= 1, "{case}: max difference {max}/255");
    }
}

/// A torch zip whose pickle calls `os.system` (what a malicious checkpoint does) is refused with
/// the class named, and nothing runs.
#[test]
fn pickles_calling_other_functions_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("evil.pth");
    // protocol 2: GLOBAL 'os system', the argument tuple, REDUCE, STOP
    let pickle = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.";
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    zip.start_file("evil/data.pkl", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(pickle).unwrap();
    zip.finish().unwrap();
    let err = focal_engine::torch_file::load(&path).unwrap_err().to_string();
    assert!(err.contains("os.system"), "{err}");
    let err = Esrgan::load(&path, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("os.system"), "{err}");
    std::fs::write(&path, b"not a zip").unwrap();
    let err = focal_engine::torch_file::load(&path).unwrap_err().to_string();
    assert!(err.contains("not a torch file"), "{err}");
}
