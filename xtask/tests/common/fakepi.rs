//! Fake Pis: real systemd, real sshd, real Nix on this machine.
//!
//! The Debian 13 root of `nixenv.rs` (debootstrap, minbase + systemd +
//! openssh-server + dbus, then nix-bin 2.26), made once and cached under
//! the cargo target dir, is their system too. Each fake Pi boots it with `systemd-nspawn --boot --volatile=overlay` (the
//! root is shared read-only, changes go to a tmpfs), with its own `/nix`
//! bind-mounted from a per-Pi folder, and its own sshd on a loopback port
//! with a generated host key (the container shares the host's network).
//! `/etc/NIXOS` marks it NixOS; a boot unit activates the system profile
//! like NixOS does. The fleet around it is a normal temp-dir repository:
//! `hosts/fleet.toml` (address 127.0.0.1 and the port), keys, and a fixture
//! flake whose toplevel is a small real derivation with `nixos-version`, a
//! `system` file and a `bin/switch-to-configuration` that records its
//! activations and can fail, cut SSH, or leave a failed unit.
//!
//! Everything started is stopped by `Drop`; nothing touches the machine's
//! /etc or ~/.ssh (the xtask gets its own ssh_config through
//! `PI_NIXOS_SSH_CONFIG`). Only std is used, so `cargo xtask bench deploy`
//! includes this file too.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nixenv;
use nixenv::{on_path, run_output as run};

/// Why fake Pis cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    if let Some(why) = nixenv::missing() {
        return Some(why);
    }
    for (prog, pkg) in [
        ("systemd-nspawn", "systemd-container"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
    ] {
        if !on_path(prog) {
            return Some(format!("`{prog}` is not installed (apt-get install {pkg})"));
        }
    }
    None
}

/// The fake Pis' shared root: the tests' trixie root (`nixenv.rs`, with
/// systemd, sshd and Nix 2.26), made NixOS-like once, under the same lock.
pub fn base(cache: &Path) -> Result<PathBuf, String> {
    base_of(cache, nixenv::SUITE)
}

/// A fake Pi root of another Debian suite (another Nix version), for
/// [`Fleet::boot_from`].
pub fn base_of(cache: &Path, suite: &str) -> Result<PathBuf, String> {
    let root = nixenv::root_of(cache, suite)?;
    if root.join(".fakepi-ready").exists() {
        return Ok(root);
    }
    nixenv::locked(&nixenv::cache_dir(cache), || {
        if !root.join(".fakepi-ready").exists() {
            fakepi_layer(&root)?;
        }
        Ok(root.clone())
    })
}

