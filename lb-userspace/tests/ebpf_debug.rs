//! The program must still load with its debug records on (`lb run
//! --ebpf-debug`). With logging off the verifier never walks the logging
//! code, so every other test loads a program whose deepest call chain
//! leaves the records out; on, their frames join that chain, which shares
//! 512 bytes of stack (the IPv6 data path's two copies of the flow logic
//! first pushed it over).
//!
//! Needs root (CI=true turns a skip into a failure).

mod common;

use common::{root_or_skip, sh};

/// A bpffs of the test's own, unmounted on drop.
struct Bpffs(std::path::PathBuf);

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn program_loads_with_ebpf_debug_on() {
    if !root_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lb-ebpf-debug-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fs = Bpffs(dir);
    sh(&["mount", "-t", "bpf", "bpf", fs.0.to_str().unwrap()]);
    let dp = lb::dataplane::Dataplane::open(4096, &fs.0.join("lb"), true, true);
    if let Err(e) = dp {
        panic!("the program does not load with --ebpf-debug: {e:?}");
    }
}
