//! A real headless browser (Debian's `chromium`) run inside a lab namespace:
//! the DOM a page ends up with after loading, and screenshots.
//!
//! Each run gets a fresh profile directory and its own process group, which
//! is killed afterwards, so no browser process outlives a call (also on a
//! timeout).
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::lab::is_ci;

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest a browser run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// The browser when installed. Otherwise: with `CI=true` panics (`cargo
/// xtask setup` installs it); else prints a skip line and returns `None`.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let p = PathBuf::from(CHROMIUM);
    if p.is_file() {
        return Some(p);
    }
    if is_ci() {
        panic!("{test}: {CHROMIUM} missing (run `cargo xtask setup`)");
    }
    eprintln!("SKIPPED {test}: {CHROMIUM} missing (run `cargo xtask setup`)");
    None
}

/// Runs the headless browser in namespace `ns` with `args` after the
/// common flags (no sandbox: it runs as root; nothing fetched in the
/// background), returning its stdout.
fn run_chromium(ns: &str, profile: &Path, args: &[String]) -> Result<Vec<u8>> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, CHROMIUM])
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .env("HOME", profile)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().context("starting chromium")?;
    let pgid = child.id() as i32;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: kill(2) on the process group this call created; helpers
    // the browser left behind go with it.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    let stdout = out.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
    match status {
        None => bail!("chromium did not finish within {BROWSER_TIMEOUT:?}; stderr:\n{stderr}"),
        Some(st) if !st.success() => bail!("chromium failed ({st}); stderr:\n{stderr}"),
        Some(_) => Ok(stdout),
    }
}

/// The DOM of `url` after it loaded, as the browser serializes it, seen
/// from namespace `ns`.
pub fn dump_dom(ns: &str, url: &str) -> Result<String> {
    let profile = tempfile::tempdir().context("browser profile directory")?;
    let out = run_chromium(ns, profile.path(), &["--dump-dom".into(), url.into()])?;
    let dom = String::from_utf8(out).context("the DOM is not UTF-8")?;
    if !dom.contains("<html") {
        bail!("chromium printed no document for {url}: {dom:?}");
    }
    Ok(dom)
}

/// A PNG screenshot of `url` at `width`×`height` into `file`, seen from
/// namespace `ns`; fails unless a non-empty PNG was written.
pub fn screenshot(ns: &str, url: &str, file: &Path, width: u32, height: u32) -> Result<()> {
    let profile = tempfile::tempdir().context("browser profile directory")?;
    run_chromium(
        ns,
        profile.path(),
        &[
            format!("--screenshot={}", file.display()),
            format!("--window-size={width},{height}"),
            url.into(),
        ],
    )?;
    let png = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    if png.len() < 1000 || !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        bail!(
            "{} is not a PNG screenshot ({} bytes)",
            file.display(),
            png.len()
        );
    }
    Ok(())
}

/// The `<tr>` of backend `backend` in the section of listener `listener`
/// of the status page's DOM, if any.
pub fn backend_row<'a>(dom: &'a str, listener: &str, backend: &str) -> Option<&'a str> {
    let section = dom.split("<section").find(|s| {
        s.trim_start()
            .starts_with(&format!("class=\"listener\" data-listener=\"{listener}\""))
    })?;
    let start = section.find(&format!("<tr data-backend=\"{backend}\""))?;
    let row = &section[start..];
    Some(&row[..row.find("</tr>")?])
}
