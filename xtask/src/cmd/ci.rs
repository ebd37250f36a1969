//! `cargo xtask ci matrix | apps | cache`: what `.github/workflows/` reads
//! from the repository, so no workflow holds a host list, an app list or a
//! cache name of its own.

use std::path::Path;

use anyhow::Result;

use crate::ci::{self, CacheKind};
use crate::inventory::Fleet;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Every host as JSON for a workflow's `strategy.matrix: ${{ fromJSON(…) }}`
    Matrix,
    /// Every `apps/<name>/Dockerfile` as JSON for the images workflow's matrix
    Apps,
    /// `key=value` lines for `$GITHUB_OUTPUT`: where the workflow pushes ([fleet] cache)
    Cache {
        /// The service (the repository variable PI_NIXOS_CACHE)
        #[arg(long, value_enum)]
        kind: CacheKind,
    },
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    match args.what {
        What::Apps => println!("{}", ci::apps(root)?),
        What::Matrix => println!("{}", ci::matrix(&read(root)?.hosts)),
        What::Cache { kind } => {
            for (k, v) in ci::cache_outputs(&read(root)?.settings, kind)? {
                println!("{k}={v}");
            }
        }
    }
    Ok(())
}

/// The fleet as far as it reads: its problems (a missing admin key, say)
/// are `check`'s to report, in its own job; the hosts still build.
fn read(root: &Path) -> Result<Fleet> {
    Ok(Fleet::read(root)?.0)
}
