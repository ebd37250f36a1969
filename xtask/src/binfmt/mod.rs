//! Can this workstation build aarch64-linux with Nix? The checks behind
//! `cargo xtask setup-binfmt --check`, and [`ensure_ready`] for commands
//! that need aarch64 builds (`cargo xtask sd`).

pub mod elf;
pub mod entry;
pub mod facts;
pub mod fix;
pub mod install;
pub mod nixconf;
pub mod probe;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use xshell::Shell;

use facts::{Denied, Facts, Flavour, NixFacts};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    Ok,
    /// Works now, but worth fixing.
    Warn,
    Fail,
}

/// One line of the checklist.
#[derive(Debug)]
pub struct Check {
    pub status: Status,
    pub text: String,
    /// What to run or change, when not Ok.
    pub fix: Option<String>,
    /// The Nix version check, which commands also make on their own
    /// (`nix::version::require`).
    pub version_gate: bool,
}

impl Check {
    fn ok(text: impl Into<String>) -> Check {
        Check {
            status: Status::Ok,
            text: text.into(),
            fix: None,
            version_gate: false,
        }
    }

    fn warn(text: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            status: Status::Warn,
            text: text.into(),
            fix: Some(fix.into()),
            version_gate: false,
        }
    }

    fn fail(text: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            status: Status::Fail,
            text: text.into(),
            fix: Some(fix.into()),
            version_gate: false,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.status {
            Status::Ok => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
        };
        write!(f, "{mark} {}", self.text)?;
        if let Some(fix) = &self.fix {
            for (i, line) in fix.lines().enumerate() {
                let head = if i == 0 { "fix:" } else { "    " };
                write!(f, "\n    {head} {line}")?;
            }
        }
        Ok(())
    }
}

/// Whether every check passed (warnings allowed).
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// Runs every check and returns Ok when aarch64 builds will work; else an
/// error listing each failed check with its fix. `nix_probe`: also build a
/// one-off aarch64-linux derivation (about a second; without it the checks
/// take well under a second).
#[allow(dead_code)] // the preflight of `cargo xtask sd`
pub fn ensure_ready(nix_probe: bool) -> Result<()> {
    let sh = Shell::new()?;
    let facts = facts::gather(&sh, nix_probe);
    let mut checks = evaluate(&facts);
    // The caller refuses a too old Nix itself, in the same words.
    checks.retain(|c| !c.version_gate);
    ready(&checks)
}

/// Ok when no check failed, else the error [`ensure_ready`] returns.
pub fn ready(checks: &[Check]) -> Result<()> {
    if passed(checks) {
        return Ok(());
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| format!("  {}", c.to_string().replace('\n', "\n  ")))
        .collect();
    bail!(
        "this machine cannot build aarch64-linux yet:\n{}\nrun `cargo xtask setup-binfmt` to fix all of these (`--check` shows every check)",
        failed.join("\n")
    )
}

fn sudo(facts: &Facts) -> &'static str {
    if facts.user.root { "" } else { "sudo " }
}

