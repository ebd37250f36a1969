//! A host's Docker containers: `hosts/<name>/containers.toml`, one
//! `[[container]]` table each. Nix maps them to
//! `virtualisation.oci-containers.containers` (modules/containers.nix); the
//! xtask reads the same file to check images and health without nixpkgs.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Container {
    pub name: String,
    /// `repository@sha256:<digest>`, optionally with a tag before the `@`.
    pub image: String,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    #[serde(default)]
    pub environment: std::collections::BTreeMap<String, String>,
    /// Secrets (`cargo xtask secret`) given to it as environment files:
    /// each `secrets/<name>.age` holds `KEY=value` lines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    container: Vec<Container>,
}

/// The `[[container]]` tables of a containers.toml parsed with its spans
/// (for the checks and rewrites that name lines), whatever else is wrong
/// with it.
pub fn tables<'a, 'b>(doc: &'b toml::de::DeTable<'a>) -> Vec<&'b toml::de::DeTable<'a>> {
    doc.iter()
        .find(|(k, _)| k.get_ref().as_ref() == "container")
        .and_then(|(_, v)| v.get_ref().as_array())
        .map(|list| list.iter().filter_map(|i| i.get_ref().as_table()).collect())
        .unwrap_or_default()
}

/// A field of such a table, with its span.
pub fn field<'a, 'b>(
    table: &'b toml::de::DeTable<'a>,
    key: &str,
) -> Option<&'b toml::Spanned<toml::de::DeValue<'a>>> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// Path of a host's container file, relative to the repository root.
pub fn file(host: &str) -> String {
    format!("hosts/{host}/containers.toml")
}

/// The containers a host declares (none when it has no containers.toml).
pub fn read(root: &Path, host: &str) -> Result<Vec<Container>> {
    let rel = file(host);
    let text = match std::fs::read_to_string(root.join(&rel)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {rel}")),
    };
    parse(&text).with_context(|| format!("{rel} is not valid"))
}

pub fn parse(text: &str) -> Result<Vec<Container>> {
    Ok(toml::from_str::<File>(text)?.container)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_containers() {
        let c = parse(
            "[[container]]\nname = \"web\"\nimage = \"nginx@sha256:abc\"\nports = [\"80:80\"]\n",
        )
        .unwrap();
        assert_eq!(c[0].name, "web");
        assert_eq!(c[0].ports, vec!["80:80"]);
    }

    #[test]
    fn unknown_key_is_an_error() {
        assert!(parse("[[container]]\nname = \"a\"\nimage = \"b\"\nport = 1\n").is_err());
    }
}
