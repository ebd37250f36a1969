//! A host's built image (`out/<host>/<host>.img.zst`): refused for problems
//! in that host's definition only, checked against the record `cargo xtask
//! sd` wrote next to it (its size now, its sha256 while it is read).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use super::image::{Expected, Image, open};
use crate::inventory;

/// The image `cargo xtask sd` built for `arg`, checked against its record.
pub fn image(root: &Path, arg: &str) -> Result<Image> {
    host_problems(root, arg)?;
    let p = inventory::image_path(root, arg);
    if !p.exists() {
        bail!(
            "no image for {arg} yet ({} is missing): build it with `cargo xtask sd {arg}`",
            p.display()
        );
    }
    let json = inventory::image_info_path(root, arg);
    let info = crate::image::info::load(root, arg)
        .and_then(|info| {
            if let Some(i) = &info {
                i.check_sums()
                    .with_context(|| format!("{} is malformed", json.display()))?;
            }
            Ok(info)
        })
        .map_err(|e| {
            anyhow!(
                "{e:#}: the image cannot be checked against its record; build it again with `cargo xtask sd {arg}` (or give the file's path to write it unchecked)"
            )
        })?;
    let mut img = open(&p)?;
    match info {
        Some(info) => {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if size != info.size {
                bail!(
                    "{} is {size} bytes but `cargo xtask sd` recorded {} bytes: it was changed or cut short; build it again with `cargo xtask sd {arg}`",
                    p.display(),
                    info.size
                );
            }
            eprintln!(
                "image of {arg}: built {} from commit {}; its sha256 is checked against {} while it is read",
                info.built,
                info.short_commit(),
                json.display()
            );
            img.expect = Some(Expected {
                host: arg.to_string(),
                sha256: info.sha256.to_ascii_lowercase(),
                bmap_sha256: info.bmap_sha256.map(|s| s.to_ascii_lowercase()),
            });
        }
        None => eprintln!(
            "warning: {} is missing: where the image comes from and whether it changed cannot be checked (`cargo xtask sd {arg}` writes it)",
            json.display()
        ),
    }
    Ok(img)
}

/// Loads the fleet and refuses only for problems of `host` (its entry in
/// the inventory, its folder): the image is already built, so problems of
/// other hosts are only mentioned.
fn host_problems(root: &Path, host: &str) -> Result<()> {
    let (fleet, problems) = inventory::Fleet::read(root)?;
    let list =
        |ps: &[&inventory::Problem]| -> String { ps.iter().map(|p| format!("\n  {p}")).collect() };
    if let Err(e) = fleet.host(host) {
        if problems.is_empty() {
            return Err(e);
        }
        let all: Vec<&inventory::Problem> = problems.iter().collect();
        bail!(
            "{e:#}; the fleet definition has {} problem(s):{}",
            all.len(),
            list(&all)
        );
    }
    let text = std::fs::read_to_string(root.join(inventory::INVENTORY)).unwrap_or_default();
    let (own, other): (Vec<&inventory::Problem>, Vec<&inventory::Problem>) = problems
        .iter()
        .partition(|p| problem_of(&fleet, &text, host, p));
    if !own.is_empty() {
        bail!(
            "the definition of {host} has {} problem(s):{}\nfix them (`cargo xtask check`), then build its image again with `cargo xtask sd {host}`",
            own.len(),
            list(&own)
        );
    }
    if !other.is_empty() {
        eprintln!(
            "warning: the fleet definition has {} problem(s) elsewhere (`cargo xtask check` lists them); they do not touch {host}'s built image",
            other.len()
        );
    }
    Ok(())
}

/// Whether a problem is in `host`'s folder or its `[[host]]` entry (the
/// lines from its header to the next `[[host]]` header of `inventory`).
pub fn problem_of(
    fleet: &inventory::Fleet,
    inventory: &str,
    host: &str,
    p: &inventory::Problem,
) -> bool {
    if p.file.starts_with(&format!("hosts/{host}/")) {
        return true;
    }
    if p.file != inventory::INVENTORY || p.line == 0 {
        return false;
    }
    let header = inventory
        .lines()
        .enumerate()
        .filter(|(i, l)| l.trim_start().starts_with("[[host]]") && *i < p.line)
        .map(|(i, _)| i + 1)
        .last();
    header.is_some_and(|line| fleet.hosts.iter().any(|h| h.line == line && h.name == host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn problems_belong_to_the_host_whose_entry_or_folder_has_them() {
        let text = "admin = 1\n\n[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"192.0.2.1\"\n\n[[host]]  # the second\nname = \"b\"\nmodel = \"pi4\"\naddress = \"192.0.2.2\"\n";
        let (hosts, _) = inventory::parse_inventory(text);
        assert_eq!(hosts.len(), 2);
        let fleet = inventory::Fleet {
            root: PathBuf::new(),
            hosts,
            settings: Default::default(),
            key_lines: vec![],
        };
        let p = |file: &str, line: usize| inventory::Problem::new(file, line, "x", "");
        let of = |host: &str, pr: &inventory::Problem| problem_of(&fleet, text, host, pr);
        assert!(of("a", &p("hosts/fleet.toml", 5)));
        assert!(!of("b", &p("hosts/fleet.toml", 5)));
        assert!(of("b", &p("hosts/fleet.toml", 8)));
        assert!(of("b", &p("hosts/fleet.toml", 11)));
        assert!(!of("a", &p("hosts/fleet.toml", 1)), "before any host");
        assert!(!of("a", &p("hosts/fleet.toml", 0)), "the whole file");
        assert!(of("b", &p("hosts/b/default.nix", 3)));
        assert!(!of("a", &p("hosts/b/default.nix", 3)));
        assert!(!of("a", &p("keys/authorized_keys", 1)));
    }
}
