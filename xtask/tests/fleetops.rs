//! logs / exec / ssh against fake Pis: real systemd and journald (nspawn),
//! real sshd. See tests/common/fakepi.rs.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fakepi::{self, Fleet};

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
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn xtask(f: &Fleet, args: &[&str]) -> Run {
    let mut cmd = common::xtask(&f.repo());
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let out = cmd.args(args).output().unwrap();
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    eprintln!(
        "--- cargo xtask {} ({:.2} s, exit {:?})\n{}\n{}",
        args.join(" "),
        start.elapsed().as_secs_f64(),
        r.code,
        r.stdout,
        r.stderr
    );
    r
}

/// Three booted fake Pis, pi-a, pi-b and pi-c.
fn three(base: &Path) -> Fleet {
    let mut f = Fleet::new(base, &["pi-a", "pi-b", "pi-c"]);
    for n in ["pi-a", "pi-b", "pi-c"] {
        f.start(n);
    }
    for n in ["pi-a", "pi-b", "pi-c"] {
        f.wait_ssh(n);
    }
    f
}

/// The block `exec` printed for a host.
fn block<'a>(out: &'a str, host: &str) -> &'a str {
    let start = out
        .find(&format!("── {host} "))
        .unwrap_or_else(|| panic!("no block for {host} in:\n{out}"));
    let rest = &out[start..];
    let end = rest[3..].find("\n── ").map(|e| e + 4).unwrap_or(rest.len());
    &rest[..end]
}

const TRICKY: [&str; 6] = ["a b", "it's", "$HOME", "x;y", "\"q\"", "*"];

#[test]
fn exec_and_ssh_pass_words_as_typed_and_report_exit_codes() {
    let Some(base) = base() else { return };
    let mut f = three(&base);
    let mut args = vec!["exec", "--all", "--", "printf", "[%s]\\n"];
    args.extend(TRICKY);
    let r = xtask(&f, &args);
    assert_eq!(r.code, Some(0), "exec failed");
    let want: String = TRICKY.iter().map(|w| format!("[{w}]\n")).collect();
    for h in ["pi-a", "pi-b", "pi-c"] {
        let b = block(&r.stdout, h);
        assert!(b.contains("(exit 0,"), "{b}");
        assert!(b.contains(&want), "{h}: words changed on the way:\n{b}");
    }
    let table = &r.stdout[r.stdout.find("HOST").expect("no summary table")..];
    assert_eq!(
        table.lines().filter(|l| l.contains(" 0 ")).count(),
        3,
        "{table}"
    );

    // status: memory, root fs and load of every Pi; temperature and
    // throttling only where this machine exposes them (not a Pi: `-`).
    let r = xtask(&f, &["status", "--no-eval", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let zone = Path::new("/sys/class/thermal/thermal_zone0/temp").exists();
    for s in v.as_array().unwrap() {
        let h = &s["health"];
        assert!(h["memory_total_kib"].as_u64().unwrap() > 0, "{h}");
        assert!(h["memory_available_kib"].as_u64().is_some(), "{h}");
        assert!(h["root_used_percent"].as_u64().unwrap() <= 100, "{h}");
        assert_eq!(h["load"].as_array().unwrap().len(), 3, "{h}");
        assert_eq!(h["temperature_celsius"].is_number(), zone, "{h}");
    }
    let r = xtask(&f, &["status", "--no-eval"]);
    let table = &r.stdout[r.stdout.find("HOST  TEMP").expect("no health table")..];
    assert_eq!(
        table.lines().filter(|l| l.contains(" MiB ")).count(),
        3,
        "{table}"
    );

    // ssh -- CMD: the same words, and the remote exit code is ours.
    let mut args = vec!["ssh", "pi-b", "--", "printf", "[%s]\\n"];
    args.extend(TRICKY);
    let r = xtask(&f, &args);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stdout, want);
    let r = xtask(&f, &["ssh", "pi-b", "--", "sh", "-c", "exit 7"]);
    assert_eq!(r.code, Some(7));

    // Without a command: an interactive login shell on a terminal (`script`
    // gives the xtask a pseudo-terminal), its exit code ours.
    let mut cmd = common::command("script");
    let line = format!(
        "{} --flake {} ssh pi-b",
        env!("CARGO_BIN_EXE_xtask"),
        f.repo().display()
    );
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run script (apt-get install bsdutils)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        stdin
            .write_all(b"tty -s && echo on-a-tty-$((6*7)); exit 3\n")
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "--- ssh pi-b (interactive)\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("on-a-tty-42"),
        "no interactive shell on a terminal: {text}"
    );
    assert_eq!(out.status.code(), Some(3), "the session's exit code");

    // One host fails: exit 1, its code in the table; --stream prefixes lines.
    f.ssh("pi-b", "touch /run/fail-here");
    let r = xtask(
        &f,
        &[
            "exec",
            "--all",
            "--stream",
            "--",
            "sh",
            "-c",
            "echo out-$0; test ! -e /run/fail-here",
            "x",
        ],
    );
    assert_eq!(r.code, Some(1), "one host failed");
    for h in ["pi-a", "pi-b", "pi-c"] {
        assert!(
            r.stdout.contains(&format!("{h} | out-x")),
            "{h} not streamed"
        );
    }
    let row = |out: &str, h: &str| {
        out.lines()
            .find(|l| l.starts_with(h) && !l.contains('|') && !l.starts_with("──"))
            .unwrap_or_else(|| panic!("no row for {h}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(row(&r.stdout, "pi-b"), "1");
    assert_eq!(row(&r.stdout, "pi-a"), "0");

    // A host down: exit 2, said once, the others still run.
    f.stop("pi-c");
    let r = xtask(&f, &["exec", "--all", "--", "true"]);
    assert_eq!(r.code, Some(2));
    assert_eq!(
        r.stderr.matches("pi-c: unreachable").count(),
        1,
        "said once"
    );
    assert_eq!(row(&r.stdout, "pi-c"), "unreachable");
    assert_eq!(row(&r.stdout, "pi-a"), "0");
}

/// Writes one journal entry of unit fleetlog.service on a fake Pi.
fn log(f: &Fleet, host: &str, msg: &str) {
    f.ssh(
        host,
        &format!("systemd-run --quiet --wait --unit=fleetlog echo {msg} >/dev/null"),
    );
}

fn messages(out: &str, tag: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let (host, rest) = l.split_once(' ')?;
            let msg = rest.rsplit(": ").next()?;
            msg.starts_with(tag).then(|| format!("{host} {msg}"))
        })
        .collect()
}

#[test]
fn logs_merge_hosts_in_time_order_and_read_containers() {
    let Some(base) = base() else { return };
    let mut f = three(&base);
    let order = [
        ("pi-b", "m1"),
        ("pi-a", "m2"),
        ("pi-c", "m3"),
        ("pi-b", "m4"),
        ("pi-a", "m5"),
    ];
    for (h, m) in order {
        log(&f, h, m);
    }
    let r = xtask(&f, &["logs", "--all", "-u", "fleetlog", "-n", "10"]);
    assert_eq!(r.code, Some(0));
    let want: Vec<String> = order.iter().map(|(h, m)| format!("{h} {m}")).collect();
    assert_eq!(messages(&r.stdout, "m"), want, "not in time order");

    // --json: journalctl's fields plus the host.
    let r = xtask(&f, &["logs", "pi-a", "-u", "fleetlog", "--json"]);
    let v: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["_TRANSPORT"] == "stdout")
        .collect();
    assert_eq!(v.len(), 2, "pi-a's two echo lines");
    assert_eq!(v[0]["host"], "pi-a");
    assert_eq!(v[0]["MESSAGE"], "m2");

    // -c: a container's entries, as Docker's journald driver writes them.
    f.ssh(
        "pi-c",
        "printf 'MESSAGE=web says hi\\nCONTAINER_NAME=web\\nCOM_DOCKER_COMPOSE_PROJECT=shop\\n' | logger --journald; printf 'MESSAGE=db says hi\\nCONTAINER_NAME=db\\n' | logger --journald",
    );
    let r = xtask(&f, &["logs", "--all", "-c", "web"]);
    assert!(
        r.stdout.contains("pi-c ") && r.stdout.contains("web: web says hi"),
        "container"
    );
    assert!(!r.stdout.contains("db says hi"));
    let r = xtask(&f, &["logs", "--all", "-c", "shop"]);
    assert!(r.stdout.contains("web: web says hi"), "compose project");

    // A host down is said once; the others' entries still come, exit 2.
    f.stop("pi-b");
    let r = xtask(&f, &["logs", "--all", "-u", "fleetlog"]);
    assert_eq!(r.code, Some(2));
    assert_eq!(r.stderr.matches("pi-b: unreachable").count(), 1);
    assert_eq!(messages(&r.stdout, "m").len(), 3);
}

