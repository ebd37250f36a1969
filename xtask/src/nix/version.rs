//! The Nix version gate, decided in one place. nixpkgs 26.05 refuses to be
//! evaluated by a Nix older than 2.18.0 (nixpkgs' `lib/minver.nix`), after
//! minutes of fetching. `setup-binfmt --check`, `sd`, `deploy`, `status`
//! (its evaluation) and `check` (its flake part) ask [`require`] first and
//! stop with [`Unusable`], which names the version found, the one needed
//! and the fix.

use std::fmt;

use xshell::{Shell, cmd};

use crate::exec;

/// The oldest Nix that evaluates the pinned nixpkgs: `lib/minver.nix` of
/// nixpkgs 26.05 reads "2.18.0".
pub const MIN: Version = Version::new(2, 18, 0);

/// What to do when the Nix found is older than [`MIN`].
pub const FIX: &str = "run `cargo xtask setup-binfmt --install-nix` to replace it (it shows the commands and asks first; see documentation/getting nix ready.md)";

/// `major.minor.patch` of a Nix release.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// The version a text starts with: `2.26.3` of `2.26.3+dfsg-1` (a
    /// Debian package version; an epoch `1:` is skipped), `2.24.10pre`,
    /// `2.90.0-beta.0`. A missing patch number counts as 0.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let text = match text.split_once(':') {
            Some((epoch, rest)) if epoch.chars().all(|c| c.is_ascii_digit()) => rest,
            _ => text,
        };
        let mut numbers = text.split('.').map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            (digits.parse::<u32>().ok(), digits.len() == part.len())
        });
        let (major, whole) = numbers.next()?;
        let major = major?;
        if !whole {
            return None;
        }
        let (minor, whole) = numbers.next()?;
        let minor = minor?;
        let patch = if whole {
            numbers.next().and_then(|(p, _)| p).unwrap_or(0)
        } else {
            0
        };
        Some(Version::new(major, minor, patch))
    }

    /// `2.18` for the minimum, as people say it.
    pub fn short(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What `nix --version` says about the installed Nix.
#[derive(Clone, Debug, PartialEq)]
pub struct Installed {
    /// The implementation in parentheses: `Nix`, `Lix, like Nix`,
    /// `Determinate Nix 3.4.1` (whose own number is not the Nix version).
    pub implementation: String,
    /// The Nix version: the last word of the first line.
    pub version: Version,
}

impl Installed {
    /// Reads `nix --version`: `nix (Nix) 2.8.0`, `nix (Determinate Nix
    /// 3.4.1) 2.28.2`, `nix (Lix, like Nix) 2.91.1` (Lix may print more
    /// lines after the first).
    pub fn parse(text: &str) -> Option<Installed> {
        let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        let rest = line.strip_prefix("nix")?.trim_start();
        let implementation = rest
            .strip_prefix('(')
            .and_then(|r| r.split_once(')'))
            .map(|(name, _)| name.trim().to_string())
            .unwrap_or_else(|| "Nix".to_string());
        let version = Version::parse(line.split_whitespace().last()?)?;
        Some(Installed {
            implementation,
            version,
        })
    }

    pub fn new_enough(&self) -> bool {
        self.version >= MIN
    }
}

impl fmt::Display for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.implementation == "Nix" {
            write!(f, "Nix {}", self.version)
        } else {
            write!(f, "Nix {} ({})", self.version, self.implementation)
        }
    }
}

/// Why the `nix` on PATH cannot evaluate the pinned nixpkgs.
#[derive(Debug, Clone, PartialEq)]
pub enum Unusable {
    /// `nix --version` did not run.
    NotRunnable(String),
    /// `nix --version` printed something that names no version.
    Unreadable(String),
    TooOld(Installed),
}

impl Unusable {
    /// What is wrong, without the fix.
    pub fn reason(&self) -> String {
        let needed = format!(
            "nixpkgs 26.05 needs Nix {} or newer (its lib/minver.nix)",
            MIN.short()
        );
        match self {
            Unusable::NotRunnable(why) => {
                format!("`nix --version` failed ({why}), so the Nix version is unknown: {needed}")
            }
            Unusable::Unreadable(text) => {
                format!("`nix --version` printed {text:?}, which names no version: {needed}")
            }
            Unusable::TooOld(found) => format!("{found} is too old: {needed}"),
        }
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::NotRunnable(_) => write!(
                f,
                "{}; install it: `cargo xtask setup-binfmt --install-nix` (see documentation/getting nix ready.md)",
                self.reason()
            ),
            _ => write!(f, "{}; {FIX}", self.reason()),
        }
    }
}

impl std::error::Error for Unusable {}

/// The pure part of [`require`]: judges what `nix --version` printed.
pub fn judge(version_text: &str) -> Result<Installed, Unusable> {
    let found = Installed::parse(version_text)
        .ok_or_else(|| Unusable::Unreadable(version_text.trim().to_string()))?;
    if found.new_enough() {
        Ok(found)
    } else {
        Err(Unusable::TooOld(found))
    }
}