fn fakepi_layer(root: &Path) -> Result<(), String> {
    let w = |rel: &str, text: &str| -> Result<(), String> {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| e.to_string())?;
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    for e in std::fs::read_dir(root.join("etc/ssh")).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        if e.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(e.path()).map_err(|e| e.to_string())?;
        }
    }
    w("etc/NIXOS", "")?;
    w(
        "etc/nix/nix.conf",
        "sandbox = false\nsubstituters =\nbuild-users-group =\n",
    )?;
    w(
        "usr/local/sbin/fakepi-boot",
        "#!/bin/sh\n# What NixOS does at boot: activate the system profile's generation.\np=/nix/var/nix/profiles/system\n[ -e \"$p\" ] && ln -sfn \"$(readlink -f \"$p\")\" /run/current-system\nexit 0\n",
    )?;
    run(Command::new("chmod")
        .arg("+x")
        .arg(root.join("usr/local/sbin/fakepi-boot")))?;
    w(
        "etc/systemd/system/fakepi-boot.service",
        "[Unit]\nDescription=Activate the system profile (as NixOS does at boot)\nBefore=ssh.service\n\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/fakepi-boot\n\n[Install]\nWantedBy=multi-user.target\n",
    )?;
    std::fs::create_dir_all(root.join("etc/systemd/system/multi-user.target.wants"))
        .map_err(|e| e.to_string())?;
    let _ = std::os::unix::fs::symlink(
        "/etc/systemd/system/fakepi-boot.service",
        root.join("etc/systemd/system/multi-user.target.wants/fakepi-boot.service"),
    );
    // The journal's receiver and upload run only where a test starts them
    // (the fake Pis share this machine's network: no listener of its own).
    for link in [
        "etc/systemd/system/sockets.target.wants/systemd-journal-remote.socket",
        "etc/systemd/system/multi-user.target.wants/systemd-journal-upload.service",
        "etc/systemd/system/multi-user.target.wants/systemd-journal-remote.service",
    ] {
        let _ = std::fs::remove_file(root.join(link));
    }
    std::fs::create_dir_all(root.join("nix")).map_err(|e| e.to_string())?;
    w(".fakepi-ready", "")
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A loopback port that accepts TCP connections and never says a word:
/// a host that hangs, which only the connect timeout ends.
pub struct Silent {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    pub fn new() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").expect("cannot listen");
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((c, _)) = l.accept() {
                    held.push(c);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Silent {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A temp dir of our own, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let base = std::env::temp_dir();
        for i in 0.. {
            let p = base.join(format!("{prefix}-{}-{i}", std::process::id()));
            if std::fs::create_dir(&p).is_ok() {
                return TempDir(p);
            }
        }
        unreachable!()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a fake Pi's configuration behaves (its hosts/<name>/default.nix).
#[derive(Clone, Debug)]
pub struct Spec {
    /// Any text: a new version is a new system.
    pub version: String,
    /// ok | fail (switch-to-configuration exits 1) | cut (stops sshd) |
    /// failunit (leaves a failed unit behind) | cutfail (cuts every SSH
    /// connection, then fails) | slow (takes 4 s) | hang (never ends)
    pub mode: String,
    /// services.openssh.enable
    pub sshd: bool,
    /// users.users.root.openssh.authorizedKeys.keys (None: the admin keys)
    pub keys: Option<Vec<String>>,
    /// The toplevel's system (None: x86_64-linux, this machine)
    pub system: Option<String>,
    /// A firmware set, `firmware/<name>/` in the fixture repository: the
    /// system then links it as `pi-firmware` with `pi-firmware-sync`
    /// (modules/hardware/firmware-sync.sh, which the repository must hold,
    /// on the Pi's `/var/lib/fakepi/firmware.img`), and its
    /// switch-to-configuration syncs it for `switch` and `boot`, as the
    /// NixOS module's boot loader installer does.
    pub firmware: Option<String>,
}

impl Spec {
    pub fn version(v: &str) -> Spec {
        Spec {
            version: v.into(),
            mode: "ok".into(),
            sshd: true,
            keys: None,
            system: None,
            firmware: None,
        }
    }

    pub fn mode(mut self, m: &str) -> Spec {
        self.mode = m.into();
        self
    }

    pub fn firmware(mut self, name: &str) -> Spec {
        self.firmware = Some(name.into());
        self
    }

    fn nix(&self) -> String {
        let s = |x: &str| format!("\"{}\"", x.replace('\\', "\\\\").replace('"', "\\\""));
        let keys = match &self.keys {
            None => "null".to_string(),
            Some(k) => format!(
                "[ {} ]",
                k.iter().map(|k| s(k)).collect::<Vec<_>>().join(" ")
            ),
        };
        format!(
            "# fake Pi settings, read by the fixture flake\n{{\n  version = {};\n  mode = {};\n  sshd = {};\n  keys = {keys};\n  system = {};\n  firmware = {};\n}}\n",
            s(&self.version),
            s(&self.mode),
            self.sshd,
            self.system
                .as_deref()
                .map(s)
                .unwrap_or_else(|| "null".into()),
            self.firmware
                .as_deref()
                .map(s)
                .unwrap_or_else(|| "null".into())
        )
    }
}

/// The fixture flake: no inputs, hosts from hosts/fleet.toml.
pub const FLAKE: &str = r##"{
  description = "fake Pi fleet for the deploy tests";
  outputs =
    { self }:
    let
      fleet = builtins.fromTOML (builtins.readFile ./hosts/fleet.toml);
      lines = builtins.filter builtins.isString (builtins.split "\n" (builtins.readFile ./keys/authorized_keys));
      adminKeys = builtins.filter (l: l != "" && builtins.substring 0 1 l != "#") lines;
      mkHost =
        h:
        let
          s = import (./hosts + "/${h.name}/default.nix");
          system = if s.system == null then "x86_64-linux" else s.system;
          fw = s.firmware or null;
          etc = derivation {
            name = "etc-${h.name}-${s.version}";
            inherit system;
            builder = "/bin/sh";
            args = [ "-c" "PATH=/usr/bin:/bin; mkdir -p $out; echo $host > $out/hostname" ];
            host = h.name;
          };
          toplevel = derivation {
            name = "nixos-system-${h.name}-${s.version}";
            inherit system etc;
            inherit (s) version mode;
            host = h.name;
            firmware = if fw == null then "" else builtins.path { path = ./firmware + "/${fw}"; name = "pi-firmware-${fw}"; };
            sync = if fw == null then "" else builtins.path { path = ./modules/hardware/firmware-sync.sh; name = "firmware-sync.sh"; };
            builder = "/bin/sh";
            args = [ "-c" ''
              set -e
              PATH=/usr/bin:/bin
              mkdir -p $out/bin
              echo "26.05.fake-$version" > $out/nixos-version
              echo "$system" > $out/system
              ln -s $etc $out/etc
              if [ -n "$firmware" ]; then
                ln -s $firmware $out/pi-firmware
                printf '#!/bin/sh\nexec bash %s --device /var/lib/fakepi/firmware.img "$@"\n' $sync > $out/pi-firmware-sync
                chmod +x $out/pi-firmware-sync
              fi
              cat > $out/bin/switch-to-configuration <<EOF
              #!/bin/sh
              # fake switch-to-configuration: $host, version $version, mode $mode
              mkdir -p /var/lib/fakepi
              echo "\$1 $out" >> /var/lib/fakepi/activations
              # The boot loader's installer, with the firmware partition.
              if [ -e $out/pi-firmware-sync ] && { [ "\$1" = switch ] || [ "\$1" = boot ]; }; then
                $out/pi-firmware-sync $out/pi-firmware || exit 1
              fi
              [ "\$1" = boot ] && exit 0
              # Without systemd sshd runs alone; stopping it ends only the listener.
              start_sshd() {
                if [ -d /run/systemd/system ]; then systemctl start ssh.service
                elif ! kill -0 "\$(cat /run/sshd.pid 2>/dev/null)" 2>/dev/null; then /usr/sbin/sshd; fi
              }
              stop_sshd() {
                if [ -d /run/systemd/system ]; then systemctl stop ssh.service
                else kill "\$(cat /run/sshd.pid)"; fi
              }
              ln -sfn $out /run/current-system
              case "$mode" in
                fail) echo "fake activation failure" >&2; exit 1 ;;
                cutfail) for p in /proc/[0-9]*; do case "\$(cat \$p/comm 2>/dev/null)" in sshd*) kill -9 \$(basename \$p) 2>/dev/null ;; esac; done; sleep 1; echo "fake activation failure after a cut" >&2; exit 1 ;;
                slow) sleep 4; start_sshd; exit 0 ;;
                hang) sleep 100000 ;;
                cut) stop_sshd; exit 0 ;;
                failunit) start_sshd; systemd-run --quiet --wait --unit=fakepi-broken /bin/false; exit 0 ;;
                *) start_sshd; exit 0 ;;
              esac
              EOF
              chmod +x $out/bin/switch-to-configuration
            '' ];
          };
        in
        {
          config = {
            services.openssh.enable = s.sshd;
            users.users.root.openssh.authorizedKeys.keys = if s.keys == null then adminKeys else s.keys;
            system.build.toplevel = toplevel;
          };
        };
    in
    {
      nixosConfigurations = builtins.listToAttrs (
        map (h: {
          inherit (h) name;
          value = mkHost h;
        }) fleet.host
      );
    };
}
"##;

