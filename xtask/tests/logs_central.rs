//! Journals that reach the monitoring host, and Pis whose clock is off,
//! for real: fake Pis (tests/common/fakepi.rs, real systemd and journald)
//! run Debian's `systemd-journal-upload` to a fake monitoring Pi running
//! Debian's `systemd-journal-remote`, configured with what
//! modules/monitoring/journal.nix sets (the module evaluated by real Nix
//! with the repository's lib/inventory.nix and lib/monitoring.nix on the
//! fake fleet's inventory), then `logs --central` reads them there. One Pi's
//! journald runs an hour ahead (libfaketime preloaded into
//! systemd-journald.service), so the merge by each Pi's own clock is seen
//! on real journal entries.

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
    let out = cmd.args(args).output().unwrap();
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    eprintln!(
        "--- cargo xtask {} (exit {:?})\n{}\n{}",
        args.join(" "),
        r.code,
        r.stdout,
        r.stderr
    );
    r
}

/// What modules/monitoring/journal.nix sets on every host, evaluated with
/// `lib.mkIf`/`lib.mkDefault` written from builtins, the repository's
/// inventory and monitoring libraries on the fake fleet's `hosts/fleet.toml`,
/// and the receiver's port moved to a free loopback port (the fake Pis
/// share this machine's network).
fn journal_module(f: &Fleet, port: u16) -> serde_json::Value {
    let repo = common::repo_root();
    let expr = format!(
        r#"
let
  lib = {{
    mkIf = c: v: if c then v else {{ }};
    mkDefault = v: v;
  }};
  inventory = import {repo}/lib/inventory.nix {{ root = {fleet}; }};
  monitoring = import {repo}/lib/monitoring.nix {{ inherit inventory; }} // {{ journalRemotePort = {port}; }};
in
builtins.mapAttrs (
  name: host: import {repo}/modules/monitoring/journal.nix {{ inherit lib host monitoring; }}
) inventory.hosts
"#,
        repo = repo.display(),
        fleet = f.repo().display(),
    );
    let out = f
        .nix_cmd("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(["eval", "--json", "--impure", "--expr", &expr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "evaluating modules/monitoring/journal.nix failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `pkgs.formats.systemd`'s rendering of a settings attrset: a `[Section]`
/// per attribute, `Key=value` lines, null values left out.
fn ini(settings: &serde_json::Value) -> String {
    let mut s = String::new();
    for (section, keys) in settings.as_object().unwrap() {
        s += &format!("[{section}]\n");
        for (k, v) in keys.as_object().unwrap() {
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::String(t) => s += &format!("{k}={t}\n"),
                other => s += &format!("{k}={other}\n"),
            }
        }
    }
    s
}

/// Writes a file on a fake Pi.
fn put(f: &Fleet, host: &str, path: &str, text: &str) {
    assert!(!text.contains("PUT_EOF"));
    f.ssh(
        host,
        &format!("mkdir -p \"$(dirname {path})\" && cat > {path} <<'PUT_EOF'\n{text}PUT_EOF"),
    );
}

/// Writes one journal entry of unit fleetlog.service on a fake Pi.
fn log(f: &Fleet, host: &str, msg: &str) {
    f.ssh(
        host,
        &format!("systemd-run --quiet --wait --unit=fleetlog echo {msg} >/dev/null"),
    );
}

/// `(host, time, message)` of the lines whose message starts with `tag`.
fn entries(out: &str, tag: &str) -> Vec<(String, String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let host = w.next()?.to_string();
            let time = format!("{} {}", w.next()?, w.next()?);
            let msg = l.rsplit(": ").next()?.to_string();
            // `c1`, not systemd's `Consumed …` about the unit.
            (msg.starts_with(tag) && msg.len() <= tag.len() + 2).then_some((host, time, msg))
        })
        .collect()
}

fn seconds(time: &str) -> i64 {
    // `2026-12-02 07:01:02.123456`: the day and the time of day.
    let (d, t) = time.split_once(' ').unwrap();
    let day: i64 = d.rsplit('-').next().unwrap().parse().unwrap();
    let mut hms = t.split(':');
    let h: i64 = hms.next().unwrap().parse().unwrap();
    let m: i64 = hms.next().unwrap().parse().unwrap();
    let s: f64 = hms.next().unwrap().parse().unwrap();
    day * 86400 + h * 3600 + m * 60 + s as i64
}

