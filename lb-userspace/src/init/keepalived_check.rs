//! `keepalived -t` on a generated file, and what its output means.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// What `keepalived -t` said about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted.
    Accepted,
    /// Accepted apart from interfaces that do not exist on this machine
    /// (generated elsewhere than on the gateway).
    AcceptedButMissing(Vec<String>),
    /// keepalived is not installed here.
    NotInstalled,
}

/// Why `keepalived -t` rejected a file.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// keepalived could not be run.
    #[error("running keepalived -t: {0}")]
    Run(#[source] io::Error),
    /// keepalived did not finish in time.
    #[error("keepalived -t did not finish within {0:?}")]
    Timeout(Duration),
    /// keepalived found problems.
    #[error("keepalived -t rejects {file} ({status}):\n{output}")]
    Rejected {
        /// The file.
        file: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        output: String,
    },
}

/// Runs `keepalived -t -f file`. A complaint about one of `interfaces` is
/// tolerated only when that interface is absent from this machine (the
/// files may be generated elsewhere than on the gateway); anything else
/// keepalived reports is a rejection.
pub fn check(file: &Path, interfaces: &[&str]) -> Result<Verdict, CheckError> {
    let mut child = match Command::new("keepalived")
        .arg("-t")
        .arg("-f")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verdict::NotInstalled),
        Err(e) => return Err(CheckError::Run(e)),
    };
    let limit = Duration::from_secs(10);
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait().map_err(CheckError::Run)? {
            Some(_) => break,
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CheckError::Timeout(limit));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    // keepalived -t prints little, well below a pipe's buffer, so reading
    // after it exited cannot deadlock.
    let out = child.wait_with_output().map_err(CheckError::Run)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let missing: Vec<String> = interfaces
        .iter()
        .filter(|i| !Path::new("/sys/class/net").join(i).exists())
        .map(|i| (*i).to_owned())
        .collect();
    interpret(out.status.success(), &text, &missing).map_err(|output| CheckError::Rejected {
        file: file.display().to_string(),
        status: out.status.to_string(),
        output,
    })
}

/// Decides on keepalived -t's output: `missing` are interfaces absent here.
/// `Err` carries the lines that are a real problem (or all output).
pub fn interpret(success: bool, output: &str, missing: &[String]) -> Result<Verdict, String> {
    let mut real = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let about_missing = missing.iter().any(|i| {
            line.contains(&format!("interface {i} for"))
                || line == "Non-existent interface specified in configuration"
        });
        if !about_missing {
            real.push(line);
        }
    }
    if success && real.is_empty() {
        return Ok(Verdict::Accepted);
    }
    if !success && real.is_empty() && !missing.is_empty() && !output.trim().is_empty() {
        return Ok(Verdict::AcceptedButMissing(missing.to_vec()));
    }
    if success {
        // Exit 0 with warnings: keepalived would run, but say what it said.
        return Err(real.join("\n"));
    }
    Err(if real.is_empty() {
        output.trim().to_owned()
    } else {
        real.join("\n")
    })
}
