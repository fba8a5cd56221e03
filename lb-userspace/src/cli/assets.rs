//! Man pages and shell completions generated from the CLI definition itself
//! (`lb generate-assets DIR`, a hidden command `cargo xtask dist` runs for
//! the package), so they can never disagree with `lb --help`.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Shells completions are generated for, and the file name each one's
/// completion directory expects.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "lb"),
    (Shell::Zsh, "_lb"),
    (Shell::Fish, "lb.fish"),
];

/// Writes `DIR/man/lb.1` and one `lb-SUBCOMMAND.1` per visible subcommand,
/// and `DIR/completions/{bash/lb, zsh/_lb, fish/lb.fish}`. Returns the
/// files written.
pub fn write(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = cmd;
    let man = dir.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    // One page per visible (sub)command: lb.1, lb-run.1, …
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    let mut written: Vec<PathBuf> = std::fs::read_dir(&man)
        .with_context(|| format!("reading {}", man.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    written.sort();
    let name = cmd.get_name().to_owned();
    for (shell, file) in SHELLS {
        let d = dir.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        let path = d.join(file);
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("lb")
            .about("a load balancer")
            .subcommand(
                clap::Command::new("run").about("Run it").arg(
                    clap::Arg::new("config")
                        .long("config")
                        .help("Configuration file"),
                ),
            )
            .subcommand(clap::Command::new("secret").hide(true))
    }

    #[test]
    fn man_pages_and_completions_cover_the_visible_commands() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(cli(), dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "man/lb-run.1",
                "man/lb.1",
                "completions/bash/lb",
                "completions/zsh/_lb",
                "completions/fish/lb.fish"
            ]
        );
        let top = std::fs::read_to_string(dir.path().join("man/lb.1")).unwrap();
        assert!(top.starts_with(".ie") || top.contains(".TH lb 1"), "{top}");
        assert!(top.contains("lb\\-run"), "{top}");
        assert!(!top.contains("secret"), "a hidden command in the man page");
        let run = std::fs::read_to_string(dir.path().join("man/lb-run.1")).unwrap();
        assert!(run.contains("\\-\\-config"), "{run}");
        let bash = std::fs::read_to_string(dir.path().join("completions/bash/lb")).unwrap();
        assert!(bash.contains("complete -F") && bash.contains("--config"));
        let fish = std::fs::read_to_string(dir.path().join("completions/fish/lb.fish")).unwrap();
        assert!(fish.contains("complete -c lb"));
    }
}
