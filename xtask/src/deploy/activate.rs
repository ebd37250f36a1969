//! Activation and what follows it: install the helper, set the profile
//! and switch in a transient unit (watchdog armed before), confirm over a
//! fresh SSH connection, health check, record.
//!
//! Bound on every wait: the Pi decides (confirmed or rolled back) at most
//! `activation timeout + confirm timeout` after the activation starts; the
//! workstation asks until then plus [`GRACE`] (a rollback's own switch and
//! a fresh connection), never longer.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::host::{Action, Ctx, Goal, State, probe};
use super::remote::{self, Facts};
use super::{Log, last_words, unix_now};
use crate::containers;
use crate::inventory::Host;
use crate::ssh::{self, Target};

/// Seconds the workstation keeps asking after the Pi's last deadline.
pub const GRACE: u64 = 60;

/// What the Pi says about an activation.
#[derive(Debug, PartialEq)]
pub enum Confirm {
    Confirmed,
    RolledBack(String),
    RollbackFailed(String),
    /// No answer, or still undecided, when the bound ran out.
    Unknown(String),
    NotStarted,
}

/// Parses the answer of `run confirm`: the state, then the reason.
pub fn parse_confirm(answer: &str) -> Option<Confirm> {
    let mut lines = answer.lines().map(str::trim);
    let state = lines.next()?;
    let reason = lines.next().unwrap_or("").to_string();
    Some(match state {
        "confirmed" => Confirm::Confirmed,
        "rolled-back" => Confirm::RolledBack(reason),
        "rollback-failed" => Confirm::RollbackFailed(reason),
        "not-started" => Confirm::NotStarted,
        _ => return None,
    })
}

