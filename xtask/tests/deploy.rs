//! deploy / rollback / status against fake Pis: real systemd (nspawn),
//! real sshd, real Nix on both sides. See tests/common/fakepi.rs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::fakepi::{self, Fleet, Spec};

/// The shared Debian root, or None when the test must skip.
fn base() -> Option<std::path::PathBuf> {
    if !common::prerequisite(fakepi::missing()) {
        return None;
    }
    match fakepi::base(Path::new(env!("CARGO_TARGET_TMPDIR"))) {
        Ok(b) => Some(b),
        Err(e) => {
            common::prerequisite(Some(format!("cannot make the fake Pi root: {e}")));
            None
        }
    }
}

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn xtask(f: &Fleet, args: &[&str], stdin: &str) -> Run {
    let mut cmd = common::xtask(&f.repo());
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    cmd.args(args).write_stdin(stdin.to_string());
    let start = Instant::now();
    let out = cmd.output().unwrap();
    let r = Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        took: start.elapsed(),
    };
    eprintln!(
        "--- cargo xtask {} ({:.1} s, {})\n{}\n{}",
        args.join(" "),
        r.took.as_secs_f64(),
        if r.ok { "ok" } else { "failed" },
        r.stdout,
        r.stderr
    );
    r
}

/// `status HOST --json`, its exit code checked against what it says:
/// 0 in sync and booting what runs, 3 reachable but not, 2 unreachable.
fn status_json(f: &Fleet, host: &str) -> serde_json::Value {
    let r = xtask(f, &["status", host, "--json"], "");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let s = v[0].clone();
    let want = if s["reachable"] != true {
        2
    } else if s["sync"] == "in sync" && s["next_boot_differs"] == false && s["nixos"] == true {
        0
    } else {
        3
    };
    assert_eq!(r.code, Some(want), "status exit code for {s}");
    s
}

/// A version no other run used (a derivation not in any store yet).
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}x{nanos}", std::process::id())
}

/// Makes the fleet's repository a Git checkout and commits everything;
/// returns the commit's first 12 digits.
fn commit(f: &Fleet, msg: &str) -> String {
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(f.repo())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if !f.repo().join(".git").exists() {
        git(&["init", "-q"]);
        std::fs::write(f.repo().join(".gitignore"), "out/\n").unwrap();
    }
    git(&["add", "-A"]);
    git(&["commit", "-q", "--allow-empty", "-m", msg]);
    git(&["rev-parse", "HEAD"])[..12].to_string()
}

