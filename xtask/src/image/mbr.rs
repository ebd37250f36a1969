//! The MBR partition table of a NixOS SD image: a FAT32 `FIRMWARE`
//! partition (type 0x0b/0x0c) and the ext4 `NIXOS_SD` root (type 0x83).

use anyhow::{Result, bail};

pub const SECTOR: u64 = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as Linux numbers them.
    pub number: usize,
    pub kind: u8,
    pub start: u64,
    pub sectors: u64,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.start * SECTOR
    }
}

/// The primary partitions in the first sector of a disk image.
pub fn parse(sector: &[u8]) -> Result<Vec<Partition>> {
    if sector.len() < 512 || sector[510] != 0x55 || sector[511] != 0xaa {
        bail!("no MBR partition table (boot signature 55aa missing)");
    }
    let mut parts = Vec::new();
    for i in 0..4 {
        let e = &sector[446 + 16 * i..446 + 16 * (i + 1)];
        let kind = e[4];
        let start = u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64;
        let sectors = u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as u64;
        if kind != 0 && sectors != 0 {
            parts.push(Partition {
                number: i + 1,
                kind,
                start,
                sectors,
            });
        }
    }
    Ok(parts)
}

/// The Linux (0x83) root partition of a NixOS SD image.
pub fn root_partition(sector: &[u8]) -> Result<Partition> {
    let parts = parse(sector)?;
    match parts.iter().filter(|p| p.kind == 0x83).collect::<Vec<_>>()[..] {
        [p] => Ok(*p),
        [] => bail!("the image has no Linux (type 83) partition: is it a NixOS SD image?"),
        _ => bail!("the image has more than one Linux partition: which one is the root is unclear"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sector: &mut [u8], i: usize, kind: u8, start: u32, len: u32) {
        let e = &mut sector[446 + 16 * i..446 + 16 * (i + 1)];
        e[4] = kind;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&len.to_le_bytes());
    }

    #[test]
    fn nixos_layout() {
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        entry(&mut s, 0, 0x0b, 16384, 61440);
        entry(&mut s, 1, 0x83, 77824, 4_000_000);
        let root = root_partition(&s).unwrap();
        assert_eq!(root.number, 2);
        assert_eq!(root.offset(), 77824 * 512);
        assert_eq!(parse(&s).unwrap()[0].start * SECTOR, 8 << 20);
    }

    #[test]
    fn refuses_non_mbr() {
        assert!(parse(&[0u8; 512]).is_err());
        let mut s = vec![0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        entry(&mut s, 0, 0x0b, 2048, 100);
        assert!(
            root_partition(&s)
                .unwrap_err()
                .to_string()
                .contains("no Linux")
        );
    }
}
