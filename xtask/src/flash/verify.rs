//! Reading a written card back: the pieces `flash` wrote, against the hashes
//! taken while writing, or a whole card against an image (`--verify-only`).

use std::io::{self, Read};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use xxhash_rust::xxh3::xxh3_64;

use super::image::Image;
use super::progress::Progress;
use super::source;
use super::sys::{self, AlignedBuf};
use super::write::{BUFFERS, CHUNK, HEAD, Target, Written, spans, spawn_decoder};
use crate::image::bmap::Bmap;

/// Reads the written pieces back (bypassing the page cache) and compares
/// them with the hashes taken while writing. Reading runs on its own thread
/// so the device is kept busy while pieces are hashed.
pub fn verify_written(t: &Target, img: &Image, w: &Written) -> Result<Duration> {
    sys::drop_cache(&t.file);
    let mut progress = Progress::new("verify", Some(w.mapped));
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(BUFFERS);
    for _ in 0..BUFFERS {
        free_tx
            .send(AlignedBuf::new(CHUNK))
            .expect("room for every buffer");
    }
    let (tx, rx) = sync_channel::<io::Result<(AlignedBuf, u64, usize)>>(BUFFERS);
    let list = &w.pieces;
    let shown = &mut progress;
    // The channels move into the closure, so an early return unblocks the reader.
    let bad = thread::scope(move |s| -> Result<Option<(u64, usize)>> {
        s.spawn(move || {
            for &(off, len, _) in list {
                let Ok(mut buf) = free_rx.recv() else { return };
                if sys::interrupted() {
                    return;
                }
                let r = t.read_at(&mut buf[..len], off).map(|_| (buf, off, len));
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    return;
                }
            }
        });
        let mut done = 0;
        for (_, _, h) in list {
            let Ok(msg) = rx.recv() else {
                bail!(
                    "interrupted during verification: {} was written but not verified",
                    t.path
                );
            };
            let (buf, off, len) = msg.map_err(|e| {
                anyhow!(
                    "reading {} back failed ({e}): was the card removed?",
                    t.path
                )
            })?;
            if xxh3_64(&buf[..len]) != *h {
                return Ok(Some((off, len)));
            }
            done += len as u64;
            shown.update(done);
            let _ = free_tx.send(buf);
        }
        Ok(None)
    })?;
    if let Some((off, len)) = bad {
        let at = first_difference(t, img, off, len)?;
        bail!(mismatch(t, at));
    }
    Ok(progress.finish(w.mapped))
}

fn mismatch(t: &Target, at: u64) -> String {
    format!(
        "VERIFICATION FAILED: {} differs from the image at byte {at} (0x{at:x}): the card is failing or fake, or something else wrote to it; use another card",
        t.path
    )
}

/// The first offset in `[off, off+len)` where the device differs from the image.
fn first_difference(t: &Target, img: &Image, off: u64, len: usize) -> Result<u64> {
    let mut src = source::reader(img)?;
    io::copy(&mut (&mut src.data).take(off), &mut io::sink())?;
    let mut want = vec![0u8; len];
    src.data.read_exact(&mut want)?;
    let mut got = AlignedBuf::new(CHUNK);
    t.read_at(&mut got[..len], off)?;
    Ok(off
        + want
            .iter()
            .zip(got.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(0) as u64)
}

/// Compares a device with an image, byte for byte (`--verify-only`); with a
/// block map, its mapped ranges only. Returns the bytes compared.
pub fn verify_against_image(
    t: &Target,
    img: &Image,
    map: Option<&Bmap>,
) -> Result<(u64, Duration)> {
    let (rx, free) = spawn_decoder(source::reader(img)?);
    sys::drop_cache(&t.file);
    let mut progress = Progress::new("verify", map.map(Bmap::mapped_bytes).or(img.size));
    let mut compared: u64 = 0;
    let mut got = AlignedBuf::new(CHUNK);
    let mut off: u64 = 0;
    loop {
        if sys::interrupted() {
            bail!("interrupted: {} was not fully verified", t.path);
        }
        let (buf, n) = match rx.recv() {
            Ok(Ok(c)) => c,
            Ok(Err(_)) | Err(_) if sys::interrupted() => {
                bail!("interrupted: {} was not fully verified", t.path)
            }
            Ok(Err(e)) => bail!("{e}: {} was not verified", t.path),
            Err(_) => bail!(
                "the decompressor stopped unexpectedly: {} was not verified",
                t.path
            ),
        };
        if off + n as u64 > t.size {
            bail!(
                "{} ({} bytes) is smaller than the image: it cannot hold it",
                t.path,
                t.size
            );
        }
        let mut same = true;
        let mut diff = (0, n);
        for (_, a, b) in spans(map, off, n) {
            let (x, y) = ((a - off) as usize, (b - off) as usize);
            t.read_at(&mut got[x..y], a).map_err(|e| {
                anyhow!(
                    "reading {} failed at byte {a} ({e}): was the card removed?",
                    t.path
                )
            })?;
            compared += b - a;
            if same && buf[x..y] != got[x..y] {
                same = false;
                diff = (x, y);
            }
        }
        if !same {
            let (x, y) = diff;
            source::recheck(img).map_err(|e| anyhow!("{e:#}: {} was not verified", t.path))?;
            let head = n.min(HEAD);
            if off == 0
                && x == 0
                && y >= head
                && got[..head].iter().all(|b| *b == 0)
                && buf[..head] != got[..head]
            {
                bail!(
                    "{} does not hold the image: its first MiB is blank, the sign of an earlier `cargo xtask flash` that did not finish (it writes the first MiB last) or of a card never written; flash it again",
                    t.path
                );
            }
            let at = off
                + x as u64
                + buf[x..y]
                    .iter()
                    .zip(got[x..y].iter())
                    .position(|(a, b)| a != b)
                    .unwrap_or(0) as u64;
            bail!(mismatch(t, at));
        }
        off += n as u64;
        progress.update(compared);
        let last = n < CHUNK;
        let _ = free.send(buf);
        if last {
            break;
        }
    }
    Ok((compared, progress.finish(compared)))
}
