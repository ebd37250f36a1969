//! Host identity: each Pi's SSH host key (ed25519), made on the workstation
//! before its card exists.
//!
//! - the public key is in Git: `hosts/<name>/ssh_host_ed25519_key.pub`
//!   (Nix reads it for `services.openssh.knownHosts`, the xtask for the
//!   known_hosts file every SSH connection checks against);
//! - the private key never enters Git or the Nix store: it lives in
//!   `$XDG_DATA_HOME/pi-nixos/<fleet-id>/hosts/<name>/ssh_host_ed25519_key`
//!   (default `~/.local/share/…`), 0600 in 0700 folders, and `sd` writes it
//!   onto the card at [`ON_PI`], where NixOS's sshd reads it;
//! - `<fleet-id>` is a random name in `keys/fleet-id` (in Git), so two
//!   fleets on one workstation never share a folder, and every clone of one
//!   fleet finds the same one.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::{exec, sshkey};

/// The public key's file name in `hosts/<name>/` (and next to the private key).
pub const PUB_FILE: &str = "ssh_host_ed25519_key.pub";
/// The private key's file name in the data folder.
pub const KEY_FILE: &str = "ssh_host_ed25519_key";
/// Where the private key goes on the card: the path of NixOS's default
/// ed25519 entry in `services.openssh.hostKeys` (modules/ssh.nix).
pub const ON_PI: &str = "/etc/ssh/ssh_host_ed25519_key";
/// The file naming this fleet's folder in the data directory.
pub const FLEET_ID: &str = "keys/fleet-id";

/// `hosts/<host>/ssh_host_ed25519_key.pub`, relative to the repository.
pub fn git_path(host: &str) -> String {
    format!("hosts/{host}/{PUB_FILE}")
}

/// The host's public key from Git, if it has one; a file that is there but
/// is not one ed25519 public key is an error naming the file.
pub fn git_key(root: &Path, host: &str) -> Result<Option<sshkey::PublicKey>> {
    let path = root.join(git_path(host));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    parse_host_key(&text)
        .map(Some)
        .map_err(|why| anyhow::anyhow!("{}: {why}", git_path(host)))
}

/// One ed25519 public key (the only line that is not a comment).
pub fn parse_host_key(text: &str) -> Result<sshkey::PublicKey, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let [line] = lines.as_slice() else {
        return Err(format!(
            "holds {} keys; it must hold exactly one ssh-ed25519 public key: run `cargo xtask identity <host>`",
            lines.len()
        ));
    };
    let key = sshkey::parse_line(line)?;
    if key.kind != "ssh-ed25519" {
        return Err(format!(
            "is a {} key; a host identity is ssh-ed25519",
            key.kind
        ));
    }
    Ok(key)
}

