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

#[cfg(test)]
mod tests {
    use super::*;

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
