//! Block maps in bmaptool's own format (version 2.0, sha256 per range), made
//! from the image's filesystems rather than from its holes or zeros: the
//! free blocks of the ext4 root (read with e2fsprogs' `dumpe2fs`, no mount)
//! and the free clusters of the FAT partition ([`super::fat`]) are
//! unmapped, everything else (MBR, gap, FAT boot sector, tables and root
//! directory, ext4 metadata and every block a file owns, zero-filled or
//! not) is mapped. `flash` writes and
//! reads back only the mapped ranges; `bmaptool copy --bmap` accepts it too.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

use super::{fat, mbr};
use crate::exec;

/// bmaptool's block size, and the ext4 block size of NixOS images.
pub const BLOCK: u64 = 4096;

/// A range of blocks `first..=last` and the sha256 of its bytes (the last
/// block of the image may be partial: only the image's bytes count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub first: u64,
    pub last: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub ranges: Vec<Range>,
}

impl Bmap {
    pub fn blocks(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }

    /// Byte span `[start, end)` of a range, cut at the image's end.
    pub fn span(&self, r: &Range) -> (u64, u64) {
        (
            r.first * self.block_size,
            ((r.last + 1) * self.block_size).min(self.image_size),
        )
    }

    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                let (a, b) = self.span(r);
                b - a
            })
            .sum()
    }
}

/// The mapped block ranges of an image of `blocks` blocks, given the
/// unmapped (free) byte ranges `[start, end)`: a block is unmapped only when
/// it lies wholly inside a free range.
pub fn mapped_ranges(blocks: u64, block: u64, free: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut unmapped: Vec<(u64, u64)> = free
        .iter()
        .filter_map(|&(a, b)| {
            let first = a.div_ceil(block);
            let end = (b / block).min(blocks);
            (first < end).then_some((first, end))
        })
        .collect();
    unmapped.sort();
    let mut out = Vec::new();
    let mut next = 0;
    for (a, b) in unmapped {
        if a > next {
            out.push((next, a - 1));
        }
        next = next.max(b);
    }
    if next < blocks {
        out.push((next, blocks - 1));
    }
    out
}

/// Parses `dumpe2fs` output: the block size and the free block ranges
/// (filesystem block numbers, inclusive) of every group.
pub fn parse_dumpe2fs(text: &str) -> Result<(u64, Vec<(u64, u64)>)> {
    let block = text
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .context("dumpe2fs printed no block size")?;
    let mut free = Vec::new();
    let mut groups = 0;
    for line in text.lines() {
        // A group's line is indented; the superblock's own `Free blocks:`
        // line (a count, not a block) is not.
        if !line.starts_with(char::is_whitespace) {
            continue;
        }
        let Some(list) = line.trim_start().strip_prefix("Free blocks: ") else {
            continue;
        };
        groups += 1;
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            let (a, b) = (a.trim().parse::<u64>(), b.trim().parse::<u64>());
            match (a, b) {
                (Ok(a), Ok(b)) if a <= b => free.push((a, b)),
                _ => bail!("dumpe2fs printed a free block range it cannot read: {item:?}"),
            }
        }
    }
    if groups == 0 {
        bail!("dumpe2fs listed no block groups");
    }
    // The groups' lists must add up to the superblock's count.
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("Free blocks:"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let listed: u64 = free.iter().map(|(a, b)| b - a + 1).sum();
    if count.is_some_and(|c| c != listed) {
        bail!(
            "dumpe2fs lists {listed} free blocks but the superblock counts {}: check the image's root with `e2fsck -f`",
            count.unwrap_or(0)
        );
    }
    Ok((block, free))
}

