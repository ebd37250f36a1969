//! `cargo xtask ssh <host> [-- COMMAND…]`: a session on a Pi with the
//! fleet's user, port, SSH options and known hosts (the host key asked
//! about on first contact, like every other command). Without a command,
//! an interactive login shell; with one, its words arrive as typed (see
//! [`crate::reach::remote_line`]) and its exit code is this command's.
//!
//! `cargo xtask ssh --close` ends every master connection that `logs`,
//! `exec`, `ssh` and `status` keep for the next command (`ssh/persist.rs`).

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::reach;
use crate::ssh::{self, Ssh, Target, persist};

#[derive(clap::Args)]
pub struct Args {
    /// The host to log into
    #[arg(required_unless_present = "close")]
    host: Option<String>,
    /// Seconds to wait for the Pi to answer SSH
    #[arg(long, value_name = "S", default_value_t = ssh::CONNECT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,
    /// End every SSH connection kept open for the next command, now
    #[arg(long, conflicts_with_all = ["host", "command"])]
    close: bool,
    /// With --close: say which connections would be ended, end none
    #[arg(long, requires = "close")]
    dry_run: bool,
    /// A command to run instead of a login shell, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    if args.close {
        return close(args.dry_run);
    }
    let host = args.host.context("name the host to log into")?;
    let hosts = crate::deploy::load_selected(root, std::slice::from_ref(&host), false, &[])?;
    let t = Target::of(&hosts[0]);
    let ssh =
        Ssh::shared(args.connect_timeout)?.with_git_keys(root, std::slice::from_ref(&t.name))?;
    ssh.connect(&t, &|c| eprintln!("$ {}", ssh::show(c)))?;
    // An empty remote command is a login shell (with a terminal when ours is one).
    let mut cmd = ssh.session_command(&t, &reach::remote_line(&args.command));
    eprintln!("$ {}", ssh::show(&cmd));
    let status = cmd
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context("cannot run ssh (apt-get install openssh-client)")?;
    drop(ssh);
    if !status.success() {
        eprintln!("$ {}  # failed ({status})", ssh::show(&cmd));
        std::process::exit(status.code().unwrap_or(255));
    }
    Ok(())
}

/// Ends every persistent master (see `ssh/persist.rs`).
fn close(dry_run: bool) -> Result<()> {
    let dir = persist::dir()?;
    let sockets: Vec<_> = persist::sockets(&dir)
        .into_iter()
        .filter(|s| persist::alive(s))
        .collect();
    if sockets.is_empty() {
        println!("no SSH connection is kept open (in {})", dir.display());
        return Ok(());
    }
    for s in &sockets {
        eprintln!("$ {}", ssh::show(&persist::exit_command(s)));
    }
    if dry_run {
        println!(
            "would end {} SSH connection(s) kept open in {} (dry run)",
            sockets.len(),
            dir.display()
        );
        return Ok(());
    }
    persist::close(&sockets);
    // A master removes its socket as it exits, a moment after it answers.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while sockets.iter().any(|s| persist::alive(s)) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let left: Vec<_> = sockets.iter().filter(|s| persist::alive(s)).collect();
    if !left.is_empty() {
        anyhow::bail!(
            "{} connection(s) did not end: {} (end their ssh processes, then run `cargo xtask ssh --close` again)",
            left.len(),
            left.iter()
                .map(|s| s.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "ended {} SSH connection(s) kept open in {}",
        sockets.len(),
        dir.display()
    );
    Ok(())
}
