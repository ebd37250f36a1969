//! Deploy, rollback and status: what they share. Hosts run in parallel,
//! each with its own log file and progress line; a summary table ends.
//!
//! - `remote`: the scripts that run on the Pi;
//! - `host`: one host's deploy or rollback, step by step;
//! - `guard`: the lock-out guard.

pub mod activate;
pub mod bench;
pub mod guard;
pub mod host;
pub mod lock;
pub mod plan;
pub mod remote;

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::inventory::{Fleet, Host, Problem};
use crate::ssh;
use crate::time::civil;
pub use crate::time::unix_now;

/// The hosts a command acts on: names given, `--all`, or `--tag` (any of them).
pub fn select(fleet: &Fleet, names: &[String], all: bool, tags: &[String]) -> Result<Vec<Host>> {
    if all {
        return Ok(fleet.hosts.clone());
    }
    let mut hosts = Vec::new();
    for n in names {
        let h = fleet.host(n)?;
        if !hosts.iter().any(|x: &Host| x.name == h.name) {
            hosts.push(h.clone());
        }
    }
    for t in tags {
        let tagged: Vec<&Host> = fleet.hosts.iter().filter(|h| h.tags.contains(t)).collect();
        if tagged.is_empty() {
            bail!("no host has the tag `{t}`; `cargo xtask list` shows every host's tags");
        }
        for h in tagged {
            if !hosts.iter().any(|x: &Host| x.name == h.name) {
                hosts.push(h.clone());
            }
        }
    }
    if hosts.is_empty() {
        bail!("name the hosts to act on, or use --all or --tag <tag>");
    }
    Ok(hosts)
}

/// Reads the fleet and selects the hosts to act on. Problems in the fleet
/// definition refuse the run only when they touch a selected host or the
/// whole fleet; those only about other hosts are warnings.
pub fn load_selected(
    root: &Path,
    names: &[String],
    all: bool,
    tags: &[String],
) -> Result<Vec<Host>> {
    let (fleet, problems) = Fleet::read(root)?;
    let hosts = select(&fleet, names, all, tags)?;
    let chosen: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let (refuse, warn) = partition_problems(&problems, &chosen);
    for p in &warn {
        eprintln!(
            "warning: {} (not acted on; `cargo xtask check` lists every problem)",
            p.to_string().replace("\n    fix: ", ": ")
        );
    }
    if !refuse.is_empty() {
        let list: Vec<String> = refuse.iter().map(|p| format!("  {p}")).collect();
        bail!(
            "the fleet definition has {} problem(s) that touch the hosts to act on:\n{}\nfix them (`cargo xtask check` lists them again)",
            refuse.len(),
            list.join("\n")
        );
    }
    Ok(hosts)
}

/// The host a problem is about, if it names one: `host `NAME``, or a file
/// under `hosts/NAME/`.
pub fn problem_host(p: &Problem) -> Option<String> {
    if let Some(rest) = p.file.strip_prefix("hosts/")
        && let Some((name, _)) = rest.split_once('/')
    {
        return Some(name.to_string());
    }
    let at = p.message.find("host `")? + "host `".len();
    let name = p.message[at..].split('`').next()?;
    Some(name.to_string())
}

/// (problems that touch `chosen` or the whole fleet, problems only about other hosts).
pub fn partition_problems<'a>(
    problems: &'a [Problem],
    chosen: &[&str],
) -> (Vec<&'a Problem>, Vec<&'a Problem>) {
    problems
        .iter()
        .partition(|p| problem_host(p).is_none_or(|h| chosen.contains(&h.as_str())))
}

/// One host's log: a file under `out/logs/`, echoed to stderr with a
/// `[host]` prefix when stderr is not a terminal (or only one host runs).
pub struct Log {
    pub host: String,
    pub path: PathBuf,
    file: Mutex<File>,
    echo: bool,
}

