//! One module per subcommand.

pub mod add_key;
pub mod bench;
pub mod bmap;
pub mod check;
pub mod ci;
pub mod completions;
pub mod deploy;
pub mod exec;
pub mod flash;
pub mod identity;
pub mod list;
pub mod logs;
pub mod new_host;
pub mod pin;
pub mod rollback;
pub mod sd;
pub mod secret;
pub mod setup_binfmt;
pub mod ssh;
pub mod status;
pub mod version;
pub mod wifi;