/// e2fsprogs' dumpe2fs: on PATH, or in /usr/sbin or /sbin.
fn dumpe2fs() -> Result<String> {
    if exec::have("dumpe2fs") {
        return Ok("dumpe2fs".into());
    }
    ["/usr/sbin/dumpe2fs", "/sbin/dumpe2fs"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
        .context("dumpe2fs is not installed: `sudo apt-get install e2fsprogs`")
}

/// The free byte ranges `[start, end)` of the image's ext4 root, as offsets
/// in the image.
fn ext4_free(image: &Path, first_sector: &[u8]) -> Result<Vec<(u64, u64)>> {
    let root = mbr::root_partition(first_sector)
        .with_context(|| format!("{} is not a NixOS SD image", image.display()))?;
    let fs = format!("{}?offset={}", image.display(), root.offset());
    let sh = Shell::new()?;
    let program = dumpe2fs()?;
    let text = exec::read(cmd!(sh, "{program} {fs}")).with_context(|| {
        format!(
            "cannot read the ext4 root of {} with dumpe2fs: is it a NixOS SD image?",
            image.display()
        )
    })?;
    let (block, free) = parse_dumpe2fs(&text)?;
    let part_end = root.offset() + root.sectors * mbr::SECTOR;
    Ok(free
        .into_iter()
        .map(|(a, b)| {
            (
                root.offset() + a * block,
                (root.offset() + (b + 1) * block).min(part_end),
            )
        })
        .collect())
}

/// The free byte ranges of the image's FAT partitions (the `FIRMWARE`
/// one), each checked against mtools' count of its free bytes. Without
/// mtools, or when a FAT cannot be read, that partition stays mapped whole
/// (safe: it is only written in full), with a note saying why.
fn fat_free(image: &Path, first_sector: &[u8]) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for p in mbr::parse(first_sector)?
        .into_iter()
        .filter(|p| fat::TYPES.contains(&p.kind))
    {
        let whole = |why: String| {
            eprintln!(
                "note: the FAT partition {} stays mapped whole: {why}",
                p.number
            );
        };
        if !exec::have("mdir") {
            whole("mtools is not installed to check its free clusters (`sudo apt-get install mtools` unmaps them)".into());
            continue;
        }
        let (ranges, bytes) = match fat::free(image, &p) {
            Ok(x) => x,
            Err(e) => {
                whole(format!("it cannot be read as FAT ({e:#})"));
                continue;
            }
        };
        let counted = match fat::mtools_free(image, p.offset()) {
            Ok(n) => n,
            Err(e) => {
                whole(format!("mtools cannot read it ({e:#})"));
                continue;
            }
        };
        if counted != bytes {
            bail!(
                "the FAT partition {} of {} has {bytes} bytes in free clusters, but mtools counts {counted} free: check it with `fsck.vfat -n`",
                p.number,
                image.display()
            );
        }
        out.extend(ranges);
    }
    Ok(out)
}

/// The block map of a raw NixOS SD image, with the sha256 of every range.
pub fn create(image: &Path) -> Result<Bmap> {
    let f = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let size = f.metadata()?.len();
    let mut first = [0u8; 512];
    f.read_exact_at(&mut first, 0)
        .with_context(|| format!("{} is too short to be an SD image", image.display()))?;
    let mut free = ext4_free(image, &first)?;
    free.extend(fat_free(image, &first)?);
    let blocks = size.div_ceil(BLOCK);
    let mut ranges = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for (a, b) in mapped_ranges(blocks, BLOCK, &free) {
        let (start, end) = (a * BLOCK, ((b + 1) * BLOCK).min(size));
        let mut h = Sha256::new();
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], off)
                .with_context(|| format!("cannot read {}", image.display()))?;
            h.update(&buf[..n]);
            off += n as u64;
        }
        ranges.push(Range {
            first: a,
            last: b,
            sha256: format!("{:x}", h.finalize()),
        });
    }
    Ok(Bmap {
        image_size: size,
        block_size: BLOCK,
        ranges,
    })
}

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The bmap file's text, as bmaptool writes it (its own checksum included).
pub fn to_xml(m: &Bmap, what: &str) -> String {
    let mapped = m.ranges.iter().map(|r| r.last - r.first + 1).sum::<u64>();
    let mut x = String::new();
    x += "<?xml version=\"1.0\" ?>\n";
    let _ = writeln!(
        x,
        "<!-- The block map of {what}, made by `cargo xtask` from its filesystems:\n     \
         the free blocks of its ext4 root and the free clusters of its FAT\n     \
         partition are not mapped, everything else is.\n     \
         Format: bmaptool's 2.0 (https://github.com/yoctoproject/bmaptool). -->"
    );
    x += "<bmap version=\"2.0\">\n";
    let _ = writeln!(x, "    <ImageSize> {} </ImageSize>", m.image_size);
    let _ = writeln!(x, "    <BlockSize> {} </BlockSize>", m.block_size);
    let _ = writeln!(x, "    <BlocksCount> {} </BlocksCount>", m.blocks());
    let _ = writeln!(x, "    <MappedBlocksCount> {mapped} </MappedBlocksCount>");
    x += "    <ChecksumType> sha256 </ChecksumType>\n";
    let _ = writeln!(x, "    <BmapFileChecksum> {ZEROS} </BmapFileChecksum>");
    x += "    <BlockMap>\n";
    for r in &m.ranges {
        if r.first == r.last {
            let _ = writeln!(
                x,
                "        <Range chksum=\"{}\"> {} </Range>",
                r.sha256, r.first
            );
        } else {
            let _ = writeln!(
                x,
                "        <Range chksum=\"{}\"> {}-{} </Range>",
                r.sha256, r.first, r.last
            );
        }
    }
    x += "    </BlockMap>\n</bmap>\n";
    let sum = format!("{:x}", Sha256::digest(x.as_bytes()));
    x.replacen(ZEROS, &sum, 1)
}

