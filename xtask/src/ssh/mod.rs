//! SSH, decided once: every connection to a Pi goes through here.
//!
//! - `BatchMode=yes`: never a password prompt that would hang a parallel run;
//! - `StrictHostKeyChecking=yes`: an unknown host key is shown with its
//!   fingerprint and the user is asked; a changed key is refused;
//! - one master connection per host (`ControlMaster`), reused by every
//!   command and by `nix copy` (through `NIX_SSHOPTS`): for `deploy` and
//!   `rollback` in a private temp dir, closed when they end ([`Ssh::new`]);
//!   for `logs`, `exec`, `ssh` and `status` kept a few minutes for the next
//!   command ([`Ssh::shared`], `persist.rs`: keyed on every option, in a
//!   folder only this user can enter);
//! - keepalives and a connect timeout, so a dead Pi never hangs a run;
//! - remote commands are `sh -c <script> sh <args…>` with every argument
//!   single-quoted here, so no caller builds a shell string by hand.
//!
//! Hosts with an identity in Git (`hosts/<name>/ssh_host_ed25519_key.pub`,
//! see `identity.rs`) are checked against that key only, through a
//! known_hosts file generated from Git ([`Ssh::with_git_keys`]): no prompt on
//! first contact, and any other key is refused. Hosts without one keep the
//! first-contact question.
//!
//! `PI_NIXOS_SSH_CONFIG=<file>` makes every ssh call use that ssh_config
//! instead of `~/.ssh/config` (a fleet-specific key or known_hosts file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod failure;
mod keys;
mod output;
pub mod persist;
pub use failure::{Failure, classify};
pub use keys::{fingerprints, used_key};
pub use output::output_within;

/// Environment variable naming an ssh_config file to use instead of ~/.ssh/config.
pub const CONFIG_ENV: &str = "PI_NIXOS_SSH_CONFIG";

/// Default seconds to wait for a Pi to answer.
pub const CONNECT_TIMEOUT: u64 = 5;

/// Serialises host key questions between parallel hosts.
static ASK: Mutex<()> = Mutex::new(());

/// Closes every master connection whose socket is in `dir` (all at
/// once), removes `dir`.
fn close_all(dir: &Path) {
    persist::close(&persist::sockets(dir));
    let _ = std::fs::remove_dir_all(dir);
}

/// Where an SSH connection goes.
#[derive(Clone, Debug)]
pub struct Target {
    pub name: String,
    pub user: String,
    pub address: String,
    pub port: u16,
}

impl Target {
    pub fn of(h: &crate::inventory::Host) -> Target {
        Target {
            name: h.name.clone(),
            user: h.user.clone(),
            address: h.address.clone(),
            port: h.port,
        }
    }

    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.address)
    }

    /// How known_hosts names this host: `addr` or `[addr]:port`.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.address.clone()
        } else {
            format!("[{}]:{}", self.address, self.port)
        }
    }
}

/// POSIX single-quoting: the word reaches the remote program unchanged.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A command as a shell would show it.
pub fn show(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| {
            v.map(|v| format!("{}={}", k.to_string_lossy(), quote(&v.to_string_lossy())))
        })
        .collect();
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

/// The remote command line for `sh -c script sh args…`, as root
/// (through `sudo -n` when the SSH user is not root).
pub fn remote_command(user: &str, script: &str, args: &[&str]) -> String {
    let mut words = Vec::new();
    if user != "root" {
        words.extend(["sudo", "-n"].map(String::from));
    }
    words.extend(["sh", "-c"].map(String::from));
    words.push(quote(script));
    words.push("sh".into());
    words.extend(args.iter().map(|a| quote(a)));
    words.join(" ")
}

/// The SSH settings of one run: options, connect timeout and the folder
/// that holds the master connections' sockets.
pub struct Ssh {
    config: Option<PathBuf>,
    pub connect_timeout: u64,
    dir: PathBuf,
    /// Persistent masters (their folder is `dir`), or one private master
    /// per host for this run only.
    shared: Option<persist::Shared>,
    /// Hosts whose key is in Git, and the known_hosts file generated from
    /// it that they are checked against (only it).
    git_keyed: BTreeMap<String, PathBuf>,
}

