//! The xtask stays small: its binary builds without the crates of age and
//! HTTPS, which live in the second binary, `xtask-crypto`; that one is built
//! by the first `secret set|show|rekey` or registry-bound `pin`, beside the
//! xtask as users' `cargo xtask` finds it, and reuses everything the xtask
//! built. `--help`, `list` and the commands that need neither never build it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::fixture_fleet;

/// The crates that make the second binary heavy: none may reach `xtask`.
const CRYPTO_CRATES: &[&str] = &["age", "age-core", "ureq", "rustls", "ring", "base64", "rsa"];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn cargo() -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
    cmd.current_dir(common::repo_root());
    cmd
}

/// Every crate `package` builds (normal and build dependencies) with the
/// sets of features it is built with, from `cargo tree` (offline: the
/// lock file and the downloaded sources are enough).
fn crates(package: &str) -> BTreeMap<String, BTreeSet<String>> {
    let out = cargo()
        .args(["tree", "--offline", "--locked", "--package", package])
        .args(["--edges", "normal,build", "--prefix", "none"])
        .args(["--format", "{p} [{f}]"])
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo tree: {}", text(&out.stderr));
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text(&out.stdout).lines() {
        let line = line.trim_end_matches(" (*)");
        let Some((id, features)) = line.split_once(" [") else {
            continue;
        };
        // `name vX.Y.Z` (a path crate adds its folder: dropped)
        let id: Vec<&str> = id.split(' ').take(2).collect();
        map.entry(id.join(" "))
            .or_default()
            .insert(features.trim_end_matches(']').to_string());
    }
    assert!(
        map.len() > 10,
        "could not read cargo tree's output: {map:?}"
    );
    map
}

#[test]
fn the_xtask_builds_without_the_crates_of_age_and_https() {
    let xtask = crates("xtask");
    let heavy: Vec<&String> = xtask
        .keys()
        .filter(|id| CRYPTO_CRATES.contains(&id.split(' ').next().unwrap()))
        .collect();
    assert!(
        heavy.is_empty(),
        "the xtask binary builds {heavy:?}: move what needs them into xtask-crypto (xtask/crypto)"
    );
    let crypto = crates("xtask-crypto");
    for c in ["age", "ureq", "rustls"] {
        assert!(
            crypto.keys().any(|id| id.starts_with(&format!("{c} v"))),
            "xtask-crypto no longer builds {c}: {:?}",
            crypto.keys()
        );
    }
}

/// A crate both binaries use, built with other features for
/// `xtask-crypto`, would be built twice, and the xtask library with it.
#[test]
fn the_crypto_binary_reuses_every_crate_the_xtask_built() {
    let xtask = crates("xtask");
    let crypto = crates("xtask-crypto");
    let differ: Vec<String> = xtask
        .iter()
        .filter_map(|(id, features)| {
            let theirs = crypto.get(id)?;
            (!features.is_subset(theirs)).then(|| format!("{id}: {features:?} → {theirs:?}"))
        })
        .collect();
    assert!(
        differ.is_empty(),
        "xtask-crypto builds these with other features, so its first build rebuilds them and the \
         xtask library; turn the same features on in xtask/Cargo.toml's list for it:\n{}",
        differ.join("\n")
    );
}

/// `cargo xtask ARGS` on a copy of the fleet, as the test binary's xtask
/// (`target/debug/xtask`, where users' `cargo xtask` runs it from).
fn xtask(root: &Path, args: &[&str]) -> Output {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .arg("--flake")
        .arg(root)
        .env("XDG_DATA_HOME", common::test_data_home())
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "--- cargo xtask {}\n{}{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

#[test]
fn help_list_and_offline_commands_never_build_it() {
    let fleet = fixture_fleet();
    let help = xtask(fleet.path(), &["--help"]);
    assert!(help.status.success());
    let listed = text(&help.stdout);
    for c in ["list", "check", "secret", "pin", "identity", "completions"] {
        assert!(
            listed.contains(&format!("\n  {c} ")),
            "--help lacks {c}: {listed}"
        );
    }
    for args in [
        &["list"][..],
        &["secret", "list"],
        &["pin", "--check"],
        &["secret", "--help"],
        &["pin", "--help"],
    ] {
        let out = xtask(fleet.path(), args);
        assert!(out.status.success(), "{args:?} failed");
        assert!(
            !text(&out.stderr).contains("xtask-crypto"),
            "{args:?} ran xtask-crypto: {}",
            text(&out.stderr)
        );
    }
}

/// Where `cargo xtask` keeps the second binary: beside itself.
fn crypto_binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("xtask").with_file_name("xtask-crypto")
}

#[test]
fn the_first_secret_show_builds_it_then_runs_it_with_the_same_arguments() {
    let fleet = fixture_fleet();
    // As on a fresh checkout: no second binary yet. Cargo puts it back from
    // its build folder when it is up to date, else builds it.
    let _ = std::fs::remove_file(crypto_binary());
    let out = xtask(fleet.path(), &["secret", "show", "nothing-here"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("building the secrets tool once ("),
        "{stderr}"
    );
    assert!(
        stderr.contains(" build --package xtask-crypto --manifest-path "),
        "the cargo command is echoed: {stderr}"
    );
    assert!(crypto_binary().is_file(), "{stderr}");
    // It ran in the xtask's place, with the same arguments: its error is
    // the command's own, and its exit code is the xtask's.
    assert!(
        stderr.contains("secret show nothing-here"),
        "the run is echoed: {stderr}"
    );
    assert!(
        stderr.contains("error: no secrets/nothing-here.age: see `cargo xtask secret list`"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1));

    // The next time it only asks cargo whether it is up to date, quietly.
    let out = xtask(fleet.path(), &["secret", "show", "nothing-here"]);
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("once ("), "{stderr}");
    assert!(
        stderr.contains(" build --quiet --package xtask-crypto "),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: no secrets/nothing-here.age"),
        "{stderr}"
    );
}
