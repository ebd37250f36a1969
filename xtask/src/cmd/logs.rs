//! `cargo xtask logs <hosts…>`: journal entries from every chosen host,
//! read with `journalctl -o json` over SSH (as root: `sudo -n` for another
//! SSH user), merged into one stream in time order by **each Pi's own
//! clock** (`crate::journal`), the host name in front (coloured on a
//! terminal). Times are printed in UTC.
//!
//! `-n N` is the last N entries **of each host** (default 100 when neither
//! `-n` nor `--since` is given), so a quiet Pi is never drowned by a
//! chatty one. `-f` first prints that, merged, then follows every host at
//! once from where it stopped (`--after-cursor`): lines arriving within a
//! quarter of a second are put in order before printing. A host that goes
//! away is said once and the others are followed on; the command ends
//! when none is left (or on Ctrl-C). A host that cannot be reached is said
//! once, never per line.
//!
//! Exit code: 0 every host answered; 2 a host could not be reached (or
//! went away while followed); 1 the command itself failed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Result;

use crate::inventory::Host;
use crate::journal::{self, Entry};
use crate::reach::{self, Prefix, Selection};
use crate::ssh::{self, Ssh, Target};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    sel: Selection,
    /// Only this systemd unit (repeatable)
    #[arg(short = 'u', long = "unit", value_name = "UNIT")]
    units: Vec<String>,
    /// Only this Docker container or Compose project (repeatable)
    #[arg(short = 'c', long = "container", value_name = "CONTAINER|PROJECT")]
    containers: Vec<String>,
    /// Entries since this time (journalctl's syntax: "1h ago", "today", "2026-12-01 10:00")
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// The last N entries of each host
    #[arg(short = 'n', long = "lines", value_name = "N")]
    lines: Option<u64>,
    /// Keep printing new entries from every host
    #[arg(short, long)]
    follow: bool,
    /// One JSON object per entry (journalctl's fields, plus "host")
    #[arg(long)]
    json: bool,
    /// Read the chosen hosts' journals where the monitoring host keeps them
    /// (`[fleet] monitoring`: systemd-journal-remote), even when a Pi is dead
    #[arg(long)]
    central: bool,
}

/// Where systemd-journal-remote keeps the uploaded journals on the
/// monitoring host (services.journald.remote.output's default).
pub const REMOTE_DIR: &str = "/var/log/journal/remote";

pub const EXIT_UNREACHABLE: i32 = 2;

/// Runs journalctl with the arguments given to this script.
const JOURNALCTL: &str = "exec journalctl --no-pager --quiet -o json \"$@\"";

/// `--central -f`: systemd-journal-remote writes its files without the
/// change notices journald gives (`journalctl -f` would wait for the file
/// to grow), so the entries after the cursor (`$1`; empty: all, the host
/// had none) are read every 2 s, `--cursor-file` keeping the place. The
/// empty line each round ends the loop once the connection is gone.
const CENTRAL_FOLLOW: &str = r#"c=$1; shift; d=$(mktemp -d) || exit 1; f=$d/cursor
trap 'rm -rf "$d"' EXIT; trap 'exit 0' PIPE HUP INT TERM
[ -n "$c" ] && printf '%s' "$c" > "$f"
while :; do journalctl --no-pager --quiet -o json --cursor-file="$f" "$@" || exit 1; echo || exit 0; sleep 2; done"#;

