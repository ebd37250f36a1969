//! `cargo xtask bmap <image>`: the block map of a raw NixOS SD image, in
//! bmaptool's format, made from its filesystems (`sd` makes one for every
//! host image; this is for other images and the benchmark).

use std::path::PathBuf;

use anyhow::Result;

use crate::flash::device::human;
use crate::image::bmap;

#[derive(clap::Args)]
pub struct Args {
    /// A raw (uncompressed) NixOS SD image
    image: PathBuf,
    /// Where to write the map [default: the image's name with .bmap]
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let out = args
        .out
        .unwrap_or_else(|| args.image.with_extension("bmap"));
    let (m, _) = bmap::write(&args.image, &out)?;
    println!(
        "✓ {}: {} of {} mapped in {} ranges",
        out.display(),
        human(m.mapped_bytes()),
        human(m.image_size),
        m.ranges.len()
    );
    Ok(())
}
