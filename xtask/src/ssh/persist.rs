//! Master connections that outlive one command, as Ansible keeps them
//! (`ControlPersist`): `logs`, `exec`, `ssh` and `status` reuse a master
//! another command left, so only the first command of a few minutes pays
//! for the SSH handshake.
//!
//! Safety:
//! - the sockets live in a folder only this user can enter
//!   (`$XDG_RUNTIME_DIR/pi-nixos-ssh`, else `~/.cache/pi-nixos/ssh`, else
//!   `/tmp/pi-nixos-ssh-<uid>`), created 0700 and refused when another user
//!   owns it or others may enter it;
//! - a socket's name is a hash of everything the connection was opened
//!   with: user, address, port, every ssh option (the known_hosts file
//!   generated from Git is named by its content), and the ssh_config file's
//!   path and content. A master opened with other options, another host
//!   key or another config is never reused: a new one is opened beside it;
//! - an idle master ends after `PI_NIXOS_SSH_PERSIST` seconds (default
//!   300; `0` turns persistence off: one private master per command, closed
//!   when it ends), and `cargo xtask ssh --close` ends them all now.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Seconds an idle master stays up; `0`: no persistent masters.
pub const PERSIST_ENV: &str = "PI_NIXOS_SSH_PERSIST";
pub const DEFAULT_PERSIST: u64 = 300;

/// Where persistent masters live and how long they stay.
#[derive(Clone, Debug)]
pub struct Shared {
    pub dir: PathBuf,
    pub seconds: u64,
}

/// The persistent masters' settings, or `None` when turned off.
pub fn settings() -> Result<Option<Shared>> {
    let seconds = match std::env::var(PERSIST_ENV) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse::<u64>().with_context(|| {
            format!("{PERSIST_ENV}={v} is not a number of seconds: set it to e.g. 300, or 0 to turn persistent connections off")
        })?,
        _ => DEFAULT_PERSIST,
    };
    if seconds == 0 {
        return Ok(None);
    }
    Ok(Some(Shared {
        dir: dir()?,
        seconds,
    }))
}

/// The sockets' folder (see the module docs), created 0700 if missing.
pub fn dir() -> Result<PathBuf> {
    // A socket path must fit in sun_path (108 bytes) with ssh's temporary
    // suffix (17) and our 20-character name.
    let fits = |p: &Path| p.as_os_str().len() + 1 + 20 + 17 < 104;
    let env_dir = |var: &str, rel: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(|v| PathBuf::from(v).join(rel))
    };
    let uid = unsafe { libc::geteuid() };
    let candidates = [
        env_dir("XDG_RUNTIME_DIR", "pi-nixos-ssh").filter(|p| p.parent().is_some_and(Path::is_dir)),
        env_dir("HOME", ".cache/pi-nixos/ssh"),
        Some(std::env::temp_dir().join(format!("pi-nixos-ssh-{uid}"))),
    ];
    let dir = candidates
        .into_iter()
        .flatten()
        .find(|p| fits(p))
        .context("no folder for SSH sockets: set XDG_RUNTIME_DIR to a short private folder")?;
    private(&dir, uid)?;
    Ok(dir)
}

/// Creates `dir` 0700 (its parents as the system makes them) and checks
/// that only `uid` can enter it.
fn private(dir: &Path, uid: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let m =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        bail!(
            "{} holds SSH connections but is not a folder only you can enter (owner uid {}, mode {:o}): remove it (`rm -r {}`) and run again",
            dir.display(),
            m.uid(),
            m.mode() & 0o7777,
            dir.display()
        );
    }
    Ok(())
}

/// The name of a master's socket: a hash of every word that decides the
/// connection and of the ssh_config file's path and content.
pub fn key(words: &[String], config: Option<&Path>) -> String {
    let mut h = Sha256::new();
    for w in words {
        h.update(w.as_bytes());
        h.update([0]);
    }
    let config = config
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/config")));
    if let Some(c) = config {
        h.update(c.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(std::fs::read(&c).unwrap_or_default());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..20].to_string()
}

/// The content-named copy of a known_hosts text in `dir`, written once.
pub fn known_hosts_file(dir: &Path, text: &str) -> Result<PathBuf> {
    let hash: String = Sha256::digest(text.as_bytes())
        .iter()
        .take(10)
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = dir.join(format!("known_hosts-{hash}"));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
        let tmp = dir.join(format!("known_hosts-{hash}.{}", std::process::id()));
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(path)
}

/// Whether a master listens on `socket` (a stale file refuses).
pub fn alive(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Held while a master is looked for and opened, so two commands started
/// together open one master, not two.
pub fn lock(dir: &Path, key: &str) -> Result<std::fs::File> {
    let path = dir.join(format!("{key}.lock"));
    let f = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(f)
}

/// Every socket in `dir`.
pub fn sockets(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// `ssh -O exit` for a socket (nothing is said; a dead master is fine).
pub fn exit_command(socket: &Path) -> Command {
    let mut c = Command::new("ssh");
    c.arg("-S")
        .arg(socket)
        .args(["-O", "exit", "pi-nixos-master"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Ends the masters of `sockets` at once (in parallel), waits for them.
pub fn close(sockets: &[PathBuf]) {
    let children: Vec<_> = sockets
        .iter()
        .filter_map(|s| exit_command(s).spawn().ok())
        .collect();
    for mut c in children {
        let _ = c.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_every_word_and_the_config() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dir = std::env::temp_dir().join(format!("persist-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("ssh_config");
        std::fs::write(&cfg, "IdentityFile a\n").unwrap();
        let a = key(&w(&["root@h", "-p", "22"]), Some(&cfg));
        assert_eq!(a.len(), 20);
        assert_eq!(a, key(&w(&["root@h", "-p", "22"]), Some(&cfg)));
        assert_ne!(a, key(&w(&["root@h", "-p", "2222"]), Some(&cfg)));
        // Word boundaries count: ["ab", "c"] is not ["a", "bc"].
        assert_ne!(key(&w(&["ab", "c"]), None), key(&w(&["a", "bc"]), None));
        std::fs::write(&cfg, "IdentityFile b\n").unwrap();
        assert_ne!(a, key(&w(&["root@h", "-p", "22"]), Some(&cfg)));
        let k1 = known_hosts_file(&dir, "h ssh-ed25519 AAAA\n").unwrap();
        let k2 = known_hosts_file(&dir, "h ssh-ed25519 BBBB\n").unwrap();
        assert_ne!(k1, k2);
        assert_eq!(k1, known_hosts_file(&dir, "h ssh-ed25519 AAAA\n").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_folder_must_be_ours_alone() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("persist-dir-{}", std::process::id()));
        let dir = base.join("ssh");
        let uid = unsafe { libc::geteuid() };
        private(&dir, uid).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = private(&dir, uid).unwrap_err().to_string();
        assert!(e.contains("not a folder only you can enter"), "{e}");
        assert!(private(&dir, uid + 1).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