/// journalctl's arguments for a run (the follow phase adds its own).
pub fn journalctl_args(a: &Args) -> Vec<String> {
    let mut v = Vec::new();
    for u in &a.units {
        v.extend(["-u".to_string(), u.clone()]);
    }
    if let Some(s) = &a.since {
        v.push(format!("--since={s}"));
    }
    match (a.lines, &a.since) {
        (Some(n), _) => v.push(format!("--lines={n}")),
        (None, None) => v.push("--lines=100".into()),
        (None, Some(_)) => {}
    }
    v.extend(journal::container_matches(&a.containers));
    v
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let hosts = args.sel.hosts(root)?;
    if args.central {
        return central(root, &args, &hosts);
    }
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let ssh = Ssh::shared(args.sel.connect_timeout)?.with_git_keys(root, &names)?;
    let prefix = Prefix::new(&hosts);
    let connected = reach::connect_all(&ssh, &hosts);
    let mut failed = 0;
    for (h, c) in hosts.iter().zip(&connected) {
        if let Err(e) = c {
            eprintln!("{}: unreachable: {e}", h.name);
            failed += 1;
        }
    }
    let jargs = journalctl_args(&args);
    let fetched = crate::deploy::parallel(
        hosts.len(),
        32,
        false,
        &|i| {
            connected[i]
                .as_ref()
                .map_err(|e| e.clone())
                .and_then(|_| fetch(&ssh, &hosts[i], i, &jargs))
        },
        &|_| false,
    );
    let mut per_host = Vec::new();
    let mut cursors: Vec<Option<Option<String>>> = Vec::new();
    for (i, r) in fetched.into_iter().enumerate() {
        match r.unwrap_or_else(|| Err("not tried".into())) {
            Ok(entries) => {
                let last = entries.last().and_then(|e| journal::field(e, "__CURSOR"));
                cursors.push(Some(last));
                per_host.push(entries);
            }
            Err(e) => {
                if connected[i].is_ok() {
                    eprintln!("{}: journalctl failed: {e}", hosts[i].name);
                    failed += 1;
                }
                cursors.push(None);
            }
        }
    }
    let show = |e: &Entry| {
        let mut o = std::io::stdout().lock();
        let _ = if args.json {
            writeln!(o, "{}", journal::json(e, &hosts[e.host].name))
        } else {
            writeln!(o, "{} {}", prefix.of(e.host), journal::line(e))
        };
    };
    for e in journal::merge(per_host) {
        show(&e);
    }
    let _ = std::io::stdout().flush();
    if args.follow {
        let base = follow_args(journalctl_args(&args));
        failed += follow(&hosts, &cursors, &show, None, &|i, cursor| {
            let tail = match cursor {
                Some(c) => format!("--after-cursor={c}"),
                None => "--lines=0".to_string(),
            };
            let mut words: Vec<&str> = base.iter().map(String::as_str).collect();
            words.push(&tail);
            ssh.command(&Target::of(&hosts[i]), JOURNALCTL, &words)
        });
    }
    drop(ssh);
    if failed > 0 {
        let _ = std::io::stdout().flush();
        eprintln!(
            "error: {failed} of {} host(s) could not be read (said above): check them with `cargo xtask status`",
            hosts.len()
        );
        std::process::exit(EXIT_UNREACHABLE);
    }
    Ok(())
}

