//! `cargo xtask new-host`: add a Pi to the fleet (its identity, then
//! `hosts/<name>/default.nix` and its inventory entry), refusing a name or
//! address already used. Its tools are checked and its identity made before
//! the inventory changes, so a failure never leaves a host without identity.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::exec;
use crate::inventory::{self, INVENTORY, Model};

const TEMPLATE: &str = include_str!("host-template.nix");

#[derive(clap::Args)]
pub struct Args {
    /// Host name (letters, digits, hyphens)
    name: String,
    /// Raspberry Pi model
    #[arg(long, value_enum)]
    model: Model,
    /// Address SSH reaches it at [default: <name>.local, which every Pi
    /// publishes over mDNS]. With a prefix length (192.0.2.10/24) the Pi
    /// sets it itself: give --gateway and --dns too
    #[arg(long)]
    address: Option<String>,
    /// With a static address: the router's address
    #[arg(long, value_name = "IP")]
    gateway: Option<String>,
    /// With a static address: a name server (repeat for several)
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// SSH user for deploys
    #[arg(long, default_value = "root")]
    user: String,
    /// SSH port
    #[arg(long, default_value_t = 22)]
    port: u16,
    /// Tag (repeat for several)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Wi-Fi network (SSID) to join; required for zero2w
    #[arg(long, value_name = "SSID")]
    wifi: Option<String>,
    /// The fleet's Wi-Fi country (ISO 3166-1 alpha-2, e.g. GB), written to
    /// [fleet] when the inventory has none yet
    #[arg(long, value_name = "CODE")]
    wifi_country: Option<String>,
    /// Print what would change, change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    if !exec::have("ssh-keygen") {
        bail!(
            "ssh-keygen is not installed (it makes the host's identity): `sudo apt-get install openssh-client`, then run this again; nothing was changed"
        );
    }
    let inv_path = root.join(INVENTORY);
    let text = std::fs::read_to_string(&inv_path)
        .with_context(|| format!("cannot read {}", inv_path.display()))?;
    let address = args
        .address
        .clone()
        .unwrap_or_else(|| format!("{}.local", args.name));
    let entry = entry(&args, &address);
    let mut new_text = match &args.wifi_country {
        Some(c) => with_wifi_country(&text, c)?,
        None => text.clone(),
    };
    let country_added = new_text != text;
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    new_text.push('\n');
    new_text.push_str(&entry);

    // The new text must not bring a problem the old one did not have.
    let (_, before) = inventory::parse_inventory(&text);
    let (_, after) = inventory::parse_inventory(&new_text);
    let new_problems: Vec<String> = after
        .iter()
        .filter(|p| !before.iter().any(|b| b.message == p.message))
        .map(|p| {
            format!(
                "{}{}",
                p.message,
                if p.fix.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.fix)
                }
            )
        })
        .collect();
    if !new_problems.is_empty() {
        let hint = if new_problems.iter().any(|p| p.contains("no Wi-Fi country")) {
            "; or pass --wifi-country <CODE>"
        } else {
            ""
        };
        bail!(
            "cannot add `{}`: {}{hint}",
            args.name,
            new_problems.join("; ")
        );
    }
    let dir = root.join("hosts").join(&args.name);
    if dir.exists() {
        bail!(
            "hosts/{} already exists: remove it or choose another name",
            args.name
        );
    }
    let mut nix = TEMPLATE.replace("@NAME@", &args.name);
    if args.model == Model::Zero2w {
        nix = nix.replace(
            "  # services.avahi.enable = false;",
            "  # pi-nixos.zero2w.brcmfmacWorkaround = false; # if Wi-Fi associates without it\n  # services.avahi.enable = false;",
        );
    }
    if args.dry_run {
        if country_added {
            println!(
                "would set wifi_country = {} in [fleet]",
                toml_string(args.wifi_country.as_deref().unwrap_or_default())
            );
        }
        println!("would append to {INVENTORY}:\n\n{entry}");
        println!("would create hosts/{}/default.nix", args.name);
        super::identity::ensure(root, &args.name, None, true)?;
        return Ok(());
    }
    // Its SSH host key first (the first contact then needs no prompt): if
    // that fails, the inventory is as it was.
    super::identity::ensure(root, &args.name, None, false)?;
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("default.nix"), nix))
        .with_context(|| format!("cannot write hosts/{}/default.nix", args.name))
        .and_then(|()| {
            std::fs::write(&inv_path, new_text)
                .with_context(|| format!("cannot write {}", inv_path.display()))
        });
    if let Err(e) = written {
        // The private key stays in the data folder: running this again adopts it.
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    if country_added {
        println!(
            "set wifi_country = {} in [fleet] of {INVENTORY}",
            toml_string(args.wifi_country.as_deref().unwrap_or_default())
        );
    }
    println!(
        "added {} ({}, {}) to {INVENTORY} and created hosts/{}/default.nix",
        args.name, args.model, address, args.name
    );
    println!("next:");
    let mut add = format!(
        "{INVENTORY} {} hosts/{}",
        crate::identity::FLEET_ID,
        args.name
    );
    if args.wifi.is_some() {
        println!(
            "  cargo xtask wifi {}   # its Wi-Fi password, an age secret only it (and the admins) can read",
            args.name
        );
        add.push_str(" secrets/");
    }
    println!("  git add {add}   # flakes do not see untracked files");
    println!("  cargo xtask check");
    println!("  cargo xtask sd {}", args.name);
    Ok(())
}

