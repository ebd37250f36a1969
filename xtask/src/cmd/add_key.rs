//! `cargo xtask add-key [PATH]`: add an admin SSH public key to
//! `keys/authorized_keys`, which every Pi's root (and SSH user) accepts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::inventory::{self, KEYS};
use crate::sshkey;

/// The keys ssh itself tries, in its order.
const DEFAULT_KEYS: &[&str] = &[
    "id_ed25519",
    "id_ecdsa",
    "id_ed25519_sk",
    "id_ecdsa_sk",
    "id_rsa",
];

#[derive(clap::Args)]
pub struct Args {
    /// Public key file [default: ~/.ssh/id_ed25519.pub, else the one other ~/.ssh/*.pub]
    path: Option<PathBuf>,
    /// Print what would change, change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let path = match args.path {
        Some(p) => p,
        None => default_key()?,
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if text.contains("---- BEGIN SSH2 PUBLIC KEY ----") {
        bail!(
            "{p} is an RFC 4716 (SSH2) public key, the format PuTTY and some tools write; authorized_keys needs OpenSSH's one-line form: convert it with `ssh-keygen -i -f {p} > {p}.openssh`, then `cargo xtask add-key {p}.openssh`",
            p = path.display()
        );
    }
    let line = validate(&text)
        .with_context(|| format!("{} is not a usable SSH public key", path.display()))?;
    let key = sshkey::parse_line(&line).map_err(anyhow::Error::msg)?;
    if let Some(bits) = sshkey::rsa_bits(&key).filter(|&b| b < sshkey::RSA_MIN_BITS) {
        eprintln!(
            "warning: this RSA key has {bits} bits, under the {} now recommended: it is added, but make an ed25519 key (`ssh-keygen -t ed25519`), add it, and remove this one from {KEYS}",
            sshkey::RSA_MIN_BITS
        );
    }

    let file = root.join(KEYS);
    let existing = std::fs::read_to_string(&file).unwrap_or_default();
    let known = inventory::key_lines(&existing)
        .iter()
        .any(|(_, l)| sshkey::parse_line(l).is_ok_and(|k| k.blob == key.blob));
    if known {
        println!(
            "{} ({}) is already an admin key in {KEYS}; nothing to do",
            key.kind, key.comment
        );
        return Ok(());
    }
    if args.dry_run {
        println!("would add to {KEYS}: {line}");
        return Ok(());
    }
    let mut new = existing;
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&line);
    new.push('\n');
    std::fs::create_dir_all(file.parent().unwrap())?;
    std::fs::write(&file, new).with_context(|| format!("cannot write {}", file.display()))?;
    println!("added {} key ({}) to {KEYS}", key.kind, key.comment);
    println!(
        "next: commit it (`git add {KEYS}`), then `cargo xtask check`; running Pis get it at the next deploy"
    );
    Ok(())
}

/// The one key line of a public key file, or why it is not one.
pub fn validate(text: &str) -> Result<String> {
    if text.contains("PRIVATE KEY") {
        bail!("it is a private key: never copy it anywhere; pass the .pub file next to it");
    }
    let lines = inventory::key_lines(text);
    match lines.as_slice() {
        [] => bail!("the file has no key"),
        [(_, line)] => {
            sshkey::parse_line(line).map_err(anyhow::Error::msg)?;
            Ok(line.clone())
        }
        _ => bail!(
            "the file has {} lines; pass a file with one public key",
            lines.len()
        ),
    }
}

fn default_key() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .context("HOME is not set; pass the key file: cargo xtask add-key PATH.pub")?;
    let dir = Path::new(&home).join(".ssh");
    for name in DEFAULT_KEYS {
        let p = dir.join(format!("{name}.pub"));
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut pubs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "pub"))
                .collect()
        })
        .unwrap_or_default();
    pubs.sort();
    match pubs.len() {
        0 => bail!(
            "no public key in {}: make one with `ssh-keygen -t ed25519`, then run `cargo xtask add-key` again",
            dir.display()
        ),
        1 => Ok(pubs.remove(0)),
        _ => {
            let names: Vec<String> = pubs.iter().map(|p| p.display().to_string()).collect();
            bail!(
                "several public keys in {}: name one, e.g. `cargo xtask add-key {}`",
                dir.display(),
                names.join(" or ")
            )
        }
    }
}