/// Judges the facts: the checklist, in order.
pub fn evaluate(f: &Facts) -> Vec<Check> {
    let mut checks = Vec::new();
    // 1. OS and CPU
    if f.arch == "aarch64" {
        checks.push(Check::ok(
            "aarch64 host: builds for the Pis are native, nothing to emulate",
        ));
        return checks;
    }
    if f.nixos {
        let registered = f.binfmt.aarch64.iter().any(|e| e.enabled);
        let text = "NixOS: emulation is configured with `boot.binfmt.emulatedSystems`, not by this command";
        checks.push(if registered {
            Check::ok(format!("{text} (aarch64 is registered)"))
        } else {
            Check::fail(
                text,
                "add `boot.binfmt.emulatedSystems = [ \"aarch64-linux\" ];` to your NixOS configuration and run `nixos-rebuild switch`",
            )
        });
        return checks;
    }
    if f.arch != "x86_64" {
        checks.push(Check::fail(
            format!("{} CPU: only x86_64 workstations are supported", f.arch),
            "build on an x86_64 or aarch64 Linux machine",
        ));
        return checks;
    }
    checks.push(Check::ok(format!("x86_64 Linux: {}", f.os_name)));
    let su = sudo(f);
    let apt = |pkgs: &str| format!("{su}apt-get install {pkgs}");
    let register = entry::register_line(facts::PACKAGED_INTERPRETER);
    let reregister = |name: &str| {
        format!(
            "echo -1 | {su}tee {dir}/{name}\necho '{register}' | {su}tee {dir}/register",
            dir = facts::BINFMT_DIR
        )
    };

    // 2. A static qemu-aarch64
    use elf::Linkage;
    match &f.interpreter {
        None => checks.push(Check::fail(
            "no qemu for aarch64 is installed",
            apt("qemu-user-static"),
        )),
        Some((p, Linkage::Static)) => checks.push(Check::ok(format!(
            "static qemu-aarch64: {}{}",
            p.display(),
            shown_target(p)
        ))),
        Some((p, Linkage::Dynamic(loader))) => checks.push(Check::fail(
            format!(
                "{} is dynamically linked (it needs {loader}, which the Nix build sandbox does not have): the `qemu-user-binfmt` trap",
                p.display()
            ),
            format!(
                "{}\nthen register the static one: {}",
                apt("qemu-user-static"),
                reregister(entry::NAME).replace('\n', "; ")
            ),
        )),
        Some((p, Linkage::NotElf)) => checks.push(Check::fail(
            format!("{} is not an ELF program", p.display()),
            apt("qemu-user-static"),
        )),
    }

    // 3. binfmt_misc and the registration
    let sandbox = nix_config(f).map(|c| c.get("sandbox").map(String::as_str) != Some("false"));
    if !f.binfmt.mounted {
        checks.push(Check::fail(
            format!("binfmt_misc is not mounted at {}", facts::BINFMT_DIR),
            format!("{su}mount -t binfmt_misc binfmt_misc {}", facts::BINFMT_DIR),
        ));
    } else if !f.binfmt.enabled {
        checks.push(Check::fail(
            "binfmt_misc is disabled",
            format!("echo 1 | {su}tee {}/status", facts::BINFMT_DIR),
        ));
    } else {
        checks.push(Check::ok(format!(
            "binfmt_misc mounted at {}",
            facts::BINFMT_DIR
        )));
    }
    match f.binfmt.aarch64.first() {
        None if f.binfmt.mounted => checks.push(Check::fail(
            "qemu-aarch64 is not registered: no binfmt_misc entry runs aarch64 programs",
            format!("echo '{register}' | {su}tee {}/register", facts::BINFMT_DIR),
        )),
        None => {}
        Some(e) => {
            let head = format!(
                "{} registered: {} (flags {:?})",
                e.name, e.interpreter, e.flags
            );
            if !e.enabled {
                checks.push(Check::fail(
                    format!("{head} but disabled"),
                    format!("echo 1 | {su}tee {}/{}", facts::BINFMT_DIR, e.name),
                ));
            } else if !rule_right(e) {
                checks.push(Check::fail(
                    format!("{head} with a wrong magic or mask"),
                    reregister(&e.name),
                ));
            } else if !Path::new(&e.interpreter).exists() && !e.has_flag('F') {
                checks.push(Check::fail(
                    format!("{head} but {} does not exist", e.interpreter),
                    format!("{}\n{}", apt("qemu-user-static"), reregister(&e.name)),
                ));
            } else {
                checks.push(Check::ok(head));
            }
            let in_sandbox_paths = in_sandbox_paths(f, e);
            if e.has_flag('F') {
                checks.push(Check::ok(
                    "flag F: the kernel opens the interpreter at registration, so it works inside the Nix build sandbox",
                ));
            } else if in_sandbox_paths {
                checks.push(Check::ok(
                    "no flag F, but the interpreter is in Nix's extra-sandbox-paths",
                ));
            } else if sandbox == Some(false) {
                checks.push(Check::warn(
                    "no flag F: works only while the Nix sandbox is off (sandbox = false)",
                    reregister(&e.name),
                ));
            } else {
                checks.push(Check::fail(
                    format!(
                        "no flag F and {} is not in extra-sandbox-paths: sandboxed builds fail with \"No such file or directory\"",
                        e.interpreter
                    ),
                    reregister(&e.name),
                ));
            }
        }
    }
    match &f.boot_rule {
        Some((file, e)) if e.has_flag('F') => checks.push(Check::ok(format!(
            "registered with F at boot by {}",
            file.display()
        ))),
        other => {
            let why = match other {
                Some((file, _)) => format!("{} registers it at boot without F", file.display()),
                None => "nothing registers qemu-aarch64 at boot".to_string(),
            };
            checks.push(Check::warn(
                why,
                format!("echo '{register}' | {su}tee {}", facts::DROP_IN),
            ));
        }
    }

    // 4. and 5. Nix
    match &f.nix {
        None => checks.push(Check::fail(
            "Nix is not installed",
            format!(
                "{}\n(see documentation/getting nix ready.md)",
                install::missing_fix(f, &apt)
            ),
        )),
        Some(n) => nix_checks(f, n, &mut checks),
    }

    // 6. Proof
    match &f.elf_probe {
        Ok(()) => checks.push(Check::ok(format!(
            "an aarch64 program ran and printed {:?}",
            String::from_utf8_lossy(probe::MESSAGE).trim()
        ))),
        Err(why) => checks.push(Check::fail(
            format!("the aarch64 probe program did not run: {why}"),
            "fix the binfmt_misc checks above",
        )),
    }
    if let (Some(result), Some(n)) = (&f.nix_probe, &f.nix) {
        let sandbox = match sandbox {
            Some(true) => "in the sandbox",
            Some(false) => "without sandbox (sandbox = false)",
            None => "",
        };
        checks.push(match result {
            Ok(path) => Check::ok(format!(
                "Nix built an aarch64-linux derivation {sandbox}: {path}"
            )),
            Err(stderr) => {
                let (why, fix) = diagnose(stderr, f, n);
                Check::fail(
                    format!(
                        "Nix could not build an aarch64-linux derivation {sandbox}: {why}\n    nix said: {}",
                        nix_message(stderr)
                    ),
                    fix,
                )
            }
        });
    }
    checks
}

