//! `cargo xtask completions <shell>`: shell completions on stdout.
//!
//! `cargo xtask` is an alias cargo expands itself: there is no
//! `cargo-xtask` program for a shell to complete. So the script is clap's
//! completion of a `cargo-xtask` command plus a hook on cargo's own
//! completion (`hook.<shell>`): the words after `cargo xtask` are handed to
//! the former, any other `cargo …` to the cargo completion the user had.

use anyhow::{Context, Result};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Args)]
#[command(after_long_help = INSTALL)]
pub struct Args {
    /// bash, zsh or fish
    shell: Shell,
}

/// How to install them, shown by `--help` (and the README).
const INSTALL: &str = "Install (once; then open a new shell):
  bash:  cargo xtask completions bash > ~/.cargo-xtask.bash
         echo '. ~/.cargo-xtask.bash' >> ~/.bashrc
  zsh:   cargo xtask completions zsh > ~/.cargo-xtask.zsh
         echo '. ~/.cargo-xtask.zsh' >> ~/.zshrc   (after compinit)
  fish:  cargo xtask completions fish > ~/.config/fish/conf.d/cargo-xtask.fish
`cargo xtask <TAB>` then completes subcommands and options; other `cargo` words
keep the cargo completion you had (rustup's, bash-completion's or fish's).";

pub fn run(args: Args, cli: clap::Command) -> Result<()> {
    // print!: into a closed pipe it ends quietly, as every command's output (brokenpipe.rs).
    print!("{}", script(args.shell, cli)?);
    Ok(())
}

/// The whole script for `shell`.
pub fn script(shell: Shell, cli: clap::Command) -> Result<String> {
    // The name of the command clap completes, which the hook hands the
    // words after `cargo xtask` to. One word: with a space (`cargo xtask`)
    // or a dash, clap's bash script names its cases in two ways, and only
    // the first level of subcommands completes.
    let (generator, name, hook) = match shell {
        Shell::Bash => (
            clap_complete::Shell::Bash,
            "cargo_xtask",
            include_str!("completions/hook.bash"),
        ),
        Shell::Zsh => (
            clap_complete::Shell::Zsh,
            "cargo-xtask",
            include_str!("completions/hook.zsh"),
        ),
        Shell::Fish => (
            clap_complete::Shell::Fish,
            "cargo-xtask",
            include_str!("completions/hook.fish"),
        ),
    };
    let mut cli = cli.bin_name(name);
    let mut buf = Vec::new();
    clap_complete::generate(generator, &mut cli, name, &mut buf);
    let mut generated =
        String::from_utf8(buf).context("clap wrote a completion that is not UTF-8")?;
    if let Shell::Bash = shell {
        // Drop clap's `complete … cargo_xtask`: no such command exists.
        if let Some(at) = generated.rfind("\nif [[ \"${BASH_VERSINFO[0]}\" -eq 4") {
            generated.truncate(at + 1);
        }
    }
    Ok(format!("{generated}{hook}"))
}
