//! A private machine for binfmt tests: runs a command inside a fresh user,
//! mount and PID namespace where, at their real paths,
//! - `/proc/sys/fs/binfmt_misc` is a private binfmt_misc instance (Linux
//!   6.7+ gives each user namespace its own when mounted there), empty or
//!   with `qemu-aarch64` registered with the flags you choose;
//! - `/etc` is a private copy-on-write overlay of the machine's `/etc`
//!   (what the command writes there, `usermod` included, stays inside);
//!   `/etc/nix` (a `nix.conf` you choose), `/etc/binfmt.d` and `/run` are
//!   empty tmpfs (so no systemd is seen, and nothing is restarted);
//! - optionally `/usr/lib/binfmt.d` too, holding the boot-time rules of the
//!   packages you choose to pretend are installed;
//! - `/proc` shows only the namespace's processes;
//! - `HOME` is a temp dir (writable by every user);
//! - optionally a real `nix-daemon` runs, listening on a private
//!   `/nix/var/nix/daemon-socket` (mode 0770, group `nix-users`, as Debian's
//!   `nix-setup-systemd` makes it); run commands as another user with
//!   [`AS_NOBODY`] or [`AS_NOBODY_OUTSIDE_NIX_USERS`], restart it with
//!   [`RESTART_DAEMON`].
//!
//! The parent (root) writes a full identity map (`0 0 65536`) for users and
//! groups, so root inside is root outside for files: real `nix` runs as a
//! single-user install and can chown, and the real `qemu-user-static`
//! serves as interpreter. The Nix is the test's private current one
//! (`nixenv.rs`): its store is the test's private `/nix`, which the
//! namespace inherits; its cache is under the private HOME. The machine's own binfmt
//! registrations and `/etc` are never touched; everything vanishes when the
//! command ends.
//!
//! ```ignore
//! let out = BinfmtNs::new()
//!     .register_qemu("POF")
//!     .nix_conf("sandbox = true\nextra-platforms = aarch64-linux i686-linux\n")
//!     .run(xtask_bin, &["setup-binfmt", "--check"]);
//! ```

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The static interpreter Debian's and Ubuntu's qemu-user-static install.
pub const QEMU: &str = "/usr/libexec/qemu-binfmt/aarch64-binfmt-P";
/// The `nix.conf` a namespace starts with unless told otherwise: Debian's
/// nix-bin as root, single-user, with the build sandbox on.
pub const DEFAULT_NIX_CONF: &str = "sandbox = true\n";

/// Runs inside the namespaces, once the parent has written the id maps
/// (it waits for a line on stdin). `$@` is the command to run.
const SETUP: &str = r#"
read -r _ || exit 97
set -e
mount -t proc proc /proc
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
ov="$HOME/.etc-overlay"
mkdir "$ov"
mount -t tmpfs -o mode=0700 tmpfs "$ov"
mkdir "$ov/upper" "$ov/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$ov/upper,workdir=$ov/work,userxattr" /etc
mkdir -p /etc/nix /etc/binfmt.d
mount -t tmpfs -o mode=0755 tmpfs /etc/nix
mount -t tmpfs -o mode=0755 tmpfs /etc/binfmt.d
mount -t tmpfs -o mode=0755 tmpfs /run
printf '%s' "$BINFMT_NS_NIX_CONF" > /etc/nix/nix.conf
if [ -n "$BINFMT_NS_PACKAGE_RULE" ]; then
  mount -t tmpfs -o mode=0755 tmpfs /usr/lib/binfmt.d
  printf '%s\n' "$BINFMT_NS_PACKAGE_RULE" > /usr/lib/binfmt.d/qemu-aarch64.conf
fi
if [ -n "$BINFMT_NS_REGISTER" ]; then
  printf '%s' "$BINFMT_NS_REGISTER" > /proc/sys/fs/binfmt_misc/register
fi
if [ -n "$BINFMT_NS_DAEMON" ]; then
  mkdir -p /nix/var/nix/daemon-socket
  mount -t tmpfs -o mode=0770 tmpfs /nix/var/nix/daemon-socket
  chgrp nix-users /nix/var/nix/daemon-socket
  nix-daemon --daemon >"$HOME/nix-daemon.log" 2>&1 &
  echo $! >"$HOME/nix-daemon.pid"
  n=0
  until [ -S /nix/var/nix/daemon-socket/socket ]; do
    n=$((n + 1)); [ "$n" -lt 500 ] || { echo "nix-daemon did not start" >&2; exit 98; }
    sleep 0.01
  done
fi
chmod 0777 "$HOME"
unset BINFMT_NS_NIX_CONF BINFMT_NS_REGISTER BINFMT_NS_PACKAGE_RULE BINFMT_NS_DAEMON
set +e
exec "$@"
"#;

/// Shell lines (run as root inside) that restart the namespace's
/// nix-daemon, as `systemctl restart nix-daemon` would.
pub const RESTART_DAEMON: &str = r#"kill "$(cat "$HOME/nix-daemon.pid")"; rm -f /nix/var/nix/daemon-socket/socket
nix-daemon --daemon >>"$HOME/nix-daemon.log" 2>&1 & echo $! >"$HOME/nix-daemon.pid"
until [ -S /nix/var/nix/daemon-socket/socket ]; do sleep 0.01; done"#;

/// A shell prefix running a command as `nobody` in group `nix-users`.
pub const AS_NOBODY: &str = "setpriv --reuid=65534 --regid=65534 --groups=\"$(getent group nix-users | cut -d: -f3)\" env USER=nobody";
/// A shell prefix running a command as `nobody` without extra groups.
pub const AS_NOBODY_OUTSIDE_NIX_USERS: &str =
    "setpriv --reuid=65534 --regid=65534 --clear-groups env USER=nobody";

