//! The GPU's fused attention kernel (`src/cuda/flash_attention.cuh`), run on the CPU: the same
//! source, compiled by the system's C++ compiler against an emulated CUDA (one OS thread per GPU
//! thread, barriers, a layout-free WMMA: `tests/flash_emulated/`), checked against attention in
//! f64 for f16 and bf16, head dimensions 64 and 128, partial query and key blocks, 77-token
//! cross-attention and peaked softmaxes. CI has no GPU: this is where the kernel's arithmetic and
//! its synchronisation are tested; `scripts/gpu-check.sh` compares it on a GPU.

use std::path::Path;
use std::process::Command;

#[test]
fn the_fused_gpu_attention_kernel_matches_attention_in_f64() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("flash_emulated");
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let build = Command::new(&compiler)
        .args(["-std=c++20", "-O2", "-pthread", "-I"])
        .arg(root.join("src/cuda"))
        .arg(root.join("tests/flash_emulated/main.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("{compiler} (a C++20 compiler, for the emulated kernel): {e}"));
    assert!(build.status.success(), "compiling the emulated kernel failed:\n{}", String::from_utf8_lossy(&build.stderr));
    let run = Command::new(&exe).output().unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    println!("{report}");
    assert!(run.status.success(), "the kernel's outputs are off:\n{report}{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(report.lines().filter(|l| l.ends_with(" ok")).count(), 10, "every case ran:\n{report}");
}
