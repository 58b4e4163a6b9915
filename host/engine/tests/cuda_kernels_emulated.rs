//! The engine's GPU kernels (`src/cuda/*.cuh`), run on the CPU: the same sources, compiled by the
//! system's C++ compiler against an emulated CUDA (one OS thread per GPU thread, barriers, a
//! layout-free WMMA, `mma.sync` from the PTX ISA's documented register layouts:
//! `tests/cuda_emulated/`), checked against f64 arithmetic — both fused attention variants for f16
//! and bf16, head dimensions 64 and 128, partial query and key blocks, 77-token cross-attention,
//! peaked and flat softmaxes; GEGLU with its bias over a grid-stride loop; group norm
//! (+ SiLU) in chunks across channels, with large means and empty chunks, f32/f16/bf16. CI has no
//! GPU: this is where the kernels' arithmetic, indexing and synchronisation are tested;
//! `scripts/gpu-check.sh` compares them with candle's ops on a GPU.

use std::path::Path;
use std::process::Command;

#[test]
fn the_gpu_kernels_match_f64_arithmetic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("cuda_emulated");
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let build = Command::new(&compiler)
        // CUDA code reads 16-byte vectors through other types' pointers (defined for nvcc, not
        // for standard C++): no strict aliasing, as nvcc.
        .args(["-std=c++20", "-O2", "-fno-strict-aliasing", "-pthread", "-I"])
        .arg(root.join("src/cuda"))
        .arg(root.join("tests/cuda_emulated/main.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("{compiler} (a C++20 compiler, for the emulated kernels): {e}"));
    assert!(build.status.success(), "compiling the emulated kernels failed:\n{}", String::from_utf8_lossy(&build.stderr));
    let run = Command::new(&exe).output().unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    println!("{report}");
    assert!(run.status.success(), "the kernels' outputs are off:\n{report}{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(report.lines().filter(|l| l.ends_with(" ok")).count(), 29, "every case ran:\n{report}");
}
