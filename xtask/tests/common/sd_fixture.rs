//! A fleet whose flake builds real, small, NixOS-shaped SD images without
//! nixpkgs (tests/fixtures/sd-flake), in a Git repository, plus the
//! environment Nix needs to build it offline.

use std::path::Path;
use std::process::Command;

use super::{fixture_fleet, repo_root};

/// Nix settings for fixture builds: no binary cache (offline), no sandbox
/// (the fixture's builder uses this machine's sfdisk, mkfs and mtools).
pub const NIX_CONFIG: &str = "substituters =\nsandbox = false";

/// The fixture fleet (the repository's hosts and modules, a real admin key)
/// with the fixture flake, committed to a fresh Git repository.
pub fn sd_fleet() -> tempfile::TempDir {
    let dir = fixture_fleet();
    let root = dir.path();
    let fixture = repo_root().join("xtask/tests/fixtures/sd-flake");
    for f in ["flake.nix", "flake.lock", "sd-image.sh"] {
        std::fs::copy(fixture.join(f), root.join(f)).unwrap();
    }
    std::fs::write(root.join(".gitignore"), "/out/\nresult\n").unwrap();
    git(root, &["init", "-q"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "fixture"]);
    dir
}

/// Runs git in `dir`, failing the test on error.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
