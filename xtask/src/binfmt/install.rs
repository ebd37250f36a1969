//! Which Nix `setup-binfmt --install-nix` installs: the distribution's
//! `nix-bin` only where its candidate version can evaluate nixpkgs 26.05
//! (Debian 13: 2.26, Ubuntu 24.04: 2.18.1), else the official multi-user
//! installer (Debian 12: 2.8, Ubuntu 22.04: 2.6). Decided by [`choose`]
//! from `/etc/os-release` and `apt-cache policy nix-bin`, a pure function.

use super::facts::{Facts, Flavour, NixFacts};
use crate::nix::version::{self, Version};

/// The official multi-user installer, as the Nix manual gives it
/// (NixOS/nix, doc/manual/source/installation/index.md). Run as the user,
/// not root: it calls sudo itself.
pub const OFFICIAL_INSTALLER: &str = "curl -L https://nixos.org/nix/install | sh -s -- --daemon";

/// What the official installer needs that a minimal system may lack.
pub const INSTALLER_NEEDS: [&str; 2] = ["curl", "xz-utils"];

/// The distribution's packages of a Nix with a daemon.
pub const PACKAGES: [&str; 2] = ["nix-bin", "nix-setup-systemd"];

/// Where to get Nix from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `apt-get install nix-bin nix-setup-systemd`: the candidate is new enough.
    Distribution { version: Version },
    /// The official installer; `why` says why not the distribution's package.
    Official { why: String },
}

/// The fields of /etc/os-release that matter here.
#[derive(Debug, Default, PartialEq)]
pub struct Os {
    pub id: String,
    pub id_like: Vec<String>,
    pub pretty_name: String,
}

impl Os {
    pub fn parse(text: &str) -> Os {
        let mut os = Os::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').trim_matches('\'');
            match key.trim() {
                "ID" => os.id = value.to_string(),
                "ID_LIKE" => os.id_like = value.split_whitespace().map(String::from).collect(),
                "PRETTY_NAME" => os.pretty_name = value.to_string(),
                _ => {}
            }
        }
        if os.pretty_name.is_empty() {
            os.pretty_name = if os.id.is_empty() {
                "this system".into()
            } else {
                os.id.clone()
            };
        }
        os
    }

    /// Debian, Ubuntu and their derivatives: apt and the `nix-bin` package.
    pub fn uses_apt(&self) -> bool {
        std::iter::once(&self.id)
            .chain(&self.id_like)
            .any(|id| id == "debian" || id == "ubuntu")
    }
}

/// The candidate version in `apt-cache policy <package>` output (run with
/// LC_ALL=C): `  Candidate: 2.8.0-1.1+b1`; None for `(none)` or when apt
/// knows no such package (empty output).
pub fn candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(String::from)
}

/// Where to get a Nix that can evaluate nixpkgs 26.05 on this system.
pub fn choose(os_release: &str, policy: &str) -> Source {
    let os = Os::parse(os_release);
    if !os.uses_apt() {
        return Source::Official {
            why: format!("{} is not Debian or Ubuntu", os.pretty_name),
        };
    }
    let Some(text) = candidate(policy) else {
        return Source::Official {
            why: format!("{} has no nix-bin package", os.pretty_name),
        };
    };
    match Version::parse(&text) {
        Some(v) if v >= version::MIN => Source::Distribution { version: v },
        Some(v) => Source::Official {
            why: format!(
                "{}'s nix-bin is {v}, older than the {} that nixpkgs 26.05 needs",
                os.pretty_name,
                version::MIN.short()
            ),
        },
        None => Source::Official {
            why: format!(
                "{}'s nix-bin has a version this tool cannot read ({text})",
                os.pretty_name
            ),
        },
    }
}

/// How to get a new enough Nix where none is installed.
pub fn missing_fix(f: &Facts, apt: &dyn Fn(&str) -> String) -> String {
    match &f.nix_source {
        Some(Source::Distribution { version }) => format!(
            "`cargo xtask setup-binfmt --install-nix` installs the distribution's nix-bin {version} ({})",
            apt(&PACKAGES.join(" "))
        ),
        Some(Source::Official { why }) => format!(
            "`cargo xtask setup-binfmt --install-nix` runs the official installer ({why}): `{}`",
            OFFICIAL_INSTALLER
        ),
        None => format!(
            "`cargo xtask setup-binfmt --install-nix`, or the official installer: `{}`",
            OFFICIAL_INSTALLER
        ),
    }
}

