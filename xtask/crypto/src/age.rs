//! `secret`'s encryption and decryption with the `age` crate (the library
//! of rage): to SSH keys, in-process.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use xtask::secrets::Recipient;

/// The `age` crate, for `cmd::secret`.
pub struct Age;

impl xtask::cmd::secret::Age for Age {
    fn encrypt(&self, recipients: &[Recipient], value: &[u8]) -> Result<Vec<u8>> {
        let parsed: Vec<age::ssh::Recipient> = recipients
            .iter()
            .map(|r| {
                r.line
                    .parse::<age::ssh::Recipient>()
                    .map_err(|e| anyhow::anyhow!("{}: age cannot use this key: {e:?}", r.who))
            })
            .collect::<Result<_>>()?;
        let encryptor =
            age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                .context("cannot encrypt")?;
        let mut out = Vec::new();
        let mut w = encryptor.wrap_output(&mut out)?;
        w.write_all(value)?;
        w.finish()?;
        Ok(out)
    }

    fn decrypt(&self, path: &str, bytes: &[u8], key: &Path) -> Result<Vec<u8>> {
        let text = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
        let id = age::ssh::Identity::from_buffer(&text[..], Some(key.display().to_string()))
            .with_context(|| format!("{} is not an SSH private key", key.display()))?;
        let identity: Box<dyn age::Identity> = match id {
            age::ssh::Identity::Unsupported(_) => bail!(
                "{}: age cannot decrypt with this key type; use your ed25519 or RSA key (--identity)",
                key.display()
            ),
            age::ssh::Identity::Encrypted(_) if !std::io::stdin().is_terminal() => {
                bail!(
                    "{} has a passphrase and there is no terminal to ask for it: run in a terminal, or pass --identity with a key that has none",
                    key.display()
                )
            }
            id => Box::new(id.with_callbacks(Prompt)),
        };
        let d = age::Decryptor::new(bytes).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
        let mut r = d
            .decrypt(std::iter::once(identity.as_ref()))
            .map_err(|e| anyhow::anyhow!("cannot decrypt {path} with {}: {e} (is its public half in keys/authorized_keys, and was the secret rekeyed since?)", key.display()))?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)
            .with_context(|| format!("{path} is corrupted"))?;
        Ok(out)
    }
}

/// Asks an SSH key's passphrase on the terminal.
#[derive(Clone)]
struct Prompt;

impl age::Callbacks for Prompt {
    fn display_message(&self, m: &str) {
        eprintln!("{m}");
    }
    fn confirm(&self, _: &str, _: &str, _: Option<&str>) -> Option<bool> {
        None
    }
    fn request_public_string(&self, _: &str) -> Option<String> {
        None
    }
    fn request_passphrase(&self, description: &str) -> Option<age::secrecy::SecretString> {
        rpassword::prompt_password(format!("{description}: "))
            .ok()
            .map(age::secrecy::SecretString::from)
    }
}
