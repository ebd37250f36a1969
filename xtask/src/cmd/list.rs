//! `cargo xtask list`: the fleet at a glance, read straight from the inventory.

use std::path::Path;

use anyhow::Result;

use crate::image::info::{self, ImageInfo};
use crate::inventory::{Fleet, Host};

#[derive(clap::Args)]
pub struct Args {
    /// Print the hosts as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let (fleet, problems) = Fleet::read(root)?;
    if args.json {
        // Each host, plus `image`: the record of its built SD image or null.
        #[derive(serde::Serialize)]
        struct Row<'a> {
            #[serde(flatten)]
            host: &'a Host,
            image: Option<ImageInfo>,
        }
        let rows: Vec<Row> = fleet
            .hosts
            .iter()
            .map(|h| Row {
                host: h,
                image: info::read(root, &h.name),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let rows: Vec<[String; 6]> = fleet
            .hosts
            .iter()
            .map(|h| {
                let address = if h.port == 22 {
                    h.address.clone()
                } else {
                    format!("{}:{}", h.address, h.port)
                };
                [
                    h.name.clone(),
                    h.model.to_string(),
                    address,
                    h.user.clone(),
                    h.tags.join(","),
                    image_cell(info::read(root, &h.name)),
                ]
            })
            .collect();
        print_table(
            &["HOST", "MODEL", "ADDRESS", "USER", "TAGS", "SD IMAGE"],
            &rows,
        );
    }
    if !problems.is_empty() {
        eprintln!(
            "warning: the fleet definition has {} problem(s); run `cargo xtask check`",
            problems.len()
        );
    }
    Ok(())
}

/// `abc1234 2026-11-25` (the commit and day the SD image was built), or `-`.
fn image_cell(image: Option<ImageInfo>) -> String {
    match image {
        Some(i) => format!("{} {}", i.short_commit(), i.built.get(..10).unwrap_or("")),
        None => "-".to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
