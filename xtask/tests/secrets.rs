//! `cargo xtask secret`: what `set` writes decrypts with Debian's `age` CLI
//! for the hosts it is for and the admin key, not for another host;
//! `rekey` after a host key changes; `check` catches recipient mismatches
//! from the age header alone; every refusal changes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{need_program, prerequisite};

const VALUE: &str = "s3cret-db-pass-7f1c";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Fixture {
    fleet: tempfile::TempDir,
    data: tempfile::TempDir,
    keys: tempfile::TempDir,
}

impl Fixture {
    fn root(&self) -> &Path {
        self.fleet.path()
    }

    /// `cargo xtask ARGS` (no Nix), `stdin` as its input.
    fn run(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let out = assert_cmd::Command::cargo_bin("xtask")
            .unwrap()
            .arg("--flake")
            .arg(self.root())
            .env("XDG_DATA_HOME", self.data.path())
            .env("HOME", self.keys.path())
            .args(args)
            .write_stdin(stdin.to_string())
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

    fn host_key(&self, host: &str) -> PathBuf {
        let id = std::fs::read_to_string(self.root().join("keys/fleet-id")).unwrap();
        let id = id.lines().find(|l| !l.starts_with('#')).unwrap();
        self.data
            .path()
            .join("pi-nixos")
            .join(id)
            .join("hosts")
            .join(host)
            .join("ssh_host_ed25519_key")
    }

    fn admin(&self) -> PathBuf {
        self.keys.path().join(".ssh/id_ed25519")
    }
}

fn keygen(path: &Path, kind: &str, pass: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", pass, "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A fixture fleet with identities for rpi-box-01 and rpi-box-03 and one
/// admin key (the test's ~/.ssh/id_ed25519).
fn fixture() -> Option<Fixture> {
    if !prerequisite(
        need_program("age", "age").or_else(|| need_program("ssh-keygen", "openssh-client")),
    ) {
        return None;
    }
    let f = Fixture {
        fleet: common::fixture_fleet(),
        data: tempfile::tempdir().unwrap(),
        keys: tempfile::tempdir().unwrap(),
    };
    keygen(&f.admin(), "ed25519", "");
    std::fs::copy(
        f.admin().with_extension("pub"),
        f.root().join("keys/authorized_keys"),
    )
    .unwrap();
    for h in ["rpi-box-01", "rpi-box-03"] {
        assert!(f.run(&["identity", h], "").status.success());
    }
    Some(f)
}

/// `age -d -i KEY FILE`: the plaintext, or the error.
fn age_decrypt(key: &Path, file: &Path) -> Result<String, String> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key)
        .arg(file)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

#[test]
fn set_show_rekey_round_trip_with_the_age_cli() {
    let Some(f) = fixture() else { return };
    let root = f.root();
    let out = f.run(
        &["secret", "set", "db-pass", "--host", "rpi-box-01"],
        &format!("{VALUE}\n"),
    );
    assert!(out.status.success());
    let file = root.join("secrets/db-pass.age");
    // The host it is for and the admin decrypt it; another host does not.
    assert_eq!(
        age_decrypt(&f.host_key("rpi-box-01"), &file).unwrap(),
        VALUE
    );
    assert_eq!(age_decrypt(&f.admin(), &file).unwrap(), VALUE);
    assert!(age_decrypt(&f.host_key("rpi-box-03"), &file).is_err());
    // show (admin key from ~/.ssh), list.
    let out = f.run(&["secret", "show", "db-pass"], "");
    assert_eq!(text(&out.stdout), VALUE);
    let out = f.run(&["secret", "list"], "");
    let list = text(&out.stdout);
    assert!(
        list.contains("db-pass") && list.contains("rpi-box-01") && list.contains("0400"),
        "{list}"
    );
    let toml = std::fs::read_to_string(root.join("secrets/secrets.toml")).unwrap();
    assert!(
        toml.contains("[\"db-pass\"]\nhosts = [\"rpi-box-01\"]\n"),
        "{toml}"
    );

    // Nothing to rekey yet.
    let before = std::fs::read(&file).unwrap();
    let out = f.run(&["secret", "rekey"], "");
    assert!(text(&out.stdout).contains("nothing to do"));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let out = f.run(
        &["secret", "set", "other", "--host", "rpi-box-03"],
        "x-value\n",
    );
    assert!(out.status.success());
    let other = std::fs::read(root.join("secrets/other.age")).unwrap();

    // rpi-box-01 gets a new identity: only db-pass is re-encrypted.
    let old_key = root.join("old-key");
    std::fs::rename(f.host_key("rpi-box-01"), &old_key).unwrap();
    std::fs::remove_file(root.join("hosts/rpi-box-01/ssh_host_ed25519_key.pub")).unwrap();
    assert!(f.run(&["identity", "rpi-box-01"], "").status.success());
    assert!(age_decrypt(&f.host_key("rpi-box-01"), &file).is_err());
    let out = f.run(&["secret", "rekey", "--dry-run"], "");
    assert!(text(&out.stdout).contains("would re-encrypt secrets/db-pass.age"));
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let out = f.run(&["secret", "rekey"], "");
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("re-encrypted secrets/db-pass.age"));
    assert!(!text(&out.stdout).contains("other.age"));
    assert_eq!(
        std::fs::read(root.join("secrets/other.age")).unwrap(),
        other
    );
    assert_eq!(
        age_decrypt(&f.host_key("rpi-box-01"), &file).unwrap(),
        VALUE
    );
    assert!(age_decrypt(&old_key, &file).is_err());

    // rm.
    let out = f.run(&["secret", "rm", "other"], "");
    assert!(out.status.success());
    assert!(!root.join("secrets/other.age").exists());
    assert!(
        !std::fs::read_to_string(root.join("secrets/secrets.toml"))
            .unwrap()
            .contains("other")
    );

