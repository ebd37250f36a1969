//! The Nix version gate with the REAL Nix 2.8.0 of Debian 12's nix-bin
//! (`/usr/bin/nix`, installed by .ci/run): nixpkgs 26.05 needs Nix 2.18
//! (its lib/minver.nix), so `setup-binfmt --check`, `sd`, `deploy`, `check`
//! (its flake part) and `status` (its evaluation) refuse with the version
//! found, the one needed and the fix. A temp folder of links to
//! `/usr/bin/nix*` comes first in PATH, so these tests use that Nix
//! whichever Nix the rest of the suite uses. Nothing here changes the
//! machine: every command stops before it would, and `--install-nix` runs
//! with `--dry-run` (the official installer cannot be downloaded here, so
//! its part is tested as a printed plan only).

mod common;

use std::ffi::OsString;
use std::path::Path;

use common::sd_fixture::{git, sd_fleet};
use common::{prerequisite, xtask};

const REFUSAL: &str =
    "Nix 2.8.0 is too old: nixpkgs 26.05 needs Nix 2.18 or newer (its lib/minver.nix)";
const FIX: &str = "run `cargo xtask setup-binfmt --install-nix` to replace it";

/// `None` when /usr/bin/nix is Debian 12's nix-bin 2.8.0, else the reason.
fn debian_nix_2_8() -> Option<String> {
    let out = std::process::Command::new("/usr/bin/nix")
        .arg("--version")
        .output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).trim() == "nix (Nix) 2.8.0" => None,
        Ok(o) => Some(format!(
            "/usr/bin/nix is not Debian 12's nix-bin 2.8.0: it says {:?}",
            String::from_utf8_lossy(&o.stdout).trim()
        )),
        Err(e) => Some(format!(
            "/usr/bin/nix cannot run ({e}): apt-get install nix-bin (Debian 12)"
        )),
    }
}

/// A folder of links to every `/usr/bin/nix*`, and PATH with it first.
struct DebianNix {
    _dir: tempfile::TempDir,
    path: OsString,
}

impl DebianNix {
    fn new() -> Option<DebianNix> {
        if !prerequisite(debian_nix_2_8().or_else(|| common::need_program("git", "git"))) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir("/usr/bin").unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with("nix") {
                std::os::unix::fs::symlink(e.path(), dir.path().join(e.file_name())).unwrap();
            }
        }
        let mut dirs = vec![dir.path().to_path_buf()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path = std::env::join_paths(dirs).unwrap();
        Some(DebianNix { _dir: dir, path })
    }

    /// `cargo xtask --flake ROOT ARGS` with this Nix first in PATH.
    fn run(&self, root: &Path, args: &[&str]) -> (Option<i32>, String) {
        let out = xtask(root)
            .args(args)
            .env("PATH", &self.path)
            .timeout(std::time::Duration::from_secs(120))
            .output()
            .unwrap();
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }
}

/// The fixture fleet, committed, its hosts on a closed port of this
/// machine (nothing may be reached elsewhere, even if the gate failed).
fn fleet() -> tempfile::TempDir {
    let dir = sd_fleet();
    let inventory = dir.path().join("hosts/fleet.toml");
    let text = std::fs::read_to_string(&inventory).unwrap();
    let mut local = String::new();
    let mut n = 0;
    for line in text.lines() {
        if line.starts_with("address = ") {
            n += 1;
            local.push_str(&format!("address = \"127.0.0.{n}\"\nport = 9\n"));
        } else {
            local.push_str(line);
            local.push('\n');
        }
    }
    std::fs::write(&inventory, local).unwrap();
    git(
        dir.path(),
        &["commit", "-q", "-am", "hosts on this machine"],
    );
    dir
}

#[test]
fn sd_refuses() {
    let Some(nix) = DebianNix::new() else { return };
    let fleet = fleet();
    let (code, text) = nix.run(fleet.path(), &["sd", "rpi-box-01"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains(REFUSAL) && text.contains(FIX), "{text}");
    // Said once: the aarch64 checklist sd also runs leaves it to sd.
    assert_eq!(text.matches(REFUSAL).count(), 1, "{text}");
    assert!(!text.contains("$ nix build"), "sd started a build: {text}");
}

#[test]
fn deploy_refuses_before_building() {
    let Some(nix) = DebianNix::new() else { return };
    let fleet = fleet();
    let (code, text) = nix.run(fleet.path(), &["deploy", "rpi-box-01"]);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains(REFUSAL) && text.contains(FIX), "{text}");
    assert!(!text.contains(" eval "), "deploy evaluated: {text}");
}

