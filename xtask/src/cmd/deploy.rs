//! `cargo xtask deploy`: build, copy and activate hosts' systems in
//! parallel, with preflight, the lock-out guard, an automatic rollback
//! unless confirmed over a fresh SSH connection, and a health check.

use std::path::Path;

use anyhow::{Result, bail};

use crate::deploy;
use crate::deploy::host::{self, Action, Ctx};
use crate::ssh::{self, Ssh};

#[derive(clap::Args)]
pub struct Args {
    /// Hosts to deploy (names from hosts/fleet.toml)
    hosts: Vec<String>,
    /// Deploy every host
    #[arg(long, conflicts_with = "hosts")]
    all: bool,
    /// Deploy the hosts with this tag (repeat for more tags)
    #[arg(long, value_name = "T")]
    tag: Vec<String>,
    /// Hosts deployed at the same time
    #[arg(long, short, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// Only make the new system the default at next boot (no activation now)
    #[arg(long)]
    boot: bool,
    /// Build on this aarch64 machine (SSH destination) instead of here
    #[arg(long, value_name = "SSH")]
    build_host: Option<String>,
    #[command(flatten)]
    timeouts: Timeouts,
    /// Start no further host after the first failure
    #[arg(long)]
    fail_fast: bool,
    /// Print every command per host and run none
    #[arg(long)]
    dry_run: bool,
    /// Ask Nix what each host's build would build here (under QEMU) and fetch, print it and stop; fails when a build would be refused
    #[arg(long, conflicts_with = "dry_run")]
    plan: bool,
    /// Build heavy derivations (a kernel, a compiler…) under QEMU even though it takes hours to days
    #[arg(long)]
    allow_slow_build: bool,
}

/// The waits deploy and rollback share.
#[derive(clap::Args)]
pub struct Timeouts {
    /// Seconds the Pi waits for a confirmation over a new SSH connection before rolling back
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub confirm_timeout: u64,
    /// Seconds an activation may take; a longer one is stopped and rolled back
    #[arg(long, value_name = "S", default_value_t = 600)]
    pub activation_timeout: u64,
    /// Seconds to wait for declared containers to run after activation
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub health_timeout: u64,
    /// Seconds to wait for a Pi to answer SSH
    #[arg(long, value_name = "S", default_value_t = ssh::CONNECT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
}

impl Timeouts {
    pub fn check(&self) -> Result<()> {
        if self.confirm_timeout < 5 {
            bail!("--confirm-timeout must be at least 5 seconds, so a working Pi can be confirmed");
        }
        if self.activation_timeout < 5 {
            bail!(
                "--activation-timeout must be at least 5 seconds, so a working activation can finish"
            );
        }
        Ok(())
    }
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    args.timeouts.check()?;
    if let Some(note) = crate::git::uncommitted_note(root, "the hosts will run")? {
        eprintln!("{note}");
    }
    let hosts = deploy::load_selected(root, &args.hosts, args.all, &args.tag)?;
    if args.plan {
        return crate::plan::hosts(
            root,
            &hosts,
            args.build_host.as_deref(),
            args.allow_slow_build,
        );
    }
    let run = deploy::run_id("deploy");
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let ssh = Ssh::new(args.timeouts.connect_timeout)?.with_git_keys(root, &names)?;
    let ctx = Ctx {
        root,
        ssh: &ssh,
        action: if args.boot {
            Action::Boot
        } else {
            Action::Switch
        },
        confirm_timeout: args.timeouts.confirm_timeout,
        activation_timeout: args.timeouts.activation_timeout,
        health_timeout: args.timeouts.health_timeout,
        build_host: args.build_host,
        commit: deploy::git_commit(root),
        token: run.clone(),
    };
    if args.dry_run {
        deploy::print_plans(&ctx, &hosts, None);
        return Ok(());
    }
    crate::nix::version::require()?;
    crate::plan::check_hosts(
        root,
        &hosts,
        ctx.build_host.as_deref(),
        args.allow_slow_build,
    )?;
    deploy::run_hosts(
        root,
        &run,
        "deploy",
        &hosts,
        args.jobs.into(),
        args.fail_fast,
        &|h, log, step| host::deploy(&ctx, h, log, step),
    )
}
