//! Gathering what the checks judge: the OS, binfmt_misc, QEMU, Nix and the
//! probes. Everything here reads the machine; nothing changes it (the Nix
//! probe adds one tiny derivation to the store).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use xshell::Shell;

use super::elf::{self, Linkage};
use super::entry::{self, Entry};
use super::{install, nixconf, probe};
use crate::nix::version;
use crate::{exec, nix};

pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// Where Debian's and Ubuntu's qemu-user-static put the aarch64 interpreter
/// (a link to /usr/bin/qemu-aarch64-static).
pub const PACKAGED_INTERPRETER: &str = "/usr/libexec/qemu-binfmt/aarch64-binfmt-P";
/// Other places a qemu for aarch64 may be found.
const OTHER_INTERPRETERS: [&str; 2] = ["/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-aarch64"];
/// Boot-time registration folders of systemd-binfmt, highest priority first.
pub const BINFMT_D: [&str; 3] = ["/etc/binfmt.d", "/run/binfmt.d", "/usr/lib/binfmt.d"];
pub const DROP_IN: &str = "/etc/binfmt.d/qemu-aarch64.conf";
/// binfmt-support's registrations (Ubuntu 22.04 uses it for QEMU).
const BINFMTS: &str = "/usr/share/binfmts";
pub const DAEMON_SOCKET: &str = "/nix/var/nix/daemon-socket/socket";
const STATE_DIR: &str = "/nix/var/nix";

pub struct Facts {
    pub arch: &'static str,
    pub os_name: String,
    pub nixos: bool,
    /// Whether systemd runs the machine (`systemctl` works).
    pub systemd: bool,
    pub user: User,
    pub binfmt: Binfmt,
    /// The interpreter that runs aarch64 programs (the registered one, else
    /// the first one found), with its linkage.
    pub interpreter: Option<(PathBuf, Linkage)>,
    /// A rule under /etc/binfmt.d, /usr/lib/binfmt.d or /usr/share/binfmts
    /// that registers an aarch64 interpreter at boot.
    pub boot_rule: Option<(PathBuf, Entry)>,
    pub nix: Option<NixFacts>,
    /// Where a new enough Nix would come from: set when Nix is missing or
    /// too old for nixpkgs 26.05 (from /etc/os-release and apt-cache).
    pub nix_source: Option<install::Source>,
    pub elf_probe: Result<(), String>,
    pub nix_probe: Option<Result<String, String>>,
}

pub struct User {
    pub root: bool,
    pub name: String,
    pub groups: Vec<String>,
}

pub struct Binfmt {
    pub mounted: bool,
    pub enabled: bool,
    /// Every entry that claims aarch64 executables.
    pub aarch64: Vec<Entry>,
}

pub struct NixFacts {
    pub version_text: String,
    pub version: Option<(u32, u32)>,
    /// Whether this Nix can evaluate nixpkgs 26.05.
    pub gate: Result<version::Installed, version::Unusable>,
    pub flavour: Flavour,
    /// Whether builds by this user go through nix-daemon.
    pub uses_daemon: bool,
    /// The configuration that builds use, asked from Nix.
    pub config: Result<BTreeMap<String, String>, String>,
    /// Whether `nix-command` is on without asking for it on the command line.
    pub nix_command: bool,
    /// The system nix.conf, and the file where settings should be added.
    pub conf_file: PathBuf,
    pub edit_file: PathBuf,
    pub conf_changed: Option<SystemTime>,
    pub daemon: Option<Daemon>,
    /// Whether this user may use the daemon.
    pub allowed: Result<(), Denied>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Flavour {
    Official { multi_user: bool },
    Distribution { daemon: bool },
    Other,
}

impl Flavour {
    pub fn describe(self) -> &'static str {
        match self {
            Flavour::Official { multi_user: true } => "official installer, multi-user (nix-daemon)",
            Flavour::Official { multi_user: false } => "official installer, single-user",
            Flavour::Distribution { daemon: true } => {
                "distribution nix-bin with nix-setup-systemd (nix-daemon)"
            }
            Flavour::Distribution { daemon: false } => "distribution nix-bin, single-user",
            Flavour::Other => "installed another way",
        }
    }

