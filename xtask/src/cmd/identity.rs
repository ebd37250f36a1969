//! `cargo xtask identity <host> [--import KEY]`: make a host's SSH host key
//! on the workstation (or adopt a running Pi's), the public half into Git,
//! the private half into this workstation's data folder (see `identity.rs`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::identity::{self, FLEET_ID};
use crate::inventory::{self, INVENTORY};
use crate::{exec, sshkey};

#[derive(clap::Args)]
pub struct Args {
    /// The host (a name in hosts/fleet.toml)
    host: String,
    /// Adopt this private host key instead of making one (a Pi that already
    /// runs: a copy of its /etc/ssh/ssh_host_ed25519_key)
    #[arg(long, value_name = "PRIVATE_KEY")]
    import: Option<PathBuf>,
    /// Print what would change, change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let (fleet, _) = inventory::Fleet::read(root)?;
    if fleet.host(&args.host).is_err() {
        bail!(
            "no host `{}` in {INVENTORY}: add it with `cargo xtask new-host {}` (or check the name with `cargo xtask list`)",
            args.host,
            args.host
        );
    }
    ensure(root, &args.host, args.import.as_deref(), args.dry_run)
}

/// Makes (or imports) `host`'s identity unless it has one; used by
/// `new-host` too. Idempotent: a host whose keys agree is left alone.
pub fn ensure(root: &Path, host: &str, import: Option<&Path>, dry_run: bool) -> Result<()> {
    if !exec::have("ssh-keygen") {
        bail!("ssh-keygen is not installed: `sudo apt-get install openssh-client`");
    }
    let sh = Shell::new()?;
    let git_file = identity::git_path(host);
    let in_git = identity::git_key(root, host)?;
    let (id, new_id) = match identity::fleet_id(root)? {
        Some(id) => (id, false),
        None => (identity::new_fleet_id()?, true),
    };
    let key = identity::private_path(&identity::data_home()?, &id, host);
    let have_private = key.exists();

    // What the private key will be, and its public half.
    let public = match (import, have_private) {
        (Some(file), _) => {
            let public = imported_public(&sh, file)?;
            if let Some(git) = &in_git
                && git.blob != public.blob
            {
                bail!(
                    "the key {} is not the one in Git ({git_file}): its public half differs; import the key of the Pi that {git_file} names, or delete {git_file} first to give `{host}` a new identity (its card must then be written again)",
                    file.display()
                );
            }
            if have_private && identity::public_of(&sh, &key)?.blob != public.blob {
                bail!(
                    "{} already holds another private key for `{host}`: move it away first if you really mean to replace it",
                    key.display()
                );
            }
            Some(public)
        }
        (None, true) => {
            let public = identity::public_of(&sh, &key)?;
            if let Some(git) = &in_git
                && git.blob != public.blob
            {
                bail!(
                    "the private key {} does not match {git_file}: restore the right key (from a backup or the workstation that made it), or import the Pi's with `cargo xtask identity {host} --import <its /etc/ssh/ssh_host_ed25519_key>`",
                    key.display()
                );
            }
            if in_git.is_some() {
                println!(
                    "{host}: has its identity: {git_file} in Git, private key {}",
                    key.display()
                );
                return Ok(());
            }
            Some(public)
        }
        (None, false) => {
            if in_git.is_some() {
                bail!(
                    "{git_file} is in Git but its private key is not on this workstation ({}): copy the fleet's key folder from the workstation that made it (documentation/secrets.md), or import the Pi's key with `cargo xtask identity {host} --import <its /etc/ssh/ssh_host_ed25519_key>`; to give `{host}` a new identity instead, delete {git_file} and run this again (its card must then be written again)",
                    key.display()
                );
            }
            None
        }
    };

    if dry_run {
        if new_id {
            println!("would write {FLEET_ID} (this fleet's id: {id})");
        }
        match import {
            Some(f) => println!("would copy {} to {} (0600)", f.display(), key.display()),
            None if public.is_none() => println!(
                "would make an ed25519 host key for `{host}` in {} (0600)",
                key.display()
            ),
            None => {}
        }
        if in_git.is_none() {
            println!("would write {git_file}");
        }
        return Ok(());
    }

    if new_id {
        std::fs::write(root.join(FLEET_ID), identity::fleet_id_text(&id))
            .with_context(|| format!("cannot write {FLEET_ID}"))?;
        println!("wrote {FLEET_ID}: names this fleet's key folder; commit it");
    }
    let dir = key.parent().context("private key path has no folder")?;
    identity::private_dirs(dir)?;
    let public = match (import, public) {
        (Some(file), Some(public)) => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            identity::write_private(&key, &bytes)?;
            println!("{host}: imported {} into {}", file.display(), key.display());
            public
        }
        (None, Some(public)) => public,
        (_, None) => {
            let tmp = dir.join(format!("{}.new", identity::KEY_FILE));
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(tmp.with_extension("new.pub"));
            let comment = format!("root@{host}");
            exec::run(cmd!(
                sh,
                "ssh-keygen -q -t ed25519 -N '' -C {comment} -f {tmp}"
            ))
            .context("ssh-keygen could not make the host key")?;
            let _ = std::fs::remove_file(format!("{}.pub", tmp.display()));
            std::fs::rename(&tmp, &key)
                .with_context(|| format!("cannot write {}", key.display()))?;
            println!("{host}: made a new ed25519 host key: {}", key.display());
            identity::public_of(&sh, &key)?
        }
    };
    let git_text = format!("{} {} root@{host}\n", public.kind, public.blob);
    let git_abs = root.join(&git_file);
    if let Some(parent) = git_abs.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&git_abs, git_text).with_context(|| format!("cannot write {git_file}"))?;
    println!(
        "{host}: wrote {git_file}; commit it (with {FLEET_ID}), then `cargo xtask sd {host}` puts the private key on its card\nback up {} (the private keys of this fleet): see documentation/secrets.md",
        dir.parent().and_then(Path::parent).unwrap_or(dir).display()
    );
    Ok(())
}

/// The public half of a key to import, refusing public keys and other types.
fn imported_public(sh: &Shell, file: &Path) -> Result<sshkey::PublicKey> {
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let text = String::from_utf8_lossy(&text);
    if !text.contains("PRIVATE KEY") {
        let hint = if sshkey::parse_line(&text).is_ok() {
            "it is a public key"
        } else {
            "it is not an SSH private key"
        };
        bail!(
            "cannot import {}: {hint}; give the host's private key (a copy of /etc/ssh/ssh_host_ed25519_key from the Pi)",
            file.display()
        );
    }
    let public = identity::public_of(sh, file)?;
    if public.kind != "ssh-ed25519" {
        bail!(
            "cannot import {}: it is a {} key; a host identity is ssh-ed25519 (the Pi's /etc/ssh/ssh_host_ed25519_key)",
            file.display(),
            public.kind
        );
    }
    Ok(public)
}
