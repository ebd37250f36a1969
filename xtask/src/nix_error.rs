//! What a failed Nix command's stderr says: the line that names the error,
//! and whether the network was the problem (then nothing is wrong with the
//! fleet definition, and the fix is a connection, not an edit).

/// Why a Nix command failed.
#[derive(Debug, PartialEq)]
pub enum Failure {
    /// Nix could not reach a binary cache, GitHub or another download
    /// (this machine is offline, has no DNS, or a proxy or firewall is in the way).
    Network(String),
    /// Anything else: the line of Nix's message that names it.
    Other(String),
}

/// Words of curl's and Nix's messages when a download fails for want of
/// a network (not for a wrong hash or a missing file).
const NETWORK: &[&str] = &[
    "unable to download",
    "Couldn't resolve host",
    "Could not resolve host",
    "Temporary failure in name resolution",
    "Couldn't connect to server",
    "Failed to connect to",
    "cannot connect to",
    "Network is unreachable",
    "Connection timed out",
    "Timeout was reached",
    "unable to access 'https://",
];

/// Reads a failed Nix command's stderr (as [`crate::capture::plain`] gives it).
pub fn read(stderr: &str) -> Failure {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // The daemon's socket is local: "cannot connect to socket" is not the network.
    let network: Vec<&&str> = lines
        .iter()
        .filter(|l| NETWORK.iter().any(|w| l.contains(w)) && !l.contains("daemon-socket"))
        .collect();
    // Nix's own `error:` rather than a retry's warning.
    let line = network
        .iter()
        .find(|l| l.starts_with("error:"))
        .or(network.first());
    if let Some(line) = line {
        return Failure::Network(message(line));
    }
    Failure::Other(cause(&lines))
}

/// The line that names the error: the first `error: …` with a message
/// (Nix 2.8 puts it first; newer Nix prints a bare `error:`, its trace,
/// then `error: …`), a builder's failure with its last log line.
fn cause(lines: &[&str]) -> String {
    let Some(at) = lines
        .iter()
        .position(|l| l.starts_with("error:") && !message(l).is_empty())
    else {
        return lines
            .iter()
            .rev()
            .find(|l| !l.contains("--show-trace") && !l.starts_with('…'))
            .map_or_else(|| "no message".to_string(), |l| message(l));
    };
    let first = message(lines[at]);
    if first.starts_with("builder for") {
        // `> …` lines are the builder's last log lines.
        if let Some(last) = lines[at..]
            .iter()
            .filter_map(|l| l.strip_prefix('>'))
            .map(str::trim)
            .rfind(|l| !l.is_empty())
        {
            return format!("{first} last log line: {last}");
        }
    }
    first
}

fn message(line: &str) -> String {
    line.trim().trim_start_matches("error:").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_eval_is_the_network() {
        // Nix 2.8 fetching nixpkgs from GitHub without DNS.
        let text = "warning: error: unable to download 'https://api.github.com/repos/NixOS/nixpkgs/commits/x': Couldn't resolve host name (6); retrying in 285 ms
error: unable to download 'https://github.com/NixOS/nixpkgs/archive/f5c0.tar.gz': Couldn't resolve host name (6)
(use '--show-trace' to show detailed location information)";
        assert_eq!(
            read(text),
            Failure::Network("unable to download 'https://github.com/NixOS/nixpkgs/archive/f5c0.tar.gz': Couldn't resolve host name (6)".into())
        );
        let text =
            "error: unable to download 'http://127.0.0.1:9/x': Couldn't connect to server (7)";
        assert!(matches!(read(text), Failure::Network(l) if l.contains("127.0.0.1:9")));
    }

    #[test]
    fn the_daemon_socket_is_not_the_network() {
        let text = "error: cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Permission denied";
        assert_eq!(
            read(text),
            Failure::Other("cannot connect to socket at '/nix/var/nix/daemon-socket/socket': Permission denied".into())
        );
    }

    #[test]
    fn names_the_real_error_line() {
        // Newer Nix: a bare `error:`, the trace, then the message.
        let text = "error:\n       … while evaluating the attribute 'config'\n\n       error: attribute 'sdImage' missing\n       at /x/flake.nix:3:5:\n(use '--show-trace' to show detailed location information)";
        assert_eq!(
            read(text),
            Failure::Other("attribute 'sdImage' missing".into())
        );
        let text = "error: builder for '/nix/store/abc-x.drv' failed with exit code 1;\n       last 2 log lines:\n       > making the image\n       > mkfs.ext4: No space left on device\n       For full logs, run 'nix log /nix/store/abc-x.drv'.";
        assert_eq!(
            read(text),
            Failure::Other("builder for '/nix/store/abc-x.drv' failed with exit code 1; last log line: mkfs.ext4: No space left on device".into())
        );
    }
}
