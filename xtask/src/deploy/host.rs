//! One host's deploy or rollback, step by step (the steps nixos-rebuild
//! performs, plus preflight, the lock-out guard and the watchdog):
//! evaluate → connect and probe → guard → build → free space → copy →
//! set profile and switch in a transient unit → confirm over a fresh SSH
//! connection → health check → record.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::activate::{activate, record};
use super::lock::Lock;
use super::remote::{self, Facts};
use super::{Log, Outcome, guard};
use crate::inventory::Host;
use crate::ssh::{self, Ssh, Target};
use crate::{containers, nix};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Activate now (switch-to-configuration switch), with the watchdog.
    Switch,
    /// Only make it the next boot's default (switch-to-configuration boot).
    Boot,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Switch => "switch",
            Action::Boot => "boot",
        }
    }
}

/// Settings shared by every host of one run.
pub struct Ctx<'a> {
    pub root: &'a Path,
    pub ssh: &'a Ssh,
    pub action: Action,
    pub confirm_timeout: u64,
    /// Seconds an activation may take before the watchdog rolls it back.
    pub activation_timeout: u64,
    pub health_timeout: u64,
    pub build_host: Option<String>,
    pub commit: Option<String>,
    /// This run's id: its log folder, its state on the targets, its lock.
    pub token: String,
}

/// What a step function learns, for the summary even when it fails.
#[derive(Default)]
pub struct State {
    pub old: Option<u64>,
    pub new: Option<u64>,
    /// The outcome on the host is not known (it stopped answering).
    pub unknown: bool,
}

/// The system to install: a store path (deploy) or a generation (rollback).
pub enum Goal {
    Path(String),
    Generation(u64),
}

fn outcome(start: Instant, st: State, r: Result<String>) -> Outcome {
    let (ok, result) = match r {
        Ok(m) => (true, m),
        Err(e) => (false, format!("{e:#}")),
    };
    Outcome {
        ok,
        result,
        old: st.old,
        new: st.new,
        unknown: st.unknown,
        duration: start.elapsed(),
    }
}

/// Closes the master connection when the host is done, whatever happened.
struct Connected<'a>(&'a Ssh, &'a Target);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.disconnect(self.1);
    }
}

pub fn deploy(ctx: &Ctx, h: &Host, log: &Log, step: &dyn Fn(&str)) -> Outcome {
    let start = Instant::now();
    let mut st = State::default();
    let r = deploy_steps(ctx, h, log, step, &mut st);
    outcome(start, st, r)
}

pub fn rollback(ctx: &Ctx, h: &Host, to: Option<u64>, log: &Log, step: &dyn Fn(&str)) -> Outcome {
    let start = Instant::now();
    let mut st = State::default();
    let r = rollback_steps(ctx, h, to, log, step, &mut st);
    outcome(start, st, r)
}

pub fn declared(ctx: &Ctx, h: &Host) -> Result<Vec<String>> {
    let mut names: Vec<String> = containers::read(ctx.root, &h.name)?
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.extend(crate::compose::services(ctx.root, &h.name)?);
    Ok(names)
}

/// Runs the probe over the host's connection.
pub fn probe(ssh: &Ssh, t: &Target, declared: &[String], log: &Log) -> Result<Facts> {
    let out = log.run_ok(
        &mut ssh.command(t, remote::PROBE, &[&declared.join(" ")]),
        None,
        "probing the host",
    )?;
    Ok(remote::parse_probe(&out))
}

/// Preflight: reachable (already), NixOS, a system profile, and (when
/// `system` is given) the architecture the configuration is built for.
fn preflight(h: &Host, f: &Facts, system: Option<&str>, log: &Log) -> Result<()> {
    if !f.nixos {
        bail!(
            "preflight: {} is not NixOS (no /etc/NIXOS); boot it from this repository's SD image (`cargo xtask sd {}`) first",
            h.name,
            h.name
        );
    }
    if f.profile_generation.is_none() {
        bail!(
            "preflight: {} has no system profile ({}); it does not look like an installed NixOS",
            h.name,
            remote::PROFILE
        );
    }
    if let Some(system) = system
        && f.nix_system() != system
    {
        bail!(
            "preflight: {} runs {} but its configuration is built for {system}; check `model` in hosts/fleet.toml and nixpkgs.hostPlatform",
            h.name,
            f.nix_system()
        );
    }
    if !f.systemd {
        log.line("note: no systemd on the target (/run/systemd/system is absent): switch-to-configuration runs directly and the watchdog is a background sleep");
    }
    Ok(())
}