#[test]
fn logs_follow_survives_a_host_going_away() {
    let Some(base) = base() else { return };
    let mut f = three(&base);
    for h in ["pi-a", "pi-b", "pi-c"] {
        log(&f, h, &format!("old-{h}"));
    }
    let mut cmd = common::command(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("--flake").arg(f.repo());
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["logs", "--all", "-u", "fleetlog", "-f"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let err = Arc::new(Mutex::new(String::new()));
    let collect = |pipe: Box<dyn std::io::Read + Send>, into: Arc<Mutex<String>>| {
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut g = into.lock().unwrap();
                g.push_str(&l);
                g.push('\n');
            }
        })
    };
    let t1 = collect(Box::new(child.stdout.take().unwrap()), out.clone());
    let t2 = collect(Box::new(child.stderr.take().unwrap()), err.clone());
    let wait_for = |what: &str, text: &Arc<Mutex<String>>| {
        let start = Instant::now();
        while !text.lock().unwrap().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no `{what}` within 30 s:\n{}\n{}",
                out.lock().unwrap(),
                err.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for h in ["pi-a", "pi-b", "pi-c"] {
        wait_for(&format!(": old-{h}\n"), &out);
    }
    for h in ["pi-a", "pi-b", "pi-c"] {
        log(&f, h, &format!("live-{h}"));
    }
    for h in ["pi-a", "pi-b", "pi-c"] {
        wait_for(&format!(": live-{h}\n"), &out);
    }
    f.stop("pi-b");
    wait_for("pi-b: gone", &err);
    log(&f, "pi-a", "after-pi-a");
    log(&f, "pi-c", "after-pi-c");
    wait_for(": after-pi-a\n", &out);
    wait_for(": after-pi-c\n", &out);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    t1.join().unwrap();
    t2.join().unwrap();
    let out = out.lock().unwrap().clone();
    let err = err.lock().unwrap().clone();
    eprintln!("--- logs -f\n{out}\n{err}");
    assert_eq!(err.matches("pi-b: gone").count(), 1, "said once");
    assert!(
        !err.contains("pi-a: gone"),
        "an interrupt is no host going away: {err}"
    );
    assert!(err.contains("following the other 2 host(s)"));
    assert_eq!(
        out.matches(": old-pi-a\n").count(),
        1,
        "the backlog is not repeated"
    );
    assert_eq!(out.matches(": after-pi-c\n").count(), 1);
    assert!(!status.success());
}
