//! The test harness's private current Nix (common/nixenv.rs): each test
//! has its own store, a current Nix, and the machine's store is untouched.

mod common;

/// Builds a tiny derivation with the private Nix: (store path, stderr).
fn build(tag: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.nix");
    std::fs::write(
        &file,
        format!(
            "derivation {{ name = \"nixenv-{tag}\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \"echo {tag} > $out\" ]; }}"
        ),
    )
    .unwrap();
    let out = common::command("nix-build")
        .arg(&file)
        .arg("--no-out-link")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
        stderr,
    )
}

/// The machine's /nix/store, seen from outside every test's namespace (the
/// main thread's: libtest runs tests on threads of their own).
fn machine_store() -> Vec<String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", std::process::id()))
        // (A machine whose Nix never ran may have no store yet.)
        .args(["sh", "-c", "[ ! -e /nix/store ] || ls /nix/store"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// Two tests build the same derivation: each must really build it (a
/// shared store would give the second one the first one's result), in its
/// own store, and the machine's store gets nothing.
fn same_derivation_is_built_again() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let (path, stderr) = build("shared");
    assert!(
        stderr.contains("building '/nix/store/"),
        "not built: {stderr}"
    );
    // The test thread itself sees its private store.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "shared\n");
    // A thread the test starts shares it.
    let p = path.clone();
    std::thread::spawn(move || {
        let out = common::command("nix-store")
            .args(["--check-validity", &p])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{p} is not valid in a thread of the test"
        );
    })
    .join()
    .unwrap();
    // (Other processes may use the machine's store meanwhile: look for
    // this test's derivation only.)
    let machine = machine_store();
    assert!(
        !machine.iter().any(|p| p.contains("-nixenv-shared")),
        "the build went to the machine's store"
    );
}

#[test]
fn a_test_has_its_own_store() {
    same_derivation_is_built_again();
}

#[test]
fn another_test_has_its_own_store_too() {
    same_derivation_is_built_again();
}

#[test]
fn the_nix_is_current() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let out = common::command("nix").arg("--version").output().unwrap();
    let v = String::from_utf8(out.stdout).unwrap();
    let num = v.trim().rsplit(' ').next().unwrap().to_string();
    let mut parts = num.split('.').map(|x| x.parse::<u32>().unwrap());
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    assert!((major, minor) >= (2, 18), "{v}");
    // Every name Nix answers to runs the same binary.
    let out = common::command("nix-store")
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("nix-store (Nix) {num}")
    );
}

/// The machine's own Nix stays reachable for the tests that prove the
/// xtask refuses it, and it is not the tests' Nix.
#[test]
fn the_machines_nix_is_reachable_for_refusal_tests() {
    if !common::prerequisite(common::need_nix().or_else(|| common::need_program("nix", "nix-bin")))
    {
        return;
    }
    let ours = common::command("nix").arg("--version").output().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The PATH the xtask would be given.
    let cmd = common::xtask_with_machine_nix(dir.path());
    let path = cmd
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .and_then(|(_, v)| v)
        .unwrap()
        .to_owned();
    let theirs = std::process::Command::new("nix")
        .env("PATH", &path)
        .arg("--version")
        .output()
        .unwrap();
    assert!(theirs.status.success());
    assert_ne!(
        ours.stdout, theirs.stdout,
        "the machine's Nix is the tests' Nix"
    );
}
