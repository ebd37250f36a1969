//! A Pi whose Nix is not the workstation's: deploy, status and rollback
//! between the workstation's Nix (Debian 13's 2.26, `common/nixenv.rs`)
//! and a fake Pi booted from Debian's next release (its newer `nix-bin`),
//! next to a Pi on the workstation's version. A Pi and a workstation
//! rarely run the same Nix.

mod common;

use common::fakepi::{self, Fleet, Spec};
use common::nixenv;

fn xtask(f: &Fleet, args: &[&str]) -> (bool, String, String) {
    let mut cmd = common::xtask(&f.repo());
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("--- cargo xtask {}\n{stdout}\n{stderr}", args.join(" "));
    (out.status.success(), stdout, stderr)
}

/// (major, minor) of `nix (Nix) X.Y.Z`.
fn version(text: &str) -> (u32, u32) {
    let v = text.trim().rsplit(' ').next().unwrap();
    let mut p = v.split('.').map(|x| x.parse::<u32>().unwrap());
    (p.next().unwrap(), p.next().unwrap())
}

#[test]
fn deploy_and_rollback_across_nix_versions() {
    if !common::prerequisite(fakepi::missing()) {
        return;
    }
    let cache = common::cache();
    let (base, newer) = match (fakepi::base(&cache), fakepi::base_of(&cache, nixenv::NEWER)) {
        (Ok(b), Ok(n)) => (b, n),
        (Err(e), _) | (_, Err(e)) => {
            common::prerequisite(Some(format!("cannot make the fake Pi roots: {e}")));
            return;
        }
    };
    let mut f = Fleet::new(&base, &["pi-new", "pi-same"]);
    f.boot_from("pi-new", &newer);
    f.boot_all();
    let here = version(
        &String::from_utf8(
            common::command("nix")
                .arg("--version")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    );
    let on_new = version(&f.ssh("pi-new", "nix --version"));
    let on_same = version(&f.ssh("pi-same", "nix --version"));
    assert!(here >= (2, 18), "workstation {here:?}");
    assert_eq!(on_same, here);
    assert!(
        on_new > here,
        "the Pi's Nix {on_new:?} is not newer than {here:?}"
    );

    f.set("pi-new", &Spec::version("1"));
    f.set("pi-same", &Spec::version("1"));
    let (ok, stdout, _) = xtask(&f, &["deploy", "--all", "--confirm-timeout", "20"]);
    assert!(ok, "{stdout}");
    for pi in ["pi-new", "pi-same"] {
        assert_eq!(f.generation(pi), 2, "{pi}");
        assert_eq!(f.current(pi), f.build(pi), "{pi}");
    }
    let (ok, stdout, _) = xtask(&f, &["status", "pi-new", "--json"]);
    assert!(ok, "{stdout}");
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(s[0]["sync"], "in sync", "{s}");
    assert_eq!(s[0]["generation"], 2, "{s}");

    let (ok, stdout, _) = xtask(&f, &["rollback", "pi-new", "--confirm-timeout", "20"]);
    assert!(ok, "{stdout}");
    assert_eq!(f.generation("pi-new"), 1);
}
