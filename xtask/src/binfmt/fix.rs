//! Fix mode: from the facts, the plan of changes (each a list of commands),
//! and carrying it out. Root-only commands run through `sudo` when the
//! xtask does not run as root. Nothing here unregisters another format.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use xshell::Shell;

use super::elf::{self, Linkage};
use super::entry;
use super::facts::{self, Facts, Flavour};
use super::install::{self, Source};
use super::nixconf;
use crate::exec;

/// One change, described for people and as the commands that make it.
#[derive(Debug, PartialEq)]
pub struct Action {
    pub why: String,
    pub steps: Vec<Step>,
    /// Installs or removes software (packages, Nix): the rest of the plan
    /// is made again once these have run.
    pub installs: bool,
}

impl Action {
    fn new(why: impl Into<String>, steps: Vec<Step>) -> Action {
        Action {
            why: why.into(),
            steps,
            installs: false,
        }
    }

    fn installing(why: impl Into<String>, steps: Vec<Step>) -> Action {
        Action {
            installs: true,
            ..Action::new(why, steps)
        }
    }
}

/// A command, run as root (through sudo when needed), maybe fed `stdin`;
/// or, `as_user`, a shell command line run as the user (it calls sudo
/// itself where it needs root).
#[derive(Debug, PartialEq)]
pub struct Step {
    pub argv: Vec<String>,
    pub stdin: Option<String>,
    pub as_user: bool,
}

impl Step {
    fn new(argv: &[&str]) -> Step {
        Step {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin: None,
            as_user: false,
        }
    }

    /// `tee PATH` with `content` on stdin: writes a file (or a /proc knob).
    fn write(path: &str, content: String) -> Step {
        Step {
            stdin: Some(content),
            ..Step::new(&["tee", path])
        }
    }

    /// `sh -c LINE` as the user.
    fn user_shell(line: &str) -> Step {
        Step {
            as_user: true,
            ..Step::new(&["sh", "-c", line])
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "- {}", self.why)
    }
}

/// `extra-platforms` values to set: what Nix has now, plus aarch64-linux,
/// plus i686-linux (setting the option replaces Nix's default, which has it).
pub fn wanted_platforms(current: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in ["aarch64-linux", "i686-linux"].iter().chain(current) {
        if !out.iter().any(|o| o == p) {
            out.push(p.to_string());
        }
    }
    out
}

