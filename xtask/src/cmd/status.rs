//! `cargo xtask status`: every host's state, in parallel: reachable, NixOS
//! version, generation and its date, running system versus what the Git
//! tree builds, failed units, containers, uptime, the SD image built for it,
//! whether its firmware partition holds what the running system's firmware
//! folder holds (and the releases it carries, see `firmware.rs`).
//!
//! In sync / outdated / drifted / unknown, from three store paths: the one
//! the current tree builds (`nix eval`, no build), the one running
//! (`/run/current-system`) and the one the last deploy recorded on the host
//! (`/var/lib/pi-nixos/deployed`):
//! - in sync: running = what the tree builds;
//! - outdated: running = last deploy, but the tree builds something else
//!   (the repo moved on: deploy);
//! - drifted: running ≠ last deploy (changed on the host by hand, e.g. a
//!   local nixos-rebuild or rollback);
//! - unknown: the tree cannot be evaluated, or it differs and the host was
//!   never deployed by this tool.
//!
//! "next boot differs" when the system profile (what the next boot starts)
//! is not the running system (`deploy --boot`, or a profile moved by hand).
//!
//! Exit code, for scripts: 0 every host reachable, NixOS, in sync and
//! booting what it runs; 2 a host unreachable or its definition invalid;
//! 3 every host reachable but one not in sync (outdated, drifted, unknown,
//! next boot differs, not NixOS, firmware partition differs); 1 status
//! itself failed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::deploy::remote::{self, Facts};
use crate::deploy::{self, date, human_duration};
use crate::firmware::{self, Firmware};
use crate::health::{self, Health};
use crate::image::{self, info::ImageInfo};
use crate::inventory::{Fleet, Host};
use crate::ssh::{self, Ssh, Target};
use crate::{containers, nix};

#[derive(clap::Args)]
pub struct Args {
    /// Hosts to show [default: all]
    hosts: Vec<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
    /// Seconds to wait for a Pi to answer SSH
    #[arg(long, value_name = "S", default_value_t = ssh::CONNECT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,
    /// Do not evaluate the flake (the sync column says unknown)
    #[arg(long)]
    no_eval: bool,
}

/// Exit codes (see the module docs).
pub const EXIT_UNREACHABLE: i32 = 2;
pub const EXIT_NOT_IN_SYNC: i32 = 3;

