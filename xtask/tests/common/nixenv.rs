//! A current Nix for the tests, and a private store for each test.
//!
//! Debian 12's `nix-bin` is 2.8, which no user can run against nixpkgs
//! 26.05 (it needs 2.18). The tests use Debian 13's (`trixie`) Nix instead,
//! without changing the machine's packages: one trixie root is made with
//! debootstrap, once, and cached under the cargo target dir (or
//! `$PI_NIXOS_TEST_CACHE`), behind a file lock so parallel tests and test
//! binaries do not race. Its `nix` binary is copied to `/opt/nix-ws/bin`
//! and patched (`patchelf`: the root's dynamic loader, `DT_RPATH` into the
//! root's libraries), so it runs on this machine outside any chroot, with
//! `nix-store`, `nix-daemon`… as links to it beside it. The same root,
//! booted by systemd-nspawn, is the fake Pis' system (see `fakepi.rs`).
//!
//! [`enter`] gives the calling thread (a test) a private Nix: a new mount
//! namespace where a per-test temp dir is bind-mounted over `/nix` (so
//! nothing a test builds is seen by another test, nor left in the
//! machine's store, whose schema 2.26 would also upgrade), and the
//! variables for every command the test runs: `PATH` with the 2.26 bin
//! dir first, `NIX_CONF_DIR` (a private `nix.conf`), `NIX_USER_CONF_FILES`
//! and `XDG_CACHE_HOME` (the eval and fetcher caches die with the store).
//! Threads the test starts share its namespace and find the same store.
//!
//! Every test binary prints, once, `nix (Nix) X.Y.Z` and where it runs,
//! straight to its stderr (not through the test output capture), so a CI
//! log shows which versions were proven. Only std is used, so `cargo xtask
//! bench deploy` includes this file too.
#![allow(dead_code)]

use std::cell::RefCell;
use std::ffi::{CString, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The Debian suite whose `nix-bin` the tests use (2.26).
pub const SUITE: &str = "trixie";
/// Overrides where the root is cached (default: the cargo target's tmp dir).
pub const CACHE_ENV: &str = "PI_NIXOS_TEST_CACHE";
/// Debian mirror for the root (override with FAKEPI_MIRROR).
pub const MIRROR: &str = "http://deb.debian.org/debian";
/// Packages of the root: a fake Pi's system, and the workstation's Nix.
const INCLUDE: &str = "systemd,systemd-sysv,openssh-server,dbus";
/// Installed with apt after debootstrap (it resolves their dependencies):
/// Nix; the sandbox's /bin/sh; the journal's upload and receiver
/// (`logs --central`); libfaketime, a fake Pi whose clock is off.
const APT: &str = "nix-bin bash-static systemd-journal-remote libfaketime";

/// The cached root's folder name: a change of its packages is a new root
/// (an old cache is never taken for it).
fn root_name(suite: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("{INCLUDE}\n{APT}").bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    format!("nixenv-{suite}-{h:08x}")
}
/// Where the root's patched Nix lives, inside the root.
pub const BIN: &str = "opt/nix-ws/bin";
/// The names Nix answers to (argv[0] dispatch), linked to `nix` in [`BIN`].
const LINKS: [&str; 11] = [
    "nix-build",
    "nix-channel",
    "nix-collect-garbage",
    "nix-copy-closure",
    "nix-daemon",
    "nix-env",
    "nix-hash",
    "nix-instantiate",
    "nix-prefetch-url",
    "nix-shell",
    "nix-store",
];

/// The private `nix.conf`: root runs builds itself (no build users), no
/// binary cache (offline: the fixture flakes have no inputs, so no flake
/// registry is fetched either), no sandbox (the fixture flakes' builders use this machine's
/// tools; the binfmt tests bring their own `nix.conf` with the sandbox on).
pub const NIX_CONF: &str = "build-users-group =\nsubstituters =\nsandbox = false\n";

/// Why a private current Nix cannot be had here, if it cannot.
pub fn missing() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    if uid != Some("0") {
        return Some("a private Nix store per test needs root (a mount namespace)".into());
    }
    for (prog, pkg) in [("debootstrap", "debootstrap"), ("patchelf", "patchelf")] {
        if !on_path(prog) {
            return Some(format!("`{prog}` is not installed (apt-get install {pkg})"));
        }
    }
    if !Path::new("/nix").is_dir() {
        return Some(
            "/nix is missing: the private stores are mounted over it (apt-get install nix-bin)"
                .into(),
        );
    }
    None
}

/// Whether `program` is on PATH (shared with fakepi.rs).
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Runs a command without input; its output, or an error that shows the
/// command and everything it printed (shared with fakepi.rs).
pub fn run_output(cmd: &mut Command) -> Result<std::process::Output, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

fn run(cmd: &mut Command) -> Result<String, String> {
    run_output(cmd).map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where the cached roots live: `$PI_NIXOS_TEST_CACHE`, else `default`.
pub fn cache_dir(default: &Path) -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| default.to_path_buf())
}

