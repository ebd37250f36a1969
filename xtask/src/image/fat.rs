//! The free clusters of a FAT partition (the image's `FIRMWARE`), read from
//! its boot sector and its allocation tables as the FAT specification
//! (Microsoft's "FAT32 File System Specification", 2000) lays them out, and
//! cross-checked with mtools' own count of free bytes (`mdir`). FAT reads a
//! data cluster only through a chain its table allocates, so a cluster free
//! in every copy of the table is never read: like a free ext4 block, it need
//! not be written. The boot sector, the reserved sectors, every copy of the
//! table and the FAT12/16 root directory region are never unmapped.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use super::mbr::{Partition, SECTOR};
use crate::exec;

/// MBR partition types of FAT filesystems (FAT12, FAT16 <32M, FAT16, FAT32
/// CHS, FAT32 LBA, FAT16 LBA).
pub const TYPES: [u8; 6] = [0x01, 0x04, 0x06, 0x0b, 0x0c, 0x0e];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fat12,
    Fat16,
    Fat32,
}

/// A FAT filesystem's geometry, from its boot sector (the BPB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub kind: Kind,
    pub sector: u64,
    pub cluster_sectors: u64,
    pub reserved: u64,
    pub fats: u64,
    pub fat_sectors: u64,
    pub first_data_sector: u64,
    pub clusters: u64,
}

impl Layout {
    pub fn cluster_bytes(&self) -> u64 {
        self.sector * self.cluster_sectors
    }

    /// Byte offset of the data cluster `n` (n ≥ 2) from the partition's start.
    pub fn cluster_offset(&self, n: u64) -> u64 {
        (self.first_data_sector + (n - 2) * self.cluster_sectors) * self.sector
    }

    /// Bytes of one copy of the table.
    pub fn fat_bytes(&self) -> u64 {
        self.fat_sectors * self.sector
    }

    /// Byte offset of copy `i` of the table.
    pub fn fat_offset(&self, i: u64) -> u64 {
        (self.reserved + i * self.fat_sectors) * self.sector
    }
}

fn u16_at(b: &[u8], i: usize) -> u64 {
    u16::from_le_bytes([b[i], b[i + 1]]) as u64
}

fn u32_at(b: &[u8], i: usize) -> u64 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as u64
}

/// Reads the BPB of a FAT boot sector; `size` is the partition's size in
/// bytes (the filesystem must fit in it).
pub fn layout(boot: &[u8], size: u64) -> Result<Layout> {
    if boot.len() < 512 || boot[510] != 0x55 || boot[511] != 0xaa {
        bail!("no FAT boot sector (signature 55aa missing)");
    }
    let sector = u16_at(boot, 11);
    let cluster_sectors = boot[13] as u64;
    let reserved = u16_at(boot, 14);
    let fats = boot[16] as u64;
    let root_entries = u16_at(boot, 17);
    let total = match u16_at(boot, 19) {
        0 => u32_at(boot, 32),
        n => n,
    };
    let fat_sectors = match u16_at(boot, 22) {
        0 => u32_at(boot, 36),
        n => n,
    };
    if ![512, 1024, 2048, 4096].contains(&sector) {
        bail!("bytes per sector {sector} is not 512, 1024, 2048 or 4096");
    }
    if !cluster_sectors.is_power_of_two() || cluster_sectors > 128 {
        bail!("sectors per cluster {cluster_sectors} is not a power of two up to 128");
    }
    if reserved == 0 || fats == 0 || fat_sectors == 0 || total == 0 {
        bail!("reserved sectors, FAT count, FAT size and total sectors must not be 0");
    }
    if total * sector > size {
        bail!(
            "the filesystem ({} bytes) is larger than its partition ({size} bytes)",
            total * sector
        );
    }
    let root_sectors = (root_entries * 32).div_ceil(sector);
    let first_data_sector = reserved + fats * fat_sectors + root_sectors;
    if first_data_sector >= total {
        bail!("the FAT has no data region");
    }
    let clusters = (total - first_data_sector) / cluster_sectors;
    let kind = if clusters < 4085 {
        Kind::Fat12
    } else if clusters < 65525 {
        Kind::Fat16
    } else {
        Kind::Fat32
    };
    let entry_bits = match kind {
        Kind::Fat12 => 12,
        Kind::Fat16 => 16,
        Kind::Fat32 => 32,
    };
    if (clusters + 2) * entry_bits > fat_sectors * sector * 8 {
        bail!("the FAT is too small for the {clusters} clusters of its data region");
    }
    Ok(Layout {
        kind,
        sector,
        cluster_sectors,
        reserved,
        fats,
        fat_sectors,
        first_data_sector,
        clusters,
    })
}