    pub fn has_daemon(self) -> bool {
        matches!(
            self,
            Flavour::Official { multi_user: true } | Flavour::Distribution { daemon: true }
        )
    }
}

/// Why builds through the daemon cannot start.
#[derive(Debug, Clone, PartialEq)]
pub enum Denied {
    /// Nothing listens on the socket.
    NotRunning(String),
    /// The socket refuses this user (the distribution limits it to the
    /// `nix-users` group).
    NoAccess(String),
    /// The user is in neither allowed-users nor trusted-users.
    NotListed,
}

pub struct Daemon {
    pub pid: u32,
    pub started: SystemTime,
}

/// Reads the machine. `nix_probe`: also build the aarch64 derivation.
pub fn gather(sh: &Shell, nix_probe: bool) -> Facts {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let os_field = |key: &str| {
        os.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let os_id = os_field("ID");
    let nixos = os_id == "nixos" || Path::new("/etc/NIXOS").exists();
    let binfmt = read_binfmt();
    let interpreter = find_interpreter(&binfmt);
    let nix = nix::installed().then(|| gather_nix(sh));
    let nix_source = nix
        .as_ref()
        .is_none_or(|n| n.gate.is_err())
        .then(|| nix_source(sh, &os));
    let elf_probe = run_elf_probe(sh);
    let nix_probe = (nix_probe && nix.is_some()).then(|| run_nix_probe(sh));
    Facts {
        arch: std::env::consts::ARCH,
        os_name: Some(os_field("PRETTY_NAME"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "Linux".into()),
        nixos,
        systemd: Path::new("/run/systemd/system").is_dir(),
        user: current_user(),
        binfmt,
        interpreter,
        boot_rule: find_boot_rule(),
        nix,
        nix_source,
        elf_probe,
        nix_probe,
    }
}

/// Where to get a new enough Nix: asks apt for nix-bin's candidate version.
fn nix_source(sh: &Shell, os_release: &str) -> install::Source {
    let policy = if exec::have("apt-cache") {
        let cmd = xshell::cmd!(sh, "apt-cache policy nix-bin").env("LC_ALL", "C");
        exec::read(cmd).unwrap_or_default()
    } else {
        String::new()
    };
    install::choose(os_release, &policy)
}

fn read_binfmt() -> Binfmt {
    let dir = Path::new(BINFMT_DIR);
    let status = std::fs::read_to_string(dir.join("status")).ok();
    let mut aarch64 = Vec::new();
    let header = probe::elf();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "register" && n != "status")
            .collect();
        names.sort();
        for name in names {
            let Ok(text) = std::fs::read_to_string(dir.join(&name)) else {
                continue;
            };
            if let Ok(e) = Entry::parse(&name, &text)
                && e.matches(&header)
            {
                aarch64.push(e);
            }
        }
    }
    // Debian's name first: the one we manage.
    aarch64.sort_by_key(|e| e.name != entry::NAME);
    Binfmt {
        mounted: status.is_some(),
        enabled: status.is_some_and(|s| s.trim() == "enabled"),
        aarch64,
    }
}

fn find_interpreter(binfmt: &Binfmt) -> Option<(PathBuf, Linkage)> {
    let registered = binfmt.aarch64.iter().map(|e| e.interpreter.as_str());
    let known = std::iter::once(PACKAGED_INTERPRETER).chain(OTHER_INTERPRETERS);
    registered
        .chain(known)
        .map(PathBuf::from)
        .find_map(|p| elf::linkage(&p).ok().map(|l| (p, l)))
}

