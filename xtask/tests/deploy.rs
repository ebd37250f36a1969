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

#[test]
fn deploy_status_drift_and_rollback() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.boot_all();
    let first = f.current("pi-a");
    assert_eq!(f.generation("pi-a"), 1);
    assert_eq!(status_json(&f, "pi-a")["sync"], "in sync");

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

    // The repo moves on: outdated.
    f.set("pi-a", &Spec::version("2"));
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
    assert_eq!(status_json(&f, "pi-a")["sync"], "outdated");

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
    assert_eq!(status_json(&f, "pi-a")["sync"], "in sync");
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
        r.stdout.contains("pi-e: unreachable at 127.0.0.1:"),
        "{}",
        r.stdout
    );
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
    f.set("pi-a", &Spec::version("1"));
    let r = xtask(&f, &["deploy", "pi-a", "--build-host", "root@builder"], "");
    assert!(r.ok, "deploy with a build host failed");
    let path = f.current("pi-a");
    assert!(path.ends_with("nixos-system-pi-a-1"), "{path}");
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
    assert!(r.ok);
    assert!(r.stdout.contains("unreachable"), "{}", r.stdout);
    assert!(r.took >= Duration::from_secs(2), "took {:?}", r.took);
    assert!(r.took < Duration::from_secs(2 + 3), "took {:?}", r.took);
    let r = xtask(&f, &["deploy", "pi-gone", "--connect-timeout", "2"], "");
    assert!(!r.ok && r.stdout.contains("UNREACHABLE"), "{}", r.stdout);
    assert!(r.took < Duration::from_secs(2 + 3), "took {:?}", r.took);
}
