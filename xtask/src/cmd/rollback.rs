//! `cargo xtask rollback`: back to the previous generation (or `--to N`),
//! with the same preflight, watchdog, health check and summary as deploy.

use std::path::Path;

use anyhow::Result;

use crate::deploy;
use crate::deploy::host::{self, Action, Ctx};
use crate::ssh::Ssh;

#[derive(clap::Args)]
pub struct Args {
    /// Hosts to roll back
    hosts: Vec<String>,
    /// Roll back every host
    #[arg(long, conflicts_with = "hosts")]
    all: bool,
    /// Roll back the hosts with this tag (repeat for more tags)
    #[arg(long, value_name = "T")]
    tag: Vec<String>,
    /// Generation to go to [default: the one before the current]
    #[arg(long, value_name = "N")]
    to: Option<u64>,
    /// Hosts rolled back at the same time
    #[arg(long, short, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    #[command(flatten)]
    timeouts: super::deploy::Timeouts,
    /// Print every command per host and run none
    #[arg(long)]
    dry_run: bool,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    args.timeouts.check()?;
    let hosts = deploy::load_selected(root, &args.hosts, args.all, &args.tag)?;
    let run = deploy::run_id("rollback");
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let ssh = Ssh::new(args.timeouts.connect_timeout)?.with_git_keys(root, &names)?;
    let ctx = Ctx {
        root,
        ssh: &ssh,
        action: Action::Switch,
        confirm_timeout: args.timeouts.confirm_timeout,
        activation_timeout: args.timeouts.activation_timeout,
        health_timeout: args.timeouts.health_timeout,
        build_host: None,
        commit: None,
        token: run.clone(),
    };
    if args.dry_run {
        deploy::print_plans(&ctx, &hosts, Some(args.to));
        return Ok(());
    }
    deploy::run_hosts(
        root,
        &run,
        "rollback",
        &hosts,
        args.jobs.into(),
        false,
        &|h, log, step| host::rollback(&ctx, h, args.to, log, step),
    )
}