impl Ssh {
    /// Masters of this run only, in a private temp dir, closed when it
    /// ends (`deploy`, `rollback`: they close and reopen connections on
    /// purpose).
    pub fn new(connect_timeout: u64) -> Result<Ssh> {
        let dir = private_dir()?;
        // Interrupted, the run still closes its masters and removes the folder.
        let d = dir.clone();
        crate::interrupt::on_exit(&dir.display().to_string(), move || close_all(&d));
        Ok(Ssh {
            config: std::env::var_os(CONFIG_ENV).map(PathBuf::from),
            connect_timeout,
            dir,
            shared: None,
            git_keyed: BTreeMap::new(),
        })
    }

    /// Masters that outlive this command and are reused by the next one
    /// (see `persist.rs`), unless `PI_NIXOS_SSH_PERSIST=0`.
    pub fn shared(connect_timeout: u64) -> Result<Ssh> {
        let Some(shared) = persist::settings()? else {
            return Ssh::new(connect_timeout);
        };
        // Interrupted, the sessions over the masters are stopped (the
        // masters stay) and what they printed gets a moment to be shown.
        crate::interrupt::on_exit("ssh-sessions", || {
            std::thread::sleep(std::time::Duration::from_millis(300))
        });
        Ok(Ssh {
            config: std::env::var_os(CONFIG_ENV).map(PathBuf::from),
            connect_timeout,
            dir: shared.dir.clone(),
            shared: Some(shared),
            git_keyed: BTreeMap::new(),
        })
    }

    /// Checks the hosts of `names` that have a key in Git against that key
    /// only (a known_hosts file generated from Git: in this run's folder,
    /// or one per host named by its content for persistent masters).
    pub fn with_git_keys(mut self, root: &Path, names: &[String]) -> Result<Ssh> {
        let keys = crate::identity::git_keys(root, names)?;
        if self.shared.is_some() {
            for k in keys {
                let text = crate::identity::known_hosts(std::slice::from_ref(&k));
                let file = persist::known_hosts_file(&self.dir, &text)
                    .context("cannot write the known_hosts file generated from Git")?;
                self.git_keyed.insert(k.0, file);
            }
            return Ok(self);
        }
        let file = self.dir.join("known_hosts.git");
        std::fs::write(&file, crate::identity::known_hosts(&keys))
            .context("cannot write the known_hosts file generated from Git")?;
        self.git_keyed = keys.into_iter().map(|(n, _)| (n, file.clone())).collect();
        Ok(self)
    }

    /// Whether `t`'s host key is checked against the one in Git.
    pub fn has_git_key(&self, t: &Target) -> bool {
        self.git_keyed.contains_key(&t.name)
    }

