//! `cargo xtask identity`: host keys made on the workstation (public half in
//! Git, private half 0600 in the user's data folder), every refusal, the key
//! written onto the card by `sd` (read back with debugfs), and fake Pis:
//! one booted with the key from Git (status and deploy connect with no
//! prompt, strictly), one with another key (refused, naming the Git file).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::fakepi::{self, Fleet, Spec};
use common::sd_fixture::{NIX_CONFIG, git, sd_fleet};
use common::{binfmt_ns, need_program, prerequisite};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `cargo xtask identity ARGS` on `root`, host keys kept under `data`.
/// (No Nix: identity never runs it.)
fn identity(root: &Path, data: &Path, args: &[&str]) -> std::process::Output {
    plain(root)
        .env("XDG_DATA_HOME", data)
        .arg("identity")
        .args(args)
        .output()
        .unwrap()
}

fn plain(root: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("xtask").unwrap();
    cmd.arg("--flake").arg(root);
    cmd
}

fn fleet_id(root: &Path) -> String {
    std::fs::read_to_string(root.join("keys/fleet-id"))
        .unwrap()
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .to_string()
}

fn private(root: &Path, data: &Path, host: &str) -> PathBuf {
    data.join("pi-nixos")
        .join(fleet_id(root))
        .join("hosts")
        .join(host)
        .join("ssh_host_ed25519_key")
}

/// `ssh-keygen -y`: the public half (type and base64) of a private key.
fn public_of(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-y", "-f"])
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    two_words(&text(&out.stdout))
}