/// The library Debian's libfaketime installs.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn central_logs_come_through_the_journal_upload_and_skewed_clocks_merge_by_their_own_time() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a", "pi-b", "pi-mon"]);
    let toml = f.repo().join("hosts/fleet.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, format!("{text}\n[fleet]\nmonitoring = \"pi-mon\"\n")).unwrap();
    for n in ["pi-a", "pi-b", "pi-mon"] {
        f.start(n);
    }
    for n in ["pi-a", "pi-b", "pi-mon"] {
        f.wait_ssh(n);
    }

    // pi-b's journald stamps entries an hour ahead (libfaketime moves its
    // monotonic clock too: journald's event loop refuses a real monotonic
    // clock beside a faked realtime one).
    put(
        &f,
        "pi-b",
        "/etc/systemd/system/systemd-journald.service.d/skew.conf",
        &format!(
            "[Service]\nEnvironment=LD_PRELOAD={FAKETIME} FAKETIME=+3600 FAKETIME_DISABLE_SHM=1\n"
        ),
    );
    f.ssh(
        "pi-b",
        "systemctl daemon-reload && systemctl restart systemd-journald",
    );

    // The receiver and the uploads, as the module configures them.
    let port = fakepi::free_port();
    let m = journal_module(&f, port);
    let remote = &m["pi-mon"]["services"]["journald"]["remote"];
    assert_eq!(remote["enable"], true, "{m}");
    assert_eq!(
        m["pi-mon"]["services"]["journald"]["upload"],
        serde_json::json!({})
    );
    assert_eq!(
        m["pi-mon"]["networking"]["firewall"]["allowedTCPPorts"],
        serde_json::json!([port])
    );
    let listen = remote["listen"].as_str().unwrap();
    assert_eq!(remote["port"], port);
    // nixpkgs' journald-remote.nix: ExecStart with `--listen-<listen>=-3`
    // (the socket unit's descriptor) and `--output` (its default), the
    // socket on the port; journal-remote.conf from `settings`.
    put(
        &f,
        "pi-mon",
        "/etc/systemd/system/systemd-journal-remote.service.d/nixos.conf",
        &format!(
            "[Service]\nExecStart=\nExecStart=/usr/lib/systemd/systemd-journal-remote --listen-{listen}=-3 --output=/var/log/journal/remote/\n"
        ),
    );
    put(
        &f,
        "pi-mon",
        "/etc/systemd/system/systemd-journal-remote.socket.d/nixos.conf",
        // Loopback only here: a test listens on nothing else.
        &format!("[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"),
    );
    put(
        &f,
        "pi-mon",
        "/etc/systemd/journal-remote.conf",
        &ini(&remote["settings"]),
    );
    f.ssh(
        "pi-mon",
        "systemctl daemon-reload && systemctl start systemd-journal-remote.socket",
    );
    for h in ["pi-a", "pi-b"] {
        let up = &m[h]["services"]["journald"]["upload"];
        assert_eq!(up["enable"], true, "{m}");
        assert_eq!(
            m[h]["services"]["journald"]["remote"],
            serde_json::json!({})
        );
        assert_eq!(
            up["settings"]["Upload"]["URL"],
            format!("http://127.0.0.1:{port}")
        );
        put(
            &f,
            h,
            "/etc/systemd/journal-upload.conf",
            &ini(&up["settings"]),
        );
        // nixpkgs' journald-upload.nix adds these to the unit.
        put(
            &f,
            h,
            "/etc/systemd/system/systemd-journal-upload.service.d/nixos.conf",
            "[Service]\nRestart=always\nRestartSec=3sec\n",
        );
        f.ssh(
            h,
            "systemctl daemon-reload && systemctl start systemd-journal-upload",
        );
    }

    // c1 … c4 logged in this order, a moment apart.
    let order = [
        ("pi-a", "c1"),
        ("pi-b", "c2"),
        ("pi-a", "c3"),
        ("pi-b", "c4"),
    ];
    for (h, msg) in order {
        log(&f, h, msg);
        std::thread::sleep(Duration::from_millis(300));
    }
    // By each Pi's own clock: pi-b's entries an hour later than pi-a's.
    let want = ["pi-a c1", "pi-a c3", "pi-b c2", "pi-b c4"];
    let r = xtask(&f, &["logs", "pi-a", "pi-b", "-u", "fleetlog"]);
    assert_eq!(r.code, Some(0));
    let got = entries(&r.stdout, "c");
    let names: Vec<String> = got.iter().map(|(h, _, m)| format!("{h} {m}")).collect();
    assert_eq!(names, want, "merged by each Pi's own clock");
    let skew = seconds(&got[2].1) - seconds(&got[1].1);
    assert!(
        (3500..3700).contains(&skew),
        "pi-b's entries carry its clock, an hour ahead: {got:?}"
    );

    // The same entries on the monitoring host, uploaded and merged the same
    // way, the host names in front.
    let start = Instant::now();
    let central = loop {
        let r = xtask(&f, &["logs", "--central", "pi-a", "pi-b", "-u", "fleetlog"]);
        if r.code == Some(0) && entries(&r.stdout, "c").len() == 4 {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the uploads did not reach the monitoring host within 60 s:\n{}",
            f.ssh(
                "pi-mon",
                "journalctl -u systemd-journal-remote --no-pager | tail -20; ls -l /var/log/journal/remote"
            )
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        entries(&central.stdout, "c"),
        got,
        "the central copy differs from the Pis' own"
    );
    // -n is per host: the last two, `echo` and systemd's line after it.
    let r = xtask(
        &f,
        &[
            "logs",
            "--central",
            "pi-a",
            "pi-b",
            "-u",
            "fleetlog",
            "-n",
            "2",
        ],
    );
    let last: Vec<String> = entries(&r.stdout, "c")
        .into_iter()
        .map(|(h, _, m)| format!("{h} {m}"))
        .collect();
    assert_eq!(last, ["pi-a c3", "pi-b c4"]);
    assert_eq!(r.stdout.lines().count(), 4, "two per host");

    // -f: what arrives there later, as it arrives.
    let mut cmd = common::command(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("--flake").arg(f.repo());
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["logs", "--central", "pi-a", "pi-b", "-u", "fleetlog", "-f"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let said = Arc::new(Mutex::new(String::new()));
    let collect = |pipe: Box<dyn std::io::Read + Send>, into: Arc<Mutex<String>>| {
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut g = into.lock().unwrap_or_else(|e| e.into_inner());
                g.push_str(&l);
                g.push('\n');
            }
        })
    };
    let reader = collect(Box::new(child.stdout.take().unwrap()), seen.clone());
    let errors = collect(Box::new(child.stderr.take().unwrap()), said.clone());
    let wait_for = |what: &str| {
        let start = Instant::now();
        while !seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(what)
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no `{what}` from logs --central -f within 60 s:\n{}\n{}\nthe monitoring host has:\n{}",
                seen.lock().unwrap(),
                said.lock().unwrap(),
                f.ssh(
                    "pi-mon",
                    "journalctl --directory=/var/log/journal/remote -u fleetlog --no-pager | tail -4; ps ax | grep -c journalctl"
                )
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(": c4\n");
    // On pi-a: libfaketime also moves pi-b's monotonic clock, so its
    // journald's change notices (a monotonic timer) come an hour late.
    log(&f, "pi-a", "c5");
    wait_for(": c5\n");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    reader.join().unwrap();
    errors.join().unwrap();
    let followed = seen.lock().unwrap().clone();
    assert_eq!(followed.matches(": c4\n").count(), 1, "no line twice");
    assert!(
        followed
            .lines()
            .any(|l| l.starts_with("pi-a ") && l.ends_with(": c5"))
    );

    // A dead Pi's logs are still there.
    f.stop("pi-a");
    let r = xtask(
        &f,
        &["logs", "--central", "pi-a", "-u", "fleetlog", "--json"],
    );
    assert_eq!(r.code, Some(0));
    let v: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let msgs: Vec<&str> = v
        .iter()
        .filter(|e| e["SYSLOG_IDENTIFIER"] == "echo")
        .filter_map(|e| e["MESSAGE"].as_str())
        .collect();
    assert_eq!(msgs, ["c1", "c3", "c5"]);
    assert!(
        v.iter()
            .all(|e| e["host"] == "pi-a" && e["_HOSTNAME"] == "pi-a")
    );
}
