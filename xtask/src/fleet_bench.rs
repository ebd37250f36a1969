//! `cargo xtask bench fleet`: figures for `logs`, `exec` and `status` on
//! fake Pis (tests/common/fakepi.rs: systemd-nspawn containers with real
//! systemd, journald and sshd), each the median of 5 runs, with the
//! verdict against the goal of 1 s for 8 hosts. Needs root.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

// The same harness as deploy/bench.rs, compiled once more here so that
// deploy/ stays as it is.
#[allow(clippy::duplicate_mod)]
#[path = "../tests/common/fakepi.rs"]
mod fakepi;
#[allow(clippy::duplicate_mod)]
#[path = "../tests/common/nixenv.rs"]
mod nixenv;

/// The goal for each command, in seconds.
const GOAL: f64 = 1.0;

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
    let time = |args: &[&str]| -> Result<f64> {
        let mut runs = Vec::new();
        for _ in 0..5 {
            let mut c = Command::new(&exe);
            c.arg("--flake").arg(fleet.repo()).args(args);
            for (k, v) in fleet.env() {
                c.env(k, v);
            }
            let start = Instant::now();
            let out = c.output()?;
            runs.push(start.elapsed().as_secs_f64());
            if !out.status.success() {
                bail!(
                    "cargo xtask {} failed:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if args[0] == "logs" {
                let lines = String::from_utf8_lossy(&out.stdout).lines().count();
                if lines < 100 * hosts {
                    bail!("logs printed {lines} lines, fewer than 100 per host");
                }
            }
        }
        runs.sort_by(f64::total_cmp);
        Ok(runs[2])
    };
    // The floor: one plain `ssh host true` per Pi, all at once (no xtask).
    let floor = {
        let mut runs = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            let children: Vec<_> = fleet
                .pis
                .iter()
                .map(|p| {
                    Command::new("ssh")
                        .arg("-F")
                        .arg(fleet.work().join("ssh_config"))
                        .args([
                            "-o",
                            "BatchMode=yes",
                            "-p",
                            &p.port.to_string(),
                            "root@127.0.0.1",
                            "true",
                        ])
                        .spawn()
                })
                .collect::<std::io::Result<_>>()?;
            for mut c in children {
                c.wait()?;
            }
            runs.push(start.elapsed().as_secs_f64());
        }
        runs.sort_by(f64::total_cmp);
        runs[2]
    };
    let rows = [
        ("logs --all -n 100", time(&["logs", "--all", "-n", "100"])?),
        (
            "exec --all -- true",
            time(&["exec", "--all", "--", "true"])?,
        ),
        (
            "status --no-eval (with the health columns)",
            time(&["status", "--no-eval"])?,
        ),
    ];
    println!();
    println!(
        "floor: plain `ssh host true` to all {hosts} at once: {floor:.2} s (median of 5); load average now: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (what, s) in &rows {
        let verdict = if *s <= GOAL { "ok" } else { "over the goal" };
        println!(
            "{what:<width$}  {s:>6.2} s  (median of 5, {hosts} hosts; goal ≤ {GOAL:.0} s: {verdict})"
        );
    }
    Ok(())
}
