//! `cargo xtask list`: the fleet at a glance, read straight from the inventory.

use std::path::Path;

use anyhow::Result;

use crate::inventory::Fleet;

#[derive(clap::Args)]
pub struct Args {
    /// Print the hosts as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let (fleet, problems) = Fleet::read(root)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&fleet.hosts)?);
    } else {
        let rows: Vec<[String; 5]> = fleet
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
                ]
            })
            .collect();
        print_table(&["HOST", "MODEL", "ADDRESS", "USER", "TAGS"], &rows);
    }
    if !problems.is_empty() {
        eprintln!(
            "warning: the fleet definition has {} problem(s); run `cargo xtask check`",
            problems.len()
        );
    }
    Ok(())
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
