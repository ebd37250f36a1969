//! The per-host lock on the Pi: one deploy or rollback at a time, whatever
//! checkout or workstation it comes from. See [`remote::LOCK`]: an flock
//! held by a shell in an SSH session of ours, released when the session
//! ends or stops hearing from us, so a run that died never blocks a host.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Log, date, remote, unix_now};
use crate::ssh::{Ssh, Target};

/// Seconds between the lines that keep the lock (the Pi waits 30).
const HEARTBEAT: u64 = 5;

/// Who we are, as the holder's line on the Pi.
pub fn holder(run: &str) -> String {
    format!(
        "{} pid {} run {} since {}",
        by(),
        std::process::id(),
        run,
        date(unix_now())
    )
}

/// `user@workstation`.
pub fn by() -> String {
    format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "?".into()),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default()
            .trim()
    )
}

/// The lock, held until dropped.
pub struct Lock {
    child: Child,
    stdin: Arc<Mutex<Option<ChildStdin>>>,
}

impl Lock {
    /// Takes the lock of `t` for run `run`, or fails saying who holds it.
    pub fn take(ssh: &Ssh, t: &Target, run: &str, log: &Log) -> Result<Lock> {
        let mut cmd = ssh.command(t, remote::LOCK, &[&holder(run)]);
        log.command(&cmd);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run ssh for the host's deploy lock")?;
        let stdin = Arc::new(Mutex::new(child.stdin.take()));
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                let first = lines.is_empty();
                lines.push(l);
                if first && lines[0] == "locked" {
                    break;
                }
            }
            let _ = tx.send(lines);
        });
        let limit = Duration::from_secs(ssh.connect_timeout + 20);
        let lines = rx.recv_timeout(limit).unwrap_or_default();
        let mut lock = Lock { child, stdin };
        if lines.first().map(String::as_str) == Some("locked") {
            log.line(&format!("locked {} for this run", t.name));
            lock.heartbeat();
            return Ok(lock);
        }
        let status = lock.stop();
        let mut err = String::new();
        if let Some(mut e) = lock.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        log.line(&format!("{}\n{}", lines.join("\n"), err.trim()));
        if lines.first().map(String::as_str) == Some("busy") {
            let who = lines.get(1).map(String::as_str).unwrap_or("another run");
            bail!(
                "refused: {} is being deployed or rolled back by {who}; wait for that run to end (a run that died frees the lock within 30 s) and try again",
                t.name
            );
        }
        bail!(
            "cannot take the deploy lock on {} ({}): {}",
            t.name,
            status,
            err.lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no answer")
        )
    }

    /// Sends a line every few seconds while the lock is held.
    fn heartbeat(&self) {
        let stdin = self.stdin.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(HEARTBEAT));
                let mut g = stdin.lock().unwrap_or_else(|e| e.into_inner());
                let Some(s) = g.as_mut() else { return };
                if s.write_all(b"alive\n").and_then(|_| s.flush()).is_err() {
                    return;
                }
            }
        });
    }

    /// Closes our side (EOF releases the lock on the Pi), reaps the ssh.
    fn stop(&mut self) -> String {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
        for _ in 0..100 {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().map(|s| s.to_string()).unwrap_or_default()
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop();
    }
}
