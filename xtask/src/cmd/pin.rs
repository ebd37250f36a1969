//! `cargo xtask pin [--update] [--check] [FILE…]`: every image in
//! containers.toml and the Compose files resolved to its index digest over
//! the OCI distribution API, checked to run on a Pi (linux/arm64), written
//! in place as `name:tag@sha256:…`. What needs no registry (`--check`,
//! every image already pinned) runs here; the rest in `xtask-crypto`, which
//! has the HTTPS client (see `crypto_tool.rs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::crypto_tool::Outcome;
use crate::inventory::Fleet;
use crate::pin::{Site, is_containers_toml, rewrite, sites, write_atomically};
use crate::registry::reference::Reference;
use crate::registry::{PI_PLATFORM, Resolve};
use crate::{compose, containers};

#[derive(clap::Args)]
pub struct Args {
    /// Re-resolve the tags of pinned images too, and print old → new digests
    #[arg(long)]
    update: bool,
    /// Change nothing; exit non-zero when an image is unpinned (or, with
    /// --update, when a tag now points elsewhere)
    #[arg(long)]
    check: bool,
    /// Print what would be written, write nothing
    #[arg(long)]
    dry_run: bool,
    /// containers.toml or compose.yaml files [default: every host's]
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
}

/// Files to pin: the ones given, else every host's.
fn files(root: &Path, given: &[PathBuf]) -> Result<Vec<(String, PathBuf)>> {
    if !given.is_empty() {
        return given
            .iter()
            .map(|f| {
                let path = if f.is_absolute() || f.exists() {
                    f.clone()
                } else {
                    root.join(f)
                };
                if !path.is_file() {
                    bail!(
                        "{} is not a file: give a containers.toml or a compose.yaml",
                        f.display()
                    );
                }
                Ok((f.display().to_string(), path))
            })
            .collect();
    }
    let (fleet, _) = Fleet::read(root)?;
    let mut out = Vec::new();
    for host in &fleet.hosts {
        let rel = containers::file(&host.name);
        if root.join(&rel).is_file() {
            out.push((rel.clone(), root.join(&rel)));
        }
        for p in compose::projects(root, &host.name)? {
            let rel = p.file();
            if root.join(&rel).is_file() {
                out.push((rel.clone(), root.join(&rel)));
            }
        }
    }
    Ok(out)
}

/// What to do with one site.
enum Plan {
    Keep,
    /// Pinned with no tag: `--update` has nothing to follow.
    NoTag,
    Unpinned,
    Resolve(Reference),
}

fn plan(site: &Site, update: bool, check: bool) -> Result<Plan> {
    if site.written.contains('$') {
        bail!(
            "{}:{}: {}: image `{}` uses variables: pin cannot rewrite it",
            site.file,
            site.line,
            site.owner,
            site.written
        );
    }
    let r = Reference::parse(&site.written)
        .with_context(|| format!("{}:{}: {}", site.file, site.line, site.owner))?;
    Ok(match (&r.digest, update) {
        (Some(_), false) => Plan::Keep,
        (Some(_), true) if r.tag.is_none() => Plan::NoTag,
        (None, false) if check => Plan::Unpinned,
        _ => Plan::Resolve(r),
    })
}

/// Makes the client that asks registries, when a tag must be resolved.
pub type Connect<'a> = &'a dyn Fn() -> Result<Box<dyn Resolve>>;