/// One fake Pi.
pub struct Pi {
    pub name: String,
    pub port: u16,
    /// Its root, when not the fleet's (another Nix version).
    pub root: Option<PathBuf>,
    /// Booted without systemd: sshd alone under a stub init.
    pub plain: bool,
    dir: PathBuf,
    child: Option<Child>,
}

impl Pi {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

/// A fleet repository in a temp dir with fake Pis behind it.
pub struct Fleet {
    tmp: TempDir,
    base: PathBuf,
    pub pis: Vec<Pi>,
    /// The workstation's private Nix (this thread's, see `nixenv.rs`).
    pub nix: Option<nixenv::Vars>,
}

impl Fleet {
    /// A repository listing `names` (each on its own free port, 127.0.0.1),
    /// every host at `Spec::version("0")`. Nothing boots yet. The calling
    /// thread gets its private Nix (`nixenv::enter`) when `base` is the
    /// root from [`base`] (else no Pi can boot, and only the thread's own
    /// private Nix, if any, is used).
    pub fn new(base: &Path, names: &[&str]) -> Fleet {
        let nix = nixenv::current().or_else(|| {
            let cache = base
                .parent()
                .filter(|_| base.join(".fakepi-ready").exists())?;
            Some(nixenv::enter(cache).unwrap_or_else(|e| panic!("no private Nix: {e}")))
        });
        let tmp = TempDir::new("fakepi");
        let repo = tmp.0.join("repo");
        let work = tmp.0.join("work");
        std::fs::create_dir_all(repo.join("keys")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let key = work.join("id_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "deploy-test", "-f"])
            .arg(&key))
        .unwrap();
        let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        std::fs::write(repo.join("keys/authorized_keys"), &pubkey).unwrap();
        std::fs::write(repo.join("flake.nix"), FLAKE).unwrap();
        std::fs::write(
            work.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n",
                key.display(),
                work.join("known_hosts").display()
            ),
        )
        .unwrap();
        std::fs::write(work.join("known_hosts"), "").unwrap();
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(work.join("run"))
                .unwrap();
        }
        let mut fleet = Fleet {
            tmp,
            base: base.to_path_buf(),
            pis: Vec::new(),
            nix,
        };
        for n in names {
            let port = free_port();
            fleet.pis.push(Pi {
                name: n.to_string(),
                port,
                root: None,
                plain: false,
                dir: fleet.tmp.0.join("pis").join(n),
                child: None,
            });
            fleet.set(n, &Spec::version("0"));
        }
        fleet.write_inventory();
        fleet
    }

