//! The image to write: a host's built image or a path, its format, its exact
//! size, and a reader that yields its raw bytes.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::inventory;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Zstd,
    Xz,
    Gzip,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Zstd => "zstd",
            Format::Xz => "xz",
            Format::Gzip => "gzip",
        }
    }

    /// From the first bytes of the file, then its name.
    pub fn detect(magic: &[u8], name: &str) -> Option<Format> {
        if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Format::Zstd)
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Format::Xz)
        } else if magic.starts_with(&[0x1f, 0x8b]) {
            Some(Format::Gzip)
        } else if [".img", ".raw", ".iso"].iter().any(|e| name.ends_with(e)) {
            Some(Format::Raw)
        } else {
            None
        }
    }
}

#[derive(Clone, Debug)]
pub struct Image {
    pub path: PathBuf,
    pub format: Format,
    /// The exact number of bytes to write, when known before decompressing.
    pub size: Option<u64>,
}

/// A host name (its image from `cargo xtask sd`) or a path to an image.
pub fn resolve(root: &Path, arg: &str) -> Result<Image> {
    let as_path = Path::new(arg);
    let looks_like_path = arg.contains('/') || arg.contains('.') || as_path.exists();
    let path = if looks_like_path {
        as_path.to_path_buf()
    } else {
        let fleet = inventory::Fleet::load(root)?;
        fleet.host(arg)?;
        let p = inventory::image_path(root, arg);
        if !p.exists() {
            bail!(
                "no image for {arg} yet ({} is missing): build it with `cargo xtask sd {arg}`",
                p.display()
            );
        }
        if let Some(info) = crate::image::info::read(root, arg) {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if size != info.size {
                bail!(
                    "{} is {size} bytes but `cargo xtask sd` recorded {} bytes: it was changed or cut short; build it again with `cargo xtask sd {arg}`",
                    p.display(),
                    info.size
                );
            }
            eprintln!(
                "image of {arg}: built {} from commit {}",
                info.built,
                info.short_commit()
            );
        }
        p
    };
    open(&path)
}

/// Reads the format and size of the image at `path`; fails on a missing file,
/// an unknown format, or a compressed file whose frames are cut short.
pub fn open(path: &Path) -> Result<Image> {
    if !path.exists() {
        bail!(
            "the image {} does not exist: check the path, or give a host name",
            path.display()
        );
    }
    let mut f =
        File::open(path).with_context(|| format!("cannot open the image {}", path.display()))?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        bail!(
            "{} is not an image file: give a .img or .img.zst file or a host name",
            path.display()
        );
    }
    let mut magic = Vec::with_capacity(6);
    (&mut f).take(6).read_to_end(&mut magic)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let format = Format::detect(&magic, &name);
    for (ext, want) in [
        (".zst", Format::Zstd),
        (".xz", Format::Xz),
        (".gz", Format::Gzip),
    ] {
        if name.ends_with(ext) && format != Some(want) {
            bail!(
                "{} is named {ext} but is not {} data: the file is corrupt, rebuild or download it again",
                path.display(),
                want.as_str()
            );
        }
    }
    let format = format.with_context(|| {
        format!("{} has an unsupported format: give a raw .img or a .img.zst (.img.xz and .img.gz work too)", path.display())
    })?;
    let size = match format {
        Format::Raw => Some(meta.len()),
        Format::Zstd => {
            f.seek(SeekFrom::Start(0))?;
            zstd_content_size(BufReader::new(f), meta.len()).map_err(|e| {
                anyhow::anyhow!(
                    "{} is corrupt or truncated ({e}): rebuild it or download it again",
                    path.display()
                )
            })?
        }
        Format::Xz => xz_size(path),
        Format::Gzip => None,
    };
    if size == Some(0) {
        bail!("{} is empty: rebuild it", path.display());
    }
    Ok(Image {
        path: path.to_path_buf(),
        format,
        size,
    })
}

