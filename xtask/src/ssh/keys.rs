//! Keys: the host key asked about on first contact, the known_hosts file
//! ssh reads, the key a connection authenticated with, fingerprints.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::{ASK, Ssh, Target};

impl Ssh {
    /// First contact: show the host's key fingerprint and ask whether to trust it.
    pub(super) fn ask_host_key(&self, t: &Target) -> Result<()> {
        let _guard = ASK.lock().unwrap_or_else(|e| e.into_inner());
        let scan = Command::new("ssh-keyscan")
            .args(["-T", &self.connect_timeout.to_string(), "-p"])
            .arg(t.port.to_string())
            .arg(&t.address)
            .stdin(Stdio::null())
            .output()
            .context("cannot run ssh-keyscan (apt-get install openssh-client)")?;
        let keys = String::from_utf8_lossy(&scan.stdout).to_string();
        if keys.trim().is_empty() {
            bail!(
                "{}: the host key is unknown and ssh-keyscan got none from {}:{}",
                t.name,
                t.address,
                t.port
            );
        }
        let tmp = self.dir.join(format!("{}.scan", t.name));
        std::fs::write(&tmp, &keys)?;
        let fp = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&tmp)
            .output()
            .context("cannot run ssh-keygen (apt-get install openssh-client)")?;
        if !fp.status.success() {
            bail!(
                "{}: `ssh-keygen -lf` failed on the keys ssh-keyscan got: {}",
                t.name,
                String::from_utf8_lossy(&fp.stderr).trim()
            );
        }
        let fingerprints = String::from_utf8_lossy(&fp.stdout).to_string();
        let file = self.known_hosts_file(t)?;
        eprintln!(
            "{}: first contact with {} — its host key is not in {}:\n{}",
            t.name,
            t.known_hosts_name(),
            file.display(),
            fingerprints.trim_end()
        );
        eprint!(
            "compare with the key the Pi shows (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on it); trust it? [y/N] "
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let stdin = std::io::stdin();
        let read = stdin.lock().read_line(&mut answer).unwrap_or(0);
        if read == 0 || !matches!(answer.trim(), "y" | "Y" | "yes") {
            let how = if std::io::stdin().is_terminal() {
                ""
            } else {
                " (no answer: stdin is not a terminal)"
            };
            bail!(
                "{}: host key not trusted{how}; run the command in a terminal and answer y after checking the fingerprint, or add the key to {} yourself",
                t.name,
                file.display()
            );
        }
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .with_context(|| format!("cannot write {}", file.display()))?;
        for line in keys
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            writeln!(f, "{line}")?;
        }
        eprintln!("{}: host key added to {}", t.name, file.display());
        Ok(())
    }

    /// The known_hosts file ssh reads for `t` (first `UserKnownHostsFile`).
    pub(super) fn known_hosts_file(&self, t: &Target) -> Result<PathBuf> {
        let mut c = Command::new("ssh");
        if let Some(cfg) = &self.config {
            c.arg("-F").arg(cfg);
        }
        let out = c
            .arg("-G")
            .args(["-p", &t.port.to_string()])
            .arg(t.destination())
            .output()
            .context("cannot run ssh -G")?;
        if !out.status.success() {
            bail!(
                "`ssh -G` failed for {}: {}",
                t.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let file = text
            .lines()
            .find_map(|l| l.strip_prefix("userknownhostsfile "))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("~/.ssh/known_hosts")
            .to_string();
        Ok(match file.strip_prefix("~/") {
            Some(rest) => {
                PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(rest)
            }
            None => PathBuf::from(file),
        })
    }
}

/// The fingerprint in `Server accepts key: <name> <TYPE> SHA256:<fp> …`.
pub fn used_key(log: &str) -> Option<String> {
    log.lines()
        .filter(|l| l.contains("Server accepts key:"))
        .flat_map(|l| l.split_whitespace())
        .find(|w| w.starts_with("SHA256:"))
        .map(String::from)
}

/// Fingerprints (`SHA256:…`) of authorized_keys lines, by ssh-keygen.
pub fn fingerprints(keys: &[String], scratch: &Path) -> Result<Vec<String>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::write(scratch, keys.join("\n") + "\n")?;
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(scratch)
        .output()
        .context("cannot run ssh-keygen (apt-get install openssh-client)")?;
    let _ = std::fs::remove_file(scratch);
    let found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|w| w.starts_with("SHA256:"))
        .map(String::from)
        .collect();
    if !out.status.success() || found.len() != keys.len() {
        bail!(
            "`ssh-keygen -lf {}` read {} of {} authorized key(s) ({}); the lock-out guard cannot check them",
            scratch.display(),
            found.len(),
            keys.len(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_used_key() {
        let log = "debug1: Offering public key: /k ED25519 SHA256:aaa explicit\ndebug1: Server accepts key: /k ED25519 SHA256:bbb explicit\n";
        assert_eq!(used_key(log).as_deref(), Some("SHA256:bbb"));
        assert_eq!(used_key("debug1: nothing"), None);
    }
}
