//! A command's output within a time limit, read while it runs.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::show;

/// Runs `cmd` with stdin closed, killing it after `limit`. Its output is
/// read while it runs (a pipe holds only 64 KiB: a command printing more
/// would otherwise wait for the reader until the limit).
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", show(cmd)))?;
    type Buf = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;
    let drain = |pipe: Option<Box<dyn Read + Send>>| -> (Buf, std::thread::JoinHandle<()>) {
        let buf: Buf = Default::default();
        let b = buf.clone();
        let h = std::thread::spawn(move || {
            let Some(mut p) = pipe else { return };
            let mut chunk = [0u8; 16384];
            while let Ok(n) = p.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });
        (buf, h)
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            timed_out = true;
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A grandchild that kept the pipes open (an ssh master) must not hold
    // us: what was read by then is the output once the command is gone.
    let join = |(buf, h): (Buf, std::thread::JoinHandle<()>)| {
        let until = Instant::now() + Duration::from_secs(2);
        while !h.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::mem::take(&mut *buf.lock().unwrap_or_else(|e| e.into_inner()))
    };
    let stdout = join(out);
    let mut stderr = join(err);
    if timed_out {
        stderr.extend_from_slice(format!("\ntimed out after {} s", limit.as_secs()).as_bytes());
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_read_while_the_command_runs() {
        // 1 MiB on stdout and 100 KiB on stderr: far more than a pipe holds.
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "head -c 1048576 /dev/zero; head -c 102400 /dev/zero >&2; exit 3",
        ]);
        let start = Instant::now();
        let out = output_within(&mut c, Duration::from_secs(20)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(10), "stalled");
        assert_eq!(out.stdout.len(), 1 << 20);
        assert_eq!(out.stderr.len(), 102400);
        assert_eq!(out.status.code(), Some(3));
        // A command over its limit is killed and says so.
        let out = output_within(
            Command::new("sh").args(["-c", "echo begun; exec sleep 30"]),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(out.stdout, b"begun\n");
        assert!(String::from_utf8_lossy(&out.stderr).contains("timed out after 1 s"));
    }
}