/// What fix mode will do, in order. `install_nix`: install a Nix that can
/// evaluate nixpkgs 26.05 when it is missing or too old (see
/// [`install_nix_actions`]). Installs come first; the rest is planned
/// again after them.
pub fn plan(f: &Facts, install_nix: bool) -> Vec<Action> {
    let mut actions = Vec::new();
    if f.arch != "x86_64" || f.nixos {
        return actions;
    }
    let packaged = Path::new(facts::PACKAGED_INTERPRETER);
    let packaged_ok = elf::linkage(packaged).is_ok_and(|l| l == Linkage::Static);
    let registration_ok = registration_ok(f);
    let mut packages = Vec::new();
    if !packaged_ok && (!registration_ok || !static_interpreter(f)) {
        packages.push("qemu-user-static");
    }
    let nix_actions = if install_nix {
        install_nix_actions(f, &mut packages)
    } else {
        Vec::new()
    };
    // A Nix about to be replaced gets its settings once the new one is in.
    let replacing = packages.contains(&"nix-bin") || !nix_actions.is_empty();
    if !packages.is_empty() {
        let mut argv = vec!["apt-get", "install", "-y"];
        argv.extend(&packages);
        actions.push(Action::installing(
            format!("install {}", packages.join(", ")),
            vec![Step::new(&["apt-get", "update"]), Step::new(&argv)],
        ));
    }
    actions.extend(nix_actions);
    let dir = facts::BINFMT_DIR;
    if !f.binfmt.mounted {
        actions.push(Action {
            installs: false,
            why: format!("mount binfmt_misc at {dir}"),
            steps: vec![Step::new(&[
                "mount",
                "-t",
                "binfmt_misc",
                "binfmt_misc",
                dir,
            ])],
        });
    } else if !f.binfmt.enabled {
        actions.push(Action {
            installs: false,
            why: "enable binfmt_misc".into(),
            steps: vec![Step::write(&format!("{dir}/status"), "1".into())],
        });
    }
    // The interpreter to register: the packaged one, else another static one.
    let interpreter = if packaged_ok || packages.contains(&"qemu-user-static") {
        facts::PACKAGED_INTERPRETER.to_string()
    } else {
        match &f.interpreter {
            Some((p, Linkage::Static)) => p.to_string_lossy().into_owned(),
            _ => facts::PACKAGED_INTERPRETER.to_string(),
        }
    };
    let line = entry::register_line(&interpreter);
    if !registration_ok {
        let mut steps = Vec::new();
        if f.binfmt.aarch64.iter().any(|e| e.name == entry::NAME) {
            // Replace our own entry; other names are left alone (the newest
            // registration is the one the kernel tries first).
            steps.push(Step::write(&format!("{dir}/{}", entry::NAME), "-1".into()));
        }
        steps.push(Step::write(&format!("{dir}/register"), line.clone()));
        actions.push(Action {
            installs: false,
            why: format!("register {} now with flag F: {interpreter}", entry::NAME),
            steps,
        });
    }
    let drop_in_current = std::fs::read_to_string(facts::DROP_IN).ok();
    let boot_ok =
        matches!(&f.boot_rule, Some((_, e)) if e.has_flag('F') && static_file(&e.interpreter));
    if !boot_ok && drop_in_current.as_deref() != Some(&format!("{line}\n")) {
        let mut steps = Vec::new();
        if !Path::new("/etc/binfmt.d").is_dir() {
            steps.push(Step::new(&["mkdir", "-p", "/etc/binfmt.d"]));
        }
        steps.push(Step::write(facts::DROP_IN, format!("{line}\n")));
        actions.push(Action {
            installs: false,
            why: format!(
                "register it with F at every boot: {} (systemd-binfmt)",
                facts::DROP_IN
            ),
            steps,
        });
    }
    if let Some(n) = f.nix.as_ref().filter(|_| !replacing) {
        let mut wrote_conf = false;
        if let Ok(config) = &n.config {
            let old = std::fs::read_to_string(&n.edit_file).unwrap_or_default();
            let mut new = old.clone();
            let platforms = nixconf::words(config, "extra-platforms");
            if !platforms.contains(&"aarch64-linux") {
                let wanted = wanted_platforms(&platforms);
                let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
                new = nixconf::add_values(&new, &["extra-platforms"], &wanted);
            }
            let features = nixconf::words(config, "experimental-features");
            if !n.nix_command || !features.contains(&"flakes") {
                new = nixconf::add_values(
                    &new,
                    &["extra-experimental-features", "experimental-features"],
                    &["nix-command", "flakes"],
                );
            }
            if n.allowed == Err(facts::Denied::NotListed) {
                new = nixconf::add_values(&new, &["extra-allowed-users"], &[&f.user.name]);
            }
            if new != old {
                wrote_conf = true;
                actions.push(conf_action(&n.edit_file, &old, new));
            }
        }
        if let Some(action) = join_nix_users(f, n.flavour) {
            actions.push(action);
        }
        let stale = n.daemon.as_ref().is_some_and(|d| {
            n.conf_changed
                .is_some_and(|c| c > d.started + std::time::Duration::from_secs(1))
        });
        if (wrote_conf || stale) && (n.flavour.has_daemon() || n.daemon.is_some()) {
            actions.push(if f.systemd {
                restart_action()
            } else {
                restart_by_hand(n.daemon.as_ref().map(|d| d.pid))
            });
        }
    } else if install_nix && matches!(f.nix_source, Some(Source::Distribution { .. })) {
        // nix-setup-systemd's daemon lets in only the nix-users group.
        if let Some(action) = join_nix_users(f, Flavour::Distribution { daemon: true }) {
            actions.push(action);
        }
    }
    actions
}

/// With `--install-nix`, when Nix is missing or too old: the distribution's
/// packages (added to `packages`) where their version is new enough, else
/// the official multi-user installer, after removing the distribution's
/// old Nix. A too old Nix installed another way gets no action: the
/// checklist says how to upgrade it.
fn install_nix_actions(f: &Facts, packages: &mut Vec<&'static str>) -> Vec<Action> {
    let Some(source) = &f.nix_source else {
        return Vec::new();
    };
    let flavour = f.nix.as_ref().map(|n| n.flavour);
    let packaged = matches!(flavour, None | Some(Flavour::Distribution { .. }));
    match source {
        Source::Distribution { .. } if packaged => {
            packages.extend(install::PACKAGES);
            Vec::new()
        }
        Source::Official { why } if packaged => {
            if !exec::have("curl") {
                packages.push(install::INSTALLER_NEEDS[0]);
            }
            if !exec::have("xz") {
                packages.push(install::INSTALLER_NEEDS[1]);
            }
            let mut actions = Vec::new();
            let build_users = facts::group_members("nixbld");
            // Also what a removed nix-bin left behind: its build users, /nix.
            if f.nix.is_some() || facts::group_exists("nixbld") || Path::new("/nix").exists() {
                actions.push(remove_distribution_nix(f.nix.as_ref(), &build_users));
            }
            actions.push(Action::installing(
                format!(
                    "install Nix with the official multi-user installer ({why}); it runs as you, asks for sudo itself and adds Nix to PATH for new shells"
                ),
                vec![Step::user_shell(install::OFFICIAL_INSTALLER)],
            ));
            actions
        }
        _ => Vec::new(),
    }
}

