//! The image to write: a host's built image or a path, its format, its exact
//! size, and a reader that yields its raw bytes.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, Result, anyhow, bail};
use sha2::{Digest, Sha256};

use super::device::FileId;
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
    /// The file's identity, checked again each time it is opened.
    pub file: FileId,
    /// The sha256 `cargo xtask sd` recorded for the file, checked while it is read.
    pub expect: Option<Expected>,
}

#[derive(Clone, Debug)]
pub struct Expected {
    pub host: String,
    pub sha256: String,
}

/// A host name (its image from `cargo xtask sd`) or a path to an image.
pub fn resolve(root: &Path, arg: &str) -> Result<Image> {
    let as_path = Path::new(arg);
    let looks_like_path = arg.contains('/') || arg.contains('.') || as_path.exists();
    if looks_like_path {
        return open(as_path);
    }
    host_problems(root, arg)?;
    let p = inventory::image_path(root, arg);
    if !p.exists() {
        bail!(
            "no image for {arg} yet ({} is missing): build it with `cargo xtask sd {arg}`",
            p.display()
        );
    }
    let json = inventory::image_info_path(root, arg);
    let info = crate::image::info::load(root, arg).map_err(|e| {
        anyhow!(
            "{e:#}: the image cannot be checked against its record; build it again with `cargo xtask sd {arg}` (or give the file's path to write it unchecked)"
        )
    })?;
    let mut img = open(&p)?;
    match info {
        Some(info) => {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if size != info.size {
                bail!(
                    "{} is {size} bytes but `cargo xtask sd` recorded {} bytes: it was changed or cut short; build it again with `cargo xtask sd {arg}`",
                    p.display(),
                    info.size
                );
            }
            eprintln!(
                "image of {arg}: built {} from commit {}; its sha256 is checked against {} while it is read",
                info.built,
                info.short_commit(),
                json.display()
            );
            img.expect = Some(Expected {
                host: arg.to_string(),
                sha256: info.sha256.to_ascii_lowercase(),
            });
        }
        None => eprintln!(
            "warning: {} is missing: where the image comes from and whether it changed cannot be checked (`cargo xtask sd {arg}` writes it)",
            json.display()
        ),
    }
    Ok(img)
}

/// Loads the fleet and refuses only for problems of `host` (its entry in
/// the inventory, its folder): the image is already built, so problems of
/// other hosts are only mentioned.
fn host_problems(root: &Path, host: &str) -> Result<()> {
    let (fleet, problems) = inventory::Fleet::read(root)?;
    let list =
        |ps: &[&inventory::Problem]| -> String { ps.iter().map(|p| format!("\n  {p}")).collect() };
    if let Err(e) = fleet.host(host) {
        if problems.is_empty() {
            return Err(e);
        }
        let all: Vec<&inventory::Problem> = problems.iter().collect();
        bail!(
            "{e:#}; the fleet definition has {} problem(s):{}",
            all.len(),
            list(&all)
        );
    }
    let text = std::fs::read_to_string(root.join(inventory::INVENTORY)).unwrap_or_default();
    let (own, other): (Vec<&inventory::Problem>, Vec<&inventory::Problem>) = problems
        .iter()
        .partition(|p| problem_of(&fleet, &text, host, p));
    if !own.is_empty() {
        bail!(
            "the definition of {host} has {} problem(s):{}\nfix them (`cargo xtask check`), then build its image again with `cargo xtask sd {host}`",
            own.len(),
            list(&own)
        );
    }
    if !other.is_empty() {
        eprintln!(
            "warning: the fleet definition has {} problem(s) elsewhere (`cargo xtask check` lists them); they do not touch {host}'s built image",
            other.len()
        );
    }
    Ok(())
}

/// Whether a problem is in `host`'s folder or its `[[host]]` entry (the
/// lines from its header to the next `[[host]]` header of `inventory`).
pub fn problem_of(
    fleet: &inventory::Fleet,
    inventory: &str,
    host: &str,
    p: &inventory::Problem,
) -> bool {
    if p.file.starts_with(&format!("hosts/{host}/")) {
        return true;
    }
    if p.file != inventory::INVENTORY || p.line == 0 {
        return false;
    }
    let header = inventory
        .lines()
        .enumerate()
        .filter(|(i, l)| l.trim_start().starts_with("[[host]]") && i + 1 <= p.line)
        .map(|(i, _)| i + 1)
        .last();
    header.is_some_and(|line| fleet.hosts.iter().any(|h| h.line == line && h.name == host))
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
fn open_regular(path: &Path, want: Option<&FileId>) -> Result<(File, std::fs::Metadata)> {
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
fn need(format: Format) -> Result<()> {
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

/// The image's decoded bytes (`data`), and what is checked once they end
/// ([`Source::finish`]): the exit of the `xz` / `gzip` decoder, and the
/// file's sha256 against its record, hashed from what the decoder read.
pub struct Source {
    pub data: Box<dyn Read + Send>,
    child: Option<Decoder>,
    check: Option<Check>,
}

struct Decoder {
    child: Child,
    shown: String,
    stderr: Option<thread::JoinHandle<String>>,
    feeder: Option<thread::JoinHandle<()>>,
}

struct Check {
    want: Expected,
    path: PathBuf,
    hasher: Arc<Mutex<Sha256>>,
    /// The same open file: what the decoder left unread is hashed from it.
    rest: File,
}

/// Hashes every byte read through it.
struct Hashing {
    inner: File,
    hasher: Arc<Mutex<Sha256>>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&buf[..n]);
        Ok(n)
    }
}

impl Source {
    /// Called once `data` has ended: the decoder's exit, then the sha256.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(mut d) = self.child.take() {
            let status = d.child.wait()?;
            if let Some(f) = d.feeder.take() {
                let _ = f.join();
            }
            let said = d
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default();
            let said = said.trim();
            if said.contains("trailing garbage") {
                bail!(
                    "the image has trailing garbage after its compressed data ({said}): it is corrupt or something was appended to it; download or build it again"
                );
            }
            if !status.success() {
                bail!(
                    "`{}` failed ({status}{}{said}): the image is corrupt; download or build it again",
                    d.shown,
                    if said.is_empty() { "" } else { ": " }
                );
            }
        }
        if let Some(c) = self.check.take() {
            let mut rest = c.rest;
            let mut buf = vec![0u8; 1 << 20];
            let mut h = c.hasher.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match rest.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => h.update(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("cannot read the image"),
                }
            }
            let got = format!("{:x}", h.clone().finalize());
            if got != c.want.sha256 {
                bail!(
                    "{} does not match its record: its sha256 is {got}, `cargo xtask sd` recorded {}; it was changed after it was built: build it again with `cargo xtask sd {}`",
                    c.path.display(),
                    c.want.sha256,
                    c.want.host
                );
            }
        }
        Ok(())
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(d) = &mut self.child {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
    }
}