/// Entry `n` of a table (`fat`: one copy's bytes).
pub fn entry(kind: Kind, fat: &[u8], n: u64) -> u64 {
    let n = n as usize;
    match kind {
        Kind::Fat12 => {
            let v = u16_at(fat, n + n / 2);
            if n % 2 == 1 { v >> 4 } else { v & 0xfff }
        }
        Kind::Fat16 => u16_at(fat, 2 * n),
        Kind::Fat32 => u32_at(fat, 4 * n) & 0x0fff_ffff,
    }
}

/// The runs of clusters `[first, end)` that are free (entry 0) in every
/// copy of the table.
pub fn free_clusters(l: &Layout, fats: &[Vec<u8>]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for n in 2..l.clusters + 2 {
        if fats.iter().all(|f| entry(l.kind, f, n) == 0) {
            match runs.last_mut() {
                Some(r) if r.1 == n => r.1 = n + 1,
                _ => runs.push((n, n + 1)),
            }
        }
    }
    runs
}

/// The free byte ranges `[start, end)` of the FAT partition `p`, as offsets
/// in the image, and the free bytes they add up to.
pub fn free(image: &Path, p: &Partition) -> Result<(Vec<(u64, u64)>, u64)> {
    let f = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let base = p.offset();
    let size = p.sectors * SECTOR;
    let mut boot = [0u8; 512];
    f.read_exact_at(&mut boot, base)
        .with_context(|| format!("cannot read the boot sector of partition {}", p.number))?;
    let l = layout(&boot, size)?;
    let mut fats = Vec::new();
    for i in 0..l.fats {
        let mut t = vec![0u8; l.fat_bytes() as usize];
        f.read_exact_at(&mut t, base + l.fat_offset(i))
            .with_context(|| format!("cannot read copy {} of the FAT", i + 1))?;
        fats.push(t);
    }
    let runs = free_clusters(&l, &fats);
    let bytes = runs.iter().map(|(a, b)| (b - a) * l.cluster_bytes()).sum();
    let ranges = runs
        .into_iter()
        .map(|(a, b)| (base + l.cluster_offset(a), base + l.cluster_offset(b)))
        .collect();
    Ok((ranges, bytes))
}

/// The free bytes mtools counts on the FAT at `offset` in `image`: the
/// `N bytes free` line of `mdir`.
pub fn mtools_free(image: &Path, offset: u64) -> Result<u64> {
    let sh = Shell::new()?;
    let fs = format!("{}@@{offset}", image.display());
    let text = exec::read(cmd!(sh, "mdir -i {fs} ::").env("MTOOLS_SKIP_CHECK", "1"))?;
    parse_mdir_free(&text).context("mdir printed no `bytes free` line")
}