    // The value is in no file of the repository.
    let grep = Command::new("grep")
        .args(["-rqF", VALUE])
        .arg(root)
        .status()
        .unwrap();
    assert!(
        !grep.success(),
        "the value is in the repository in the clear"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let Some(f) = fixture() else { return };
    let root = f.root();
    assert!(
        f.run(&["secret", "set", "db-pass", "--host", "rpi-box-01"], VALUE)
            .status
            .success()
    );
    let snapshot = || {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(root.join("secrets"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot();
    let refused = |args: &[&str], stdin: &str, message: &str| {
        let out = f.run(args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(snapshot(), before, "{args:?} changed secrets/");
    };
    refused(
        &["secret", "set", "db-pass", "--host", "rpi-box-01"],
        "",
        "the value of `db-pass` is empty; nothing was written",
    );
    refused(
        &["secret", "set", "x", "--host", "nope"],
        "v",
        "no host named `nope`",
    );
    refused(
        &["secret", "set", "x", "--tag", "nope"],
        "v",
        "the tag `nope` matches no host",
    );
    refused(
        &["secret", "set", "x", "--host", "rpi-zero-01"],
        "v",
        "host `rpi-zero-01` has no identity yet, so it could not read the secret: make one with `cargo xtask identity rpi-zero-01`",
    );
    refused(
        &["secret", "set", "../x", "--all"],
        "v",
        "is not a usable secret name",
    );
    refused(&["secret", "set", "x"], "v", "say who reads `x`");

    // An admin key age cannot encrypt to.
    let keys = std::fs::read_to_string(root.join("keys/authorized_keys")).unwrap();
    let ecdsa = f.keys.path().join("ecdsa");
    keygen(&ecdsa, "ecdsa", "");
    let ecdsa_pub = std::fs::read_to_string(ecdsa.with_extension("pub")).unwrap();
    std::fs::write(
        root.join("keys/authorized_keys"),
        format!("{keys}{ecdsa_pub}"),
    )
    .unwrap();
    refused(
        &["secret", "set", "x", "--host", "rpi-box-01"],
        "v",
        "keys/authorized_keys:2: a ecdsa-sha2-nistp256 key",
    );
    std::fs::write(root.join("keys/authorized_keys"), &keys).unwrap();

    // A passphrase-protected admin key without a terminal.
    let locked = f.keys.path().join("locked");
    keygen(&locked, "ed25519", "a passphrase");
    refused(
        &[
            "secret",
            "show",
            "db-pass",
            "--identity",
            locked.to_str().unwrap(),
        ],
        "",
        "has a passphrase and there is no terminal to ask for it",
    );

    // A corrupted and a truncated file: show refuses with the fix.
    let file = root.join("secrets/db-pass.age");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..good.len() / 3]).unwrap();
    let out = f.run(&["secret", "show", "db-pass"], "");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("secrets/db-pass.age is not a usable age file"));
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 5] ^= 0xff;
    std::fs::write(&file, &bad).unwrap();
    let out = f.run(&["secret", "show", "db-pass"], "");
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains(VALUE));
    std::fs::write(&file, &good).unwrap();
}

/// `check` reads recipients from the age header, decrypting nothing.
#[test]
fn check_catches_recipient_mismatches() {
    if !prerequisite(common::need_nix()) {
        return;
    }
    let Some(f) = fixture() else { return };
    let root = f.root();
    assert!(
        f.run(&["secret", "set", "db-pass", "--host", "rpi-box-01"], VALUE)
            .status
            .success()
    );
    let check = || {
        let out = common::xtask(root)
            .env("XDG_DATA_HOME", f.data.path())
            .arg("check")
            .output()
            .unwrap();
        text(&out.stdout)
    };
    let out = check();
    assert!(!out.contains("secret `db-pass`"), "{out}");
    // Nix (lib/inventory.nix) reads the same secrets file: check compares.
    assert!(!out.contains("the flake's inventory differs"), "{out}");

    // The entry now says rpi-box-03 reads it too; the file was not rekeyed.
    let toml_path = root.join("secrets/secrets.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(
        &toml_path,
        toml.replace("hosts = [\"rpi-box-01\"]", "hosts = [\"rpi-box-03\"]"),
    )
    .unwrap();
    let out = check();
    assert!(
        out.contains("secrets/secrets.toml:4: secret `db-pass`: host rpi-box-03 should read it but secrets/db-pass.age is not encrypted to its key"),
        "{out}"
    );
    assert!(
        out.contains("secret `db-pass`: 1 key(s) no longer listed (a removed host or admin key, or a host's old key) can still read secrets/db-pass.age"),
        "{out}"
    );
    assert!(out.contains("cargo xtask secret rekey"), "{out}");
    assert!(f.run(&["secret", "rekey"], "").status.success());
    let out = check();
    assert!(!out.contains("secret `db-pass`"), "{out}");

    // A container using a secret its host does not read (db-pass is rpi-box-03's now).
    std::fs::write(
        root.join("hosts/rpi-box-01/containers.toml"),
        "[[container]]\nname = \"db\"\nimage = \"postgres@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nsecrets = [\"db-pass\"]\n",
    )
    .unwrap();
    let out = check();
    assert!(
        out.contains("hosts/rpi-box-01/containers.toml:4: container `db` uses the secret `db-pass`, which rpi-box-01 does not read"),
        "{out}"
    );
    std::fs::remove_file(root.join("hosts/rpi-box-01/containers.toml")).unwrap();

    // A truncated file.
    let file = root.join("secrets/db-pass.age");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..40]).unwrap();
    let out = check();
    assert!(
        out.contains("secrets/db-pass.age:1: not a usable age file"),
        "{out}"
    );
}
