//! `cargo xtask new-host`: add a Pi to the fleet (inventory entry and
//! `hosts/<name>/default.nix`), refusing a name or address already used.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::inventory::{self, INVENTORY, Model};

const TEMPLATE: &str = include_str!("host-template.nix");

#[derive(clap::Args)]
pub struct Args {
    /// Host name (letters, digits, hyphens)
    name: String,
    /// Raspberry Pi model
    #[arg(long, value_enum)]
    model: Model,
    /// Address SSH reaches it at (IP or DNS name)
    #[arg(long)]
    address: String,
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
    /// Print what would change, change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let inv_path = root.join(INVENTORY);
    let text = std::fs::read_to_string(&inv_path)
        .with_context(|| format!("cannot read {}", inv_path.display()))?;
    let entry = entry(&args);
    let mut new_text = text.clone();
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
        bail!("cannot add `{}`: {}", args.name, new_problems.join("; "));
    }
    let dir = root.join("hosts").join(&args.name);
    if dir.exists() {
        bail!(
            "hosts/{} already exists: remove it or choose another name",
            args.name
        );
    }
    let nix = TEMPLATE.replace("@NAME@", &args.name);
    if args.dry_run {
        println!("would append to {INVENTORY}:\n\n{entry}");
        println!("would create hosts/{}/default.nix", args.name);
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("default.nix"), nix)?;
    std::fs::write(&inv_path, new_text)
        .with_context(|| format!("cannot write {}", inv_path.display()))?;
    println!(
        "added {} ({}, {}) to {INVENTORY} and created hosts/{}/default.nix",
        args.name, args.model, args.address, args.name
    );
    println!("next:");
    println!(
        "  git add {INVENTORY} hosts/{}   # flakes do not see untracked files",
        args.name
    );
    println!("  cargo xtask check");
    println!("  cargo xtask sd {}", args.name);
    Ok(())
}

/// The `[[host]]` table for the arguments, defaults left out.
fn entry(args: &Args) -> String {
    let q = |s: &str| toml_string(s);
    let mut e = String::from("[[host]]\n");
    let _ = writeln!(e, "name = {}", q(&args.name));
    let _ = writeln!(e, "model = {}", q(args.model.as_str()));
    let _ = writeln!(e, "address = {}", q(&args.address));
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
