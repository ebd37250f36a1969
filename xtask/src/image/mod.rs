//! SD card images: where `cargo xtask sd` puts them and what it records
//! (`info`), their partition table (`mbr`), the Wi-Fi secrets and host key it
//! writes into them (`wifi`, `hostkey`) and the streaming copy/hash/compress steps (`stream`).

pub mod bmap;
pub mod frames;
pub mod hostkey;
pub mod info;
pub mod mbr;
pub mod stream;
pub mod wifi;
