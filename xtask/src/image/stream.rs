//! Streaming file steps for images of several GB: copy, hash, (de)compress
//! with the `zstd` program, never holding an image in memory. Every file is
//! created mode 0600 (an image may carry Wi-Fi secrets) and lands at its final
//! name only by rename, so an interrupted run never leaves a half file there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// sha256 (hex) and size of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sum {
    pub sha256: String,
    pub size: u64,
}

/// Creates (or re-creates) a file readable by its owner only.
pub fn create_private(path: &Path) -> Result<File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot replace {}", path.display())),
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// The temporary name a file is written under before its rename.
pub fn partial(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.partial"))
}

/// Moves a finished file to its final name (atomic on one filesystem).
pub fn finish(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// Reads `from` to the end, hashing it and writing it to `to` when given.
pub fn pump(mut from: impl Read, mut to: Option<&mut File>) -> Result<Sum> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        hasher.update(&buf[..n]);
        if let Some(f) = to.as_mut() {
            f.write_all(&buf[..n])?;
        }
        size += n as u64;
    }
    if let Some(f) = to {
        f.sync_all()?;
    }
    Ok(Sum {
        sha256: format!("{:x}", hasher.finalize()),
        size,
    })
}

/// sha256 and size of a file.
pub fn hash_file(path: &Path) -> Result<Sum> {
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    pump(f, None)
}

/// Copies `from` to a new private file `to`, returning its sum.
pub fn copy(from: &Path, to: &Path) -> Result<Sum> {
    eprintln!("$ cp {} {}", from.display(), to.display());
    let src = File::open(from).with_context(|| format!("cannot read {}", from.display()))?;
    let mut dst = create_private(to)?;
    pump(src, Some(&mut dst))
}

/// Runs `zstd` with `args` (which must write to stdout), hashing what it
/// writes and storing it in a new private file `to` when given.
pub fn zstd(args: &[&str], input: &Path, to: Option<&Path>) -> Result<Sum> {
    let shown = format!(
        "$ zstd {} {}{}",
        args.join(" "),
        input.display(),
        to.map(|t| format!(" > {}", t.display()))
            .unwrap_or_else(|| " | sha256sum".to_string())
    );
    eprintln!("{shown}");
    let mut file = to.map(create_private).transpose()?;
    let mut child = Command::new("zstd")
        .args(args)
        .arg(input)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run zstd: `sudo apt-get install zstd`")?;
    let stdout = child.stdout.take().context("zstd has no stdout")?;
    let sum = pump(stdout, file.as_mut());
    let status = child.wait()?;
    if !status.success() {
        bail!("{shown}  # failed ({status})");
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sha256_of_known_text() {
        let s = pump(&b"abc"[..], None).unwrap();
        assert_eq!(
            s.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(s.size, 3);
    }

    #[test]
    fn private_copy_and_partial_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"hello").unwrap();
        let b = dir.path().join("b.img.zst");
        let tmp = partial(&b);
        assert_eq!(tmp.file_name().unwrap(), ".b.img.zst.partial");
        let sum = copy(&a, &tmp).unwrap();
        finish(&tmp, &b).unwrap();
        assert_eq!(sum, hash_file(&b).unwrap());
        let mode = std::fs::metadata(&b).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!tmp.exists());
    }
}
