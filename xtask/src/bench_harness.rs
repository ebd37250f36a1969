//! The tests' fake Pis (tests/common/fakepi.rs, on tests/common/nixenv.rs's
//! Debian root), compiled once into the xtask for `bench deploy` and
//! `bench fleet`.

#[path = "../tests/common/fakepi.rs"]
pub mod fakepi;
#[path = "../tests/common/nixenv.rs"]
pub mod nixenv;
