//! One host's deploy or rollback, step by step (the steps nixos-rebuild
//! performs, plus preflight, the lock-out guard and the watchdog):
//! evaluate → connect and probe → guard → build → free space → copy →
//! set profile and switch in a transient unit → confirm over a fresh SSH
//! connection → health check → record.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::remote::{self, Facts};
use super::{Log, Outcome, guard, unix_now};
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
    fn as_str(self) -> &'static str {
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
    pub health_timeout: u64,
    pub build_host: Option<String>,
    pub commit: Option<String>,
    /// Unique name of this run's state on the targets.
    pub token: String,
}

/// What a step function learns, for the summary even when it fails.
#[derive(Default)]
struct State {
    old: Option<u64>,
    new: Option<u64>,
}

/// The system to install: a store path (deploy) or a generation (rollback).
enum Goal {
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

fn declared(ctx: &Ctx, h: &Host) -> Result<Vec<String>> {
    Ok(containers::read(ctx.root, &h.name)?
        .into_iter()
        .map(|c| c.name)
        .collect())
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
    let before = probe(ctx.ssh, &t, &declared, log)?;
    st.old = before.profile_generation;
    preflight(h, &before, Some(&cfg.system), log)?;

    step("lock-out guard");
    let keys = guard::key_lines(&cfg);
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
        record(ctx, &t, &path, st.old, log)?;
        return Ok("unchanged (already running this system)".into());
    }

    step("checking free space");
    free_space(ctx, &t, &path, &before, log)?;