#[test]
fn deploy_status_drift_and_rollback() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    let first = f.current("pi-a");
    assert_eq!(f.generation("pi-a"), 1);
    // Like a host without containers or Compose projects, the fake Pi has
    // no Docker: status and deploy's health check get by without it.
    assert_eq!(
        f.ssh("pi-a", "command -v docker || echo none").trim(),
        "none"
    );
    let s = status_json(&f, "pi-a");
    assert_eq!(s["sync"], "in sync");
    assert_eq!(
        (&s["containers_declared"], &s["containers_running"]),
        (&serde_json::json!(0), &serde_json::json!(0))
    );

    // Deploying what already runs (the first deploy after flashing) changes nothing.
    let before = f.activations("pi-a").len();
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(r.ok, "deploy failed");
    assert!(
        r.stdout.contains("unchanged") && r.stdout.contains("1 (unchanged)"),
        "{}",
        r.stdout
    );
    assert_eq!(f.generation("pi-a"), 1);
    assert_eq!(
        f.activations("pi-a").len(),
        before,
        "nothing may be activated"
    );

    // One deploy: profile moved, activation ran in systemd, in sync.
    f.set("pi-a", &Spec::version("1"));
    let c1 = commit(&f, "v1");
    let v1 = f.build("pi-a");
    let r = xtask(&f, &["deploy", "pi-a", "--confirm-timeout", "20"], "");
    assert!(r.ok, "deploy failed");
    assert!(
        r.stdout.contains("switched") && r.stdout.contains("1 → 2"),
        "{}",
        r.stdout
    );
    assert_eq!(f.generation("pi-a"), 2);
    assert_eq!(f.current("pi-a"), v1);
    assert_eq!(
        f.activations("pi-a").last().unwrap(),
        &("switch".into(), v1.clone())
    );
    let s = status_json(&f, "pi-a");
    assert_eq!(s["sync"], "in sync", "{s}");
    assert_eq!(s["generation"], 2);
    assert_eq!(s["nixos_version"], "26.05.fake-1");
    // The watchdog was cancelled: nothing rolls back later.
    assert_eq!(
        f.ssh(
            "pi-a",
            "systemctl list-timers --all --no-legend 'pi-nixos-rollback-*' | wc -l"
        ),
        "0"
    );

    assert_eq!(s["deployed_commit"], c1.as_str(), "{s}");

    // The repo moves on: outdated.
    f.set("pi-a", &Spec::version("2"));
    let c2 = commit(&f, "v2");
    let s = status_json(&f, "pi-a");
    assert_eq!(s["sync"], "outdated", "{s}");
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(r.ok);
    assert_eq!(f.generation("pi-a"), 3);
    let v2 = f.current("pi-a");

    // `rollback`: back to generation 2, with the same safety and a record.
    let r = xtask(&f, &["rollback", "pi-a", "--confirm-timeout", "20"], "");
    assert!(r.ok, "rollback failed");
    assert!(r.stdout.contains("3 → 2"), "{}", r.stdout);
    assert_eq!(f.generation("pi-a"), 2);
    assert_eq!(f.current("pi-a"), v1);
    let s = status_json(&f, "pi-a");
    assert_eq!(s["sync"], "outdated");
    // The rollback records the commit of the system it returned to.
    assert_eq!(s["deployed_commit"], c1.as_str(), "{s}");

    // A change by hand on the Pi: drifted.
    f.ssh(
        "pi-a",
        "nix-env -p /nix/var/nix/profiles/system --switch-generation 1 && /nix/var/nix/profiles/system/bin/switch-to-configuration switch",
    );
    assert_eq!(f.current("pi-a"), first);
    let s = status_json(&f, "pi-a");
    assert_eq!(s["sync"], "drifted", "{s}");
    // The SD image `cargo xtask sd` recorded for the host shows too.
    std::fs::create_dir_all(f.repo().join("out/pi-a")).unwrap();
    std::fs::write(
        f.repo().join("out/pi-a/pi-a.img.json"),
        r#"{"host":"pi-a","commit":"0123456789abcdef","dirty":false,"sha256":"00","size":1,"raw_sha256":"00","raw_size":1,"built":"2026-05-01T10:00:00Z","store_path":"/nix/store/x","wifi":null}"#,
    )
    .unwrap();
    let r = xtask(&f, &["status"], "");
    assert!(r.stdout.contains("drifted") && r.stdout.contains("changed on the host by hand"));
    assert!(r.stdout.contains("0123456 (2026-05-01)"), "{}", r.stdout);

    // rollback --to N: back to what Git builds.
    let r = xtask(&f, &["rollback", "pi-a", "--to", "3"], "");
    assert!(r.ok);
    assert_eq!(f.current("pi-a"), v2);
    let s = status_json(&f, "pi-a");
    assert_eq!(s["sync"], "in sync");
    assert_eq!(s["deployed_commit"], c2.as_str(), "{s}");

    // The profile moved by hand (the next boot starts generation 2): not in sync.
    f.ssh(
        "pi-a",
        "nix-env -p /nix/var/nix/profiles/system --switch-generation 2",
    );
    let s = status_json(&f, "pi-a");
    assert_eq!(s["next_boot_differs"], true, "{s}");
    let r = xtask(&f, &["status", "pi-a"], "");
    assert!(r.stdout.contains("next boot differs"), "{}", r.stdout);
    f.ssh(
        "pi-a",
        "nix-env -p /nix/var/nix/profiles/system --switch-generation 3",
    );

    // `deploy --boot`: the next boot differs until a reboot.
    f.set("pi-a", &Spec::version("3"));
    let r = xtask(&f, &["deploy", "pi-a", "--boot"], "");
    assert!(r.ok);
    let s = status_json(&f, "pi-a");
    assert_eq!(s["next_boot_differs"], true, "{s}");
    assert_eq!(s["running"], v2.as_str(), "{s}");
    let r = xtask(&f, &["rollback", "pi-a", "--to", "9"], "");
    assert!(
        !r.ok && r.stdout.contains("has no generation 9"),
        "{}",
        r.stdout
    );
}

