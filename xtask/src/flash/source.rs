//! Reading an image's raw bytes: the file (never blocking, the same file
//! that was checked), decoded by libzstd or the `xz` / `gzip` program, its
//! sha256 hashed from what the decoder reads and checked against the record
//! `cargo xtask sd` wrote, the decoder's exit and complaints collected.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::image::{Expected, Format, Image, need, open_regular};

/// The image's decoded bytes (`data`), and what is checked once they end
/// ([`Source::finish`]): the exit of the `xz` / `gzip` decoder, and the
/// file's sha256 against its record, hashed from what the decoder read.
pub struct Source {
    pub data: Box<dyn Read + Send>,
    child: Option<Decoder>,
    check: Option<Check>,
}

struct Decoder {
    child: Child,
    shown: String,
    stderr: Option<thread::JoinHandle<String>>,
    feeder: Option<thread::JoinHandle<()>>,
}

struct Check {
    want: Expected,
    path: PathBuf,
    hasher: Arc<Mutex<Sha256>>,
    /// The same open file: what the decoder left unread is hashed from it.
    rest: File,
}

/// Hashes every byte read through it.
struct Hashing {
    inner: File,
    hasher: Arc<Mutex<Sha256>>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&buf[..n]);
        Ok(n)
    }
}

impl Source {
    /// Called once `data` has ended: the decoder's exit, then the sha256.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(mut d) = self.child.take() {
            let status = d.child.wait()?;
            if let Some(f) = d.feeder.take() {
                let _ = f.join();
            }
            let said = d
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default();
            let said = said.trim();
            if said.contains("trailing garbage") {
                bail!(
                    "the image has trailing garbage after its compressed data ({said}): it is corrupt or something was appended to it; download or build it again"
                );
            }
            if !status.success() {
                bail!(
                    "`{}` failed ({status}{}{said}): the image is corrupt; download or build it again",
                    d.shown,
                    if said.is_empty() { "" } else { ": " }
                );
            }
        }
        if let Some(c) = self.check.take() {
            let mut rest = c.rest;
            let mut buf = vec![0u8; 1 << 20];
            let mut h = c.hasher.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match rest.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => h.update(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("cannot read the image"),
                }
            }
            let got = format!("{:x}", h.clone().finalize());
            if got != c.want.sha256 {
                bail!(
                    "{} does not match its record: its sha256 is {got}, `cargo xtask sd` recorded {}; it was changed after it was built: build it again with `cargo xtask sd {}`",
                    c.path.display(),
                    c.want.sha256,
                    c.want.host
                );
            }
        }
        Ok(())
    }
}

/// Whether a host image still matches its recorded sha256, read on its own:
/// for a mismatch found before the stream's end, to blame the image rather
/// than the card when the image is what changed.
pub fn recheck(img: &Image) -> Result<()> {
    let Some(want) = &img.expect else {
        return Ok(());
    };
    let (f, _) = open_regular(&img.path, Some(&img.file))?;
    let got = crate::image::stream::pump(f, None)?.sha256;
    if got != want.sha256 {
        bail!(
            "{} does not match its record: its sha256 is {got}, `cargo xtask sd` recorded {}; it was changed after it was built: build it again with `cargo xtask sd {}`",
            img.path.display(),
            want.sha256,
            want.host
        );
    }
    Ok(())
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(d) = &mut self.child {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }
}

/// The image's raw bytes. For xz and gzip the decoder is the `xz` / `gzip`
/// program (no extra crates), its errors collected for [`Source::finish`].
pub fn reader(img: &Image) -> Result<Source> {
    let (f, _) = open_regular(&img.path, Some(&img.file))?;
    let (file, check) = match &img.expect {
        Some(want) => {
            let hasher = Arc::new(Mutex::new(Sha256::new()));
            let rest = f.try_clone()?;
            (
                Input::Hashed(Hashing {
                    inner: f,
                    hasher: hasher.clone(),
                }),
                Some(Check {
                    want: want.clone(),
                    path: img.path.clone(),
                    hasher,
                    rest,
                }),
            )
        }
        None => (Input::Plain(f), None),
    };
    let (data, child): (Box<dyn Read + Send>, _) = match img.format {
        Format::Raw => (file.boxed(), None),
        // Independent frames (`sd`'s) on every core, else streaming.
        Format::Zstd => (crate::image::frames::decoder(file.boxed())?, None),
        Format::Xz | Format::Gzip => {
            need(img.format)?;
            let program = if img.format == Format::Xz {
                "xz"
            } else {
                "gzip"
            };
            let shown = format!("{program} -dc < {}", img.path.display());
            eprintln!("$ {shown}");
            let stdin = match &file {
                Input::Plain(f) => Stdio::from(f.try_clone()?),
                Input::Hashed(_) => Stdio::piped(),
            };
            let mut child = Command::new(program)
                .arg("-dc")
                .stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot run {program}"))?;
            let out = child.stdout.take().context("no stdout")?;
            let mut err = child.stderr.take().context("no stderr")?;
            let stderr = thread::spawn(move || {
                let mut s = String::new();
                let _ = (&mut err).take(64 << 10).read_to_string(&mut s);
                let _ = io::copy(&mut err, &mut io::sink());
                s
            });
            let feeder = match (file, child.stdin.take()) {
                (Input::Hashed(mut h), Some(mut to)) => Some(thread::spawn(move || {
                    // A decoder that stops early closes the pipe: never die of SIGPIPE.
                    unsafe {
                        let mut set: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut set);
                        libc::sigaddset(&mut set, libc::SIGPIPE);
                        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    }
                    let _ = io::copy(&mut h, &mut to);
                })),
                _ => None,
            };
            (
                Box::new(out) as Box<dyn Read + Send>,
                Some(Decoder {
                    child,
                    shown,
                    stderr: Some(stderr),
                    feeder,
                }),
            )
        }
    };
    Ok(Source { data, child, check })
}

enum Input {
    Plain(File),
    Hashed(Hashing),
}

impl Input {
    fn boxed(self) -> Box<dyn Read + Send> {
        match self {
            Input::Plain(f) => Box::new(f),
            Input::Hashed(h) => Box::new(h),
        }
    }
}
