//! Running external programs: every command is echoed (`$ nix …`) to stderr
//! before it runs, and echoed again with its exit status when it fails.

use std::process::Output;

use anyhow::{Result, bail};
use xshell::Cmd;

/// Echoes the command, runs it with inherited stdio, fails on a non-zero exit.
pub fn run(cmd: Cmd<'_>) -> Result<()> {
    let shown = cmd.to_string();
    cmd.run().map_err(|e| {
        eprintln!("$ {shown}  # failed");
        anyhow::Error::new(e)
    })
}

/// Echoes the command, runs it and returns its stdout; on failure the error
/// carries the command and its stderr.
pub fn read(cmd: Cmd<'_>) -> Result<String> {
    let out = output(cmd.quiet())?;
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

/// Like [`read`] but hands back the whole output, whatever the exit status.
pub fn output_any(cmd: Cmd<'_>) -> Result<Output> {
    let cmd = cmd.quiet().ignore_status();
    eprintln!("$ {cmd}");
    match cmd.output() {
        Ok(out) => {
            if !out.status.success() {
                eprintln!("$ {cmd}  # failed ({})", out.status);
            }
            Ok(out)
        }
        Err(e) => bail!("cannot run `{cmd}`: {e}"),
    }
}

fn output(cmd: Cmd<'_>) -> Result<Output> {
    let shown = cmd.to_string();
    let out = output_any(cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "command failed ({}): {shown}\n{}",
            out.status,
            stderr.trim_end()
        );
    }
    Ok(out)
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}