/// The text between `<tag>` and `</tag>`, trimmed.
fn element<'a>(x: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let a = x.find(&open)? + open.len();
    let b = a + x[a..].find(&format!("</{tag}>"))?;
    Some(x[a..b].trim())
}

fn number(x: &str, tag: &str) -> Result<u64> {
    element(x, tag)
        .with_context(|| format!("it has no <{tag}>"))?
        .parse()
        .with_context(|| format!("its <{tag}> is not a number"))
}

/// Reads a bmap file of format 2.x with sha256 checksums (what `sd` and
/// `bmaptool create` write), checking its own checksum and its ranges.
pub fn parse(x: &str) -> Result<Bmap> {
    let version = x
        .find("<bmap version=\"")
        .map(|i| &x[i + 15..])
        .and_then(|v| v.split('"').next())
        .context("it is not a bmap file (no <bmap version=...>)")?;
    if !version.starts_with("2.") {
        bail!("it is bmap format {version}; only 2.x (sha256) is read");
    }
    let kind = element(x, "ChecksumType").unwrap_or("");
    if kind != "sha256" {
        bail!("its checksums are {kind:?}, not sha256");
    }
    let own = element(x, "BmapFileChecksum").context("it has no <BmapFileChecksum>")?;
    if own.len() != 64 {
        bail!("its <BmapFileChecksum> is not a sha256");
    }
    let zeroed = x.replacen(own, ZEROS, 1);
    let got = format!("{:x}", Sha256::digest(zeroed.as_bytes()));
    if got != own {
        bail!("its own checksum is wrong (the file was changed or cut short)");
    }
    let m = Bmap {
        image_size: number(x, "ImageSize")?,
        block_size: number(x, "BlockSize")?,
        ranges: Vec::new(),
    };
    if m.block_size == 0 || !m.block_size.is_multiple_of(512) {
        bail!("its block size {} is not a multiple of 512", m.block_size);
    }
    if number(x, "BlocksCount")? != m.blocks() {
        bail!("its <BlocksCount> does not match its <ImageSize>");
    }
    let mut ranges = Vec::new();
    let mut rest = element(x, "BlockMap").context("it has no <BlockMap>")?;
    while let Some(i) = rest.find("<Range") {
        rest = &rest[i..];
        let end = rest.find("</Range>").context("a <Range> is not closed")?;
        let item = &rest[..end];
        rest = &rest[end + 8..];
        let sum = item
            .split("chksum=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .context("a <Range> has no sha256 chksum")?;
        let span = item.split('>').nth(1).unwrap_or("").trim();
        let (a, b) = span.split_once('-').unwrap_or((span, span));
        let (first, last) = match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
            (Ok(a), Ok(b)) if a <= b => (a, b),
            _ => bail!("a <Range> is not a block range: {span:?}"),
        };
        if ranges.last().is_some_and(|r: &Range| r.last >= first) || last >= m.blocks() {
            bail!("its ranges overlap, are out of order or pass the image's end");
        }
        ranges.push(Range {
            first,
            last,
            sha256: sum.to_ascii_lowercase(),
        });
    }
    if number(x, "MappedBlocksCount")? != ranges.iter().map(|r| r.last - r.first + 1).sum::<u64>() {
        bail!("its <MappedBlocksCount> does not match its ranges");
    }
    Ok(Bmap { ranges, ..m })
}

/// Where `sd` puts the block map of `<host>.img.zst`: `<host>.bmap` beside
/// it (bmaptool finds it there too: it tries the image's name without its
/// extensions).
pub fn beside(zst: &Path) -> std::path::PathBuf {
    let name = zst.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.split('.').next().unwrap_or(&name);
    zst.with_file_name(format!("{stem}.bmap"))
}