/// Removes the distribution's Nix (`n`, when still installed) so that the
/// official installer can run: its packages, its build users and group
/// (the installer makes its own, group ID 30000, and gives up when a
/// `nixbld` group or user with another ID exists), and moves /nix aside
/// (the installer would adopt an existing /nix, old store and database
/// included).
fn remove_distribution_nix(n: Option<&facts::NixFacts>, build_users: &[String]) -> Action {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut argv = vec!["apt-get", "remove", "-y"];
    argv.extend(install::PACKAGES);
    let mut steps = Vec::new();
    if n.is_some() {
        steps.push(Step::new(&argv));
    }
    let mut users: Vec<&String> = build_users.iter().collect();
    users.sort_by_key(|u| (u.len(), *u));
    users.dedup();
    for u in users {
        steps.push(Step::new(&["userdel", u]));
    }
    if !build_users.is_empty() || facts::group_exists("nixbld") {
        steps.push(Step::new(&["groupdel", "nixbld"]));
    }
    let aside = format!("/nix.old-{stamp}");
    if Path::new("/nix").exists() {
        steps.push(Step::new(&["mv", "/nix", &aside]));
    }
    let what = match n.map(|n| &n.gate) {
        Some(Err(crate::nix::version::Unusable::TooOld(found))) => {
            format!("remove the distribution's {found}: its packages, its")
        }
        Some(_) => "remove the distribution's Nix: its packages, its".to_string(),
        None => "remove what an earlier Nix left:".to_string(),
    };
    Action::installing(
        format!(
            "{what} build users and group nixbld (the official installer makes its own and stops when they exist with other IDs), and move /nix aside to {aside} (delete it once the new Nix works)"
        ),
        steps,
    )
}

/// With the distribution's daemon, the person behind the command must be
/// in the `nix-users` group to use it.
fn join_nix_users(f: &Facts, flavour: Flavour) -> Option<Action> {
    if flavour != (Flavour::Distribution { daemon: true }) {
        return None;
    }
    let user = invoking_user(f)?;
    if facts::group_members("nix-users").contains(&user) {
        return None;
    }
    Some(Action {
        installs: false,
        why: format!(
            "let {user} use nix-daemon: add to group nix-users (takes effect at the next login)"
        ),
        steps: vec![Step::new(&["usermod", "-aG", "nix-users", &user])],
    })
}

/// The person behind the command: the user, or who called sudo.
fn invoking_user(f: &Facts) -> Option<String> {
    if !f.user.root {
        return Some(f.user.name.clone());
    }
    std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty() && u != "root")
}

fn restart_action() -> Action {
    Action {
        installs: false,
        why: "restart nix-daemon so that it reads nix.conf".into(),
        steps: vec![Step::new(&["systemctl", "restart", "nix-daemon"])],
    }
}

/// Without systemd the xtask does not know what supervises nix-daemon (a
/// container's entrypoint, runit, a shell): the restart is a step of the
/// plan that the user carries out, said as such.
fn restart_by_hand(pid: Option<u32>) -> Action {
    let which = pid.map_or(String::new(), |p| format!(" (pid {p})"));
    Action {
        installs: false,
        why: format!(
            "restart nix-daemon so that it reads nix.conf; no systemd here, so by hand once the steps above ran: stop nix-daemon{which}, then start `nix-daemon --daemon` again as root (or restart what supervises it)"
        ),
        steps: Vec::new(),
    }
}

