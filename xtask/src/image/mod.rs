//! SD card images: where `cargo xtask sd` puts them and what it records
//! (`info`), their partition table (`mbr`), the Wi-Fi secrets it writes into
//! them (`wifi`), the streaming copy/hash/compress steps (`stream`) and
//! `bench sd` (`bench`).

pub mod bench;
pub mod info;
pub mod mbr;
pub mod stream;
pub mod wifi;
