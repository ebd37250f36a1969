//! One module per subcommand.

pub mod add_key;
pub mod bench;
pub mod bmap;
pub mod check;
pub mod completions;
pub mod deploy;
pub mod flash;
pub mod list;
pub mod new_host;
pub mod rollback;
pub mod sd;
pub mod setup_binfmt;
pub mod status;
pub mod version;