/// Unknown values are `None` (`null` in JSON).
#[derive(Serialize, Debug)]
pub struct Status {
    pub host: String,
    /// up | not NixOS | unreachable | invalid (its definition has problems)
    pub state: String,
    pub reachable: bool,
    pub nixos: Option<bool>,
    pub error: Option<String>,
    pub nixos_version: Option<String>,
    pub generation: Option<u64>,
    pub generation_date: Option<String>,
    pub running: Option<String>,
    pub expected: Option<String>,
    /// What the system profile points at: what the next boot starts.
    pub next_boot: Option<String>,
    pub next_boot_differs: Option<bool>,
    /// in sync | outdated | drifted | unknown
    pub sync: Option<String>,
    pub sync_reason: String,
    pub deployed_commit: Option<String>,
    pub failed_units: Option<Vec<String>>,
    pub containers_running: Option<usize>,
    pub containers_declared: Option<usize>,
    pub uptime_seconds: Option<f64>,
    /// The record `cargo xtask sd` left next to the host's image, if any.
    pub sd_image: Option<ImageInfo>,
    /// Temperature, throttling, memory, root filesystem, load.
    pub health: Option<Health>,
    /// The host key it presents: matches git | differs from git | not in
    /// git (first contact asks) | unchecked (unreachable before the check).
    pub host_key: Option<String>,
    /// The FAT firmware partition against the running system's firmware
    /// folder (matches | differs | not managed | unknown) and the releases
    /// it carries.
    pub firmware: Option<Firmware>,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    // Read-only: problems in the fleet definition are reported, not fatal.
    let (fleet, problems) = Fleet::read(root)?;
    if !problems.is_empty() {
        eprintln!(
            "warning: the fleet definition has {} problem(s); run `cargo xtask check`",
            problems.len()
        );
    }
    // Hosts whose entry is invalid (e.g. a malformed address) are shown
    // as such, never silently left out.
    let mut invalid: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &problems {
        if let Some(name) = deploy::problem_host(p)
            && fleet.host(&name).is_err()
            && (args.hosts.is_empty() || args.hosts.contains(&name))
        {
            invalid
                .entry(name)
                .or_default()
                .push(p.to_string().replace("\n    fix: ", ": "));
        }
    }
    let hosts = if args.hosts.is_empty() {
        fleet.hosts.clone()
    } else {
        let valid: Vec<String> = args
            .hosts
            .iter()
            .filter(|n| !invalid.contains_key(*n))
            .cloned()
            .collect();
        if valid.is_empty() {
            Vec::new()
        } else {
            deploy::select(&fleet, &valid, false, &[])?
        }
    };
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let ssh = Ssh::shared(args.connect_timeout)?.with_git_keys(root, &names)?;
    let (expected, facts) = std::thread::scope(|s| {
        let eval = s.spawn(|| {
            if args.no_eval {
                Err(anyhow::anyhow!("--no-eval"))
            } else {
                expected_paths(root, &names)
            }
        });
        let facts = deploy::parallel(
            hosts.len(),
            32,
            false,
            &|i| probe(root, &ssh, &hosts[i]),
            &|_| false,
        );
        (
            eval.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("eval panicked"))),
            facts,
        )
    });
    let eval_error = expected.as_ref().err().map(|e| format!("{e:#}"));
    let expected = expected.unwrap_or_default();
    let mut rows: Vec<Status> = hosts
        .iter()
        .zip(facts)
        .map(|(h, f)| {
            let f = f.unwrap_or_else(|| Err(anyhow::anyhow!("not probed")));
            let keyed = ssh.has_git_key(&Target::of(h));
            status(
                root,
                h,
                keyed,
                f,
                expected.get(&h.name).cloned().flatten(),
                eval_error.as_deref(),
            )
        })
        .collect();
    drop(ssh);
    rows.extend(
        invalid
            .into_iter()
            .map(|(name, why)| invalid_row(name, why)),
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print(&rows);
        print_health(&rows);
        if let Some(e) = eval_error.as_ref().filter(|_| !args.no_eval) {
            eprintln!(
                "note: the Git tree could not be evaluated, so sync is unknown: {}",
                nix::error_summary(e)
            );
        }
    }
    let code = exit_code(&rows, args.no_eval);
    if code != 0 {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }
    Ok(())
}

/// 0, [`EXIT_UNREACHABLE`] or [`EXIT_NOT_IN_SYNC`] (see the module docs);
/// with `no_eval` the sync with Git is not judged.
pub fn exit_code(rows: &[Status], no_eval: bool) -> i32 {
    if rows.iter().any(|s| !s.reachable) {
        return EXIT_UNREACHABLE;
    }
    let behind = |s: &Status| {
        s.nixos != Some(true)
            || s.next_boot_differs == Some(true)
            || (!no_eval && s.sync.as_deref() != Some("in sync"))
            || s.firmware.as_ref().is_some_and(|f| f.state == "differs")
    };
    if rows.iter().any(behind) {
        return EXIT_NOT_IN_SYNC;
    }
    0
}

fn empty(host: String, state: &str) -> Status {
    Status {
        host,
        state: state.into(),
        reachable: false,
        nixos: None,
        error: None,
        nixos_version: None,
        generation: None,
        generation_date: None,
        running: None,
        expected: None,
        next_boot: None,
        next_boot_differs: None,
        sync: None,
        sync_reason: String::new(),
        deployed_commit: None,
        failed_units: None,
        containers_running: None,
        containers_declared: None,
        uptime_seconds: None,
        sd_image: None,
        health: None,
        host_key: None,
        firmware: None,
    }
}

fn invalid_row(name: String, why: Vec<String>) -> Status {
    let mut s = empty(name, "invalid");
    s.error = Some(format!(
        "not in the fleet: its entry has problems: {}",
        why.join("; ")
    ));
    s.sync_reason = "invalid definition".into();
    s
}

/// One `nix eval` for every host's toplevel path (evaluation only).
fn expected_paths(root: &Path, names: &[String]) -> Result<BTreeMap<String, Option<String>>> {
    nix::version::require()?;
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let apply = String::from(
        "cs: builtins.listToAttrs (map (n: { name = n; value = let r = builtins.tryEval (cs.${n}.config.system.build.toplevel.outPath or null); in if r.success then r.value else null; }) [ ",
    ) + &list.join(" ")
        + " ])";
    let mut cmd = nix::eval_apply(&nix::flake_attr(root, "nixosConfigurations"), &apply);
    eprintln!("$ {}", ssh::show(&cmd));
    let out = cmd.output().context("cannot run nix")?;
    if !out.status.success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).context("nix eval printed something unexpected")
}

