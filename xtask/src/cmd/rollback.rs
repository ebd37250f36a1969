//! `cargo xtask rollback`: back to the previous generation (or `--to N`),
//! with the same preflight, watchdog, health check and summary as deploy.

use std::path::Path;

use anyhow::Result;

use crate::deploy;
use crate::deploy::host::{self, Action, Ctx};
use crate::inventory::Fleet;
use crate::ssh::{self, Ssh};

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
    /// Seconds the Pi waits for a confirmation over a new SSH connection before going back again
    #[arg(long, value_name = "S", default_value_t = 60)]
    confirm_timeout: u64,
    /// Seconds to wait for declared containers to run
    #[arg(long, value_name = "S", default_value_t = 60)]
    health_timeout: u64,
    /// Seconds to wait for a Pi to answer SSH
    #[arg(long, value_name = "S", default_value_t = ssh::CONNECT_TIMEOUT)]
    connect_timeout: u64,
    /// Print every command per host and run none
    #[arg(long)]
    dry_run: bool,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let fleet = Fleet::load(root)?;
    let hosts = deploy::select(&fleet, &args.hosts, false, &[])?;
    let ssh = Ssh::new(args.connect_timeout)?;
    let ctx = Ctx {
        root,
        ssh: &ssh,
        action: Action::Switch,
        confirm_timeout: args.confirm_timeout.max(5),
        health_timeout: args.health_timeout,
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