fn deploy_steps(
    ctx: &Ctx,
    h: &Host,
    log: &Log,
    step: &dyn Fn(&str),
    st: &mut State,
) -> Result<String> {
    let t = Target::of(h);
    let declared = declared(ctx, h)?;

    step("evaluating");
    let attr = nix::host_attr(ctx.root, &h.name, "");
    let json = log.run_ok(
        &mut nix::eval_apply(&attr, &guard::apply_expr(&h.user)),
        None,
        "evaluating the configuration",
    )?;
    let cfg: guard::Config = serde_json::from_str(json.trim())
        .with_context(|| format!("nix eval printed something unexpected: {json}"))?;

    step("connecting");
    ctx.ssh.connect(&t, &|c| log.command(c))?;
    let _connected = Connected(ctx.ssh, &t);
    let _lock = Lock::take(ctx.ssh, &t, &ctx.token, log)?;
    let before = probe(ctx.ssh, &t, &declared, log)?;
    st.old = before.profile_generation;
    preflight(h, &before, Some(&cfg.system), log)?;

    step("lock-out guard");
    let keys = guard::key_lines(&cfg);
    // In this run's own log folder: no other run shares it.
    let scratch = log.path.with_extension("keys");
    let fingerprints = ssh::fingerprints(&keys, &scratch)?;
    let used = ctx.ssh.used_key(&t);
    log.line(&format!(
        "lock-out guard: sshd enabled = {}, logged in with {}, {} authorized key(s) for {}",
        cfg.sshd,
        used.as_deref().unwrap_or("an unknown key"),
        keys.len(),
        h.user
    ));
    guard::check(h, &cfg, used.as_deref(), &fingerprints).map_err(anyhow::Error::msg)?;

    step("building");
    let path = build(ctx, h, log)?;
    if !Path::new(&path).join("nixos-version").exists() {
        bail!("{path} is not a NixOS system (it has no nixos-version)");
    }

    // The card boots the system deploy installs: the first deploy after
    // flashing (like any repeated deploy) finds it running and changes nothing.
    if ctx.action == Action::Switch && before.current == path && before.profile_path == path {
        log.line(&format!(
            "{} already runs {path}: nothing to copy or activate",
            h.name
        ));
        let commit = ctx.commit.clone().unwrap_or_else(|| "unknown".into());
        record(ctx, &t, &path, st.old, &commit, log)?;
        return Ok("unchanged (already running this system)".into());
    }

    step("checking free space");
    free_space(ctx, &t, &path, &before, log)?;

    step("copying");
    log.run_ok(
        &mut nix::copy_to(&t.destination(), &ctx.ssh.nix_sshopts_to(&t), &path),
        None,
        "copying the closure",
    )?;

    activate(
        ctx,
        h,
        &t,
        Goal::Path(path),
        &before,
        &declared,
        log,
        step,
        st,
    )
}