/// Holds the cache's file lock while `f` runs (blocking: another test
/// binary may be making the root).
pub fn locked<T>(cache: &Path, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _g = IN_PROCESS.lock().unwrap_or_else(|e| e.into_inner());
    std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let path = cache.join("nixenv.lock");
    let file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.lock()
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    f()
}

/// The trixie root with Nix 2.26, made on first use and cached.
pub fn root(cache: &Path) -> Result<PathBuf, String> {
    root_of(cache, SUITE)
}

/// The root of another Debian suite (e.g. [`NEWER`], whose Nix is newer
/// than trixie's), made and cached the same way.
pub fn root_of(cache: &Path, suite: &str) -> Result<PathBuf, String> {
    let cache = cache_dir(cache);
    let root = cache.join(root_name(suite));
    if root.join(".ready").exists() {
        return Ok(root);
    }
    locked(&cache, || {
        if root.join(".ready").exists() {
            return Ok(root.clone());
        }
        // What an interrupted run left (any process's: we hold the lock).
        let stale = format!("{}.tmp", root_name(suite));
        for e in std::fs::read_dir(&cache)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(&stale) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let tmp = cache.join(format!("{stale}{}", std::process::id()));
        make_root(&tmp, suite)?;
        let _ = std::fs::remove_dir_all(&root);
        std::fs::rename(&tmp, &root).map_err(|e| e.to_string())?;
        // The patched binary names the root's loader by path: patch it for
        // the root's final place.
        patch(&root)?;
        std::fs::write(root.join(".ready"), "").map_err(|e| e.to_string())?;
        Ok(root.clone())
    })
}

/// Debian's next release (testing): its `nix-bin` is newer than trixie's
/// (2.34 when this was written), for a fake Pi whose Nix differs from the
/// workstation's.
pub const NEWER: &str = "forky";