fn conf_action(path: &Path, old: &str, new: String) -> Action {
    let p = path.to_string_lossy();
    let added: Vec<String> = new
        .lines()
        .filter(|l| !old.lines().any(|o| o == *l))
        .map(|l| format!("    + {l}"))
        .collect();
    let mut steps = Vec::new();
    if path.exists() {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        steps.push(Step::new(&["cp", "-p", &p, &format!("{p}.bak-{stamp}")]));
    } else if let Some(dir) = path.parent().filter(|d| !d.is_dir()) {
        steps.push(Step::new(&["mkdir", "-p", &dir.to_string_lossy()]));
    }
    steps.push(Step::write(&p, new));
    Action {
        installs: false,
        why: format!(
            "update {p} (a backup is kept next to it):\n{}",
            added.join("\n")
        ),
        steps,
    }
}

fn static_file(p: &str) -> bool {
    elf::linkage(Path::new(p)).is_ok_and(|l| l == Linkage::Static)
}

fn static_interpreter(f: &Facts) -> bool {
    matches!(&f.interpreter, Some((_, Linkage::Static)))
}

/// Whether the current aarch64 registration is good for sandboxed builds:
/// enabled, right rule, a static interpreter, and flag F (or the
/// interpreter in the sandbox paths).
fn registration_ok(f: &Facts) -> bool {
    let Some(e) = f.binfmt.aarch64.first() else {
        return false;
    };
    let interpreter_ok =
        static_file(&e.interpreter) || (e.has_flag('F') && !Path::new(&e.interpreter).exists());
    f.binfmt.mounted
        && f.binfmt.enabled
        && e.enabled
        && super::rule_right(e)
        && interpreter_ok
        && (e.has_flag('F') || super::in_sandbox_paths(f, e))
}

/// Carries out `actions`: each command echoed, through sudo when not root.
pub fn apply(sh: &Shell, root: bool, actions: &[Action]) -> Result<()> {
    for a in actions {
        eprintln!("{a}");
        for s in &a.steps {
            let mut cmd = if root || s.as_user {
                sh.cmd(&s.argv[0]).args(&s.argv[1..])
            } else {
                sh.cmd("sudo").args(&s.argv)
            };
            if let Some(input) = &s.stdin {
                cmd = cmd.stdin(input).ignore_stdout();
            }
            exec::run(cmd)?;
        }
    }
    Ok(())
}

