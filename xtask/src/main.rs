//! `cargo xtask`: the fleet's command line. This file only parses and
//! dispatches; each subcommand lives in `cmd/<name>.rs` (in the library,
//! `lib.rs`). What needs age or HTTPS runs in `xtask-crypto` instead, built
//! on first use (`crypto_tool.rs`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use xtask::{brokenpipe, cmd, crypto_tool, interrupt, nix, repo};

/// Define, build, flash and deploy a fleet of Raspberry Pis running NixOS.
#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    version,
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
    /// Make this x86_64 workstation build aarch64 with Nix under QEMU, and prove it
    SetupBinfmt(cmd::setup_binfmt::Args),
    /// Add a Pi: its inventory entry and hosts/<name>/default.nix
    NewHost(cmd::new_host::Args),
    /// Make a host's SSH host key here (or adopt a Pi's): public half in Git, private kept here
    Identity(cmd::identity::Args),
    /// Secrets for the Pis, age-encrypted to their host keys and the admin keys: set, show, list, rm, rekey
    Secret(cmd::secret::Args),
    /// Set hosts' Wi-Fi password as their age secret wifi-<host> (asked twice); a deploy brings it to the Pi
    Wifi(cmd::wifi::Args),
    /// Add an SSH public key to the admin keys every Pi accepts
    AddKey(cmd::add_key::Args),
    /// Find everything wrong with the fleet definition, with file:line and the fix
    Check(cmd::check::Args),
    /// Pin every container image to its digest (linux/arm64 checked), or update the pins
    Pin(cmd::pin::Args),
    /// Show the fleet: every host with its model, address, SSH user and tags
    List(cmd::list::Args),
    /// Build a host's SD card image into out/<host>/<host>.img.zst
    Sd(cmd::sd::Args),
    /// Write an SD card from a host's image or an image file: safe, fast, verified
    Flash(cmd::flash::Args),
    /// Make the block map (bmaptool format) of a raw SD image from its filesystems
    Bmap(cmd::bmap::Args),
    /// Build, copy and activate hosts' systems, with automatic rollback
    Deploy(cmd::deploy::Args),
    /// Go back to a host's previous (or a given) generation, safely
    Rollback(cmd::rollback::Args),
    /// Show every host's state: reachable, version, generation, in sync with Git
    Status(cmd::status::Args),
    /// Journal entries of many hosts, merged in time order; -f follows them all
    Logs(cmd::logs::Args),
    /// Run a command on many hosts in parallel, with a table of exit codes
    Exec(cmd::exec::Args),
    /// Log into a host (or run one command) with the fleet's SSH settings
    Ssh(cmd::ssh::Args),
    /// Benchmarks: flash (against zstd|dd and bmaptool, memory and card speed), sd (native against emulated), deploy and fleet (fake Pis)
    Bench(cmd::bench::Args),
    /// Print shell completions for bash, zsh or fish
    Completions(cmd::completions::Args),
    /// What the GitHub workflows read: the host matrix, the app images, the binary cache
    Ci(cmd::ci::Args),
}

fn main() {
    brokenpipe::install();
    if let Some(version) = cmd::version::requested() {
        println!("{version}");
        return;
    }
    let cli = Cli::parse();
    let result = dispatch(cli);
    interrupt::settle();
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    nix::official_on_path();
    let root = || repo::root(cli.flake.as_deref());
    match cli.command {
        Command::SetupBinfmt(args) => cmd::setup_binfmt::run(&root()?, args),
        Command::NewHost(args) => cmd::new_host::run(&root()?, args),
        Command::Identity(args) => cmd::identity::run(&root()?, args),
        Command::Secret(args) => {
            crypto_tool::finish(cmd::secret::run(&root()?, args, None), "the secrets tool")
        }
        Command::Wifi(args) => {
            crypto_tool::finish(cmd::wifi::run(&root()?, args, None), "the secrets tool")
        }
        Command::AddKey(args) => cmd::add_key::run(&root()?, args),
        Command::Check(args) => cmd::check::run(&root()?, args),
        Command::List(args) => cmd::list::run(&root()?, args),
        Command::Pin(args) => {
            crypto_tool::finish(cmd::pin::run(&root()?, args, None), "the registry client")
        }
        Command::Sd(args) => cmd::sd::run(&root()?, args),
        Command::Flash(args) => cmd::flash::run(&root()?, args),
        Command::Bmap(args) => cmd::bmap::run(args),
        Command::Deploy(args) => cmd::deploy::run(&root()?, args),
        Command::Rollback(args) => cmd::rollback::run(&root()?, args),
        Command::Status(args) => cmd::status::run(&root()?, args),
        Command::Logs(args) => cmd::logs::run(&root()?, args),
        Command::Exec(args) => cmd::exec::run(&root()?, args),
        Command::Ssh(args) => cmd::ssh::run(&root()?, args),
        Command::Bench(args) => cmd::bench::run(&root()?, args),
        Command::Completions(args) => cmd::completions::run(args, Cli::command()),
        Command::Ci(args) => cmd::ci::run(&root()?, args),
    }
}
