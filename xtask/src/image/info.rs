//! What `cargo xtask sd` records next to an image (`out/<host>/<host>.img.json`):
//! which commit it was built from, its checksum and size. `list` and
//! `status` read it.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::inventory;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub host: String,
    /// The Git commit the image was built from (`None` outside Git).
    pub commit: Option<String>,
    /// Whether tracked files had uncommitted changes (`None` outside Git).
    pub dirty: Option<bool>,
    /// sha256 of the `.img.zst` file.
    pub sha256: String,
    /// Size of the `.img.zst` file, in bytes.
    pub size: u64,
    /// sha256 and size of the raw image (what ends up on the card).
    pub raw_sha256: String,
    pub raw_size: u64,
    /// When it was built, RFC 3339 UTC.
    pub built: String,
    /// The Nix store path of the built image.
    pub store_path: String,
    /// sha256 of the block map `<host>.bmap` made beside the image (absent
    /// in records of older images), so `flash` refuses another map up front.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmap_sha256: Option<String>,
}

impl ImageInfo {
    /// `abc1234`, `abc1234+dirty`, or `no git`.
    pub fn short_commit(&self) -> String {
        match &self.commit {
            Some(c) => {
                let short = &c[..c.len().min(7)];
                if self.dirty == Some(true) {
                    format!("{short}+dirty")
                } else {
                    short.to_string()
                }
            }
            None => "no git".to_string(),
        }
    }
}

/// The record of the image built for `host` at its usual place, if any
/// (`None` also when it cannot be read: see [`load`]).
pub fn read(root: &Path, host: &str) -> Option<ImageInfo> {
    load(root, host).ok().flatten()
}

/// The record of the image built for `host`: `Ok(None)` when there is none,
/// an error saying what is wrong when it cannot be read or parsed.
pub fn load(root: &Path, host: &str) -> Result<Option<ImageInfo>> {
    let path = inventory::image_info_path(root, host);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let info =
        serde_json::from_str(&text).with_context(|| format!("{} is malformed", path.display()))?;
    Ok(Some(info))
}

impl ImageInfo {
    /// Fails unless both checksums are sha256 hex digests (what `flash` checks against).
    pub fn check_sums(&self) -> Result<()> {
        let bmap = self.bmap_sha256.iter().map(|v| ("bmap_sha256", v));
        for (name, v) in [("sha256", &self.sha256), ("raw_sha256", &self.raw_sha256)]
            .into_iter()
            .chain(bmap)
        {
            if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                anyhow::bail!("its {name} {v:?} is not a sha256 (64 hex digits)");
            }
        }
        Ok(())
    }
}

/// Writes the record atomically (temp file, then rename).
pub fn write(path: &Path, info: &ImageInfo) -> Result<()> {
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_string_pretty(info)? + "\n")
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Now, as RFC 3339 UTC (`2026-11-25T08:30:00Z`).
pub fn now_utc() -> String {
    rfc3339(crate::time::unix_now().max(0) as u64)
}

pub fn rfc3339(secs: u64) -> String {
    let (y, m, d, h, mi, s) = crate::time::civil(secs as i64);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_597_200), "2026-11-25T09:00:00Z");
    }

    #[test]
    fn malformed_records_are_errors() {
        let good = format!(
            r#"{{"host":"a","commit":null,"dirty":null,"sha256":"{h}","size":1,"raw_sha256":"{h}","raw_size":2,"built":"x","store_path":"/nix/store/x","wifi":null}}"#,
            h = "ab".repeat(32)
        );
        let parse = |t: &str| -> Result<ImageInfo> {
            let info: ImageInfo = serde_json::from_str(t)?;
            info.check_sums()?;
            Ok(info)
        };
        assert_eq!(parse(&good).unwrap().size, 1);
        let short = good.replacen(&"ab".repeat(32), "00", 1);
        let e = parse(&short).unwrap_err().to_string();
        assert!(e.contains("its sha256 \"00\" is not a sha256"), "{e}");
        assert!(parse(&good[..good.len() / 2]).is_err());
        assert!(parse(&good.replace(r#""size":1"#, r#""size":"1""#)).is_err());
        // A record of an older image has no bmap_sha256; a present one must be a sha256.
        assert_eq!(parse(&good).unwrap().bmap_sha256, None);
        let with = good.replace(r#""wifi":null"#, r#""wifi":null,"bmap_sha256":"x""#);
        let e = parse(&with).unwrap_err().to_string();
        assert!(e.contains("its bmap_sha256 \"x\""), "{e}");
    }

    #[test]
    fn short_commit() {
        let mut info = ImageInfo {
            host: "a".into(),
            commit: Some("0123456789abcdef".into()),
            dirty: Some(true),
            sha256: String::new(),
            size: 0,
            raw_sha256: String::new(),
            raw_size: 0,
            built: String::new(),
            store_path: String::new(),
            bmap_sha256: None,
        };
        assert_eq!(info.short_commit(), "0123456+dirty");
        info.dirty = Some(false);
        assert_eq!(info.short_commit(), "0123456");
        info.commit = None;
        assert_eq!(info.short_commit(), "no git");
    }
}