fn rollback_steps(
    ctx: &Ctx,
    h: &Host,
    to: Option<u64>,
    log: &Log,
    step: &dyn Fn(&str),
    st: &mut State,
) -> Result<String> {
    let t = Target::of(h);
    let declared = declared(ctx, h)?;
    step("connecting");
    ctx.ssh.connect(&t, &|c| log.command(c))?;
    let _connected = Connected(ctx.ssh, &t);
    let _lock = Lock::take(ctx.ssh, &t, &ctx.token, log)?;
    let before = probe(ctx.ssh, &t, &declared, log)?;
    st.old = before.profile_generation;
    preflight(h, &before, None, log)?;
    let current = before.profile_generation.unwrap_or(0);
    let all: Vec<String> = before
        .generations
        .iter()
        .map(|(g, _)| g.to_string())
        .collect();
    let goal = match to {
        Some(n) if before.generation_time(n).is_none() => bail!(
            "{} has no generation {n} (it has: {}); pick one of those with --to",
            h.name,
            all.join(", ")
        ),
        Some(n) if n == current => bail!("{} is already on generation {n}", h.name),
        Some(n) => n,
        None => before.previous(current).with_context(|| {
            format!(
                "{} has no generation before {current} to roll back to",
                h.name
            )
        })?,
    };
    activate(
        ctx,
        h,
        &t,
        Goal::Generation(goal),
        &before,
        &declared,
        log,
        step,
        st,
    )
}

/// Builds the host's toplevel here, or on the build host and brings it back.
fn build(ctx: &Ctx, h: &Host, log: &Log) -> Result<String> {
    let attr = nix::host_attr(ctx.root, &h.name, ".system.build.toplevel");
    let Some(bh) = ctx.build_host.clone().or_else(|| h.build_host.clone()) else {
        let json = log.run_ok(&mut nix::build_json(&attr), None, "building the system")?;
        return nix::built_path(&json);
    };
    let opts = ctx.ssh.nix_sshopts(None);
    let mut eval = nix::command();
    eval.args(["eval", "--raw"]).arg(format!("{attr}.drvPath"));
    let drv = log.run_ok(&mut eval, None, "evaluating the derivation")?;
    let mut copy = nix::command();
    copy.env("NIX_SSHOPTS", &opts)
        .args(["copy", "--derivation", "--to"])
        .arg(format!("ssh://{bh}"))
        .arg(drv.trim());
    log.run_ok(&mut copy, None, "copying the derivation to the build host")?;
    let out = log.run_ok(
        &mut ctx.ssh.plain_command(
            &bh,
            &format!("nix-store --realise {}", ssh::quote(drv.trim())),
        ),
        None,
        "building on the build host",
    )?;
    let path = out
        .lines()
        .rev()
        .find(|l| l.starts_with("/nix/store/"))
        .context("the build host printed no store path")?
        .trim()
        .to_string();
    let back = log.run(&mut nix::copy_from(&bh, &opts, &path), None)?;
    if !back.status.success() {
        let text = String::from_utf8_lossy(&back.stderr);
        let hint = nix::signature_hint(&text)
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        bail!(
            "copying the system from the build host failed: {}{hint}",
            super::last_words(&back)
        );
    }
    Ok(path)
}

/// Enough free space in the target's /nix/store for the paths it lacks.
fn free_space(ctx: &Ctx, t: &Target, path: &str, f: &Facts, log: &Log) -> Result<()> {
    let json = log.run_ok(
        &mut nix::closure_info(path),
        None,
        "reading the closure size",
    )?;
    let sizes = nix::nar_sizes(&json)?;
    let list: String = sizes.iter().map(|(p, _)| format!("{p}\n")).collect();
    let out = log.run_ok(
        &mut ctx.ssh.command(t, remote::MISSING, &[]),
        Some(list.as_bytes()),
        "asking the target which store paths it lacks",
    )?;
    let missing: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let need: u64 = sizes
        .iter()
        .filter(|(p, _)| missing.contains(&p.as_str()))
        .map(|(_, s)| s)
        .sum();
    // Unpacked size is about the NAR size; keep 10 % and 100 MiB in hand.
    let need = need + need / 10 + 100 * 1024 * 1024;
    log.line(&format!(
        "free space: {} store path(s) to copy, need about {} MiB",
        missing.len(),
        need >> 20
    ));
    if let Some(free) = f.free_kib
        && free * 1024 < need
    {
        bail!(
            "preflight: {} has {} MiB free in /nix/store but the new system needs about {} MiB; free space on it (`nix-collect-garbage --delete-older-than 30d`) and deploy again",
            t.name,
            free >> 10,
            need >> 20
        );
    }
    Ok(())
}