/// How a step is shown in the plan.
pub fn shown(step: &Step, root: bool) -> String {
    let quote = |a: &String| {
        if a.is_empty()
            || a.contains(|c: char| !(c.is_ascii_alphanumeric() || "-_./=:@+,".contains(c)))
        {
            format!("'{}'", a.replace('\'', r"'\''"))
        } else {
            a.clone()
        }
    };
    if step.as_user {
        // `sh -c LINE`: the line as the user would type it.
        return step.argv.last().cloned().unwrap_or_default();
    }
    let argv: Vec<String> = step.argv.iter().map(quote).collect();
    let sudo = if root { "" } else { "sudo " };
    match &step.stdin {
        Some(input) if !input.contains('\n') || input.trim_end().lines().count() == 1 => {
            format!(
                "echo {} | {sudo}{}",
                quote(&input.trim_end().to_string()),
                argv.join(" ")
            )
        }
        Some(_) => format!("{sudo}{}  (the new content on stdin)", argv.join(" ")),
        None => format!("{sudo}{}", argv.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binfmt::tests::{debian_12_nix, good};
    use crate::nix::version::Version;

    fn shown_steps(a: &Action) -> Vec<String> {
        a.steps.iter().map(|s| shown(s, true)).collect()
    }

    #[test]
    fn debian_12_nix_is_replaced_by_the_official_installer() {
        let f = debian_12_nix();
        let mut packages = Vec::new();
        let actions = install_nix_actions(&f, &mut packages);
        assert_eq!(actions.len(), 2, "{actions:#?}");
        assert!(actions.iter().all(|a| a.installs));
        assert!(
            actions[0]
                .why
                .starts_with("remove the distribution's Nix 2.8.0: its packages, its build users and group nixbld"),
            "{}",
            actions[0].why
        );
        assert_eq!(
            shown_steps(&actions[0])[0],
            "apt-get remove -y nix-bin nix-setup-systemd"
        );
        assert!(actions[1].why.starts_with("install Nix with the official multi-user installer (Debian GNU/Linux 12 (bookworm)'s nix-bin is 2.8.0"));
        // Printed as typed, never through sudo: the installer asks for sudo itself.
        assert_eq!(
            shown_steps(&actions[1]),
            ["curl -L https://nixos.org/nix/install | sh -s -- --daemon"]
        );
        assert_eq!(
            shown(&actions[1].steps[0], false),
            install::OFFICIAL_INSTALLER
        );
        assert!(!packages.contains(&"nix-bin"));
        // The whole plan: the old Nix's nix.conf is left alone, it is going away.
        let plan = plan(&f, true);
        assert!(
            plan.iter().all(|a| !a.why.starts_with("update ")),
            "{plan:#?}"
        );
        assert!(
            plan.iter()
                .any(|a| a.why.starts_with("install Nix with the official"))
        );
        // Without --install-nix: nothing about Nix.
        assert!(plan_without_nix(&f));
    }

    fn plan_without_nix(f: &Facts) -> bool {
        plan(f, false)
            .iter()
            .all(|a| !a.why.contains("Nix with") && !a.why.contains("nix-bin"))
    }

    #[test]
    fn the_build_users_go_before_their_group() {
        let n = debian_12_nix().nix.unwrap();
        let users: Vec<String> = ["nixbld10", "nixbld2", "nixbld1"]
            .map(String::from)
            .to_vec();
        let steps = shown_steps(&remove_distribution_nix(Some(&n), &users));
        assert_eq!(
            steps[..5],
            [
                "apt-get remove -y nix-bin nix-setup-systemd",
                "userdel nixbld1",
                "userdel nixbld2",
                "userdel nixbld10",
                "groupdel nixbld",
            ]
        );
    }

    #[test]
    fn what_a_removed_nix_bin_left_goes_too() {
        // `apt-get remove nix-bin nix-setup-systemd` keeps the build users.
        let a = remove_distribution_nix(None, &["nixbld1".to_string()]);
        assert!(
            a.why
                .starts_with("remove what an earlier Nix left: build users and group nixbld"),
            "{}",
            a.why
        );
        let steps = shown_steps(&a);
        assert_eq!(steps[..2], ["userdel nixbld1", "groupdel nixbld"]);
        assert!(!steps.iter().any(|s| s.starts_with("apt-get")), "{steps:?}");
    }

    #[test]
    fn a_new_enough_distribution_package_is_installed_or_upgraded() {
        let mut f = debian_12_nix();
        f.nix_source = Some(Source::Distribution {
            version: Version::new(2, 26, 3),
        });
        let mut packages = Vec::new();
        assert!(install_nix_actions(&f, &mut packages).is_empty());
        assert_eq!(packages, install::PACKAGES);
        let plan = plan(&f, true);
        assert!(
            plan[0].why.contains("nix-bin, nix-setup-systemd"),
            "{plan:#?}"
        );
        assert!(plan[0].installs);
        f.nix = None;
        let mut packages = Vec::new();
        assert!(install_nix_actions(&f, &mut packages).is_empty());
        assert_eq!(packages, install::PACKAGES);
    }

    #[test]
    fn nothing_to_install_when_nix_is_new_enough_or_not_packaged() {
        let f = good();
        let mut packages = Vec::new();
        assert!(install_nix_actions(&f, &mut packages).is_empty());
        assert!(packages.is_empty());
        // An old Nix of the official installer upgrades itself (the checklist says how).
        let mut f = debian_12_nix();
        f.nix.as_mut().unwrap().flavour = Flavour::Official { multi_user: true };
        assert!(install_nix_actions(&f, &mut packages).is_empty());
        assert!(packages.is_empty());
    }

    #[test]
    fn platforms_keep_i686_and_others() {
        assert_eq!(
            wanted_platforms(&["i686-linux", "x86_64-v3-linux"]),
            ["aarch64-linux", "i686-linux", "x86_64-v3-linux"]
        );
        assert_eq!(wanted_platforms(&[]), ["aarch64-linux", "i686-linux"]);
    }

    #[test]
    fn shows_steps_as_shell() {
        let s = Step::write("/proc/sys/fs/binfmt_misc/qemu-aarch64", "-1".into());
        assert_eq!(
            shown(&s, false),
            "echo -1 | sudo tee /proc/sys/fs/binfmt_misc/qemu-aarch64"
        );
        let line = entry::register_line("/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        let s = Step::write("/proc/sys/fs/binfmt_misc/register", line.clone());
        assert_eq!(
            shown(&s, true),
            format!("echo '{line}' | tee /proc/sys/fs/binfmt_misc/register")
        );
        let s = Step::new(&["nix-build", "--option", "builders", ""]);
        assert_eq!(shown(&s, true), "nix-build --option builders ''");
    }
}
