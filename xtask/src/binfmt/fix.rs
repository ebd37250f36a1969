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
use super::nixconf;
use crate::exec;

/// One change, described for people and as the commands that make it.
#[derive(Debug, PartialEq)]
pub struct Action {
    pub why: String,
    pub steps: Vec<Step>,
}

/// A command, run as root (through sudo when needed), maybe fed `stdin`.
#[derive(Debug, PartialEq)]
pub struct Step {
    pub argv: Vec<String>,
    pub stdin: Option<String>,
}

impl Step {
    fn new(argv: &[&str]) -> Step {
        Step {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin: None,
        }
    }

    /// `tee PATH` with `content` on stdin: writes a file (or a /proc knob).
    fn write(path: &str, content: String) -> Step {
        Step {
            argv: vec!["tee".into(), path.into()],
            stdin: Some(content),
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

/// What fix mode will do, in order. `install_nix`: install the
/// distribution's Nix when it is missing. Package installs come first; the
/// rest is planned again after them (see [`run`]).
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
    if f.nix.is_none() && install_nix {
        packages.extend(["nix-bin", "nix-setup-systemd"]);
    }
    if !packages.is_empty() {
        let mut argv = vec!["apt-get", "install", "-y"];
        argv.extend(&packages);
        actions.push(Action {
            why: format!("install {}", packages.join(", ")),
            steps: vec![Step::new(&["apt-get", "update"]), Step::new(&argv)],
        });
    }
    let dir = facts::BINFMT_DIR;
    if !f.binfmt.mounted {
        actions.push(Action {
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
            why: format!(
                "register it with F at every boot: {} (systemd-binfmt)",
                facts::DROP_IN
            ),
            steps,
        });
    }
    if let Some(n) = &f.nix {
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
    } else if install_nix {
        // nix-setup-systemd's daemon lets in only the nix-users group.
        if let Some(action) = join_nix_users(f, Flavour::Distribution { daemon: true }) {
            actions.push(action);
        }
    }
    actions
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
            let mut cmd = if root {
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