/// Containers of containers.toml and `<project>/<service>` of Compose projects.
fn declared_names(root: &Path, h: &Host) -> Result<Vec<String>> {
    let mut names: Vec<String> = containers::read(root, &h.name)?
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.extend(crate::compose::services(root, &h.name)?);
    Ok(names)
}

fn probe(root: &Path, ssh: &Ssh, h: &Host) -> Result<Probed> {
    let t = Target::of(h);
    let declared = declared_names(root, h)?;
    let limit = Duration::from_secs(ssh.connect_timeout + 10);
    let script = probe_script();
    // One SSH call per host: over the master another command left up
    // (`ssh/persist.rs`), else over a connection of its own (opening a
    // master for one call would only add to it).
    let reuse = ssh.has_master(&t);
    let call = |script: &str| {
        if reuse {
            ssh.command(&t, script, &[&declared.join(" ")])
        } else {
            ssh.fresh_command(&t, script, &[&declared.join(" ")])
        }
    };
    let mut cmd = call(&script);
    // Echoed with the probe script named, not spelled out (`deploy --dry-run` prints it).
    eprintln!("$ {}", ssh::show(&call("<PROBE>")));
    let out = ssh::output_within(&mut cmd, limit)?;
    if out.status.success() {
        return Ok(parse_probe(&out.stdout));
    }
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let failure = ssh::classify(&err);
    if failure == ssh::Failure::UnknownHostKey && !ssh.has_git_key(&t) {
        // First contact: ask about the key, then probe again.
        ssh.connect(&t, &|c| eprintln!("$ {}", ssh::show(c)))?;
        ssh.disconnect(&t);
        let out = ssh::output_within(
            &mut ssh.fresh_command(&t, &script, &[&declared.join(" ")]),
            limit,
        )?;
        if out.status.success() {
            return Ok(parse_probe(&out.stdout));
        }
        anyhow::bail!("{}", deploy::last_words(&out));
    }
    anyhow::bail!("{}", ssh.failure_message(&failure, &t, &err))
}

/// The deploy probe with the health and firmware lines before it (one SSH
/// call).
fn probe_script() -> String {
    format!("{}{}{}", health::SCRIPT, firmware::SCRIPT, remote::PROBE)
}

/// What one probe tells.
type Probed = (Facts, Health, Option<Firmware>);

fn parse_probe(stdout: &[u8]) -> Probed {
    let text = String::from_utf8_lossy(stdout);
    (
        remote::parse_probe(&text),
        health::parse(&text),
        firmware::parse(&text),
    )
}

fn status(
    root: &Path,
    h: &Host,
    git_keyed: bool,
    f: Result<Probed>,
    expected: Option<String>,
    eval_error: Option<&str>,
) -> Status {
    let mut s = empty(h.name.clone(), "unreachable");
    let declared = declared_names(root, h).ok();
    s.containers_declared = declared.as_ref().map(Vec::len);
    s.sd_image = image::info::read(root, &h.name);
    s.expected = expected.clone();
    s.host_key = Some(host_key(git_keyed, &f).into());
    let f = match f {
        Ok((f, health, fw)) => {
            s.health = Some(health);
            s.firmware = fw;
            f
        }
        Err(e) => {
            s.error = Some(format!("{e:#}"));
            s.sync_reason = "unreachable".into();
            return s;
        }
    };
    s.reachable = true;
    s.nixos = Some(f.nixos);
    s.state = if f.nixos { "up" } else { "not NixOS" }.into();
    s.nixos_version = Some(f.version.clone()).filter(|v| !v.is_empty());
    s.generation = f.profile_generation;
    s.generation_date = f
        .profile_generation
        .and_then(|g| f.generation_time(g))
        .map(date);
    s.running = Some(f.current.clone()).filter(|c| !c.is_empty());
    s.next_boot = Some(f.profile_path.clone()).filter(|c| !c.is_empty());
    s.next_boot_differs = match (&s.running, &s.next_boot) {
        (Some(r), Some(n)) => Some(r != n),
        _ => None,
    };
    s.deployed_commit = f.deployed.get("commit").cloned();
    s.failed_units = Some(f.failed.clone());
    // Declared ones running (a Compose service's container is also listed
    // by its own name: counting all would count it twice).
    s.containers_running = Some(match &declared {
        Some(d) => d.iter().filter(|n| f.running.contains(n)).count(),
        None => f.running.len(),
    });
    s.uptime_seconds = f.uptime_secs;
    if !f.nixos {
        s.sync_reason =
            "not NixOS (no /etc/NIXOS): deploy refuses it; boot it from this repository's SD image"
                .into();
        return s;
    }
    let (sync, why) = sync(expected.as_deref(), &f, eval_error);
    s.sync = Some(sync.into());
    s.sync_reason = why;
    s
}

