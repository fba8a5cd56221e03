//! The Debian package built by `cargo xtask dist`: its contents and control
//! data, then installed on this machine (`dpkg -i`), checked (`lb check` on
//! the installed sample, `man lb`, the unit present but not enabled) and
//! purged, after which nothing it installed is left.
//!
//! `cargo xtask test` builds the package and names it in `LB_DEB`. Without
//! it the test skips, and fails under `CI=true`. It needs root, and refuses
//! to run where a package named `lb` is already installed. Whatever fails,
//! the package is purged before the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lb_tests::{is_ci, root_or_skip};

const TEST: &str = "the_package_installs_checks_and_purges_cleanly";

/// Runs a command; its output, whatever its exit status.
fn sh(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// Runs a command that must succeed; its stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let o = sh(program, args);
    assert!(
        o.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// dpkg knows the package in any state but "not installed" (also half
/// installed or configured, or only its conffiles left).
fn installed() -> bool {
    let o = sh("dpkg-query", &["-W", "-f=${db:Status-Status}", "lb"]);
    let state = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    o.status.success() && !state.is_empty() && state != "not-installed"
}

/// Purges the package when dropped, so a failed check never leaves it
/// installed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if installed() {
            let o = sh("dpkg", &["--purge", "lb"]);
            if !o.status.success() {
                eprintln!(
                    "{TEST}: dpkg --purge lb failed:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

/// The package's files (not directories), as `dpkg-deb -c` lists them:
/// (mode, path without the leading dot).
fn contents(deb: &Path) -> Vec<(String, String)> {
    ok("dpkg-deb", &["-c", deb.to_str().unwrap()])
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let mode = l.split_whitespace().next().unwrap().to_owned();
            let path = l.split_whitespace().last().unwrap();
            (mode, path.trim_start_matches('.').to_owned())
        })
        .collect()
}

#[test]
fn the_package_installs_checks_and_purges_cleanly() {
    if !root_or_skip(TEST) {
        return;
    }
    let Some(deb) = std::env::var_os("LB_DEB").map(PathBuf::from) else {
        assert!(
            !is_ci(),
            "{TEST}: LB_DEB is not set (run `cargo xtask test`)"
        );
        eprintln!("SKIPPED {TEST}: LB_DEB is not set (`cargo xtask dist` builds the package)");
        return;
    };
    let deb_arg = deb.to_str().unwrap();
    assert!(
        !installed(),
        "a package named lb is installed here already: not touching it"
    );

    // Every file where it belongs, nothing elsewhere.
    let files = contents(&deb);
    let listing: Vec<String> = files.iter().map(|(m, p)| format!("{m} {p}")).collect();
    println!("dpkg-deb -c {}:\n  {}", deb.display(), listing.join("\n  "));
    let unit = [
        "/usr/lib/systemd/system/lb.service",
        "/lib/systemd/system/lb.service",
    ];
    let expected: &[(&str, &str)] = &[
        ("/usr/bin/lb", "-rwxr-xr-x"),
        ("/etc/lb/lb.toml", "-rw-r--r--"),
        ("/usr/share/lb/prometheus/alerts.yml", "-rw-r--r--"),
        ("/usr/share/lb/grafana/lb.json", "-rw-r--r--"),
        ("/usr/share/man/man1/lb.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/lb-run.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/lb-init.1.gz", "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/lb", "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_lb", "-rw-r--r--"),
        ("/usr/share/fish/vendor_completions.d/lb.fish", "-rw-r--r--"),
        ("/usr/share/doc/lb/copyright", "-rw-r--r--"),
    ];
    for (path, mode) in expected {
        let found = files.iter().find(|(_, p)| p == path);
        assert!(
            found.is_some_and(|(m, _)| m == mode),
            "{path} ({mode}) not in the package:\n{listing:#?}"
        );
    }
    // The README's links into docs/ resolve in the installed copy too.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let linked: Vec<&str> = readme
        .split("](docs/")
        .skip(1)
        .filter_map(|rest| rest.split([')', '#']).next())
        .collect();
    assert!(!linked.is_empty(), "the README links no docs/ page");
    for page in linked {
        let path = format!("/usr/share/doc/lb/docs/{page}");
        assert!(
            files.iter().any(|(m, p)| *p == path && m == "-rw-r--r--"),
            "README links docs/{page}, but the package has no {path}:\n{listing:#?}"
        );
    }
    assert!(
        files.iter().any(|(_, p)| unit.contains(&p.as_str())),
        "no systemd unit:\n{listing:#?}"
    );
    let allowed = [
        "/usr/bin/lb",
        "/etc/lb/",
        "/usr/lib/systemd/system/lb.service",
        "/lib/systemd/system/lb.service",
        "/usr/share/lb/",
        "/usr/share/man/man1/lb",
        "/usr/share/doc/lb/",
        "/usr/share/bash-completion/completions/lb",
        "/usr/share/zsh/vendor-completions/_lb",
        "/usr/share/fish/vendor_completions.d/lb.fish",
    ];
    for (_, p) in &files {
        assert!(
            allowed.iter().any(|a| p.starts_with(a)),
            "{p} is out of place"
        );
    }

    // Control data: the sample config is a conffile; no maintainer script
    // enables or starts the unit.
    let conffiles = ok("dpkg-deb", &["-I", deb_arg, "conffiles"]);
    assert_eq!(
        conffiles.trim(),
        "/etc/lb/lb.toml",
        "conffiles: {conffiles:?}"
    );
    let control = ok("dpkg-deb", &["-f", deb_arg, "Package", "Architecture"]);
    assert!(control.contains("Package: lb"), "{control}");
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let o = sh("dpkg-deb", &["-I", deb_arg, script]);
        let text = String::from_utf8_lossy(&o.stdout);
        for forbidden in [
            "deb-systemd-invoke start",
            "deb-systemd-invoke restart",
            "systemctl enable",
            "systemctl start",
        ] {
            assert!(
                !text.contains(forbidden),
                "{script} runs {forbidden}:\n{text}"
            );
        }
        // The helper re-enables only a unit the operator had enabled
        // before (an upgrade), as debhelper does.
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.contains("deb-systemd-helper enable") {
                let guard = lines[i.saturating_sub(2)..i]
                    .iter()
                    .any(|g| g.contains("was-enabled"));
                assert!(guard, "{script} enables the unit unconditionally:\n{text}");
            }
        }
    }
    for (_, p) in &files {
        assert!(
            !Path::new(p).exists(),
            "{p} exists before the install: the purge could not be proven"
        );
    }

    let _purge = Purge;
    ok("dpkg", &["-i", deb_arg]);
    assert!(installed());

    // The installed binary checks the installed sample.
    let check = ok("/usr/bin/lb", &["check", "--config", "/etc/lb/lb.toml"]);
    assert!(check.contains("/etc/lb/lb.toml: OK"), "{check}");
    // The man pages render.
    let man = Command::new("man")
        .arg("lb")
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("running man");
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success(),
        "man lb failed: {}",
        String::from_utf8_lossy(&man.stderr)
    );
    assert!(
        page.contains("NAME") && page.contains("lb-run"),
        "man lb:\n{page}"
    );
    let man_run = ok("man", &["-P", "cat", "lb-run"]);
    assert!(
        man_run.contains("--config") || man_run.contains("‐‐config"),
        "man lb-run:\n{man_run}"
    );
    // The unit is there, neither enabled nor running.
    let unit_path = unit
        .iter()
        .find(|p| Path::new(p).is_file())
        .expect("the unit is installed");
    let unit_text = std::fs::read_to_string(unit_path).unwrap();
    assert!(
        unit_text.contains("ExecStart=/usr/bin/lb run"),
        "{unit_text}"
    );
    let enabled = sh("systemctl", &["is-enabled", "lb.service"]);
    let state = String::from_utf8_lossy(&enabled.stdout).trim().to_owned();
    assert_eq!(state, "disabled", "systemctl is-enabled lb: {state:?}");
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/lb.service").exists());

    ok("dpkg", &["--purge", "lb"]);
    assert!(!installed(), "lb still installed after the purge");
    for (_, p) in &files {
        assert!(!Path::new(p).exists(), "{p} left after the purge");
    }
    // Also what the maintainer scripts made (the mask a removal leaves).
    for dir in [
        "/etc/lb",
        "/usr/share/lb",
        "/usr/share/doc/lb",
        "/etc/systemd/system/lb.service",
    ] {
        assert!(!Path::new(dir).exists(), "{dir} left after the purge");
    }
    let state = Path::new("/var/lib/systemd/deb-systemd-helper-enabled/lb.service.dsh-also");
    assert!(!state.exists(), "{} left after the purge", state.display());
}
