//! Embeds the XDP object built by `cargo xtask build-ebpf`.
//!
//! Host builds (`cargo check`, `clippy`, unit tests) must not need the BPF
//! toolchain, so when the object is missing an empty file is embedded and
//! `lb run` says how to build it. An object older than any source of the
//! program (lb-ebpf, or the map types it shares with the daemon in
//! lb-common) fails the build: a daemon must never embed a program whose
//! maps differ from the types it was compiled with.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::SystemTime,
};

/// Newest modification time of the files under `dir` (recursively), with
/// a `rerun-if-changed` for each so an edit reruns this check.
fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let entries = fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let path = e.path();
        let found = if path.is_dir() {
            newest_source(&path)
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
            fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path.clone()))
        };
        if let Some((t, p)) = found {
            if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                newest = Some((t, p));
            }
        }
    }
    newest
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    git_commit(&manifest);
    let default = manifest.join("../target/bpfel-unknown-none/release/lb-ebpf");
    let src = env::var_os("LB_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or(default);
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("lb-ebpf.o");
    println!("cargo:rerun-if-env-changed=LB_EBPF_OBJ");
    println!("cargo:rerun-if-changed={}", src.display());
    let sources = [
        manifest.join("../lb-ebpf/src"),
        manifest.join("../lb-ebpf/Cargo.toml"),
        manifest.join("../lb-common/src"),
        manifest.join("../lb-common/Cargo.toml"),
    ];
    match fs::read(&src) {
        Ok(bytes) => {
            let built = fs::metadata(&src).and_then(|m| m.modified()).unwrap();
            for dir in &sources {
                let newest = if dir.is_dir() {
                    newest_source(dir)
                } else {
                    println!("cargo:rerun-if-changed={}", dir.display());
                    fs::metadata(dir)
                        .and_then(|m| m.modified())
                        .ok()
                        .map(|t| (t, dir.clone()))
                };
                if let Some((t, path)) = newest {
                    if t > built && env::var_os("LB_EBPF_OBJ").is_none() {
                        panic!(
                            "the XDP object {} is older than {}: run `cargo xtask build` (or `cargo xtask build-ebpf`) so the daemon embeds the program its map types match",
                            src.display(),
                            path.display()
                        );
                    }
                }
            }
            fs::write(&out, bytes).unwrap()
        }
        Err(_) => {
            println!(
                "cargo:warning=XDP object not found at {}; `lb run` will fail until `cargo xtask build-ebpf` has run",
                src.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}

/// Sets `LB_GIT_COMMIT` (for `lb_build_info`): the variable of that name if
/// set, else `git rev-parse HEAD` of the source tree, else "unknown".
fn git_commit(manifest: &Path) {
    println!("cargo:rerun-if-env-changed=LB_GIT_COMMIT");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(manifest)
            .args(args)
            .output()
            .ok()?;
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !s.is_empty()).then_some(s)
    };
    let commit = env::var("LB_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves; watch only files that exist (a missing one
    // would make every build rerun this script).
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) {
        let head = dir.join("HEAD");
        let mut watch = vec![head.clone(), dir.join("packed-refs")];
        if let Some(r) = fs::read_to_string(&head)
            .ok()
            .and_then(|h| h.strip_prefix("ref: ").map(|r| r.trim().to_string()))
        {
            watch.push(dir.join(r));
        }
        for p in watch.iter().filter(|p| p.is_file()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    println!("cargo:rustc-env=LB_GIT_COMMIT={commit}");
}