impl Log {
    pub fn new(dir: &Path, host: &str, echo: bool) -> Result<Log> {
        let path = dir.join(format!("{host}.log"));
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Log {
            host: host.into(),
            path,
            file: Mutex::new(file),
            echo,
        })
    }

    pub fn line(&self, text: &str) {
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        for l in text.lines() {
            let _ = writeln!(f, "{l}");
            if self.echo {
                eprintln!("[{}] {l}", self.host);
            }
        }
    }

    pub fn command(&self, cmd: &Command) {
        self.line(&format!("$ {}", ssh::show(cmd)));
    }

    /// Echoes and runs `cmd` (stdin closed or `input`), logs its output,
    /// returns it whatever the exit status.
    pub fn run(&self, cmd: &mut Command, input: Option<&[u8]>) -> Result<Output> {
        self.command(cmd);
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run `{}`", ssh::show(cmd)))?;
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().context("no stdin")?;
            let bytes = bytes.to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        let out = child.wait_with_output()?;
        self.output(&out);
        Ok(out)
    }

    pub fn output(&self, out: &Output) {
        let so = String::from_utf8_lossy(&out.stdout);
        let se = String::from_utf8_lossy(&out.stderr);
        if !so.trim().is_empty() {
            self.line(so.trim_end());
        }
        if !se.trim().is_empty() {
            self.line(se.trim_end());
        }
        if !out.status.success() {
            self.line(&format!("  # failed ({})", out.status));
        }
    }

    /// Like [`Log::run`], failing with `what` and the command's last words.
    pub fn run_ok(&self, cmd: &mut Command, input: Option<&[u8]>, what: &str) -> Result<String> {
        let out = self.run(cmd, input)?;
        if !out.status.success() {
            bail!("{what} failed: {}", last_words(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }
}

/// The line of a failed command's output that says what went wrong: Nix's
/// real cause when it printed an `error:` (picked as `status` picks it,
/// [`nix::error_summary`]), else the last meaningful line.
pub fn last_words(out: &Output) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = crate::nix::error_summary(&text);
    if s.is_empty() { "no output".into() } else { s }
}

/// A progress line per host: redrawn in place on a terminal, else printed.
pub struct Progress {
    tty: bool,
    names: Vec<String>,
    lines: Mutex<(Vec<String>, bool)>,
}

impl Progress {
    pub fn new(names: Vec<String>, tty: bool) -> Progress {
        let n = names.len();
        Progress {
            tty,
            names,
            lines: Mutex::new((vec!["waiting".into(); n], false)),
        }
    }

    pub fn set(&self, i: usize, text: &str) {
        let mut g = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        g.0[i] = text.to_string();
        if !self.tty {
            // Each host's log, echoed to stderr, already says it.
            return;
        }
        let width = self.names.iter().map(|n| n.len()).max().unwrap_or(0);
        let mut err = std::io::stderr().lock();
        if g.1 {
            let _ = write!(err, "\x1b[{}A", self.names.len());
        }
        for (name, line) in self.names.iter().zip(&g.0) {
            let _ = writeln!(err, "\x1b[2K{name:<width$}  {line}");
        }
        g.1 = true;
    }
}

/// Runs `work(i)` for i in 0..n on `jobs` threads. With `fail_fast`, hosts
/// not yet started are skipped (None) after the first failure; running
/// ones always finish.
pub fn parallel<T: Send>(
    n: usize,
    jobs: usize,
    fail_fast: bool,
    work: &(dyn Fn(usize) -> T + Sync),
    failed: &(dyn Fn(&T) -> bool + Sync),
) -> Vec<Option<T>> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, n.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n || (fail_fast && stop.load(Ordering::SeqCst)) {
                        break;
                    }
                    let r = work(i);
                    if failed(&r) {
                        stop.store(true, Ordering::SeqCst);
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Prints, per host, every command a run would execute, then the remote
/// scripts they name (`--dry-run` of deploy and rollback).
pub fn print_plans(ctx: &host::Ctx, hosts: &[Host], rollback_to: Option<Option<u64>>) {
    for h in hosts {
        println!("# {} ({}:{})", h.name, h.destination(), h.port);
        for line in plan::plan(ctx, h, rollback_to) {
            println!("{line}");
        }
        println!();
    }
    println!("# <PROBE> is:\n{}", remote::PROBE);
    println!("# <LOCK> is:\n{}", remote::LOCK);
    println!(
        "# <HELPER> (written to /run/pi-nixos/<run>/run) is:\n{}",
        remote::HELPER
    );
}

/// The work for one host: its log and a way to show the current step.
pub type HostWork<'a> = dyn Fn(&Host, &Log, &dyn Fn(&str)) -> Outcome + Sync + 'a;

/// Runs `one` for every host, `jobs` at a time, each with its progress
/// line and log under `out/logs/<verb>-<time>/`, then prints the summary.
pub fn run_hosts(
    root: &Path,
    run: &str,
    verb: &str,
    hosts: &[Host],
    jobs: usize,
    fail_fast: bool,
    one: &HostWork,
) -> Result<()> {
    let logs = log_dir(root, run)?;
    let tty = tty() && hosts.len() > 1;
    let progress = Progress::new(hosts.iter().map(|h| h.name.clone()).collect(), tty);
    let outcomes = parallel(
        hosts.len(),
        jobs,
        fail_fast,
        &|i| {
            let h = &hosts[i];
            let log = match Log::new(&logs, &h.name, !tty) {
                Ok(l) => l,
                Err(e) => {
                    return Outcome {
                        ok: false,
                        result: format!("{e:#}"),
                        old: None,
                        new: None,
                        unknown: false,
                        duration: Duration::default(),
                    };
                }
            };
            let step = |s: &str| {
                log.line(&format!("== {s}"));
                progress.set(i, s);
            };
            let o = one(h, &log, &step);
            log.line(&format!("== result: {}", o.result));
            progress.set(i, if o.ok { "done" } else { "FAILED" });
            o
        },
        &|o| !o.ok,
    );
    summary(verb, hosts, &outcomes, &logs)
}

/// What happened to one host.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub ok: bool,
    /// One line: "switched", "rolled back: …", "failed: …".
    pub result: String,
    pub old: Option<u64>,
    pub new: Option<u64>,
    /// What the host ended up running is not known.
    pub unknown: bool,
    pub duration: Duration,
}

impl Outcome {
    pub fn generations(&self) -> String {
        let g = |x: Option<u64>| x.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        match (self.old, self.new) {
            (old, _) if self.unknown => format!("{} → ?", g(old)),
            (None, None) => "-".into(),
            (Some(old), None) => format!("{old} (unchanged)"),
            (old, new) => format!("{} → {}", g(old), g(new)),
        }
    }
}

/// Short word for the table; the whole message is printed below it.
fn verdict(o: &Outcome) -> String {
    let m = &o.result;
    if o.ok {
        m.clone()
    } else if m.contains("rolled back to") || m.contains("rolled itself back") {
        "ROLLED BACK".into()
    } else if m.starts_with("lock-out guard")
        || m.starts_with("preflight")
        || m.starts_with("refused:")
    {
        "REFUSED".into()
    } else if m.contains("unreachable")
        || m.contains("refused the connection on port")
        || m.contains("gave no outcome within")
    {
        "UNREACHABLE".into()
    } else {
        "FAILED".into()
    }
}

/// Prints the summary table; fails when any host failed or was skipped.
pub fn summary(
    verb: &str,
    hosts: &[Host],
    outcomes: &[Option<Outcome>],
    logs: &Path,
) -> Result<()> {
    let rows: Vec<[String; 4]> = hosts
        .iter()
        .zip(outcomes)
        .map(|(h, o)| match o {
            Some(o) => [
                h.name.clone(),
                verdict(o),
                o.generations(),
                format!("{:.1} s", o.duration.as_secs_f64()),
            ],
            None => [
                h.name.clone(),
                "SKIPPED (--fail-fast)".into(),
                "-".into(),
                "-".into(),
            ],
        })
        .collect();
    println!();
    crate::cmd::list::print_table(&["HOST", "RESULT", "GENERATION", "TIME"], &rows);
    for (h, o) in hosts.iter().zip(outcomes) {
        if let Some(o) = o.as_ref().filter(|o| !o.ok) {
            let prefix = format!("{}: ", h.name);
            let text = o.result.strip_prefix(&prefix).unwrap_or(&o.result);
            println!("{prefix}{text}");
        }
    }
    println!("logs: {}", logs.display());
    let bad = outcomes
        .iter()
        .filter(|o| !o.as_ref().is_some_and(|o| o.ok))
        .count();
    if bad > 0 {
        bail!(
            "{verb} failed on {bad} of {} host(s); see the table above and the logs in {}",
            hosts.len(),
            logs.display()
        );
    }
    Ok(())
}

/// A run's id, unique even for runs started in the same second (from
/// other checkouts or workstations too): `<verb>-<UTC time>-<pid>-<nanos>`.
/// It names the run's log folder, its state on the Pis and its lock.
pub fn run_id(verb: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{verb}-{}-{}-{nanos:08x}",
        compact_time(unix_now()),
        std::process::id()
    )
}