    /// For a host with its key in Git: that file only, looked up by the
    /// host's name (`HostKeyAlias`, so address and port do not matter).
    fn identity_options(&self, t: &Target) -> Vec<String> {
        let Some(file) = self.git_keyed.get(&t.name) else {
            return Vec::new();
        };
        [
            format!("UserKnownHostsFile={}", file.display()),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            format!("HostKeyAlias={}", t.name),
            "HostKeyAlgorithms=ssh-ed25519".to_string(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    /// Options shared by every ssh call (and by `nix copy` through NIX_SSHOPTS):
    /// no word contains a space.
    fn options(&self, port: Option<u16>) -> Vec<String> {
        self.options_with(port, "no", &format!("{}/%C", self.dir.display()))
    }

    /// ssh takes the first value given for an option, so the connection
    /// sharing options are chosen here, never appended later.
    fn options_with(&self, port: Option<u16>, master: &str, path: &str) -> Vec<String> {
        let mut o = Vec::new();
        if let Some(c) = &self.config {
            o.push("-F".to_string());
            o.push(c.display().to_string());
        }
        for opt in [
            "BatchMode=yes".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            format!("ConnectTimeout={}", self.connect_timeout),
            "ServerAliveInterval=5".to_string(),
            "ServerAliveCountMax=3".to_string(),
            format!("ControlMaster={master}"),
            format!("ControlPath={path}"),
        ] {
            o.push("-o".into());
            o.push(opt);
        }
        if let Some(p) = port {
            o.push("-p".into());
            o.push(p.to_string());
        }
        o
    }

    /// Where `t`'s master listens: `%C` in this run's folder, or the
    /// persistent socket named by everything the connection is made with.
    fn control_path(&self, t: &Target) -> PathBuf {
        if self.shared.is_none() {
            return self.dir.join("%C");
        }
        let mut words: Vec<String> = self
            .options_with(Some(t.port), "", "")
            .into_iter()
            .filter(|w| !w.starts_with("Control") && !w.starts_with("ConnectTimeout="))
            .collect();
        words.extend(self.identity_options(t));
        words.push(t.destination());
        self.dir.join(persist::key(&words, self.config.as_deref()))
    }

    fn base(&self, t: &Target) -> Command {
        let mut c = Command::new("ssh");
        let path = self.control_path(t).display().to_string();
        c.args(self.options_with(Some(t.port), "no", &path))
            .args(self.identity_options(t));
        c
    }

    /// Whether a persistent master to `t` is up (never for a run's own).
    pub fn has_master(&self, t: &Target) -> bool {
        self.shared.is_some() && persist::alive(&self.control_path(t))
    }

    /// `NIX_SSHOPTS` for `nix copy --to ssh://…`: the same options, so the
    /// copy rides on the host's master connection.
    pub fn nix_sshopts(&self, port: Option<u16>) -> String {
        self.options(port).join(" ")
    }

    /// [`Ssh::nix_sshopts`] for a Pi, with its identity from Git checked.
    pub fn nix_sshopts_to(&self, t: &Target) -> String {
        let mut o = self.options(Some(t.port));
        o.extend(self.identity_options(t));
        o.join(" ")
    }

    /// A command that runs `script` on the host over its master connection
    /// (or a direct one when there is none).
    pub fn command(&self, t: &Target, script: &str, args: &[&str]) -> Command {
        let mut c = self.base(t);
        c.arg(t.destination())
            .arg("--")
            .arg(remote_command(&t.user, script, args));
        c
    }

    /// The same over a new connection that shares nothing with the master:
    /// proof that the host still accepts new SSH connections.
    pub fn fresh_command(&self, t: &Target, script: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.options_with(Some(t.port), "no", "none"))
            .args(self.identity_options(t))
            .arg(t.destination())
            .arg("--")
            .arg(remote_command(&t.user, script, args));
        c
    }

    /// `ssh … user@address -- <remote>` over the host's master: a remote
    /// line as typed (`reach::remote_line`; empty: a login shell).
    pub fn session_command(&self, t: &Target, remote: &str) -> Command {
        let mut c = self.base(t);
        c.arg(t.destination()).arg("--").arg(remote);
        c
    }

    /// `ssh <dest> -- <remote>` with the shared options, for a build host
    /// named by an SSH destination.
    pub fn plain_command(&self, dest: &str, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.options(None)).arg(dest).arg("--").arg(remote);
        c
    }

    /// Command that opens the master connection: it returns once the host
    /// is connected and authenticated (or failed), the master stays in the
    /// background (and exits on its own after 10 idle minutes, or the
    /// persistent masters' idle time).
    pub fn master_command(&self, t: &Target) -> Command {
        let mut c = Command::new("ssh");
        let path = self.control_path(t).display().to_string();
        let persist = self.shared.as_ref().map_or(600, |s| s.seconds);
        c.args(self.options_with(Some(t.port), "yes", &path))
            .args(self.identity_options(t))
            .args(["-o", &format!("ControlPersist={persist}")])
            .args(["-N", "-f", "-v", "-E"])
            .arg(self.master_log(t))
            .arg(t.destination());
        c
    }

    fn master_log(&self, t: &Target) -> PathBuf {
        if self.shared.is_some() {
            return self.control_path(t).with_extension("log");
        }
        self.dir.join(format!("{}.log", t.name))
    }

    /// Opens the master connection to `t` (or finds the persistent one
    /// up); `echo` is told each command. On first contact asks about the
    /// host key, showing its fingerprint.
    pub fn connect(&self, t: &Target, echo: &dyn Fn(&Command)) -> Result<()> {
        let _lock = match &self.shared {
            Some(s) => {
                let path = self.control_path(t);
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let lock = persist::lock(&s.dir, &name)?;
                if persist::alive(&path) {
                    return Ok(());
                }
                Some(lock)
            }
            None => None,
        };
        for attempt in 0..2 {
            let log = self.master_log(t);
            let err = self.master_log(t).with_extension("err");
            let _ = std::fs::remove_file(&log);
            let mut cmd = self.master_command(t);
            echo(&cmd);
            // `ssh -f` keeps its stdio open in the background: give it files,
            // never pipes we would wait on.
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&err)?);
            let mut child = cmd
                .spawn()
                .context("cannot run ssh (apt-get install openssh-client)")?;
            let limit = Duration::from_secs(self.connect_timeout * 2 + 20);
            let start = Instant::now();
            let status = loop {
                if let Some(s) = child.try_wait()? {
                    break Some(s);
                }
                if start.elapsed() > limit {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            if status.is_some_and(|s| s.success()) {
                return Ok(());
            }
            let text = format!(
                "{}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            );
            let text = if status.is_none() {
                format!("{text}\nssh timed out")
            } else {
                text
            };
            match classify(&text) {
                Failure::UnknownHostKey if attempt == 0 && !self.has_git_key(t) => {
                    self.ask_host_key(t)?
                }
                f => bail!("{}", self.failure_message(&f, t, &text)),
            }
        }
        bail!("{}: cannot connect", t.name)
    }

    /// [`Failure::message`] with the known_hosts file ssh reads for `t`.
    pub fn failure_message(&self, f: &Failure, t: &Target, text: &str) -> String {
        if self.has_git_key(t) && failure::not_git_key(f, text) {
            return failure::git_key_message(t);
        }
        let file = self
            .known_hosts_file(t)
            .unwrap_or_else(|_| PathBuf::from("~/.ssh/known_hosts"));
        f.message(t, self.connect_timeout, text, &file)
    }

    /// SHA256 fingerprint of the key this run authenticated with to `t`,
    /// as the master connection's log reports it.
    pub fn used_key(&self, t: &Target) -> Option<String> {
        let log = std::fs::read_to_string(self.master_log(t)).ok()?;
        used_key(&log)
    }

    /// Closes the master connection to `t`.
    pub fn disconnect(&self, t: &Target) {
        let mut c = self.base(t);
        c.args(["-O", "exit"]).arg(t.destination());
        let _ = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        // Persistent masters stay for the next command (see persist.rs).
        if self.shared.is_none() {
            crate::interrupt::forget(&self.dir.display().to_string());
            close_all(&self.dir);
        }
    }
}

/// A 0700 folder of our own under the temp dir (sockets must not be shared).
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("pi-nixos-ssh-{}-{nanos:x}{i}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).context("cannot create a private temp dir for ssh"),
        }
    }
    bail!(
        "cannot create a private temp dir for ssh in {}",
        base.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("/nix/store/abc-x"), "/nix/store/abc-x");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn remote_commands() {
        assert_eq!(
            remote_command("root", "echo \"$1\"", &["a b"]),
            r#"sh -c 'echo "$1"' sh 'a b'"#
        );
        assert!(remote_command("pi", "true", &[]).starts_with("sudo -n sh -c"));
    }
}