/// Runs `nix --version` (echoed) and judges it: the installed Nix when it
/// can evaluate the pinned nixpkgs, else why not, with the fix.
pub fn require() -> Result<Installed, Unusable> {
    let sh = Shell::new().map_err(|e| Unusable::NotRunnable(e.to_string()))?;
    let text = exec::read(cmd!(sh, "nix --version"))
        .map_err(|e| Unusable::NotRunnable(crate::nix::error_summary(&format!("{e:#}"))))?;
    judge(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs of `nix --version`, each with where it comes from.
    const SEEN: [(&str, &str, Version, bool); 7] = [
        // /usr/bin/nix of Debian 12's nix-bin 2.8.0-1.1+b1 (run on the CI machine).
        ("nix (Nix) 2.8.0\n", "Nix", Version::new(2, 8, 0), false),
        // /usr/bin/nix of Debian 13's nix-bin 2.26.3+dfsg-1 (run in a debootstrapped trixie root).
        ("nix (Nix) 2.26.3\n", "Nix", Version::new(2, 26, 3), true),
        // Ubuntu 24.04's nix-bin 2.18.1: the format of upstream Nix.
        ("nix (Nix) 2.18.1\n", "Nix", Version::new(2, 18, 1), true),
        ("nix (Nix) 2.24.10\n", "Nix", Version::new(2, 24, 10), true),
        // Determinate Nix (DeterminateSystems/nix-installer README: "nix (Determinate Nix 3.4.1) 2.28.2").
        (
            "nix (Determinate Nix 3.6.2) 2.29.0\n",
            "Determinate Nix 3.6.2",
            Version::new(2, 29, 0),
            true,
        ),
        // Lix (lix.systems install page: "nix (Lix, like Nix) 2.90.0-beta.0").
        (
            "nix (Lix, like Nix) 2.91.1\n",
            "Lix, like Nix",
            Version::new(2, 91, 1),
            true,
        ),
        // Lix from 2.92 prints details after the first line (Lix release note
        // "`nix --version` now shows details about the installation by default").
        (
            "nix (Lix, like Nix) 2.92.0-dev-pre20250117-0d14c2b\nSystem type: x86_64-linux\nFeatures: gc, signed-caches\n",
            "Lix, like Nix",
            Version::new(2, 92, 0),
            true,
        ),
    ];

    #[test]
    fn reads_every_known_format() {
        for (text, implementation, version, ok) in SEEN {
            let found = Installed::parse(text).unwrap_or_else(|| panic!("{text:?}"));
            assert_eq!(found.implementation, implementation, "{text:?}");
            assert_eq!(found.version, version, "{text:?}");
            assert_eq!(judge(text).is_ok(), ok, "{text:?}");
        }
    }

    #[test]
    fn the_minimum_itself_passes_and_just_below_fails() {
        assert!(judge("nix (Nix) 2.18.0").is_ok());
        assert!(judge("nix (Nix) 2.17.99").is_err());
        assert!(judge("nix (Nix) 2.6.0").is_err());
        // 2.8 < 2.18: numbers compare as numbers, not as text.
        assert!(Version::new(2, 8, 0) < MIN);
        assert!(Version::new(3, 0, 0) > MIN);
    }

    #[test]
    fn too_old_names_found_needed_and_fix() {
        let e = judge("nix (Nix) 2.8.0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Nix 2.8.0 is too old: nixpkgs 26.05 needs Nix 2.18 or newer (its lib/minver.nix); {FIX}"
            )
        );
        let e = judge("nix (Lix, like Nix) 2.17.1").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Nix 2.17.1 (Lix, like Nix) is too old")
        );
    }

    #[test]
    fn a_nix_that_does_not_run_is_to_be_installed() {
        let e = Unusable::NotRunnable("No such file or directory".into());
        assert_eq!(
            e.to_string(),
            "`nix --version` failed (No such file or directory), so the Nix version is unknown: nixpkgs 26.05 needs Nix 2.18 or newer (its lib/minver.nix); install it: `cargo xtask setup-binfmt --install-nix` (see documentation/getting nix ready.md)"
        );
    }

    #[test]
    fn unreadable_output_is_not_taken_for_a_version() {
        assert!(matches!(judge(""), Err(Unusable::Unreadable(_))));
        assert!(matches!(judge("garbage"), Err(Unusable::Unreadable(_))));
        assert!(matches!(
            judge("nix (Nix) unknown"),
            Err(Unusable::Unreadable(_))
        ));
    }

    #[test]
    fn package_versions() {
        // apt-cache policy candidates: Debian 12, Debian 13, Ubuntu 22.04, Ubuntu 24.04.
        assert_eq!(Version::parse("2.8.0-1.1+b1"), Some(Version::new(2, 8, 0)));
        assert_eq!(
            Version::parse("2.26.3+dfsg-1"),
            Some(Version::new(2, 26, 3))
        );
        assert_eq!(Version::parse("2.6.0+dfsg-3"), Some(Version::new(2, 6, 0)));
        assert_eq!(
            Version::parse("2.18.1+dfsg-1ubuntu5"),
            Some(Version::new(2, 18, 1))
        );
        assert_eq!(Version::parse("1:2.20.0-1"), Some(Version::new(2, 20, 0)));
        assert_eq!(Version::parse("2.24"), Some(Version::new(2, 24, 0)));
        assert_eq!(Version::parse("(none)"), None);
        assert_eq!(Version::parse("x2.8"), None);
    }
}
