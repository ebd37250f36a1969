//! `cargo xtask completions <shell>`: shell completions on stdout.

use anyhow::Result;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// bash, zsh or fish
    shell: Shell,
}

pub fn run(args: Args, mut cli: clap::Command) -> Result<()> {
    clap_complete::generate(args.shell, &mut cli, "cargo-xtask", &mut std::io::stdout());
    Ok(())
}
