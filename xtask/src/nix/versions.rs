//! Everything the xtask parses from Nix, on text captured from the two
//! Nix versions the tests run: Debian 12's 2.8 (a stale workstation) and
//! Debian 13's 2.26 (what the end-to-end tests and fake Pis run). The
//! files in `fixtures/<version>/` were made by `fixtures/capture.sh`.

use std::path::Path;

use xshell::Shell;

use super::*;
use crate::binfmt::nixconf;

/// One captured command: stdout, stderr, exit status.
struct Captured {
    out: &'static str,
    err: &'static str,
    rc: i32,
}

macro_rules! captured {
    ($v:literal, $name:literal) => {
        Captured {
            out: include_str!(concat!("fixtures/", $v, "/", $name, ".out")),
            err: include_str!(concat!("fixtures/", $v, "/", $name, ".err")),
            rc: include_str!(concat!("fixtures/", $v, "/", $name, ".rc"))
                .trim()
                .parse()
                .unwrap(),
        }
    };
}

/// The same capture from both versions: `[2.8, 2.26]`.
macro_rules! both {
    ($name:literal) => {
        [captured!("2.8", $name), captured!("2.26", $name)]
    };
}

const TOP: &str = "/nix/store/8b7f74v4bf5hjfyfisb097qyp79m3s9a-capture-top";
const DEP: &str = "/nix/store/wh9rr3bc8ks634s05v6k1qkxi49pz0dc-capture-dep";

#[test]
fn versions() {
    let [old, new] = both!("version");
    assert_eq!(nixconf::parse_version(old.out), Some((2, 8)));
    assert_eq!(nixconf::parse_version(new.out), Some((2, 26)));
}

/// `nix show-config` until 2.19, `nix config show` from 2.20: the command
/// the xtask picks for each version is one that version runs without a
/// complaint, and both outputs parse to the settings the checks read.
#[test]
fn effective_config() {
    let sh = Shell::new().unwrap();
    let [old_show, new_show] = both!("show-config");
    let [old_config, new_config] = both!("config-show");
    assert_eq!(
        show_config(&sh, Some((2, 8)), true).to_string(),
        "nix --extra-experimental-features nix-command show-config"
    );
    assert_eq!(old_show.rc, 0);
    assert!(
        old_config
            .err
            .contains("'config' is not a recognised command")
    );
    assert_eq!(
        show_config(&sh, Some((2, 26)), true).to_string(),
        "nix --extra-experimental-features nix-command config show"
    );
    assert_eq!(new_config.rc, 0);
    assert!(new_config.err.is_empty(), "{}", new_config.err);
    assert!(new_show.err.contains("'show-config' is a deprecated alias"));
    for text in [old_show.out, new_config.out] {
        let c = nixconf::parse_show_config(text);
        assert!(c.len() > 80, "{c:?}");
        assert_eq!(c["system"], "x86_64-linux");
        assert_eq!(c["sandbox"], "false");
        assert_eq!(c["build-users-group"], "");
        assert_eq!(c["trusted-users"], "root");
        assert_eq!(nixconf::words(&c, "experimental-features"), ["nix-command"]);
        assert!(nixconf::words(&c, "extra-platforms").contains(&"i686-linux"));
    }
    // The default sandbox-paths differ: Debian's 2.26 mounts a static bash
    // as /bin/sh in every sandboxed build (so it must exist on the machine).
    let old = nixconf::parse_show_config(old_show.out);
    let new = nixconf::parse_show_config(new_config.out);
    assert!(nixconf::words(&old, "sandbox-paths").is_empty());
    assert_eq!(
        nixconf::words(&new, "sandbox-paths"),
        ["/bin/sh=/usr/bin/bash-static"]
    );
    assert!(nixconf::sandbox_covers(
        &nixconf::words(&new, "sandbox-paths"),
        "/bin/sh"
    ));
}

/// Without nix-command, both refuse `show-config` / `config show` in words
/// the check recognises (they differ after the semicolon).
#[test]
fn nix_command_off() {
    for c in both!("show-config-disabled") {
        assert_eq!(c.rc, 1);
        assert!(nixconf::nix_command_disabled(c.err), "{}", c.err);
    }
    let [_, new] = both!("config-show-disabled");
    assert!(nixconf::nix_command_disabled(new.err), "{}", new.err);
}

#[test]
fn build_json() {
    for c in both!("build-json") {
        assert_eq!(c.rc, 0, "{}", c.err);
        assert_eq!(built_path(c.out).unwrap(), TOP);
    }
}

/// A list of objects with `path` on 2.8, an object keyed by path on 2.26.
#[test]
fn path_info_json() {
    for c in both!("path-info-json") {
        assert_eq!(nar_sizes(c.out).unwrap(), [(TOP.to_string(), 168)]);
    }
    for c in both!("path-info-json-r") {
        let mut sizes = nar_sizes(c.out).unwrap();
        sizes.sort();
        assert_eq!(sizes, [(TOP.to_string(), 168), (DEP.to_string(), 120)]);
    }
}