#[test]
fn deploy_all_in_parallel_with_one_host_down() {
    let Some(base) = base() else { return };
    let names = ["pi-a", "pi-b", "pi-c", "pi-d", "pi-e"];
    let mut f = Fleet::new(&base, &names);
    f.boot_all();
    f.stop("pi-e");
    for n in names {
        f.set(n, &Spec::version("1"));
    }
    let r = xtask(
        &f,
        &["deploy", "--all", "--jobs", "5", "--connect-timeout", "3"],
        "",
    );
    assert!(!r.ok, "a host was down: the exit code must say so");
    assert!(
        r.stderr.contains("deploy failed on 1 of 5 host(s)"),
        "{}",
        r.stderr
    );
    for n in &names[..4] {
        assert_eq!(f.generation(n), 2, "{n}");
        let line = r.stdout.lines().find(|l| l.starts_with(n)).unwrap();
        assert!(
            line.contains("switched") && line.contains("1 → 2"),
            "{line}"
        );
    }
    let line = r.stdout.lines().find(|l| l.starts_with("pi-e ")).unwrap();
    assert!(line.contains("UNREACHABLE"), "{line}");
    assert!(
        r.stdout
            .contains("pi-e: 127.0.0.1 answered but refused the connection on port"),
        "{}",
        r.stdout
    );
    // rollback --tag, like deploy: every tagged host, the down one failing.
    let r = xtask(
        &f,
        &[
            "rollback",
            "--tag",
            "fake",
            "--jobs",
            "5",
            "--connect-timeout",
            "3",
        ],
        "",
    );
    assert!(
        !r.ok && r.stderr.contains("rollback failed on 1 of 5 host(s)"),
        "{}",
        r.stderr
    );
    for n in &names[..4] {
        assert_eq!(f.generation(n), 1, "{n}");
    }
    let d = xtask(&f, &["rollback", "--all", "--dry-run"], "");
    assert!(d.ok && d.stdout.contains("# pi-e "), "{}", d.stdout);

    // In parallel: the run took less than the hosts' times added up.
    let total: f64 = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("pi-"))
        .filter_map(|l| l.split_whitespace().rev().nth(1)?.parse::<f64>().ok())
        .sum();
    assert!(
        r.took.as_secs_f64() < total * 0.8,
        "took {:.1} s for {total:.1} s of host work",
        r.took.as_secs_f64()
    );
}

#[test]
fn build_host_builds_natively() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a", "pi-builder"]);
    f.boot_all();
    f.ssh_alias("pi-builder", "builder");
    // A system no earlier run built: this machine's store cannot have it,
    // so the copy back from the build host meets Nix's signature check.
    let unique = unique("bh");
    f.set("pi-a", &Spec::version(&unique));
    let r = xtask(&f, &["deploy", "pi-a", "--build-host", "root@builder"], "");
    assert!(r.ok, "deploy with a build host failed");
    let path = f.current("pi-a");
    assert!(
        path.ends_with(&format!("nixos-system-pi-a-{unique}")),
        "{path}"
    );
    // Only the derivation was sent there: the system was built on it.
    f.ssh("pi-builder", &format!("nix-store --check-validity {path}"));
    assert!(r.stderr.contains("nix-store --realise"), "{}", r.stderr);
}

#[test]
fn failed_activation_rolls_back_at_once() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    let old = f.current("pi-a");
    f.set("pi-a", &Spec::version("1").mode("fail"));
    let new = f.build("pi-a");
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(!r.ok);
    // The activation's own error, not nix-env's "switching profile from version …".
    assert!(
        r.stdout.contains(
            "activation failed: fake activation failure; pi-a rolled itself back to generation 1"
        ),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("switching profile"), "{}", r.stdout);
    let line = r.stdout.lines().find(|l| l.starts_with("pi-a ")).unwrap();
    assert!(
        line.contains("ROLLED BACK") && line.contains("1 (unchanged)"),
        "{line}"
    );
    assert_eq!(f.generation("pi-a"), 1);
    assert_eq!(f.current("pi-a"), old);
    let acts = f.activations("pi-a");
    let n = acts.len();
    assert_eq!(acts[n - 2], ("switch".to_string(), new));
    assert_eq!(acts[n - 1], ("switch".to_string(), old));
}

