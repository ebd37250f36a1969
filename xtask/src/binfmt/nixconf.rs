//! Nix's configuration: reading what `nix show-config` (`nix config show`
//! from Nix 2.20) prints, and adding values to `nix.conf` without dropping
//! or duplicating anything.

use std::collections::BTreeMap;

/// `key = value` lines as Nix prints its effective configuration.
pub fn parse_show_config(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            l.split_once(" = ")
                .or_else(|| l.strip_suffix(" =").map(|k| (k, "")))
        })
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Whether Nix refused a command because nix-command is off: Nix 2.8 says
/// "experimental Nix feature 'nix-command' is disabled; use
/// '--extra-experimental-features nix-command' to override", newer Nix
/// "…; add '--extra-experimental-features nix-command' to enable it".
pub fn nix_command_disabled(stderr: &str) -> bool {
    stderr.contains("experimental Nix feature 'nix-command' is disabled")
}

/// The space-separated words of a setting.
pub fn words<'a>(config: &'a BTreeMap<String, String>, key: &str) -> Vec<&'a str> {
    config
        .get(key)
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default()
}

/// `(major, minor)` from `nix --version`: `nix (Nix) 2.8.0`,
/// `nix (Determinate Nix 3.6.2) 2.29.0`, `nix (Nix) 2.24.10pre`.
pub fn parse_version(text: &str) -> Option<(u32, u32)> {
    crate::nix::version::Installed::parse(text).map(|i| (i.version.major, i.version.minor))
}

/// Whether a path is made available by `sandbox-paths` entries
/// (`/dir`, `/dir=/source`, `/dir?`): the path itself or a parent folder.
pub fn sandbox_covers(paths: &[&str], wanted: &str) -> bool {
    paths.iter().any(|p| {
        let target = p.split('=').next().unwrap_or(p).trim_end_matches('?');
        let target = target.trim_end_matches('/');
        wanted == target || wanted.starts_with(&format!("{target}/"))
    })
}

