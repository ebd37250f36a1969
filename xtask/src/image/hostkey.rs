//! A host's identity on its card: `cargo xtask sd` writes the private SSH
//! host key made on the workstation (`identity.rs`) into the root partition
//! of that host's image, with debugfs (no mount, no root needed):
//! `/etc/ssh/ssh_host_ed25519_key`, root:root 0600, and its `.pub` (0644). NixOS's sshd finds the key there on the first boot and
//! does not make another one. The image file is 0600 like every image.

use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use super::{debugfs, stream};
use crate::{exec, identity};

/// debugfs commands that create `dest` (absolute, in the image) from
/// `source`, owned by root with `mode`, its missing folders 0755.
pub fn put_script(source: &Path, dest: &str, mode: u32) -> String {
    let file = dest.trim_start_matches('/');
    let mut s = String::new();
    let mut at = String::new();
    for part in Path::new(file).parent().into_iter().flat_map(Path::iter) {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(&part.to_string_lossy());
        // An existing folder keeps its mode: mkdir fails on it, and the
        // fields are set only on the one just made (same values anyway).
        s += &format!(
            "mkdir {at}\nset_inode_field {at} mode 040755\nset_inode_field {at} uid 0\nset_inode_field {at} gid 0\n"
        );
    }
    s += &format!("rm {file}\nwrite {} {file}\n", source.display());
    s += &format!(
        "set_inode_field {file} mode 0100{mode:o}\nset_inode_field {file} uid 0\nset_inode_field {file} gid 0\n"
    );
    s
}

/// Writes `key` (a private key file on this machine) and its public half
/// into the ext4 filesystem at `offset` in `image`, then reads both back
/// (owner, mode, size).
pub fn inject(sh: &Shell, image: &Path, offset: u64, key: &Path, public: &str) -> Result<()> {
    let tool =
        debugfs::find().context("debugfs is not installed: `sudo apt-get install e2fsprogs`")?;
    let private = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    let pub_tmp = stream::partial(&image.with_file_name("host-key.pub"));
    std::fs::write(&pub_tmp, public)?;
    let pub_dest = format!("{}.pub", identity::ON_PI);
    let script = put_script(key, identity::ON_PI, 0o600) + &put_script(&pub_tmp, &pub_dest, 0o644);
    let fs = format!("{}?offset={offset}", image.display());
    let out = exec::output_any(cmd!(sh, "{tool} -w -f - {fs}").stdin(&script));
    let _ = std::fs::remove_file(&pub_tmp);
    let out = out.context("cannot run debugfs: `sudo apt-get install e2fsprogs`")?;
    if !out.status.success() {
        bail!(
            "debugfs could not write the host key into {}:\n{}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    for (dest, mode, size) in [
        (identity::ON_PI.to_string(), 0o600, private.len() as u64),
        (pub_dest, 0o644, public.len() as u64),
    ] {
        let stat = exec::read(
            cmd!(sh, "{tool} -R")
                .arg(format!("stat {}", dest.trim_start_matches('/')))
                .arg(&fs),
        )?;
        let found = debugfs::parse_stat(&stat);
        if found != Some((mode, 0, 0, size)) {
            bail!(
                "{dest} in {} is not as written (mode, uid, gid, size = {found:?}); the image is not usable: run `cargo xtask sd` again",
                image.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_makes_a_root_only_key() {
        let s = put_script(Path::new("/k"), "/etc/ssh/ssh_host_ed25519_key", 0o600);
        assert!(s.starts_with("mkdir etc\n"));
        assert!(s.contains("mkdir etc/ssh\nset_inode_field etc/ssh mode 040755\n"));
        assert!(s.contains("write /k etc/ssh/ssh_host_ed25519_key\n"));
        assert!(s.contains("set_inode_field etc/ssh/ssh_host_ed25519_key mode 0100600\n"));
        assert!(s.contains("set_inode_field etc/ssh/ssh_host_ed25519_key uid 0\n"));
        assert!(
            put_script(Path::new("/p"), "/etc/ssh/x.pub", 0o644).contains("x.pub mode 0100644\n")
        );
    }
}