/// Whether the key the host presented is the one in Git: a connection to a
/// host with its key in Git only succeeds with that key.
pub fn host_key<T>(git_keyed: bool, f: &Result<T>) -> &'static str {
    match (git_keyed, f) {
        (false, _) => "not in git",
        (true, Ok(_)) => "matches git",
        (true, Err(e)) if format!("{e:#}").contains("is NOT the one in Git") => "differs from git",
        (true, Err(_)) => "unchecked",
    }
}

/// In sync / outdated / drifted / unknown, and why (see the module docs).
pub fn sync(expected: Option<&str>, f: &Facts, eval_error: Option<&str>) -> (&'static str, String) {
    let Some(exp) = expected else {
        return (
            "unknown",
            if eval_error.is_some() {
                "the Git tree could not be evaluated".into()
            } else {
                "the Git tree builds no system for this host".into()
            },
        );
    };
    if f.current == exp {
        return ("in sync", "runs what the Git tree builds".into());
    }
    match f.deployed.get("path") {
        Some(p) if *p == f.current => (
            "outdated",
            format!(
                "runs the last deploy (commit {}); the Git tree builds something newer: deploy",
                f.deployed.get("commit").map(String::as_str).unwrap_or("?")
            ),
        ),
        Some(p) => (
            "drifted",
            format!(
                "runs {} but the last deploy installed {p}: changed on the host by hand",
                f.current
            ),
        ),
        None => (
            "unknown",
            "never deployed with cargo xtask deploy, and differs from the Git tree".into(),
        ),
    }
}

fn print(rows: &[Status]) {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let declared = |s: &Status| opt(s.containers_declared.map(|n| n.to_string()));
    let key = |s: &Status| match s.host_key.as_deref() {
        Some("matches git") => "git".to_string(),
        Some("differs from git") => "DIFFERS".to_string(),
        Some("not in git") => "tofu".to_string(),
        _ => "-".to_string(),
    };
    let table: Vec<[String; 11]> = rows
        .iter()
        .map(|s| {
            if !s.reachable {
                return [
                    s.host.clone(),
                    s.state.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("-/{}", declared(s)),
                    "-".into(),
                    image(s),
                    key(s),
                    "-".into(),
                ];
            }
            let mut git = opt(s.sync.clone());
            if s.next_boot_differs == Some(true) {
                git += ", next boot differs";
            }
            [
                s.host.clone(),
                s.state.clone(),
                s.nixos_version.clone().unwrap_or_else(|| "?".into()),
                match (s.generation, &s.generation_date) {
                    (Some(g), Some(d)) => format!("{g} ({d})"),
                    (Some(g), None) => g.to_string(),
                    _ => "?".into(),
                },
                git,
                opt(s.failed_units.as_ref().map(|f| f.len().to_string())),
                format!(
                    "{}/{}",
                    opt(s.containers_running.map(|n| n.to_string())),
                    declared(s)
                ),
                s.uptime_seconds
                    .map(human_duration)
                    .unwrap_or_else(|| "?".into()),
                image(s),
                key(s),
                firmware::column(s.firmware.as_ref()),
            ]
        })
        .collect();
    crate::cmd::list::print_table(
        &[
            "HOST",
            "STATE",
            "NIXOS",
            "GENERATION",
            "GIT",
            "FAILED",
            "CONTAINERS",
            "UPTIME",
            "SD IMAGE",
            "HOST KEY",
            "FIRMWARE",
        ],
        &table,
    );
    for s in rows {
        if let Some(e) = &s.error {
            let prefix = format!("{}: ", s.host);
            println!("{prefix}{}", e.strip_prefix(&prefix).unwrap_or(e));
        } else if s.sync.as_deref() != Some("in sync") {
            println!(
                "{}: {}: {}",
                s.host,
                s.sync.as_deref().unwrap_or(&s.state),
                s.sync_reason
            );
        }
        if s.next_boot_differs == Some(true) {
            println!(
                "{}: next boot differs: the system profile points at {} but {} runs; a reboot starts the profile's system (`deploy --boot`, or the profile was moved by hand)",
                s.host,
                s.next_boot.as_deref().unwrap_or("?"),
                s.running.as_deref().unwrap_or("?")
            );
        }
        if let Some(f) = s.failed_units.as_ref().filter(|f| !f.is_empty()) {
            println!("{}: failed units: {}", s.host, f.join(", "));
        }
        if let Some(n) = s.firmware.as_ref().and_then(|f| firmware::note(&s.host, f)) {
            println!("{n}");
        }
    }
}

