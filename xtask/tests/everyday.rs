//! Everyday commands met as a user meets them: `--version`, output into a
//! closed pipe, a broken `hosts/fleet.toml`, files Git does not track,
//! weak or foreign SSH keys, a deploy from a dirty tree.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::sd_fixture::{git, sd_fleet};
use common::{fixture_fleet, need_program, prerequisite, xtask};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn version_names_the_crate_and_the_commit() {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .arg("--version")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with(&format!("xtask {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
    // This test suite runs from a Git checkout, whose commit is named.
    if common::repo_root().join(".git").exists() && need_program("git", "git").is_none() {
        let head = git(&common::repo_root(), &["rev-parse", "--short=7", "HEAD"]);
        assert!(stdout.contains(&format!("(commit {head}")), "{stdout}");
    }
}

/// Runs the xtask with its stdout a pipe whose reading end is already
/// closed, as in `cargo xtask list --json | head -0`.
fn into_closed_pipe(root: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(assert_cmd::cargo::cargo_bin("xtask"))
        .arg("--flake")
        .arg(root)
        // new-host makes a host key: kept with the test's files
        .env("XDG_DATA_HOME", common::test_data_home())
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let fleet = fixture_fleet();
    let root = fleet.path();
    for args in [
        &["list", "--json"][..],
        &["list"],
        &[
            "new-host",
            "spare",
            "--model",
            "pi4",
            "--address",
            "192.0.2.77",
            "--dry-run",
        ],
        &["completions", "bash"],
    ] {
        let out = into_closed_pipe(root, args);
        let stderr = text(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        // Killed by SIGPIPE, as `ls | true` ends `ls`.
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_toml_syntax_error_is_the_only_problem_and_list_fails() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    let inventory = root.join("hosts/fleet.toml");
    let good = fs::read_to_string(&inventory).unwrap();
    let (at, _) = good.match_indices("model = \"pi4\"").next().unwrap();
    let line = good[..at].lines().count() + 1;
    fs::write(
        &inventory,
        good.replacen("model = \"pi4\"", "model = pi4", 1),
    )
    .unwrap();
    for args in [&["list"][..], &["list", "--json"], &["check"]] {
        let out = xtask(root).args(args).output().unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("hosts/fleet.toml:{line}:9: not valid TOML")),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("fix: correct the syntax there"), "{stderr}");
        assert!(!stderr.contains("has no [[host]] entry"), "{stderr}");
        assert!(
            !stdout.contains("HOST"),
            "{args:?} printed a table: {stdout}"
        );
    }
    // check --json: that one problem, as JSON.
    let out = xtask(root).args(["check", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert_eq!(problems[0]["file"], "hosts/fleet.toml");
    assert_eq!(problems[0]["line"], line);
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("not valid TOML (column 9)"),
        "{report}"
    );
}

#[test]
fn check_reports_files_git_does_not_track() {
    if !prerequisite(need_program("git", "git")) {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    xtask(root)
        .args([
            "new-host",
            "rpi-box-07",
            "--model",
            "pi4",
            "--address",
            "192.0.2.7",
        ])
        .assert()
        .success();
    let out = xtask(root).arg("check").output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "hosts/rpi-box-07/default.nix: not tracked by Git: the flake does not see it"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("fix: `git add hosts/rpi-box-07/default.nix`"),
        "{stdout}"
    );
    assert!(!stdout.contains("no problems"), "{stdout}");
    // new-host also made its identity (hosts/rpi-box-07/*.pub, keys/fleet-id).
    assert!(stdout.contains("fix: `git add keys/fleet-id`"), "{stdout}");
    git(root, &["add", "hosts/rpi-box-07", "keys/fleet-id"]);
    let out = xtask(root).arg("check").output().unwrap();
    assert!(
        !text(&out.stdout).contains("not tracked"),
        "{}",
        text(&out.stdout)
    );
}

/// A public key made by the real ssh-keygen: `(private, public)` paths.
fn keygen(dir: &Path, args: &[&str]) -> std::path::PathBuf {
    let key = dir.join("key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-C", "t@example", "-f"])
        .arg(&key)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    key.with_extension("pub")
}

#[test]
fn add_key_warns_on_short_rsa_keys() {
    if !prerequisite(need_program("ssh-keygen", "openssh-client")) {
        return;
    }
    let fleet = fixture_fleet();
    let root = fleet.path();
    let keys = tempfile::tempdir().unwrap();
    let short = keygen(keys.path(), &["-t", "rsa", "-b", "2048"]);
    let out = xtask(root).arg("add-key").arg(&short).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: this RSA key has 2048 bits, under the 3072 now recommended"),
        "{stderr}"
    );
    assert!(stderr.contains("ssh-keygen -t ed25519"), "{stderr}");

    let keys = tempfile::tempdir().unwrap();
    let long = keygen(keys.path(), &["-t", "rsa", "-b", "3072"]);
    let out = xtask(root).arg("add-key").arg(&long).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn add_key_points_rfc4716_keys_to_ssh_keygen() {
    if !prerequisite(need_program("ssh-keygen", "openssh-client")) {
        return;
    }
    let fleet = fixture_fleet();
    let root = fleet.path();
    let before = fs::read_to_string(root.join("keys/authorized_keys")).unwrap();
    let keys = tempfile::tempdir().unwrap();
    let public = keygen(keys.path(), &["-t", "ed25519"]);
    // The same key as RFC 4716 writes it (`ssh-keygen -e`).
    let out = Command::new("ssh-keygen")
        .arg("-e")
        .arg("-f")
        .arg(&public)
        .output()
        .unwrap();
    assert!(text(&out.stdout).starts_with("---- BEGIN SSH2 PUBLIC KEY ----"));
    let ssh2 = keys.path().join("putty.pub");
    fs::write(&ssh2, &out.stdout).unwrap();
    let out = xtask(root).arg("add-key").arg(&ssh2).output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is an RFC 4716 (SSH2) public key"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("ssh-keygen -i -f {}", ssh2.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("lines"), "{stderr}");
    assert_eq!(
        fs::read_to_string(root.join("keys/authorized_keys")).unwrap(),
        before
    );
}

#[test]
fn deploy_says_the_tree_is_dirty() {
    if !prerequisite(need_program("git", "git")) {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    let module = root.join("modules/common.nix");
    let mut text_of = fs::read_to_string(&module).unwrap();
    text_of.push_str("# an uncommitted change\n");
    fs::write(&module, text_of).unwrap();
    let head = git(root, &["rev-parse", "--short=7", "HEAD"]);
    let out = xtask(root)
        .args(["deploy", "rpi-box-01", "--dry-run"])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "note: uncommitted changes are built in and the hosts will run `{head}+dirty`: modules/common.nix"
        )),
        "{stderr}\n{}",
        text(&out.stdout)
    );
}

/// `cargo xtask flash IMAGE DEV --yes | true`: the card is written and
/// verified, then the summary meets the closed pipe and the xtask ends
/// quietly.
#[test]
fn flash_into_a_closed_pipe_after_a_good_write() {
    use std::os::unix::process::ExitStatusExt;
    if !common::loopdev::available() {
        return;
    }
    let image = common::loopdev::nixos_image(64);
    let dev = common::loopdev::LoopDev::new(64);
    let out = into_closed_pipe(
        &common::repo_root(),
        &["flash", image.raw.to_str().unwrap(), &dev.path, "--yes"],
    );
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{stderr}");
    assert!(
        dev.contents() == fs::read(&image.raw).unwrap(),
        "the card does not hold the image"
    );
}