/// Whether an entry claims aarch64 executables and PIEs, and not x86_64.
pub(crate) fn rule_right(e: &entry::Entry) -> bool {
    let mut pie = probe::elf();
    pie[16] = 3; // ET_DYN
    let mut x86 = probe::elf();
    x86[18] = 0x3e; // EM_X86_64
    e.matches(&probe::elf()) && e.matches(&pie) && !e.matches(&x86)
}

/// Whether Nix's sandbox paths hold the entry's interpreter and, when it
/// is a link, the file it points to.
pub(crate) fn in_sandbox_paths(f: &Facts, e: &entry::Entry) -> bool {
    nix_config(f).is_some_and(|c| {
        let paths = nixconf::words(c, "sandbox-paths");
        let real = std::fs::canonicalize(&e.interpreter).unwrap_or_default();
        nixconf::sandbox_covers(&paths, &e.interpreter)
            && nixconf::sandbox_covers(&paths, &real.to_string_lossy())
    })
}

fn nix_config(f: &Facts) -> Option<&std::collections::BTreeMap<String, String>> {
    f.nix.as_ref().and_then(|n| n.config.as_ref().ok())
}

/// ` → /real/path` when `p` is a symlink.
fn shown_target(p: &Path) -> String {
    match std::fs::canonicalize(p) {
        Ok(real) if real != p => format!(" → {}", real.display()),
        _ => String::new(),
    }
}

fn restart(f: &Facts) -> String {
    if f.systemd {
        format!("{}systemctl restart nix-daemon", sudo(f))
    } else {
        "restart nix-daemon (no systemd here: stop it, then start `nix-daemon --daemon` again as root)"
            .into()
    }
}

