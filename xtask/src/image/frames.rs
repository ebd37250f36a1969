//! zstd in independent frames: `sd` compresses an image in 32 MiB frames
//! (concatenated frames are one valid `.zst` for every zstd tool), so
//! `flash` can decode them on every core. An image whose first frame is
//! large or of unknown size (an old single-frame image, or one from another
//! tool) is decoded by the ordinary streaming decoder.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use zstd::zstd_safe;

use super::stream::{self, Sum};

/// Raw bytes per frame.
pub const FRAME: usize = 32 << 20;
/// A first frame larger than this (or of unknown size) is decoded streaming,
/// so an old single-frame image never sits in memory whole.
const MAX_FRAME: u64 = FRAME as u64;
/// zstd's level, as `zstd -3` (its default).
const LEVEL: i32 = 3;

fn workers() -> usize {
    thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 16)
}

/// Compresses `raw` into `out` in independent frames of `frame` bytes, on
/// every core, each frame with its size and checksum. Returns the sum of
/// the compressed file.
pub fn compress(raw: &Path, out: &Path, frame: usize) -> Result<Sum> {
    let mut input = File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let mut to = stream::create_private(out)?;
    eprintln!(
        "compressing {} into {} MiB zstd frames",
        raw.display(),
        frame >> 20
    );
    let (work_tx, work_rx) = sync_channel::<(Vec<u8>, SyncSender<io::Result<Vec<u8>>>)>(workers());
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (slot_tx, slot_rx) = sync_channel::<Receiver<io::Result<Vec<u8>>>>(2 * workers());
    let (hasher, size) = thread::scope(|s| -> Result<(Sha256, u64)> {
        for _ in 0..workers() {
            let rx = work_rx.clone();
            s.spawn(move || {
                let mut c = match zstd::bulk::Compressor::new(LEVEL) {
                    Ok(c) => c,
                    Err(_) => return,
                };
                let _ = c.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true));
                loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((data, back)) = job else { return };
                    let _ = back.send(c.compress(&data));
                }
            });
        }
        let writer = s.spawn(move || -> Result<(Sha256, u64)> {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            for slot in slot_rx {
                let z = slot.recv().context("a compression thread stopped")??;
                hasher.update(&z);
                size += z.len() as u64;
                to.write_all(&z)?;
            }
            to.sync_all()?;
            Ok((hasher, size))
        });
        loop {
            let mut buf = vec![0u8; frame];
            let mut n = 0;
            while n < frame {
                match input.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot read {}", raw.display()));
                    }
                }
            }
            if n == 0 {
                break;
            }
            buf.truncate(n);
            let (tx, rx) = sync_channel(1);
            if slot_tx.send(rx).is_err() || work_tx.send((buf, tx)).is_err() {
                break;
            }
            if n < frame {
                break;
            }
        }
        drop(slot_tx);
        drop(work_tx);
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
    })?;
    Ok(Sum {
        sha256: format!("{:x}", hasher.finalize()),
        size,
    })
}

/// Decodes a `.zst` of independent frames on every core, in order.
pub struct Parallel {
    slots: Receiver<io::Result<Receiver<io::Result<Vec<u8>>>>>,
    current: VecDeque<u8>,
    done: bool,
}