/// A path not in the store: exit 0 on both, `"valid": false` on 2.8 and
/// `null` on 2.26; never a size of 0.
#[test]
fn path_info_json_of_a_missing_path() {
    for c in both!("path-info-json-invalid") {
        assert_eq!(c.rc, 0);
        let e = nar_sizes(c.out).unwrap_err().to_string();
        assert!(
            e.contains("-capture-nothing is not in the Nix store"),
            "{e}"
        );
    }
}

/// `--dry-run` says what would be built in the same words; 2.26 also says
/// it before a real build, so the words do not tell a dry run.
#[test]
fn dry_run() {
    for c in both!("dry-run") {
        assert_eq!(c.rc, 0);
        assert!(c.out.is_empty());
        assert!(
            c.err
                .contains("this derivation will be built:\n  /nix/store/")
                && c.err.contains("-capture-ok.drv"),
            "{}",
            c.err
        );
    }
    let [old, new] = both!("build-json");
    assert!(!old.err.contains("will be built"));
    assert!(new.err.contains("these 2 derivations will be built:"));
}

/// A failed builder: the same first error line; the log hint moved to its
/// own line on 2.26 (so the last line of a failed build is a bare `nix
/// log …` command there).
#[test]
fn build_failure() {
    let [old, new] = both!("build-fails");
    for c in [&old, &new] {
        assert_eq!(c.rc, 1);
        assert_eq!(
            error_summary(c.err),
            "builder for '/nix/store/l2xqlji93ap55z94pq4fc05w1qklba54-capture-fails.drv' failed with exit code 1;"
        );
        assert!(c.err.contains("> building went wrong"));
    }
    assert!(old.err.trim_end().ends_with(".drv'."));
    let last = new.err.trim_end().lines().last().unwrap().trim();
    assert!(last.starts_with("nix log /nix/store/"), "{last}");
}

/// The refusal the binfmt check explains (diagnose: "is required to
/// build"); 2.26 adds `uid-range` to the features.
#[test]
fn wrong_platform() {
    for c in both!("build-aarch64") {
        assert_eq!(c.rc, 1);
        let s = error_summary(c.err);
        assert!(
            s.starts_with("a 'aarch64-linux' with features {} is required to build '/nix/store/"),
            "{s}"
        );
    }
}

#[test]
fn eval() {
    for c in both!("eval-json") {
        let v: serde_json::Value = serde_json::from_str(c.out).unwrap();
        assert_eq!(v, serde_json::json!({ "hosts": ["a"] }));
    }
    for c in both!("eval-missing") {
        assert_eq!(error_summary(c.err), "attribute 'nothing' missing");
    }
    // 2.26 prints a bare `error:`, the trace, then the nested error.
    let [old, new] = both!("eval-throws");
    assert!(new.err.starts_with("error:\n"), "{}", new.err);
    assert!(!old.err.starts_with("error:\n"));
    for c in [old, new] {
        assert_eq!(error_summary(c.err), "the inventory is broken");
    }
    for c in both!("eval-no-attr") {
        let s = error_summary(c.err);
        assert!(
            s.starts_with("flake 'path:/build/capture/flake' does not provide attribute"),
            "{s}"
        );
    }
}

/// `check` reads the line and the message of a parse error; 2.26 drops
/// the blank lines around the position.
#[test]
fn parse_error() {
    for c in both!("parse-error") {
        assert_eq!(error_line(c.err, Path::new("/build/capture/bad.nix")), 3);
        assert_eq!(error_summary(c.err), "syntax error, unexpected ';'");
    }
}

/// Copying an unsigned path into a store that requires signatures: the
/// words differ ("a valid signature" / "a signature by a trusted key").
#[test]
fn copy_errors() {
    let [old, new] = both!("copy-unsigned");
    let p = "/nix/store/n6vnpzk6013hx5y6s7y3pgd6mbfnww23-capture-ok";
    assert_eq!(
        error_summary(old.err),
        format!("cannot add path '{p}' because it lacks a valid signature")
    );
    assert_eq!(
        error_summary(new.err),
        format!("cannot add path '{p}' because it lacks a signature by a trusted key")
    );
    for c in [&old, &new] {
        assert!(error_summary(c.err).contains("lacks a"), "{}", c.err);
    }
    // An SSH store that refuses the connection: ssh's own line first, then
    // Nix's, in other words on each version.
    let [old, new] = both!("copy-refused");
    for c in [&old, &new] {
        assert!(
            c.err
                .starts_with("ssh: connect to host 127.0.0.1 port 1: Connection refused")
        );
    }
    assert_eq!(error_summary(old.err), "cannot connect to 'root@127.0.0.1'");
    assert_eq!(
        error_summary(new.err),
        "failed to start SSH connection to 'root@127.0.0.1'"
    );
}