fn two_words(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn keygen(path: &Path, kind: &str) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn identity_makes_imports_and_refuses() {
    if !prerequisite(need_program("ssh-keygen", "openssh-client")) {
        return;
    }
    let fleet = common::fixture_fleet();
    let root = fleet.path();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();

    // Dry run: says what, writes nothing.
    let out = identity(root, d, &["rpi-box-01", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("would make an ed25519 host key"));
    assert!(!root.join("keys/fleet-id").exists());
    assert!(!d.join("pi-nixos").exists());

    let out = identity(root, d, &["rpi-box-01"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pub_file = root.join("hosts/rpi-box-01/ssh_host_ed25519_key.pub");
    let in_git = std::fs::read_to_string(&pub_file).unwrap();
    assert!(in_git.starts_with("ssh-ed25519 ") && in_git.ends_with(" root@rpi-box-01\n"));
    let key = private(root, d, "rpi-box-01");
    assert_eq!(mode(&key), 0o600);
    let mut dir = key.parent().unwrap();
    while dir != d {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        dir = dir.parent().unwrap();
    }
    assert_eq!(public_of(&key), two_words(&in_git));
    // The private key is nowhere in the repository.
    let secret = std::fs::read_to_string(&key).unwrap();
    let grep = Command::new("grep")
        .args(["-rqF", secret.lines().nth(1).unwrap()])
        .arg(root)
        .status()
        .unwrap();
    assert!(!grep.success(), "the private key is in the repository");

    // Again: nothing changes.
    let out = identity(root, d, &["rpi-box-01"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("has its identity"));
    assert_eq!(std::fs::read_to_string(&pub_file).unwrap(), in_git);

    // new-host makes one too.
    let out = plain(root)
        .env("XDG_DATA_HOME", d)
        .args(["new-host", "rpi-new", "--model", "pi4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(root.join("hosts/rpi-new/ssh_host_ed25519_key.pub").exists());
    assert!(private(root, d, "rpi-new").exists());

    let refused = |args: &[&str], data: &Path, message: &str| {
        let before = std::fs::read_to_string(&pub_file).unwrap();
        let out = identity(root, data, args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(std::fs::read_to_string(&pub_file).unwrap(), before);
    };
    let keys = tempfile::tempdir().unwrap();
    let k = keys.path();

    // Importing a public key, a non-ed25519 key, a key that is not Git's.
    refused(
        &["rpi-box-01", "--import", pub_file.to_str().unwrap()],
        d,
        "it is a public key; give the host's private key",
    );
    keygen(&k.join("rsa"), "rsa");
    refused(
        &["rpi-box-03", "--import", k.join("rsa").to_str().unwrap()],
        d,
        "is a ssh-rsa key; a host identity is ssh-ed25519",
    );
    keygen(&k.join("other"), "ed25519");
    refused(
        &["rpi-box-01", "--import", k.join("other").to_str().unwrap()],
        d,
        "is not the one in Git (hosts/rpi-box-01/ssh_host_ed25519_key.pub)",
    );
    refused(&["nope"], d, "no host `nope` in hosts/fleet.toml");
    // Git has the key, this workstation does not: say where to get it.
    let elsewhere = tempfile::tempdir().unwrap();
    refused(
        &["rpi-box-01"],
        elsewhere.path(),
        "is in Git but its private key is not on this workstation",
    );
    // …and the Pi's own key (matching Git) can be imported there.
    let copy = k.join("from-the-pi");
    std::fs::copy(&key, &copy).unwrap();
    let out = identity(
        root,
        elsewhere.path(),
        &["rpi-box-01", "--import", copy.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(private(root, elsewhere.path(), "rpi-box-01")).unwrap(),
        std::fs::read(&key).unwrap()
    );

    // A running Pi adopted: its key becomes the identity.
    let out = identity(
        root,
        d,
        &["rpi-box-03", "--import", k.join("other").to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        two_words(
            &std::fs::read_to_string(root.join("hosts/rpi-box-03/ssh_host_ed25519_key.pub"))
                .unwrap()
        ),
        public_of(&k.join("other"))
    );
    assert_eq!(mode(&private(root, d, "rpi-box-03")), 0o600);
}

/// The sd harness: real Nix builds of the fixture flake under QEMU in a
/// private binfmt namespace (see tests/sd.rs).
fn sd_ready() -> bool {
    prerequisite(
        [
            ("nix", "nix-bin"),
            ("git", "git"),
            ("zstd", "zstd"),
            ("sfdisk", "fdisk"),
            ("mkfs.vfat", "dosfstools"),
            ("mcopy", "mtools"),
            ("debugfs", "e2fsprogs"),
            ("ssh-keygen", "openssh-client"),
        ]
        .iter()
        .find_map(|(p, pkg)| need_program(p, pkg))
        .or_else(binfmt_ns::missing),
    )
}

#[test]
fn sd_writes_the_host_key_onto_the_card() {
    if !sd_ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    let ns = binfmt_ns::BinfmtNs::new()
        .register_qemu("POF")
        .nix_conf(&format!(
            "{NIX_CONFIG}\nextra-platforms = aarch64-linux i686-linux\n"
        ));
    // The namespace's HOME is where the xtask keeps host keys there.
    let data = ns.home().join(".local/share");
    let out = identity(root, &data, &["rpi-box-03"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "identity"]);

    let bin = assert_cmd::cargo::cargo_bin("xtask");
    let out = ns.run(
        bin,
        &[
            "--flake",
            root.to_str().unwrap(),
            "sd",
            "rpi-box-03",
            "--decompress",
        ],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let raw = root.join("out/rpi-box-03/rpi-box-03.img");
    assert_eq!(mode(&raw), 0o600);
    assert_eq!(mode(&root.join("out/rpi-box-03/rpi-box-03.img.zst")), 0o600);

    // Read back without mounting: path, owner, mode, and its public half is Git's.
    let ext4 = format!("{}?offset={}", raw.display(), 38 << 20);
    let debugfs = |req: &str| {
        let out = Command::new("debugfs")
            .args(["-R", req, &ext4])
            .output()
            .unwrap();
        assert!(out.status.success());
        text(&out.stdout)
    };
    let stat = debugfs("stat etc/ssh/ssh_host_ed25519_key");
    assert!(stat.contains("Type: regular    Mode:  0600"), "{stat}");
    assert!(stat.contains("User:     0   Group:     0"), "{stat}");
    let pub_stat = debugfs("stat etc/ssh/ssh_host_ed25519_key.pub");
    assert!(pub_stat.contains("Mode:  0644"), "{pub_stat}");
    let dir = tempfile::tempdir().unwrap();
    let back = dir.path().join("key");
    std::fs::write(&back, debugfs("cat etc/ssh/ssh_host_ed25519_key")).unwrap();
    std::fs::set_permissions(&back, std::fs::Permissions::from_mode(0o600)).unwrap();
    let git_pub =
        std::fs::read_to_string(root.join("hosts/rpi-box-03/ssh_host_ed25519_key.pub")).unwrap();
    assert_eq!(public_of(&back), two_words(&git_pub));
    let e2fsck = Command::new("e2fsck")
        .args(["-fn", &ext4])
        .output()
        .unwrap();
    assert!(e2fsck.status.success(), "{}", text(&e2fsck.stdout));

    // The private key is in no log, not in Git, not in the build's closure.
    let private = std::fs::read_to_string(&back).unwrap();
    let needle = private.lines().nth(1).unwrap().to_string();
    assert!(!text(&out.stdout).contains(&needle) && !text(&out.stderr).contains(&needle));
    let grep = Command::new("git")
        .args(["-C", root.to_str().unwrap(), "grep", "-qF", &needle])
        .status()
        .unwrap();
    assert!(!grep.success(), "the host key is in Git");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("out/rpi-box-03/rpi-box-03.img.json")).unwrap(),
    )
    .unwrap();
    let hits = store_contains(record["store_path"].as_str().unwrap(), &needle);
    assert!(
        hits.is_empty(),
        "the host key is in the Nix store: {hits:?}"
    );

    // Git has the key but this workstation (a namespace with another,
    // empty HOME) lacks the private half: refused before building.
    let other = binfmt_ns::BinfmtNs::new()
        .register_qemu("POF")
        .nix_conf(&format!(
            "{NIX_CONFIG}\nextra-platforms = aarch64-linux i686-linux\n"
        ));
    let out = other.run(
        assert_cmd::cargo::cargo_bin("xtask"),
        &[
            "--flake",
            root.to_str().unwrap(),
            "sd",
            "rpi-box-03",
            "--dry-run",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is in Git but its private key is not on this workstation"),
        "{}",
        text(&out.stderr)
    );
}

/// Every file of the build's closure (derivations, sources, outputs; .zst
/// files decompressed) that contains `needle`.
fn store_contains(store_path: &str, needle: &str) -> Vec<String> {
    let nix_store = |args: &[&str]| {
        let out = common::command("nix-store").args(args).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let drv = nix_store(&["-qd", store_path]);
    let closure = nix_store(&["-qR", "--include-outputs", drv.trim()]);
    let mut hits = Vec::new();
    let mut stack: Vec<PathBuf> = closure.lines().map(Into::into).collect();
    assert!(stack.len() >= 2, "{closure}");
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if meta.is_file() {
            let bytes = if p.extension().is_some_and(|e| e == "zst") {
                Command::new("zstd")
                    .arg("-dc")
                    .arg(&p)
                    .output()
                    .unwrap()
                    .stdout
            } else {
                std::fs::read(&p).unwrap()
            };
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// The shared Debian root of the fake Pis, or None when the test must skip.
fn base() -> Option<PathBuf> {
    if !prerequisite(fakepi::missing()) {
        return None;
    }
    match fakepi::base(Path::new(env!("CARGO_TARGET_TMPDIR"))) {
        Ok(b) => Some(b),
        Err(e) => {
            prerequisite(Some(format!("cannot make the fake Pi root: {e}")));
            None
        }
    }
}

fn run(f: &Fleet, data: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = common::xtask(&f.repo());
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    // stdin is empty: a host key question would be answered "no".
    let out = cmd
        .env("XDG_DATA_HOME", data)
        .args(args)
        .write_stdin("")
        .output()
        .unwrap();
    eprintln!(
        "--- cargo xtask {}\n{}\n{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn commit(repo: &Path) {
    if !repo.join(".git").exists() {
        git(repo, &["init", "-q"]);
        std::fs::write(repo.join(".gitignore"), "out/\n").unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "--allow-empty", "-m", "change"]);
}

#[test]
fn pis_are_checked_against_the_key_in_git() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-git", "pi-other"]);
    let data = f.work().join("data");
    for host in ["pi-git", "pi-other"] {
        assert!(run(&f, &data, &["identity", host]).status.success());
    }
    let repo = f.repo();
    // pi-git boots with its card's key; the workstation's known_hosts does
    // not know it. pi-other boots with a key of its own, which known_hosts
    // trusts, but Git names another.
    f.use_host_key("pi-git", &private(&repo, &data, "pi-git"));
    commit(&repo);
    f.boot_all();
    let known = std::fs::read_to_string(f.work().join("known_hosts")).unwrap();
    assert!(
        !known.contains(&format!(":{}]", f.pi("pi-git").port)),
        "{known}"
    );

    // No prompt (stdin is empty), strict checking, and status says so.
    let out = run(&f, &data, &["status", "pi-git", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s[0]["reachable"], true, "{s}");
    assert_eq!(s[0]["host_key"], "matches git", "{s}");
    assert!(!text(&out.stderr).contains("first contact"));
    let out = run(&f, &data, &["status", "pi-git"]);
    assert!(
        text(&out.stdout).contains("HOST KEY"),
        "{}",
        text(&out.stdout)
    );

    // A deploy connects the same way.
    f.set("pi-git", &Spec::version("1"));
    commit(&repo);
    let out = run(&f, &data, &["deploy", "pi-git", "--confirm-timeout", "20"]);
    assert!(out.status.success(), "deploy failed");
    assert_eq!(f.generation("pi-git"), 2);

    // Another key: refused, naming the Git file and what to do; never asked.
    let message = "the SSH host key of 127.0.0.1:";
    let out = run(&f, &data, &["status", "pi-other", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s[0]["host_key"], "differs from git", "{s}");
    let err = s[0]["error"].as_str().unwrap();
    assert!(err.contains(message), "{err}");
    assert!(
        err.contains("is NOT the one in Git (hosts/pi-other/ssh_host_ed25519_key.pub)"),
        "{err}"
    );
    assert!(
        err.contains("cargo xtask identity pi-other --import"),
        "{err}"
    );
    f.set("pi-other", &Spec::version("1"));
    commit(&repo);
    let before = f.generation("pi-other");
    let out = run(&f, &data, &["deploy", "pi-other"]);
    assert!(!out.status.success());
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(
        all.contains("is NOT the one in Git (hosts/pi-other/ssh_host_ed25519_key.pub)"),
        "{all}"
    );
    assert!(!all.contains("trust it?"), "{all}");
    assert_eq!(f.generation("pi-other"), before);

    // Without a key in Git, the host is what it was: first contact asks.
    std::fs::remove_file(repo.join("hosts/pi-other/ssh_host_ed25519_key.pub")).unwrap();
    commit(&repo);
    let out = run(&f, &data, &["status", "pi-other", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s[0]["reachable"], true, "{s}");
    assert_eq!(s[0]["host_key"], "not in git", "{s}");
}

/// Nix (lib/inventory.nix) and the xtask read the same host keys: `check`
/// compares them, and catches a Nix side that reads another file.
#[test]
fn check_proves_nix_reads_the_same_host_keys() {
    if !prerequisite(common::need_nix()) {
        return;
    }
    let fleet = common::fixture_fleet();
    let root = fleet.path();
    let data = tempfile::tempdir().unwrap();
    assert!(
        identity(root, data.path(), &["rpi-box-01"])
            .status
            .success()
    );
    let out = common::xtask(root).arg("check").output().unwrap();
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("the flake's inventory differs"),
        "{stdout}"
    );
    assert!(!stdout.contains("ssh_host_ed25519_key"), "{stdout}");

    // A private key inside the repository, a .pub file that is not one key.
    let k = root.join("hosts/rpi-box-03/ssh_host_ed25519_key");
    keygen(&k, "ed25519");
    std::fs::write(root.join("hosts/rpi-zero-01/ssh_host_ed25519_key.pub"), "").unwrap();
    let out = common::xtask(root).arg("check").output().unwrap();
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains(
            "hosts/rpi-box-03/ssh_host_ed25519_key:1: a private host key inside the repository"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("hosts/rpi-zero-01/ssh_host_ed25519_key.pub:1: holds 0 keys"),
        "{stdout}"
    );
    std::fs::remove_file(&k).unwrap();
    std::fs::remove_file(k.with_extension("pub")).unwrap();
    std::fs::remove_file(root.join("hosts/rpi-zero-01/ssh_host_ed25519_key.pub")).unwrap();

    let lib = std::fs::read_to_string(root.join("lib/inventory.nix")).unwrap();
    std::fs::write(
        root.join("lib/inventory.nix"),
        lib.replace("/ssh_host_ed25519_key.pub\"", "/other.pub\""),
    )
    .unwrap();
    let out = common::xtask(root).arg("check").output().unwrap();
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("inventory.host_keys.rpi-box-01: only the xtask has it"),
        "{stdout}"
    );
}