/// The inventory with `wifi_country = "<code>"` in its `[fleet]` table: a
/// new table before the first host when there is none; unchanged when it
/// already says so; refused when it says otherwise.
fn with_wifi_country(text: &str, code: &str) -> Result<String> {
    let (_, settings, _) = inventory::parse_fleet(text);
    if let Some(have) = &settings.wifi_country {
        if have == code {
            return Ok(text.to_string());
        }
        bail!(
            "{INVENTORY} already has wifi_country = {}: the whole fleet has one Wi-Fi country; drop --wifi-country or change it there",
            toml_string(have)
        );
    }
    let line = format!("wifi_country = {}\n", toml_string(code));
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let header = |l: &&str| l.trim() == "[fleet]";
    let out = if let Some(i) = lines.iter().position(header) {
        // A [fleet] table without wifi_country: the line goes under its header.
        let mut out: String = lines[..=i].concat();
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&line);
        out.push_str(&lines[i + 1..].concat());
        out
    } else {
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with("[[host]]"))
            .unwrap_or(lines.len());
        let mut out: String = lines[..at].concat();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("[fleet]\n");
        out.push_str(&line);
        out.push('\n');
        out.push_str(&lines[at..].concat());
        out
    };
    Ok(out)
}

/// The `[[host]]` table for the arguments, defaults left out.
fn entry(args: &Args, address: &str) -> String {
    let q = |s: &str| toml_string(s);
    let mut e = String::from("[[host]]\n");
    let _ = writeln!(e, "name = {}", q(&args.name));
    let _ = writeln!(e, "model = {}", q(args.model.as_str()));
    let _ = writeln!(e, "address = {}", q(address));
    if let Some(g) = &args.gateway {
        let _ = writeln!(e, "gateway = {}", q(g));
    }
    if !args.dns.is_empty() {
        let dns: Vec<String> = args.dns.iter().map(|d| q(d)).collect();
        let _ = writeln!(e, "dns = [{}]", dns.join(", "));
    }
    if args.user != "root" {
        let _ = writeln!(e, "user = {}", q(&args.user));
    }
    if args.port != 22 {
        let _ = writeln!(e, "port = {}", args.port);
    }
    if !args.tags.is_empty() {
        let tags: Vec<String> = args.tags.iter().map(|t| q(t)).collect();
        let _ = writeln!(e, "tags = [{}]", tags.join(", "));
    }
    if let Some(w) = &args.wifi {
        let _ = writeln!(e, "wifi = {}", q(w));
    }
    e
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