/// The health table (temperature, throttling, memory, root fs, load) of
/// the reachable hosts, and a line for each one throttled now or with a
/// root filesystem above 90 %.
fn print_health(rows: &[Status]) {
    let table: Vec<[String; 6]> = rows
        .iter()
        .filter_map(|s| {
            let [t, th, m, r, l] = health::columns(s.health.as_ref()?);
            Some([s.host.clone(), t, th, m, r, l])
        })
        .collect();
    if table.is_empty() {
        return;
    }
    println!();
    crate::cmd::list::print_table(
        &[
            "HOST",
            "TEMP",
            "THROTTLING",
            "MEMORY USED",
            "ROOT FS",
            "LOAD",
        ],
        &table,
    );
    for s in rows {
        let Some(h) = &s.health else { continue };
        let now: Vec<&String> = h
            .throttling
            .iter()
            .flatten()
            .filter(|t| t.ends_with(" now"))
            .collect();
        if !now.is_empty() {
            println!(
                "{}: {}: check its power supply (a Pi needs 5.1 V at 2.5-3 A) and its cooling",
                s.host,
                now.iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if h.root_used_percent.is_some_and(|p| p > 90) {
            println!(
                "{}: the root filesystem is {}% full: `cargo xtask exec {} -- nix-collect-garbage -d` frees old generations",
                s.host,
                h.root_used_percent.unwrap_or(0),
                s.host
            );
        }
    }
}

fn image(s: &Status) -> String {
    match &s.sd_image {
        Some(i) => format!(
            "{} ({})",
            i.short_commit(),
            i.built.get(..10).unwrap_or(&i.built)
        ),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(current: &str, deployed: Option<&str>) -> Facts {
        let mut f = Facts {
            current: current.into(),
            ..Default::default()
        };
        if let Some(d) = deployed {
            f.deployed.insert("path".into(), d.into());
        }
        f
    }

    #[test]
    fn sync_states() {
        assert_eq!(sync(Some("/a"), &facts("/a", None), None).0, "in sync");
        assert_eq!(
            sync(Some("/b"), &facts("/a", Some("/a")), None).0,
            "outdated"
        );
        assert_eq!(
            sync(Some("/b"), &facts("/c", Some("/a")), None).0,
            "drifted"
        );
        assert_eq!(sync(Some("/b"), &facts("/a", None), None).0, "unknown");
        assert_eq!(sync(None, &facts("/a", Some("/a")), Some("x")).0, "unknown");
    }

    #[test]
    fn exit_codes() {
        let up = |sync: &str, differs: bool| {
            let mut s = empty("a".into(), "up");
            s.reachable = true;
            s.nixos = Some(true);
            s.sync = Some(sync.into());
            s.next_boot_differs = Some(differs);
            s
        };
        assert_eq!(exit_code(&[up("in sync", false)], false), 0);
        assert_eq!(exit_code(&[up("outdated", false)], false), EXIT_NOT_IN_SYNC);
        assert_eq!(exit_code(&[up("unknown", false)], true), 0);
        assert_eq!(exit_code(&[up("in sync", true)], false), EXIT_NOT_IN_SYNC);
        let down = empty("b".into(), "unreachable");
        assert_eq!(
            exit_code(&[up("outdated", false), down], false),
            EXIT_UNREACHABLE
        );
        let mut other = up("in sync", false);
        other.nixos = Some(false);
        assert_eq!(exit_code(&[other], true), EXIT_NOT_IN_SYNC);
        let mut fw = up("in sync", false);
        fw.firmware =
            firmware::parse("firmware_rc=1\nfirmware_differs=config.txt\nfirmware_files=9\n");
        assert_eq!(exit_code(&[fw], false), EXIT_NOT_IN_SYNC);
        let mut unmanaged = up("in sync", false);
        unmanaged.firmware = firmware::parse("firmware_rc=none\n");
        assert_eq!(exit_code(&[unmanaged], false), 0);
    }
}