#[test]
fn health_check_failure_rolls_back() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    let old = f.current("pi-a");
    f.set("pi-a", &Spec::version("1").mode("failunit"));
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(!r.ok);
    assert!(
        r.stdout.contains("fakepi-broken") && r.stdout.contains("rolled back to generation 1"),
        "{}",
        r.stdout
    );
    assert_eq!(f.current("pi-a"), old);

    // A declared container that does not run fails the health check too.
    f.set("pi-a", &Spec::version("2"));
    std::fs::write(
        f.repo().join("hosts/pi-a/containers.toml"),
        "[[container]]\nname = \"web\"\nimage = \"nginx@sha256:0000\"\n",
    )
    .unwrap();
    let r = xtask(&f, &["deploy", "pi-a", "--health-timeout", "3"], "");
    assert!(!r.ok);
    assert!(
        r.stdout.contains("not running after 3 s: web"),
        "{}",
        r.stdout
    );
    assert_eq!(f.current("pi-a"), old);
    assert_eq!(status_json(&f, "pi-a")["containers_declared"], 1);
}

#[test]
fn cut_connection_means_the_pi_rolls_itself_back() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    let old = f.current("pi-a");
    f.set("pi-a", &Spec::version("1").mode("cut"));
    let new = f.build("pi-a");
    let r = xtask(&f, &["deploy", "pi-a", "--confirm-timeout", "8"], "");
    assert!(!r.ok);
    assert!(
        r.stdout.contains("rolled itself back to generation 1"),
        "{}",
        r.stdout
    );
    assert!(r.took < Duration::from_secs(8 + 30), "took {:?}", r.took);
    assert_eq!(f.generation("pi-a"), 1);
    assert_eq!(f.current("pi-a"), old);
    // The new system was activated, then the watchdog went back.
    let acts = f.activations("pi-a");
    assert!(acts.contains(&("switch".to_string(), new)));
    assert_eq!(acts.last().unwrap(), &("switch".to_string(), old));
    let journal = f.ssh(
        "pi-a",
        "journalctl --no-pager -q -u 'pi-nixos-rollback-*' | tail -n 20",
    );
    assert!(journal.contains("no confirmation arrived"), "{journal}");
}

#[test]
fn without_systemd_activation_runs_plainly_and_the_watchdog_still_works() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.without_systemd("pi-a");
    f.boot_all();
    assert_eq!(
        f.ssh("pi-a", "[ -d /run/systemd/system ] && echo yes || echo no"),
        "no"
    );
    let old = f.current("pi-a");
    f.set("pi-a", &Spec::version("1"));
    let r = xtask(&f, &["deploy", "pi-a", "--confirm-timeout", "20"], "");
    assert!(r.ok, "deploy without systemd failed");
    assert!(
        r.stderr.contains("no systemd on the target"),
        "{}",
        r.stderr
    );
    assert_eq!(f.generation("pi-a"), 2);
    let v1 = f.current("pi-a");
    assert_ne!(v1, old);

    // The watchdog is a background sleep here; it still rolls back.
    f.set("pi-a", &Spec::version("2").mode("cut"));
    let r = xtask(&f, &["deploy", "pi-a", "--confirm-timeout", "6"], "");
    assert!(!r.ok);
    assert!(
        r.stdout.contains("rolled itself back to generation 2"),
        "{}",
        r.stdout
    );
    assert_eq!(f.generation("pi-a"), 2);
    assert_eq!(f.current("pi-a"), v1);
}

