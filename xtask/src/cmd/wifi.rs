//! `cargo xtask wifi <host…>`: set the Wi-Fi password of hosts as their age
//! secrets `wifi-<host>` (see `wifi.rs`): asked twice on a terminal, once
//! per network, or one line on stdin. A deploy brings it to a running Pi;
//! `sd` needs it for a new card.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::cmd::secret::Age;
use crate::crypto_tool::Outcome;
use crate::inventory::{Fleet, INVENTORY};
use crate::{secrets, wifi};

#[derive(clap::Args)]
pub struct Args {
    /// The hosts whose Wi-Fi password to set (hosts on one network are asked once)
    #[arg(required = true, value_name = "HOST")]
    hosts: Vec<String>,
    /// Say what would be written, ask nothing, write nothing
    #[arg(long)]
    dry_run: bool,
}

/// `age` is the `age` crate's side, in `xtask-crypto`: without it (`cargo xtask`),
/// everything but the encryption is done here and the rest is handed over
/// before the password is asked.
pub fn run(root: &Path, args: Args, age: Option<&dyn Age>) -> Result<Outcome> {
    let (fleet, _) = Fleet::read(root)?;
    // Per network, its hosts and each one's recipients (its key, the admins').
    let mut networks: BTreeMap<String, Vec<(String, Vec<secrets::Recipient>)>> = BTreeMap::new();
    for name in &args.hosts {
        let host = fleet.host(name)?;
        let Some(ssid) = &host.wifi else {
            bail!(
                "host `{name}` has no `wifi` in {INVENTORY}: add `wifi = \"<SSID>\"` to its entry first (and `wifi_country` in [fleet])"
            );
        };
        let recipients = secrets::recipients(root, &fleet, std::slice::from_ref(name))?;
        networks
            .entry(ssid.clone())
            .or_default()
            .push((name.clone(), recipients));
    }
    let terminal = std::io::stdin().is_terminal();
    if !terminal && !args.dry_run && networks.len() > 1 {
        bail!(
            "these hosts join {} different networks ({}), and stdin gives one password: set them one network at a time",
            networks.len(),
            networks.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if args.dry_run {
        for (ssid, hosts) in &networks {
            for (h, recipients) in hosts {
                println!(
                    "would write {} (the password of `{ssid}`, {}:{} {} on {h}), encrypted to: {}",
                    secrets::age_path(&wifi::secret_name(h)),
                    wifi::OWNER,
                    wifi::GROUP,
                    wifi::MODE,
                    recipients
                        .iter()
                        .map(|r| r.who.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        return Ok(Outcome::Done);
    }
    let Some(age) = age else {
        return Ok(Outcome::HandOver);
    };

    let mut entries = secrets::read(root)?;
    let mut written = Vec::new();
    for (ssid, hosts) in &networks {
        let names: Vec<&str> = hosts.iter().map(|(h, _)| h.as_str()).collect();
        let passphrase = if terminal {
            prompt(ssid, &names)?
        } else {
            from_stdin(ssid)?
        };
        let text = wifi::secret_text(&passphrase);
        for (h, recipients) in hosts {
            let name = wifi::secret_name(h);
            secrets::encrypt_to(age, root, &name, recipients, text.as_bytes())?;
            entries.insert(name.clone(), wifi::entry(h));
            written.push((h.clone(), name));
        }
    }
    secrets::write_entries(root, &entries)?;
    for (h, name) in &written {
        println!(
            "{h}: wrote {} (readable on the Pi by wpa_supplicant only)",
            secrets::age_path(name)
        );
    }
    let hosts: Vec<&str> = written.iter().map(|(h, _)| h.as_str()).collect();
    println!("next:");
    println!(
        "  git add {}   # flakes do not see untracked files",
        secrets::DIR
    );
    println!(
        "  cargo xtask deploy {}   # a running Pi switches to the new password (its Wi-Fi drops for a few seconds)",
        hosts.join(" ")
    );
    println!("  cargo xtask sd <host>   # or a new card, which then carries only the host key");
    Ok(Outcome::Done)
}

/// Asks for the password twice, without echo, until both agree and it is usable.
fn prompt(ssid: &str, hosts: &[&str]) -> Result<String> {
    loop {
        let p = rpassword::prompt_password(format!(
            "Wi-Fi password for `{ssid}` ({}): ",
            hosts.join(", ")
        ))
        .context("cannot read the Wi-Fi password from the terminal")?;
        if let Err(why) = wifi::check_passphrase(&p) {
            eprintln!("that password is not usable: {why}; try again");
            continue;
        }
        let again = rpassword::prompt_password("again, to be sure: ")
            .context("cannot read the Wi-Fi password from the terminal")?;
        if again == p {
            return Ok(p);
        }
        eprintln!("the two entries differ; try again");
    }
}

/// The password as the one line of stdin.
fn from_stdin(ssid: &str) -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the Wi-Fi password from stdin")?;
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().to_string();
    if lines.any(|l| !l.trim().is_empty()) {
        bail!("stdin has more than one line: give only the Wi-Fi password of `{ssid}`");
    }
    wifi::check_passphrase(&first).map_err(|why| {
        anyhow::anyhow!("the Wi-Fi password of `{ssid}` is not usable: {why}; nothing was written")
    })?;
    Ok(first)
}
