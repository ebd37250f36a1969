//! `cargo xtask bench fleet`: figures for `logs`, `exec` and `status` on
//! fake Pis (tests/common/fakepi.rs: systemd-nspawn containers with real
//! systemd, journald and sshd). Each command is timed **cold** (no SSH
//! connection kept open: `ssh --close` before every run) and **warm** (the
//! masters a previous command left, see ssh/persist.rs), the median of 5
//! runs each, beside the SSH floor of each case (plain `ssh host true` to
//! every Pi at once: a new connection each, or through an open master),
//! with a verdict against the goal of 1 s for 8 hosts. Needs root.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::bench_harness::fakepi;

/// The goal for each command, in seconds.
const GOAL: f64 = 1.0;
/// Runs per figure (the median is shown).
const RUNS: usize = 5;

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(root: &Path, hosts: usize) -> Result<()> {
    if let Some(why) = fakepi::missing() {
        bail!("cannot start fake Pis: {why}");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let base = fakepi::base(&target.join("tmp")).map_err(anyhow::Error::msg)?;
    let names: Vec<String> = (1..=hosts).map(|i| format!("bench-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut fleet = fakepi::Fleet::new(&base, &refs);
    let t = Instant::now();
    for n in &refs {
        fleet.start(n);
    }
    for n in &refs {
        fleet.wait_ssh(n);
        // At least 100 entries of its own on every Pi.
        fleet.ssh(
            n,
            "for i in $(seq 120); do echo \"bench line $i\"; done | systemd-cat -t bench",
        );
    }
    eprintln!(
        "bench: {hosts} fake Pis booted in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe()?;
    let xtask = |args: &[&str]| -> Result<f64> {
        let mut c = Command::new(&exe);
        c.arg("--flake").arg(fleet.repo()).args(args);
        for (k, v) in fleet.env() {
            c.env(k, v);
        }
        let start = Instant::now();
        let out = c.output()?;
        let took = start.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "cargo xtask {} failed:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if args[0] == "logs" && args.contains(&"--all") {
            let lines = String::from_utf8_lossy(&out.stdout).lines().count();
            if lines < 100 * hosts {
                bail!("logs printed {lines} lines, fewer than 100 per host");
            }
        }
        Ok(took)
    };
    let close = || xtask(&["ssh", "--close"]).map(|_| ());
    let cold = |args: &[&str]| -> Result<f64> {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            close()?;
            runs.push(xtask(args)?);
        }
        Ok(median(runs))
    };
    let warm = |args: &[&str]| -> Result<f64> {
        xtask(&["exec", "--all", "--", "true"])?;
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            runs.push(xtask(args)?);
        }
        Ok(median(runs))
    };
    // The floors: one plain `ssh host true` per Pi, all at once (no xtask),
    // over a new connection each, then through a master opened beforehand.
    let sockets = fleet.work().join("bench-masters");
    std::fs::create_dir_all(&sockets)?;
    let plain = |port: u16, extra: &[String]| {
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg(fleet.work().join("ssh_config"))
            .args(["-o", "BatchMode=yes", "-p", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null());
        c
    };
    let socket = |port: u16| sockets.join(port.to_string()).display().to_string();
    let floor = |through_master: bool| -> Result<f64> {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let start = Instant::now();
            let children: Vec<_> = fleet
                .pis
                .iter()
                .map(|p| {
                    let extra = if through_master {
                        vec!["-S".to_string(), socket(p.port)]
                    } else {
                        vec!["-S".to_string(), "none".to_string()]
                    };
                    plain(p.port, &extra)
                        .args(["root@127.0.0.1", "true"])
                        .spawn()
                })
                .collect::<std::io::Result<_>>()?;
            for mut c in children {
                if !c.wait()?.success() {
                    bail!("plain ssh to a fake Pi failed");
                }
            }
            runs.push(start.elapsed().as_secs_f64());
        }
        Ok(median(runs))
    };
    let floor_cold = floor(false)?;
    for p in &fleet.pis {
        let extra = ["-M", "-N", "-f", "-o", "ControlPersist=120", "-S"]
            .map(String::from)
            .into_iter()
            .chain([socket(p.port)])
            .collect::<Vec<_>>();
        let ok = plain(p.port, &extra)
            .arg("root@127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run ssh")?;
        if !ok.success() {
            bail!("cannot open a master connection to a fake Pi");
        }
    }
    let floor_warm = floor(true)?;
    crate::ssh::persist::close(&crate::ssh::persist::sockets(&sockets));

    let commands: [(&str, &[&str]); 3] = [
        ("logs --all -n 100", &["logs", "--all", "-n", "100"]),
        ("exec --all -- true", &["exec", "--all", "--", "true"]),
        (
            "status --no-eval (with the health columns)",
            &["status", "--no-eval"],
        ),
    ];
    let mut rows = Vec::new();
    for (what, args) in commands {
        let c = cold(args)?;
        let w = warm(args)?;
        rows.push((what, c, w));
    }
    let profile = profile(&fleet, &xtask, &plain, &socket)?;
    close()?;
    println!();
    println!(
        "{hosts} fake Pis, median of {RUNS} runs each; load average now: {} ({} CPUs)",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "SSH floor, plain `ssh host true` to all {hosts} at once: cold (new connections) {floor_cold:.2} s, warm (through open masters) {floor_warm:.2} s"
    );
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    println!(
        "{:<width$}  {:>7} {:>7}  {:>7} {:>7}  verdict (goal ≤ {GOAL:.0} s)",
        "command", "cold", "× floor", "warm", "× floor"
    );
    for (what, c, w) in &rows {
        let verdict = match (*c <= GOAL, *w <= GOAL) {
            (true, true) => "met cold and warm".to_string(),
            (false, true) => "met warm only".to_string(),
            (true, false) => "met cold only".to_string(),
            (false, false) if floor_cold > GOAL => {
                "not met: the SSH floor itself is over the goal on this machine now".to_string()
            }
            (false, false) => "not met".to_string(),
        };
        println!(
            "{what:<width$}  {c:>6.2}s {:>6.1}×  {w:>6.2}s {:>6.1}×  {verdict}",
            c / floor_cold,
            w / floor_warm
        );
    }
    println!(
        "where the time goes, one host ({}), median of {RUNS}:",
        profile.host
    );
    for (what, t) in &profile.rows {
        println!("  {what:<58} {t:>6.3} s");
    }
    Ok(())
}

struct Profile {
    host: String,
    rows: Vec<(&'static str, f64)>,
}

/// One host's parts, warm: the xtask's own start, SSH through an open
/// master, the remote work of `logs` and `status` timed on the Pi, and the
/// whole commands.
fn profile(
    fleet: &fakepi::Fleet,
    xtask: &dyn Fn(&[&str]) -> Result<f64>,
    plain: &dyn Fn(u16, &[String]) -> Command,
    socket: &dyn Fn(u16) -> String,
) -> Result<Profile> {
    let pi = &fleet.pis[0];
    let host = pi.name.clone();
    let times = |f: &dyn Fn() -> Result<f64>| -> Result<f64> {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            runs.push(f()?);
        }
        Ok(median(runs))
    };
    // Seconds a shell script takes on the Pi, measured there.
    let on_pi = |script: &str| -> Result<f64> {
        let out = fleet
            .ssh_try(
                &host,
                &format!(
                    "s=$(date +%s%N); {{ {script}\n}} >/dev/null 2>&1; e=$(date +%s%N); echo $((e - s))"
                ),
            )
            .map_err(anyhow::Error::msg)?;
        Ok(out.trim().parse::<f64>().context("no time from the Pi")? / 1e9)
    };
    let extra = ["-M", "-N", "-f", "-o", "ControlPersist=60", "-S"]
        .map(String::from)
        .into_iter()
        .chain([socket(pi.port)])
        .collect::<Vec<_>>();
    plain(pi.port, &extra)
        .arg("root@127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let mux = vec!["-S".to_string(), socket(pi.port)];
    let ssh_true = times(&|| {
        let start = Instant::now();
        plain(pi.port, &mux)
            .args(["root@127.0.0.1", "true"])
            .status()?;
        Ok(start.elapsed().as_secs_f64())
    })?;
    crate::ssh::persist::close(&[std::path::PathBuf::from(socket(pi.port))]);
    let probe = format!("{}{}", crate::health::SCRIPT, crate::deploy::remote::PROBE);
    xtask(&["exec", &host, "--", "true"])?;
    Ok(Profile {
        rows: vec![
            (
                "cargo xtask --version (start, parse, exit)",
                times(&|| xtask(&["--version"]))?,
            ),
            ("ssh host true through an open master", ssh_true),
            (
                "on the Pi: journalctl -n 100 -o json",
                times(&|| on_pi("journalctl --no-pager -q -o json -n 100"))?,
            ),
            (
                "on the Pi: status's probe script",
                times(&|| on_pi(&probe))?,
            ),
            (
                "exec <host> -- true, warm",
                times(&|| xtask(&["exec", &host, "--", "true"]))?,
            ),
            (
                "logs <host> -n 100, warm",
                times(&|| xtask(&["logs", &host, "-n", "100"]))?,
            ),
            (
                "status --no-eval <host>, warm",
                times(&|| xtask(&["status", "--no-eval", &host]))?,
            ),
        ],
        host,
    })
}
