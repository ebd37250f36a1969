//! Nix commands, built in one place. They work on Nix 2.8 (Debian 12's
//! nix-bin) and on current Nix: experimental features are switched on per
//! call, so no nix.conf change is needed to use flakes. Evaluating the
//! pinned nixpkgs needs Nix 2.18: [`version::require`] decides that.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell, cmd};

use crate::exec;

pub mod version;

/// `nix` with flakes and the new CLI enabled for this call.
pub fn nix(sh: &Shell) -> Cmd<'_> {
    cmd!(sh, "nix --extra-experimental-features").arg("nix-command flakes")
}

/// Where the official installer puts `nix`: on PATH only for login shells
/// started after the install.
pub const OFFICIAL_BIN: &str = "/nix/var/nix/profiles/default/bin";

/// When no `nix` is on PATH but the official installer's is there (a shell
/// started before `setup-binfmt --install-nix`), puts it first on this
/// process's PATH, so the Quick start's next command finds it. Returns
/// whether it did. Call before any thread starts.
pub fn official_on_path() -> bool {
    let bin = Path::new(OFFICIAL_BIN);
    if exec::have("nix") || !bin.join("nix").is_file() {
        return false;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let Ok(joined) = std::env::join_paths(dirs) else {
        return false;
    };
    // SAFETY: called while the xtask runs no other thread.
    unsafe { std::env::set_var("PATH", joined) };
    true
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

/// The line of a Nix error that says what is wrong: the first `error:`
/// with a message (newer Nix opens a trace with a bare `error:` and puts
/// the cause in a nested `error:` after the `… while` and `--show-trace`
/// lines), preferring a cause over "N dependencies … failed to build".
/// Without any `error:` line, the last meaningful line.
pub fn error_summary(msg: &str) -> String {
    let errors: Vec<&str> = msg
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("error:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let follow_up = |l: &&str| {
        (l.contains("dependencies of derivation") || l.contains("dependency of derivation"))
            && l.contains("failed to build")
    };
    if let Some(e) = errors
        .iter()
        .find(|l| !follow_up(l))
        .or_else(|| errors.first())
    {
        return e.to_string();
    }
    msg.lines()
        .map(str::trim)
        .rfind(|l| {
            !l.is_empty()
                && !l.starts_with("debug")
                && !l.starts_with("warning:")
                && !l.contains("--show-trace")
        })
        .unwrap_or("")
        .to_string()
}

/// The flake attribute of a host's SD image built on `arch` (this CPU),
/// with or without a native aarch64 build host: on an x86_64 workstation
/// building itself, `sdImageNative` (the card assembled with x86_64 tools,
/// modules/hardware/sd-image-native.nix); on a build host or an aarch64
/// machine, `sdImage`, where everything is built natively for aarch64.
pub fn sd_image_attr(host: &str, build_host: bool, arch: &str) -> String {
    let image = if !build_host && arch == "x86_64" {
        "sdImageNative"
    } else {
        "sdImage"
    };
    format!("nixosConfigurations.{host}.config.system.build.{image}")
}

/// `nix build` (or `nom build`, which shows Nix's progress as a tree) of an
/// installable, leaving a `result` link at `out_link`. With `build_host`
/// (an SSH destination of an aarch64 machine), Nix's remote build support
/// builds every derivation there (`--max-jobs 0`), the build host fetching
/// what it can from the binary cache itself.
pub fn build<'a>(
    sh: &'a Shell,
    installable: &str,
    out_link: &Path,
    build_host: Option<&str>,
    nom: bool,
) -> Cmd<'a> {
    let program = if nom { "nom" } else { "nix" };
    let mut c = cmd!(sh, "{program} build --extra-experimental-features")
        .arg("nix-command flakes")
        .arg("--out-link")
        .arg(out_link)
        .arg(installable);
    if let Some(host) = build_host {
        c = c
            .arg("--builders")
            .arg(format!("ssh://{host} aarch64-linux"))
            .args(["--max-jobs", "0"])
            .args(["--option", "builders-use-substitutes", "true"]);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_image_attr_assembles_natively_only_on_an_x86_64_workstation_building_itself() {
        let attr = |build_host, arch| sd_image_attr("pi", build_host, arch);
        let base = "nixosConfigurations.pi.config.system.build.";
        assert_eq!(attr(false, "x86_64"), format!("{base}sdImageNative"));
        assert_eq!(attr(true, "x86_64"), format!("{base}sdImage"));
        assert_eq!(attr(false, "aarch64"), format!("{base}sdImage"));
        assert_eq!(attr(true, "aarch64"), format!("{base}sdImage"));
    }

    #[test]
    fn error_line_nix_2_8() {
        let msg = "error: syntax error, unexpected '}'\n\n       at /x/hosts/a/default.nix:3:1:\n\n            2|";
        assert_eq!(error_line(msg, Path::new("/x/hosts/a/default.nix")), 3);
        assert_eq!(error_summary(msg), "syntax error, unexpected '}'");
    }

    #[test]
    fn build_command() {
        let sh = Shell::new().unwrap();
        let c = build(&sh, "/r#x", Path::new("/o/.result"), None, false);
        assert_eq!(
            c.to_string(),
            "nix build --extra-experimental-features \"nix-command flakes\" --out-link /o/.result /r#x"
        );
        let c = build(&sh, "/r#x", Path::new("/o/l"), Some("pi@arm"), true);
        assert!(c.to_string().starts_with("nom build "));
        assert!(c.to_string().ends_with(
            "/r#x --builders \"ssh://pi@arm aarch64-linux\" --max-jobs 0 --option builders-use-substitutes true"
        ));
    }

    #[test]
    fn error_line_missing() {
        assert_eq!(error_line("error: boom", Path::new("/a.nix")), 0);
    }
}

/// `nix` with flakes enabled, as a `std::process::Command` (for commands
/// whose output goes to a per-host log).
pub fn command() -> std::process::Command {
    let mut c = std::process::Command::new("nix");
    c.args(["--extra-experimental-features", "nix-command flakes"]);
    c
}

/// `<dir>#nixosConfigurations.<host>.config.<path>`.
pub fn host_attr(dir: &Path, host: &str, path: &str) -> String {
    flake_attr(dir, &format!("nixosConfigurations.{host}.config{path}"))
}

/// `nix eval --json <attr> --apply <fn>`.
pub fn eval_apply(attr: &str, apply: &str) -> std::process::Command {
    let mut c = command();
    c.args(["eval", "--json"])
        .arg(attr)
        .args(["--apply", apply]);
    c
}

/// `nix build --no-link --json <attr>` (the JSON names the output path on
/// Nix 2.8 and current Nix alike).
pub fn build_json(attr: &str) -> std::process::Command {
    let mut c = command();
    c.args(["build", "--no-link", "--json"]).arg(attr);
    c
}

/// The `out` path in `nix build --json` output.
pub fn built_path(json: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("nix build printed something that is not JSON: {json}"))?;
    v.get(0)
        .and_then(|b| b.get("outputs"))
        .and_then(|o| o.get("out"))
        .and_then(|p| p.as_str())
        .map(String::from)
        .with_context(|| format!("nix build printed no output path: {json}"))
}

