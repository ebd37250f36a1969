//! `cargo xtask setup-binfmt`: make this x86_64 workstation build
//! aarch64-linux with Nix under QEMU, and prove it. `--check` only looks.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Result, bail};
use xshell::Shell;

use crate::binfmt::{self, facts, fix};

#[derive(clap::Args)]
pub struct Args {
    /// Only check: print the checklist with the fix for each problem; exit 0 only if aarch64 builds work
    #[arg(long, conflicts_with_all = ["yes", "dry_run", "install_nix"])]
    check: bool,
    /// With --check: skip building the aarch64 Nix derivation (faster, proves less)
    #[arg(long, requires = "check")]
    no_nix_probe: bool,
    /// Apply the fixes without asking
    #[arg(long, short)]
    yes: bool,
    /// Print what would be done, change nothing
    #[arg(long)]
    dry_run: bool,
    /// When Nix is missing or older than 2.18 (what nixpkgs 26.05 needs), install one that is new enough: the distribution's nix-bin where its version is, else the official multi-user installer (replacing the distribution's old nix-bin)
    #[arg(long)]
    install_nix: bool,
}

pub fn run(_root: &Path, args: Args) -> Result<()> {
    let sh = Shell::new()?;
    if args.check {
        return check(&sh, !args.no_nix_probe, false);
    }
    let facts = facts::gather(&sh, false);
    let before = binfmt::evaluate(&facts);
    for c in before.iter().filter(|c| c.status != binfmt::Status::Ok) {
        println!("{c}");
    }
    let root = facts.user.root;
    let actions = fix::plan(&facts, args.install_nix);
    let nix_needed = facts.nix_source.is_some();
    if nix_needed && !args.install_nix {
        println!(
            "Nix is missing or too old for nixpkgs 26.05: rerun with --install-nix to install one that is new enough (documentation/getting nix ready.md)"
        );
    }
    if actions.is_empty() {
        println!("nothing to change");
    } else {
        print_plan(&actions, root);
        if nix_needed && args.install_nix && actions.iter().any(|a| a.installs) {
            println!("- then Nix's settings for aarch64, planned once it is installed");
        }
        if args.dry_run {
            println!("dry run: nothing was changed");
            return Ok(());
        }
        if !root && !crate::exec::have("sudo") {
            bail!("these changes need root and sudo is not installed: run this command as root");
        }
        if !args.yes && !confirm()? {
            bail!("nothing was changed (answer y, or pass --yes)");
        }
        let installs = actions.iter().take_while(|a| a.installs).count();
        if installs > 0 {
            // Packages change the machine (their scripts may register QEMU):
            // install them, then plan the rest again from what is there now.
            let (first, _) = actions.split_at(installs);
            fix::apply(&sh, root, first)?;
            official_nix_on_path()?;
            let facts = facts::gather(&sh, false);
            let rest: Vec<_> = fix::plan(&facts, false)
                .into_iter()
                .filter(|a| !a.installs)
                .collect();
            fix::apply(&sh, root, &rest)?;
        } else {
            fix::apply(&sh, root, &actions)?;
        }
    }
    println!("checking again:");
    check(&sh, true, true)
}

/// After the official installer: its `nix` is on PATH for new login shells
/// only; put it on this process's PATH so that the rest of the setup uses it.
fn official_nix_on_path() -> Result<()> {
    if crate::nix::official_on_path() {
        println!(
            "Nix is installed in {}: the next `cargo xtask` commands find it; open a new terminal for your shell to find it too",
            crate::nix::OFFICIAL_BIN
        );
    }
    Ok(())
}

fn print_plan(actions: &[fix::Action], root: bool) {
    println!("plan:");
    for a in actions {
        println!("{a}");
        for s in &a.steps {
            println!("    $ {}", fix::shown(s, root));
        }
    }
}

fn confirm() -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "not asking without a terminal: rerun with --yes to apply, or --dry-run to only see the plan"
        );
    }
    print!("apply these changes? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn check(sh: &Shell, nix_probe: bool, after_fix: bool) -> Result<()> {
    let facts = facts::gather(sh, nix_probe);
    let checks = binfmt::evaluate(&facts);
    for c in &checks {
        println!("{c}");
    }
    if binfmt::passed(&checks) {
        println!("aarch64-linux builds work on this machine");
        Ok(())
    } else if after_fix {
        bail!("aarch64-linux builds will not work yet: what is left needs you, see the ✗ above")
    } else {
        bail!(
            "aarch64-linux builds will not work yet: run `cargo xtask setup-binfmt` to fix the ✗ above"
        )
    }
}
