//! SD card images: where `cargo xtask sd` puts them and what it records
//! (`info`), their partition table (`mbr`), the host key it writes into them
//! (`hostkey`, with e2fsprogs' `debugfs`), the streaming copy/hash/compress steps (`stream`),
//! block maps, the FAT's free clusters and frames (`bmap`, `fat`, `frames`) and `bench sd` (`bench`).

pub mod bench;
pub mod bmap;
pub mod debugfs;
pub mod fat;
pub mod frames;
pub mod hostkey;
pub mod info;
pub mod mbr;
pub mod stream;