impl Read for Parallel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.slots.recv() {
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
                Ok(slot) => {
                    let data = slot?
                        .recv()
                        .map_err(|_| io::Error::other("a decoding thread stopped"))??;
                    self.current = data.into();
                }
            }
        }
        let n = self.current.read(buf)?;
        Ok(n)
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The decoder for `input`: parallel when its first frame records a size of
/// at most 32 MiB, else libzstd's streaming decoder. In parallel, at most
/// one decoded frame per core waits, plus the one being read.
pub fn decoder(mut input: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let mut head = vec![0u8; 18];
    let mut n = 0;
    while n < head.len() {
        match input.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    let small = matches!(zstd_safe::get_frame_content_size(&head), Ok(Some(s)) if s <= MAX_FRAME);
    if !small {
        let chained = io::Cursor::new(head).chain(input);
        let mut d = zstd::stream::read::Decoder::with_buffer(io::BufReader::with_capacity(
            1 << 20,
            Box::new(chained) as Box<dyn Read + Send>,
        ))?;
        d.window_log_max(31)?;
        return Ok(Box::new(d));
    }
    let (slot_tx, slot_rx) = sync_channel(workers());
    let (work_tx, work_rx) = sync_channel::<(Vec<u8>, SyncSender<io::Result<Vec<u8>>>)>(workers());
    let work_rx = Arc::new(Mutex::new(work_rx));
    for _ in 0..workers() {
        let rx = work_rx.clone();
        thread::spawn(move || {
            loop {
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((frame, back)) = job else { return };
                let _ = back.send(zstd::stream::decode_all(&frame[..]));
            }
        });
    }
    thread::spawn(move || {
        let mut buf = head;
        let mut eof = false;
        loop {
            if buf.is_empty() && eof {
                return;
            }
            match zstd_safe::find_frame_compressed_size(&buf) {
                Ok(len) if len <= buf.len() => {
                    let rest = buf.split_off(len);
                    let (tx, rx) = sync_channel(1);
                    if slot_tx.send(Ok(rx)).is_err() || work_tx.send((buf, tx)).is_err() {
                        return;
                    }
                    buf = rest;
                    continue;
                }
                _ if eof => {
                    let _ = slot_tx.send(Err(corrupt(
                        "its last zstd frame is truncated, or it has trailing data that is not zstd",
                    )));
                    return;
                }
                _ => {}
            }
            let at = buf.len();
            buf.resize(at + (1 << 20), 0);
            match input.read(&mut buf[at..]) {
                Ok(0) => {
                    buf.truncate(at);
                    eof = true;
                }
                Ok(k) => buf.truncate(at + k),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(at),
                Err(e) => {
                    let _ = slot_tx.send(Err(e));
                    return;
                }
            }
        }
    });
    Ok(Box::new(Parallel {
        slots: slot_rx,
        current: VecDeque::new(),
        done: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((i / 7) % 251) as u8 ^ (i >> 16) as u8)
            .collect()
    }

    fn decode(z: Vec<u8>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        decoder(Box::new(io::Cursor::new(z)))?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_decode_in_order_and_zstd_reads_them_too() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        let want = data((5 << 20) + 123);
        std::fs::write(&raw, &want).unwrap();
        let out = dir.path().join("a.img.zst");
        let sum = compress(&raw, &out, 1 << 20).unwrap();
        let z = std::fs::read(&out).unwrap();
        assert_eq!(sum.size, z.len() as u64);
        assert_eq!(sum.sha256, format!("{:x}", Sha256::digest(&z)));
        // Six frames, each with its size.
        let mut frames = 0;
        let mut rest = &z[..];
        while !rest.is_empty() {
            assert!(zstd_safe::get_frame_content_size(rest).unwrap().is_some());
            rest = &rest[zstd_safe::find_frame_compressed_size(rest).unwrap()..];
            frames += 1;
        }
        assert_eq!(frames, 6);
        assert_eq!(decode(z.clone()).unwrap(), want);
        assert_eq!(zstd::stream::decode_all(&z[..]).unwrap(), want);
    }

    #[test]
    fn one_big_frame_is_decoded_streaming_and_corruption_is_an_error() {
        let want = data(3 << 20);
        let single = zstd::stream::encode_all(&want[..], 3).unwrap();
        assert_eq!(decode(single).unwrap(), want);
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        std::fs::write(&raw, &want).unwrap();
        let out = dir.path().join("a.img.zst");
        compress(&raw, &out, 1 << 20).unwrap();
        let z = std::fs::read(&out).unwrap();
        assert!(decode(z[..z.len() - 10].to_vec()).is_err(), "truncated");
        let mut garbage = z.clone();
        garbage.extend_from_slice(b"not zstd at all");
        assert!(decode(garbage).is_err(), "trailing garbage");
        let mut flipped = z;
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xff;
        assert!(decode(flipped).is_err(), "a changed byte");
    }
}
