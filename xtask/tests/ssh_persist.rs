//! SSH masters kept for the next command (xtask/src/ssh/persist.rs) against
//! a fake Pi (real sshd): reused by the next command, never when an option
//! or the ssh_config differs, ended by `ssh --close`, off with
//! `PI_NIXOS_SSH_PERSIST=0`, refused in a folder others may enter.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::fakepi::{self, Fleet};

fn base() -> Option<PathBuf> {
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

/// Exit code, stdout, stderr.
fn xtask(f: &Fleet, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = common::xtask(&f.repo());
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().unwrap();
    let r = (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    eprintln!(
        "--- cargo xtask {} ({:?})\n{}\n{}",
        args.join(" "),
        r.0,
        r.1,
        r.2
    );
    r
}

/// The sockets a master listens on in the fleet's runtime dir.
fn live_sockets(f: &Fleet) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::read_dir(f.work().join("run/pi-nixos-ssh"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .filter(|p| std::os::unix::net::UnixStream::connect(p).is_ok())
        .collect()
}

const OPENS: &str = "ControlMaster=yes";

#[test]
fn masters_are_kept_for_the_next_command_keyed_on_the_options_and_closed_on_demand() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-a"]);
    f.start("pi-a");
    f.wait_ssh("pi-a");

    // The first command opens a master; the next ones reuse it.
    let (code, _, err) = xtask(&f, &[], &["exec", "pi-a", "--", "true"]);
    assert_eq!(code, Some(0));
    assert_eq!(err.matches(OPENS).count(), 1, "a master opened");
    let dir = f.work().join("run/pi-nixos-ssh");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the sockets' folder is private");
    let sockets = live_sockets(&f);
    assert_eq!(sockets.len(), 1, "it outlived the command");
    let socket = sockets[0].display().to_string();
    let (code, out, err) = xtask(&f, &[], &["ssh", "pi-a", "--", "echo", "again"]);
    assert_eq!((code, out.as_str()), (Some(0), "again\n"));
    assert!(!err.contains(OPENS), "reused, not opened again");
    assert!(err.contains(&socket));
    // A connect timeout only matters while connecting: the same master.
    let (code, _, err) = xtask(
        &f,
        &[],
        &["logs", "pi-a", "-n", "1", "--connect-timeout", "9"],
    );
    assert_eq!(code, Some(0));
    assert!(!err.contains(OPENS));
    // status makes its one call over it.
    let (_, _, err) = xtask(&f, &[], &["status", "--no-eval"]);
    assert!(err.contains(&socket), "status did not use the open master");

    // Another ssh_config (here one line more): never the old master.
    let config = f.work().join("ssh_config");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}# another config\n")).unwrap();
    let (code, _, err) = xtask(&f, &[], &["exec", "pi-a", "--", "true"]);
    assert_eq!(code, Some(0));
    assert_eq!(err.matches(OPENS).count(), 1, "a second master");
    assert!(!err.contains(&socket));
    assert_eq!(live_sockets(&f).len(), 2);

    // --close: --dry-run ends none, then both end.
    let (code, out, _) = xtask(&f, &[], &["ssh", "--close", "--dry-run"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("would end 2 SSH connection(s)"), "{out}");
    assert_eq!(live_sockets(&f).len(), 2);
    let (code, out, _) = xtask(&f, &[], &["ssh", "--close"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("ended 2 SSH connection(s)"), "{out}");
    assert!(live_sockets(&f).is_empty());

    // Turned off: the command's own master, gone when it ends.
    let (code, _, err) = xtask(
        &f,
        &[("PI_NIXOS_SSH_PERSIST", "0")],
        &["exec", "pi-a", "--", "true"],
    );
    assert_eq!(code, Some(0));
    assert!(err.contains(OPENS) && err.contains("ControlPersist=600"));
    assert!(live_sockets(&f).is_empty());

    // A folder others may enter is refused, with what to do.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = xtask(&f, &[], &["exec", "pi-a", "--", "true"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("is not a folder only you can enter") && err.contains("remove it"),
        "{err}"
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
}
