//! Streaming an image onto a device (decompression on its own thread, large
//! aligned `O_DIRECT` writes, the first MiB last); [`super::verify`] reads it back.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64;

use super::image::Image;
use super::map::pieces;
use super::progress::Progress;
use super::source::{self, Source};
use super::sys::{self, AlignedBuf};
use crate::image::bmap::Bmap;

/// Bytes per write and per read-back.
pub const CHUNK: usize = 4 << 20;
/// Buffers in flight between the decoder and the writer.
pub(super) const BUFFERS: usize = 4;
/// Written last, so an interrupted write leaves no partition table.
pub const HEAD: usize = 1 << 20;

/// The device being written, opened once.
pub struct Target {
    pub file: File,
    pub path: String,
    pub size: u64,
    pub direct: bool,
    pub block: usize,
}

pub struct Written {
    /// The image's size.
    pub bytes: u64,
    /// The bytes written: the mapped ones with a block map, else all.
    pub mapped: u64,
    /// Each piece written (offset, length, xxh3), compared on read-back.
    pub pieces: Vec<(u64, usize, u64)>,
    pub time: Duration,
}

/// The spans of the chunk at `off` (`n` bytes) to write: all of it, or its
/// mapped pieces with the index of their range.
pub(super) fn spans(map: Option<&Bmap>, off: u64, n: usize) -> Vec<(Option<usize>, u64, u64)> {
    match map {
        None => vec![(None, off, off + n as u64)],
        Some(m) => pieces(m, off, n as u64)
            .into_iter()
            .map(|(i, a, b)| (Some(i), a, b))
            .collect(),
    }
}

fn map_mismatch(what: String) -> anyhow::Error {
    anyhow!(
        "the image does not match its block map: {what}; the image or its .bmap was changed after the map was made: make both again (`cargo xtask sd`), or pass --no-bmap to write the image whole"
    )
}

/// A decoded chunk: its buffer, length, and the pieces to write (start,
/// end, xxh3).
type Checked = Result<(AlignedBuf, usize, Vec<(u64, u64, u64)>)>;

/// Between the decoder and the writer, on its own thread so the writer only
/// writes: cuts each chunk into the pieces to write (the mapped ones with a
/// block map), checks each range's sha256 once its last byte is decoded,
/// and hashes each piece (xxh3) for the read-back.
fn spawn_checker(rx: Receiver<Chunk>, map: Option<Bmap>) -> Receiver<Checked> {
    let (tx, out) = sync_channel::<Checked>(BUFFERS);
    thread::spawn(move || {
        let mut off: u64 = 0;
        let mut range: Option<(usize, Sha256)> = None;
        for c in rx {
            let (buf, n) = match c {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let m = map.as_ref();
            if let Some(m) = m
                && off + n as u64 > m.image_size
            {
                let _ = tx.send(Err(map_mismatch(format!(
                    "the image is longer than the {} bytes the map says",
                    m.image_size
                ))));
                return;
            }
            let mut list = Vec::new();
            for (i, a, b) in spans(m, off, n) {
                let data = &buf[(a - off) as usize..(b - off) as usize];
                if let (Some(m), Some(i)) = (m, i) {
                    if range.as_ref().map(|r| r.0) != Some(i) {
                        range = Some((i, Sha256::new()));
                    }
                    if let Some((_, h)) = &mut range {
                        h.update(data);
                    }
                    let r = &m.ranges[i];
                    let (start, end) = m.span(r);
                    if b == end
                        && let Some((_, h)) = range.take()
                    {
                        let got = format!("{:x}", h.finalize());
                        if got != r.sha256 {
                            let _ = tx.send(Err(map_mismatch(format!(
                                "blocks {}-{} (bytes {start}-{end}) have sha256 {got}, the map says {}",
                                r.first, r.last, r.sha256
                            ))));
                            return;
                        }
                    }
                }
                if b > a {
                    list.push((a, b, xxh3_64(data)));
                }
            }
            off += n as u64;
            if tx.send(Ok((buf, n, list))).is_err() {
                return;
            }
        }
    });
    out
}

type Chunk = Result<(AlignedBuf, usize)>;

/// Decompresses on its own thread into recycled aligned buffers. A chunk
/// shorter than CHUNK is the last one; it is sent only after the source's
/// checks passed ([`Source::finish`]: decoder exit, sha256), so a failed
/// check arrives before the writer could write the first MiB.
pub(super) fn spawn_decoder(mut src: Source) -> (Receiver<Chunk>, SyncSender<AlignedBuf>) {
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(BUFFERS);
    for _ in 0..BUFFERS {
        free_tx
            .send(AlignedBuf::new(CHUNK))
            .expect("room for every buffer");
    }
    let (tx, rx) = sync_channel::<Chunk>(BUFFERS);
    thread::spawn(move || {
        let mut total: u64 = 0;
        while let Ok(mut buf) = free_rx.recv() {
            if sys::interrupted() {
                return;
            }
            let mut n = 0;
            while n < CHUNK {
                match src.data.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(anyhow!(
                            "the image is corrupt or truncated after {} bytes of data ({e}): rebuild or download it again",
                            total + n as u64
                        )));
                        return;
                    }
                }
            }
            total += n as u64;
            let last = n < CHUNK;
            if last && let Err(e) = src.finish() {
                let _ = tx.send(Err(e));
                return;
            }
            if tx.send(Ok((buf, n))).is_err() || last {
                return;
            }
        }
    });
    (rx, free_tx)
}