/// The free bytes in `mdir`'s last line (`   1 file  12 345 bytes`, then
/// `  30 670 848 bytes free`: digits may be grouped with spaces).
pub fn parse_mdir_free(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.trim_end().ends_with("bytes free"))?;
    let digits: String = line
        .trim_end()
        .trim_end_matches("bytes free")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT16 boot sector: 512-byte sectors, 4 per cluster, 4 reserved,
    /// 2 FATs of 32 sectors, 512 root entries, 61440 sectors (30 MiB).
    fn boot16() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 4;
        b[14..16].copy_from_slice(&4u16.to_le_bytes());
        b[16] = 2;
        b[17..19].copy_from_slice(&512u16.to_le_bytes());
        b[19..21].copy_from_slice(&0u16.to_le_bytes());
        b[22..24].copy_from_slice(&60u16.to_le_bytes());
        b[32..36].copy_from_slice(&61440u32.to_le_bytes());
        b[510] = 0x55;
        b[511] = 0xaa;
        b
    }

    #[test]
    fn fat16_layout_per_the_spec() {
        let l = layout(&boot16(), 30 << 20).unwrap();
        // 4 reserved + 2 × 60 FAT + 32 root directory sectors.
        assert_eq!(l.first_data_sector, 156);
        assert_eq!(l.clusters, (61440 - 156) / 4);
        assert_eq!(l.kind, Kind::Fat16);
        assert_eq!(l.cluster_offset(2), 156 * 512);
        assert_eq!(l.cluster_offset(3), 160 * 512);
        assert_eq!(l.fat_offset(1), 64 * 512);
        assert!(
            layout(&boot16(), 1 << 20).is_err(),
            "larger than its partition"
        );
        let mut b = boot16();
        b[13] = 3;
        assert!(layout(&b, 30 << 20).is_err());
        assert!(layout(&[0u8; 512], 30 << 20).is_err());
    }

    #[test]
    fn entries_of_each_width() {
        // FAT12: entries 2 = 0x003, 3 = 0x000, 4 = 0xfff, packed 1.5 bytes each.
        let fat12 = [0xf8, 0xff, 0xff, 0x03, 0x00, 0x00, 0xff, 0x0f];
        assert_eq!(entry(Kind::Fat12, &fat12, 2), 0x003);
        assert_eq!(entry(Kind::Fat12, &fat12, 3), 0x000);
        assert_eq!(entry(Kind::Fat12, &fat12, 4), 0xfff);
        let fat16 = [0xf8, 0xff, 0xff, 0xff, 0x00, 0x00, 0x05, 0x00];
        assert_eq!(entry(Kind::Fat16, &fat16, 2), 0);
        assert_eq!(entry(Kind::Fat16, &fat16, 3), 5);
        // FAT32's top four bits are reserved, not part of the entry.
        let fat32 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 7, 0, 0, 0];
        assert_eq!(entry(Kind::Fat32, &fat32, 2), 0);
        assert_eq!(entry(Kind::Fat32, &fat32, 3), 7);
    }

    #[test]
    fn a_cluster_is_free_only_when_free_in_every_copy() {
        let l = Layout {
            kind: Kind::Fat16,
            sector: 512,
            cluster_sectors: 1,
            reserved: 1,
            fats: 2,
            fat_sectors: 1,
            first_data_sector: 3,
            clusters: 6,
        };
        // Clusters 2..8: used, free, free, used, free, free.
        let mut a = vec![0u8; 512];
        for n in [2usize, 5] {
            a[2 * n] = 0xff;
            a[2 * n + 1] = 0xff;
        }
        let mut b = a.clone();
        assert_eq!(
            free_clusters(&l, &[a.clone(), b.clone()]),
            vec![(3, 5), (6, 8)]
        );
        // The second copy disagrees on cluster 7: it stays mapped.
        b[14] = 9;
        assert_eq!(free_clusters(&l, &[a, b]), vec![(3, 5), (6, 7)]);
    }

    #[test]
    fn mdir_free_bytes() {
        let t = "Volume in drive : is FIRMWARE\n Directory for ::/\n\nconfig   txt       120 2026-01-01  10:00\n        1 file                  120 bytes\n                         30 670 848 bytes free\n\n";
        assert_eq!(parse_mdir_free(t), Some(30_670_848));
        assert_eq!(parse_mdir_free("nothing"), None);
    }
}
