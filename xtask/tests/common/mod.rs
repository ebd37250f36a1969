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

/// `cargo xtask` acting on the fleet at `flake`.
pub fn xtask(flake: &Path) -> Command {
    let mut cmd = Command::cargo_bin("xtask").unwrap();
    cmd.arg("--flake").arg(flake);
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
pub mod fakepi;
pub mod loopdev;
pub mod sd_fixture;