/// `nix path-info --json -r <path>`: every path of the closure.
pub fn closure_info(path: &str) -> std::process::Command {
    let mut c = command();
    c.args(["path-info", "--json", "-r"]).arg(path);
    c
}

/// (path, NAR size) for each path of `nix path-info --json` output: a list
/// on Nix 2.8 (`"valid": false` for a path not in the store), an object
/// keyed by path on newer Nix (`null` for a path not in the store). A path
/// not in the store is an error on both.
pub fn nar_sizes(json: &str) -> Result<Vec<(String, u64)>> {
    let v: serde_json::Value = serde_json::from_str(json)
        .with_context(|| format!("nix path-info printed something that is not JSON: {json}"))?;
    let entries: Vec<(String, &serde_json::Value)> = match &v {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|i| Some((i.get("path")?.as_str()?.to_string(), i)))
            .collect(),
        serde_json::Value::Object(map) => map.iter().map(|(p, i)| (p.clone(), i)).collect(),
        _ => bail!("nix path-info printed neither a list nor an object: {json}"),
    };
    entries
        .into_iter()
        .map(|(p, i)| {
            if i.is_null() || i.get("valid").and_then(|v| v.as_bool()) == Some(false) {
                bail!("{p} is not in the Nix store (nix path-info says it is not valid)");
            }
            Ok((p, i.get("narSize").and_then(|s| s.as_u64()).unwrap_or(0)))
        })
        .collect()
}

