//! Keeps the documentation honest (no lab, no root): the README stays a
//! front door (at most 250 lines, the two quick-start commands, the test
//! command the one CI runs), every source path `docs/architecture.md` names
//! exists, and every relative link of the README and `docs/` resolves, to
//! a file and, with a `#fragment`, to a heading of that file.
//!
//! The configuration reference is checked against the parser in
//! `lb-userspace/src/config/doc_tests.rs` (it needs the parser's private
//! structs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Most lines the README may have: a front door, the rest in `docs/`.
const README_MAX_LINES: usize = 250;

/// Top-level directories whose paths `docs/architecture.md` may name.
const PATH_ROOTS: [&str; 9] = [
    "lb-common/",
    "lb-ebpf/",
    "lb-userspace/",
    "tests/",
    "xtask/",
    "deploy/",
    "docs/",
    "examples/",
    ".ci/",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let p = repo_root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push(line);
        }
    }
    out
}

/// Every `code span` of the prose.
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    for line in prose(text) {
        let mut parts = line.split('`');
        parts.next();
        while let (Some(inside), Some(_)) = (parts.next(), parts.next()) {
            spans.push(inside.to_string());
        }
    }
    spans
}

/// Every `[text](target)` link target of the prose (images included).
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, spaces to hyphens, everything
/// but letters, digits, `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading of a Markdown text.
fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The Markdown files whose links are checked: the README and `docs/*.md`.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(repo_root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The problems of one link of `file` (repository-relative).
fn check_link(file: &str, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (path, fragment) = match target.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (target, None),
    };
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    let resolved = if path.is_empty() {
        PathBuf::from(file)
    } else {
        dir.join(path)
    };
    let full = repo_root().join(&resolved);
    if !full.exists() {
        return Some(format!(
            "{file}: link {target}: {} does not exist",
            resolved.display()
        ));
    }
    let fragment = fragment?;
    if full.extension().is_some_and(|e| e == "md") {
        let text = std::fs::read_to_string(&full).ok()?;
        if !anchors(&text).contains(fragment) {
            return Some(format!(
                "{file}: link {target}: no heading with anchor #{fragment} in {}",
                resolved.display()
            ));
        }
    }
    None
}

#[test]
fn readme_is_a_front_door() {
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines (at most {README_MAX_LINES}): move reference material to docs/"
    );
}

#[test]
fn readme_quick_start_is_the_two_commands_and_ci_runs_its_test_command() {
    let readme = read("README.md");
    let at = readme
        .find("## Quick start")
        .expect("README has a Quick start");
    let block = readme[at..]
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```sh block in the Quick start");
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(commands, ["cargo xtask demo", "cargo xtask test"]);
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == commands[1]),
        ".ci/run does not run the README's test command `{}`",
        commands[1]
    );
}

#[test]
fn every_source_path_in_the_architecture_page_exists() {
    let page = read("docs/architecture.md");
    let mut named = 0;
    let mut missing = Vec::new();
    for span in code_spans(&page) {
        // One path per span; the `lb-ebpf/src/*` style of globs is not used.
        if span.contains(' ') || !PATH_ROOTS.iter().any(|r| span.starts_with(r)) {
            continue;
        }
        named += 1;
        if !repo_root().join(&span).exists() {
            missing.push(span);
        }
    }
    // The page names the files of the three paths; a parser that found
    // none would pass vacuously.
    assert!(
        named >= 40,
        "only {named} paths found in docs/architecture.md"
    );
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn every_relative_link_of_the_readme_and_docs_resolves() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in markdown_files() {
        for target in links(&read(&file)) {
            checked += 1;
            problems.extend(check_link(&file, &target));
        }
    }
    assert!(checked >= 30, "only {checked} links found");
    assert!(
        problems.is_empty(),
        "broken links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_link_and_anchor_rules_catch_breakage() {
    assert_eq!(
        anchor(" Which topology do you have"),
        "which-topology-do-you-have"
    );
    assert_eq!(anchor(" `[health]`"), "health");
    assert_eq!(anchor(" Restart and upgrade"), "restart-and-upgrade");
    assert!(check_link("README.md", "docs/config.md#health").is_none());
    assert!(check_link("README.md", "docs/no-such-page.md").is_some());
    assert!(check_link("README.md", "docs/config.md#no-such-heading").is_some());
    assert!(check_link("docs/ha.md", "fullnat.md").is_none());
    assert!(check_link("docs/ha.md", "https://example.com/x").is_none());
    assert_eq!(
        links("see [a](b.md) and ![c](d.png)\n```\n[e](f.md)\n```\n"),
        ["b.md", "d.png"]
    );
    assert_eq!(code_spans("x `a/b.rs` y `c`"), ["a/b.rs", "c"]);
}
