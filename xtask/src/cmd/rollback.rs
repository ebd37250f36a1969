//! `cargo xtask rollback`: back to the previous generation (or `--to N`),
//! with the same preflight, watchdog, health check and summary as deploy.

use std::path::Path;

use anyhow::Result;

use crate::deploy;
use crate::deploy::host::{self, Action, Ctx};
use crate::inventory::Fleet;
use crate::ssh::Ssh;

#[derive(clap::Args)]
pub struct Args {
    /// Hosts to roll back
    #[arg(required = true)]
    hosts: Vec<String>,
    /// Generation to go to [default: the one before the current]
    #[arg(long, value_name = "N")]
    to: Option<u64>,
    /// Hosts rolled back at the same time
    #[arg(long, short, value_name = "N", default_value_t = 4)]
    jobs: usize,
    #[command(flatten)]
    timeouts: super::deploy::Timeouts,
    /// Print every command per host and run none
    #[arg(long)]
    dry_run: bool,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let fleet = Fleet::load(root)?;
    let hosts = deploy::select(&fleet, &args.hosts, false, &[])?;
    args.timeouts.check()?;
    let ssh = Ssh::new(args.timeouts.connect_timeout)?;
    let ctx = Ctx {
        root,
        ssh: &ssh,
        action: Action::Switch,
        confirm_timeout: args.timeouts.confirm_timeout,
        health_timeout: args.timeouts.health_timeout,
        build_host: None,
        commit: None,
        token: format!("rollback-{}-{}", deploy::unix_now(), std::process::id()),
    };
    if args.dry_run {
        deploy::print_plans(&ctx, &hosts, Some(args.to));
        return Ok(());
    }
    deploy::run_hosts(
        root,
        "rollback",
        &hosts,
        args.jobs,
        false,
        &|h, log, step| host::rollback(&ctx, h, args.to, log, step),
    )
}
