//! The xtask's commands and everything they share. Two binaries use it:
//! `xtask` (`main.rs`: parses and dispatches) and `xtask-crypto`
//! (`xtask/crypto/`: the commands that need age or HTTPS, built on first use,
//! see `crypto_tool.rs`).

mod bench_harness;
mod binfmt;
pub mod brokenpipe;
mod capture;
mod ci;
pub mod cmd;
mod compose;
mod config_txt;
mod container_pins;
mod containers;
pub mod crypto_tool;
mod deploy;
mod exec;
mod firmware;
mod flash;
mod fleet_bench;
mod git;
mod health;
mod identity;
mod image;
pub mod interrupt;
pub mod inventory;
mod journal;
pub mod nix;
mod nix_error;
mod pin;
mod plan;
mod reach;
pub mod registry;
pub mod repo;
pub mod secrets;
mod ssh;
mod sshkey;
mod time;
mod wifi;
