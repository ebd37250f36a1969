//! `cargo xtask check`: everything wrong with the fleet definition, each
//! problem with file:line and the fix. Exit 0 only when clean.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;
use xshell::Shell;

use crate::inventory::{Fleet, INVENTORY, Problem, Reach};
use crate::{exec, nix};

#[derive(clap::Args)]
pub struct Args {
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    ok: bool,
    problems: Vec<Problem>,
    /// What works but weakens a Pi (Compose: privileged, host network).
    warnings: Vec<Problem>,
    /// Checks that could not run, with the reason.
    skipped: Vec<String>,
    /// Per host, what its address relies on (information, not problems).
    addressing: Vec<Addressing>,
    /// Worth knowing, not problems (the CI binary cache unused here).
    notes: Vec<String>,
}

#[derive(Serialize)]
struct Addressing {
    host: String,
    address: String,
    reach: Reach,
    note: String,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let (fleet, mut problems) = match Fleet::read(root) {
        Ok(read) => read,
        Err(e) => {
            // A fleet.toml that does not parse: with --json, that one problem.
            let text = std::fs::read_to_string(root.join(INVENTORY)).unwrap_or_default();
            if let (true, Some(p)) = (args.json, crate::inventory::syntax_problem(&text)) {
                let report = Report {
                    ok: false,
                    problems: vec![p],
                    warnings: Vec::new(),
                    skipped: Vec::new(),
                    addressing: Vec::new(),
                    notes: Vec::new(),
                };
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            return Err(e);
        }
    };
    let mut skipped = Vec::new();
    let mut notes = Vec::new();
    problems.extend(check_lock(root)?);
    problems.extend(check_untracked(root)?);
    problems.extend(crate::container_pins::problems(&fleet)?);
    problems.extend(crate::identity::problems(&fleet));
    problems.extend(crate::secrets::problems(root, &fleet));
    problems.extend(crate::config_txt::problems(&fleet)?);
    problems.extend(crate::wifi::problems(root, &fleet));
    let compose = crate::compose::check::fleet(&fleet)?;
    problems.extend(compose.problems);
    if nix::installed() {
        let sh = Shell::new()?;
        problems.extend(check_nix_parse(&sh, root)?);
        match nix::version::require() {
            Ok(installed) => {
                problems.extend(check_flake_inventory(&sh, &fleet));
                problems.extend(check_flake_checks(&sh, &fleet));
                let v = (installed.version.major, installed.version.minor);
                notes.extend(cache_note(&sh, v, &fleet));
            }
            Err(e) => problems.push(Problem::new(
                "flake.nix",
                0,
                format!("the flake was not evaluated: {}", e.reason()),
                nix::version::FIX,
            )),
        }
    } else {
        skipped.push(
            "nix is not installed: .nix files were not parsed and the flake's inventory was not compared (run `cargo xtask setup-binfmt` or see documentation/getting nix ready.md)"
                .to_string(),
        );
    }
    let report = Report {
        ok: problems.is_empty(),
        problems,
        warnings: compose.warnings,
        skipped,
        addressing: addressing(&fleet),
        notes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("{p}");
        }
        for w in &report.warnings {
            println!("warning: {w}");
        }
        for s in &report.skipped {
            println!("skipped: {s}");
        }
        for a in &report.addressing {
            println!("info: {}", a.note);
        }
        for n in &report.notes {
            println!("note: {n}");
        }
        if report.ok {
            println!("✓ {} host(s), no problems", fleet.hosts.len());
        }
    }
    if !report.ok {
        bail!(
            "{} problem(s) in the fleet definition",
            report.problems.len()
        );
    }
    Ok(())
}

/// Files the flake reads are tracked by Git (Nix leaves untracked ones out).
fn check_untracked(root: &Path) -> Result<Vec<Problem>> {
    let Some(status) = crate::git::status(&Shell::new()?, root)? else {
        return Ok(Vec::new());
    };
    Ok(status
        .untracked_flake_inputs()
        .into_iter()
        .map(|f| {
            Problem::new(
                f,
                0,
                "not tracked by Git: the flake does not see it (Nix flakes read only tracked files), so builds and deploys leave it out",
                format!("`git add {f}`"),
            )
        })
        .collect())
}