/// Makes the block map of a raw image and writes it to `out` (under a
/// temporary name, then renamed). Returns the map and the file's sha256
/// (what `sd` records beside the image's own).
pub fn write(image: &Path, out: &Path) -> Result<(Bmap, String)> {
    let m = create(image)?;
    let what = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = to_xml(&m, &what);
    let tmp = super::stream::partial(out);
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    super::stream::finish(&tmp, out)?;
    Ok((m, format!("{:x}", Sha256::digest(text.as_bytes()))))
}

/// A bmap file's bytes and their sha256.
pub fn read(path: &Path) -> Result<(Vec<u8>, String)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let sum = format!("{:x}", Sha256::digest(&bytes));
    Ok((bytes, sum))
}

/// Checks a bmap file's bytes (read from `path`).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Bmap> {
    std::str::from_utf8(bytes)
        .context("it is not text")
        .and_then(parse)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not a usable block map: {e:#}; make it again (`cargo xtask sd`), remove it, or pass --no-bmap",
                path.display()
            )
        })
}

/// Reads and checks a bmap file.
pub fn load(path: &Path) -> Result<Bmap> {
    let (bytes, _) = read(path)?;
    from_bytes(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wholly_free_blocks_are_unmapped() {
        // 10 blocks; free: blocks 2..4 exactly, half of block 6 (stays mapped), 8..end.
        let free = [
            (2 * BLOCK, 4 * BLOCK),
            (6 * BLOCK + 512, 7 * BLOCK),
            (8 * BLOCK, 99 * BLOCK),
        ];
        assert_eq!(mapped_ranges(10, BLOCK, &free), vec![(0, 1), (4, 7)]);
        assert_eq!(mapped_ranges(3, BLOCK, &[]), vec![(0, 2)]);
        assert_eq!(mapped_ranges(3, BLOCK, &[(0, 3 * BLOCK)]), vec![]);
        // Overlapping and unsorted free ranges.
        let free = [(5 * BLOCK, 7 * BLOCK), (BLOCK, 6 * BLOCK)];
        assert_eq!(mapped_ranges(8, BLOCK, &free), vec![(0, 0), (7, 7)]);
    }

    #[test]
    fn dumpe2fs_free_blocks() {
        let text = "Free blocks:              102\nBlock size:               4096\nGroup 0: (Blocks 0-32767) csum 0x1 [ITABLE_ZEROED]\n  Free blocks: 100-200, 300\n  Free inodes: 12-8192\nGroup 1: (Blocks 32768-65535) [BLOCK_UNINIT]\n  Free blocks: \n";
        let (b, free) = parse_dumpe2fs(text).unwrap();
        assert_eq!(b, 4096);
        assert_eq!(free, vec![(100, 200), (300, 300)]);
        assert!(parse_dumpe2fs("Block size: 4096\n").is_err());
        let e = parse_dumpe2fs(&text.replace("102\n", "103\n")).unwrap_err();
        assert!(e.to_string().contains("superblock counts 103"), "{e}");
        assert!(parse_dumpe2fs("Block size: 4096\n  Free blocks: 5-x\n").is_err());
    }

    fn sample() -> Bmap {
        Bmap {
            image_size: 10 * BLOCK + 100,
            block_size: BLOCK,
            ranges: vec![
                Range {
                    first: 0,
                    last: 3,
                    sha256: "ab".repeat(32),
                },
                Range {
                    first: 7,
                    last: 7,
                    sha256: "cd".repeat(32),
                },
                Range {
                    first: 9,
                    last: 10,
                    sha256: "ef".repeat(32),
                },
            ],
        }
    }

    #[test]
    fn xml_round_trips_and_counts_the_partial_last_block() {
        let m = sample();
        let x = to_xml(&m, "a test");
        assert!(x.contains("<BlocksCount> 11 </BlocksCount>"));
        assert!(x.contains("<MappedBlocksCount> 7 </MappedBlocksCount>"));
        assert!(x.contains("> 7 </Range>"));
        assert_eq!(parse(&x).unwrap(), m);
        assert_eq!(m.mapped_bytes(), 6 * BLOCK + 100);
    }

    #[test]
    fn a_changed_bmap_is_refused() {
        let x = to_xml(&sample(), "a test");
        let e = parse(&x.replace("> 7 </Range>", "> 8 </Range>")).unwrap_err();
        assert!(e.to_string().contains("own checksum"), "{e}");
        let e = parse(&x.replace("sha256 </Chec", "sha1 </Chec")).unwrap_err();
        assert!(e.to_string().contains("not sha256"), "{e}");
        assert!(parse("<foo/>").is_err());
    }
}