#[test]
fn check_refuses_the_flake_part() {
    let Some(nix) = DebianNix::new() else { return };
    let fleet = fleet();
    let (code, text) = nix.run(fleet.path(), &["check"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "flake.nix: the flake was not evaluated: {REFUSAL}"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("fix: {FIX}")), "{text}");
    assert!(!text.contains("#inventory"), "check evaluated: {text}");
    // The parts that need no nixpkgs still ran.
    assert!(text.contains("nix-instantiate --parse"), "{text}");
}

#[test]
fn status_refuses_to_evaluate_but_still_probes() {
    let Some(nix) = DebianNix::new() else { return };
    let fleet = fleet();
    let args = ["status", "rpi-box-01", "--connect-timeout", "2"];
    let (_, text) = nix.run(fleet.path(), &args);
    assert!(text.contains(REFUSAL) && text.contains(FIX), "{text}");
    assert!(!text.contains(" eval "), "status evaluated: {text}");
    assert!(text.contains("rpi-box-01"), "{text}");
    // --no-eval asks nothing of Nix.
    let (_, text) = nix.run(fleet.path(), &[&args[..], &["--no-eval"]].concat());
    assert!(!text.contains("too old"), "{text}");
    assert!(!text.contains("nix --version"), "{text}");
    assert!(text.contains("rpi-box-01"), "{text}");
}

#[test]
fn setup_binfmt_check_fails_on_it() {
    let Some(nix) = DebianNix::new() else { return };
    let fleet = fleet();
    let (code, text) = nix.run(fleet.path(), &["setup-binfmt", "--check", "--no-nix-probe"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&format!("✗ {REFUSAL}")), "{text}");
    assert!(
        text.contains("fix: `cargo xtask setup-binfmt --install-nix` replaces it with the official installer's Nix"),
        "{text}"
    );
}

/// On Debian 12 (this CI machine: nix-bin 2.8 installed, candidate 2.8),
/// `--install-nix --dry-run` plans the replacement by the official
/// installer and changes nothing.
#[test]
fn install_nix_plans_the_official_installer_on_debian_12() {
    let Some(nix) = DebianNix::new() else { return };
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let dpkg = Path::new("/var/lib/dpkg/info/nix-bin.list").exists();
    if !prerequisite(
        (!(os.contains("VERSION_ID=\"12\"") && dpkg))
            .then(|| "needs Debian 12 with its nix-bin installed (the CI machine)".to_string()),
    ) {
        return;
    }
    let fleet = fleet();
    let (code, text) = nix.run(
        fleet.path(),
        &["setup-binfmt", "--install-nix", "--dry-run"],
    );
    assert_eq!(code, Some(0), "{text}");
    for wanted in [
        "$ apt-get remove -y nix-bin nix-setup-systemd",
        "$ groupdel nixbld",
        "$ mv /nix /nix.old-",
        "- install Nix with the official multi-user installer (Debian GNU/Linux 12 (bookworm)'s nix-bin is 2.8.0, older than the 2.18 that nixpkgs 26.05 needs)",
        "$ curl -L https://nixos.org/nix/install | sh -s -- --daemon",
        "dry run: nothing was changed",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing from:\n{text}");
    }
    assert!(text.contains("$ apt-cache policy nix-bin"), "{text}");
}

/// The other side of the gate: the tests' current Nix (Debian 13's 2.26.3,
/// see common/nixenv.rs) passes it, and `check` evaluates the flake.
#[test]
fn a_current_nix_passes() {
    if !prerequisite(common::need_nix()) {
        return;
    }
    let fleet = fleet();
    // Its Wi-Fi host's password (a secret, committed as a user would).
    common::give_wifi_password(fleet.path());
    git(fleet.path(), &["add", "-A"]);
    git(fleet.path(), &["commit", "-q", "-m", "Wi-Fi password"]);
    let out = xtask(fleet.path()).arg("check").output().unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("$ nix --version"), "{text}");
    assert!(!text.contains("too old"), "{text}");
    assert!(
        text.contains("#inventory"),
        "the flake was not evaluated: {text}"
    );
    assert!(out.status.success(), "{text}");
}