fn fetch(ssh: &Ssh, h: &Host, i: usize, jargs: &[String]) -> Result<Vec<Entry>, String> {
    let t = Target::of(h);
    let words: Vec<&str> = jargs.iter().map(String::as_str).collect();
    let mut cmd = ssh.command(&t, JOURNALCTL, &words);
    eprintln!("$ {}", ssh::show(&cmd));
    // Read while it runs (`output`, not `ssh::output_within`: a big journal
    // fills the pipe); a dead Pi is ended by the keepalives.
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    if !out.status.success() {
        eprintln!("$ {}  # failed ({})", ssh::show(&cmd), out.status);
        return Err(crate::deploy::last_words(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| journal::parse(i, l))
        .collect())
}

enum Event {
    Entry(Entry),
    Gone(usize, String),
}

/// journalctl's arguments for following: the run's, without what chose
/// the backlog (`-f` goes on from a cursor).
fn follow_args(mut jargs: Vec<String>) -> Vec<String> {
    jargs.retain(|a| !a.starts_with("--lines=") && !a.starts_with("--since="));
    jargs.push("--follow".into());
    jargs
}

/// Follows every host that was read; returns how many went away.
/// `command(i, cursor)` is the ssh command following host `i` after its
/// last entry printed (none yet: from now); `via` names the monitoring
/// host when the streams come from it (`--central`).
fn follow(
    hosts: &[Host],
    cursors: &[Option<Option<String>>],
    show: &(dyn Fn(&Entry) + Sync),
    via: Option<&str>,
    command: &dyn Fn(usize, Option<&str>) -> std::process::Command,
) -> usize {
    let (tx, rx) = mpsc::channel::<Event>();
    let mut followed = 0;
    let mut children = Vec::new();
    for (i, cursor) in cursors.iter().enumerate() {
        let Some(cursor) = cursor else { continue };
        let mut cmd = command(i, cursor.as_deref());
        eprintln!("$ {}", ssh::show(&cmd));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Event::Gone(i, format!("cannot run ssh: {e}")));
                followed += 1;
                continue;
            }
        };
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let tx = tx.clone();
        followed += 1;
        std::thread::spawn(move || {
            if let Some(out) = out {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(e) = journal::parse(i, &l)
                        && tx.send(Event::Entry(e)).is_err()
                    {
                        return;
                    }
                }
            }
            let mut why = String::new();
            if let Some(mut err) = err {
                let _ = std::io::Read::read_to_string(&mut err, &mut why);
            }
            let why = why.trim().lines().last().unwrap_or("").to_string();
            let _ = tx.send(Event::Gone(i, why));
        });
        children.push(child);
    }
    drop(tx);
    let mut left = followed;
    let mut gone = 0;
    let mut buffer: Vec<Entry> = Vec::new();
    let window = Duration::from_millis(250);
    let mut oldest: Option<std::time::Instant> = None;
    while left > 0 {
        match rx.recv_timeout(window) {
            Ok(Event::Entry(e)) => {
                buffer.push(e);
                let first = *oldest.get_or_insert_with(std::time::Instant::now);
                if first.elapsed() >= window {
                    flush(&mut buffer, show);
                    oldest = None;
                }
                continue;
            }
            Ok(Event::Gone(_, _)) if crate::interrupt::interrupted() => {
                // Ctrl-C ends every connection: nothing to say per host.
                flush(&mut buffer, show);
                oldest = None;
                left -= 1;
            }
            Ok(Event::Gone(i, why)) => {
                flush(&mut buffer, show);
                oldest = None;
                left -= 1;
                gone += 1;
                let why = if why.is_empty() {
                    "the connection ended".to_string()
                } else {
                    why
                };
                match via {
                    None => eprintln!(
                        "{}: gone ({why}); following the other {left} host(s)",
                        hosts[i].name
                    ),
                    Some(m) => eprintln!(
                        "{}: its stream from the monitoring host {m} ended ({why}); following the other {left} host(s)",
                        hosts[i].name
                    ),
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                flush(&mut buffer, show);
                oldest = None;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    flush(&mut buffer, show);
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    gone
}

fn flush(buffer: &mut Vec<Entry>, show: &(dyn Fn(&Entry) + Sync)) {
    buffer.sort_by_key(|e| (e.usec, e.host));
    for e in buffer.drain(..) {
        show(&e);
    }
    let _ = std::io::stdout().flush();
}

/// `--central`: one journalctl on the monitoring host over the files
/// systemd-journal-remote wrote, one stream per chosen host (matched by the
/// `_HOSTNAME` each Pi logs, its inventory name), merged the same way;
/// `-f` follows those files there (as the uploads arrive).
fn central(root: &Path, args: &Args, hosts: &[Host]) -> Result<()> {
    let (fleet, _) = crate::inventory::Fleet::read(root)?;
    let Some(name) = fleet.settings.monitoring.clone() else {
        anyhow::bail!(
            "the fleet has no monitoring host: add `monitoring = \"<host>\"` under [fleet] in hosts/fleet.toml, deploy, then use --central"
        );
    };
    let server = fleet.host(&name)?.clone();
    let ssh = Ssh::shared(args.sel.connect_timeout)?
        .with_git_keys(root, std::slice::from_ref(&server.name))?;
    let t = Target::of(&server);
    ssh.connect(&t, &|c| eprintln!("$ {}", ssh::show(c)))?;
    let mut per_host = Vec::new();
    let mut cursors = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let jargs = central_args(args, &h.name);
        let entries =
            fetch(&ssh, &server, i, &jargs).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        cursors.push(Some(
            entries.last().and_then(|e| journal::field(e, "__CURSOR")),
        ));
        per_host.push(entries);
    }
    let prefix = Prefix::new(hosts);
    let show = |e: &Entry| {
        let mut o = std::io::stdout().lock();
        let _ = if args.json {
            writeln!(o, "{}", journal::json(e, &hosts[e.host].name))
        } else {
            writeln!(o, "{} {}", prefix.of(e.host), journal::line(e))
        };
    };
    for e in journal::merge(per_host) {
        show(&e);
    }
    let _ = std::io::stdout().flush();
    if args.follow {
        let gone = follow(hosts, &cursors, &show, Some(&name), &|i, cursor| {
            let mut jargs = central_args(args, &hosts[i].name);
            jargs.retain(|a| !a.starts_with("--lines=") && !a.starts_with("--since="));
            let mut words = vec![cursor.unwrap_or("")];
            words.extend(jargs.iter().map(String::as_str));
            ssh.command(&t, CENTRAL_FOLLOW, &words)
        });
        drop(ssh);
        if gone > 0 {
            let _ = std::io::stdout().flush();
            eprintln!(
                "error: the monitoring host {name} stopped answering: check it with `cargo xtask status {name}`"
            );
            std::process::exit(EXIT_UNREACHABLE);
        }
    }
    Ok(())
}

/// journalctl's arguments on the monitoring host for one Pi: its entries
/// (`_HOSTNAME`, repeated in every `+` term so it binds to each).
pub fn central_args(args: &Args, host: &str) -> Vec<String> {
    let me = format!("_HOSTNAME={host}");
    let mut v = vec![format!("--directory={REMOTE_DIR}"), me.clone()];
    for a in journalctl_args(args) {
        let plus = a == "+";
        v.push(a);
        if plus {
            v.push(me.clone());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: Args,
    }

    fn args(words: &[&str]) -> Args {
        Cli::parse_from(std::iter::once("logs").chain(words.iter().copied())).a
    }

    #[test]
    fn journalctl_arguments() {
        assert_eq!(journalctl_args(&args(&["a"])), ["--lines=100"]);
        assert_eq!(
            journalctl_args(&args(&["a", "-u", "x", "--since", "1h ago"])),
            ["-u", "x", "--since=1h ago"]
        );
        assert_eq!(
            central_args(&args(&["a", "-n", "5", "-c", "web"]), "pi-1"),
            [
                "--directory=/var/log/journal/remote",
                "_HOSTNAME=pi-1",
                "--lines=5",
                "CONTAINER_NAME=web",
                "+",
                "_HOSTNAME=pi-1",
                "COM_DOCKER_COMPOSE_PROJECT=web"
            ]
        );
    }
}
