//! A real Docker engine for the tests: Debian's `dockerd`, started by the
//! test with all its state in a temp dir (`--data-root`, `--exec-root`,
//! its own socket; no iptables, no docker0 bridge), stopped on drop; and
//! Compose v2 from Debian 13's `docker-compose` package, whose plugin binary
//! is extracted once from the .deb that apt downloads inside the cached
//! trixie root (see nixenv.rs) into the test cache, never into /usr.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::nixenv;

/// `None` when dockerd is installed, else the reason.
pub fn need_dockerd() -> Option<String> {
    super::need_program("dockerd", "docker.io").or_else(super::need_root)
}

/// Debian 13's Compose v2 plugin binary, cached in the test cache.
pub fn compose_binary(cache: &Path) -> Result<PathBuf, String> {
    let cache = nixenv::cache_dir(cache);
    let dir = cache.join("compose-plugin");
    let bin = dir.join("docker-compose");
    if bin.exists() {
        return Ok(bin);
    }
    let root = nixenv::root(&cache)?;
    nixenv::locked(&cache, || {
        if bin.exists() {
            return Ok(bin.clone());
        }
        nixenv::say(
            "docker: Debian 13's docker-compose .deb downloaded with the trixie root's apt (once)",
        );
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("set -e; mount -t proc proc \"$1/proc\"; chroot \"$1\" sh -c 'cd /tmp && rm -f docker-compose_*.deb && apt-get download -qq docker-compose'")
            .arg("sh")
            .arg(&root)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "apt-get download docker-compose failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let deb = std::fs::read_dir(root.join("tmp"))
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("docker-compose_"))
            })
            .ok_or("no docker-compose .deb was downloaded")?;
        let tmp = cache.join(format!("compose-plugin.tmp{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let st = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&tmp)
            .status()
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&deb);
        if !st.success() {
            return Err("dpkg-deb -x failed".into());
        }
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::rename(
            tmp.join("usr/libexec/docker/cli-plugins/docker-compose"),
            &bin,
        )
        .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(bin.clone())
    })
}

pub struct Dockerd {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        let dir = tempfile::Builder::new()
            .prefix("dk")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        eprintln!(
            "$ dockerd --data-root {0}/data --exec-root {0}/exec …",
            d.display()
        );
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--bridge=none",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        let engine = Dockerd { child, dir };
        let start = Instant::now();
        loop {
            let ok = engine
                .docker()
                .args(["version", "--format", "{{.Server.Version}}"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "dockerd did not answer within 60 s: {}",
                std::fs::read_to_string(engine.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        engine
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// Debian's docker CLI on this engine.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("/usr/bin/docker");
        c.env("DOCKER_HOST", self.host());
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first (their shims outlive a killed dockerd), then the engine.
        if let Ok(out) = self.docker().args(["ps", "-aq"]).output() {
            let ids = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>();
            if !ids.is_empty() {
                let _ = self.docker().args(["rm", "-f"]).args(&ids).output();
            }
        }
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // dockerd leaves its data root mounted on itself (in the test's
        // mount namespace): detach it, then remove the folder.
        for sub in ["data", "exec"] {
            if let Ok(c) =
                std::ffi::CString::new(self.dir.path().join(sub).as_os_str().as_encoded_bytes())
            {
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        if let Err(e) = std::fs::remove_dir_all(self.dir.path()) {
            eprintln!("dockerd: cannot remove {}: {e}", self.dir.path().display());
        }
    }
}
