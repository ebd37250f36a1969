//! `cargo xtask rollback`: back to the previous generation (or `--to N`),
//! with the same preflight, watchdog, health check and summary as deploy.

use std::path::Path;

use anyhow::Result;

use crate::deploy::host::{self, Action, Ctx};
use crate::deploy::{self, Log, Progress};
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
        for h in &hosts {
            println!("# {} ({}:{})", h.name, h.destination(), h.port);
            for line in host::plan(&ctx, h, Some(args.to)) {
                println!("{line}");
            }
            println!();
        }
        super::deploy::print_scripts();
        return Ok(());
    }
    let logs = deploy::log_dir(root, "rollback")?;
    let tty = deploy::tty() && hosts.len() > 1;
    let progress = Progress::new(hosts.iter().map(|h| h.name.clone()).collect(), tty);
    let outcomes = deploy::parallel(
        hosts.len(),
        args.jobs,
        false,
        &|i| {
            let h = &hosts[i];
            let log = match Log::new(&logs, &h.name, !tty) {
                Ok(l) => l,
                Err(e) => {
                    return deploy::Outcome {
                        ok: false,
                        result: format!("{e:#}"),
                        old: None,
                        new: None,
                        duration: Default::default(),
                    };
                }
            };
            let step = |s: &str| {
                log.line(&format!("== {s}"));
                progress.set(i, s);
            };
            let o = host::rollback(&ctx, h, args.to, &log, &step);
            log.line(&format!("== result: {}", o.result));
            progress.set(i, if o.ok { "done" } else { "FAILED" });
            o
        },
        &|o| !o.ok,
    );
    deploy::summary("rollback", &hosts, &outcomes, &logs)
}