/// The rule that registers aarch64 at boot, in the order systemd-binfmt
/// reads them (a file in /etc hides one of the same name in /usr/lib).
fn find_boot_rule() -> Option<(PathBuf, Entry)> {
    let header = probe::elf();
    let mut seen = Vec::new();
    for dir in BINFMT_D {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap_or_default().to_owned();
            if seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            if let Some(e) = text
                .lines()
                .filter_map(entry::parse_register_line)
                .find(|e| e.matches(&header))
            {
                return Some((f, e));
            }
        }
    }
    // binfmt-support's formats (`key value` lines), used when it is installed.
    if !Path::new("/usr/sbin/update-binfmts").exists() {
        return None;
    }
    let f = Path::new(BINFMTS).join(entry::NAME);
    let e = entry::parse_binfmts(entry::NAME, &std::fs::read_to_string(&f).ok()?)?;
    Some((f, e))
}

fn current_user() -> User {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let ids = |key: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uid = ids("Uid:").get(1).copied().unwrap_or(u32::MAX);
    let gids = ids("Groups:");
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let name = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2].parse() == Ok(uid))
        .map(|f| f[0].to_string())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string());
    let groups = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| {
            f.len() > 3
                && (f[2].parse().is_ok_and(|g: u32| gids.contains(&g))
                    || f[3].split(',').any(|m| m == name))
        })
        .map(|f| f[0].to_string())
        .collect();
    User {
        root: uid == 0,
        name,
        groups,
    }
}

/// Whether /etc/group has a group of that name.
pub fn group_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').next() == Some(name))
}

/// Users in a group by /etc/group and /etc/passwd (members and those whose
/// primary group it is), whatever this process's own groups are.
pub fn group_members(name: &str) -> Vec<String> {
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let Some(fields) = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
    else {
        return Vec::new();
    };
    let mut members: Vec<String> = fields[3]
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .collect();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    members.extend(
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|p| p.len() > 3 && p[3] == fields[2])
            .map(|p| p[0].to_string()),
    );
    members
}

fn gather_nix(sh: &Shell) -> NixFacts {
    let version_text = exec::read(xshell::cmd!(sh, "nix --version")).unwrap_or_default();
    let version = nixconf::parse_version(&version_text);
    let gate = version::judge(&version_text);
    let root = current_uid() == Some(0);
    let flavour = flavour();
    let uses_daemon = match std::env::var("NIX_REMOTE").as_deref() {
        Ok("daemon") | Ok("unix://") => true,
        Ok(s) if !s.is_empty() && s != "auto" => false,
        // The socket's folder, not the socket: the folder may be closed to us.
        _ => !state_dir_writable(root) && Path::new(DAEMON_SOCKET).parent().unwrap().exists(),
    };
    let conf_dir = std::env::var_os("NIX_CONF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/nix"));
    let conf_file = conf_dir.join("nix.conf");
    let conf_text = std::fs::read_to_string(&conf_file).unwrap_or_default();
    // The Determinate installer owns nix.conf and leaves nix.custom.conf to users.
    let edit_file = conf_text
        .lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("!include ")
                .or_else(|| l.strip_prefix("include "))
                .filter(|f| f.trim() == "nix.custom.conf")
        })
        .map(|f| conf_dir.join(f.trim()))
        .unwrap_or_else(|| conf_file.clone());
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let conf_changed = mtime(&conf_file).max(mtime(&edit_file));
    let (config, nix_command) = show_config(sh, version, uses_daemon);
    let allowed = if uses_daemon {
        daemon_allows(&config, &current_user())
    } else {
        Ok(())
    };
    NixFacts {
        version_text,
        version,
        gate,
        flavour,
        uses_daemon,
        config,
        nix_command,
        conf_file,
        edit_file,
        conf_changed,
        daemon: find_daemon(),
        allowed,
    }
}