/// The image's raw bytes. For xz and gzip the decoder is the `xz` / `gzip`
/// program (no extra crates), its errors collected for [`Source::finish`].
pub fn reader(img: &Image) -> Result<Source> {
    let (f, _) = open_regular(&img.path, Some(&img.file))?;
    let (file, check) = match &img.expect {
        Some(want) => {
            let hasher = Arc::new(Mutex::new(Sha256::new()));
            let rest = f.try_clone()?;
            (
                Input::Hashed(Hashing {
                    inner: f,
                    hasher: hasher.clone(),
                }),
                Some(Check {
                    want: want.clone(),
                    path: img.path.clone(),
                    hasher,
                    rest,
                }),
            )
        }
        None => (Input::Plain(f), None),
    };
    let (data, child): (Box<dyn Read + Send>, _) = match img.format {
        Format::Raw => (file.boxed(), None),
        Format::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
                1 << 20,
                file.boxed(),
            ))?;
            d.window_log_max(31)?;
            (Box::new(d), None)
        }
        Format::Xz | Format::Gzip => {
            need(img.format)?;
            let program = if img.format == Format::Xz {
                "xz"
            } else {
                "gzip"
            };
            let shown = format!("{program} -dc < {}", img.path.display());
            eprintln!("$ {shown}");
            let stdin = match &file {
                Input::Plain(f) => Stdio::from(f.try_clone()?),
                Input::Hashed(_) => Stdio::piped(),
            };
            let mut child = Command::new(program)
                .arg("-dc")
                .stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("cannot run {program}"))?;
            let out = child.stdout.take().context("no stdout")?;
            let mut err = child.stderr.take().context("no stderr")?;
            let stderr = thread::spawn(move || {
                let mut s = String::new();
                let _ = (&mut err).take(64 << 10).read_to_string(&mut s);
                let _ = io::copy(&mut err, &mut io::sink());
                s
            });
            let feeder = match (file, child.stdin.take()) {
                (Input::Hashed(mut h), Some(mut to)) => Some(thread::spawn(move || {
                    // A decoder that stops early closes the pipe: never die of SIGPIPE.
                    unsafe {
                        let mut set: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut set);
                        libc::sigaddset(&mut set, libc::SIGPIPE);
                        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    }
                    let _ = io::copy(&mut h, &mut to);
                })),
                _ => None,
            };
            (
                Box::new(out) as Box<dyn Read + Send>,
                Some(Decoder {
                    child,
                    shown,
                    stderr: Some(stderr),
                    feeder,
                }),
            )
        }
    };
    Ok(Source { data, child, check })
}

enum Input {
    Plain(File),
    Hashed(Hashing),
}

impl Input {
    fn boxed(self) -> Box<dyn Read + Send> {
        match self {
            Input::Plain(f) => Box::new(f),
            Input::Hashed(h) => Box::new(h),
        }
    }
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
    fn problems_belong_to_the_host_whose_entry_or_folder_has_them() {
        let text = "admin = 1\n\n[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"192.0.2.1\"\n\n[[host]]  # the second\nname = \"b\"\nmodel = \"pi4\"\naddress = \"192.0.2.2\"\n";
        let (hosts, _) = inventory::parse_inventory(text);
        assert_eq!(hosts.len(), 2);
        let fleet = inventory::Fleet {
            root: PathBuf::new(),
            hosts,
            key_lines: vec![],
        };
        let p = |file: &str, line: usize| inventory::Problem::new(file, line, "x", "");
        let of = |host: &str, pr: &inventory::Problem| problem_of(&fleet, text, host, pr);
        assert!(of("a", &p("hosts/fleet.toml", 5)));
        assert!(!of("b", &p("hosts/fleet.toml", 5)));
        assert!(of("b", &p("hosts/fleet.toml", 8)));
        assert!(of("b", &p("hosts/fleet.toml", 11)));
        assert!(!of("a", &p("hosts/fleet.toml", 1)), "before any host");
        assert!(!of("a", &p("hosts/fleet.toml", 0)), "the whole file");
        assert!(of("b", &p("hosts/b/default.nix", 3)));
        assert!(!of("a", &p("hosts/b/default.nix", 3)));
        assert!(!of("a", &p("keys/authorized_keys", 1)));
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