/// `$XDG_DATA_HOME/pi-nixos`, else `~/.local/share/pi-nixos`.
pub fn data_home() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| Path::new(d).is_absolute()) {
        return Ok(PathBuf::from(d).join("pi-nixos"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither XDG_DATA_HOME nor HOME is set: set one so host keys have a home")?;
    Ok(PathBuf::from(home).join(".local/share/pi-nixos"))
}

/// The fleet's id from `keys/fleet-id`, if it has one.
pub fn fleet_id(root: &Path) -> Result<Option<String>> {
    let path = root.join(FLEET_ID);
    match std::fs::read_to_string(&path) {
        Ok(t) => {
            let id = t
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .unwrap_or("")
                .to_string();
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                bail!(
                    "{FLEET_ID} holds no usable id (letters, digits, hyphens): restore it from Git (`git checkout {FLEET_ID}`)"
                );
            }
            Ok(Some(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A new random fleet id (16 hex digits).
pub fn new_fleet_id() -> Result<String> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The text of `keys/fleet-id`.
pub fn fleet_id_text(id: &str) -> String {
    format!(
        "# Names this fleet's folder of host private keys on workstations:\n# $XDG_DATA_HOME/pi-nixos/<this id>/ (see documentation/secrets.md). Keep it in Git.\n{id}\n"
    )
}

/// Where a host's private key lives on this workstation.
pub fn private_path(data_home: &Path, fleet_id: &str, host: &str) -> PathBuf {
    data_home
        .join(fleet_id)
        .join("hosts")
        .join(host)
        .join(KEY_FILE)
}

/// The host's private key on this workstation, when the fleet has an id.
pub fn private_key(root: &Path, host: &str) -> Result<Option<PathBuf>> {
    let Some(id) = fleet_id(root)? else {
        return Ok(None);
    };
    Ok(Some(private_path(&data_home()?, &id, host)))
}

/// Creates `dir` and its missing parents, each 0700 (and makes `dir` 0700).
pub fn private_dirs(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))
}

/// Writes `bytes` to `path` as a new 0600 file (through a temp file, renamed).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("partial");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// A known_hosts file for the hosts that have a key in Git: each named by
/// its host name, which ssh is told with `HostKeyAlias` (so neither the
/// address nor the port matters).
pub fn known_hosts(keys: &[(String, sshkey::PublicKey)]) -> String {
    let mut s = String::from("# generated by cargo xtask from hosts/*/ssh_host_ed25519_key.pub\n");
    for (name, k) in keys {
        s += &format!("{name} {} {}\n", k.kind, k.blob);
    }
    s
}

/// Every host of `names` with a key in Git.
pub fn git_keys(root: &Path, names: &[String]) -> Result<Vec<(String, sshkey::PublicKey)>> {
    let mut out = Vec::new();
    for n in names {
        if let Some(k) = git_key(root, n)? {
            out.push((n.clone(), k));
        }
    }
    Ok(out)
}

/// The public half of a private key file (`ssh-keygen -y`, no passphrase).
pub fn public_of(sh: &Shell, key: &Path) -> Result<sshkey::PublicKey> {
    let out = exec::output_any(cmd!(sh, "ssh-keygen -y -P '' -f {key}"))?;
    if !out.status.success() {
        bail!(
            "{} is not a private SSH key without a passphrase ({}): a host key must open without one",
            key.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    sshkey::parse_line(&String::from_utf8_lossy(&out.stdout))
        .map_err(|why| anyhow::anyhow!("ssh-keygen -y {}: {why}", key.display()))
}

/// The private key `sd` writes onto `host`'s card, with its public line:
/// `None` when the host has no identity in Git; an error when Git has one
/// but this workstation lacks the matching private key.
pub fn card_key(sh: &Shell, root: &Path, host: &str) -> Result<Option<(PathBuf, String)>> {
    let Some(git) = git_key(root, host)? else {
        return Ok(None);
    };
    let file = git_path(host);
    let key = private_key(root, host)?.with_context(|| {
        format!("{file} is in Git but {FLEET_ID} is missing: restore it from Git (`git checkout {FLEET_ID}`)")
    })?;
    if !key.exists() {
        bail!(
            "{file} is in Git but its private key is not on this workstation ({}): copy the fleet's key folder from the workstation that made it (documentation/secrets.md), or import the Pi's key with `cargo xtask identity {host} --import <key>`",
            key.display()
        );
    }
    let public = public_of(sh, &key)?;
    if public.blob != git.blob {
        bail!(
            "the private key {} does not match {file}: restore the right key from a backup, or run `cargo xtask identity {host}` for what to do",
            key.display()
        );
    }
    Ok(Some((
        key,
        format!("{} {} root@{host}\n", public.kind, public.blob),
    )))
}

/// Problems with the fleet's identities: a `.pub` file that is not one
/// ed25519 key, a private host key inside the repository.
pub fn problems(fleet: &crate::inventory::Fleet) -> Vec<crate::inventory::Problem> {
    use crate::inventory::Problem;
    let mut out = Vec::new();
    for h in &fleet.hosts {
        if let Err(e) = git_key(&fleet.root, &h.name) {
            out.push(Problem::new(
                &git_path(&h.name),
                1,
                format!("{e:#}")
                    .trim_start_matches(&format!("{}: ", git_path(&h.name)))
                    .to_string(),
                format!(
                    "delete it and run `cargo xtask identity {}` (or restore it from Git)",
                    h.name
                ),
            ));
        }
        let private = format!("hosts/{}/{KEY_FILE}", h.name);
        if fleet.root.join(&private).exists() {
            out.push(Problem::new(
                &private,
                1,
                "a private host key inside the repository: it must never enter Git or the Nix store",
                format!(
                    "move it out (`cargo xtask identity {} --import {private}` keeps it in the data folder), delete it, and if it was ever committed, give the host a new identity",
                    h.name
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl root@rpi-box-01";

    #[test]
    fn host_key_files() {
        assert_eq!(parse_host_key(KEY).unwrap().kind, "ssh-ed25519");
        assert!(parse_host_key(&format!("# c\n{KEY}\n")).is_ok());
        assert!(parse_host_key("").unwrap_err().contains("holds 0 keys"));
        assert!(
            parse_host_key(&format!("{KEY}\n{KEY}"))
                .unwrap_err()
                .contains("holds 2 keys")
        );
        assert!(
            parse_host_key("-----BEGIN OPENSSH PRIVATE KEY-----")
                .unwrap_err()
                .contains("private key")
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            git_path("a"),
            "hosts/a/ssh_host_ed25519_key.pub".to_string()
        );
        assert_eq!(
            private_path(Path::new("/d/pi-nixos"), "f00", "a"),
            PathBuf::from("/d/pi-nixos/f00/hosts/a/ssh_host_ed25519_key")
        );
        let id = new_fleet_id().unwrap();
        assert_eq!(id.len(), 16);
        assert_ne!(id, new_fleet_id().unwrap());
    }

    #[test]
    fn known_hosts_names_hosts() {
        let k = parse_host_key(KEY).unwrap();
        let text = known_hosts(&[("rpi-box-01".into(), k)]);
        assert!(text.contains(
            "\nrpi-box-01 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
        ));
    }

    #[test]
    fn nix_module_agrees() {
        let module = include_str!("../../modules/ssh.nix");
        assert!(module.contains(&format!("path = \"{ON_PI}\";")));
        let inv = include_str!("../../lib/inventory.nix");
        assert!(inv.contains(&format!("\"/hosts/${{h.name}}/{PUB_FILE}\"")));
    }
}
