//! Writing SD cards: which devices are safe ([`device`]), what the image is
//! ([`image`]), streaming and verifying ([`write`]), and a NixOS-shaped test
//! image for tests and the benchmark ([`testimage`]).

pub mod device;
pub mod image;
pub mod progress;
pub mod sys;
pub mod sysfs;
pub mod testimage;
pub mod write;
