//! The image to write: a host's built image or a path, its format, its exact
//! size and its record; [`super::source`] reads its raw bytes.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};

use super::device::FileId;

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
    /// The file's identity, checked again each time it is opened.
    pub file: FileId,
    /// The sha256 `cargo xtask sd` recorded for the file, checked while it is read.
    pub expect: Option<Expected>,
}

#[derive(Clone, Debug)]
pub struct Expected {
    pub host: String,
    pub sha256: String,
    /// The sha256 of the block map `sd` made beside the image (older records have none).
    pub bmap_sha256: Option<String>,
}

/// A host name (its image from `cargo xtask sd`) or a path to an image.
pub fn resolve(root: &Path, arg: &str) -> Result<Image> {
    let as_path = Path::new(arg);
    let looks_like_path = arg.contains('/') || arg.contains('.') || as_path.exists();
    if looks_like_path {
        open(as_path)
    } else {
        super::host::image(root, arg)
    }
}

/// What a non-regular file is, for messages.
fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_dir() {
        "a folder"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Opens a regular file without ever blocking: its type is checked with
/// `stat` before `open` (a FIFO would block `open`), `open` is non-blocking,
/// and the opened file must be the one checked (`want`, when given).
pub(super) fn open_regular(
    path: &Path,
    want: Option<&FileId>,
) -> Result<(File, std::fs::Metadata)> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "the image {} does not exist: check the path, or give a host name",
            path.display()
        )
    })?;
    if !meta.is_file() {
        bail!(
            "{} is {}, not an image file: give a .img or .img.zst file or a host name",
            path.display(),
            kind_of(meta.file_type())
        );
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("cannot open the image {}", path.display()))?;
    let meta = f.metadata()?;
    let id = file_id(path, &meta);
    let same = want.is_none_or(|w| w.dev == id.dev && w.ino == id.ino);
    if !meta.is_file() || !same {
        bail!(
            "{} was replaced while it was being read: run again",
            path.display()
        );
    }
    Ok((f, meta))
}

fn file_id(path: &Path, meta: &std::fs::Metadata) -> FileId {
    FileId {
        dev: (libc::major(meta.dev()), libc::minor(meta.dev())),
        ino: meta.ino(),
        path: path.display().to_string(),
    }
}

/// Reads the format and size of the image at `path`; fails on a missing or
/// non-regular file, an unknown format, or a compressed file whose frames
/// (zstd) or index (xz) are cut short.
pub fn open(path: &Path) -> Result<Image> {
    let (mut f, meta) = open_regular(path, None)?;
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
                anyhow!(
                    "{} is corrupt or truncated ({e}): rebuild it or download it again",
                    path.display()
                )
            })?
        }
        Format::Xz => Some(xz_size(path)?),
        Format::Gzip => None,
    };
    if size == Some(0) {
        bail!("{} is empty: rebuild it", path.display());
    }
    Ok(Image {
        path: path.to_path_buf(),
        format,
        size,
        file: file_id(path, &meta),
        expect: None,
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

/// The uncompressed size xz records in its index; an error when `xz --list`
/// fails (a truncated or corrupt file: the index is at its end).
fn xz_size(path: &Path) -> Result<u64> {
    need(Format::Xz)?;
    eprintln!("$ xz --robot --list {}", path.display());
    let out = Command::new("xz")
        .args(["--robot", "--list"])
        .arg(path)
        .output()
        .context("cannot run xz")?;
    let why = String::from_utf8_lossy(&out.stderr);
    let why = why.trim();
    if !out.status.success() {
        bail!(
            "{} is corrupt or truncated (xz --list: {}): rebuild it or download it again",
            path.display(),
            if why.is_empty() { "failed" } else { why }
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_xz_list(&text).with_context(|| {
        format!(
            "`xz --robot --list {}` printed no size: is xz too old? (xz-utils 5.x is needed)",
            path.display()
        )
    })
}

/// The uncompressed size from `xz --robot --list`'s `totals` line.
pub fn parse_xz_list(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("totals"))?;
    line.split('\t').nth(4)?.parse().ok()
}

/// Fails when the program that decodes `format` is missing.
pub(super) fn need(format: Format) -> Result<()> {
    let (program, package) = match format {
        Format::Xz => ("xz", "xz-utils"),
        Format::Gzip => ("gzip", "gzip"),
        _ => return Ok(()),
    };
    if !crate::exec::have(program) {
        bail!("`{program}` is not installed: apt-get install {package}");
    }
    Ok(())
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
    fn xz_list_totals() {
        // `xz --robot --list` of a 64 MiB image (xz 5.4, Debian 12).
        let text = "name\tnixos.img.xz\nfile\t1\t1\t9637416\t67108864\t0.144\tCRC64\t0\ntotals\t1\t1\t9637416\t67108864\t0.144\tCRC64\t0\t1\n";
        assert_eq!(parse_xz_list(text), Some(67_108_864));
        assert_eq!(parse_xz_list(""), None);
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