fn nix_checks(f: &Facts, n: &NixFacts, checks: &mut Vec<Check>) {
    let version = n
        .version
        .map(|(a, b)| format!("{a}.{b}"))
        .unwrap_or_else(|| n.version_text.clone());
    let route = if f.user.root {
        "root uses the store directly"
    } else if n.uses_daemon {
        "builds go through nix-daemon"
    } else {
        "builds use the store directly"
    };
    checks.push(Check::ok(format!(
        "Nix {version} ({}; {route})",
        n.flavour.describe()
    )));
    if let Err(e) = &n.gate {
        checks.push(Check {
            version_gate: true,
            ..Check::fail(e.reason(), install::replace_fix(f, n))
        });
    }
    let restart_note = if n.flavour.has_daemon() {
        format!(", then {}", restart(f))
    } else {
        String::new()
    };
    let edit = n.edit_file.display();
    let config = match &n.config {
        Ok(c) => c,
        Err(e) => {
            checks.push(Check::fail(
                format!("cannot read Nix's configuration: {e}"),
                format!("fix {edit} so that `nix show-config` works"),
            ));
            return;
        }
    };
    let features = nixconf::words(config, "experimental-features");
    let missing: Vec<&str> = ["nix-command", "flakes"]
        .into_iter()
        .filter(|x| !features.contains(x) || (*x == "nix-command" && !n.nix_command))
        .collect();
    if missing.is_empty() {
        checks.push(Check::ok("nix-command and flakes enabled"));
    } else {
        checks.push(Check::warn(
            format!(
                "{} not enabled (cargo xtask turns them on per call; plain `nix build .#…` needs them)",
                missing.join(" and ")
            ),
            format!("add `extra-experimental-features = nix-command flakes` to {edit}"),
        ));
    }
    let platforms = nixconf::words(config, "extra-platforms");
    if platforms.contains(&"aarch64-linux")
        || config.get("system").map(String::as_str) == Some("aarch64-linux")
    {
        checks.push(Check::ok(format!(
            "Nix accepts aarch64-linux builds (extra-platforms = {})",
            platforms.join(" ")
        )));
    } else {
        checks.push(Check::fail(
            format!(
                "Nix does not accept aarch64-linux builds (extra-platforms = {})",
                platforms.join(" ")
            ),
            format!(
                "add `extra-platforms = {}` to {edit}{restart_note}",
                fix::wanted_platforms(&platforms).join(" ")
            ),
        ));
    }
    if f.user.root || !n.uses_daemon {
        checks.push(Check::ok(format!("{} may build: {route}", f.user.name)));
    } else {
        match &n.allowed {
            Ok(()) => checks.push(Check::ok(format!("{} may use nix-daemon", f.user.name))),
            Err(Denied::NotRunning(why)) => checks.push(Check::fail(
                format!("nix-daemon is not running: {why}"),
                format!("{}systemctl start nix-daemon", sudo(f)),
            )),
            Err(Denied::NoAccess(why)) => {
                let fix = match n.flavour {
                    Flavour::Distribution { .. } => format!(
                        "sudo usermod -aG nix-users {}\nthen log out and in again (or run `newgrp nix-users`)",
                        f.user.name
                    ),
                    _ => format!(
                        "make {} reachable for {}",
                        facts::DAEMON_SOCKET,
                        f.user.name
                    ),
                };
                checks.push(Check::fail(
                    format!("{} may not use nix-daemon: {why}", f.user.name),
                    fix,
                ));
            }
            Err(Denied::NotListed) => checks.push(Check::fail(
                format!(
                    "{} may not use nix-daemon: not in allowed-users or trusted-users",
                    f.user.name
                ),
                format!(
                    "add `extra-allowed-users = {}` to {edit}{restart_note}",
                    f.user.name
                ),
            )),
        }
    }
    if let Some(d) = &n.daemon {
        let stale = n
            .conf_changed
            .is_some_and(|c| c > d.started + Duration::from_millis(50));
        if stale {
            checks.push(Check::fail(
                format!(
                    "nix-daemon (pid {}) started before {} last changed: it still runs with the old settings",
                    d.pid,
                    n.conf_file.display()
                ),
                restart(f),
            ));
        } else {
            checks.push(Check::ok(format!(
                "nix-daemon (pid {}) started after nix.conf last changed",
                d.pid
            )));
        }
    }
}

/// The line of a failed build's output that says what went wrong.
fn nix_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    lines
        .iter()
        .find(|l| l.contains("executing '") || l.contains("Exec format error"))
        .or_else(|| lines.iter().find(|l| l.starts_with("error:")))
        .or(lines.last())
        .map(|l| match l.find("executing '") {
            // Nix 2.8 frames the builder's message in a box.
            Some(i) => l[i..].trim().to_string(),
            None => l.trim_start_matches("error:").trim().to_string(),
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "nothing".into())
}

