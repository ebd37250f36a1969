//! Running a long command (a `nix build`) with its stderr shown live and
//! kept, so that its error can be read afterwards. When our stderr is a
//! terminal the command writes into a pseudo-terminal, so Nix still draws
//! its progress bar; otherwise into a pipe.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};
use xshell::Cmd;

/// The most of a command's stderr kept (its end): Nix puts the error last.
const KEEP: usize = 256 << 10;

pub struct Finished {
    pub status: ExitStatus,
    /// Its stderr as text, without terminal escapes and carriage returns.
    pub stderr: String,
}

/// Echoes `cmd` once (`$ …`), runs it with stdin and stdout inherited and
/// stderr shown as it comes, and returns its exit status and stderr.
pub fn run(cmd: Cmd<'_>) -> Result<Finished> {
    let shown = cmd.to_string();
    eprintln!("$ {shown}");
    let mut command: Command = cmd.into();
    let (mut reader, writer) = if std::io::stderr().is_terminal() {
        pty().context("cannot open a pseudo-terminal for the command's output")?
    } else {
        let (r, w) = std::io::pipe()?;
        (File::from(OwnedFd::from(r)), Stdio::from(w))
    };
    command.stderr(writer);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run `{shown}`"))?;
    // Our copy of the writing end: the reads end when the command's closes.
    drop(command);
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut stderr = std::io::stderr();
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let _ = stderr.write_all(&buf[..n]);
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * KEEP {
                    kept.drain(..kept.len() - KEEP);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: the pseudo-terminal's last writer closed it.
            Err(_) => break,
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{shown}`"))?;
    Ok(Finished {
        status,
        stderr: plain(&String::from_utf8_lossy(&kept)),
    })
}

/// A pseudo-terminal the size of ours: the end to read, the end for the command.
fn pty() -> Result<(File, Stdio)> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: a zeroed winsize is valid; ioctl and openpty write only into
    // the values they are given, and each fd returned is owned once below.
    unsafe {
        let mut size: libc::winsize = std::mem::zeroed();
        let sized = libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) == 0;
        let size_ptr = if sized {
            &size as *const _
        } else {
            std::ptr::null()
        };
        if libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            size_ptr,
        ) != 0
        {
            bail!("{}", std::io::Error::last_os_error());
        }
        Ok((
            File::from(OwnedFd::from_raw_fd(master)),
            Stdio::from(OwnedFd::from_raw_fd(slave)),
        ))
    }
}

/// Text as a terminal would end up showing it line by line: ANSI escapes
/// removed, and of each line only what follows its last carriage return.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters… final byte (@ to ~).
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out.lines()
        .map(|l| {
            let l = l.trim_end_matches('\r');
            l.rsplit('\r').next().unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_drops_escapes_and_overwritten_progress() {
        let raw = "\x1b[31;1merror:\x1b[0m boom\r\n[1/2 built]\r[2/2 built]\rdone\n";
        assert_eq!(plain(raw), "error: boom\ndone");
    }

    #[test]
    fn runs_and_keeps_stderr() {
        let sh = xshell::Shell::new().unwrap();
        let done = run(xshell::cmd!(sh, "sh -c 'echo out; echo err >&2; exit 3'")).unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stderr.trim(), "err");
    }
}
