//! Shared test harness. Each `tests/*.rs` file includes it with `mod common;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The repository this test suite belongs to.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `cargo xtask` acting on the fleet at `flake`, with the test's private
/// current Nix (see [`nixenv`]).
pub fn xtask(flake: &Path) -> Command {
    let mut cmd = Command::cargo_bin("xtask").unwrap();
    cmd.arg("--flake").arg(flake);
    // Host keys (`identity`, `new-host`) never land in the user's data dir.
    cmd.env("XDG_DATA_HOME", test_data_home());
    with_nix(&mut cmd);
    cmd
}

/// The XDG_DATA_HOME of the xtask in tests (host private keys), under the
/// target dir: every fixture fleet has its own random fleet id in it.
pub fn test_data_home() -> PathBuf {
    cache().join("xdg-data")
}

/// Where harnesses cache what they make once (the trixie root, images).
pub fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Gives this test its private current Nix (a private /nix, conf and
/// cache, Debian 13's Nix first on PATH); `None` when it has it, else the
/// reason. Every test that runs Nix starts with it (through
/// [`prerequisite`]); [`xtask`] and the other harnesses then use it.
pub fn need_nix() -> Option<String> {
    nixenv::enter(&cache()).err()
}

/// The test's private Nix, entered on first use. Under CI it must exist;
/// elsewhere a test that needs Nix skips through [`need_nix`].
pub fn nix_vars() -> Option<nixenv::Vars> {
    match nixenv::enter(&cache()) {
        Ok(v) => Some(v),
        Err(why) if in_ci() => panic!("prerequisite missing under CI=true: {why}"),
        Err(_) => None,
    }
}

/// Sets the test's private Nix on an assert_cmd command.
pub fn with_nix(cmd: &mut Command) {
    if let Some(v) = nix_vars() {
        for k in nixenv::Vars::REMOVE {
            cmd.env_remove(k);
        }
        for (k, val) in &v.set {
            cmd.env(k, val);
        }
    }
}

/// `cargo xtask` with the machine's own Nix first on PATH (Debian 12's 2.8
/// on CI), still on the test's private store: for the tests that prove the
/// xtask refuses a Nix that is too old. Prints that Nix's version once.
pub fn xtask_with_machine_nix(flake: &Path) -> Command {
    let mut cmd = xtask(flake);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    if let Ok(out) = std::process::Command::new("nix").arg("--version").output() {
        nixenv::report_version(
            "workstation (the machine's own Nix)",
            &String::from_utf8_lossy(&out.stdout),
        );
    }
    cmd
}

/// A std command for `program` with the test's private Nix.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    if let Some(v) = nix_vars() {
        v.apply(&mut cmd);
    }
    cmd
}

/// Whether tests run under CI, where every prerequisite must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Returns true when the test may go on. When `missing` names a missing
/// prerequisite, the test skips with a printed reason, or fails under CI.
pub fn prerequisite(missing: Option<String>) -> bool {
    match missing {
        None => true,
        Some(why) if in_ci() => panic!("prerequisite missing under CI=true: {why}"),
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// `None` when `program` is on PATH, else the reason.
pub fn need_program(program: &str, package: &str) -> Option<String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    (!found).then(|| format!("`{program}` is not installed (apt-get install {package})"))
}

/// `None` when running as root, else the reason.
pub fn need_root() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        });
    (uid.as_deref() != Some("0")).then(|| "needs root".to_string())
}

/// A real ed25519 public key made for the tests.
pub const TEST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOB0fvttWs5Ovlk2OGGce9OYz0HlgTy8j9PN4mi8qGPq test@example";

/// A copy of this repository's fleet definition (flake, inventory, hosts,
/// modules, lib) in a temp dir, with a real admin key: `check` passes on it.
pub fn fixture_fleet() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    for entry in ["flake.nix", "flake.lock", "lib", "modules", "hosts", "keys"] {
        copy(&root.join(entry), &dir.path().join(entry));
    }
    std::fs::write(
        dir.path().join("keys/authorized_keys"),
        format!("{TEST_KEY}\n"),
    )
    .unwrap();
    dir
}

/// The Wi-Fi password the fixtures give their Wi-Fi hosts.
pub const WIFI_PASSWORD: &str = "correct horse battery staple";

/// Gives the fixture fleet's Wi-Fi host (`rpi-zero-01`) an identity and its
/// Wi-Fi password as the age secret `wifi-rpi-zero-01`, as a user does
/// (`identity`, then `wifi` with the password on stdin), so that `check`
/// has nothing to say about it. Needs ssh-keygen.
pub fn give_wifi_password(root: &Path) {
    xtask(root)
        .args(["identity", "rpi-zero-01"])
        .assert()
        .success();
    xtask(root)
        .args(["wifi", "rpi-zero-01"])
        .write_stdin(format!("{WIFI_PASSWORD}\n"))
        .assert()
        .success();
}

/// The line of hosts/fleet.toml that gives the fixture's Wi-Fi host its network (problems name it).
pub fn wifi_line(root: &Path) -> usize {
    std::fs::read_to_string(root.join("hosts/fleet.toml"))
        .unwrap()
        .lines()
        .position(|l| l == "wifi = \"home-wifi\"")
        .expect("the fixture fleet has a Wi-Fi host")
        + 1
}

/// Recursive copy of a file or folder.
pub fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}
pub mod binfmt_ns;
pub mod docker;
pub mod fakepi;
pub mod loopdev;
pub mod nixenv;
pub mod registry;
pub mod sd_fixture;
