//! With the `cuda` feature: the engine's own CUDA kernels (src/cuda/*.cu) compiled to PTX by nvcc
//! (on PATH, or NVCC), for CUDA_COMPUTE_CAP (default 80; the kernels' bf16 tensor-core products
//! need 8.0 or later), embedded by the modules that launch them. Without it: nothing.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=src/cuda");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cap: u32 = std::env::var("CUDA_COMPUTE_CAP")
        .unwrap_or_else(|_| "80".into())
        .trim()
        .parse()
        .expect("CUDA_COMPUTE_CAP: a compute capability as digits, e.g. 90");
    assert!(cap >= 80, "CUDA_COMPUTE_CAP={cap}: the engine's kernels need compute capability 8.0 or later");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    for kernel in ["flash_attention", "geglu", "group_norm"] {
        let status = Command::new(&nvcc)
            .args(["--ptx", &format!("-arch=sm_{cap}"), "-O3", "-std=c++17", "-o"])
            .arg(out.join(format!("{kernel}.ptx")))
            .arg(format!("src/cuda/{kernel}.cu"))
            .status()
            .unwrap_or_else(|e| panic!("{nvcc} (CUDA's compiler, for src/cuda/{kernel}.cu): {e}"));
        assert!(status.success(), "{nvcc} failed on src/cuda/{kernel}.cu");
    }
}