/// Pins, resolving tags with the client `connect` makes (made only when a
/// tag must be resolved). Without `connect`, when a tag must be resolved it
/// stops before it prints or writes anything and asks for `xtask-crypto`.
pub fn run(root: &Path, args: Args, connect: Option<Connect>) -> Result<Outcome> {
    let files = files(root, &args.files)?;
    let mut texts = BTreeMap::new();
    let mut all = Vec::new();
    for (shown, path) in &files {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
        all.extend(
            sites(shown, &text, is_containers_toml(path))?
                .into_iter()
                .map(|s| (path.clone(), s)),
        );
        texts.insert(path.clone(), text);
    }
    let plans: Vec<Result<Plan>> = all
        .iter()
        .map(|(_, site)| plan(site, args.update, args.check))
        .collect();
    let resolves = plans.iter().any(|p| matches!(p, Ok(Plan::Resolve(_))));
    let connect = match connect {
        Some(c) => c,
        None if resolves => return Ok(Outcome::HandOver),
        None => &|| bail!("no tag to resolve"),
    };
    let mut client = None;
    let mut cache: BTreeMap<String, String> = BTreeMap::new();
    let mut refusals = Vec::new();
    let mut unpinned = Vec::new();
    let mut edits: BTreeMap<PathBuf, Vec<(std::ops::Range<usize>, String)>> = BTreeMap::new();
    let mut changes = Vec::new();
    for ((path, site), plan) in all.iter().zip(plans) {
        let r = match plan {
            Err(e) => {
                refusals.push(format!("{e:#}"));
                continue;
            }
            Ok(Plan::Keep) => continue,
            Ok(Plan::NoTag) => {
                eprintln!(
                    "{}:{}: {}: `{}` has no tag to follow: kept",
                    site.file, site.line, site.owner, site.written
                );
                continue;
            }
            Ok(Plan::Unpinned) => {
                unpinned.push(format!(
                    "{}:{}: {}: `{}` is not pinned by digest",
                    site.file, site.line, site.owner, site.written
                ));
                continue;
            }
            Ok(Plan::Resolve(r)) => r,
        };
        let key = format!("{}/{}:{}", r.registry, r.repository, r.tag_or_latest());
        let digest = match cache.get(&key) {
            Some(d) => d.clone(),
            None => {
                if client.is_none() {
                    client = Some(connect()?);
                }
                let resolved = match client.as_ref().expect("set above").resolve(&r) {
                    Ok(x) => x,
                    Err(e) => {
                        refusals.push(format!(
                            "{}:{}: {}: {e:#}",
                            site.file, site.line, site.owner
                        ));
                        continue;
                    }
                };
                if !resolved.runs_on_pi() {
                    refusals.push(format!(
                        "{}:{}: {}: `{}` has no {PI_PLATFORM} image (it has {}): a Pi cannot run it; pick a tag or an image built for arm64",
                        site.file, site.line, site.owner, site.written,
                        if resolved.platforms.is_empty() { "no platform at all".to_string() } else { resolved.platforms.join(", ") }
                    ));
                    continue;
                }
                cache.insert(key, resolved.digest.clone());
                resolved.digest
            }
        };
        if r.digest.as_deref() == Some(digest.as_str()) {
            println!(
                "{}:{}: {}: {} up to date",
                site.file, site.line, site.owner, r.name_as_written
            );
            continue;
        }
        let new = r.pinned(&digest);
        match &r.digest {
            Some(old) => println!(
                "{}:{}: {}: {} {old} → {digest}",
                site.file, site.line, site.owner, r.name_as_written
            ),
            None => println!(
                "{}:{}: {}: {} → {new}",
                site.file, site.line, site.owner, site.written
            ),
        }
        let Some(span) = site.span.clone() else {
            refusals.push(format!(
                "{}:{}: {}: the reference is written with escapes: replace it by `{new}` by hand",
                site.file, site.line, site.owner
            ));
            continue;
        };
        changes.push(new.clone());
        edits.entry(path.clone()).or_default().push((span, new));
    }
    for u in &unpinned {
        println!("{u}");
    }
    if !refusals.is_empty() {
        for r in &refusals {
            eprintln!("{r}");
        }
        bail!(
            "{} image(s) could not be pinned (listed above); nothing was written",
            refusals.len()
        );
    }
    if args.check {
        let n = unpinned.len() + changes.len();
        if n > 0 {
            bail!(
                "{n} image(s) {}: run `cargo xtask pin{}` and commit",
                if args.update {
                    "unpinned or out of date"
                } else {
                    "unpinned"
                },
                if args.update { " --update" } else { "" }
            );
        }
        println!(
            "✓ {} image reference(s) in {} file(s), all pinned{}",
            all.len(),
            files.len(),
            if args.update { " and up to date" } else { "" }
        );
        return Ok(Outcome::Done);
    }
    if args.dry_run {
        println!("dry run: {} change(s), nothing written", changes.len());
        return Ok(Outcome::Done);
    }
    for (path, e) in edits {
        write_atomically(&path, &rewrite(&texts[&path], e))?;
    }
    if changes.is_empty() {
        println!(
            "✓ {} image reference(s) in {} file(s), nothing to change",
            all.len(),
            files.len()
        );
    } else {
        println!(
            "✓ {} reference(s) written: review with `git diff`, then `cargo xtask check` and commit",
            changes.len()
        );
    }
    Ok(Outcome::Done)
}
