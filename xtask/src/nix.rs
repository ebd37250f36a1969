//! Nix commands, built in one place. They work on Nix 2.8 (Debian 12's
//! nix-bin) and on current Nix: experimental features are switched on per
//! call, so no nix.conf change is needed to use flakes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::{Cmd, Shell, cmd};

use crate::exec;

/// `nix` with flakes and the new CLI enabled for this call.
pub fn nix(sh: &Shell) -> Cmd<'_> {
    cmd!(sh, "nix --extra-experimental-features").arg("nix-command flakes")
}

/// Whether Nix is installed (its `nix` and `nix-instantiate`).
pub fn installed() -> bool {
    exec::have("nix") && exec::have("nix-instantiate")
}

/// `<dir>#<attr>`: a flake output of the checkout at `dir`.
pub fn flake_attr(dir: &Path, attr: &str) -> String {
    format!("{}#{attr}", dir.display())
}

/// `nix eval --json <dir>#<attr>`.
pub fn eval_json(sh: &Shell, dir: &Path, attr: &str) -> Result<serde_json::Value> {
    let out = exec::read(nix(sh).args(["eval", "--json"]).arg(flake_attr(dir, attr)))?;
    serde_json::from_str(&out)
        .with_context(|| format!("nix eval printed something that is not JSON: {out}"))
}

/// Nix's effective configuration: `nix show-config`, or `nix config show`
/// from Nix 2.20 on. `enable`: turn nix-command on for this call only.
pub fn show_config(sh: &Shell, version: Option<(u32, u32)>, enable: bool) -> Cmd<'_> {
    let mut cmd = cmd!(sh, "nix");
    if enable {
        cmd = cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    if version.is_some_and(|v| v >= (2, 20)) {
        cmd.args(["config", "show"])
    } else {
        cmd.arg("show-config")
    }
}

/// `nix-build` of the Nix function in `file` with `--argstr` arguments,
/// locally (no remote builders), without substitutes, sandbox as
/// configured. Prints the output path.
pub fn build_probe<'a>(sh: &'a Shell, file: &Path, args: &[(&str, &str)]) -> Cmd<'a> {
    let mut cmd = cmd!(
        sh,
        "nix-build --no-out-link --option substitute false --option builders"
    )
    .arg("")
    .arg(file);
    for (name, value) in args {
        cmd = cmd.args(["--argstr", name, value]);
    }
    cmd
}

/// Parses `.nix` files with `nix-instantiate --parse`. Returns the files that
/// do not parse, each with Nix's message. One process for all the files that
/// parse; it restarts after each file that does not.
pub fn parse_files(sh: &Shell, files: &[PathBuf]) -> Result<Vec<(PathBuf, String)>> {
    let mut bad = Vec::new();
    let mut rest = files;
    while !rest.is_empty() {
        let out = exec::output_any(
            cmd!(sh, "nix-instantiate --parse")
                .args(rest)
                .ignore_stdout(),
        )?;
        if out.status.success() {
            break;
        }
        let msg = String::from_utf8_lossy(&out.stderr).to_string();
        // Nix names the file in its message; take the first file it names.
        let at = rest
            .iter()
            .position(|f| msg.contains(&*f.to_string_lossy()))
            .with_context(|| format!("nix-instantiate failed without naming a file: {msg}"))?;
        bad.push((rest[at].clone(), msg));
        rest = &rest[at + 1..];
    }
    Ok(bad)
}

/// Line number in a Nix error message about `file` (`file:LINE:COL`).
pub fn error_line(msg: &str, file: &Path) -> usize {
    let name = file.to_string_lossy();
    msg.match_indices(&*name)
        .filter_map(|(i, _)| {
            let tail = &msg[i + name.len()..];
            let tail = tail.strip_prefix(':')?;
            let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .next()
        .unwrap_or(0)
}

/// The first line of a Nix error that says what is wrong.
pub fn error_summary(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| msg.lines().next().unwrap_or(""))
        .trim_start_matches("error:")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_nix_2_8() {
        let msg = "error: syntax error, unexpected '}'\n\n       at /x/hosts/a/default.nix:3:1:\n\n            2|";
        assert_eq!(error_line(msg, Path::new("/x/hosts/a/default.nix")), 3);
        assert_eq!(error_summary(msg), "syntax error, unexpected '}'");
    }

    #[test]
    fn error_line_missing() {
        assert_eq!(error_line("error: boom", Path::new("/a.nix")), 0);
    }
}
