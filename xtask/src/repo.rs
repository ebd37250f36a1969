//! Where the fleet repository is.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The repository root: `--flake DIR` when given, else the checkout this
/// xtask was built from (not the current directory).
pub fn root(flake: Option<&Path>) -> Result<PathBuf> {
    let dir = match flake {
        Some(d) => d.to_path_buf(),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the xtask crate has no parent folder")?
            .to_path_buf(),
    };
    dir.canonicalize()
        .with_context(|| format!("cannot open the fleet repository {}", dir.display()))
}
