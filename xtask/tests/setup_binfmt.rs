//! `cargo xtask setup-binfmt` end to end, each case in a private user,
//! mount and PID namespace (see `common/binfmt_ns.rs`) with the real
//! qemu-user-static and real nix. The machine's binfmt registrations and
//! /etc are never touched.

mod common;

use std::path::PathBuf;

use common::binfmt_ns::{self, BinfmtNs, sh_quote, text};

fn xtask_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("xtask")
}

fn ready() -> bool {
    common::prerequisite(binfmt_ns::missing())
}

const NIX_READY: &str = "sandbox = true\nextra-platforms = aarch64-linux i686-linux\n";

/// (a) Nothing registered: --check fails and names it.
#[test]
fn check_fails_when_nothing_is_registered() {
    if !ready() {
        return;
    }
    let out = BinfmtNs::new()
        .nix_conf(NIX_READY)
        .run(xtask_bin(), &["setup-binfmt", "--check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("✗ qemu-aarch64 is not registered"),
        "{stdout}"
    );
    assert!(stdout.contains("Exec format error"), "{stdout}");
    assert!(
        stdout.contains("/proc/sys/fs/binfmt_misc/register"),
        "{stdout}"
    );
    assert!(
        stdout.contains("✓ Nix accepts aarch64-linux builds"),
        "{stdout}"
    );
    assert!(
        stderr.contains("run `cargo xtask setup-binfmt`"),
        "{stderr}"
    );
}

/// (b) Registered without F, no sandbox paths, sandbox on: the program
/// probe works, and the Nix probe fails with the missing-F diagnosis.
#[test]
fn check_fails_at_the_nix_probe_without_flag_f() {
    if !ready() {
        return;
    }
    let out = BinfmtNs::new()
        .register_qemu("OP")
        .nix_conf(NIX_READY)
        .run(xtask_bin(), &["setup-binfmt", "--check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("✓ qemu-aarch64 registered"), "{stdout}");
    assert!(stdout.contains("✗ no flag F"), "{stdout}");
    assert!(stdout.contains("✓ an aarch64 program ran"), "{stdout}");
    assert!(
        stdout.contains("✗ Nix could not build an aarch64-linux derivation in the sandbox: the build sandbox cannot see the QEMU interpreter"),
        "{stdout}"
    );
    // The diagnosis comes from the real build failure.
    assert!(
        stdout.contains("nix said: executing '/nix/store/")
            && stdout.contains("No such file or directory"),
        "{stdout}"
    );
}

/// A working setup passes, and the derivation really was built.
#[test]
fn check_passes_when_ready() {
    if !ready() {
        return;
    }
    let out = BinfmtNs::new()
        .register_qemu("POF")
        .nix_conf("sandbox = true\nextra-platforms = aarch64-linux i686-linux\nextra-experimental-features = nix-command flakes\n")
        .run(xtask_bin(), &["setup-binfmt", "--check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains('✗'), "{stdout}");
    let built = built_path(&stdout);
    assert_eq!(std::fs::read(&built).unwrap(), b"hello from aarch64\n");
}

/// The store path the Nix probe built, from the checklist.
fn built_path(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("✓ Nix built an aarch64-linux derivation in the sandbox: "))
        .unwrap_or_else(|| panic!("no built derivation in:\n{stdout}"));
    line.rsplit(' ').next().unwrap().to_string()
}

/// --dry-run prints the plan and changes nothing.
#[test]
fn dry_run_changes_nothing() {
    if !ready() {
        return;
    }
    let conf = "sandbox = true\nmax-jobs = 3\n";
    let script = format!(
        "{x} setup-binfmt --dry-run; echo \"status $?\"; echo ==nix.conf; cat /etc/nix/nix.conf; echo ==etc; ls /etc/nix /etc/binfmt.d; echo ==binfmt; ls /proc/sys/fs/binfmt_misc",
        x = sh_quote(xtask_bin())
    );
    let out = BinfmtNs::new().nix_conf(conf).script(&script);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("status 0"), "{stdout}\n{stderr}");
    assert!(stdout.contains("plan:"), "{stdout}");
    assert!(stdout.contains("$ echo ':qemu-aarch64:M::"), "{stdout}");
    assert!(
        stdout.contains("+ extra-platforms = aarch64-linux i686-linux"),
        "{stdout}"
    );
    assert!(stdout.contains("dry run: nothing was changed"), "{stdout}");
    let after = stdout.split("==nix.conf\n").nth(1).unwrap();
    assert!(
        after.starts_with(&format!(
            "{conf}==etc\n/etc/binfmt.d:\n\n/etc/nix:\nnix.conf\n==binfmt\nregister\nstatus\n"
        )),
        "{after}"
    );
}

/// (c) Fix mode repairs the missing-F setup and Nix's settings, then the
/// check passes with a real aarch64 build; (d) a second run changes nothing.
#[test]
fn fix_mode_repairs_and_is_idempotent() {
    if !ready() {
        return;
    }
    let conf = "# mine\nsandbox = true\nmax-jobs = 3\n";
    let x = sh_quote(xtask_bin());
    let script = format!(
        "{x} setup-binfmt --yes; echo \"first $?\"; \
         echo ==second; {x} setup-binfmt --yes; echo \"second $?\"; \
         echo ==nix.conf; cat /etc/nix/nix.conf; echo ==etc; ls /etc/nix | sed 's/[0-9]*$//'; \
         echo ==drop-in; cat /etc/binfmt.d/qemu-aarch64.conf; \
         echo ==entry; cat /proc/sys/fs/binfmt_misc/qemu-aarch64"
    );
    // As Ubuntu 24.04's qemu-user-binfmt leaves it: registered, no F, and
    // the same at every boot.
    let ns = BinfmtNs::new()
        .register_qemu("OP")
        .package_rule("OP")
        .nix_conf(conf);
    let out = ns.script(&script);
    let (stdout, stderr) = text(&out);
    let (first, rest) = stdout.split_once("==second\n").unwrap();
    // (c)
    assert!(first.contains("first 0"), "{stdout}\n{stderr}");
    assert!(first.contains("checking again:"), "{first}");
    let built = built_path(first);
    assert_eq!(std::fs::read(&built).unwrap(), b"hello from aarch64\n");
    // (d)
    let (second, files) = rest.split_once("==nix.conf\n").unwrap();
    assert!(second.contains("second 0"), "{second}\n{stderr}");
    assert!(second.contains("nothing to change"), "{second}");
    assert!(!second.contains("plan:"), "{second}");
    // nix.conf: the user's lines kept, ours added once, one backup.
    let (conf_now, rest) = files.split_once("==etc\n").unwrap();
    assert!(conf_now.starts_with(conf), "{conf_now}");
    assert_eq!(conf_now.matches("extra-platforms").count(), 1, "{conf_now}");
    assert!(
        conf_now.contains("extra-platforms = aarch64-linux i686-linux"),
        "{conf_now}"
    );
    assert!(
        conf_now.contains("extra-experimental-features = nix-command flakes"),
        "{conf_now}"
    );
    eprintln!("{stdout}\n{stderr}");
    let (etc, rest) = rest.split_once("==drop-in\n").unwrap();
    assert_eq!(etc, "nix.conf\nnix.conf.bak-\n", "one backup only");
    let (drop_in, entry) = rest.split_once("==entry\n").unwrap();
    assert!(
        drop_in.starts_with(":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46"),
        "{drop_in}"
    );
    assert!(
        drop_in
            .trim_end()
            .ends_with(":/usr/libexec/qemu-binfmt/aarch64-binfmt-P:POF"),
        "{drop_in}"
    );
    assert!(entry.contains("flags: POF"), "{entry}");
    assert!(entry.starts_with("enabled\n"), "{entry}");
}

/// The harness itself: the namespace's registrations do not leak out.
#[test]
fn namespace_registrations_stay_private() {
    if !ready() {
        return;
    }
    let outside = || {
        std::fs::read_dir("/proc/sys/fs/binfmt_misc")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = outside();
    let out = BinfmtNs::new()
        .register_qemu("POF")
        .script("cat /proc/sys/fs/binfmt_misc/qemu-aarch64; cat /etc/nix/nix.conf");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("flags: POF"), "{stdout}");
    assert!(stdout.ends_with(binfmt_ns::DEFAULT_NIX_CONF), "{stdout}");
    assert_eq!(outside(), before);
}

/// Without F, the other fix: the interpreter and its target in
/// extra-sandbox-paths. The check accepts it and the sandboxed build works.
#[test]
fn sandbox_paths_instead_of_flag_f() {
    if !ready() {
        return;
    }
    let out = BinfmtNs::new()
        .register_qemu("OP")
        .nix_conf("sandbox = true\nextra-platforms = aarch64-linux i686-linux\nextra-sandbox-paths = /usr/libexec/qemu-binfmt /usr/bin/qemu-aarch64-static\n")
        .run(xtask_bin(), &["setup-binfmt", "--check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("✓ no flag F, but the interpreter is in Nix's extra-sandbox-paths"),
        "{stdout}"
    );
    let built = built_path(&stdout);
    assert_eq!(std::fs::read(&built).unwrap(), b"hello from aarch64\n");
}

/// A user of a real nix-daemon (Debian's nix-setup-systemd layout): the
/// build goes through the daemon; a nix.conf change after the daemon
/// started is caught; a user outside nix-users is told to join it.
#[test]
fn daemon_users() {
    if !common::prerequisite(binfmt_ns::missing_for_daemon()) {
        return;
    }
    let x = sh_quote(xtask_bin());
    let (as_user, as_outsider) = (binfmt_ns::AS_NOBODY, binfmt_ns::AS_NOBODY_OUTSIDE_NIX_USERS);
    let script = format!(
        "{as_user} {x} setup-binfmt --check; echo \"member $?\"; \
         sleep 1.1; echo 'max-jobs = 2' >> /etc/nix/nix.conf; \
         echo ==stale; {as_user} {x} setup-binfmt --check; echo \"stale $?\"; \
         echo ==outsider; {as_outsider} {x} setup-binfmt --check; echo \"outsider $?\""
    );
    let out = BinfmtNs::new()
        .register_qemu("POF")
        .nix_conf(NIX_READY)
        .nix_daemon()
        .script(&script);
    let (stdout, stderr) = text(&out);
    let (member, rest) = stdout.split_once("==stale\n").unwrap();
    let (stale, outsider) = rest.split_once("==outsider\n").unwrap();
    assert!(member.contains("member 0"), "{stdout}\n{stderr}");
    assert!(member.contains("builds go through nix-daemon"), "{member}");
    assert!(member.contains("✓ nobody may use nix-daemon"), "{member}");
    let built = built_path(member);
    assert_eq!(std::fs::read(&built).unwrap(), b"hello from aarch64\n");
    assert!(stale.contains("stale 1"), "{stale}");
    assert!(
        stale.contains("✗ nix-daemon (pid ")
            && stale.contains("fix: restart nix-daemon (no systemd here"),
        "{stale}"
    );
    assert!(outsider.contains("outsider 1"), "{outsider}");
    assert!(
        outsider.contains("✗ nobody may not use nix-daemon")
            && outsider.contains("sudo usermod -aG nix-users nobody"),
        "{outsider}"
    );
}

/// Without Nix (every `nix` on PATH hidden by a bind mount in the
/// namespace): --check names where a new enough Nix comes from, and the
/// fix plan with --install-nix installs it: on Debian 12 (nix-bin 2.8, too
/// old for nixpkgs 26.05) the official installer, printed only.
#[test]
fn missing_nix() {
    if !ready() {
        return;
    }
    let x = sh_quote(xtask_bin());
    let script = format!(
        "for n in $(which -a nix); do mount --bind /dev/null \"$n\" || exit 99; done; \
         {x} setup-binfmt --check; echo \"check $?\"; echo ==plan; \
         {x} setup-binfmt --dry-run --install-nix; echo \"plan $?\""
    );
    let out = BinfmtNs::new().register_qemu("POF").script(&script);
    let (stdout, stderr) = text(&out);
    let (check, plan) = stdout.split_once("==plan\n").unwrap();
    assert!(check.contains("check 1"), "{stdout}\n{stderr}");
    assert!(check.contains("✗ Nix is not installed"), "{check}");
    assert!(check.contains("--install-nix"), "{check}");
    assert!(check.contains("https://nixos.org/nix/install"), "{check}");
    assert!(check.contains("✓ an aarch64 program ran"), "{check}");
    assert!(!check.contains("Nix built"), "{check}");
    assert!(plan.contains("plan 0"), "{plan}\n{stderr}");
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if os.contains("ID=debian") && os.contains("VERSION_ID=\"12\"") {
        assert!(
            plan.contains("$ curl -L https://nixos.org/nix/install | sh -s -- --daemon"),
            "{plan}"
        );
        assert!(!plan.contains("nix-bin nix-setup-systemd"), "{plan}");
    }
    assert!(plan.contains("dry run: nothing was changed"), "{plan}");
}

/// Fix mode as a user who has sudo: only the root steps go through sudo,
/// each printed; what is left without systemd is the daemon restart; after
/// it, the check passes with a build through the daemon.
#[test]
fn fix_mode_as_a_user_with_sudo() {
    let missing = binfmt_ns::missing_for_daemon().or_else(|| common::need_program("sudo", "sudo"));
    if !common::prerequisite(missing) {
        return;
    }
    let x = sh_quote(xtask_bin());
    let user = binfmt_ns::AS_NOBODY;
    let script = format!(
        "echo 'nobody ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/nobody; chmod 0440 /etc/sudoers.d/nobody; \
         usermod -aG nix-users nobody; \
         {user} {x} setup-binfmt --yes; echo \"fix $?\"; \
         echo ==restarted; {restart}; \
         {user} {x} setup-binfmt --check; echo \"check $?\"",
        restart = binfmt_ns::RESTART_DAEMON
    );
    let out = BinfmtNs::new()
        .register_qemu("OP")
        .package_rule("OP")
        .nix_conf("sandbox = true\n")
        .nix_daemon()
        .script(&script);
    let (stdout, stderr) = text(&out);
    let (fix, after) = stdout.split_once("==restarted\n").unwrap();
    let plan = fix
        .split("plan:\n")
        .nth(1)
        .unwrap()
        .split("checking again:")
        .next()
        .unwrap();
    for step in [
        "$ echo -1 | sudo tee /proc/sys/fs/binfmt_misc/qemu-aarch64",
        "| sudo tee /proc/sys/fs/binfmt_misc/register",
        "| sudo tee /etc/binfmt.d/qemu-aarch64.conf",
        "$ sudo cp -p /etc/nix/nix.conf /etc/nix/nix.conf.bak-",
        "$ sudo tee /etc/nix/nix.conf",
    ] {
        assert!(plan.contains(step), "no `{step}` in the plan:\n{plan}");
    }
    let commands: Vec<&str> = plan
        .lines()
        .filter(|l| l.trim_start().starts_with("$ "))
        .collect();
    assert!(commands.iter().all(|c| c.contains("sudo ")), "{commands:?}");
    assert!(!plan.contains("usermod"), "{plan}");
    assert!(stderr.contains("$ sudo tee /etc/nix/nix.conf"), "{stderr}");
    // Without systemd, the restart is left to the user, and said so.
    assert!(fix.contains("fix 1"), "{fix}");
    let left: Vec<&str> = fix
        .split("checking again:")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('✗'))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left[0].contains("started before /etc/nix/nix.conf last changed"),
        "{left:?}"
    );
    assert!(
        left[1].contains("nix-daemon still refuses aarch64-linux"),
        "{left:?}"
    );
    assert!(after.contains("check 0"), "{after}\n{stderr}");
    assert!(after.contains("builds go through nix-daemon"), "{after}");
    let built = built_path(after);
    assert_eq!(std::fs::read(&built).unwrap(), b"hello from aarch64\n");
}

/// A `nix-daemon` of another PID namespace (a container's: here a copy of
/// `sleep` named so, under `unshare --pid`) is not this machine's daemon:
/// before the fix it was taken for one that missed a nix.conf change.
#[test]
fn a_containers_nix_daemon_is_not_this_machines() {
    if !ready() || !common::prerequisite(common::need_program("setpriv", "util-linux")) {
        return;
    }
    let x = sh_quote(xtask_bin());
    let script = format!(
        "cp \"$(command -v sleep)\" \"$HOME/nix-daemon\"; \
         unshare --pid --fork --kill-child --mount-proc \"$HOME/nix-daemon\" 60 & \
         n=0; until grep -qs '^Name:.nix-daemon' /proc/[0-9]*/status; do n=$((n+1)); [ $n -lt 500 ] || exit 97; sleep 0.01; done; \
         sleep 0.2; echo 'max-jobs = 2' >> /etc/nix/nix.conf; \
         echo \"daemons: $(grep -ls '^Name:.nix-daemon' /proc/[0-9]*/status | wc -l)\"; \
         {x} setup-binfmt --check --no-nix-probe; echo \"check $?\"; \
         echo ==user; {user} {x} setup-binfmt --check --no-nix-probe; kill $!",
        // Another user may not read a root process's /proc/<pid>/ns/pid.
        user = binfmt_ns::AS_NOBODY_OUTSIDE_NIX_USERS
    );
    let out = BinfmtNs::new()
        .register_qemu("POF")
        .nix_conf(NIX_READY)
        .script(&script);
    let (stdout, stderr) = text(&out);
    let (root, user) = stdout.split_once("==user\n").unwrap();
    assert!(root.contains("daemons: 1"), "{stdout}\n{stderr}");
    assert!(!root.contains("nix-daemon (pid"), "{root}\n{stderr}");
    assert!(root.contains("check 0"), "{root}\n{stderr}");
    assert!(
        user.contains("✓ aarch64-linux") || user.contains("Nix "),
        "{user}\n{stderr}"
    );
    assert!(!user.contains("nix-daemon (pid"), "{user}\n{stderr}");
}

/// Without systemd, the restart that the check's advice ends with ("…, then
/// restart nix-daemon") is a step of the --dry-run plan too, by hand.
#[test]
fn dry_run_plans_the_daemon_restart_without_systemd() {
    if !common::prerequisite(binfmt_ns::missing_for_daemon()) {
        return;
    }
    let x = sh_quote(xtask_bin());
    let script = format!(
        "{x} setup-binfmt --check --no-nix-probe; echo ==plan; {x} setup-binfmt --dry-run; echo \"plan $?\""
    );
    let out = BinfmtNs::new()
        .register_qemu("POF")
        .nix_conf("sandbox = true\n")
        .nix_daemon()
        .script(&script);
    let (stdout, stderr) = text(&out);
    let (check, plan) = stdout.split_once("==plan\n").unwrap();
    assert!(
        check.contains(", then restart nix-daemon (no systemd here"),
        "{check}\n{stderr}"
    );
    assert!(plan.contains("plan 0"), "{plan}\n{stderr}");
    let plan = plan.split("plan:\n").nth(1).unwrap();
    assert!(plan.contains("+ extra-platforms = aarch64-linux"), "{plan}");
    let restart = plan
        .lines()
        .find(|l| l.starts_with("- restart nix-daemon so that it reads nix.conf"))
        .unwrap_or_else(|| panic!("no restart step in the plan:\n{plan}"));
    assert!(restart.contains("no systemd here, so by hand"), "{restart}");
    assert!(restart.contains("stop nix-daemon (pid "), "{restart}");
}