/// `nix copy --to ssh://<dest> --substitute-on-destination <path>`: the
/// target fetches what it can from its binary caches, the rest comes from
/// here. `ssh://` (the protocol of nix-copy-closure) works with every Nix
/// on either side.
pub fn copy_to(dest: &str, sshopts: &str, path: &str) -> std::process::Command {
    let mut c = command();
    c.env("NIX_SSHOPTS", sshopts)
        .args(["copy", "--to"])
        .arg(format!("ssh://{dest}"))
        .arg("--substitute-on-destination")
        .arg(path);
    c
}

/// `nix copy --no-check-sigs --from ssh://<host> <path>`: the system built on
/// a build host the user named, brought back the way `nix-copy-closure
/// --from` does (no signature check: the paths are ours, built there).
pub fn copy_from(host: &str, sshopts: &str, path: &str) -> std::process::Command {
    let mut c = command();
    c.env("NIX_SSHOPTS", sshopts)
        .args(["copy", "--no-check-sigs", "--from"])
        .arg(format!("ssh://{host}"))
        .arg(path);
    c
}

/// What to do when this machine's Nix refuses a copied path for want of a
/// signature (a user the nix-daemon does not trust cannot skip the check).
pub fn signature_hint(msg: &str) -> Option<String> {
    (msg.contains("lacks a valid signature") || msg.contains("lacks a signature")).then(|| {
        format!(
            "this machine's Nix refuses unsigned paths from a user it does not trust: add `trusted-users = root {}` to /etc/nix/nix.conf and restart nix-daemon, or sign the paths on the build host (`secret-key-files` in its nix.conf) and add its public key to `trusted-public-keys` here",
            std::env::var("USER").unwrap_or_else(|_| "<you>".into())
        )
    })
}

#[cfg(test)]
mod deploy_tests {
    use super::*;

    #[test]
    fn parses_build_and_path_info() {
        assert_eq!(
            built_path(r#"[{"drvPath":"/nix/store/a.drv","outputs":{"out":"/nix/store/b"}}]"#)
                .unwrap(),
            "/nix/store/b"
        );
        let old = nar_sizes(r#"[{"path":"/nix/store/a","narSize":10}]"#).unwrap();
        assert!(
            show_args(&copy_from("root@b", "-p 22", "/nix/store/x"))
                .contains("copy --no-check-sigs --from ssh://root@b /nix/store/x")
        );
        let new = nar_sizes(r#"{"/nix/store/a":{"narSize":10}}"#).unwrap();
        assert_eq!(old, new);
    }

    fn show_args(c: &std::process::Command) -> String {
        c.get_args()
            .map(|a| a.to_string_lossy().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Nix 2.8: the cause, then the `--show-trace` hint.
    const DOWNLOAD_2_8: &str = "warning: error: unable to download 'https://h.invalid/x': Couldn't resolve host name (6); retrying in 300 ms\nerror: unable to download 'https://h.invalid/x': Couldn't resolve host name (6)\n(use '--show-trace' to show detailed location information)\n";
    /// Newer Nix: a bare `error:`, the trace, then the cause.
    const DOWNLOAD_NEW: &str = "error:\n       … while updating the lock file of flake 'path:/r'\n\n       … while updating the flake input 'nixpkgs'\n\n       (stack trace truncated; use '--show-trace' to show the full trace)\n\n       error: unable to download 'https://h.invalid/x': Couldn't resolve host name (6)\n";
    const BUILD: &str = "error: builder for '/nix/store/a-x.drv' failed with exit code 1;\n       last 1 log lines:\n       > boom\nerror: 1 dependencies of derivation '/nix/store/b-y.drv' failed to build\n";

    #[test]
    fn error_summaries() {
        let cause = "unable to download 'https://h.invalid/x': Couldn't resolve host name (6)";
        assert_eq!(error_summary(DOWNLOAD_2_8), cause);
        assert_eq!(error_summary(DOWNLOAD_NEW), cause);
        assert!(error_summary(BUILD).starts_with("builder for '/nix/store/a-x.drv' failed"));
        assert_eq!(
            error_summary("copying path '/nix/store/a'\nssh: connect refused\n"),
            "ssh: connect refused"
        );
    }

    #[test]
    fn signature_hints() {
        let msg = "error: cannot add path '/nix/store/a-x' because it lacks a valid signature";
        assert!(signature_hint(msg).unwrap().contains("trusted-users"));
        assert!(signature_hint("error: boom").is_none());
    }
}

/// What both Nix versions the tests run (2.8, 2.26) print, parsed.
#[cfg(test)]
mod versions;