#[test]
fn refusals_change_nothing() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    let acts = f.activations("pi-a").len();

    // Lock-out guard: sshd off.
    let mut spec = Spec::version("1");
    spec.sshd = false;
    f.set("pi-a", &spec);
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(!r.ok && r.stdout.contains("disables sshd"), "{}", r.stdout);

    // Lock-out guard: our key no longer authorized.
    let mut spec = Spec::version("1");
    spec.keys = Some(vec![common::TEST_KEY.into()]);
    f.set("pi-a", &spec);
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(
        !r.ok && r.stdout.contains("does not authorize the key"),
        "{}",
        r.stdout
    );

    // Preflight: built for another system than the target runs.
    let mut spec = Spec::version("1");
    spec.system = Some("aarch64-linux".into());
    f.set("pi-a", &spec);
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(
        !r.ok
            && r.stdout
                .contains("runs x86_64-linux but its configuration is built for aarch64-linux"),
        "{}",
        r.stdout
    );

    // Dry run: every command printed, none run.
    f.set("pi-a", &Spec::version("1"));
    let r = xtask(&f, &["deploy", "pi-a", "--dry-run"], "");
    assert!(r.ok);
    for needle in [
        " build --no-link --json",
        " copy --to ssh://root@127.0.0.1",
        "systemd-run",
        "ControlPath=none",
        "AccuracySec",
        "flock -n 9",
        "pi-nixos-rollback-$tok-$1",
    ] {
        assert!(r.stdout.contains(needle), "dry run lacks {needle}");
    }

    // Unknown host key: shown and asked; no answer refuses, `y` trusts it.
    std::fs::write(f.work().join("known_hosts"), "").unwrap();
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(
        !r.ok && r.stdout.contains("host key not trusted"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("SHA256:") && r.stderr.contains("trust it?"));
    let r = xtask(&f, &["deploy", "pi-a"], "y\n");
    assert!(r.ok);
    // Only this last deploy changed the Pi: one activation, generation 2.
    assert_eq!(
        f.activations("pi-a").len(),
        acts + 1,
        "a refused deploy changed the Pi"
    );
    assert_eq!(f.generation("pi-a"), 2);
    let kh = std::fs::read_to_string(f.work().join("known_hosts")).unwrap();
    assert!(kh.contains(&format!("[127.0.0.1]:{}", f.pi("pi-a").port)));

    // A changed host key: refused, with the command for the file ssh reads here.
    let name = format!("[127.0.0.1]:{}", f.pi("pi-a").port);
    std::fs::write(
        f.work().join("known_hosts"),
        format!("{name} {}\n", common::TEST_KEY.rsplit_once(' ').unwrap().0),
    )
    .unwrap();
    let r = xtask(&f, &["deploy", "pi-a"], "");
    let want = format!(
        "ssh-keygen -R '{name}' -f {}",
        f.work().join("known_hosts").display()
    );
    assert!(
        !r.ok && r.stdout.contains("CHANGED") && r.stdout.contains(&want),
        "{}",
        r.stdout
    );
    let r = xtask(&f, &["status", "pi-a"], "");
    assert!(r.stdout.contains(&want), "{}", r.stdout);
}

#[test]
fn an_unreachable_host_costs_the_connect_timeout() {
    if !common::prerequisite(common::need_program("ssh", "openssh-client")) {
        return;
    }
    // No Pi boots here: the repository alone, its host behind a port that
    // accepts connections and never answers (only the timeout ends them).
    let f = Fleet::new(&std::env::temp_dir(), &["pi-gone"]);
    let silent = fakepi::Silent::new();
    f.set_endpoint("pi-gone", "127.0.0.1", silent.port);
    let r = xtask(&f, &["status", "--connect-timeout", "2", "--no-eval"], "");
    assert_eq!(r.code, Some(2), "an unreachable host: exit 2");
    assert!(r.stdout.contains("unreachable"), "{}", r.stdout);
    assert!(r.took >= Duration::from_secs(2), "took {:?}", r.took);
    assert!(r.took < Duration::from_secs(2 + 3), "took {:?}", r.took);
    let r = xtask(&f, &["deploy", "pi-gone", "--connect-timeout", "2"], "");
    assert!(!r.ok && r.stdout.contains("UNREACHABLE"), "{}", r.stdout);
    assert!(r.took < Duration::from_secs(2 + 3), "took {:?}", r.took);
}