/// How to replace a Nix that is too old for nixpkgs 26.05.
pub fn replace_fix(f: &Facts, n: &NixFacts) -> String {
    let guide = "(see documentation/getting nix ready.md)";
    match (n.flavour, &f.nix_source) {
        (Flavour::Distribution { .. }, Some(Source::Distribution { version })) => format!(
            "`cargo xtask setup-binfmt --install-nix` upgrades it to the distribution's nix-bin {version} ({}apt-get install {}) {guide}",
            super::sudo(f),
            PACKAGES.join(" ")
        ),
        (Flavour::Distribution { .. }, Some(Source::Official { why })) => format!(
            "`cargo xtask setup-binfmt --install-nix` replaces it with the official installer's Nix ({why}): it removes nix-bin and nix-setup-systemd, their nixbld build users and group, moves /nix aside, then runs `{}`; `--dry-run` shows every command, and it asks first {guide}",
            OFFICIAL_INSTALLER
        ),
        (Flavour::Official { .. }, _) => format!("upgrade it: `sudo -i nix upgrade-nix` {guide}"),
        _ => format!(
            "put a Nix {} or newer first in PATH, or install the official one: `{}` {guide}",
            version::MIN.short(),
            OFFICIAL_INSTALLER
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12: this CI machine's /etc/os-release and `apt-cache policy
    /// nix-bin` (nix-bin installed by .ci/run), captured for real.
    const DEBIAN_12_OS: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"#;
    const DEBIAN_12_POLICY: &str = "nix-bin:
  Installed: 2.8.0-1.1+b1
  Candidate: 2.8.0-1.1+b1
  Version table:
 *** 2.8.0-1.1+b1 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
";

    /// Debian 13: captured for real in a fresh `debootstrap --variant=minbase
    /// trixie` root after `apt-get update`.
    const DEBIAN_13_OS: &str = r#"PRETTY_NAME="Debian GNU/Linux 13 (trixie)"
NAME="Debian GNU/Linux"
VERSION_ID="13"
VERSION="13 (trixie)"
VERSION_CODENAME=trixie
DEBIAN_VERSION_FULL=13.8
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"#;
    const DEBIAN_13_POLICY: &str = "nix-bin:
  Installed: (none)
  Candidate: 2.26.3+dfsg-1
  Version table:
     2.26.3+dfsg-1 500
        500 http://deb.debian.org/debian trixie/main amd64 Packages
";

    /// Ubuntu 22.04: RECONSTRUCTED, not captured. The os-release fields are
    /// Ubuntu's documented ones; the nix-bin version (2.6.0+dfsg-3, jammy
    /// universe) is the one Ubuntu's USN-7633-1 patches for 22.04; the
    /// layout is apt's, as in the captured Debian texts.
    const UBUNTU_22_04_OS: &str = r#"PRETTY_NAME="Ubuntu 22.04.5 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.5 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
"#;
    const UBUNTU_22_04_POLICY: &str = "nix-bin:
  Installed: (none)
  Candidate: 2.6.0+dfsg-3
  Version table:
     2.6.0+dfsg-3 500
        500 http://archive.ubuntu.com/ubuntu jammy/universe amd64 Packages
";

    /// Ubuntu 24.04: RECONSTRUCTED the same way (nix-bin 2.18.1+dfsg-1ubuntu5,
    /// noble universe, the base of USN-7633-1's 24.04 fix).
    const UBUNTU_24_04_OS: &str = r#"PRETTY_NAME="Ubuntu 24.04.3 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.3 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
"#;
    const UBUNTU_24_04_POLICY: &str = "nix-bin:
  Installed: (none)
  Candidate: 2.18.1+dfsg-1ubuntu5
  Version table:
     2.18.1+dfsg-1ubuntu5 500
        500 http://archive.ubuntu.com/ubuntu noble/universe amd64 Packages
";

    #[test]
    fn debian_12_gets_the_official_installer() {
        assert_eq!(
            choose(DEBIAN_12_OS, DEBIAN_12_POLICY),
            Source::Official {
                why: "Debian GNU/Linux 12 (bookworm)'s nix-bin is 2.8.0, older than the 2.18 that nixpkgs 26.05 needs".into()
            }
        );
    }

    #[test]
    fn debian_13_gets_its_nix_bin() {
        assert_eq!(
            choose(DEBIAN_13_OS, DEBIAN_13_POLICY),
            Source::Distribution {
                version: Version::new(2, 26, 3)
            }
        );
    }

    #[test]
    fn ubuntu_22_04_gets_the_official_installer() {
        let Source::Official { why } = choose(UBUNTU_22_04_OS, UBUNTU_22_04_POLICY) else {
            panic!("Ubuntu 22.04's nix-bin 2.6 was chosen");
        };
        assert_eq!(
            why,
            "Ubuntu 22.04.5 LTS's nix-bin is 2.6.0, older than the 2.18 that nixpkgs 26.05 needs"
        );
    }

    #[test]
    fn ubuntu_24_04_gets_its_nix_bin() {
        assert_eq!(
            choose(UBUNTU_24_04_OS, UBUNTU_24_04_POLICY),
            Source::Distribution {
                version: Version::new(2, 18, 1)
            }
        );
    }

    #[test]
    fn no_package_or_no_apt() {
        // apt-cache prints nothing for a package it does not know.
        let Source::Official { why } = choose(DEBIAN_13_OS, "") else {
            panic!()
        };
        assert_eq!(why, "Debian GNU/Linux 13 (trixie) has no nix-bin package");
        let Source::Official { why } = choose(
            DEBIAN_13_OS,
            "nix-bin:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n",
        ) else {
            panic!()
        };
        assert!(why.ends_with("has no nix-bin package"), "{why}");
        let fedora = "NAME=\"Fedora Linux\"\nID=fedora\nPRETTY_NAME=\"Fedora Linux 42\"\n";
        let Source::Official { why } = choose(fedora, DEBIAN_13_POLICY) else {
            panic!()
        };
        assert_eq!(why, "Fedora Linux 42 is not Debian or Ubuntu");
        // A derivative names its parent in ID_LIKE.
        let mint = "ID=linuxmint\nID_LIKE=\"ubuntu debian\"\nPRETTY_NAME=\"Linux Mint 22\"\n";
        assert!(Os::parse(mint).uses_apt());
        assert_eq!(
            choose(mint, UBUNTU_24_04_POLICY),
            Source::Distribution {
                version: Version::new(2, 18, 1)
            }
        );
    }
}