/// Every input in flake.lock is locked to a revision with a narHash.
fn check_lock(root: &Path) -> Result<Vec<Problem>> {
    let file = "flake.lock";
    let text = match std::fs::read_to_string(root.join(file)) {
        Ok(t) => t,
        Err(_) => {
            return Ok(vec![Problem::new(
                file,
                0,
                "flake.lock is missing: the nixpkgs version is not pinned",
                "restore flake.lock from the template (`git checkout flake.lock`)",
            )]);
        }
    };
    Ok(lock_problems(&text))
}

pub fn lock_problems(text: &str) -> Vec<Problem> {
    let file = "flake.lock";
    let lock: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return vec![Problem::new(
                file,
                e.line(),
                format!("not valid JSON: {e}"),
                "restore flake.lock from Git",
            )];
        }
    };
    let line_of = |node: &str| {
        text.lines()
            .position(|l| l.trim_start().starts_with(&format!("\"{node}\": {{")))
            .map_or(0, |i| i + 1)
    };
    let mut problems = Vec::new();
    let root_name = lock["root"].as_str().unwrap_or("root");
    let nodes = lock["nodes"].as_object().cloned().unwrap_or_default();
    for (name, node) in &nodes {
        if name == root_name {
            continue;
        }
        let locked = &node["locked"];
        if locked.is_null() {
            problems.push(Problem::new(
                file,
                line_of(name),
                format!("input `{name}` is not locked"),
                "run `nix flake lock` and commit flake.lock",
            ));
            continue;
        }
        let kind = locked["type"].as_str().unwrap_or("");
        let has_rev = locked["rev"].as_str().is_some_and(|r| r.len() == 40);
        if kind != "path" && !has_rev {
            problems.push(Problem::new(
                file,
                line_of(name),
                format!("input `{name}` is not locked to a revision"),
                "run `nix flake lock --update-input <name>` and commit flake.lock",
            ));
        }
        if locked["narHash"]
            .as_str()
            .is_none_or(|h| !h.starts_with("sha256-"))
        {
            problems.push(Problem::new(
                file,
                line_of(name),
                format!("input `{name}` has no narHash"),
                "run `nix flake lock` and commit flake.lock",
            ));
        }
    }
    if let Some(inputs) = nodes.get(root_name).and_then(|r| r["inputs"].as_object()) {
        for (input, target) in inputs {
            if let Some(t) = target.as_str()
                && !nodes.contains_key(t)
            {
                problems.push(Problem::new(
                    file,
                    line_of(input),
                    format!("input `{input}` points at a node that is not in the lock"),
                    "run `nix flake lock` and commit flake.lock",
                ));
            }
        }
    }
    problems
}

/// Every `.nix` file of the repository parses.
fn check_nix_parse(sh: &Shell, root: &Path) -> Result<Vec<Problem>> {
    let mut files = Vec::new();
    nix_files(root, &mut files)?;
    files.sort();
    let bad = nix::parse_files(sh, &files)?;
    Ok(bad
        .into_iter()
        .map(|(f, msg)| {
            let rel = f.strip_prefix(root).unwrap_or(&f).display().to_string();
            Problem::new(
                &rel,
                nix::error_line(&msg, &f),
                format!("does not parse: {}", nix::error_summary(&msg)),
                "correct the Nix syntax (`nix fmt` formats a file that parses)",
            )
        })
        .collect())
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" || name == "out" || name.starts_with("result")
        {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            nix_files(&path, out)?;
        } else if name.ends_with(".nix") {
            out.push(path);
        }
    }
    Ok(())
}

/// The flake's `inventory` output, evaluated by Nix, equals what the xtask
/// reads: the proof that hosts are defined once.
fn check_flake_inventory(sh: &Shell, fleet: &Fleet) -> Vec<Problem> {
    let ours = fleet.nix_view();
    match nix::eval_json(sh, &fleet.root, "inventory") {
        Ok(theirs) if theirs == ours => Vec::new(),
        Ok(theirs) => vec![Problem::new(
            "flake.nix",
            0,
            format!(
                "the flake's inventory differs from {INVENTORY} as the xtask reads it: {}",
                first_difference(&ours, &theirs, "inventory")
            ),
            "make flake.nix read the fleet through lib/inventory.nix; if the repository is a Git checkout, `git add` new files (flakes ignore untracked files)",
        )],
        Err(e) => vec![Problem::new(
            "flake.nix",
            0,
            format!(
                "`nix eval .#inventory` failed: {}",
                nix::error_summary(&format!("{e:#}"))
            ),
            "fix the error Nix names above; if the repository is a Git checkout, `git add` new files",
        )],
    }
}