    pub fn repo(&self) -> PathBuf {
        self.tmp.0.join("repo")
    }

    pub fn work(&self) -> PathBuf {
        self.tmp.0.join("work")
    }

    /// Environment for the xtask: our ssh_config, a runtime dir of the
    /// fleet's own (the SSH masters kept for the next command live there,
    /// ended with the fleet), the private Nix (no binary caches: offline).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "PI_NIXOS_SSH_CONFIG".to_string(),
                self.work().join("ssh_config").display().to_string(),
            ),
            (
                "XDG_RUNTIME_DIR".to_string(),
                self.work().join("run").display().to_string(),
            ),
        ];
        for (k, v) in self.nix.iter().flat_map(|n| &n.set) {
            env.push((k.clone(), v.to_string_lossy().into_owned()));
        }
        env
    }

    /// `nix` (or another Nix command) with the workstation's private Nix:
    /// tests run Nix here through it (or `common::command`), never plain.
    pub fn nix_cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if let Some(n) = &self.nix {
            n.apply(&mut cmd);
        }
        cmd
    }

    fn write_inventory(&self) {
        let mut text = String::from("# fake Pis\n");
        for p in &self.pis {
            text += &format!(
                "\n[[host]]\nname = \"{}\"\nmodel = \"pi4\"\naddress = \"127.0.0.1\"\nport = {}\ntags = [\"fake\"]\n",
                p.name, p.port
            );
        }
        std::fs::write(self.repo().join("hosts/fleet.toml"), text).unwrap();
    }

    /// Points a host somewhere else in the inventory (e.g. a [`Silent`] port).
    pub fn set_endpoint(&self, name: &str, address: &str, port: u16) {
        let text = std::fs::read_to_string(self.repo().join("hosts/fleet.toml")).unwrap();
        let old = format!(
            "name = \"{name}\"\nmodel = \"pi4\"\naddress = \"127.0.0.1\"\nport = {}",
            self.pi(name).port
        );
        assert!(text.contains(&old), "{name} was moved already");
        let text = text.replace(
            &old,
            &format!("name = \"{name}\"\nmodel = \"pi4\"\naddress = \"{address}\"\nport = {port}"),
        );
        std::fs::write(self.repo().join("hosts/fleet.toml"), text).unwrap();
    }

    /// Makes `alias` an SSH name for a fake Pi (e.g. to use it as a build host).
    pub fn ssh_alias(&self, name: &str, alias: &str) {
        let path = self.work().join("ssh_config");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text += &format!(
            "\nHost {alias}\n  HostName 127.0.0.1\n  Port {}\n",
            self.pi(name).port
        );
        std::fs::write(path, text).unwrap();
    }

    /// Writes a host's settings (its configuration changes accordingly).
    pub fn set(&self, name: &str, spec: &Spec) {
        let dir = self.repo().join("hosts").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("default.nix"), spec.nix()).unwrap();
    }

    pub fn pi(&self, name: &str) -> &Pi {
        self.pis
            .iter()
            .find(|p| p.name == name)
            .expect("no such fake Pi")
    }

    /// Builds a host's current system here (what a deploy would install).
    pub fn build(&self, name: &str) -> String {
        let out = run(self
            .nix_cmd("nix")
            .args(["--extra-experimental-features", "nix-command flakes"])
            .args(["build", "--no-link", "--json"])
            .arg(format!(
                "{}#nixosConfigurations.{name}.config.system.build.toplevel",
                self.repo().display()
            )))
        .unwrap();
        let json = String::from_utf8_lossy(&out.stdout);
        let at = json.find("\"out\":\"").expect("no out path") + 7;
        json[at..].split('"').next().unwrap().to_string()
    }

    /// Boots every fake Pi (in parallel) and installs each one's current
    /// system as generation 1, the way a freshly flashed Pi starts.
    pub fn boot_all(&mut self) {
        let names: Vec<String> = self.pis.iter().map(|p| p.name.clone()).collect();
        for n in &names {
            self.start(n);
        }
        for n in &names {
            self.wait_ssh(n);
        }
        for n in &names {
            self.install(n);
        }
    }

    /// Starts a fake Pi's container (not waiting for it).
    pub fn start(&mut self, name: &str) {
        let i = self.pis.iter().position(|p| p.name == name).unwrap();
        let base = self.pis[i]
            .root
            .clone()
            .unwrap_or_else(|| self.base.clone());
        let (dir, port) = (self.pis[i].dir.clone(), self.pis[i].port);
        let ssh_dir = dir.join("ssh");
        std::fs::create_dir_all(dir.join("nix")).unwrap();
        std::fs::write(dir.join("hostname"), format!("{}\n", self.pis[i].name)).unwrap();
        if !ssh_dir.join("sshd.conf").exists() {
            std::fs::create_dir_all(&ssh_dir).unwrap();
            // A Pi given its key ([`Fleet::use_host_key`]) is not in known_hosts.
            let own = !ssh_dir.join("host_key").exists();
            if own {
                run(Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
                    .arg(ssh_dir.join("host_key")))
                .unwrap();
            }
            std::fs::copy(
                self.work().join("id_ed25519.pub"),
                ssh_dir.join("authorized_keys"),
            )
            .unwrap();
            std::fs::write(
                ssh_dir.join("sshd.conf"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey /etc/ssh/fakepi/host_key\nAuthorizedKeysFile /etc/ssh/fakepi/authorized_keys\nPermitRootLogin prohibit-password\n"
                ),
            )
            .unwrap();
            let pubkey = std::fs::read_to_string(ssh_dir.join("host_key.pub")).unwrap();
            let pubkey = if own { pubkey } else { String::new() };
            let mut kh = std::fs::read_to_string(self.work().join("known_hosts")).unwrap();
            let words: Vec<&str> = pubkey.split_whitespace().collect();
            if own {
                kh += &format!("[127.0.0.1]:{port} {} {}\n", words[0], words[1]);
            }
            std::fs::write(self.work().join("known_hosts"), kh).unwrap();
        }
        let console = std::fs::File::create(dir.join("console.log")).unwrap();
        let mut nspawn = Command::new("systemd-nspawn");
        if self.pis[i].plain {
            nspawn.arg("--as-pid2");
        } else {
            nspawn.arg("--boot");
        }
        if self.pis[i].root.is_some() {
            // A newer systemd (258 on) refuses the legacy cgroup hierarchy
            // that this nspawn would give it on a hybrid host.
            nspawn.env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1");
        }
        nspawn
            .arg("--directory")
            .arg(&base)
            .args([
                "--volatile=overlay",
                "--register=no",
                "--keep-unit",
                "--kill-signal=SIGKILL",
                "--console=passive",
            ])
            .arg(format!("--machine=fakepi-{port}"))
            .arg(format!("--bind={}:/nix", dir.join("nix").display()))
            // Its inventory name is its host name (journald's `_HOSTNAME`),
            // as on a NixOS Pi: systemd sets it from /etc/hostname at boot.
            .arg(format!(
                "--bind-ro={}:/etc/hostname",
                dir.join("hostname").display()
            ))
            .arg(format!("--bind-ro={}:/etc/ssh/fakepi", ssh_dir.display()))
            .arg(format!(
                "--bind-ro={}:/etc/ssh/sshd_config.d/fakepi.conf",
                ssh_dir.join("sshd.conf").display()
            ));
        if self.pis[i].plain {
            // What the boot unit and ssh.service do, without systemd.
            nspawn.args([
                "/bin/sh",
                "-c",
                "/usr/local/sbin/fakepi-boot; mkdir -p /run/sshd; /usr/sbin/sshd; exec sleep infinity",
            ]);
        }
        let child = nspawn
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("cannot start systemd-nspawn");
        self.pis[i].child = Some(child);
    }

    /// Makes a fake Pi's sshd use `key` (a private host key file) from its
    /// first start, as a card written by `sd` does; the workstation's
    /// known_hosts is not told about it (only the harness's own ssh is).
    pub fn use_host_key(&self, name: &str, key: &Path) {
        let ssh_dir = self.pi(name).dir.join("ssh");
        std::fs::create_dir_all(&ssh_dir).unwrap();
        std::fs::copy(key, ssh_dir.join("host_key")).unwrap();
        let public = run(Command::new("ssh-keygen").arg("-yf").arg(key)).unwrap();
        let words = String::from_utf8_lossy(&public.stdout).to_string();
        let words: Vec<&str> = words.split_whitespace().collect();
        let file = self.work().join("harness_known_hosts");
        let mut kh = std::fs::read_to_string(&file).unwrap_or_default();
        kh += &format!(
            "[127.0.0.1]:{} {} {}\n",
            self.pi(name).port,
            words[0],
            words[1]
        );
        std::fs::write(&file, kh).unwrap();
        std::fs::write(ssh_dir.join("host_key.pub"), public.stdout).unwrap();
    }

    /// Makes a fake Pi boot another root (from [`base_of`]: another Debian
    /// release, so another Nix version) before it starts.
    pub fn boot_from(&mut self, name: &str, root: &Path) {
        let i = self.pis.iter().position(|p| p.name == name).unwrap();
        self.pis[i].root = Some(root.to_path_buf());
    }

    /// Makes a fake Pi boot without systemd (before it starts): sshd alone,
    /// no /run/systemd/system, as in a plain mount namespace.
    pub fn without_systemd(&mut self, name: &str) {
        let i = self.pis.iter().position(|p| p.name == name).unwrap();
        self.pis[i].plain = true;
    }

    /// Waits until the Pi's sshd answers (at most 60 s).
    pub fn wait_ssh(&mut self, name: &str) {
        let start = Instant::now();
        loop {
            let ready =
                "[ -d /run/systemd/system ] && systemctl is-system-running --wait >/dev/null; true";
            if self.ssh_try(name, ready).is_ok() {
                let v = self.ssh(name, "nix --version");
                nixenv::report_version("fake Pi", &v);
                return;
            }
            let i = self.pis.iter().position(|p| p.name == name).unwrap();
            if let Some(c) = self.pis[i].child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                let log = std::fs::read_to_string(self.pis[i].dir.join("console.log"))
                    .unwrap_or_default();
                panic!("fake Pi {name} exited ({st}) while booting:\n{log}");
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("fake Pi {name} did not answer SSH within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Installs the host's current system as a new generation and
    /// activates it (what the SD image does for a new Pi).
    pub fn install(&self, name: &str) {
        let path = self.build(name);
        let p = self.pi(name);
        run(self
            .nix_cmd("nix")
            .args(["--extra-experimental-features", "nix-command flakes"])
            .env("NIX_SSHOPTS", self.ssh_opts(p.port).join(" "))
            .args(["copy", "--to", "ssh://root@127.0.0.1"])
            .arg(&path))
        .unwrap();
        self.ssh(
            name,
            &format!(
                "nix-env -p /nix/var/nix/profiles/system --set {path} && {path}/bin/switch-to-configuration switch"
            ),
        );
    }

    fn ssh_opts(&self, port: u16) -> Vec<String> {
        vec![
            "-F".into(),
            self.work().join("ssh_config").display().to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=2".into(),
            // The harness also knows the keys given with `use_host_key`.
            "-o".into(),
            format!(
                "GlobalKnownHostsFile={}",
                self.work().join("harness_known_hosts").display()
            ),
            "-p".into(),
            port.to_string(),
        ]
    }

    /// Runs a shell command on a fake Pi as root.
    pub fn ssh_try(&self, name: &str, script: &str) -> Result<String, String> {
        let p = self.pi(name);
        let out = run(Command::new("ssh")
            .args(self.ssh_opts(p.port))
            .arg("root@127.0.0.1")
            .arg(script))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn ssh(&self, name: &str, script: &str) -> String {
        self.ssh_try(name, script)
            .unwrap_or_else(|e| panic!("on fake Pi {name}: {e}"))
    }

    /// The generation the system profile points at.
    pub fn generation(&self, name: &str) -> u64 {
        let link = self.ssh(name, "readlink /nix/var/nix/profiles/system");
        link.trim_start_matches("system-")
            .trim_end_matches("-link")
            .parse()
            .unwrap_or_else(|_| panic!("bad profile link {link}"))
    }

    /// What /run/current-system points at.
    pub fn current(&self, name: &str) -> String {
        self.ssh(name, "readlink -f /run/current-system")
    }

    /// Every `switch-to-configuration` call on the Pi: (action, system).
    pub fn activations(&self, name: &str) -> Vec<(String, String)> {
        self.ssh(name, "cat /var/lib/fakepi/activations 2>/dev/null || true")
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, p)| (a.to_string(), p.to_string()))
            .collect()
    }

    /// Stops a fake Pi (its /nix stays, so it can boot again).
    pub fn stop(&mut self, name: &str) {
        let i = self.pis.iter().position(|p| p.name == name).unwrap();
        if let Some(mut c) = self.pis[i].child.take() {
            stop_child(&mut c);
        }
    }
}

fn stop_child(c: &mut Child) {
    // SIGTERM: nspawn sends --kill-signal (SIGKILL) to the container's init,
    // which takes every process of the container with it.
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Ends the SSH masters the xtask kept open for the fleet (in its runtime
/// dir, see [`Fleet::env`]).
fn close_masters(run: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let dir = run.join("pi-nixos-ssh");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_socket()) {
            let _ = Command::new("ssh")
                .arg("-S")
                .arg(e.path())
                .args(["-O", "exit", "fakepi"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::env::var_os("FAKEPI_KEEP").is_some() {
            eprintln!(
                "fakepi: FAKEPI_KEEP is set: the fake Pis stay up; the fleet is in {}",
                self.tmp.0.display()
            );
            std::mem::forget(std::mem::replace(&mut self.tmp, TempDir(PathBuf::new())));
            for p in &mut self.pis {
                std::mem::forget(p.child.take());
            }
            return;
        }
        close_masters(&self.work().join("run"));
        for p in &mut self.pis {
            if let Some(mut c) = p.child.take() {
                stop_child(&mut c);
            }
        }
    }
}
