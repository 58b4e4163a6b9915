//! Builds the guest workspace `plugins/` for wasm32-wasip2 into `target/plugins`, so a fresh
//! clone has its plugins after one `cargo build`. A separate target dir avoids deadlocking on
//! the outer build's lock; inherited cargo/rustc variables are cleared so the nested build is
//! not configured for the host.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.join("../..").canonicalize().unwrap();
    let plugins = root.join("plugins");
    let target_dir = root.join("target/plugins");
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed={}", plugins.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", plugins.join("Cargo.lock").display());
    for entry in std::fs::read_dir(&plugins).unwrap().flatten() {
        if entry.path().join("Cargo.toml").exists() {
            // The whole crate folder: sources and the data they embed (styles, wildcards).
            println!("cargo:rerun-if-changed={}", entry.path().display());
        }
    }
    // Host crates the components share: the image-task component's pixel operations, the
    // Fooocus-API plugin's task rules.
    for shared in ["host/imageops", "host/fooocus-tasks"] {
        println!("cargo:rerun-if-changed={}", root.join(shared).display());
    }
    println!("cargo:rerun-if-env-changed=FOCAL_PLUGINS_PREBUILT");
    let out = match std::env::var("FOCAL_PLUGINS_PREBUILT") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => {
            if let Some(missing) = missing_wasm_target() {
                // One line a person can act on, instead of rustc's "can't find crate for `core`".
                panic!("{missing}");
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.arg("build")
                .arg("--manifest-path")
                .arg(plugins.join("Cargo.toml"))
                .args(["--target", "wasm32-wasip2", "--release", "--target-dir"])
                .arg(&target_dir);
            if std::env::var_os("CI").is_some() {
                cmd.arg("--locked");
            }
            for (k, _) in std::env::vars() {
                if (k.starts_with("CARGO_") && k != "CARGO_HOME") || k.starts_with("RUSTC") || k == "RUSTFLAGS" || k == "RUSTDOCFLAGS" {
                    cmd.env_remove(&k);
                }
            }
            let output = cmd.output().expect("running cargo for the plugins");
            if !output.status.success() {
                for line in String::from_utf8_lossy(&output.stderr).lines() {
                    println!("cargo:warning={line}");
                }
                panic!("building plugins/ for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)");
            }
            target_dir.join("wasm32-wasip2/release")
        }
    };
    println!("cargo:rustc-env=FOCAL_PLUGINS_OUT={}", out.display());
}

/// Whether the toolchain building focal can build the plugins: the wasm32-wasip2 standard
/// library must be installed in its sysroot.
fn missing_wasm_target() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().ok()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    let installed = sysroot.join("lib/rustlib/wasm32-wasip2/lib").is_dir();
    (!installed).then(|| {
        "focal's plugins are built for wasm32-wasip2, which this Rust toolchain lacks: run `rustup target add wasm32-wasip2`, then build again".to_string()
    })
}
