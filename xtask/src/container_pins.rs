//! `cargo xtask check`: every container image in `hosts/<name>/containers.toml`
//! is pinned by digest (`name[:tag]@sha256:<64 hex>`), reported with
//! file:line. Reads the files only: no nixpkgs needed.

use anyhow::{Context, Result};
use toml::de::DeTable;

use crate::containers;
use crate::inventory::{Fleet, Problem, line_of};

/// Problems with the container files of every host in the fleet.
pub fn problems(fleet: &Fleet) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for host in &fleet.hosts {
        let rel = containers::file(&host.name);
        let text = match std::fs::read_to_string(fleet.root.join(&rel)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {rel}")),
        };
        problems.extend(file_problems(&rel, &text));
    }
    Ok(problems)
}

/// Whether an image reference names its content by digest.
pub fn pinned(image: &str) -> bool {
    image.rsplit_once("@sha256:").is_some_and(|(name, digest)| {
        !name.is_empty()
            && digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Problems in one containers.toml: not TOML, not the expected shape, or an
/// image without a digest.
pub fn file_problems(rel: &str, text: &str) -> Vec<Problem> {
    let fix_shape = "see the comment at the top of hosts/rpi-box-01/containers.toml for the format";
    let mut problems = Vec::new();
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc.into_inner(),
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            return vec![Problem::new(
                rel,
                line,
                format!("not valid TOML: {}", e.message().trim()),
                "correct the syntax",
            )];
        }
    };
    if let Err(e) = containers::parse(text) {
        problems.push(Problem::new(
            rel,
            0,
            format!("not a valid containers file: {}", e.to_string().trim()),
            fix_shape,
        ));
    }
    for table in crate::containers::tables(&doc) {
        let field = |k: &str| crate::containers::field(table, k);
        let name = field("name")
            .and_then(|v| v.get_ref().as_str())
            .unwrap_or("?");
        let Some(image) = field("image") else {
            continue;
        };
        let Some(reference) = image.get_ref().as_str() else {
            continue;
        };
        if !pinned(reference) {
            problems.push(Problem::new(
                rel,
                line_of(text, image.span().start),
                format!("container `{name}`: image `{reference}` is not pinned by digest"),
                format!("`cargo xtask pin {rel}` writes image = \"<image>:<tag>@sha256:<digest>\""),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "200689790a0a0ea48ca45992e0450bc26ccab5307375b41c84dfc4f2475937ab";

    #[test]
    fn pinned_references() {
        assert!(pinned(&format!("traefik/whoami@sha256:{DIGEST}")));
        assert!(pinned(&format!(
            "docker.io/traefik/whoami:v1.11.0@sha256:{DIGEST}"
        )));
        assert!(!pinned("traefik/whoami:v1.11.0"));
        assert!(!pinned("traefik/whoami@sha256:abc"));
        assert!(!pinned(&format!("@sha256:{DIGEST}")));
        assert!(!pinned(&format!(
            "traefik/whoami@sha256:{}",
            DIGEST.to_uppercase()
        )));
    }

    #[test]
    fn unpinned_image_has_its_line() {
        let text = format!(
            "# c\n[[container]]\nname = \"ok\"\nimage = \"a@sha256:{DIGEST}\"\n\n[[container]]\nname = \"web\"\nimage = \"nginx:latest\"\n"
        );
        let p = file_problems("hosts/a/containers.toml", &text);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].line, 8);
        assert!(p[0].message.contains("`web`"), "{}", p[0].message);
        assert!(p[0].message.contains("not pinned by digest"));
    }

    #[test]
    fn bad_toml_is_reported() {
        let p = file_problems("hosts/a/containers.toml", "[[container]\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("not valid TOML"));
    }

    #[test]
    fn shipped_example_is_pinned() {
        let text = include_str!("../../hosts/rpi-box-01/containers.toml");
        assert!(file_problems("x", text).is_empty());
        assert!(text.contains(DIGEST));
    }
}
