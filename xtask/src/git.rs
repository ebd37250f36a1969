//! What Git says about the repository: the commit an image is built from and
//! the changes a flake build sees (tracked changes) or silently ignores
//! (untracked files).

use std::path::Path;

use anyhow::Result;
use xshell::{Shell, cmd};

use crate::exec;

#[derive(Debug, Default, PartialEq)]
pub struct Status {
    /// `HEAD`, or `None` before the first commit.
    pub commit: Option<String>,
    /// Tracked files with uncommitted changes (a flake build includes them).
    pub changed: Vec<String>,
    /// Untracked files (a flake build does not see them).
    pub untracked: Vec<String>,
}

impl Status {
    pub fn dirty(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Untracked files a flake build of this repository would need: Nix
    /// leaves them out silently.
    pub fn untracked_flake_inputs(&self) -> Vec<&str> {
        self.untracked
            .iter()
            .map(String::as_str)
            .filter(|f| {
                FLAKE_INPUTS
                    .iter()
                    .any(|p| f == p || (p.ends_with('/') && f.starts_with(p)))
            })
            .collect()
    }

    /// `abc1234` or `abc1234+dirty`, `None` before the first commit.
    pub fn short(&self) -> Option<String> {
        let c = self.commit.as_deref()?;
        let short = &c[..7.min(c.len())];
        Some(if self.dirty() {
            format!("{short}+dirty")
        } else {
            short.to_string()
        })
    }

    /// The note shown when uncommitted changes go into what is built:
    /// `uncommitted changes are built in and <recorded> `abc1234+dirty`: a, b`.
    pub fn dirty_note(&self, recorded: &str) -> Option<String> {
        if !self.dirty() {
            return None;
        }
        let mut list: Vec<&str> = self.changed.iter().map(String::as_str).take(8).collect();
        if self.changed.len() > 8 {
            list.push("…");
        }
        Some(format!(
            "note: uncommitted changes are built in and {recorded} `{}`: {}",
            self.short().unwrap_or_else(|| "no commit+dirty".into()),
            list.join(", ")
        ))
    }
}

/// Files a flake build of this repository reads: untracked ones are
/// silently left out by Nix.
pub const FLAKE_INPUTS: &[&str] = &[
    "flake.nix",
    "flake.lock",
    "lib/",
    "modules/",
    "hosts/",
    "keys/",
];

/// The repository's status, or `None` when `root` is not a Git checkout (or
/// Git is not installed): then Nix reads the folder as it is.
pub fn status(sh: &Shell, root: &Path) -> Result<Option<Status>> {
    if !exec::have("git") || !root.join(".git").exists() {
        return Ok(None);
    }
    let out = exec::output_any(cmd!(
        sh,
        "git -C {root} status --porcelain=v2 --branch -z --untracked-files=all"
    ))?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(parse_status(&String::from_utf8_lossy(&out.stdout))))
}

/// [`Status::dirty_note`] of the repository at `root`, when it is a Git checkout.
pub fn uncommitted_note(root: &Path, recorded: &str) -> Result<Option<String>> {
    let sh = Shell::new()?;
    Ok(status(&sh, root)?.and_then(|s| s.dirty_note(recorded)))
}

/// Parses `git status --porcelain=v2 --branch -z`.
pub fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    let mut fields = text.split('\0');
    while let Some(entry) = fields.next() {
        if let Some(oid) = entry.strip_prefix("# branch.oid ") {
            if oid != "(initial)" {
                status.commit = Some(oid.to_string());
            }
        } else if let Some(path) = entry.strip_prefix("? ") {
            status.untracked.push(path.to_string());
        } else if entry.starts_with("1 ") || entry.starts_with("u ") {
            let n = if entry.starts_with("1 ") { 8 } else { 10 };
            if let Some(path) = entry.splitn(n + 1, ' ').nth(n) {
                status.changed.push(path.to_string());
            }
        } else if entry.starts_with("2 ") {
            if let Some(path) = entry.splitn(10, ' ').nth(9) {
                status.changed.push(path.to_string());
            }
            fields.next(); // the original path of a rename
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_porcelain_v2() {
        let text = "# branch.oid 0123456789abcdef0123456789abcdef01234567\0# branch.head main\0\
1 .M N... 100644 100644 100644 aaaa bbbb hosts/fleet.toml\0\
2 R. N... 100644 100644 100644 aaaa bbbb R100 modules/new name.nix\0modules/old.nix\0\
? hosts/a/containers.toml\0";
        let s = parse_status(text);
        assert_eq!(
            s.commit.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(s.changed, vec!["hosts/fleet.toml", "modules/new name.nix"]);
        assert_eq!(s.untracked, vec!["hosts/a/containers.toml"]);
        assert!(s.dirty());
        assert_eq!(s.short().as_deref(), Some("0123456+dirty"));
        assert_eq!(s.untracked_flake_inputs(), vec!["hosts/a/containers.toml"]);
        let note = s.dirty_note("the image is recorded as").unwrap();
        assert_eq!(
            note,
            "note: uncommitted changes are built in and the image is recorded as `0123456+dirty`: hosts/fleet.toml, modules/new name.nix"
        );
    }

    #[test]
    fn untracked_outside_the_flake_inputs_do_not_count() {
        let s = parse_status("? notes.txt\0? out/x.img\0? flake.nix\0? hosts/b/default.nix\0");
        assert_eq!(
            s.untracked_flake_inputs(),
            vec!["flake.nix", "hosts/b/default.nix"]
        );
        assert_eq!(s.dirty_note("x"), None);
    }

    #[test]
    fn no_commit_yet() {
        let s = parse_status("# branch.oid (initial)\0# branch.head main\0");
        assert_eq!(s.commit, None);
        assert!(!s.dirty());
    }
}
