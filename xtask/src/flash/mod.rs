//! Writing SD cards: which devices are safe ([`device`], facts from
//! [`sysfs`]), what the image is ([`image`], a host's: [`host`]), reading and
//! checking it ([`source`]), streaming and verifying ([`write`]), and a
//! NixOS-shaped test image for tests and the benchmark ([`testimage`]), the
//! card-speed benchmark and its goals ([`cardbench`], [`cardgoals`]).

pub mod cardbench;
pub mod cardgoals;
pub mod device;
pub mod host;
pub mod image;
pub mod map;
pub mod progress;
pub mod source;
pub mod sys;
pub mod sysfs;
pub mod testimage;
pub mod verify;
pub mod write;