/// The setting lines of a nix.conf: `(line index, key, value)`.
fn settings(conf: &str) -> Vec<(usize, String, String)> {
    conf.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let l = l.split('#').next().unwrap_or("");
            let (k, v) = l.split_once('=')?;
            Some((i, k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// The value a nix.conf line gives `key`, if one does (the last one wins).
#[cfg(test)]
fn file_value(conf: &str, key: &str) -> Option<String> {
    settings(conf)
        .into_iter()
        .rfind(|(_, k, _)| k == key)
        .map(|(_, _, v)| v)
}

/// Adds `values` to a list setting in nix.conf text. When a line already
/// sets one of `keys` (the last such line wins in Nix), the missing values
/// are appended to that line; otherwise a new `keys[0] = ...` line is added
/// at the end. Values already there are never repeated; every other line is
/// kept as it was. Returns the text unchanged when nothing is missing.
pub fn add_values(conf: &str, keys: &[&str], values: &[&str]) -> String {
    let found = settings(conf)
        .into_iter()
        .rfind(|(_, k, _)| keys.contains(&k.as_str()));
    let mut lines: Vec<String> = conf.lines().map(str::to_string).collect();
    match found {
        Some((i, _, value)) => {
            let have: Vec<&str> = value.split_whitespace().collect();
            let missing: Vec<&str> = values
                .iter()
                .copied()
                .filter(|v| !have.contains(v))
                .collect();
            if missing.is_empty() {
                return conf.to_string();
            }
            let line = &lines[i];
            let (body, comment) = match line.find('#') {
                Some(c) => (line[..c].trim_end(), format!(" {}", &line[c..])),
                None => (line.trim_end(), String::new()),
            };
            lines[i] = format!("{body} {}{comment}", missing.join(" "));
        }
        None => {
            let mut uniq: Vec<&str> = Vec::new();
            for v in values {
                if !uniq.contains(v) {
                    uniq.push(v);
                }
            }
            if uniq.is_empty() {
                return conf.to_string();
            }
            if !lines.iter().any(|l| l.trim() == COMMENT) {
                lines.push(COMMENT.to_string());
            }
            lines.push(format!("{} = {}", keys[0], uniq.join(" ")));
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Marks the lines this command adds.
pub const COMMENT: &str = "# Added by `cargo xtask setup-binfmt` (aarch64 builds under QEMU):";

#[cfg(test)]
mod tests {
    use super::*;

    /// `nix show-config` of Debian 12's nix-bin 2.8.0 as root with the
    /// packaged nix.conf (`sandbox = false`), captured; the lines read.
    const SHOW_CONFIG_2_8: &str = "\
allowed-users = *
build-users-group = nixbld
experimental-features = 
extra-platforms = i686-linux x86_64-v1-linux x86_64-v2-linux x86_64-v3-linux x86_64-v4-linux
sandbox = false
sandbox-paths = 
system = x86_64-linux
trusted-users = root
";

    /// The same after `extra-platforms`, `extra-experimental-features` and
    /// `extra-sandbox-paths` lines were added, sandbox on, captured. (Nix
    /// 2.20+ prints the same `key = value` lines for `nix config show`.)
    const SHOW_CONFIG_2_8_SET: &str = "\
allowed-users = *
build-users-group = nixbld
experimental-features = flakes nix-command
extra-platforms = aarch64-linux i686-linux
sandbox = true
sandbox-paths = /usr/bin/qemu-aarch64-static /usr/libexec/qemu-binfmt
system = x86_64-linux
trusted-users = root
";

    #[test]
    fn reads_effective_config() {
        let c = parse_show_config(SHOW_CONFIG_2_8);
        assert_eq!(words(&c, "extra-platforms")[0], "i686-linux");
        assert_eq!(words(&c, "experimental-features"), Vec::<&str>::new());
        assert_eq!(c["sandbox"], "false");
        assert_eq!(c["build-users-group"], "nixbld");
        let c = parse_show_config(SHOW_CONFIG_2_8_SET);
        assert!(words(&c, "extra-platforms").contains(&"aarch64-linux"));
        assert!(words(&c, "experimental-features").contains(&"flakes"));
        let paths = words(&c, "sandbox-paths");
        assert!(sandbox_covers(
            &paths,
            "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
        ));
        assert!(sandbox_covers(&paths, "/usr/bin/qemu-aarch64-static"));
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("nix (Nix) 2.8.0"), Some((2, 8)));
        assert_eq!(parse_version("nix (Nix) 2.24.10pre"), Some((2, 24)));
        assert_eq!(
            parse_version("nix (Determinate Nix 3.6.2) 2.29.0\n"),
            Some((2, 29))
        );
        assert_eq!(parse_version("garbage"), None);
        // Lix 2.92 and later print details after the version line.
        assert_eq!(
            parse_version(
                "nix (Lix, like Nix) 2.92.0-dev-pre20250117-0d14c2b\nSystem type: x86_64-linux\nData directory: /nix/store/rliimcnqkplrqdgm4z6yqclpr6c32wh6-lix-2.92.0-dev-pre20250117-0d14c2b/share\n"
            ),
            Some((2, 92))
        );
    }

    #[test]
    fn sandbox_paths() {
        let p = ["/usr/libexec/qemu-binfmt", "/usr/bin/qemu-aarch64-static?"];
        assert!(sandbox_covers(
            &p,
            "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
        ));
        assert!(sandbox_covers(&p, "/usr/bin/qemu-aarch64-static"));
        assert!(!sandbox_covers(&p, "/usr/bin/qemu-aarch64"));
        assert!(sandbox_covers(&["/usr=/usr"], "/usr/bin/x"));
        assert!(!sandbox_covers(&["/us"], "/usr/bin/x"));
    }

    const DEBIAN_CONF: &str = "# see https://nixos.org/nix/manual/#sec-conf-file\n\n# So far the sandbox feature does not seem to work on Debian:\n# https://github.com/NixOS/nixpkgs/pull/47794#issuecomment-429575989\nsandbox = false\n";

    #[test]
    fn adds_a_line_once() {
        let once = add_values(
            DEBIAN_CONF,
            &["extra-platforms"],
            &["aarch64-linux", "i686-linux"],
        );
        assert!(once.starts_with(DEBIAN_CONF));
        assert!(once.ends_with(&format!(
            "{COMMENT}\nextra-platforms = aarch64-linux i686-linux\n"
        )));
        let twice = add_values(
            &once,
            &["extra-platforms"],
            &["aarch64-linux", "i686-linux"],
        );
        assert_eq!(once, twice);
        let features = add_values(
            &twice,
            &["extra-experimental-features", "experimental-features"],
            &["nix-command", "flakes"],
        );
        assert_eq!(features.matches(COMMENT).count(), 1);
        assert!(features.ends_with("extra-experimental-features = nix-command flakes\n"));
        assert_eq!(file_value(&features, "sandbox").as_deref(), Some("false"));
    }

    #[test]
    fn extends_an_existing_line_keeping_the_rest() {
        let conf = "build-users-group = nixbld\nextra-platforms = riscv64-linux # mine\nexperimental-features = nix-command\ntrusted-users = root alice";
        let out = add_values(conf, &["extra-platforms"], &["aarch64-linux", "i686-linux"]);
        assert_eq!(
            out,
            "build-users-group = nixbld\nextra-platforms = riscv64-linux aarch64-linux i686-linux # mine\nexperimental-features = nix-command\ntrusted-users = root alice\n"
        );
        let out = add_values(
            &out,
            &["extra-experimental-features", "experimental-features"],
            &["nix-command", "flakes"],
        );
        assert!(out.contains("\nexperimental-features = nix-command flakes\n"));
        assert!(!out.contains(COMMENT));
    }
}
