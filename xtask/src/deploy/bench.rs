//! `cargo xtask bench deploy`: figures for deploy and status on fake Pis
//! (the test harness in tests/common/fakepi.rs: systemd-nspawn containers
//! with real systemd, sshd and Nix). Needs root, systemd-container,
//! debootstrap and nix.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::bench_harness::fakepi;

/// Boots `hosts` fake Pis and prints the figures.
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
    fleet.boot_all();
    eprintln!(
        "bench: {hosts} fake Pis booted and installed in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe()?;
    let xtask = |args: &[&str]| -> Result<Duration> {
        let mut c = Command::new(&exe);
        c.arg("--flake").arg(fleet.repo()).args(args);
        for (k, v) in fleet.env() {
            c.env(k, v);
        }
        let start = Instant::now();
        let out = c.output()?;
        let took = start.elapsed();
        if args.contains(&"--all") || !out.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(took)
    };
    let set_all = |v: &str| {
        for n in &names {
            fleet.set(n, &fakepi::Spec::version(v));
        }
    };
    let mut rows: Vec<(String, f64)> = Vec::new();

    set_all("seq");
    let mut seq = Duration::ZERO;
    for n in &names {
        seq += xtask(&["deploy", n])?;
    }
    rows.push((
        format!("deploy, {hosts} hosts one after another"),
        seq.as_secs_f64(),
    ));

    set_all("jobs1");
    let one = xtask(&["deploy", "--all", "--jobs", "1"])?;
    rows.push(("deploy --all --jobs 1".into(), one.as_secs_f64()));

    set_all("all8");
    let par = xtask(&["deploy", "--all", "--jobs", &hosts.to_string()])?;
    rows.push((format!("deploy --all --jobs {hosts}"), par.as_secs_f64()));

    set_all("all4");
    let par4 = xtask(&["deploy", "--all"])?;
    rows.push(("deploy --all (default 4 jobs)".into(), par4.as_secs_f64()));

    let mut status = Vec::new();
    for _ in 0..5 {
        status.push(xtask(&["status"])?.as_secs_f64());
    }
    status.sort_by(f64::total_cmp);
    rows.push((format!("status, {hosts} hosts (median of 5)"), status[2]));
    let mut status_no_eval = Vec::new();
    for _ in 0..5 {
        status_no_eval.push(xtask(&["status", "--no-eval"])?.as_secs_f64());
    }
    status_no_eval.sort_by(f64::total_cmp);
    rows.push((
        format!("status --no-eval, {hosts} hosts (median of 5)"),
        status_no_eval[2],
    ));

    // A host that accepts TCP and never answers: only the timeout ends it.
    let silent = fakepi::Silent::new();
    fleet.set_endpoint(&names[0], "127.0.0.1", silent.port);
    let down = xtask(&["status"])?;
    rows.push((
        format!("status, {hosts} hosts, one silent (connect timeout 5 s)"),
        down.as_secs_f64(),
    ));
    let down_deploy = xtask(&["deploy", &names[0]])?;
    rows.push((
        "deploy to the silent host (connect timeout 5 s)".into(),
        down_deploy.as_secs_f64(),
    ));

    println!();
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (what, s) in &rows {
        println!("{what:<width$}  {s:>6.2} s");
    }
    println!(
        "\nparallel / sequential: {:.2} (--jobs {hosts}), {:.2} (4 jobs); goal ≤ 0.40\nparallel / --jobs 1: {:.2} (--jobs {hosts}), {:.2} (4 jobs)",
        par.as_secs_f64() / seq.as_secs_f64(),
        par4.as_secs_f64() / seq.as_secs_f64(),
        par.as_secs_f64() / one.as_secs_f64(),
        par4.as_secs_f64() / one.as_secs_f64()
    );
    Ok(())
}