/// Asks Nix for its configuration, first without turning nix-command on
/// (to learn whether it is on), then with it if needed. For builds through
/// the daemon, the user's own nix.conf and NIX_CONFIG are left out: the
/// daemon does not read them.
fn show_config(
    sh: &Shell,
    version: Option<(u32, u32)>,
    daemon_view: bool,
) -> (Result<BTreeMap<String, String>, String>, bool) {
    let run = |enable: bool| {
        let mut cmd = nix::show_config(sh, version, enable);
        if daemon_view {
            cmd = cmd.env("NIX_USER_CONF_FILES", "").env_remove("NIX_CONFIG");
        }
        exec::output_any(cmd)
    };
    let mut nix_command = true;
    let mut out = run(false);
    if let Ok(o) = &out
        && !o.status.success()
        && nixconf::nix_command_disabled(&String::from_utf8_lossy(&o.stderr))
    {
        nix_command = false;
        out = run(true);
    }
    let config = match out {
        Ok(o) if o.status.success() => Ok(nixconf::parse_show_config(&String::from_utf8_lossy(
            &o.stdout,
        ))),
        Ok(o) => Err(nix::error_summary(&String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!("{e:#}")),
    };
    (config, nix_command)
}

fn flavour() -> Flavour {
    let nix = std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nix"))
                .find(|f| f.is_file())
        })
        .and_then(|f| f.canonicalize().ok())
        .unwrap_or_default();
    let unit = |dir: &str| Path::new(dir).join("nix-daemon.service").exists();
    let daemon_unit = unit("/etc/systemd/system") || unit("/lib/systemd/system");
    if nix.starts_with("/nix/") {
        Flavour::Official {
            multi_user: daemon_unit || Path::new(DAEMON_SOCKET).parent().unwrap().exists(),
        }
    } else if Path::new("/var/lib/dpkg/info/nix-bin.list").exists() {
        Flavour::Distribution {
            daemon: Path::new("/var/lib/dpkg/info/nix-setup-systemd.list").exists(),
        }
    } else {
        Flavour::Other
    }
}

fn current_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Nix's `auto` store: the local store when the state folder is writable
/// (root, or the owner of a single-user install), else the daemon.
fn state_dir_writable(root: bool) -> bool {
    let Ok(meta) = std::fs::metadata(STATE_DIR) else {
        return root;
    };
    root || (Some(meta.uid()) == current_uid() && meta.permissions().mode() & 0o200 != 0)
}

/// Whether the daemon lets this user in: the socket must be reachable (the
/// distribution's package limits it to the `nix-users` group) and the
/// user must be in `allowed-users` or `trusted-users`.
fn daemon_allows(
    config: &Result<BTreeMap<String, String>, String>,
    user: &User,
) -> Result<(), Denied> {
    use std::io::ErrorKind;
    if user.root {
        return Ok(());
    }
    if let Err(e) = std::os::unix::net::UnixStream::connect(DAEMON_SOCKET) {
        let why = format!("cannot connect to {DAEMON_SOCKET}: {e}");
        return Err(match e.kind() {
            ErrorKind::PermissionDenied => Denied::NoAccess(why),
            _ => Denied::NotRunning(why),
        });
    }
    let Ok(config) = config else {
        return Ok(());
    };
    let listed = |key: &str| {
        nixconf::words(config, key).iter().any(|w| {
            *w == "*"
                || *w == user.name
                || w.strip_prefix('@')
                    .is_some_and(|g| user.groups.iter().any(|ug| ug == g))
        })
    };
    if listed("allowed-users") || listed("trusted-users") {
        Ok(())
    } else {
        Err(Denied::NotListed)
    }
}

/// The oldest nix-daemon process (the listening one) and when it started.
fn find_daemon() -> Option<Daemon> {
    // Seconds since boot now, to 10 ms (btime in /proc/stat is whole seconds,
    // too coarse to tell a restart from an edit made in the same second).
    let now = SystemTime::now();
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let own = (
        std::fs::read_link("/proc/self/ns/pid").ok(),
        pid_depth(Path::new("/proc/self")),
    );
    let mut best: Option<(u64, u32)> = None;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            continue;
        };
        if !head.ends_with("(nix-daemon") || !same_pid_namespace(&e.path(), &own) {
            continue;
        }
        // Field 22, start time in clock ticks since boot (USER_HZ = 100).
        let Some(ticks) = tail.split_whitespace().nth(19).and_then(|t| t.parse().ok()) else {
            continue;
        };
        if best.is_none_or(|(t, _)| ticks < t) {
            best = Some((ticks, pid));
        }
    }
    let (ticks, pid) = best?;
    Some(Daemon {
        pid,
        started: now - Duration::from_secs_f64((uptime - ticks as f64 / 100.0).max(0.0)),
    })
}

