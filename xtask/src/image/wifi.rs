//! The Wi-Fi password of a host's card. It is never in Git or the Nix store:
//! `cargo xtask sd` takes it from a file the user names or a hidden prompt
//! and writes it, with e2fsprogs' debugfs (no mount, no root needed), into
//! the root partition of that host's own image copy as the file
//! `networking.wireless.secretsFile` names (modules/wifi.nix), owned by root,
//! mode 0600. On the Pi a tiny service hands it to wpa_supplicant's group.

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use super::stream;
use crate::exec;

/// Where the secrets file lives on the Pi; modules/wifi.nix sets
/// `networking.wireless.secretsFile` to the same path.
pub const SECRETS_FILE: &str = "/var/lib/wifi/secrets.conf";
/// The secret's name in that file; modules/wifi.nix uses `pskRaw = "ext:psk"`.
pub const SECRET_NAME: &str = "psk";

/// A WPA passphrase (8 to 63 printable ASCII characters) or a raw 64-hex PSK.
pub fn check_passphrase(p: &str) -> std::result::Result<(), String> {
    if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    if !p.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("it has characters other than printable ASCII".into());
    }
    if !(8..=63).contains(&p.len()) {
        return Err(format!(
            "it is {} characters long; a WPA password has 8 to 63",
            p.len()
        ));
    }
    Ok(())
}

/// The secrets file's text: `psk=<password>`.
pub fn secrets_text(passphrase: &str) -> String {
    format!("{SECRET_NAME}={passphrase}\n")
}

