//! A write to a closed pipe (`cargo xtask list --json | head -1`) ends the
//! xtask quietly, killed by SIGPIPE as `cat` or `ls` would be, instead of a
//! panic from `println!`.
//!
//! Why not restore SIGPIPE's default disposition at the start of `main`:
//! the xtask also writes to the stdin of programs it runs (scripts fed to
//! `ssh`, `tee` through `sudo`, `debugfs`). With the default disposition a
//! child that exits early would kill the xtask on the spot, silently,
//! skipping its cleanup (SSH masters, temporary folders) and losing the
//! child's error. So SIGPIPE stays ignored (Rust's default): those writes
//! fail with EPIPE and are reported, and only a panic caused by EPIPE (a
//! print to our own closed stdout or stderr) becomes a quiet SIGPIPE death.

use std::panic::PanicHookInfo;

/// Installs the panic hook; call first thing in `main`.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if caused_by_broken_pipe(info) {
            die_of_sigpipe();
        }
        default(info);
    }));
}

fn caused_by_broken_pipe(info: &PanicHookInfo<'_>) -> bool {
    let payload = info.payload();
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .is_some_and(is_broken_pipe_message)
}

/// `failed printing to stdout: Broken pipe (os error 32)` (std's print
/// macros), `… Os { code: 32, kind: BrokenPipe, … }` (an `expect` on a write).
pub fn is_broken_pipe_message(message: &str) -> bool {
    message.contains("Broken pipe (os error 32)") || message.contains("kind: BrokenPipe")
}

/// Ends the process the way a Unix tool ends on a closed pipe: by SIGPIPE
/// (a shell shows exit status 141), nothing printed.
fn die_of_sigpipe() -> ! {
    // SAFETY: resetting a signal's disposition and raising it are plain
    // system calls; nothing else runs in this process afterwards.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_std_and_expect_messages() {
        assert!(is_broken_pipe_message(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(is_broken_pipe_message(
            "failed to write completion file: Os { code: 32, kind: BrokenPipe, message: \"Broken pipe\" }"
        ));
        assert!(!is_broken_pipe_message("index out of bounds"));
    }
}
