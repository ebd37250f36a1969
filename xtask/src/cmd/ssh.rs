//! `cargo xtask ssh <host> [-- COMMAND…]`: a session on a Pi with the
//! fleet's user, port, SSH options and known hosts (the host key asked
//! about on first contact, like every other command). Without a command,
//! an interactive login shell; with one, its words arrive as typed (see
//! [`crate::reach::remote_line`]) and its exit code is this command's.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::reach;
use crate::ssh::{self, Ssh, Target};

#[derive(clap::Args)]
pub struct Args {
    /// The host to log into
    host: String,
    /// Seconds to wait for the Pi to answer SSH
    #[arg(long, value_name = "S", default_value_t = ssh::CONNECT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,
    /// A command to run instead of a login shell, after `--`
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let hosts = crate::deploy::load_selected(root, std::slice::from_ref(&args.host), false, &[])?;
    let t = Target::of(&hosts[0]);
    let ssh = Ssh::new(args.connect_timeout)?;
    ssh.connect(&t, &|c| eprintln!("$ {}", ssh::show(c)))?;
    // An empty remote command is a login shell (with a terminal when ours is one).
    let mut cmd = ssh.plain_command(&reach::uri(&t), &reach::remote_line(&args.command));
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
