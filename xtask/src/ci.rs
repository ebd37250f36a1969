//! What the GitHub workflows read from the repository, decided here once:
//! the host matrix (from the inventory), the app images (`apps/<name>/`),
//! the binary cache (`[fleet] cache`, `cache_key`) and whether the
//! workstation's Nix substitutes from it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::inventory::{FleetSettings, Host, INVENTORY, Problem};

/// The build matrix for `strategy.matrix: ${{ fromJSON(…) }}`: one entry
/// per host, sorted by name.
pub fn matrix(hosts: &[Host]) -> Value {
    let mut include: Vec<Value> = hosts
        .iter()
        .map(|h| json!({ "host": h.name, "model": h.model }))
        .collect();
    include.sort_by(|a, b| a["host"].as_str().cmp(&b["host"].as_str()));
    json!({ "include": include })
}

/// The image matrix: one entry per `apps/<name>/Dockerfile`, sorted.
pub fn apps(root: &Path) -> Result<Value> {
    let mut names = Vec::new();
    let dir = root.join("apps");
    if dir.is_dir() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if !e.path().join("Dockerfile").is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().to_string();
            if !app_name_ok(&name) {
                bail!(
                    "apps/{name}: an image name is lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit (GHCR's rule); rename the folder"
                );
            }
            names.push(name);
        }
    }
    names.sort();
    let include: Vec<Value> = names.iter().map(|n| json!({ "app": n })).collect();
    Ok(json!({ "include": include }))
}

fn app_name_ok(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// A substituter URL: `https://host[/path]`, no spaces or query.
pub fn cache_url_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    !host.is_empty()
        && !url.ends_with('/')
        && !url.contains(char::is_whitespace)
        && !url.contains(['?', '#'])
}

/// A Nix public key: `name:base64` of an ed25519 key (32 bytes: 44 chars).
pub fn cache_key_ok(key: &str) -> bool {
    let Some((name, b64)) = key.split_once(':') else {
        return false;
    };
    !name.is_empty()
        && !name.contains(char::is_whitespace)
        && b64.len() == 44
        && b64.ends_with('=')
        && b64[..43]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

/// `cache` and `cache_key` go together.
pub fn cache_pair_problems(text: &str, s: &FleetSettings) -> Vec<Problem> {
    let line = |key: &str| {
        text.lines()
            .position(|l| l.trim_start().starts_with(key) && l.contains('='))
            .map_or(0, |i| i + 1)
    };
    match (&s.cache, &s.cache_key) {
        (Some(_), None) => vec![Problem::new(
            INVENTORY,
            line("cache"),
            "`cache` has no `cache_key`: nothing would trust what the cache serves",
            "add the cache's public key under [fleet]: `cache_key = \"…\"` (Cachix shows it on the cache's page; Attic: `attic cache info <cache>`)",
        )],
        (None, Some(_)) => vec![Problem::new(
            INVENTORY,
            line("cache_key"),
            "`cache_key` has no `cache`",
            "add the cache's URL under [fleet]: `cache = \"https://…\"`, or remove `cache_key`",
        )],
        _ => Vec::new(),
    }
}

/// Which service a workflow pushes to (the repository variable
/// `PI_NIXOS_CACHE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheKind {
    Cachix,
    Attic,
}

/// What the push step of a workflow needs, as `key=value` lines for
/// `$GITHUB_OUTPUT`: Cachix's cache name (`https://<name>.cachix.org`), or
/// Attic's server and cache (`https://<server>[/…]/<cache>`).
pub fn cache_outputs(s: &FleetSettings, kind: CacheKind) -> Result<Vec<(&'static str, String)>> {
    let Some(url) = &s.cache else {
        bail!(
            "the repository variable PI_NIXOS_CACHE asks for a push to a binary cache, but {INVENTORY} names none: add `cache = \"https://…\"` and `cache_key = \"…\"` under [fleet] (documentation/ci.md), or delete the variable"
        );
    };
    let rest = url.trim_start_matches("https://");
    match kind {
        CacheKind::Cachix => {
            let Some(name) = rest
                .strip_suffix(".cachix.org")
                .filter(|n| !n.contains(['/', '.']))
            else {
                bail!(
                    "PI_NIXOS_CACHE is `cachix` but [fleet] cache = \"{url}\" is not a Cachix cache (https://<name>.cachix.org)"
                );
            };
            Ok(vec![("url", url.clone()), ("name", name.to_string())])
        }
        CacheKind::Attic => {
            let Some((server, name)) = rest.rsplit_once('/').filter(|(_, n)| !n.is_empty()) else {
                bail!(
                    "PI_NIXOS_CACHE is `attic` but [fleet] cache = \"{url}\" names no cache: an Attic substituter is https://<server>/<cache>"
                );
            };
            Ok(vec![
                ("url", url.clone()),
                ("server", format!("https://{server}")),
                ("name", name.to_string()),
            ])
        }
    }
}

