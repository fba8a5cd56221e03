//! Bounded random testing of the configuration parser: mutations of a valid
//! file (byte flips, insertions, deletions, duplicated and truncated lines,
//! huge lines) must give a configuration or a clear error, never a panic,
//! and an error never echoes more than a bounded amount of the input.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const VALID: &str = r#"
[dataplane]
interfaces = ["eth1"]
[health]
interval = "2s"
timeout = "1s"
[[backend]]
name = "cp-01"
address = "192.168.30.31"
[[backend]]
name = "cp-02"
address = "192.168.30.32"
[[listener]]
name = "kubernetes-api"
vip = "192.168.30.30"
port = 6443
[[listener]]
name = "talos-api-workers"
vip = "192.168.30.30"
port = 50001
target_port = 50000
all_down = "drop"
deregistration_delay = "5s"
"#;

const TOKENS: &[&str] = &[
    "=",
    "\"",
    "[",
    "]",
    "[[",
    "]]",
    "\n",
    "#",
    ",",
    "0",
    "-1",
    "65536",
    "4294967296",
    "\"\"",
    "\"1ms\"",
    "\"0s\"",
    "\"999999999h\"",
    "true",
    "{",
    "}",
    "'",
    "\\",
    "\u{0}",
    "é",
    "name",
    "port",
    "vip",
    "backends",
    "kind",
    "\"https\"",
    "path",
    "ca_file",
    "\"/dev/zero\"",
];

fn mutate(rng: &mut StdRng, text: &str) -> String {
    let mut bytes: Vec<u8> = text.as_bytes().to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=bytes.len());
        match rng.random_range(0..6) {
            0 if !bytes.is_empty() => {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = rng.random();
            }
            1 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                bytes.splice(at..at, t.bytes());
            }
            2 if !bytes.is_empty() => {
                let end = (at + rng.random_range(1..40)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            3 => {
                // A very long line.
                let long = "x".repeat(rng.random_range(1000..20_000));
                bytes.splice(at..at, format!("name = \"{long}\"\n").into_bytes());
            }
            4 => {
                // Duplicate a random line.
                let lines: Vec<&str> = text.lines().collect();
                let l = lines[rng.random_range(0..lines.len())];
                bytes.splice(at..at, format!("\n{l}\n").into_bytes());
            }
            _ => bytes.truncate(at),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn random_mutations_never_panic_and_errors_stay_short() {
    let mut rng = StdRng::seed_from_u64(0x1b_c0f1);
    assert!(Config::from_toml_str(VALID).is_ok());
    let mut rejected = 0;
    for _ in 0..3000 {
        let text = mutate(&mut rng, VALID);
        match Config::from_toml_str(&text) {
            Ok(c) => assert!(!c.listeners.is_empty() || !c.backends.is_empty()),
            Err(e) => {
                rejected += 1;
                let msg = e.to_string();
                assert!(!msg.is_empty());
                for line in msg.lines() {
                    assert!(
                        line.chars().count() <= 400,
                        "error line of {} chars: {}…",
                        line.len(),
                        &line[..200]
                    );
                }
            }
        }
    }
    assert!(
        rejected > 1000,
        "the mutations do break the file ({rejected})"
    );
}

#[test]
fn a_toml_error_does_not_echo_a_huge_line() {
    let huge = format!("name = \"{}\n", "y".repeat(600_000));
    let e = Config::from_toml_str(&huge).unwrap_err().to_string();
    assert!(e.len() < 2000, "{} bytes of error", e.len());
    assert!(e.contains("cut"), "{e}");
}
