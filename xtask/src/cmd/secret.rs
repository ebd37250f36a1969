//! `cargo xtask secret set|show|list|rm|rekey`: age-encrypted secrets in
//! `secrets/` (see `secrets.rs`), encrypted in-process with the `age` crate.
//! The `age` crate's two calls live in `xtask-crypto` (built on first use,
//! see `crypto_tool.rs`); `list`, `rm` and dry runs need none of it.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::crypto_tool::Outcome;
use crate::inventory::Fleet;
use crate::secrets::{self, Entry, Recipient};

/// What the `age` crate does for `secret`, in `xtask-crypto`.
pub trait Age {
    /// `value` encrypted to every recipient (an age file's bytes).
    fn encrypt(&self, recipients: &[Recipient], value: &[u8]) -> Result<Vec<u8>>;
    /// The age file `bytes` (`path` in messages) decrypted with the SSH
    /// private key at `key` (its passphrase asked on the terminal).
    fn decrypt(&self, path: &str, bytes: &[u8], key: &Path) -> Result<Vec<u8>>;
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Encrypt a value (hidden prompt, asked twice, or stdin) to hosts and the admin keys
    Set {
        name: String,
        /// A host that reads it (repeat for several)
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
        /// Every host with this tag reads it (repeat for several)
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Every host reads it
        #[arg(long)]
        all: bool,
        /// Owner of the decrypted file on the Pi
        #[arg(long, default_value = "root")]
        owner: String,
        /// Group of the decrypted file on the Pi
        #[arg(long, default_value = "root")]
        group: String,
        /// Mode of the decrypted file on the Pi
        #[arg(long, default_value = "0400")]
        mode: String,
        /// Say what would change, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Decrypt a secret with your own SSH key and print it
    Show {
        name: String,
        /// Your private SSH key [default: ~/.ssh/id_ed25519, else ~/.ssh/id_rsa]
        #[arg(long, short, value_name = "KEY")]
        identity: Option<PathBuf>,
    },
    /// The secrets, who reads them, owner and mode
    List,
    /// Remove a secret (its .age file and its entry)
    Rm {
        name: String,
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-encrypt every secret whose recipients changed (and only those)
    Rekey {
        /// Your private SSH key [default: ~/.ssh/id_ed25519, else ~/.ssh/id_rsa]
        #[arg(long, short, value_name = "KEY")]
        identity: Option<PathBuf>,
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs the action; without `age` one that must encrypt or decrypt stops
/// before it reads or writes anything and asks for `xtask-crypto`.
pub fn run(root: &Path, args: Args, age: Option<&dyn Age>) -> Result<Outcome> {
    let (fleet, _) = Fleet::read(root)?;
    match args.action {
        Action::Set {
            name,
            hosts,
            tags,
            all,
            owner,
            group,
            mode,
            dry_run,
        } => {
            secrets::check_name(&name).map_err(anyhow::Error::msg)?;
            if hosts.is_empty() && tags.is_empty() && !all {
                bail!("say who reads `{name}`: --host H (repeat), --tag T (repeat) or --all");
            }
            if !(mode.len() == 4
                && mode.starts_with('0')
                && mode[1..].bytes().all(|b| (b'0'..=b'7').contains(&b)))
            {
                bail!("--mode {mode} is not an octal mode like 0400 or 0440");
            }
            let entry = Entry {
                hosts,
                tags,
                all,
                owner,
                group,
                mode,
            };
            let readers = secrets::readers(&fleet, &entry)?;
            let recipients = secrets::recipients(root, &fleet, &readers)?;
            if dry_run {
                println!(
                    "would encrypt {} to: {}",
                    secrets::age_path(&name),
                    who(&recipients)
                );
                return Ok(Outcome::Done);
            }
            let Some(age) = age else {
                return Ok(Outcome::HandOver);
            };
            let value = read_value(&name)?;
            secrets::encrypt_to(age, root, &name, &recipients, &value)?;
            let mut entries = secrets::read(root)?;
            entries.insert(name.clone(), entry);
            secrets::write_entries(root, &entries)?;
            println!(
                "wrote {} for {}; commit it with {}",
                secrets::age_path(&name),
                readers.join(", "),
                secrets::FILE
            );
            Ok(Outcome::Done)
        }
        Action::Show { name, identity } => {
            let Some(age) = age else {
                return Ok(Outcome::HandOver);
            };
            let value = decrypt(age, root, &name, identity.as_deref())?;
            std::io::stdout().write_all(&value)?;
            Ok(Outcome::Done)
        }
        Action::List => {
            let entries = secrets::read(root)?;
            if entries.is_empty() {
                println!("no secrets yet: `cargo xtask secret set <name> --host <host>`");
            }
            let rows: Vec<[String; 4]> = entries
                .iter()
                .map(|(n, e)| {
                    let readers = secrets::readers(&fleet, e)
                        .map(|r| r.join(" "))
                        .unwrap_or_else(|e| format!("error: {e}"));
                    let file = if root.join(secrets::age_path(n)).exists() {
                        ""
                    } else {
                        " (no .age file)"
                    };
                    [
                        format!("{n}{file}"),
                        readers,
                        format!("{}:{}", e.owner, e.group),
                        e.mode.clone(),
                    ]
                })
                .collect();
            crate::cmd::list::print_table(&["SECRET", "HOSTS", "OWNER", "MODE"], &rows);
            Ok(Outcome::Done)
        }
        Action::Rm { name, dry_run } => {
            let mut entries = secrets::read(root)?;
            let file = root.join(secrets::age_path(&name));
            if entries.remove(&name).is_none() && !file.exists() {
                bail!("no secret `{name}` (see `cargo xtask secret list`)");
            }
            if dry_run {
                println!(
                    "would remove {} and its entry in {}",
                    secrets::age_path(&name),
                    secrets::FILE
                );
                return Ok(Outcome::Done);
            }
            let _ = std::fs::remove_file(&file);
            secrets::write_entries(root, &entries)?;
            println!(
                "removed `{name}`; Git history still holds the old file: rotate the value where it is used if that matters"
            );
            Ok(Outcome::Done)
        }
        Action::Rekey { identity, dry_run } => {
            rekey(age, root, &fleet, identity.as_deref(), dry_run)
        }
    }
}

fn who(r: &[Recipient]) -> String {
    r.iter()
        .map(|r| r.who.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value from a hidden prompt (asked twice) or stdin; never empty.
fn read_value(name: &str) -> Result<Vec<u8>> {
    let value = if std::io::stdin().is_terminal() {
        let v = rpassword::prompt_password(format!("value of `{name}`: "))
            .context("cannot read the value from the terminal")?;
        let again = rpassword::prompt_password("again, to be sure: ")?;
        if v != again {
            bail!("the two entries differ; nothing was written");
        }
        v.into_bytes()
    } else {
        let mut v = Vec::new();
        std::io::stdin()
            .read_to_end(&mut v)
            .context("cannot read the value from stdin")?;
        if v.ends_with(b"\n") {
            v.pop();
        }
        v
    };
    if value.is_empty() {
        bail!("the value of `{name}` is empty; nothing was written");
    }
    Ok(value)
}

/// The admin's private key: `--identity`, else ~/.ssh/id_ed25519 or id_rsa.
fn admin_key(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let home =
        PathBuf::from(std::env::var_os("HOME").context("HOME is not set: pass --identity KEY")?);
    ["id_ed25519", "id_rsa"]
        .iter()
        .map(|f| home.join(".ssh").join(f))
        .find(|p| p.exists())
        .context("no ~/.ssh/id_ed25519 or ~/.ssh/id_rsa: pass --identity <your private SSH key> (one whose public half is in keys/authorized_keys)")
}

/// Decrypts `secrets/<name>.age` with the admin's SSH key.
fn decrypt(age: &dyn Age, root: &Path, name: &str, key: Option<&Path>) -> Result<Vec<u8>> {
    let path = secrets::age_path(name);
    let bytes = std::fs::read(root.join(&path))
        .with_context(|| format!("no {path}: see `cargo xtask secret list`"))?;
    secrets::header_tags(&bytes).map_err(|why| anyhow::anyhow!("{path} is not a usable age file: {why}; set it again with `cargo xtask secret set {name} …`"))?;
    let key = admin_key(key)?;
    age.decrypt(&path, &bytes, &key)
}

/// Re-encrypts the secrets whose header does not name exactly the keys
/// they should have. Every file is read and checked before the first is
/// re-encrypted.
fn rekey(
    age: Option<&dyn Age>,
    root: &Path,
    fleet: &Fleet,
    key: Option<&Path>,
    dry_run: bool,
) -> Result<Outcome> {
    let entries = secrets::read(root)?;
    let mut stale = Vec::new();
    for (name, e) in &entries {
        let readers = secrets::readers(fleet, e)?;
        let recipients = secrets::recipients(root, fleet, &readers)?;
        let path = secrets::age_path(name);
        let bytes = std::fs::read(root.join(&path))
            .with_context(|| format!("no {path}: set it with `cargo xtask secret set {name} …`"))?;
        let (tags, _) =
            secrets::header_tags(&bytes).map_err(|why| anyhow::anyhow!("{path}: {why}"))?;
        let want: std::collections::BTreeSet<String> =
            recipients.iter().map(|r| r.tag.clone()).collect();
        if tags != want {
            stale.push((name, path, recipients));
        }
    }
    if stale.is_empty() {
        println!("every secret is encrypted to exactly the keys it should be: nothing to do");
        return Ok(Outcome::Done);
    }
    if dry_run {
        for (_, path, recipients) in &stale {
            println!("would re-encrypt {path} to: {}", who(recipients));
        }
        return Ok(Outcome::Done);
    }
    let Some(age) = age else {
        return Ok(Outcome::HandOver);
    };
    for (name, path, recipients) in &stale {
        let value = decrypt(age, root, name, key)?;
        secrets::encrypt_to(age, root, name, recipients, &value)?;
        println!("re-encrypted {path} to: {}", who(recipients));
    }
    Ok(Outcome::Done)
}