/// Reads the password from a file that holds it on its first line.
pub fn read_passphrase_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the Wi-Fi password file {}: check the path given to --wifi-secrets",
            path.display()
        )
    })?;
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").to_string();
    if lines.any(|l| !l.trim().is_empty()) {
        bail!(
            "{} has more than one line: put only the Wi-Fi password in it",
            path.display()
        );
    }
    check_passphrase(&first).map_err(|why| {
        anyhow::anyhow!(
            "the Wi-Fi password in {} is not usable: {why}",
            path.display()
        )
    })?;
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode());
    if mode.is_ok_and(|m| m & 0o077 != 0) {
        eprintln!(
            "warning: {} can be read by other users: `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(first)
}

/// Whether a password can be asked for.
pub fn can_prompt() -> bool {
    std::io::stdin().is_terminal()
}

/// Asks for the password twice, without echo.
pub fn prompt(ssid: &str) -> Result<String> {
    loop {
        let p = rpassword::prompt_password(format!("Wi-Fi password for `{ssid}`: "))
            .context("cannot read the Wi-Fi password from the terminal")?;
        if let Err(why) = check_passphrase(&p) {
            eprintln!("that password is not usable: {why}; try again");
            continue;
        }
        let again = rpassword::prompt_password("again, to be sure: ")?;
        if again == p {
            return Ok(p);
        }
        eprintln!("the two entries differ; try again");
    }
}

/// debugfs commands that create the secrets file from `source` (a file on
/// this machine), root-owned, mode 0600, in a root-only folder.
pub fn debugfs_script(source: &Path) -> String {
    let file = SECRETS_FILE.trim_start_matches('/');
    let mut dirs = Vec::new();
    let mut at = String::new();
    for part in Path::new(file).parent().unwrap().iter() {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(&part.to_string_lossy());
        dirs.push(at.clone());
    }
    let mut s = String::new();
    for (i, d) in dirs.iter().enumerate() {
        let mode = if i + 1 == dirs.len() {
            "040700"
        } else {
            "040755"
        };
        s += &format!(
            "mkdir {d}\nset_inode_field {d} mode {mode}\nset_inode_field {d} uid 0\nset_inode_field {d} gid 0\n"
        );
    }
    s += &format!("write {} {file}\n", source.display());
    s += &format!(
        "set_inode_field {file} mode 0100600\nset_inode_field {file} uid 0\nset_inode_field {file} gid 0\n"
    );
    s
}

/// e2fsprogs' debugfs: on PATH, or in /usr/sbin or /sbin, which are not on
/// a normal user's PATH on Debian.
pub fn debugfs() -> Option<String> {
    if exec::have("debugfs") {
        return Some("debugfs".to_string());
    }
    ["/usr/sbin/debugfs", "/sbin/debugfs"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .map(str::to_string)
}

fn debugfs_or_fail() -> Result<String> {
    debugfs().context("debugfs is not installed: `sudo apt-get install e2fsprogs`")
}

/// `image?offset=N`: debugfs opens the filesystem inside the image file.
fn target(image: &Path, offset: u64) -> String {
    format!("{}?offset={offset}", image.display())
}

/// Writes the secrets file into the ext4 filesystem at `offset` in `image`,
/// then reads it back to check owner, mode and content.
pub fn inject(sh: &Shell, image: &Path, offset: u64, passphrase: &str) -> Result<()> {
    let text = secrets_text(passphrase);
    let source = stream::partial(&image.with_file_name("wifi-secrets"));
    {
        use std::io::Write;
        let mut f = stream::create_private(&source)?;
        f.write_all(text.as_bytes())?;
    }
    let script = debugfs_script(&source);
    let fs = target(image, offset);
    let debugfs = debugfs_or_fail()?;
    let out = exec::output_any(cmd!(sh, "{debugfs} -w -f - {fs}").stdin(&script));
    let _ = std::fs::remove_file(&source);
    let out = out.context("cannot run debugfs: `sudo apt-get install e2fsprogs`")?;
    if !out.status.success() {
        bail!(
            "debugfs could not write the Wi-Fi secrets into {}:\n{}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    verify(sh, image, offset, text.len() as u64)
}

/// The secrets file is in the image: root-owned, mode 0600, of the expected size.
pub fn verify(sh: &Shell, image: &Path, offset: u64, size: u64) -> Result<()> {
    let fs = target(image, offset);
    let file = SECRETS_FILE.trim_start_matches('/');
    let debugfs = debugfs_or_fail()?;
    let stat = exec::read(
        cmd!(sh, "{debugfs} -R")
            .arg(format!("stat {file}"))
            .arg(&fs),
    )?;
    let found = parse_stat(&stat);
    if found != Some((0o600, 0, 0, size)) {
        bail!(
            "the Wi-Fi secrets file in {} is not as written (mode, uid, gid, size = {found:?}); the image is not usable: run `cargo xtask sd` again",
            image.display()
        );
    }
    Ok(())
}

/// Mode, uid, gid and size from `debugfs -R 'stat <file>'`.
pub fn parse_stat(text: &str) -> Option<(u32, u32, u32, u64)> {
    let after = |key: &str| -> Option<String> {
        let i = text.find(key)? + key.len();
        text[i..].split_whitespace().next().map(str::to_string)
    };
    let mode = u32::from_str_radix(&after("Mode:")?, 8).ok()?;
    let uid = after("User:")?.parse().ok()?;
    let gid = after("Group:")?.parse().ok()?;
    let size = after("Size:")?.parse().ok()?;
    Some((mode, uid, gid, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases() {
        assert!(check_passphrase("correct horse").is_ok());
        assert!(check_passphrase("short").is_err());
        assert!(check_passphrase(&"a".repeat(64)).is_ok()); // raw PSK (hex)
        assert!(check_passphrase(&"g".repeat(64)).is_err());
        assert!(check_passphrase("tab\there ok?").is_err());
    }

    #[test]
    fn script_makes_a_private_root_file() {
        let s = debugfs_script(Path::new("/tmp/x"));
        assert!(s.starts_with("mkdir var\n"));
        assert!(s.contains("mkdir var/lib/wifi\nset_inode_field var/lib/wifi mode 040700\n"));
        assert!(s.contains("write /tmp/x var/lib/wifi/secrets.conf\n"));
        assert!(s.contains("set_inode_field var/lib/wifi/secrets.conf mode 0100600\n"));
        assert!(s.contains("set_inode_field var/lib/wifi/secrets.conf uid 0\n"));
    }

    #[test]
    fn stat_output() {
        let text = "Inode: 15   Type: regular    Mode:  0600   Flags: 0x80000\nGeneration: 0    Version: 0x00000000:00000000\nUser:     0   Group:     0   Project:     0   Size: 11\n";
        assert_eq!(parse_stat(text), Some((0o600, 0, 0, 11)));
    }

    #[test]
    fn nix_module_agrees() {
        let module = include_str!("../../../modules/wifi.nix");
        let (dir, file) = SECRETS_FILE.rsplit_once('/').unwrap();
        assert!(module.contains(&format!("ownDir = \"{dir}\";")));
        assert!(module.contains(&format!(
            "secretsFile = lib.mkDefault \"${{ownDir}}/{file}\";"
        )));
        assert!(module.contains(&format!("pskRaw = \"ext:{SECRET_NAME}\"")));
    }
}
