//! `flash` with a block map (`cargo xtask bmap`, bmaptool's format): only
//! the mapped ranges are written and read back, the card still checks
//! clean, bmaptool itself accepts the map, a changed image fails before the
//! first MiB is written, a map of another image is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{self, loopdev::LoopDev, need_program, prerequisite};
use super::{IMAGE_MIB, flash, image, refused, s, text};

const BLOCK: usize = 4096;

/// The mapped block ranges of a bmap file, read independently of the xtask.
fn ranges(bmap: &Path) -> Vec<(usize, usize)> {
    std::fs::read_to_string(bmap)
        .unwrap()
        .lines()
        .filter(|l| l.contains("<Range"))
        .map(|l| {
            let span = l
                .split('>')
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .trim();
            let (a, b) = span.split_once('-').unwrap_or((span, span));
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// `cargo xtask bmap raw --out out`.
fn make_bmap(raw: &Path, out: &Path) {
    let o = common::xtask(&common::repo_root())
        .args(["bmap", s(raw), "--out", s(out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A copy of the test image as `<dir>/card.img.zst` with `card.bmap` beside it.
fn mapped_image(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let img = image().unwrap();
    let zst = dir.join("card.img.zst");
    std::fs::copy(&img.zst, &zst).unwrap();
    let bmap = dir.join("card.bmap");
    make_bmap(&img.raw, &bmap);
    (zst, bmap, std::fs::read(&img.raw).unwrap())
}

fn mapped_set(bmap: &Path, blocks: usize) -> Vec<bool> {
    let mut m = vec![false; blocks];
    for (a, b) in ranges(bmap) {
        m[a..=b].iter_mut().for_each(|x| *x = true);
    }
    m
}

fn fsck_clean(dev: &LoopDev) {
    let parts = dev.partitions();
    assert_eq!(parts.len(), 2, "expected two partitions, found {parts:?}");
    for (prog, part) in [("fsck.vfat", &parts[0]), ("e2fsck", &parts[1])] {
        let o = Command::new(prog).args(["-fn", part]).output().unwrap();
        assert!(
            o.status.success(),
            "{prog}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

/// A file of the ext4 root, read with debugfs from `fs`.
fn cat(fs: &str, file: &str) -> Vec<u8> {
    let o = Command::new("debugfs")
        .args(["-R", &format!("cat {file}"), fs])
        .output()
        .unwrap();
    assert!(o.status.success());
    o.stdout
}

#[test]
fn only_mapped_ranges_are_written_and_the_card_checks_clean() {
    if image().is_none()
        || !prerequisite(need_program("debugfs", "e2fsprogs"))
        || !prerequisite(need_program("minfo", "mtools"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (zst, bmap, raw) = mapped_image(dir.path());
    let blocks = raw.len() / BLOCK;
    let mapped = mapped_set(&bmap, blocks);
    let unmapped = mapped.iter().filter(|m| !**m).count();
    assert!(
        unmapped > 256,
        "the test image has only {unmapped} free blocks"
    );
    assert!(
        mapped[..(8 << 20) / BLOCK].iter().all(|m| *m),
        "MBR and gap mapped"
    );

    let dev = LoopDev::new(IMAGE_MIB + 16);
    let before = dev.contents();
    let out = flash(&[s(&zst), &dev.path, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("block map: ") && t.contains("verified"), "{t}");
    let got = dev.contents();
    for (i, m) in mapped.iter().enumerate() {
        let r = i * BLOCK..(i + 1) * BLOCK;
        if *m {
            assert!(
                got[r.clone()] == raw[r],
                "mapped block {i} differs from the image"
            );
        } else {
            assert!(
                got[r.clone()] == before[r],
                "unmapped block {i} was written"
            );
        }
    }
    assert!(
        got[raw.len()..] == before[raw.len()..],
        "bytes past the image were touched"
    );
    fsck_clean(&dev);
    let parts = dev.partitions();
    let raw_path = dir.path().join("card.img");
    std::fs::write(&raw_path, &raw).unwrap();
    let root_off = 38 << 20;
    // Every file of the root, read back from the card, equals the image's.
    let (from_card, from_image) = (dir.path().join("card"), dir.path().join("image"));
    for (fs, to) in [
        (parts[1].clone(), &from_card),
        (
            format!("{}?offset={root_off}", raw_path.display()),
            &from_image,
        ),
    ] {
        std::fs::create_dir(to).unwrap();
        let o = Command::new("debugfs")
            .args(["-R", &format!("rdump / {}", to.display()), &fs])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(
        cat(&parts[1], "/boot/extlinux/extlinux.conf"),
        std::fs::read(from_image.join("boot/extlinux/extlinux.conf")).unwrap()
    );
    let diff = Command::new("diff")
        .args(["-r", "-q", s(&from_card), s(&from_image)])
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    // The FAT partition: its free clusters were not written, its boot
    // sector, tables and root directory were, and every file reads back equal.
    fat_checks(&mapped, &raw_path, &parts[0], dir.path());

    // `--verify-only` compares the mapped ranges, and passes.
    let out = flash(&[s(&zst), &dev.path, "--verify-only"]);
    assert!(out.status.success(), "{}", text(&out));

    // `--no-bmap` writes everything.
    let whole = LoopDev::new(IMAGE_MIB + 16);
    let out = flash(&[s(&zst), &whole.path, "--yes", "--no-bmap"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("block map: "));
    assert!(whole.contents()[..raw.len()] == raw[..]);
}

const FAT_START: usize = 8 << 20;
const FAT_SIZE: usize = 30 << 20;

/// A number from `minfo`'s output line `<name>: <n>`.
fn minfo_field(text: &str, name: &str) -> usize {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("minfo printed no {name:?}:\n{text}"))
}

/// The FAT partition of the image and of the card, read with mtools and
/// dosfstools (not the xtask): its unmapped blocks lie in the data region,
/// they add up to at most what mtools counts free (and most of it), and
/// every file copied out of the card equals the image's.
fn fat_checks(mapped: &[bool], raw: &Path, card_part: &str, dir: &Path) {
    let fs = format!("{}@@{FAT_START}", raw.display());
    let o = Command::new("minfo")
        .args(["-i", &fs, "::"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = String::from_utf8_lossy(&o.stdout);
    let sector = minfo_field(&info, "sector size:");
    let data = sector
        * (minfo_field(&info, "reserved (boot) sectors:")
            + minfo_field(&info, "fats:") * minfo_field(&info, "sectors per fat:")
            + (minfo_field(&info, "max available root directory slots:") * 32).div_ceil(sector));
    let fat_blocks = FAT_START / BLOCK..(FAT_START + FAT_SIZE) / BLOCK;
    let unmapped: Vec<usize> = fat_blocks.filter(|i| !mapped[*i]).collect();
    assert!(
        !unmapped.is_empty(),
        "no free cluster of the FAT was unmapped"
    );
    assert!(
        unmapped.iter().all(|i| i * BLOCK >= FAT_START + data),
        "a block before the FAT's data region (boot sector, tables, root directory) was unmapped"
    );
    let o = Command::new("mdir")
        .args(["-i", &fs, "::"])
        .output()
        .unwrap();
    let free: usize = String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.ends_with("bytes free"))
        .unwrap()
        .trim_end_matches("bytes free")
        .split_whitespace()
        .collect::<String>()
        .parse()
        .unwrap();
    let bytes = unmapped.len() * BLOCK;
    assert!(
        bytes <= free && bytes >= free / 2,
        "{bytes} bytes of the FAT unmapped, mtools counts {free} free"
    );
    let (from_card, from_image) = (dir.join("fat-card"), dir.join("fat-image"));
    for (src, to) in [(card_part.to_string(), &from_card), (fs, &from_image)] {
        std::fs::create_dir(to).unwrap();
        let o = Command::new("mcopy")
            .args(["-s", "-n", "-i", &src, "::*"])
            .arg(to)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let diff = Command::new("diff")
        .args(["-r", "-q", s(&from_card), s(&from_image)])
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "the FAT's files differ: {}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert!(from_image.join("config.txt").is_file());
}

#[test]
fn bmaptool_copies_with_our_map() {
    if image().is_none() || !prerequisite(need_program("bmaptool", "bmap-tools")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (zst, bmap, raw) = mapped_image(dir.path());
    let dev = LoopDev::new(IMAGE_MIB + 16);
    let before = dev.contents();
    let o = Command::new("bmaptool")
        .args(["copy", "--bmap", s(&bmap), s(&zst), &dev.path])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "bmaptool: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = dev.contents();
    for (i, m) in mapped_set(&bmap, raw.len() / BLOCK).iter().enumerate() {
        let r = i * BLOCK..(i + 1) * BLOCK;
        let want = if *m {
            &raw[r.clone()]
        } else {
            &before[r.clone()]
        };
        assert!(got[r] == *want, "block {i} (mapped: {m})");
    }
    fsck_clean(&dev);
}

#[test]
fn a_changed_image_fails_before_the_first_mib_is_written() {
    if image().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (zst, bmap, mut raw) = mapped_image(dir.path());
    // One byte changed in a mapped block of the ext4 root, after the first MiB.
    let mapped = mapped_set(&bmap, raw.len() / BLOCK);
    let at = ((40 << 20) / BLOCK..).find(|i| mapped[*i]).unwrap() * BLOCK + 100;
    raw[at] ^= 0xff;
    let changed = dir.path().join("card.img");
    std::fs::write(&changed, &raw).unwrap();
    std::fs::remove_file(&zst).unwrap();
    let z = Command::new("zstd")
        .args(["-q", s(&changed), "-o", s(&zst)])
        .status()
        .unwrap();
    assert!(z.success());
    std::fs::remove_file(&changed).unwrap();
    let dev = LoopDev::new(IMAGE_MIB + 16);
    let out = flash(&[s(&zst), &dev.path, "--yes"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("does not match its block map"), "{t}");
    assert!(t.contains("--no-bmap"), "{t}");
    assert!(!t.contains('✓'), "{t}");
    assert!(
        dev.read_at(0, 1 << 20).iter().all(|b| *b == 0),
        "the first MiB was written: the card would boot a changed image"
    );
}

#[test]
fn a_map_of_another_image_is_refused_untouched() {
    if image().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image().unwrap();
    let zst = dir.path().join("card.img.zst");
    std::fs::copy(&img.zst, &zst).unwrap();
    // The same image 1 MiB longer: another image.
    let mut other = std::fs::read(&img.raw).unwrap();
    other.extend(vec![0u8; 1 << 20]);
    let other_raw = dir.path().join("other.img");
    std::fs::write(&other_raw, &other).unwrap();
    make_bmap(&other_raw, &dir.path().join("card.bmap"));
    let dev = LoopDev::new(IMAGE_MIB + 16);
    let before = dev.contents();
    let out = flash(&[s(&zst), &dev.path, "--yes"]);
    refused(&out, "is not the block map of", &dev, &before);
    // A map file that was edited is refused too.
    let bmap = dir.path().join("card.bmap");
    make_bmap(&img.raw, &bmap);
    let text_ = std::fs::read_to_string(&bmap).unwrap();
    std::fs::write(&bmap, text_.replacen("<Range chksum", "<Range  chksum", 1)).unwrap();
    let out = flash(&[s(&zst), &dev.path, "--yes"]);
    refused(&out, "is not a usable block map", &dev, &before);
}

#[test]
fn multi_frame_and_single_frame_zst_give_identical_cards() {
    if image().is_none() {
        return;
    }
    let img = image().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Independent 8 MiB frames, made by the zstd program piece by piece.
    let parts = dir.path().join("part-");
    let split = Command::new("split")
        .args(["-b", "8M", s(&img.raw), s(&parts)])
        .status()
        .unwrap();
    assert!(split.success());
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len() as u64, IMAGE_MIB / 8);
    let multi = dir.path().join("multi.img.zst");
    let mut out = std::fs::File::create(&multi).unwrap();
    for p in &names {
        let z = Command::new("zstd")
            .args(["-q", "-c", s(p)])
            .output()
            .unwrap();
        assert!(z.status.success());
        std::io::Write::write_all(&mut out, &z.stdout).unwrap();
    }
    drop(out);
    let (a, b) = (LoopDev::new(IMAGE_MIB), LoopDev::new(IMAGE_MIB));
    let out = flash(&[s(&multi), &a.path, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = flash(&[s(&img.zst), &b.path, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let raw = std::fs::read(&img.raw).unwrap();
    assert!(
        a.contents() == raw,
        "the multi-frame image's card differs from the image"
    );
    assert!(a.contents() == b.contents(), "the two cards differ");
    // A truncated multi-frame image is refused before anything is written.
    let cut = dir.path().join("cut.img.zst");
    let bytes = std::fs::read(&multi).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let before = a.contents();
    let out = flash(&[s(&cut), &a.path, "--yes"]);
    super::refused(&out, "corrupt or truncated", &a, &before);
    // A changed byte inside a frame fails during the write, the card left unbootable.
    let bad = dir.path().join("bad.img.zst");
    let mut changed = bytes.clone();
    let mid = changed.len() / 2;
    changed[mid] ^= 0xff;
    std::fs::write(&bad, &changed).unwrap();
    let out = flash(&[s(&bad), &a.path, "--yes"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("corrupt"), "{}", text(&out));
    assert!(a.read_at(0, 1 << 20).iter().all(|b| *b == 0));
}

#[test]
fn a_swapped_map_of_the_same_size_is_refused_before_writing() {
    if image().is_none() {
        return;
    }
    let img = image().unwrap();
    let fleet = common::fixture_fleet();
    let out_dir = fleet.path().join("out/rpi-box-03");
    std::fs::create_dir_all(&out_dir).unwrap();
    let zst = out_dir.join("rpi-box-03.img.zst");
    std::fs::copy(&img.zst, &zst).unwrap();
    let bmap = out_dir.join("rpi-box-03.bmap");
    make_bmap(&img.raw, &bmap);
    // The record `sd` writes: the image's sha256 and size, and its map's sha256.
    let record = format!(
        r#"{{"host":"rpi-box-03","commit":"0123456789abcdef","dirty":false,"sha256":"{}","size":{},"raw_sha256":"{}","raw_size":1,"built":"2026-05-01T10:00:00Z","store_path":"/nix/store/x","wifi":null,"bmap_sha256":"{}"}}"#,
        super::sha256(&zst),
        std::fs::metadata(&zst).unwrap().len(),
        super::sha256(&img.raw),
        super::sha256(&bmap)
    );
    std::fs::write(out_dir.join("rpi-box-03.img.json"), record).unwrap();
    let run = |dev: &LoopDev| {
        common::xtask(fleet.path())
            .args(["flash", "rpi-box-03", &dev.path, "--yes"])
            .output()
            .unwrap()
    };
    let dev = LoopDev::new(IMAGE_MIB + 16);
    let out = run(&dev);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("block map: "), "{}", text(&out));

    // Another image of the same size (one byte changed in a file of the
    // root): its map is well-formed and of the same size, but not the
    // recorded one.
    let dir = tempfile::tempdir().unwrap();
    let mut raw = std::fs::read(&img.raw).unwrap();
    let mapped = mapped_set(&bmap, raw.len() / BLOCK);
    let at = ((40 << 20) / BLOCK..).find(|i| mapped[*i]).unwrap() * BLOCK + 7;
    raw[at] ^= 0xff;
    let other = dir.path().join("other.img");
    std::fs::write(&other, &raw).unwrap();
    let swapped = dir.path().join("other.bmap");
    make_bmap(&other, &swapped);
    assert_eq!(
        std::fs::metadata(&swapped).unwrap().len(),
        std::fs::metadata(&bmap).unwrap().len(),
        "the swapped map should be the same size"
    );
    assert_ne!(super::sha256(&swapped), super::sha256(&bmap));
    std::fs::copy(&swapped, &bmap).unwrap();
    let dev = LoopDev::new(IMAGE_MIB + 16);
    let before = dev.contents();
    let out = run(&dev);
    refused(
        &out,
        "is not the block map `cargo xtask sd` made for rpi-box-03's image",
        &dev,
        &before,
    );
    assert!(text(&out).contains("nothing was written"), "{}", text(&out));
    // --no-bmap still writes the image whole.
    let out = common::xtask(fleet.path())
        .args(["flash", "rpi-box-03", &dev.path, "--yes", "--no-bmap"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(dev.contents()[..raw.len()] == std::fs::read(&img.raw).unwrap()[..]);
}

#[test]
fn without_mtools_or_a_readable_fat_the_fat_stays_mapped_whole() {
    if image().is_none() {
        return;
    }
    let img = image().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fat_blocks = FAT_START / BLOCK..(FAT_START + FAT_SIZE) / BLOCK;
    let bmap = |raw: &Path, out: &Path, path: &str| {
        let o = common::xtask(&common::repo_root())
            .args(["bmap", s(raw), "--out", s(out)])
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let path = std::env::var("PATH").unwrap();
    // With mtools: some of the FAT is unmapped (what the other tests check in full).
    let with = dir.path().join("with.bmap");
    bmap(&img.raw, &with, &path);
    let raw_len = std::fs::metadata(&img.raw).unwrap().len() as usize;
    assert!(
        fat_blocks
            .clone()
            .any(|i| !mapped_set(&with, raw_len / BLOCK)[i])
    );
    // No mtools on PATH (e2fsprogs' dumpe2fs is still found in /usr/sbin).
    let without = dir.path().join("without.bmap");
    let note = bmap(&img.raw, &without, "/nonexistent");
    assert!(
        note.contains("stays mapped whole") && note.contains("mtools"),
        "{note}"
    );
    let m = mapped_set(&without, raw_len / BLOCK);
    assert!(
        fat_blocks.clone().all(|i| m[i]),
        "a FAT block was unmapped without mtools"
    );
    // A FAT whose boot sector is not one (its signature cleared).
    let mut raw = std::fs::read(&img.raw).unwrap();
    raw[FAT_START + 510] = 0;
    let broken = dir.path().join("broken.img");
    std::fs::write(&broken, &raw).unwrap();
    let out = dir.path().join("broken.bmap");
    let note = bmap(&broken, &out, &path);
    assert!(note.contains("cannot be read as FAT"), "{note}");
    let m = mapped_set(&out, raw.len() / BLOCK);
    assert!(
        fat_blocks.clone().all(|i| m[i]),
        "a block of a broken FAT was unmapped"
    );
}
