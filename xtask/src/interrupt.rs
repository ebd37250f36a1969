//! SIGTERM, SIGINT (Ctrl-C) and SIGHUP: run the registered clean-ups
//! (e.g. close SSH master connections, remove temp folders), then exit with
//! 128 + the signal, so an interrupted run leaves nothing behind.
//!
//! The handler only stores the signal in an atomic; a watcher thread does
//! the work: SIGTERM to our child processes (ssh, nix), then the clean-ups.
//! Installed by the first [`on_exit`].

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

type Cleanup = Box<dyn FnOnce() + Send>;

/// Registered clean-ups, by key.
static CLEANUPS: Mutex<Vec<(String, Cleanup)>> = Mutex::new(Vec::new());
/// The signal received, 0 for none.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static WATCH: Once = Once::new();

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Whether a signal asked the run to end (its clean-up is under way).
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// Runs `cleanup` if the process is interrupted before [`forget`]`(key)`.
pub fn on_exit(key: &str, cleanup: impl FnOnce() + Send + 'static) {
    CLEANUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((key.to_string(), Box::new(cleanup)));
    WATCH.call_once(|| {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(libc::SIGTERM, handler);
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGHUP, handler);
        }
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let sig = SIGNAL.load(Ordering::SeqCst);
                if sig != 0 {
                    stop_children();
                    let all = std::mem::take(&mut *CLEANUPS.lock().unwrap_or_else(|e| e.into_inner()));
                    for (_, cleanup) in all {
                        cleanup();
                    }
                    eprintln!(
                        "interrupted (signal {sig}): SSH sessions stopped, this run's master connections closed, temporary files removed; a host being activated finishes or rolls back by itself (`cargo xtask status`)"
                    );
                    std::process::exit(128 + sig);
                }
            }
        });
    });
}

/// SIGTERM to every child process (ssh, nix): as a shell does to its job.
fn stop_children() {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so read after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid == Some(me.as_str())
            && let Ok(pid) = p.file_name().to_string_lossy().parse::<libc::pid_t>()
        {
            // SAFETY: plain kill(2) of our own child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// Once a signal arrived, never returns: the clean-up thread ends the
/// process with 128 + the signal (so the main thread, seeing its children
/// stopped, cannot exit first with another code).
pub fn settle() {
    while SIGNAL.load(Ordering::SeqCst) != 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drops the clean-up registered under `key` (its owner cleaned up).
pub fn forget(key: &str) {
    CLEANUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(k, _)| k != key);
}
