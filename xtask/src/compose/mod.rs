//! A Pi's Docker Compose projects: `hosts/<host>/compose/<project>/compose.yaml`,
//! run as they are by NixOS (modules/compose.nix). The xtask reads them to
//! check them (check.rs) and to pin their images (`cargo xtask pin`).

pub mod check;
pub mod interpolate;
pub mod ports;
pub mod yaml;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use interpolate::Env;

/// The file of a project, relative to the repository root.
pub const FILE: &str = "compose.yaml";

/// One project folder of one host.
#[derive(Clone, Debug)]
pub struct Project {
    pub host: String,
    pub name: String,
    /// `hosts/<host>/compose/<name>`, relative to the repository root.
    pub dir: String,
}

impl Project {
    pub fn file(&self) -> String {
        format!("{}/{FILE}", self.dir)
    }
}

/// A host's projects, sorted by name (none when it has no compose folder).
pub fn projects(root: &Path, host: &str) -> Result<Vec<Project>> {
    let rel = format!("hosts/{host}/compose");
    let entries = match std::fs::read_dir(root.join(&rel)) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {rel}")),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {rel}"))?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        out.push(Project {
            host: host.to_string(),
            dir: format!("{rel}/{name}"),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Compose's rule for project names: lowercase letters, digits, `-` and `_`,
/// starting with a letter or digit.
pub fn valid_project_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The project's `.env` (Compose reads it for interpolation; on the Pi the
/// unit's environment is otherwise empty, so this is all there is).
pub fn env(root: &Path, dir: &str) -> Result<(Env, Vec<usize>)> {
    let path: PathBuf = root.join(dir).join(".env");
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(interpolate::parse_env_file(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {dir}/.env")),
    }
}

/// The services a host's projects declare, as `<project>/<service>`: what
/// the deploy health check and `status` expect running (and healthy where
/// a healthcheck is declared). A project that does not parse declares
/// nothing here (`check` reports it).
pub fn services(root: &Path, host: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in projects(root, host)? {
        let Ok(text) = std::fs::read_to_string(root.join(p.file())) else {
            continue;
        };
        let Ok(doc) = yaml::parse(&text) else {
            continue;
        };
        if let Some(services) = doc.get("services") {
            out.extend(
                services
                    .entries()
                    .into_iter()
                    .filter_map(|(k, _)| k.as_str().map(|s| format!("{}/{s}", p.name))),
            );
        }
    }
    Ok(out)
}

/// An image reference written in a compose file: the service, the value as
/// written, its line and the byte range of the value in the text (for pin).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRef {
    pub service: String,
    pub written: String,
    pub line: usize,
    /// Where `written` is in the text, when it is there verbatim.
    pub span: Option<std::ops::Range<usize>>,
}

/// Every service's `image:` of a parsed compose file.
pub fn images(text: &str, doc: &yaml::Node) -> Vec<ImageRef> {
    let Some(services) = doc.get("services") else {
        return Vec::new();
    };
    services
        .entries()
        .into_iter()
        .filter_map(|(name, svc)| {
            let image = svc.get("image")?;
            let written = image.as_str()?.to_string();
            // A quoted scalar starts at its quote.
            let start = image.offset
                + usize::from(matches!(
                    text.as_bytes().get(image.offset),
                    Some(b'"' | b'\'')
                ));
            let span = text
                .get(start..start + written.len())
                .filter(|t| *t == written)
                .map(|_| start..start + written.len());
            Some(ImageRef {
                service: name.as_str().unwrap_or("?").to_string(),
                written,
                line: image.line,
                span,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_spans() {
        let text = "services:\n  a:\n    image: nginx:1\n  b:\n    image: \"redis:7\" # c\n  c:\n    build: .\n";
        let doc = yaml::parse(text).unwrap();
        let refs = images(text, &doc);
        assert_eq!(refs.len(), 2);
        assert_eq!(&text[refs[0].span.clone().unwrap()], "nginx:1");
        assert_eq!(refs[1].line, 5);
        assert_eq!(&text[refs[1].span.clone().unwrap()], "redis:7");
    }

    #[test]
    fn services_of_a_host() {
        let root = tempfile::tempdir().unwrap();
        for (p, text) in [
            ("web", "services:\n  nginx: {}\n  app: {}\n"),
            ("db", "services:\n  pg: {}\n"),
            ("bad", "["),
        ] {
            let d = root.path().join("hosts/h/compose").join(p);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(FILE), text).unwrap();
        }
        assert_eq!(
            services(root.path(), "h").unwrap(),
            ["db/pg", "web/nginx", "web/app"]
        );
        assert!(services(root.path(), "other").unwrap().is_empty());
    }

    #[test]
    fn project_names() {
        assert!(valid_project_name("web-1_a"));
        assert!(!valid_project_name("Web"));
        assert!(!valid_project_name("-a"));
        assert!(!valid_project_name(""));
    }
}
