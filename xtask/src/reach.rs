//! What `logs`, `exec` and `ssh` share: choosing hosts, opening one SSH
//! master connection per host in parallel (host keys asked about once,
//! failures said once), the remote command line for arguments typed on
//! the workstation, and the coloured host prefix.

use std::io::IsTerminal;

use anyhow::Result;

use crate::inventory::Host;
use crate::ssh::{self, Ssh, Target};

/// The hosts a command acts on.
#[derive(clap::Args, Debug)]
pub struct Selection {
    /// Hosts to act on
    pub hosts: Vec<String>,
    /// Every host in the fleet
    #[arg(long)]
    pub all: bool,
    /// Every host with this tag (repeatable)
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,
    /// Seconds to wait for a Pi to answer SSH
    #[arg(long, value_name = "S", default_value_t = ssh::CONNECT_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout: u64,
}

impl Selection {
    pub fn hosts(&self, root: &std::path::Path) -> Result<Vec<Host>> {
        crate::deploy::load_selected(root, &self.hosts, self.all, &self.tag)
    }
}

/// Opens every host's master connection in parallel. `Err` holds the one
/// line that says why a host cannot be reached (printed once by the caller).
pub fn connect_all(ssh: &Ssh, hosts: &[Host]) -> Vec<Result<(), String>> {
    crate::deploy::parallel(
        hosts.len(),
        32,
        false,
        &|i| {
            let t = Target::of(&hosts[i]);
            ssh.connect(&t, &|c| eprintln!("$ {}", ssh::show(c)))
                .map_err(|e| format!("{e:#}"))
        },
        &|_| false,
    )
    .into_iter()
    .map(|r| r.unwrap_or_else(|| Err("not tried".into())))
    .collect()
}

/// The remote command line for words typed after `--`: each word is
/// single-quoted (`ssh::quote`) and the words are joined with spaces, so
/// the SSH user's login shell on the Pi splits them back into exactly the
/// words typed: spaces, quotes, `$`, `;`, `*` arrive unchanged and nothing
/// is expanded, neither here nor there. A shell is asked for explicitly:
/// `-- sh -c 'echo $HOSTNAME; uptime'`.
pub fn remote_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| ssh::quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Host names in front of lines, padded to one width, coloured when the
/// output is a terminal (and `NO_COLOR` is not set).
pub struct Prefix {
    names: Vec<String>,
    width: usize,
    colour: bool,
}

impl Prefix {
    pub fn new(hosts: &[Host]) -> Prefix {
        Prefix::with_colour(
            hosts,
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        )
    }

    pub fn with_colour(hosts: &[Host], colour: bool) -> Prefix {
        let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        Prefix {
            names,
            width,
            colour,
        }
    }

    /// `name  ` padded, in the host's colour.
    pub fn of(&self, i: usize) -> String {
        let name = format!("{:<w$}", self.names[i], w = self.width);
        if self.colour {
            const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 31];
            format!("\x1b[{}m{name}\x1b[0m", COLOURS[i % COLOURS.len()])
        } else {
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_one_by_one() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(remote_line(&w(&["echo", "a b"])), "echo 'a b'");
        assert_eq!(
            remote_line(&w(&["printf", "%s\\n", "$HOME", "x;y", "it's", ""])),
            r"printf '%s\n' '$HOME' 'x;y' 'it'\''s' ''"
        );
    }
}
