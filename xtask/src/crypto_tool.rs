//! `xtask-crypto`, the xtask's second binary (`xtask/crypto/`): what needs
//! the `age` crate (`secret set`, `show`, `rekey`) or an HTTPS client (`pin`
//! when it asks a registry). Those crates are most of a cold build, so the
//! `xtask` binary leaves them out and builds `xtask-crypto` the first time
//! one of these commands needs it, beside itself in the same target
//! directory and profile, then runs it in its own place with the same
//! arguments. Later runs only let cargo see that it is up to date.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

/// The second binary's package and file name.
pub const NAME: &str = "xtask-crypto";

/// How long its first build takes (the crates `xtask` already built are
/// reused), said before it starts.
const FIRST_BUILD: &str = "about a minute on 2 cores";

/// How a command that may need `xtask-crypto` ended here.
#[must_use]
pub enum Outcome {
    Done,
    /// It needs `xtask-crypto`: nothing was printed or written yet.
    HandOver,
}

/// Where `xtask-crypto` is built to and how: this binary's target
/// directory and profile.
#[derive(Debug, PartialEq)]
pub struct Place {
    pub target_dir: PathBuf,
    /// `--release`, `--profile NAME` or nothing (the dev profile).
    pub profile_args: Vec<String>,
    pub binary: PathBuf,
}

/// The place of the second binary next to `exe` (`<target>/<profile>/xtask`).
pub fn place(exe: &Path) -> Result<Place> {
    let dir = exe
        .parent()
        .with_context(|| format!("{} has no folder", exe.display()))?;
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not in a cargo target folder", exe.display()))?;
    let target_dir = dir
        .parent()
        .with_context(|| format!("{} is not in a cargo target folder", exe.display()))?;
    let profile_args = match profile {
        "debug" => vec![],
        "release" => vec!["--release".to_string()],
        p => vec!["--profile".to_string(), p.to_string()],
    };
    Ok(Place {
        target_dir: target_dir.to_path_buf(),
        profile_args,
        binary: dir.join(NAME),
    })
}

/// `Done` is done; `HandOver` builds `xtask-crypto` if needed and runs it
/// in this process's place, with this process's arguments.
pub fn finish(outcome: Result<Outcome>, what: &str) -> Result<()> {
    match outcome? {
        Outcome::Done => Ok(()),
        Outcome::HandOver => hand_over(what),
    }
}

fn hand_over(what: &str) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the path of this xtask binary")?;
    let place = place(&exe)?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the xtask crate has no parent folder")?;
    let manifest = workspace.join("Cargo.toml");
    // The cargo that runs `cargo xtask` (cargo tells its programs), else PATH's.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let first = !place.binary.exists();
    let quiet = if first {
        eprintln!(
            "building {what} once ({FIRST_BUILD}): {NAME}, the xtask's binary for age and HTTPS; later runs start at once"
        );
        None
    } else {
        Some("--quiet")
    };
    let sh = Shell::new()?;
    let (target_dir, profile) = (&place.target_dir, &place.profile_args);
    let mut build = cmd!(
        sh,
        "{cargo} build {quiet...} --package {NAME} --manifest-path {manifest} --target-dir {target_dir} {profile...}"
    );
    for var in std::env::vars_os().map(|(k, _)| k) {
        if var.to_str().is_some_and(set_by_cargo_for_its_programs) {
            build = build.env_remove(var);
        }
    }
    crate::exec::run(build)
    .with_context(|| {
        format!(
            "cannot build {NAME} (needed by {what}): fix what cargo said above, then run the command again"
        )
    })?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    eprintln!("$ {} {}", place.binary.display(), shown.join(" "));
    let err = std::process::Command::new(&place.binary).args(&args).exec();
    eprintln!("$ {} {}  # failed", place.binary.display(), shown.join(" "));
    bail!(
        "cannot run {}: {err}; build it with `cargo build --package {NAME}` and run the command again",
        place.binary.display()
    )
}

/// The variables cargo gives a program it runs (`cargo run`, a test) about
/// that program's package. Build scripts watch some of them (ring's:
/// `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`…): left in, they would make the
/// build started from here rebuild those crates, and the next build typed in
/// a shell rebuild them again.
fn set_by_cargo_for_its_programs(var: &str) -> bool {
    const PREFIXES: [&str; 4] = ["CARGO_PKG_", "CARGO_BIN_", "CARGO_CFG_", "CARGO_FEATURE_"];
    const NAMES: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| var.starts_with(p)) || NAMES.contains(&var)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_this_binary_in_its_profile() {
        let p = place(Path::new("/src/fleet/target/debug/xtask")).unwrap();
        assert_eq!(p.target_dir, Path::new("/src/fleet/target"));
        assert!(p.profile_args.is_empty());
        assert_eq!(p.binary, Path::new("/src/fleet/target/debug/xtask-crypto"));
        let p = place(Path::new("/t/release/xtask")).unwrap();
        assert_eq!(p.profile_args, ["--release"]);
        let p = place(Path::new("/t/fast/xtask")).unwrap();
        assert_eq!(p.profile_args, ["--profile", "fast"]);
        assert_eq!(p.binary, Path::new("/t/fast/xtask-crypto"));
    }

    #[test]
    fn the_build_does_not_inherit_the_package_of_this_program() {
        for v in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "OUT_DIR",
        ] {
            assert!(set_by_cargo_for_its_programs(v), "{v}");
        }
        // The user's own cargo settings are kept.
        for v in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO",
            "PATH",
        ] {
            assert!(!set_by_cargo_for_its_programs(v), "{v}");
        }
    }
}