/// `None` when this machine can also run the namespace's nix-daemon for
/// other users, else the reason.
pub fn missing_for_daemon() -> Option<String> {
    missing()
        .or_else(|| super::need_program("setpriv", "util-linux"))
        .or_else(|| {
            let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
            (!group.lines().any(|l| l.starts_with("nix-users:")))
                .then(|| "no group nix-users (apt-get install nix-setup-systemd)".to_string())
        })
}

/// `None` when this machine can make the namespace, else the reason.
pub fn missing() -> Option<String> {
    if let Some(why) = super::need_root() {
        return Some(format!("{why} (the parent writes the namespace's id maps)"));
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if (major, minor) < (6, 7) {
        return Some(format!(
            "kernel {major}.{minor} has no per-namespace binfmt_misc (needs 6.7 or later)"
        ));
    }
    if !Path::new(QEMU).exists() {
        return Some(format!(
            "{QEMU} is missing (apt-get install qemu-user-static)"
        ));
    }
    super::need_program("unshare", "util-linux").or_else(super::need_nix)
}

/// A namespace to be: what is registered and what nix.conf says.
pub struct BinfmtNs {
    register: Option<String>,
    daemon: bool,
    package_rule: Option<String>,
    nix_conf: String,
    home: tempfile::TempDir,
}

impl Default for BinfmtNs {
    fn default() -> Self {
        Self::new()
    }
}

impl BinfmtNs {
    /// Nothing registered, `nix.conf` = [`DEFAULT_NIX_CONF`].
    pub fn new() -> Self {
        BinfmtNs {
            register: None,
            daemon: false,
            package_rule: None,
            nix_conf: DEFAULT_NIX_CONF.to_string(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// Registers `qemu-aarch64` with [`QEMU`] and these binfmt_misc flags
    /// (`"POF"` as Debian 12 does, `"OP"` for the missing-F case).
    pub fn register_qemu(mut self, flags: &str) -> Self {
        self.register = Some(qemu_rule(flags));
        self
    }

    /// Replaces `/usr/lib/binfmt.d` with one `qemu-aarch64.conf` holding
    /// the qemu-aarch64 rule with these flags, as a package would install.
    pub fn package_rule(mut self, flags: &str) -> Self {
        self.package_rule = Some(qemu_rule(flags));
        self
    }

    /// Starts a real `nix-daemon` (reading the private nix.conf) before the
    /// command; builds by users other than root then go through it.
    pub fn nix_daemon(mut self) -> Self {
        self.daemon = true;
        self
    }

    /// The text of the private `/etc/nix/nix.conf`.
    pub fn nix_conf(mut self, text: &str) -> Self {
        self.nix_conf = text.to_string();
        self
    }

    /// The private HOME (kept until the `BinfmtNs` is dropped).
    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Runs `program args…` inside a fresh namespace and returns its output.
    pub fn run<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Output {
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--user",
            "--mount",
            "--pid",
            "--fork",
            "--propagation",
            "private",
        ])
        .args(["--", "sh", "-c", SETUP, "sh"])
        .arg(program)
        .args(args)
        .env("HOME", self.home.path())
        .env("BINFMT_NS_NIX_CONF", &self.nix_conf)
        .env("BINFMT_NS_DAEMON", if self.daemon { "1" } else { "" })
        .env("BINFMT_NS_REGISTER", self.register.as_deref().unwrap_or(""))
        .env(
            "BINFMT_NS_PACKAGE_RULE",
            self.package_rule.as_deref().unwrap_or(""),
        )
        .env_remove("NIX_CONFIG");
        // The test's current Nix and private store, but /etc/nix/nix.conf
        // is the namespace's (what setup-binfmt reads and fixes).
        if let Some(v) = super::nix_vars() {
            v.apply(&mut cmd);
        }
        cmd.env_remove("NIX_CONF_DIR")
            .env_remove("XDG_CACHE_HOME")
            // Host keys (`cargo xtask identity`) under the namespace's HOME.
            .env_remove("XDG_DATA_HOME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot run unshare");
        let pid = child.id();
        // Wait until unshare has made the user namespace, then map ids.
        let own = std::fs::read_link("/proc/self/ns/user").unwrap();
        let start = Instant::now();
        loop {
            match std::fs::read_link(format!("/proc/{pid}/ns/user")) {
                Ok(ns) if ns != own => break,
                _ if start.elapsed() > Duration::from_secs(10) => {
                    let _ = child.kill();
                    panic!("unshare did not make a user namespace within 10 s");
                }
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        for map in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{map}"), "0 0 65536\n")
                .unwrap_or_else(|e| panic!("cannot write /proc/{pid}/{map}: {e}"));
        }
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    }

    /// Runs a shell script inside a fresh namespace.
    pub fn script(&self, script: &str) -> Output {
        self.run("sh", &["-c", script])
    }
}

/// The registration line of qemu-aarch64 with [`QEMU`] and `flags`.
pub fn qemu_rule(flags: &str) -> String {
    let esc = |b: &[u8]| b.iter().map(|x| format!("\\x{x:02x}")).collect::<String>();
    let magic = esc(b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00");
    let mask =
        esc(b"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff");
    format!(":qemu-aarch64:M::{magic}:{mask}:{QEMU}:{flags}")
}

/// Quotes a word for `sh`.
pub fn sh_quote(s: impl AsRef<OsStr>) -> String {
    let s = s.as_ref().to_string_lossy();
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// stdout and stderr of an output, for assertions and failure messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