/// What a failed Nix probe build means, and its fix.
fn diagnose(stderr: &str, f: &Facts, n: &NixFacts) -> (String, String) {
    let su = sudo(f);
    let register = entry::register_line(facts::PACKAGED_INTERPRETER);
    let dir = facts::BINFMT_DIR;
    if stderr.contains("is required to build") {
        let configured = nix_config(f)
            .is_some_and(|c| nixconf::words(c, "extra-platforms").contains(&"aarch64-linux"));
        if configured && n.uses_daemon {
            (
                "nix-daemon still refuses aarch64-linux: it has not read the new extra-platforms"
                    .into(),
                restart(f),
            )
        } else {
            (
                "Nix refuses aarch64-linux (\"a 'aarch64-linux' … is required\"): extra-platforms lacks it".into(),
                format!(
                    "add `extra-platforms = {}` to {}",
                    fix::wanted_platforms(&nix_config(f).map(|c| nixconf::words(c, "extra-platforms")).unwrap_or_default()).join(" "),
                    n.edit_file.display()
                ),
            )
        }
    } else if stderr.contains("No such file or directory") && stderr.contains("executing") {
        (
            "the build sandbox cannot see the QEMU interpreter (\"No such file or directory\"): qemu-aarch64 is registered without flag F".into(),
            format!("echo -1 | {su}tee {dir}/{name}\necho '{register}' | {su}tee {dir}/register", name = entry::NAME),
        )
    } else if stderr.contains("Exec format error") {
        (
            "the kernel cannot run aarch64 programs (\"Exec format error\"): qemu-aarch64 is not registered".into(),
            format!("echo '{register}' | {su}tee {dir}/register"),
        )
    } else if stderr.contains("daemon-socket") && stderr.contains("ermission denied") {
        (
            format!("{} may not use nix-daemon", f.user.name),
            format!(
                "sudo usermod -aG nix-users {}, then log in again",
                f.user.name
            ),
        )
    } else {
        (
            crate::nix::error_summary(stderr),
            "run `cargo xtask setup-binfmt --check` again after fixing the checks above".into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use super::elf::Linkage;
    use super::entry::{self, Entry, Rule};
    use super::facts::{Binfmt, Daemon, NixFacts, User};
    use super::install::Source;
    use super::*;

    /// A Debian 12 workstation where everything is right, as a user of
    /// the distribution's daemon.
    pub(crate) fn good() -> Facts {
        let config: BTreeMap<String, String> = [
            ("allowed-users", "*"),
            ("experimental-features", "flakes nix-command"),
            ("extra-platforms", "aarch64-linux i686-linux"),
            ("sandbox", "true"),
            ("sandbox-paths", ""),
            ("system", "x86_64-linux"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let qemu = Entry {
            name: entry::NAME.into(),
            enabled: true,
            // Any file that exists: the linkage comes from `interpreter` below.
            interpreter: "/bin/sh".into(),
            flags: "POF".into(),
            rule: Rule::Magic {
                offset: 0,
                magic: entry::MAGIC.to_vec(),
                mask: Some(entry::MASK.to_vec()),
            },
        };
        let now = SystemTime::now();
        Facts {
            arch: "x86_64",
            os_name: "Debian GNU/Linux 12 (bookworm)".into(),
            nixos: false,
            systemd: true,
            user: User {
                root: false,
                name: "alice".into(),
                groups: vec!["alice".into(), "nix-users".into()],
            },
            binfmt: Binfmt {
                mounted: true,
                enabled: true,
                aarch64: vec![qemu.clone()],
            },
            interpreter: Some((PathBuf::from(&qemu.interpreter), Linkage::Static)),
            boot_rule: Some((PathBuf::from("/usr/lib/binfmt.d/qemu-aarch64.conf"), qemu)),
            nix: Some(NixFacts {
                version_text: "nix (Nix) 2.24.10".into(),
                version: Some((2, 24)),
                gate: crate::nix::version::judge("nix (Nix) 2.24.10"),
                flavour: Flavour::Distribution { daemon: true },
                uses_daemon: true,
                config: Ok(config),
                nix_command: true,
                conf_file: "/etc/nix/nix.conf".into(),
                edit_file: "/etc/nix/nix.conf".into(),
                conf_changed: Some(now - Duration::from_secs(3600)),
                daemon: Some(Daemon {
                    pid: 42,
                    started: now - Duration::from_secs(60),
                }),
                allowed: Ok(()),
            }),
            nix_source: None,
            elf_probe: Ok(()),
            nix_probe: Some(Ok("/nix/store/x-aarch64-probe".into())),
        }
    }

    /// `good()` with Debian 12's own nix-bin 2.8.0, whose candidate is 2.8
    /// too: the official installer is the way out.
    pub(crate) fn debian_12_nix() -> Facts {
        let mut f = good();
        let text = "nix (Nix) 2.8.0\n";
        let n = nix(&mut f);
        n.version_text = text.into();
        n.version = Some((2, 8));
        n.gate = crate::nix::version::judge(text);
        f.nix_source = Some(Source::Official {
            why: "Debian GNU/Linux 12 (bookworm)'s nix-bin is 2.8.0, older than the 2.18 that nixpkgs 26.05 needs".into(),
        });
        f
    }

    fn failures(f: &Facts) -> Vec<String> {
        evaluate(f)
            .into_iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.to_string())
            .collect()
    }

    fn nix(f: &mut Facts) -> &mut NixFacts {
        f.nix.as_mut().unwrap()
    }

    #[test]
    fn all_good_passes() {
        let checks = evaluate(&good());
        assert!(passed(&checks), "{checks:#?}");
        assert!(ready(&checks).is_ok());
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
    }

    #[test]
    fn aarch64_and_nixos_hosts_stop_early() {
        let mut f = good();
        f.arch = "aarch64";
        let checks = evaluate(&f);
        assert_eq!(checks.len(), 1);
        assert!(passed(&checks));
        let mut f = good();
        f.nixos = true;
        f.binfmt.aarch64.clear();
        let failed = failures(&f);
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].contains("boot.binfmt.emulatedSystems"),
            "{failed:?}"
        );
    }

    #[test]
    fn the_dynamic_qemu_trap() {
        let mut f = good();
        f.interpreter = Some((
            "/usr/bin/qemu-aarch64".into(),
            Linkage::Dynamic("/lib64/ld-linux-x86-64.so.2".into()),
        ));
        let failed = failures(&f);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].contains("qemu-user-binfmt"), "{failed:?}");
        assert!(
            failed[0].contains("fix: sudo apt-get install qemu-user-static"),
            "{failed:?}"
        );
    }

    #[test]
    fn missing_f_is_a_failure_only_with_the_sandbox_on() {
        let mut f = good();
        f.binfmt.aarch64[0].flags = "PO".into();
        let failed = failures(&f);
        assert!(failed[0].contains("no flag F"), "{failed:?}");
        assert!(failed[0].contains("echo -1 | sudo tee /proc/sys/fs/binfmt_misc/qemu-aarch64"));
        let mut config = nix(&mut f).config.clone().unwrap();
        config.insert("sandbox".into(), "false".into());
        nix(&mut f).config = Ok(config);
        assert!(failures(&f).is_empty());
    }

    #[test]
    fn extra_platforms_and_a_stale_daemon() {
        let mut f = good();
        let mut config = nix(&mut f).config.clone().unwrap();
        config.insert("extra-platforms".into(), "i686-linux".into());
        nix(&mut f).config = Ok(config);
        nix(&mut f).conf_changed = Some(SystemTime::now());
        let failed = failures(&f);
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed[0].contains("extra-platforms = aarch64-linux i686-linux"));
        assert!(failed[0].contains("then sudo systemctl restart nix-daemon"));
        assert!(failed[1].contains("nix-daemon (pid 42) started before /etc/nix/nix.conf"));
        let err = ready(&evaluate(&f)).unwrap_err().to_string();
        assert!(
            err.starts_with("this machine cannot build aarch64-linux yet:\n  ✗ "),
            "{err}"
        );
        assert!(
            err.contains("      fix: sudo systemctl restart nix-daemon"),
            "{err}"
        );
        assert!(err.ends_with(
            "run `cargo xtask setup-binfmt` to fix all of these (`--check` shows every check)"
        ));
    }

    #[test]
    fn nix_probe_diagnoses() {
        let mut f = good();
        f.nix_probe = Some(Err("error: a 'aarch64-linux' with features {} is required to build '/nix/store/x.drv', but I am a 'x86_64-linux'".into()));
        let failed = failures(&f);
        assert!(
            failed[0].contains("nix-daemon still refuses aarch64-linux"),
            "{failed:?}"
        );
        assert!(
            failed[0].contains("nix said: a 'aarch64-linux' with features {}"),
            "{failed:?}"
        );
        f.nix_probe = Some(Err("building '/nix/store/x.drv'...\n  Error  ~  executing '/nix/store/y-aarch64-probe-builder': No such file or directory  \nerror: builder for '/nix/store/x.drv' failed with exit code 1".into()));
        let failed = failures(&f);
        assert!(
            failed[0].contains("registered without flag F"),
            "{failed:?}"
        );
        assert!(failed[0].contains("nix said: executing '/nix/store/y-aarch64-probe-builder': No such file or directory"), "{failed:?}");
    }

    #[test]
    fn missing_nix_names_where_a_new_enough_one_comes_from() {
        let mut f = debian_12_nix();
        f.nix = None;
        f.nix_probe = None;
        let failed = failures(&f);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].contains("--install-nix` runs the official installer (Debian GNU/Linux 12 (bookworm)'s nix-bin is 2.8.0"), "{failed:?}");
        assert!(
            failed[0].contains("curl -L https://nixos.org/nix/install | sh -s -- --daemon"),
            "{failed:?}"
        );
        f.nix_source = Some(Source::Distribution {
            version: crate::nix::version::Version::new(2, 26, 3),
        });
        let failed = failures(&f);
        assert!(failed[0].contains("installs the distribution's nix-bin 2.26.3 (sudo apt-get install nix-bin nix-setup-systemd)"), "{failed:?}");
    }

    #[test]
    fn a_nix_older_than_2_18_is_a_failure_with_the_way_out() {
        let f = debian_12_nix();
        let failed = failures(&f);
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].starts_with("✗ Nix 2.8.0 is too old: nixpkgs 26.05 needs Nix 2.18 or newer (its lib/minver.nix)\n    fix: `cargo xtask setup-binfmt --install-nix` replaces it with the official installer's Nix"),
            "{failed:?}"
        );
        assert!(failed[0].contains("removes nix-bin and nix-setup-systemd, their nixbld build users and group, moves /nix aside"), "{failed:?}");
        assert!(ready(&evaluate(&f)).is_err());
        // Where the distribution has a new enough package: upgrade it.
        let mut f = debian_12_nix();
        f.nix_source = Some(Source::Distribution {
            version: crate::nix::version::Version::new(2, 26, 3),
        });
        let failed = failures(&f);
        assert!(failed[0].contains("upgrades it to the distribution's nix-bin 2.26.3 (sudo apt-get install nix-bin nix-setup-systemd)"), "{failed:?}");
        // The official installer's old Nix upgrades itself.
        nix(&mut f).flavour = Flavour::Official { multi_user: true };
        let failed = failures(&f);
        assert!(
            failed[0].contains("fix: upgrade it: `sudo -i nix upgrade-nix`"),
            "{failed:?}"
        );
        // 2.18.0 itself is enough.
        let mut f = good();
        nix(&mut f).gate = crate::nix::version::judge("nix (Nix) 2.18.0");
        assert!(failures(&f).is_empty());
    }

    #[test]
    fn daemon_users() {
        let mut f = good();
        nix(&mut f).allowed = Err(Denied::NoAccess(
            "cannot connect to /nix/var/nix/daemon-socket/socket: Permission denied (os error 13)"
                .into(),
        ));
        let failed = failures(&f);
        assert!(
            failed[0].contains("alice may not use nix-daemon"),
            "{failed:?}"
        );
        assert!(
            failed[0].contains("sudo usermod -aG nix-users alice"),
            "{failed:?}"
        );
        nix(&mut f).allowed = Err(Denied::NotListed);
        let failed = failures(&f);
        assert!(
            failed[0].contains("add `extra-allowed-users = alice`"),
            "{failed:?}"
        );
        nix(&mut f).allowed = Err(Denied::NotRunning("connection refused".into()));
        let failed = failures(&f);
        assert!(
            failed[0].contains("fix: sudo systemctl start nix-daemon"),
            "{failed:?}"
        );
        f.user.root = true;
        assert!(failures(&f).is_empty());
    }
}