/// The binary cache of `[fleet] cache`, when this workstation's Nix does
/// not substitute from it (`nix config show`).
fn cache_note(sh: &Shell, version: (u32, u32), fleet: &Fleet) -> Option<String> {
    fleet.settings.cache.as_ref()?;
    let text = exec::read(nix::show_config(sh, Some(version), true)).ok()?;
    let config = crate::binfmt::nixconf::parse_show_config(&text);
    crate::ci::substituter_note(&fleet.settings, &config)
}

/// Per host, what its address relies on: its `<name>.local` mDNS name, an
/// address the router must hand out, a DNS name, or a static address.
fn addressing(fleet: &Fleet) -> Vec<Addressing> {
    fleet
        .hosts
        .iter()
        .map(|h| Addressing {
            host: h.name.clone(),
            address: h.address.clone(),
            reach: h.reach(),
            note: h.reach_note(),
        })
        .collect()
}

/// The flake's `checks.aarch64-linux` has every host (so `nix flake check`
/// evaluates each one), read without nixpkgs: only the names are evaluated.
fn check_flake_checks(sh: &Shell, fleet: &Fleet) -> Vec<Problem> {
    let mut names: Vec<&str> = fleet.hosts.iter().map(|h| h.name.as_str()).collect();
    names.sort_unstable();
    let ours = serde_json::json!({ "aarch64-linux": names });
    let out = exec::read(
        nix::nix(sh)
            .args(["eval", "--json"])
            .arg(nix::flake_attr(&fleet.root, "checks"))
            .args([
                "--apply",
                "c: builtins.mapAttrs (system: builtins.attrNames) c",
            ]),
    );
    let theirs = out.and_then(|o| Ok(serde_json::from_str::<serde_json::Value>(&o)?));
    match theirs {
        Ok(theirs) if theirs == ours => Vec::new(),
        Ok(theirs) => vec![Problem::new(
            "flake.nix",
            0,
            format!(
                "the flake's checks do not cover the fleet: {}",
                first_difference(&ours, &theirs, "checks")
            ),
            "make flake.nix set `checks.aarch64-linux` to every host's toplevel, as the template does",
        )],
        Err(e) => vec![Problem::new(
            "flake.nix",
            0,
            format!(
                "`nix eval .#checks` failed: {}",
                nix::error_summary(&format!("{e:#}"))
            ),
            "make flake.nix set `checks.aarch64-linux` to every host's toplevel, as the template does",
        )],
    }
}

/// Where two JSON values first differ, as `path: xtask has A, nix has B`.
pub fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> String {
    use serde_json::Value::Object;
    if let (Object(x), Object(y)) = (a, b) {
        for key in x.keys().chain(y.keys()) {
            let (va, vb) = (x.get(key), y.get(key));
            if va != vb {
                let p = format!("{path}.{key}");
                return match (va, vb) {
                    (Some(va), Some(vb)) => first_difference(va, vb, &p),
                    (Some(_), None) => format!("{p}: only the xtask has it"),
                    _ => format!("{p}: only nix has it"),
                };
            }
        }
    }
    format!("{path}: xtask has {a}, nix has {b}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn difference_names_the_path() {
        let a = json!({"hosts": {"a": {"port": 22}}});
        let b = json!({"hosts": {"a": {"port": 2222}}});
        assert_eq!(
            first_difference(&a, &b, "inventory"),
            "inventory.hosts.a.port: xtask has 22, nix has 2222"
        );
        let c = json!({"hosts": {}});
        assert_eq!(
            first_difference(&a, &c, "inventory"),
            "inventory.hosts.a: only the xtask has it"
        );
    }

    #[test]
    fn lock_without_narhash_or_rev() {
        let text = r#"{
  "nodes": {
    "nixpkgs": {
      "locked": { "owner": "NixOS", "repo": "nixpkgs", "type": "github" }
    },
    "root": { "inputs": { "nixpkgs": "nixpkgs" } }
  },
  "root": "root",
  "version": 7
}"#;
        let p = lock_problems(text);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].message.contains("not locked to a revision"));
        assert!(p[1].message.contains("no narHash"));
        assert_eq!(p[0].line, 3);
    }

    #[test]
    fn shipped_lock_is_clean() {
        let text = include_str!("../../../flake.lock");
        assert!(lock_problems(text).is_empty());
        assert!(text.contains("f5c082a40f7571c266e74e80ae2e68aadd8a9fc7"));
    }
}