/// Whether the process at `/proc/<pid>` runs in this PID namespace: a
/// `nix-daemon` of a container (another PID namespace, visible from here)
/// is not this machine's daemon. `own`: this process's namespace link and
/// [`pid_depth`].
fn same_pid_namespace(proc_dir: &Path, own: &(Option<PathBuf>, Option<usize>)) -> bool {
    if let (Some(own), Ok(ns)) = (&own.0, std::fs::read_link(proc_dir.join("ns/pid"))) {
        return ns == *own;
    }
    // The link of another user's process is not readable; its status is.
    match (own.1, pid_depth(proc_dir)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// How many PID namespaces deep a process is, seen from this /proc: the
/// number of PIDs on the `NSpid:` line of its status (one per level).
fn pid_depth(proc_dir: &Path) -> Option<usize> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    nspid_depth(&status)
}

fn nspid_depth(status: &str) -> Option<usize> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    Some(line.split_whitespace().count())
}

/// Writes the probe to a fresh private folder and returns its path.
fn write_probe() -> Result<(tempdir::Dir, PathBuf)> {
    let dir = tempdir::Dir::new()?;
    let path = dir.0.join("aarch64-probe");
    std::fs::write(&path, probe::elf())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok((dir, path))
}

fn run_elf_probe(sh: &Shell) -> Result<(), String> {
    let (_dir, path) = write_probe().map_err(|e| format!("cannot write the probe: {e:#}"))?;
    let out = exec::output_any(sh.cmd(&path)).map_err(|e| {
        let e = format!("{e:#}");
        if e.contains("Permission denied") {
            format!("{e} (is the temp folder mounted noexec? set TMPDIR to another folder)")
        } else {
            e
        }
    })?;
    if out.status.success() && out.stdout == probe::MESSAGE {
        Ok(())
    } else {
        Err(format!(
            "it exited with {} and printed {:?}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

/// Builds the probe derivation; `Ok(store path)` when its output is right,
/// else `Err(Nix's error)`.
fn run_nix_probe(sh: &Shell) -> Result<String, String> {
    let build = || -> Result<Result<String, String>> {
        let (dir, path) = write_probe()?;
        let expr = dir.0.join("probe.nix");
        std::fs::write(&expr, probe::NIX_EXPR)?;
        let nonce = format!(
            "{}-{}",
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos(),
            std::process::id()
        );
        let path = path.to_str().context("temp path is not UTF-8")?;
        let out = exec::output_any(nix::build_probe(
            sh,
            &expr,
            &[("probe", path), ("nonce", &nonce)],
        ))?;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            return Ok(Err(stderr));
        }
        let store_path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let got = std::fs::read(&store_path).unwrap_or_default();
        Ok(if got == probe::MESSAGE {
            Ok(store_path)
        } else {
            Err(format!(
                "{store_path} holds {:?}",
                String::from_utf8_lossy(&got)
            ))
        })
    };
    build().unwrap_or_else(|e| Err(format!("{e:#}")))
}

/// A private temp folder removed on drop (std only; no tempfile at runtime).
mod tempdir {
    use std::path::PathBuf;

    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Dir> {
            use std::os::unix::fs::DirBuilderExt;
            let base = std::env::temp_dir();
            for n in 0..100u32 {
                let p = base.join(format!("xtask-binfmt-{}-{n}", std::process::id()));
                match std::fs::DirBuilder::new().mode(0o755).create(&p) {
                    Ok(()) => return Ok(Dir(p)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::Error::other("cannot make a temp folder"))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nspid_depth_counts_namespace_levels() {
        assert_eq!(nspid_depth("Name:\tsleep\nNSpid:\t4242\n"), Some(1));
        // A container's process seen from the machine: its PID here, then in the container.
        assert_eq!(nspid_depth("Name:\tnix-daemon\nNSpid:\t4242\t1\n"), Some(2));
        assert_eq!(nspid_depth("Name:\tx\n"), None);
    }
}