/// `out/logs/<run id>/`, created; never one that exists (another run's).
pub fn log_dir(root: &Path, run: &str) -> Result<PathBuf> {
    let parent = root.join("out/logs");
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let dir = parent.join(run);
    std::fs::create_dir(&dir).with_context(|| {
        format!(
            "cannot create the run's own log folder {}; run again",
            dir.display()
        )
    })?;
    Ok(dir)
}

/// Whether progress should be drawn in place (stderr is a terminal).
pub fn tty() -> bool {
    std::io::stderr().is_terminal()
}

/// `2026-05-01 12:00 UTC`.
pub fn date(t: i64) -> String {
    let (y, m, d, h, mi, _) = civil(t);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02} UTC")
}

fn compact_time(t: i64) -> String {
    let (y, m, d, h, mi, s) = civil(t);
    format!("{y:04}{m:02}{d:02}-{h:02}{mi:02}{s:02}")
}

/// `3d 4h`, `5h 12m`, `42m`.
pub fn human_duration(secs: f64) -> String {
    let s = secs as u64;
    let (d, h, m) = (s / 86400, s % 86400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m")
    }
}

/// The checkout's commit (`abc123…` or `abc123…-dirty` when tracked files
/// changed, which the flake build includes), if it is a Git tree.
pub fn git_commit(root: &Path) -> Option<String> {
    let sh = xshell::Shell::new().ok()?;
    let st = crate::git::status(&sh, root).ok()??;
    let commit: String = st.commit.as_deref()?.chars().take(12).collect();
    Some(if st.dirty() {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

/// Seconds since `start`, for messages.
pub fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(1_780_000_000), "2026-05-28 20:26 UTC");
        assert_eq!(compact_time(951_782_400), "20000229-000000");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(59.0), "0m");
        assert_eq!(human_duration(3700.0), "1h 1m");
        assert_eq!(human_duration(90000.0), "1d 1h");
    }

    #[test]
    fn problems_of_other_hosts_are_warnings() {
        let p = |file: &str, msg: &str| Problem::new(file, 3, msg, "");
        let all = [
            p(
                "hosts/fleet.toml",
                "host `bad`: `x y` is not an IP address or DNS name",
            ),
            p("hosts/fleet.toml", "host `pi-a`: unknown model `pi9`"),
            p("hosts/other/containers.toml", "image not pinned"),
            p("keys/authorized_keys", "not a public key"),
        ];
        let (refuse, warn) = partition_problems(&all, &["pi-a"]);
        assert_eq!(refuse.len(), 2, "{refuse:?}");
        assert!(refuse[0].message.contains("pi-a") && refuse[1].file.starts_with("keys"));
        assert_eq!(warn.len(), 2);
        assert_eq!(problem_host(&all[2]).as_deref(), Some("other"));
    }

    #[test]
    fn generations_column() {
        let o = |old, new, unknown| Outcome {
            ok: false,
            result: String::new(),
            old,
            new,
            unknown,
            duration: Duration::default(),
        };
        assert_eq!(o(Some(2), Some(3), false).generations(), "2 → 3");
        assert_eq!(o(Some(2), None, false).generations(), "2 (unchanged)");
        assert_eq!(o(Some(2), Some(3), true).generations(), "2 → ?");
    }

    #[test]
    fn run_ids_differ_within_a_second() {
        let a = run_id("deploy");
        let b = run_id("deploy");
        assert_ne!(a, b);
        assert!(a.starts_with("deploy-"));
        let dir = std::env::temp_dir().join(format!("xtask-logdir-{}", std::process::id()));
        assert!(log_dir(&dir, &a).is_ok());
        assert!(log_dir(&dir, &a).is_err(), "another run's folder reused");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parallel_fail_fast_skips_the_rest() {
        let r = parallel(5, 1, true, &|i| i == 1, &|ok: &bool| *ok);
        assert_eq!(r.iter().filter(|x| x.is_some()).count(), 2);
        let r = parallel(5, 3, false, &|i| i, &|_| true);
        assert!(r.iter().all(Option::is_some));
    }
}