fn make_root(tmp: &Path, suite: &str) -> Result<(), String> {
    let mirror = std::env::var("FAKEPI_MIRROR").unwrap_or_else(|_| MIRROR.into());
    say(&format!(
        "nixenv: debootstrap of the {suite} root with its Nix (about a minute, once), in {}",
        tmp.display()
    ));
    // In a mount namespace of its own: what it mounts in the root (/proc,
    // /sys) never shows on the machine, and goes away if it is killed.
    let mut debootstrap = Command::new("unshare");
    debootstrap
        .args(["--mount", "--propagation", "private", "debootstrap"])
        .args(["--variant=minbase", &format!("--include={INCLUDE}"), suite])
        .arg(tmp)
        .arg(&mirror);
    // A debootstrap older than the suite has no script for it: the
    // testing suites are made like sid.
    let scripts = Path::new("/usr/share/debootstrap/scripts");
    if !scripts.join(suite).exists() {
        debootstrap.arg(scripts.join("sid"));
    }
    run(&mut debootstrap)?;
    // debootstrap's --include cannot resolve nix-bin's dependencies; apt
    // runs with /proc mounted in a mount namespace of its own.
    run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "set -e; mount -t proc proc \"$1/proc\"; chroot \"$1\" sh -c \
             'apt-get install -y -qq --no-install-recommends $1 >/dev/null && apt-get clean' sh \"$2\"",
        )
        .arg("sh")
        .arg(tmp)
        .arg(APT))?;
    let bin = tmp.join(BIN);
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy(tmp.join("usr/bin/nix"), bin.join("nix"))
        .map_err(|e| format!("cannot copy the root's nix: {e}"))?;
    for l in LINKS {
        std::os::unix::fs::symlink("nix", bin.join(l)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Points the copied `nix` at the root's loader and libraries.
fn patch(root: &Path) -> Result<(), String> {
    let lib = root.join("usr/lib/x86_64-linux-gnu");
    run(Command::new("patchelf")
        .arg("--set-interpreter")
        .arg(lib.join("ld-linux-x86-64.so.2"))
        .arg("--force-rpath")
        .arg("--set-rpath")
        .arg(&lib)
        .arg(root.join(BIN).join("nix")))?;
    Ok(())
}

/// Writes a line to this process's stderr, bypassing the test harness's
/// output capture (which only catches `print!`/`eprint!`).
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Prints `nix (Nix) X.Y.Z` and `place`, once per process and place.
pub fn report_version(place: &str, version: &str) {
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let key = format!("{place}: {}", version.trim());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.contains(&key) {
        say(&format!("nixenv: {key}"));
        seen.push(key);
    }
}

/// A test's private Nix: what its commands need in their environment.
#[derive(Clone, Debug)]
pub struct Vars {
    /// The root with the Nix in use.
    pub root: PathBuf,
    /// The per-test dir: `nix/` (mounted over /nix), `etc/`, `cache/`.
    pub dir: PathBuf,
    /// The variables to set.
    pub set: Vec<(String, OsString)>,
}

impl Vars {
    /// The variables to remove (the machine's Nix settings).
    pub const REMOVE: [&'static str; 3] = ["NIX_REMOTE", "NIX_PATH", "NIX_STATE_DIR"];

    /// The dir of the `nix` in use.
    pub fn bin(&self) -> PathBuf {
        self.root.join(BIN)
    }

    /// Sets them on a command.
    pub fn apply(&self, cmd: &mut Command) {
        for k in Self::REMOVE {
            cmd.env_remove(k);
        }
        for (k, v) in &self.set {
            cmd.env(k, v);
        }
    }

    /// The value of one of them.
    pub fn get(&self, key: &str) -> Option<&OsString> {
        self.set.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Owned by the thread that entered: removes the store when it ends.
struct Private {
    vars: Vars,
    ns: String,
}

impl Drop for Private {
    fn drop(&mut self) {
        let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(ns, _)| ns != &self.ns);
        drop(all);
        let _ = std::fs::remove_dir_all(&self.vars.dir);
    }
}

thread_local! {
    static MINE: RefCell<Option<Private>> = const { RefCell::new(None) };
}
/// Every live private Nix by mount namespace, for threads a test starts.
static ALL: Mutex<Vec<(String, Vars)>> = Mutex::new(Vec::new());

fn mount_ns() -> String {
    std::fs::read_link("/proc/thread-self/ns/mnt")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// The private Nix of this thread (or of the test that started it), if any.
pub fn current() -> Option<Vars> {
    if let Some(v) = MINE.with(|m| m.borrow().as_ref().map(|p| p.vars.clone())) {
        return Some(v);
    }
    let ns = mount_ns();
    let all = ALL.lock().unwrap_or_else(|e| e.into_inner());
    all.iter().find(|(n, _)| *n == ns).map(|(_, v)| v.clone())
}

/// Gives the calling thread its private Nix (once; later calls return the
/// same): see the module's doc. `cache` is where the root is cached unless
/// `$PI_NIXOS_TEST_CACHE` says otherwise.
pub fn enter(cache: &Path) -> Result<Vars, String> {
    if let Some(v) = current() {
        return Ok(v);
    }
    if let Some(why) = missing() {
        return Err(why);
    }
    let root = root(cache)?;
    let dir = private_dir()?;
    let store = dir.join("nix");
    let etc = dir.join("etc");
    for d in [&store, &etc, &dir.join("cache")] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(etc.join("nix.conf"), NIX_CONF).map_err(|e| e.to_string())?;
    std::fs::write(etc.join("user.conf"), "").map_err(|e| e.to_string())?;
    private_mount_ns(&store)?;
    let mut path = OsString::from(root.join(BIN));
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    let vars = Vars {
        set: vec![
            ("PATH".into(), path),
            ("NIX_CONF_DIR".into(), etc.clone().into()),
            ("NIX_USER_CONF_FILES".into(), etc.join("user.conf").into()),
            ("XDG_CACHE_HOME".into(), dir.join("cache").into()),
        ],
        root,
        dir,
    };
    let ns = mount_ns();
    ALL.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((ns.clone(), vars.clone()));
    MINE.with(|m| {
        *m.borrow_mut() = Some(Private {
            vars: vars.clone(),
            ns,
        })
    });
    let mut version = Command::new("nix");
    vars.apply(&mut version);
    let v = run(version.arg("--version"))?;
    report_version("workstation (tests' private store)", &v);
    Ok(vars)
}

fn private_dir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for i in 0.. {
        let p = base.join(format!("nixenv-{}-{i}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    unreachable!()
}

const CLONE_NEWNS: i32 = 0x0002_0000;
const MS_BIND: u64 = 4096;
const MS_REC: u64 = 16384;
const MS_PRIVATE: u64 = 1 << 18;

unsafe extern "C" {
    fn unshare(flags: i32) -> i32;
    fn mount(
        source: *const std::ffi::c_char,
        target: *const std::ffi::c_char,
        fstype: *const std::ffi::c_char,
        flags: u64,
        data: *const std::ffi::c_void,
    ) -> i32;
}

/// A new mount namespace for this thread (and what it starts), with
/// `store` over `/nix`; the machine's mounts are not changed.
fn private_mount_ns(store: &Path) -> Result<(), String> {
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let (root, nix, src) = (c(Path::new("/")), c(Path::new("/nix")), c(store));
    // SAFETY: plain syscalls on valid NUL-terminated strings.
    unsafe {
        if unshare(CLONE_NEWNS) != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNS): {}",
                std::io::Error::last_os_error()
            ));
        }
        let none = std::ptr::null();
        if mount(none, root.as_ptr(), none, MS_REC | MS_PRIVATE, none.cast()) != 0 {
            return Err(format!(
                "making / private: {}",
                std::io::Error::last_os_error()
            ));
        }
        if mount(src.as_ptr(), nix.as_ptr(), none, MS_BIND, none.cast()) != 0 {
            return Err(format!(
                "bind-mounting {} over /nix: {}",
                store.display(),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