#[test]
fn status_exit_code_nulls_refused_ports_and_rejected_zeros() {
    if !common::prerequisite(common::need_program("ssh", "openssh-client")) {
        return;
    }
    // No Pi: a port where nothing listens (the host answers, sshd does not).
    let f = Fleet::new(&std::env::temp_dir(), &["pi-off"]);
    let port = fakepi::free_port();
    f.set_endpoint("pi-off", "127.0.0.1", port);
    let r = xtask(&f, &["status", "--no-eval", "--json"], "");
    assert_eq!(r.code, Some(2), "every host unreachable: exit 2");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let s = &v[0];
    assert_eq!(s["reachable"], false);
    for unknown in [
        "containers_running",
        "failed_units",
        "sync",
        "nixos",
        "next_boot_differs",
    ] {
        assert!(s[unknown].is_null(), "{unknown} must be null: {s}");
    }
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .contains("sshd is not running or listens on another port"),
        "{s}"
    );
    assert!(!s["error"].as_str().unwrap().contains("powered"), "{s}");

    // Zeros that would mean "wait forever" or "do nothing" are refused.
    for args in [
        &["status", "--connect-timeout", "0"][..],
        &["deploy", "pi-off", "--connect-timeout", "0"],
        &["deploy", "pi-off", "--jobs", "0"],
        &["rollback", "pi-off", "--jobs", "0"],
        &["rollback", "pi-off", "--activation-timeout", "0"],
    ] {
        let r = xtask(&f, args, "");
        assert!(!r.ok, "{args:?} accepted");
        assert!(
            r.took < Duration::from_secs(3),
            "{args:?} took {:?}",
            r.took
        );
        assert!(
            r.stderr.contains("--connect-timeout")
                || r.stderr.contains("--jobs")
                || r.stderr.contains("--activation-timeout"),
            "{}",
            r.stderr
        );
    }

    // The summary shows Nix's real error, not its "--show-trace" hint.
    let closed = fakepi::free_port();
    let spec = f.repo().join("hosts/pi-off/default.nix");
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "sshd = true;",
        &format!("sshd = builtins.pathExists (builtins.fetchurl {{ url = \"http://127.0.0.1:{closed}/v\"; sha256 = \"{zeros}\"; }});",
            zeros = "0".repeat(64)),
    );
    assert!(text.contains("fetchurl"), "{text}");
    std::fs::write(&spec, text).unwrap();
    let r = xtask(&f, &["deploy", "pi-off"], "");
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("pi-off: "))
        .unwrap_or("");
    assert!(line.contains("unable to download"), "{}", r.stdout);
    assert!(!line.contains("show-trace"), "{line}");
}

/// Starts `cargo xtask` in the background on `repo` with the fleet's env.
fn spawn(f: &Fleet, repo: &Path, args: &[&str], extra: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("--flake").arg(repo).args(args);
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(c: std::process::Child) -> Run {
    let start = Instant::now();
    let out = c.wait_with_output().unwrap();
    let r = Run {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
        took: start.elapsed(),
    };
    eprintln!(
        "--- background cargo xtask ({})\n{}\n{}",
        if r.ok { "ok" } else { "failed" },
        r.stdout,
        r.stderr
    );
    r
}

#[test]
fn concurrent_deploys_of_one_host_are_kept_apart() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    // A second checkout of the same fleet, with another system for pi-a.
    let other = f.work().join("checkout-2");
    common::copy(&f.repo(), &other);
    f.set("pi-a", &Spec::version("one").mode("slow"));
    std::fs::write(
        other.join("hosts/pi-a/default.nix"),
        std::fs::read_to_string(f.repo().join("hosts/pi-a/default.nix"))
            .unwrap()
            .replace("\"one\"", "\"two\""),
    )
    .unwrap();
    // Three runs at once: two from the first checkout (same second), one from the second.
    let runs: Vec<std::process::Child> = vec![
        spawn(&f, &f.repo(), &["deploy", "pi-a"], &[]),
        spawn(&f, &f.repo(), &["deploy", "pi-a"], &[]),
        spawn(&f, &other, &["deploy", "pi-a"], &[]),
    ];
    let runs: Vec<Run> = runs.into_iter().map(finish).collect();
    let ok: Vec<usize> = (0..3).filter(|&i| runs[i].ok).collect();
    assert_eq!(ok.len(), 1, "exactly one run may deploy pi-a");
    for (i, r) in runs.iter().enumerate() {
        if i == ok[0] {
            assert!(
                r.stdout.contains("switched") && r.stdout.contains("1 → 2"),
                "{}",
                r.stdout
            );
            continue;
        }
        // Refused, saying who holds the lock; never a false lock-out refusal.
        assert!(
            r.stdout.contains("is being deployed or rolled back by")
                && r.stdout.contains(" pid ")
                && r.stdout.contains(" run deploy-")
                && r.stdout.contains(" since "),
            "{}",
            r.stdout
        );
        assert!(!r.stdout.contains("does not authorize"), "{}", r.stdout);
    }
    // What the winner installed is what runs.
    let want = if ok[0] == 2 { "two" } else { "one" };
    assert!(
        f.current("pi-a").ends_with(&format!("-{want}")),
        "{}",
        f.current("pi-a")
    );
    assert_eq!(f.generation("pi-a"), 2);
    // Every run had its own log folder, also the two of the same second.
    let logs = std::fs::read_dir(f.repo().join("out/logs"))
        .unwrap()
        .count();
    assert_eq!(logs, 2, "runs of the first checkout shared a log folder");
    // The lock is free again: the next run goes through.
    f.set("pi-a", &Spec::version("three"));
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(r.ok, "the lock was not released");
}

