//! The block map `flash` writes by: found beside the image (bmaptool's
//! names), checked against the image, and cut into the pieces of each
//! streamed chunk that are mapped.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::image::Image;
use crate::image::bmap::{self, Bmap};

/// Where a block map of `image` may be, in bmaptool's order: `<name>.bmap`,
/// then the name without its extensions one by one (`x.img.zst` →
/// `x.img.zst.bmap`, `x.img.bmap`, `x.bmap`, which is where `sd` puts it).
pub fn candidates(image: &Path) -> Vec<PathBuf> {
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    let mut out = vec![image.with_file_name(format!("{name}.bmap"))];
    let mut stem: &str = &name;
    while let Some(i) = stem.rfind('.') {
        stem = &stem[..i];
        if stem.is_empty() {
            break;
        }
        out.push(image.with_file_name(format!("{stem}.bmap")));
    }
    out
}

/// The map to write `img` by: `given`, else one found beside the image.
/// Refused, before anything is written, when it is not the map `sd`
/// recorded for a host's image (its sha256) or does not fit the image (its
/// size).
pub fn find(img: &Image, given: Option<&Path>) -> Result<Option<(PathBuf, Bmap)>> {
    let recorded = img.expect.as_ref().and_then(|e| e.bmap_sha256.as_deref());
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => match candidates(&img.path).into_iter().find(|p| p.is_file()) {
            Some(p) => p,
            None => {
                if recorded.is_some() {
                    eprintln!(
                        "warning: the block map `sd` made for {} is missing: writing every byte (`cargo xtask sd` makes it again)",
                        img.path.display()
                    );
                }
                return Ok(None);
            }
        },
    };
    let (bytes, sum) = bmap::read(&path)?;
    if let (Some(want), Some(e)) = (recorded, &img.expect)
        && sum != want
    {
        bail!(
            "{} is not the block map `cargo xtask sd` made for {}'s image: its sha256 is {sum}, the image's record says {want}; it was replaced or edited: build the image again (`cargo xtask sd {}`), or pass --no-bmap to write every byte; nothing was written",
            path.display(),
            e.host,
            e.host
        );
    }
    let m = bmap::from_bytes(&path, &bytes)?;
    if let Some(size) = img.size
        && size != m.image_size
    {
        bail!(
            "{} is not the block map of {}: it maps an image of {} bytes, the image is {size} bytes; make the map again (`cargo xtask sd`, `cargo xtask bmap`), remove it, or pass --no-bmap; nothing was written",
            path.display(),
            img.path.display(),
            m.image_size
        );
    }
    Ok(Some((path, m)))
}

/// The mapped byte spans `[a, b)` inside `[off, off + n)`, each with the
/// index of its range.
pub fn pieces(m: &Bmap, off: u64, n: u64) -> Vec<(usize, u64, u64)> {
    let end = off + n;
    let from = m.ranges.partition_point(|r| m.span(r).1 <= off);
    let mut out = Vec::new();
    for (i, r) in m.ranges.iter().enumerate().skip(from) {
        let (a, b) = m.span(r);
        if a >= end {
            break;
        }
        out.push((i, a.max(off), b.min(end)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::bmap::Range;

    #[test]
    fn names_tried_like_bmaptool() {
        let c = candidates(Path::new("out/h/h.img.zst"));
        let c: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            c,
            ["out/h/h.img.zst.bmap", "out/h/h.img.bmap", "out/h/h.bmap"]
        );
    }

    #[test]
    fn pieces_of_a_chunk() {
        let r = |first, last| Range {
            first,
            last,
            sha256: String::new(),
        };
        let m = Bmap {
            image_size: 10 * 4096 + 10,
            block_size: 4096,
            ranges: vec![r(0, 1), r(4, 6), r(10, 10)],
        };
        assert_eq!(
            pieces(&m, 0, 5 * 4096),
            vec![(0, 0, 8192), (1, 16384, 20480)]
        );
        assert_eq!(
            pieces(&m, 5 * 4096, 8 * 4096),
            vec![(1, 20480, 28672), (2, 40960, 40970)]
        );
        assert!(pieces(&m, 8192, 8192).is_empty());
    }
}