    step("copying");
    log.run_ok(
        &mut nix::copy_to(&t.destination(), &ctx.ssh.nix_sshopts(Some(t.port)), &path),
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
    let mut back = nix::command();
    back.env("NIX_SSHOPTS", &opts)
        .args(["copy", "--from"])
        .arg(format!("ssh://{bh}"))
        .arg(&path);
    log.run_ok(&mut back, None, "copying the system from the build host")?;
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

/// Outcome of waiting for the confirmation.
#[derive(Debug, PartialEq)]
enum Confirm {
    Confirmed,
    RolledBack,
    RollbackFailed,
    Unreachable,
    NotStarted,
}

#[allow(clippy::too_many_arguments)]
fn activate(
    ctx: &Ctx,
    h: &Host,
    t: &Target,
    goal: Goal,
    before: &Facts,
    declared: &[String],
    log: &Log,
    step: &dyn Fn(&str),
    st: &mut State,
) -> Result<String> {
    let ssh = ctx.ssh;
    let old = before.profile_generation.context("no system profile")?;
    let dir = format!("{}/{}", remote::STATE, ctx.token);
    let old_s = old.to_string();
    let timeout = ctx.confirm_timeout.to_string();
    let (how, target) = match &goal {
        Goal::Path(p) => ("set", p.clone()),
        Goal::Generation(g) => ("gen", g.to_string()),
    };

    step("activating");
    log.run_ok(
        &mut ssh.command(t, remote::INSTALL, &[&dir]),
        Some(remote::HELPER.as_bytes()),
        "installing the activation helper",
    )?;
    let out = log.run(
        &mut ssh.command(
            t,
            remote::ACTIVATE,
            &[&dir, ctx.action.as_str(), how, &target, &old_s, &timeout],
        ),
        None,
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    st.new = stdout
        .lines()
        .find_map(|l| l.strip_prefix("new_generation="))
        .and_then(|g| g.trim().parse().ok());
    match out.status.code() {
        Some(0) => {}
        Some(10) => bail!(
            "setting the system profile failed: {}",
            super::last_words(&out)
        ),
        Some(12) => {
            st.new = None;
            let now = probe(ssh, t, declared, log).ok();
            let back = now.as_ref().and_then(|f| f.profile_generation);
            bail!(
                "activation failed ({}); rolled back to generation {}{}",
                super::last_words(&out),
                old,
                if back == Some(old) {
                    ""
                } else {
                    " — but the profile is not there: check the host"
                }
            )
        }
        None | Some(255) => log.line(
            "the connection ended during activation; the transient unit goes on on the target, waiting for it",
        ),
        _ => {
            st.new = None;
            bail!(
                "activation did not start: {}; nothing was switched (the profile may point at the new generation: `cargo xtask status {}`)",
                super::last_words(&out),
                h.name
            )
        }
    }

    if ctx.action == Action::Boot {
        // No record: the host still runs what it ran (status says so).
        let f = probe(ssh, t, declared, log)?;
        st.new = f.profile_generation;
        return Ok(format!(
            "generation {} is the default at next boot",
            st.new.map(|n| n.to_string()).unwrap_or_default()
        ));
    }

    step("confirming over a new connection");
    let confirmed = confirm(ctx, t, &dir, log);
    if matches!(confirmed, Confirm::RolledBack) {
        st.new = None;
    }
    match confirmed {
        Confirm::Confirmed => {}
        Confirm::RolledBack => bail!(
            "no new SSH connection reached {} within {} s after activation: it rolled itself back to generation {old}",
            h.name,
            ctx.confirm_timeout
        ),
        Confirm::RollbackFailed => bail!(
            "no confirmation, and the automatic rollback to generation {old} FAILED on {}; see `journalctl -u pi-nixos-rollback-{}` there, or recover by hand (documentation/DEPLOYING.md)",
            h.name,
            ctx.token
        ),
        Confirm::NotStarted => bail!(
            "the activation on {} never started (the connection dropped before it); nothing was switched, check with `cargo xtask status {}`",
            h.name,
            h.name
        ),
        Confirm::Unreachable => bail!(
            "{} accepts no new SSH connection since activation; its watchdog rolls it back to generation {old} {} s after activation — check with `cargo xtask status {}`",
            h.name,
            ctx.confirm_timeout,
            h.name
        ),
    }

    step("health check");
    let after = match health(ctx, t, before, declared, log) {
        Ok(f) => f,
        Err(why) => {
            log.line(&format!("health check failed: {why:#}"));
            let mut cmd = ssh.command(t, remote::CALL, &["rollback", &dir, &old_s]);
            let rolled = log
                .run(&mut cmd, None)
                .map(|o| o.status.success())
                .unwrap_or(false);
            if rolled {
                st.new = None;
                bail!("health check failed: {why:#}; rolled back to generation {old}");
            }
            bail!(
                "health check failed: {why:#}; the rollback to generation {old} FAILED too: recover by hand (documentation/DEPLOYING.md)"
            );
        }
    };
    st.new = after.profile_generation;
    record(ctx, t, &after.profile_path, st.new, log)?;
    Ok(match goal {
        Goal::Path(_) => "switched".to_string(),
        Goal::Generation(_) => "rolled back".to_string(),
    })
}

/// Confirms over fresh connections until the watchdog's deadline (and a
/// little after, to learn what the target did).
fn confirm(ctx: &Ctx, t: &Target, dir: &str, log: &Log) -> Confirm {
    let start = Instant::now();
    let deadline = Duration::from_secs(ctx.confirm_timeout + 30);
    let pending_limit = Duration::from_secs(ctx.confirm_timeout + 900);
    let limit = Duration::from_secs(ctx.ssh.connect_timeout + 20);
    let mut logged_failure = false;
    loop {
        let mut cmd = ctx.ssh.fresh_command(t, remote::CALL, &["confirm", dir]);
        if !logged_failure {
            log.command(&cmd);
        }
        let out = ssh::output_within(&mut cmd, limit);
        let answer = match &out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Ok(o) => {
                if !logged_failure {
                    log.output(o);
                    log.line("no new connection yet; trying again every second");
                    logged_failure = true;
                }
                String::new()
            }
            Err(e) => {
                log.line(&format!("{e:#}"));
                String::new()
            }
        };
        if !answer.is_empty() {
            log.line(&format!(
                "confirm: {answer} after {:.1} s",
                super::secs(start)
            ));
        }
        match answer.as_str() {
            "confirmed" => return Confirm::Confirmed,
            "rolled-back" => return Confirm::RolledBack,
            "rollback-failed" => return Confirm::RollbackFailed,
            "pending" if start.elapsed() < pending_limit => {}
            "not-started" if start.elapsed() > Duration::from_secs(30) => {
                return Confirm::NotStarted;
            }
            "rolling-back" => {}
            _ if start.elapsed() > deadline => return Confirm::Unreachable,
            _ => {}
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// No unit failed that had not failed before; the running system is the
/// profile's; every declared container runs (waiting up to the health
/// timeout for them to start).
fn health(ctx: &Ctx, t: &Target, before: &Facts, declared: &[String], log: &Log) -> Result<Facts> {
    let start = Instant::now();
    loop {
        let f = probe(ctx.ssh, t, declared, log)?;
        if f.current != f.profile_path {
            bail!(
                "the running system ({}) is not the new profile ({})",
                f.current,
                f.profile_path
            );
        }
        let new_failed: Vec<&String> = f
            .failed
            .iter()
            .filter(|u| !before.failed.contains(u))
            .collect();
        if !new_failed.is_empty() {
            let names: Vec<&str> = new_failed.iter().map(|s| s.as_str()).collect();
            bail!(
                "unit(s) failed since activation: {} (see `journalctl -u {}` on the host)",
                names.join(", "),
                names[0]
            );
        }
        let missing: Vec<&String> = declared.iter().filter(|c| !f.running.contains(c)).collect();
        if missing.is_empty() {
            return Ok(f);
        }
        if start.elapsed() > Duration::from_secs(ctx.health_timeout) {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            bail!(
                "container(s) declared in {} not running after {} s: {}",
                containers::file(&t.name),
                ctx.health_timeout,
                names.join(", ")
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// What `status` compares with: the deployed path, commit, time and who.
fn record(ctx: &Ctx, t: &Target, path: &str, generation: Option<u64>, log: &Log) -> Result<()> {
    let by = format!(
        "{}@{}",
        std::env::var("USER").unwrap_or_else(|_| "?".into()),
        std::fs::read_to_string("/etc/hostname")
            .unwrap_or_default()
            .trim()
    );
    let text = format!(
        "path={path}\ngeneration={}\ncommit={}\ntime={}\nby={by}",
        generation.map(|g| g.to_string()).unwrap_or_default(),
        ctx.commit.as_deref().unwrap_or("unknown"),
        unix_now()
    );
    log.run_ok(
        &mut ctx.ssh.command(t, remote::WRITE_RECORD, &[&text]),
        None,
        "recording the deploy on the host",
    )?;
    Ok(())
}

/// Every command a deploy of `h` would run, for `--dry-run` (values known
/// only while deploying are shown as <placeholders>).
pub fn plan(ctx: &Ctx, h: &Host, rollback_to: Option<Option<u64>>) -> Vec<String> {
    let t = Target::of(h);
    let ssh = ctx.ssh;
    let dir = format!("{}/{}", remote::STATE, ctx.token);
    let show = |c: Command| format!("$ {}", ssh::show(&c));
    let mut lines = Vec::new();
    let declared = declared(ctx, h).unwrap_or_default().join(" ");
    let rolling = rollback_to.is_some();
    if !rolling {
        lines.push(show(nix::eval_apply(
            &nix::host_attr(ctx.root, &h.name, ""),
            &guard::apply_expr(&h.user),
        )));
    }
    lines.push(show(ssh.master_command(&t)));
    lines.push(show(ssh.command(&t, "<PROBE>", &[&declared])));
    let (how, target) = if let Some(to) = rollback_to {
        (
            "gen",
            to.map(|n| n.to_string())
                .unwrap_or_else(|| "<previous-generation>".into()),
        )
    } else {
        lines.push(
            "# lock-out guard: ssh-keygen -lf <authorized keys of the new configuration>".into(),
        );
        let attr = nix::host_attr(ctx.root, &h.name, ".system.build.toplevel");
        match ctx.build_host.clone().or_else(|| h.build_host.clone()) {
            None => lines.push(show(nix::build_json(&attr))),
            Some(bh) => {
                lines.push(format!("$ nix eval --raw {attr}.drvPath"));
                lines.push(format!("$ nix copy --derivation --to ssh://{bh} <drv>"));
                lines.push(show(ssh.plain_command(&bh, "nix-store --realise <drv>")));
                lines.push(format!("$ nix copy --from ssh://{bh} <toplevel>"));
            }
        }
        lines.push(show(nix::closure_info("<toplevel>")));
        lines.push(format!(
            "{}  < <closure paths>",
            show(ssh.command(&t, remote::MISSING, &[]))
        ));
        lines.push(show(nix::copy_to(
            &t.destination(),
            &ssh.nix_sshopts(Some(t.port)),
            "<toplevel>",
        )));
        ("set", "<toplevel>".to_string())
    };
    lines.push(format!(
        "{}  < <HELPER>",
        show(ssh.command(&t, remote::INSTALL, &[&dir]))
    ));
    lines.push(show(ssh.command(
        &t,
        remote::ACTIVATE,
        &[
            &dir,
            ctx.action.as_str(),
            how,
            &target,
            "<current-generation>",
            &ctx.confirm_timeout.to_string(),
        ],
    )));
    if ctx.action == Action::Switch {
        lines.push(format!(
            "{}  # every second until confirmed",
            show(ssh.fresh_command(&t, remote::CALL, &["confirm", &dir]))
        ));
        lines.push(show(ssh.command(&t, "<PROBE>", &[&declared])));
    }
    lines.push(show(ssh.command(&t, remote::WRITE_RECORD, &["<record>"])));
    lines.push(show({
        let mut c = Command::new("ssh");
        c.args(["-O", "exit"]).arg(t.destination());
        c
    }));
    lines
}