#[test]
fn a_cut_connection_during_a_failing_activation_is_learned_from_the_pi() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    let old = f.current("pi-a");
    f.set("pi-a", &Spec::version("1").mode("cutfail"));
    let r = xtask(&f, &["deploy", "pi-a", "--confirm-timeout", "8"], "");
    assert!(!r.ok);
    assert!(
        r.stdout.contains(
            "activation failed: fake activation failure after a cut; pi-a rolled itself back to generation 1"
        ),
        "{}",
        r.stdout
    );
    // The activation's own connection was cut (ssh's 255), the outcome came from the Pi.
    assert!(r.stderr.contains("(exit status: 255)"), "{}", r.stderr);
    // Learned as soon as the Pi answers again, not after the 15 minutes of "pending".
    assert!(r.took < Duration::from_secs(30), "took {:?}", r.took);
    assert_eq!(f.current("pi-a"), old);
    assert_eq!(f.generation("pi-a"), 1);
}

#[test]
fn a_hanging_activation_is_stopped_and_rolled_back() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    let old = f.current("pi-a");
    f.set("pi-a", &Spec::version("1").mode("hang"));
    let r = xtask(
        &f,
        &[
            "deploy",
            "pi-a",
            "--activation-timeout",
            "6",
            "--confirm-timeout",
            "5",
        ],
        "",
    );
    assert!(!r.ok);
    assert!(
        r.stdout.contains(
            "activation did not finish within 6s; pi-a rolled itself back to generation 1"
        ),
        "{}",
        r.stdout
    );
    // Bounded: activation timeout + confirm timeout + the stated grace.
    assert!(
        r.took < Duration::from_secs(6 + 5 + 60),
        "took {:?}",
        r.took
    );
    assert_eq!(f.current("pi-a"), old);
    assert_eq!(f.generation("pi-a"), 1);
    // The hung activation was stopped.
    assert_eq!(
        f.ssh(
            "pi-a",
            "systemctl list-units --no-legend --plain 'pi-nixos-switch-*' | grep -c running || true"
        ),
        "0"
    );
}

