//! Embeds the XDP object built by `cargo xtask build-ebpf`.
//!
//! Host builds (`cargo check`, `clippy`, unit tests) must not need the BPF
//! toolchain, so when the object is missing an empty file is embedded and
//! `lb run` says how to build it.
use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let default = manifest.join("../target/bpfel-unknown-none/release/lb-ebpf");
    let src = env::var_os("LB_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or(default);
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("lb-ebpf.o");
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJ");
    println!("cargo:rerun-if-changed={}", src.display());
    match fs::read(&src) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=XDP object not found at {}; `lb run` will fail until `cargo xtask build-ebpf` has run",
                src.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}