#[allow(clippy::too_many_arguments)]
pub fn activate(
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
    let start = Instant::now();
    let out = log.run(
        &mut ssh.command(
            t,
            remote::ACTIVATE,
            &[
                &dir,
                ctx.action.as_str(),
                how,
                &target,
                &old_s,
                &ctx.confirm_timeout.to_string(),
                &ctx.activation_timeout.to_string(),
            ],
        ),
        None,
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let new = stdout
        .lines()
        .find_map(|l| l.strip_prefix("new_generation="))
        .and_then(|g| g.trim().parse().ok());
    let armed = stdout.lines().any(|l| l == "armed=1");
    match out.status.code() {
        Some(0) => st.new = new,
        Some(10) => bail!("setting the system profile failed: {}", last_words(&out)),
        Some(12) if ctx.action == Action::Boot => bail!(
            "switch-to-configuration boot failed ({}); the profile is back on generation {old}",
            last_words(&out)
        ),
        Some(14) => bail!(
            "the watchdog could not be armed on {}, so nothing was activated: {}",
            h.name,
            last_words(&out)
        ),
        // 12: failed and rolled back; others: the connection ended or the
        // activation was stopped: the Pi's own record says what happened.
        Some(12) | None | Some(255) | Some(_) if ctx.action == Action::Switch && armed => {
            log.line("the activation did not end normally; asking the host what happened");
            st.unknown = true;
            st.new = new;
        }
        None | Some(255) if ctx.action == Action::Boot => {
            st.unknown = true;
            bail!(
                "the connection to {} ended during `switch-to-configuration boot` ({}); check which generation boots next with `cargo xtask status {}`",
                h.name,
                last_words(&out),
                h.name
            );
        }
        None | Some(255) => {
            st.unknown = true;
            st.new = new;
            bail!(
                "the connection to {} ended before the watchdog was armed ({}); the profile may point at generation {} and nothing rolls it back: check with `cargo xtask status {}`",
                h.name,
                last_words(&out),
                new.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                h.name
            );
        }
        _ => bail!(
            "activation did not start: {}; nothing was switched (the profile may point at the new generation: `cargo xtask status {}`)",
            last_words(&out),
            h.name
        ),
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
    let bound = Duration::from_secs(ctx.activation_timeout + ctx.confirm_timeout + GRACE);
    match confirm(ctx, t, &dir, log, start, bound) {
        Confirm::Confirmed => st.unknown = false,
        Confirm::RolledBack(why) => {
            st.new = None;
            st.unknown = false;
            bail!("{why}; {} rolled itself back to generation {old}", h.name)
        }
        Confirm::RollbackFailed(why) => bail!(
            "{why}, and the automatic rollback to generation {old} FAILED on {}; see `journalctl -u 'pi-nixos-*{}*'` there, or recover by hand (documentation/DEPLOYING.md)",
            h.name,
            ctx.token
        ),
        Confirm::NotStarted => {
            st.new = None;
            st.unknown = false;
            bail!(
                "the activation on {} never started (the connection dropped before it); nothing was switched, check with `cargo xtask status {}`",
                h.name,
                h.name
            )
        }
        Confirm::Unknown(last) => bail!(
            "{} gave no outcome within {} s of the activation's start ({last}); its watchdog, armed before activation, rolls it back unless confirmed (not after a reboot or power loss, which boots the profile's generation) — check with `cargo xtask status {}`",
            h.name,
            bound.as_secs(),
            h.name
        ),
    }

    step("health check");
    let after = match health(ctx, t, before, declared, &goal, log) {
        Ok(f) => f,
        Err(why) => {
            log.line(&format!("health check failed: {why:#}"));
            let reason = format!("health check failed: {why:#}");
            let mut cmd = ssh.command(t, remote::CALL, &["rollback", &dir, &old_s, &reason]);
            let rolled = log
                .run(&mut cmd, None)
                .map(|o| o.status.success())
                .unwrap_or(false);
            if rolled {
                st.new = None;
                bail!("{reason}; rolled back to generation {old}");
            }
            bail!(
                "{reason}; the rollback to generation {old} FAILED too: recover by hand (documentation/DEPLOYING.md)"
            );
        }
    };
    st.new = after.profile_generation;
    let commit = match goal {
        Goal::Path(_) => ctx.commit.clone().unwrap_or_else(|| "unknown".into()),
        Goal::Generation(_) => String::new(),
    };
    record(ctx, t, &after.profile_path, st.new, &commit, log)?;
    Ok(match goal {
        Goal::Path(_) => "switched".to_string(),
        Goal::Generation(_) => "rolled back".to_string(),
    })
}

/// Asks over fresh connections, every second, until the Pi has decided or
/// `bound` (from the activation's start) has passed.
fn confirm(
    ctx: &Ctx,
    t: &Target,
    dir: &str,
    log: &Log,
    start: Instant,
    bound: Duration,
) -> Confirm {
    let asked = Instant::now();
    let limit = Duration::from_secs(ctx.ssh.connect_timeout + 20);
    let mut logged_failure = false;
    let mut last = String::from("no answer");
    loop {
        let mut cmd = ctx.ssh.fresh_command(t, remote::CALL, &["confirm", dir]);
        if !logged_failure {
            log.command(&cmd);
        }
        match ssh::output_within(&mut cmd, limit) {
            Ok(o) if o.status.success() => {
                let answer = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if answer != last {
                    log.line(&format!(
                        "confirm: {answer} after {:.1} s",
                        super::secs(asked)
                    ));
                }
                if let Some(c) = parse_confirm(&answer)
                    && (c != Confirm::NotStarted || asked.elapsed() > Duration::from_secs(30))
                {
                    return c;
                }
                last = answer;
            }
            Ok(o) => {
                if !logged_failure {
                    log.output(&o);
                    log.line("no new connection yet; trying again every second");
                    logged_failure = true;
                }
                last = last_words(&o);
            }
            Err(e) => {
                log.line(&format!("{e:#}"));
                last = format!("{e:#}");
            }
        }
        if start.elapsed() > bound {
            return Confirm::Unknown(last);
        }
        // Every second while a confirmation is due; past the confirm timeout
        // (a long activation after a cut connection) every 3 s.
        let pause = if asked.elapsed() < Duration::from_secs(ctx.confirm_timeout) {
            1
        } else {
            3
        };
        std::thread::sleep(Duration::from_secs(pause));
    }
}

/// No unit failed that had not failed before; the running system is the
/// profile's and the one this run installed; every declared container runs
/// (waiting up to the health timeout for them to start).
fn health(
    ctx: &Ctx,
    t: &Target,
    before: &Facts,
    declared: &[String],
    goal: &Goal,
    log: &Log,
) -> Result<Facts> {
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
        match goal {
            Goal::Path(p) if *p != f.current => bail!(
                "the host runs {} instead of {p}, which this run installed: something else changed it",
                f.current
            ),
            Goal::Generation(g) if f.profile_generation != Some(*g) => bail!(
                "the profile is on generation {} instead of {g}, which this run installed: something else changed it",
                f.profile_generation
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into())
            ),
            _ => {}
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
/// An empty `commit` (a rollback) is looked up in the host's history.
pub fn record(
    ctx: &Ctx,
    t: &Target,
    path: &str,
    generation: Option<u64>,
    commit: &str,
    log: &Log,
) -> Result<()> {
    log.run_ok(
        &mut ctx.ssh.command(
            t,
            remote::WRITE_RECORD,
            &[
                path,
                &generation.map(|g| g.to_string()).unwrap_or_default(),
                commit,
                &unix_now().to_string(),
                &super::lock::by(),
            ],
        ),
        None,
        "recording the deploy on the host",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirm_answers() {
        assert_eq!(parse_confirm("confirmed"), Some(Confirm::Confirmed));
        assert_eq!(
            parse_confirm("rolled-back\nactivation did not finish within 5s"),
            Some(Confirm::RolledBack(
                "activation did not finish within 5s".into()
            ))
        );
        assert_eq!(parse_confirm("activating"), None);
        assert_eq!(parse_confirm("rolling-back\nx"), None);
    }
}
