//! `xtask-crypto`: the xtask's commands that need the `age` crate or an
//! HTTPS client, run by `cargo xtask secret …` and `cargo xtask pin` in their
//! place (built on first use, see `xtask/src/crypto_tool.rs`). It parses the
//! same command line as `cargo xtask` and only dispatches; the commands live
//! in the xtask library, this crate adds the crypto: `age.rs` and the
//! registry client (`registry/`).

mod age;
mod registry;

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use xtask::crypto_tool::{NAME, Outcome};
use xtask::registry::Resolve;
use xtask::{brokenpipe, cmd, interrupt, repo};

/// The xtask's commands that need age or HTTPS; run them as `cargo xtask …`.
#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true
)]
struct Cli {
    /// The fleet repository to act on [default: this checkout]
    #[arg(long, global = true, value_name = "DIR")]
    flake: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Secrets for the Pis, age-encrypted to their host keys and the admin keys
    Secret(cmd::secret::Args),
    /// Set the Wi-Fi password of hosts (their age secrets wifi-<host>)
    Wifi(cmd::wifi::Args),
    /// Pin every container image to its digest (linux/arm64 checked), or update the pins
    Pin(cmd::pin::Args),
}

fn main() {
    brokenpipe::install();
    let cli = Cli::parse();
    let result = dispatch(cli);
    interrupt::settle();
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let root = repo::root(cli.flake.as_deref())?;
    let connect = || Ok(Box::new(registry::Client::new()?) as Box<dyn Resolve>);
    let outcome = match cli.command {
        Command::Secret(args) => cmd::secret::run(&root, args, Some(&age::Age)),
        Command::Wifi(args) => cmd::wifi::run(&root, args, Some(&age::Age)),
        Command::Pin(args) => cmd::pin::run(&root, args, Some(&connect)),
    };
    match outcome? {
        Outcome::Done => Ok(()),
        Outcome::HandOver => bail!("{NAME} was asked to hand over to itself: report this as a bug"),
    }
}
