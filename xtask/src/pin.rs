//! The image references `cargo xtask pin` reads and rewrites: `image =` in
//! containers.toml and `image:` in compose.yaml, each with the byte range of
//! its text, so a rewrite changes those bytes only (comments and layout
//! stay); written through a temp file and a rename, never half.

use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result, bail};
use toml::de::DeTable;

use crate::compose;
use crate::inventory::line_of;

/// One image reference in one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Site {
    /// The file as shown to the user.
    pub file: String,
    pub line: usize,
    /// `container `web`` or `service `web``.
    pub owner: String,
    pub written: String,
    /// Where `written` is in the file's text; None when it cannot be
    /// rewritten in place (escapes in a quoted string).
    pub span: Option<Range<usize>>,
}

/// Whether `path` is a containers.toml (any `.toml`; else a compose file).
pub fn is_containers_toml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml")
}

/// The sites of one file's text.
pub fn sites(file: &str, text: &str, toml_file: bool) -> Result<Vec<Site>> {
    if toml_file {
        return toml_sites(file, text);
    }
    let doc = compose::yaml::parse(text)
        .map_err(|e| anyhow::anyhow!("{file}:{}: not valid YAML: {}", e.line, e.message))?;
    Ok(compose::images(text, &doc)
        .into_iter()
        .map(|i| Site {
            file: file.to_string(),
            line: i.line,
            owner: format!("service `{}`", i.service),
            written: i.written,
            span: i.span,
        })
        .collect())
}

fn toml_sites(file: &str, text: &str) -> Result<Vec<Site>> {
    let doc = DeTable::parse(text)
        .map_err(|e| anyhow::anyhow!("{file}: not valid TOML: {}", e.message().trim()))?
        .into_inner();
    let mut out = Vec::new();
    for table in crate::containers::tables(&doc) {
        let field = |k: &str| crate::containers::field(table, k);
        let name = field("name")
            .and_then(|v| v.get_ref().as_str())
            .unwrap_or("?");
        let Some(image) = field("image") else {
            continue;
        };
        let Some(written) = image.get_ref().as_str() else {
            continue;
        };
        let s = image.span();
        // The span holds the quotes: the value is inside when written plainly.
        let inner = s.start + 1..s.end.saturating_sub(1);
        let span = text
            .get(inner.clone())
            .filter(|t| *t == written)
            .map(|_| inner);
        out.push(Site {
            file: file.to_string(),
            line: line_of(text, s.start),
            owner: format!("container `{name}`"),
            written: written.to_string(),
            span,
        });
    }
    Ok(out)
}

/// `text` with each range replaced (ranges do not overlap).
pub fn rewrite(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = text.to_string();
    for (range, new) in edits {
        out.replace_range(range, &new);
    }
    out
}

/// Replaces `path` by `text` atomically: a temp file beside it (same
/// permissions), synced, renamed over it.
pub fn write_atomically(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().context("a file has a folder")?;
    let name = path
        .file_name()
        .context("a file has a name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.pin-tmp"));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        let perms = std::fs::metadata(path)?.permissions();
        std::fs::set_permissions(&tmp, perms)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "cannot write {}: {e:#} (the file is unchanged)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_rewrite_keeps_comments() {
        let text = "# top\n[[container]]\nname = \"web\" # the web\nimage = \"nginx:1.27\"   # keep me\nports = [\"80:80\"]\n";
        let s = sites("c.toml", text, true).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].line, 4);
        assert_eq!(s[0].owner, "container `web`");
        let new = rewrite(
            text,
            vec![(s[0].span.clone().unwrap(), "nginx:1.27@sha256:x".into())],
        );
        assert_eq!(new, text.replace("nginx:1.27\"", "nginx:1.27@sha256:x\""));
    }

    #[test]
    fn yaml_rewrite_keeps_comments() {
        let text =
            "# app\nservices:\n  a:\n    image: nginx:1   # web\n  b:\n    image: 'redis:7'\n";
        let s = sites("compose.yaml", text, false).unwrap();
        let edits = s
            .iter()
            .map(|x| (x.span.clone().unwrap(), format!("{}@d", x.written)))
            .collect();
        assert_eq!(
            rewrite(text, edits),
            "# app\nservices:\n  a:\n    image: nginx:1@d   # web\n  b:\n    image: 'redis:7@d'\n"
        );
    }

    #[test]
    fn atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("compose.yaml");
        std::fs::write(&p, "a").unwrap();
        write_atomically(&p, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