/// Walks every zstd frame (headers only) and adds up the content sizes.
/// `Ok(None)` when a frame does not record its size; `Err` when the data ends
/// inside a frame or is not zstd.
pub fn zstd_content_size<R: Read + Seek>(
    mut r: R,
    file_len: u64,
) -> std::result::Result<Option<u64>, String> {
    let mut pos: u64 = 0;
    let mut total: Option<u64> = Some(0);
    let mut frames = 0;
    let cut = |what: &str, at: u64| format!("the data ends inside {what} at byte {at}");
    while pos < file_len {
        let mut m = [0u8; 4];
        r.read_exact(&mut m)
            .map_err(|_| cut("a frame header", pos))?;
        let magic = u32::from_le_bytes(m);
        pos += 4;
        if magic & 0xffff_fff0 == 0x184d_2a50 {
            r.read_exact(&mut m)
                .map_err(|_| cut("a skippable frame", pos))?;
            let len = u32::from_le_bytes(m) as u64;
            r.seek(SeekFrom::Current(len as i64))
                .map_err(|e| e.to_string())?;
            pos += 4 + len;
            continue;
        }
        if magic != 0xfd2f_b528 {
            return Err(format!("no zstd frame at byte {}", pos - 4));
        }
        frames += 1;
        let mut b = [0u8; 1];
        r.read_exact(&mut b)
            .map_err(|_| cut("a frame header", pos))?;
        pos += 1;
        let fhd = b[0];
        let fcs_flag = fhd >> 6;
        let single = fhd & 0x20 != 0;
        let checksum = fhd & 0x04 != 0;
        if fhd & 0x08 != 0 {
            return Err(format!("bad frame header at byte {}", pos - 1));
        }
        let skip = (!single as u64) + [0u64, 1, 2, 4][(fhd & 3) as usize];
        let fcs_len = match fcs_flag {
            0 => single as usize,
            1 => 2,
            2 => 4,
            _ => 8,
        };
        r.seek(SeekFrom::Current(skip as i64))
            .map_err(|e| e.to_string())?;
        pos += skip;
        let mut v = [0u8; 8];
        r.read_exact(&mut v[..fcs_len])
            .map_err(|_| cut("a frame header", pos))?;
        pos += fcs_len as u64;
        let mut size = u64::from_le_bytes(v);
        if fcs_len == 2 {
            size += 256;
        }
        total = match (total, fcs_len) {
            (Some(t), 1..) => Some(t + size),
            _ => None,
        };
        loop {
            let mut h = [0u8; 3];
            r.read_exact(&mut h)
                .map_err(|_| cut("a block header", pos))?;
            pos += 3;
            let h = u32::from_le_bytes([h[0], h[1], h[2], 0]);
            let last = h & 1 != 0;
            let len = match (h >> 1) & 3 {
                1 => 1,
                3 => return Err(format!("bad block at byte {}", pos - 3)),
                _ => (h >> 3) as u64,
            };
            r.seek(SeekFrom::Current(len as i64))
                .map_err(|e| e.to_string())?;
            pos += len;
            if last {
                break;
            }
            if pos > file_len {
                return Err(cut("a block", file_len));
            }
        }
        if checksum {
            r.seek(SeekFrom::Current(4)).map_err(|e| e.to_string())?;
            pos += 4;
        }
        if pos > file_len {
            return Err(cut("the last block", file_len));
        }
    }
    if frames == 0 {
        return Err("no zstd frame".into());
    }
    Ok(total)
}

/// The uncompressed size xz records in its index.
fn xz_size(path: &Path) -> Option<u64> {
    let out = Command::new("xz")
        .args(["--robot", "--list"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("totals"))?;
    line.split('\t').nth(4)?.parse().ok()
}

/// The image's raw bytes. For xz and gzip the decoder is the `xz` / `gzip`
/// program (no extra crates); the child is returned so it can be waited on.
pub fn reader(img: &Image) -> Result<(Box<dyn Read + Send>, Option<Child>)> {
    let f = File::open(&img.path).with_context(|| format!("cannot open {}", img.path.display()))?;
    Ok(match img.format {
        Format::Raw => (Box::new(f), None),
        Format::Zstd => {
            let mut d =
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, f))?;
            d.window_log_max(31)?;
            (Box::new(d), None)
        }
        Format::Xz | Format::Gzip => {
            let program = if img.format == Format::Xz {
                "xz"
            } else {
                "gzip"
            };
            if !crate::exec::have(program) {
                bail!(
                    "`{program}` is not installed: apt-get install {}",
                    if program == "xz" { "xz-utils" } else { "gzip" }
                );
            }
            let mut child = Command::new(program)
                .arg("-dc")
                .stdin(f)
                .stdout(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot run {program}"))?;
            let out = child.stdout.take().expect("piped");
            (Box::new(out), Some(child))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn compress(data: &[u8], with_size: bool) -> Vec<u8> {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.include_contentsize(with_size).unwrap();
        if with_size {
            e.set_pledged_src_size(Some(data.len() as u64)).unwrap();
        }
        e.include_checksum(true).unwrap();
        std::io::Write::write_all(&mut e, data).unwrap();
        e.finish().unwrap()
    }

    fn data() -> Vec<u8> {
        (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn sums_frame_sizes() {
        let d = data();
        let mut z = compress(&d, true);
        assert_eq!(
            zstd_content_size(Cursor::new(&z), z.len() as u64),
            Ok(Some(d.len() as u64))
        );
        z.extend(compress(&d[..1000], true));
        assert_eq!(
            zstd_content_size(Cursor::new(&z), z.len() as u64),
            Ok(Some(d.len() as u64 + 1000))
        );
        let n = compress(&d, false);
        assert_eq!(zstd_content_size(Cursor::new(&n), n.len() as u64), Ok(None));
    }

    #[test]
    fn truncated_and_garbage_are_errors() {
        let z = compress(&data(), true);
        for cut in [3, 10, z.len() / 2, z.len() - 1] {
            let t = &z[..cut];
            assert!(
                zstd_content_size(Cursor::new(t), t.len() as u64).is_err(),
                "cut at {cut}"
            );
        }
        let g = b"hello world, not zstd";
        assert!(zstd_content_size(Cursor::new(g), g.len() as u64).is_err());
    }

    #[test]
    fn formats() {
        assert_eq!(
            Format::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0], "a.img.zst"),
            Some(Format::Zstd)
        );
        assert_eq!(
            Format::detect(&[0xfd, b'7', b'z', b'X', b'Z', 0], "a"),
            Some(Format::Xz)
        );
        assert_eq!(
            Format::detect(&[0x1f, 0x8b, 8, 0], "a.img.gz"),
            Some(Format::Gzip)
        );
        assert_eq!(Format::detect(&[0; 6], "a.img"), Some(Format::Raw));
        assert_eq!(Format::detect(&[0; 6], "a.tar"), None);
    }
}
