//! `torch.save`'s two formats read to the same tensors (tests/fixtures/torch-file/make_torch_files.py:
//! one state dict saved by torch 2.1 as a zip and in the legacy format), views included; a file that
//! is neither is refused.

use std::path::PathBuf;

use candle_core::Tensor;
use focal_engine::torch_file::load;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/torch-file").join(name)
}

fn tensors(name: &str) -> Vec<(String, Tensor)> {
    load(&fixture(name)).unwrap().into_tensors()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(candle_core::DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn legacy_and_zip_files_hold_the_same_tensors() {
    let (zip, legacy) = (tensors("zip.pth"), tensors("legacy.pth"));
    let mut names: Vec<&str> = legacy.iter().map(|(k, _)| k.as_str()).collect();
    names.sort();
    assert_eq!(names, ["module.count", "module.half", "module.slice", "module.transposed", "module.weight"]);
    for ((kz, z), (kl, l)) in zip.iter().zip(&legacy) {
        assert_eq!(kz, kl);
        assert_eq!((z.dims(), z.dtype()), (l.dims(), l.dtype()), "{kz}");
        assert_eq!(values(z), values(l), "{kz}");
    }
    // The views: base.t() is 6×4, base[1:3, 2:5] is 2×3 of the same storage.
    let get = |k: &str| legacy.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let (t, s) = (values(&get("module.transposed")), values(&get("module.slice")));
    assert_eq!(get("module.transposed").dims(), [6, 4]);
    // slice[0][0] = base[1][2] = transposed[2][1].
    assert_eq!(s[0], t[2 * 4 + 1]);
    assert_eq!(values(&get("module.count")), [7.0]);
}

#[test]
fn other_files_are_refused() {
    let path = std::env::temp_dir().join(format!("focal-not-torch-{}.pth", std::process::id()));
    std::fs::write(&path, b"\x80\x02not a torch file at all").unwrap();
    let err = load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    assert!(err.contains("not a torch file"), "{err}");
    // A legacy header over a truncated stream.
    let mut bytes = std::fs::read(fixture("legacy.pth")).unwrap();
    bytes.truncate(bytes.len() - 40);
    std::fs::write(&path, &bytes).unwrap();
    let err = load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    assert!(err.contains("truncated") || err.contains("storage"), "{err}");
    // A legacy stream whose object calls a function: refused, naming it, before anything runs.
    let mut evil = std::fs::read(fixture("legacy.pth")).unwrap()[..15].to_vec();
    evil.extend(b"\x80\x02M\xe9\x03.\x80\x02}q\x00.");
    evil.extend(b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.\x80\x02]q\x00.");
    std::fs::write(&path, &evil).unwrap();
    let err = load(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    assert!(err.contains("os.system"), "{err}");
}
