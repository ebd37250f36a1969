//! `cargo xtask --version`: the crate's version and the commit of the
//! checkout the xtask was built from (`+dirty` with uncommitted changes).

use xshell::Shell;

use crate::{git, repo};

/// The version text when the command line asks for it (`-V` or
/// `--version` before any subcommand), else `None`: clap handles the rest.
pub fn requested() -> Option<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    asks_version(&args).then(text)
}

fn asks_version(args: &[String]) -> bool {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-V" | "--version" => return true,
            "--flake" => {
                it.next();
            }
            a if a.starts_with("--flake=") => {}
            _ => return false,
        }
    }
    false
}

/// `xtask 0.1.0 (commit abc1234)`, the commit left out when Git cannot say.
fn text() -> String {
    let version = format!("xtask {}", env!("CARGO_PKG_VERSION"));
    let commit = Shell::new().ok().and_then(|sh| {
        let root = repo::root(None).ok()?;
        git::status(&sh, &root).ok()??.short()
    });
    match commit {
        Some(c) => format!("{version} (commit {c})"),
        None => version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn version_flag_only_before_a_subcommand() {
        assert!(asks_version(&args(&["--version"])));
        assert!(asks_version(&args(&["-V"])));
        assert!(asks_version(&args(&["--flake", "x", "-V"])));
        assert!(!asks_version(&args(&["list", "--version"])));
        assert!(!asks_version(&args(&[])));
    }
}