/// When the fleet names a cache that the workstation's Nix does not use
/// (its effective `substituters` or key missing from
/// `trusted-public-keys`), the note saying so, with the fix.
pub fn substituter_note(s: &FleetSettings, config: &BTreeMap<String, String>) -> Option<String> {
    let (url, key) = (s.cache.as_deref()?, s.cache_key.as_deref()?);
    let words = |k: &str| -> Vec<&str> {
        config
            .get(k)
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default()
    };
    let same = |u: &&str| u.trim_end_matches('/') == url;
    let has_url =
        words("substituters").iter().any(same) || words("extra-substituters").iter().any(same);
    let has_key = words("trusted-public-keys").contains(&key)
        || words("extra-trusted-public-keys").contains(&key);
    if has_url && has_key {
        return None;
    }
    let missing = match (has_url, has_key) {
        (false, false) => "is not among this workstation's substituters",
        (false, true) => "is not among this workstation's substituters (its key is trusted)",
        _ => "is a substituter here but its key is not in trusted-public-keys",
    };
    Some(format!(
        "the binary cache CI pushes to ({url}, [fleet] cache in {INVENTORY}) {missing}: `sd` and `deploy` build here what CI already built. Add to /etc/nix/nix.conf, then `sudo systemctl restart nix-daemon`:\n    extra-substituters = {url}\n    extra-trusted-public-keys = {key}\n  (documentation/ci.md, \"The binary cache\")"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::parse_fleet;

    const KEY: &str = "my-fleet.cachix.org-1:8Nph6gH5Y4rHk1X0y6D6mM0kR3xD1G4JcE0iF1pQy7A=";

    fn settings(cache: &str) -> FleetSettings {
        FleetSettings {
            cache: Some(cache.to_string()),
            cache_key: Some(KEY.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn matrix_follows_the_inventory() {
        let text = "[[host]]\nname = \"b\"\nmodel = \"pi3\"\naddress = \"b.local\"\n[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"a.local\"\n";
        let (hosts, _, problems) = parse_fleet(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            matrix(&hosts),
            json!({"include": [{"host": "a", "model": "pi4"}, {"host": "b", "model": "pi3"}]})
        );
        assert_eq!(matrix(&[]), json!({"include": []}));
    }

    #[test]
    fn urls_and_keys() {
        assert!(cache_url_ok("https://my-fleet.cachix.org"));
        assert!(cache_url_ok("https://attic.example.org/fleet"));
        assert!(!cache_url_ok("http://my-fleet.cachix.org"));
        assert!(!cache_url_ok("https://my-fleet.cachix.org/"));
        assert!(!cache_url_ok("https://"));
        assert!(cache_key_ok(KEY));
        assert!(cache_key_ok(
            "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
        ));
        assert!(!cache_key_ok("my-fleet.cachix.org-1"));
        assert!(!cache_key_ok("x:short="));
    }

    #[test]
    fn cache_settings_are_read_and_paired() {
        let (_, s, p) = parse_fleet(&format!(
            "[fleet]\ncache = \"https://my-fleet.cachix.org\"\ncache_key = \"{KEY}\"\n"
        ));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.cache.as_deref(), Some("https://my-fleet.cachix.org"));
        let (_, _, p) = parse_fleet("[fleet]\ncache = \"https://my-fleet.cachix.org\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, 2);
        assert!(p[0].message.contains("no `cache_key`"));
        let (_, _, p) = parse_fleet("[fleet]\ncache = \"my-fleet.cachix.org\"\n");
        assert!(
            p[0].message.contains("not a valid binary cache URL"),
            "{p:?}"
        );
    }

    #[test]
    fn cachix_and_attic_outputs() {
        let out =
            cache_outputs(&settings("https://my-fleet.cachix.org"), CacheKind::Cachix).unwrap();
        assert_eq!(out[1], ("name", "my-fleet".to_string()));
        let out = cache_outputs(
            &settings("https://attic.example.org/fleet"),
            CacheKind::Attic,
        )
        .unwrap();
        assert_eq!(out[1], ("server", "https://attic.example.org".to_string()));
        assert_eq!(out[2], ("name", "fleet".to_string()));
        let e = cache_outputs(
            &settings("https://attic.example.org/fleet"),
            CacheKind::Cachix,
        );
        assert!(format!("{:#}", e.unwrap_err()).contains("not a Cachix cache"));
        let e = cache_outputs(&settings("https://attic.example.org"), CacheKind::Attic);
        assert!(format!("{:#}", e.unwrap_err()).contains("names no cache"));
        let e = cache_outputs(&FleetSettings::default(), CacheKind::Attic);
        assert!(format!("{:#}", e.unwrap_err()).contains("names none"));
    }

    #[test]
    fn substituter_note_names_the_fix() {
        let s = settings("https://my-fleet.cachix.org");
        // Nix 2.26 `nix config show` as the official installer leaves it.
        let plain = crate::binfmt::nixconf::parse_show_config(
            "substituters = https://cache.nixos.org/\ntrusted-public-keys = cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\n",
        );
        let note = substituter_note(&s, &plain).unwrap();
        assert!(
            note.contains("is not among this workstation's substituters"),
            "{note}"
        );
        assert!(note.contains("extra-substituters = https://my-fleet.cachix.org\n"));
        assert!(note.contains(&format!("extra-trusted-public-keys = {KEY}")));
        let added = crate::binfmt::nixconf::parse_show_config(&format!(
            "substituters = https://cache.nixos.org/ https://my-fleet.cachix.org/\ntrusted-public-keys = cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY= {KEY}\n"
        ));
        assert_eq!(substituter_note(&s, &added), None);
        let no_key = crate::binfmt::nixconf::parse_show_config(
            "substituters = https://cache.nixos.org/ https://my-fleet.cachix.org\ntrusted-public-keys = \n",
        );
        assert!(
            substituter_note(&s, &no_key)
                .unwrap()
                .contains("key is not in trusted-public-keys")
        );
        assert_eq!(substituter_note(&FleetSettings::default(), &plain), None);
    }

    #[test]
    fn app_names() {
        assert!(app_name_ok("web"));
        assert!(app_name_ok("my-app.v2"));
        assert!(!app_name_ok("Web"));
        assert!(!app_name_ok("-x"));
    }
}
