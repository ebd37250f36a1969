//! Why an SSH connection failed, and what to tell the user about it.

use std::path::Path;

use super::{Target, quote};

/// Why a connection failed.
#[derive(Debug, PartialEq)]
pub enum Failure {
    UnknownHostKey,
    ChangedHostKey,
    /// The host answered, but nothing listens on the SSH port.
    Refused,
    Unreachable,
    Denied,
    Other,
}

pub fn classify(text: &str) -> Failure {
    if text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        Failure::ChangedHostKey
    } else if text.contains("host key is known for")
        || text.contains("Host key verification failed")
    {
        Failure::UnknownHostKey
    } else if text.contains("Permission denied") {
        Failure::Denied
    } else if text.contains("Connection refused") {
        Failure::Refused
    } else if [
        "timed out",
        "No route to host",
        "Network is unreachable",
        "Could not resolve hostname",
        "Connection closed by",
        "Connection reset",
    ]
    .iter()
    .any(|s| text.contains(s))
    {
        Failure::Unreachable
    } else {
        Failure::Other
    }
}

impl Failure {
    /// What went wrong and what to do; `known_hosts` is the file ssh reads
    /// for this host (named in the changed-key advice).
    pub fn message(&self, t: &Target, timeout: u64, text: &str, known_hosts: &Path) -> String {
        let why = text
            .lines()
            .rfind(|l| !l.starts_with("debug") && !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        let at = format!("{}:{}", t.address, t.port);
        match self {
            Failure::ChangedHostKey => format!(
                "{}: the host key of {at} CHANGED since it was trusted; if the Pi was reinstalled, remove the old key with `ssh-keygen -R {} -f {}` and try again, otherwise someone may be intercepting the connection",
                t.name,
                quote(&t.known_hosts_name()),
                quote(&known_hosts.display().to_string())
            ),
            Failure::UnknownHostKey => format!(
                "{}: the host key of {at} is not known and was not accepted ({why})",
                t.name
            ),
            Failure::Denied => format!(
                "{}: {} refused our SSH key ({why}); check keys/authorized_keys and that your key is loaded (`ssh-add -l`)",
                t.name,
                t.destination()
            ),
            Failure::Refused => format!(
                "{}: {} answered but refused the connection on port {} ({why}): sshd is not running or listens on another port; check `port` in hosts/fleet.toml and sshd on the Pi",
                t.name, t.address, t.port
            ),
            Failure::Unreachable => format!(
                "{}: unreachable at {at} within {timeout} s ({why}); is it powered and on the network?",
                t.name
            ),
            Failure::Other => format!("{}: ssh to {at} failed: {why}", t.name),
        }
    }
}

/// Whether a failure to a host with its key in Git means the host showed
/// another key (or none of type ed25519).
pub fn not_git_key(f: &Failure, text: &str) -> bool {
    matches!(f, Failure::ChangedHostKey | Failure::UnknownHostKey)
        || text.contains("no matching host key type")
}

/// A host refused because its key is not the one in Git: which file, and
/// what to do.
pub fn git_key_message(t: &Target) -> String {
    let file = crate::identity::git_path(&t.name);
    format!(
        "{}: the SSH host key of {}:{} is NOT the one in Git ({file}), so the connection was refused; if the Pi was re-flashed with a card made elsewhere or before its identity existed, write its card again (`cargo xtask sd {}`, then `cargo xtask flash {}`) or adopt the key it has (`cargo xtask identity {} --import <a copy of its /etc/ssh/ssh_host_ed25519_key>`); if nothing changed on the Pi, someone may be intercepting the connection: do not deploy to it",
        t.name, t.address, t.port, t.name, t.name, t.name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_key_refusal() {
        let t = Target {
            name: "pi".into(),
            user: "root".into(),
            address: "192.0.2.7".into(),
            port: 22,
        };
        let m = git_key_message(&t);
        assert!(m.contains("hosts/pi/ssh_host_ed25519_key.pub"));
        assert!(m.contains("cargo xtask identity pi --import"));
        assert!(not_git_key(&Failure::ChangedHostKey, ""));
        assert!(not_git_key(
            &Failure::Other,
            "Unable to negotiate with 192.0.2.7 port 22: no matching host key type found"
        ));
        assert!(!not_git_key(&Failure::Denied, "Permission denied"));
    }

    #[test]
    fn classifies_failures() {
        assert_eq!(
            classify(
                "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed."
            ),
            Failure::UnknownHostKey
        );
        assert_eq!(
            classify("@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @"),
            Failure::ChangedHostKey
        );
        assert_eq!(
            classify("ssh: connect to host 10.0.0.9 port 22: Connection timed out"),
            Failure::Unreachable
        );
        assert_eq!(
            classify("root@x: Permission denied (publickey)."),
            Failure::Denied
        );
        assert_eq!(
            classify("ssh: connect to host 127.0.0.1 port 2: Connection refused"),
            Failure::Refused
        );
    }
}
