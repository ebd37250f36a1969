//! `cargo xtask exec <hosts…> -- COMMAND…`: one command on many hosts in
//! parallel, as the fleet's SSH user, over the fleet's SSH options.
//!
//! Quoting: the words after `--` reach the Pi as exactly those words (see
//! [`crate::reach::remote_line`]); no shell re-splits them here or there.
//! Output is grouped per host (stdout and stderr together, in order), each
//! block printed when its host finishes, or with `--stream` every line as
//! it comes with the host name in front. A table of exit codes ends it.
//!
//! Exit code: 0 every host ran the command and it succeeded; 1 it failed
//! (exited non-zero) on a host; 2 a host could not be reached.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::reach::{self, Prefix, Selection};
use crate::ssh::{self, Ssh, Target};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    sel: Selection,
    /// Print every line as it comes, the host name in front, instead of
    /// one block per host
    #[arg(long)]
    stream: bool,
    /// The command and its arguments, after `--`, passed word for word
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub const EXIT_FAILED: i32 = 1;
pub const EXIT_UNREACHABLE: i32 = 2;

/// How it went on one host.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Exited(i32, f64),
    Killed(String, f64),
    Unreachable(String),
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let hosts = args.sel.hosts(root)?;
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let ssh = Ssh::shared(args.sel.connect_timeout)?.with_git_keys(root, &names)?;
    let prefix = Prefix::new(&hosts);
    let line = reach::remote_line(&args.command);
    let connected = reach::connect_all(&ssh, &hosts);
    let out = Mutex::new(());
    let outcomes = crate::deploy::parallel(
        hosts.len(),
        32,
        false,
        &|i| {
            if let Err(e) = &connected[i] {
                let _g = out.lock();
                eprintln!("{}: unreachable: {e}", hosts[i].name);
                return Outcome::Unreachable(e.clone());
            }
            let t = Target::of(&hosts[i]);
            let mut cmd = ssh.session_command(&t, &line);
            eprintln!("$ {}", ssh::show(&cmd));
            match on_host(&mut cmd, i, &prefix, args.stream, &out) {
                Ok(o) => o,
                Err(e) => Outcome::Unreachable(format!("{e:#}")),
            }
        },
        &|_| false,
    );
    drop(ssh);
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Unreachable("not run".into())))
        .collect();
    let rows: Vec<[String; 3]> = hosts
        .iter()
        .zip(&outcomes)
        .map(|(h, o)| {
            let (exit, took) = match o {
                Outcome::Exited(c, t) => (c.to_string(), format!("{t:.2} s")),
                Outcome::Killed(s, t) => (s.clone(), format!("{t:.2} s")),
                Outcome::Unreachable(_) => ("unreachable".into(), "-".into()),
            };
            [h.name.clone(), exit, took]
        })
        .collect();
    println!();
    crate::cmd::list::print_table(&["HOST", "EXIT", "TIME"], &rows);
    let code = exit_code(&outcomes);
    if code != 0 {
        let _ = std::io::stdout().flush();
        let bad: Vec<&str> = hosts
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| !matches!(o, Outcome::Exited(0, _)))
            .map(|(h, _)| h.name.as_str())
            .collect();
        eprintln!(
            "error: the command did not succeed on {} of {} host(s): {} (their output is above)",
            bad.len(),
            hosts.len(),
            bad.join(", ")
        );
        std::process::exit(code);
    }
    Ok(())
}

/// 0, [`EXIT_FAILED`] or [`EXIT_UNREACHABLE`] (see the module docs).
pub fn exit_code(outcomes: &[Outcome]) -> i32 {
    if outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Unreachable(_)))
    {
        EXIT_UNREACHABLE
    } else if outcomes.iter().any(|o| !matches!(o, Outcome::Exited(0, _))) {
        EXIT_FAILED
    } else {
        0
    }
}

fn on_host(
    cmd: &mut Command,
    i: usize,
    prefix: &Prefix,
    stream: bool,
    out: &Mutex<()>,
) -> Result<Outcome> {
    let start = Instant::now();
    cmd.stdin(Stdio::null());
    let status = if stream {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run ssh")?;
        let so = child.stdout.take().context("no stdout")?;
        let se = child.stderr.take().context("no stderr")?;
        std::thread::scope(|s| {
            s.spawn(|| relay(so, &prefix.of(i), false, out));
            s.spawn(|| relay(se, &prefix.of(i), true, out));
        });
        child.wait()?
    } else {
        // One pipe for both, so the block keeps the order they were written in.
        let (mut reader, writer) = std::io::pipe().context("cannot make a pipe")?;
        let mut child = cmd
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()
            .context("cannot run ssh")?;
        // Our copies of the write end are gone with `cmd`'s; read to the end.
        let mut text = Vec::new();
        drop(std::mem::replace(cmd, Command::new("true")));
        reader.read_to_end(&mut text)?;
        let status = child.wait()?;
        let took = start.elapsed().as_secs_f64();
        let _g = out.lock();
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "── {} ({}, {took:.2} s)", prefix.of(i), describe(status));
        let _ = o.write_all(&text);
        if !text.is_empty() && !text.ends_with(b"\n") {
            let _ = writeln!(o);
        }
        let _ = o.flush();
        status
    };
    let took = start.elapsed().as_secs_f64();
    Ok(match status.code() {
        Some(c) => Outcome::Exited(c, took),
        None => Outcome::Killed(describe(status), took),
    })
}

fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "ended".into(),
    }
}

fn relay(from: impl Read, prefix: &str, err: bool, out: &Mutex<()>) {
    for line in BufReader::new(from).split(b'\n').map_while(Result::ok) {
        let _g = out.lock();
        let text = String::from_utf8_lossy(&line);
        if err {
            eprintln!("{prefix} | {text}");
        } else {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{prefix} | {text}");
            let _ = o.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let ok = Outcome::Exited(0, 0.1);
        assert_eq!(exit_code(std::slice::from_ref(&ok)), 0);
        assert_eq!(
            exit_code(&[ok.clone(), Outcome::Exited(3, 0.1)]),
            EXIT_FAILED
        );
        assert_eq!(
            exit_code(&[Outcome::Killed("signal 9".into(), 0.1), ok.clone()]),
            EXIT_FAILED
        );
        assert_eq!(
            exit_code(&[Outcome::Exited(3, 0.1), Outcome::Unreachable("x".into())]),
            EXIT_UNREACHABLE
        );
    }
}