fn set_direct(f: &File, on: bool) {
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        let fl = if on {
            fl | libc::O_DIRECT
        } else {
            fl & !libc::O_DIRECT
        };
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl);
    }
}

impl Target {
    /// Writes `data` at `off`; a tail that is not a whole block goes through
    /// the page cache (flushed by the final fsync).
    fn write_at(&self, data: &[u8], off: u64) -> io::Result<()> {
        let whole = if self.direct {
            data.len() / self.block * self.block
        } else {
            data.len()
        };
        self.file.write_all_at(&data[..whole], off)?;
        if whole < data.len() {
            set_direct(&self.file, false);
            let r = self.file.write_all_at(&data[whole..], off + whole as u64);
            set_direct(&self.file, true);
            r?;
        }
        Ok(())
    }

    pub(super) fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let whole = if self.direct {
            buf.len() / self.block * self.block
        } else {
            buf.len()
        };
        self.file.read_exact_at(&mut buf[..whole], off)?;
        if whole < buf.len() {
            set_direct(&self.file, false);
            let r = self
                .file
                .read_exact_at(&mut buf[whole..], off + whole as u64);
            set_direct(&self.file, true);
            r?;
        }
        Ok(())
    }

    fn incomplete(&self) -> String {
        format!(
            "{} is incomplete and will not boot (its first MiB is blank): flash it again",
            self.path
        )
    }
}

/// The device has no room left (ENOSPC), or ended (a write of 0 bytes).
fn is_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::WriteZero
}

fn write_error(t: &Target, at: u64, e: io::Error) -> anyhow::Error {
    if is_full(&e) {
        anyhow!(
            "writing {} failed at byte {at}: no space left on the device ({e}): the card is full or smaller than it claims; use a larger card (one that holds less than its size says is fake); {}",
            t.path,
            t.incomplete()
        )
    } else {
        anyhow!(
            "writing {} failed at byte {at} ({e}): was the card removed? {}",
            t.path,
            t.incomplete()
        )
    }
}

fn interrupted_error(t: &Target) -> anyhow::Error {
    anyhow!("interrupted: {}", t.incomplete())
}

/// Streams the image onto the device: with a block map, only its mapped
/// ranges, each checked against its sha256 before the first MiB is written.
/// Nothing is reported as done unless every byte decoded cleanly, was
/// written, and reached the device.
pub fn write(t: &Target, img: &Image, map: Option<&Bmap>) -> Result<Written> {
    let (decoded, free) = spawn_decoder(source::reader(img)?);
    let rx = spawn_checker(decoded, map.cloned());
    let start = Instant::now();
    let total = map.map(Bmap::mapped_bytes).or(img.size);
    let mut progress = Progress::new("write", total);
    let mut mapped: u64 = 0;
    // Blank the old partition table first: until the very end the card boots nothing.
    let blank = AlignedBuf::new(HEAD);
    let blank_len = (HEAD as u64).min(t.size) as usize;
    t.write_at(&blank[..blank_len], 0)
        .map_err(|e| write_error(t, 0, e))?;
    let mut head = AlignedBuf::new(HEAD);
    let mut head_len = 0;
    let mut off: u64 = 0;
    let mut written = Vec::new();
    loop {
        if sys::interrupted() {
            return Err(interrupted_error(t));
        }
        let (buf, n, list) = match rx.recv() {
            Ok(Ok(c)) => c,
            // Ctrl-C also stops an external decompressor: report the interruption, not its failure.
            Ok(Err(_)) | Err(_) if sys::interrupted() => return Err(interrupted_error(t)),
            Ok(Err(e)) => bail!("{e}; {}", t.incomplete()),
            Err(_) => bail!("the decompressor stopped unexpectedly: {}", t.incomplete()),
        };
        if sys::interrupted() {
            return Err(interrupted_error(t));
        }
        if off + n as u64 > t.size {
            bail!(
                "the image is larger than {} ({} bytes): stopped before its end; {}",
                t.path,
                t.size,
                t.incomplete()
            );
        }
        if off < HEAD as u64 {
            let h = (HEAD - off as usize).min(n);
            head[off as usize..off as usize + h].copy_from_slice(&buf[..h]);
            head_len = off as usize + h;
        }
        for (a, b, h) in list {
            written.push((a, (b - a) as usize, h));
            let from = a.max(HEAD as u64);
            if from < b {
                t.write_at(&buf[(from - off) as usize..(b - off) as usize], from)
                    .map_err(|e| write_error(t, from, e))?;
            }
            mapped += b - a;
        }
        off += n as u64;
        progress.update(if map.is_some() { mapped } else { off });
        let last = n < CHUNK;
        let _ = free.send(buf);
        if last {
            break;
        }
    }
    if sys::interrupted() {
        return Err(interrupted_error(t));
    }
    if off == 0 {
        bail!("the image is empty: nothing to write");
    }
    if let Some(m) = map
        && off != m.image_size
    {
        bail!(
            "{}; {}",
            map_mismatch(format!(
                "the image is {off} bytes, the map says {}",
                m.image_size
            )),
            t.incomplete()
        );
    }
    t.write_at(&head[..head_len], 0)
        .map_err(|e| write_error(t, 0, e))?;
    sys::flush(&t.file).map_err(|e| {
        if is_full(&e) {
            write_error(t, off, e)
        } else {
            anyhow!("flushing {} failed ({e}): {}", t.path, t.incomplete())
        }
    })?;
    progress.finish(mapped);
    Ok(Written {
        bytes: off,
        mapped,
        pieces: written,
        time: start.elapsed(),
    })
}
