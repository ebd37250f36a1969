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
    /// When Nix is missing, install the distribution's nix-bin and nix-setup-systemd
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
    if facts.nix.is_none() && !args.install_nix {
        println!(
            "Nix is missing: rerun with --install-nix for the distribution's nix-bin, or install it the official way (documentation/getting nix ready.md)"
        );
    }
    if actions.is_empty() {
        println!("nothing to change");
    } else {
        print_plan(&actions, root);
        if facts.nix.is_none() && args.install_nix {
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
        let installs = actions.iter().take_while(|a| a.why.starts_with("install "));
        let installs: Vec<_> = installs.collect();
        if !installs.is_empty() {
            // Packages change the machine (their scripts may register QEMU):
            // install them, then plan the rest again from what is there now.
            let (first, _) = actions.split_at(installs.len());
            fix::apply(&sh, root, first)?;
            let facts = facts::gather(&sh, false);
            let rest: Vec<_> = fix::plan(&facts, false)
                .into_iter()
                .filter(|a| !a.why.starts_with("install "))
                .collect();
            fix::apply(&sh, root, &rest)?;
        } else {
            fix::apply(&sh, root, &actions)?;
        }
    }
    println!("checking again:");
    check(&sh, true, true)
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