#[test]
fn sigterm_leaves_no_ssh_master_or_temp_folder() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    f.set("pi-a", &Spec::version("1").mode("slow"));
    // Short: ssh's socket paths must stay under 108 bytes.
    let tmp_dir = fakepi::TempDir::new("pxt");
    let tmp = tmp_dir.0.clone();
    let child = spawn(
        &f,
        &f.repo(),
        &["deploy", "pi-a"],
        &[("TMPDIR", tmp.to_str().unwrap())],
    );
    // Wait until the activation runs (the host is locked, masters open).
    let start = Instant::now();
    loop {
        let logs = f.repo().join("out/logs");
        let activating = std::fs::read_dir(&logs)
            .ok()
            .and_then(|mut d| d.next())
            .is_some_and(|d| {
                std::fs::read_to_string(d.unwrap().path().join("pi-a.log"))
                    .unwrap_or_default()
                    .contains("== activating")
            });
        if activating {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "the deploy never reached activation: {}",
                finish(child).stdout
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let r = finish(child);
    assert_eq!(r.code, Some(128 + 15), "{}", r.stderr);
    // No SSH process of the run is left (given 3 s to go), nor its temp folder.
    let tmp_s = tmp.display().to_string();
    let gone = Instant::now();
    loop {
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(&tmp_s))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            gone.elapsed() < Duration::from_secs(3),
            "left running: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let files: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(files.is_empty(), "left in the temp dir: {files:?}");
    // The Pi finished the activation by itself; the lock is free.
    std::thread::sleep(Duration::from_secs(6));
    f.set("pi-a", &Spec::version("2"));
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(r.ok, "the lock of the killed run was not released");

    // SIGKILL (no clean-up at all): the lock still goes with the run.
    f.set("pi-a", &Spec::version("3").mode("slow"));
    let child = spawn(
        &f,
        &f.repo(),
        &["deploy", "pi-a"],
        &[("TMPDIR", tmp.to_str().unwrap())],
    );
    let start = Instant::now();
    while !f
        .ssh("pi-a", "cat /run/pi-nixos/lock.holder 2>/dev/null || true")
        .contains(&format!("pid {} ", child.id()))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run never locked pi-a"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();
    f.set("pi-a", &Spec::version("4"));
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(r.ok, "the lock of a SIGKILLed run was not released");
    assert!(r.took < Duration::from_secs(40), "took {:?}", r.took);
}

#[test]
fn problems_of_other_hosts_do_not_block_a_deploy_and_show_in_status() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    // Another host with a malformed address, and a reachable host that is not NixOS.
    let inv = f.repo().join("hosts/fleet.toml");
    let mut text = std::fs::read_to_string(&inv).unwrap();
    text += "\n[[host]]\nname = \"pi-bad\"\nmodel = \"pi4\"\naddress = \"not an address\"\n";
    std::fs::write(&inv, text).unwrap();
    f.set("pi-bad", &Spec::version("0"));
    f.set("pi-a", &Spec::version("1"));
    let r = xtask(&f, &["deploy", "pi-a"], "");
    assert!(r.ok, "a problem of pi-bad refused pi-a");
    assert!(
        r.stderr.contains("warning:") && r.stderr.contains("host `pi-bad`"),
        "{}",
        r.stderr
    );
    assert_eq!(f.generation("pi-a"), 2);
    // Deploying the bad host itself is refused.
    let r = xtask(&f, &["deploy", "pi-bad"], "");
    assert!(!r.ok);

    // status shows it as a problem (exit 2), never leaves it out.
    let r = xtask(&f, &["status", "--json"], "");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let bad = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["host"] == "pi-bad")
        .unwrap();
    assert_eq!(bad["state"], "invalid", "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("not an IP address"),
        "{bad}"
    );
    assert_eq!(r.code, Some(2));
    let r = xtask(&f, &["status", "pi-bad"], "");
    assert_eq!(r.code, Some(2));
    assert!(
        r.stdout.contains("invalid") && r.stdout.contains("not an IP address"),
        "{}",
        r.stdout
    );

    // A reachable host without /etc/NIXOS: shown as such, exit 3.
    f.ssh("pi-a", "rm /etc/NIXOS");
    let r = xtask(&f, &["status", "pi-a"], "");
    assert_eq!(r.code, Some(3), "{}", r.stdout);
    assert!(r.stdout.contains("not NixOS"), "{}", r.stdout);
}

#[test]
fn a_host_dying_mid_activation_is_not_reported_as_switched() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    f.set("pi-a", &Spec::version("1").mode("slow"));
    let child = spawn(
        &f,
        &f.repo(),
        &[
            "deploy",
            "pi-a",
            "--activation-timeout",
            "5",
            "--confirm-timeout",
            "5",
        ],
        &[],
    );
    let start = Instant::now();
    loop {
        let marker = f.ssh_try("pi-a", "ls /run/pi-nixos/*/started 2>/dev/null || true");
        if marker.is_ok_and(|m| !m.is_empty()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no activation");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Power off during the 4 s activation.
    std::thread::sleep(Duration::from_millis(1500));
    f.stop("pi-a");
    let r = finish(child);
    assert!(!r.ok);
    let line = r.stdout.lines().find(|l| l.starts_with("pi-a ")).unwrap();
    assert!(
        line.contains("UNREACHABLE") && line.contains("1 → ?"),
        "{line}"
    );
    assert!(!r.stdout.contains("1 → 2"), "{}", r.stdout);
    // Waited no longer than activation + confirm timeout + the stated grace.
    assert!(start.elapsed() < Duration::from_secs(5 + 5 + 60 + 10));
}
