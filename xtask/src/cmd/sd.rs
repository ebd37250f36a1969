//! `cargo xtask sd <host>`: build a host's SD card image with Nix and put it
//! at `out/<host>/<host>.img.zst` with its sha256, size and commit recorded.
//! A preflight refuses, before any build, everything that would make the
//! image fail or unreachable; each refusal names the command that fixes it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use xshell::Shell;

use crate::image::info::{self, ImageInfo};
use crate::image::{bmap, debugfs, frames, hostkey, mbr, stream};
use crate::inventory::{self, Fleet, Host};
use crate::{capture, container_pins, exec, git, nix, nix_error, wifi};

#[derive(clap::Args)]
pub struct Args {
    /// The host whose card image to build (see `cargo xtask list`)
    host: String,
    /// Put the image in DIR instead of out/<host>/
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Build natively on this aarch64 machine (SSH destination) instead of under QEMU [default: the host's build_host]
    #[arg(long, value_name = "SSH")]
    build_host: Option<String>,
    /// Also write the raw image <host>.img next to the compressed one
    #[arg(long)]
    decompress: bool,
    /// Gone: the Wi-Fi password is the age secret `cargo xtask wifi <host>` writes
    #[arg(long, value_name = "FILE", hide = true)]
    wifi_secrets: Option<PathBuf>,
    /// Check and print what would run, build nothing
    #[arg(long)]
    dry_run: bool,
    /// Ask Nix what it would build here (under QEMU) and fetch, print that plan and stop; needs no aarch64 builder, fails when the build would be refused
    #[arg(long, conflicts_with = "dry_run")]
    plan: bool,
    /// Build heavy derivations (a kernel, a compiler…) under QEMU even though it takes hours to days
    #[arg(long)]
    allow_slow_build: bool,
}

/// What the preflight found: everything the build and delivery need.
struct Plan {
    host: Host,
    out_dir: PathBuf,
    zst: PathBuf,
    raw: PathBuf,
    info: PathBuf,
    build_host: Option<String>,
    git: Option<git::Status>,
    /// The host's private SSH host key and its public line (identity in Git).
    host_key: Option<(PathBuf, String)>,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let sh = Shell::new()?;
    let started = Instant::now();
    let plan = preflight(&sh, root, &args)?;
    eprintln!("preflight ok ({:.3} s)", started.elapsed().as_secs_f64());

    let out_link = plan.out_dir.join(".result");
    let installable = nix::flake_attr(
        root,
        &nix::sd_image_attr(
            &plan.host.name,
            plan.build_host.is_some(),
            std::env::consts::ARCH,
        ),
    );
    let nom = exec::have("nom");
    let build = nix::build(
        &sh,
        &installable,
        &out_link,
        plan.build_host.as_deref(),
        nom,
    );
    if args.plan || !args.dry_run {
        let command = format!("cargo xtask sd {}", plan.host.name);
        let p = match crate::plan::ask(&installable, plan.build_host.as_deref())? {
            Ok(p) => p,
            Err(stderr) => bail!("{}", build_failure(&plan.host.name, &stderr)),
        };
        if args.plan {
            return crate::plan::print(&p, &command, args.allow_slow_build);
        }
        crate::plan::check(&p, &command, args.allow_slow_build)?;
    }
    if args.dry_run {
        println!("would run:");
        println!("$ {build}");
        println!(
            "then copy <result>/sd-image/*.img.zst to {}{}, record its sha256 and size in {}",
            shown(root, &plan.zst),
            if plan.host_key.is_some() {
                " with the host key written into its root partition"
            } else {
                ""
            },
            shown(root, &plan.info)
        );
        if args.decompress {
            println!("and write the raw image {}", shown(root, &plan.raw));
        }
        return Ok(());
    }

    // Folders made here are removed again when the build fails.
    let made = missing_ancestors(&plan.out_dir);
    std::fs::create_dir_all(&plan.out_dir)
        .with_context(|| format!("cannot create {}", plan.out_dir.display()))?;
    if args.out.is_none() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plan.out_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if let Some(b) = &plan.build_host {
        eprintln!("building on {b} (Nix remote build); this workstation only evaluates");
    } else if std::env::consts::ARCH != "aarch64" {
        eprintln!(
            "building aarch64 under QEMU: what the binary cache has is fetched, the host's own derivations are built here; the card itself is assembled natively (system.build.sdImageNative)"
        );
    }
    let built = build_and_deliver(&sh, &plan, build, &out_link, args.decompress);
    let _ = std::fs::remove_file(&out_link);
    if built.is_err() {
        for dir in &made {
            // Only while empty: nothing of an earlier image is removed.
            let _ = std::fs::remove_dir(dir);
        }
    }
    let (store, zsum, rsum, bmap_sum) = built?;

    let record = ImageInfo {
        host: plan.host.name.clone(),
        commit: plan.git.as_ref().and_then(|g| g.commit.clone()),
        dirty: plan.git.as_ref().map(git::Status::dirty),
        sha256: zsum.sha256.clone(),
        size: zsum.size,
        raw_sha256: rsum.sha256,
        raw_size: rsum.size,
        built: info::now_utc(),
        store_path: store.display().to_string(),
        bmap_sha256: Some(bmap_sum),
    };
    info::write(&plan.info, &record)?;

    println!("✓ {}: {}", plan.host.name, shown(root, &plan.zst));
    println!("  size    {} ({} bytes)", human(zsum.size), zsum.size);
    println!("  sha256  {}", zsum.sha256);
    println!(
        "  raw     {} ({} bytes), sha256 {}",
        human(record.raw_size),
        record.raw_size,
        record.raw_sha256
    );
    println!("  commit  {}", record.short_commit());
    if let Some(ssid) = &plan.host.wifi {
        println!(
            "  wifi    joins `{ssid}`: the Pi decrypts its password ({}) with the host key on this card",
            crate::secrets::age_path(&wifi::secret_name(&plan.host.name))
        );
    }
    if args.decompress {
        println!("  file    {}", shown(root, &plan.raw));
    }
    println!("next: cargo xtask flash {} /dev/sdX", plan.host.name);
    Ok(())
}

/// Runs the build and delivers the image. Returns the store path, the
/// sums of the `.img.zst` and of the raw image, and the block map's sha256.
fn build_and_deliver(
    sh: &Shell,
    plan: &Plan,
    build: xshell::Cmd<'_>,
    out_link: &Path,
    decompress: bool,
) -> Result<(PathBuf, stream::Sum, stream::Sum, String)> {
    let done = capture::run(build)?;
    if !done.status.success() {
        bail!("{}", build_failure(&plan.host.name, &done.stderr));
    }
    let store = std::fs::read_link(out_link)
        .with_context(|| format!("nix build left no {}", out_link.display()))?;
    let (zsum, rsum, bmap_sum) = deliver(sh, plan, &store, decompress)?;
    Ok((store, zsum, rsum, bmap_sum))
}

/// What to tell about a failed `nix build` of `host`'s image, from its stderr.
fn build_failure(host: &str, stderr: &str) -> String {
    match nix_error::read(stderr) {
        nix_error::Failure::Network(line) => format!(
            "the Nix build could not download what it needs: {line}\nthis machine is offline or cannot reach the binary cache (cache.nixos.org) or GitHub, where nixpkgs and most of the system come from; nothing is wrong with the fleet definition. Connect it (check DNS, and `https_proxy` behind a proxy), then run `cargo xtask sd {host}` again"
        ),
        nix_error::Failure::Other(line) => format!(
            "the Nix build failed: {line}\n(Nix's whole message is above; for a mistake in a host's configuration, `cargo xtask check` lists them with file:line)"
        ),
    }
}

/// `dir` and its ancestors that do not exist yet, deepest first.
fn missing_ancestors(dir: &Path) -> Vec<PathBuf> {
    dir.ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect()
}

/// Every check before the build; all refusals are reported together.
fn preflight(sh: &Shell, root: &Path, args: &Args) -> Result<Plan> {
    let (fleet, problems) = Fleet::read(root)?;
    let host = fleet.host(&args.host)?.clone();
    let mut refusals = Vec::new();

    // The fleet definition: this host's problems and the shared ones.
    let others: Vec<String> = fleet
        .hosts
        .iter()
        .filter(|h| h.name != host.name)
        .map(|h| format!("host `{}`", h.name))
        .collect();
    for p in &problems {
        if !others.iter().any(|o| p.message.contains(o.as_str())) {
            refusals.push(p.to_string().replace("\n    fix: ", ": "));
        }
    }
    if fleet.admin_keys().is_empty() && !problems.iter().any(|p| p.message.contains("unreachable"))
    {
        refusals.push(format!(
            "the image would be unreachable: {} has no usable admin SSH key: run `cargo xtask add-key`",
            inventory::KEYS
        ));
    }
    for p in container_pins::problems(&fleet)? {
        if p.file == crate::containers::file(&host.name) {
            refusals.push(p.to_string().replace("\n    fix: ", ": "));
        }
    }

    // Wi-Fi: the password is the host's age secret, decrypted on the Pi
    // with the host key this card carries; without it the Pi has no Wi-Fi.
    if let Some(p) = wifi::host_problem(root, &fleet, &host) {
        refusals.push(p.to_string().replace("\n    fix: ", ": "));
    }
    if args.wifi_secrets.is_some() {
        refusals.push(format!(
            "--wifi-secrets is gone: the Wi-Fi password is now an age secret of the host, which the card does not carry; run `cargo xtask wifi {}` (it asks for the password), commit secrets/, then run this again without the option",
            host.name
        ));
    }

    // The host's identity: its private key goes onto the card.
    let host_key = match crate::identity::card_key(sh, root, &host.name) {
        Ok(k) => k,
        Err(e) => {
            refusals.push(format!("{e:#}"));
            None
        }
    };
    if host_key.is_none() && crate::identity::git_key(root, &host.name).is_ok_and(|k| k.is_none()) {
        eprintln!(
            "note: `{}` has no identity in Git, so the Pi makes its own host key and the first SSH contact asks about it: `cargo xtask identity {}` avoids that",
            host.name, host.name
        );
    }

    // The tools that finish the image.
    if !exec::have("zstd") {
        refusals.push("zstd is not installed: `sudo apt-get install zstd`".to_string());
    }
    if host_key.is_some() && debugfs::find().is_none() {
        refusals.push(
            "debugfs (which writes the host key into the image) is not installed: `sudo apt-get install e2fsprogs`"
                .to_string(),
        );
    }

    // Nix, and a way to build aarch64.
    if !nix::installed() {
        refusals.push(
            "nix is not installed: install it (see documentation/getting nix ready.md), then run `cargo xtask setup-binfmt`".to_string(),
        );
    } else if let Err(e) = nix::version::require() {
        refusals.push(e.to_string());
    }
    let build_host = args.build_host.clone().or_else(|| host.build_host.clone());
    // `--plan` needs no aarch64 builder: it is what a user runs first.
    let emulated = build_host.is_none() && std::env::consts::ARCH != "aarch64" && !args.plan;
    if let Err(e) = if emulated { aarch64_ready() } else { Ok(()) } {
        refusals.push(format!(
            "{e:#} (or build on an aarch64 machine: --build-host user@machine)"
        ));
    }

    // Git: flakes build the tracked files only.
    let status = git::status(sh, root)?;
    if let Some(s) = &status {
        let untracked = s.untracked_flake_inputs();
        if !untracked.is_empty() {
            refusals.push(format!(
                "not tracked by Git: {}. Nix flakes only see tracked files, so the image would be built without them: run `git add {}`",
                untracked.join(", "),
                untracked.join(" ")
            ));
        }
        if let Some(note) = s.dirty_note("the image is recorded as") {
            eprintln!("{note}");
        }
    }

    if !refusals.is_empty() {
        bail!(
            "cannot build the SD image of `{}`:\n{}",
            host.name,
            refusals
                .iter()
                .map(|r| format!("  - {}", r.replace('\n', "\n    ")))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    let (out_dir, zst, info) = match &args.out {
        Some(dir) => {
            let dir = std::path::absolute(dir)?;
            (
                dir.clone(),
                dir.join(format!("{}.img.zst", host.name)),
                dir.join(format!("{}.img.json", host.name)),
            )
        }
        None => {
            let zst = inventory::image_path(root, &host.name);
            (
                zst.parent().unwrap().to_path_buf(),
                zst,
                inventory::image_info_path(root, &host.name),
            )
        }
    };
    let raw = zst.with_extension("");
    Ok(Plan {
        host,
        out_dir,
        zst,
        raw,
        info,
        build_host,
        git: status,
        host_key,
    })
}

/// The workstation can build aarch64-linux with Nix (QEMU user emulation
/// registered with binfmt, Nix told about the platform): the checks of
/// `cargo xtask setup-binfmt`, called, not copied.
fn aarch64_ready() -> Result<()> {
    crate::binfmt::ensure_ready(false)
}

/// Copies (and, for hosts with an identity, completes) the built image into place.
/// Returns the sums of the `.img.zst` and of the raw image, and the sha256
/// of the block map written beside them.
fn deliver(
    sh: &Shell,
    plan: &Plan,
    store: &Path,
    decompress: bool,
) -> Result<(stream::Sum, stream::Sum, String)> {
    let src = find_image(store)?;
    let compressed = src.extension().is_some_and(|e| e == "zst");
    let (zst, raw) = (&plan.zst, &plan.raw);
    let (zst_tmp, raw_tmp) = (stream::partial(zst), stream::partial(raw));
    for stale in [&zst_tmp, &raw_tmp] {
        let _ = std::fs::remove_file(stale);
    }
    let keep_raw = decompress.then_some(raw_tmp.as_path());

    let (zsum, rsum) = match plan.host_key.is_some() {
        false if compressed => {
            // The raw image, for the block map and the frames.
            let rsum = stream::zstd(&["-d", "-c"], &src, Some(&raw_tmp))?;
            let zsum = frames::compress(&raw_tmp, &zst_tmp, frames::FRAME)?;
            (zsum, rsum)
        }
        false => {
            let rsum = match keep_raw {
                Some(t) => stream::copy(&src, t)?,
                None => stream::hash_file(&src)?,
            };
            let zsum = frames::compress(&src, &zst_tmp, frames::FRAME)?;
            (zsum, rsum)
        }
        true => {
            if compressed {
                stream::zstd(&["-d", "-c"], &src, Some(&raw_tmp))?;
            } else {
                stream::copy(&src, &raw_tmp)?;
            }
            let mut first = [0u8; 512];
            {
                use std::io::Read;
                std::fs::File::open(&raw_tmp)?.read_exact(&mut first)?;
            }
            let root = mbr::root_partition(&first)
                .with_context(|| format!("{} is not a NixOS SD image", src.display()))?;
            if let Some((key, public)) = &plan.host_key {
                eprintln!(
                    "writing the host key into partition {} ({}, root 0600)",
                    root.number,
                    crate::identity::ON_PI
                );
                hostkey::inject(sh, &raw_tmp, root.offset(), key, public)?;
            }
            let rsum = stream::hash_file(&raw_tmp)?;
            let zsum = frames::compress(&raw_tmp, &zst_tmp, frames::FRAME)?;
            (zsum, rsum)
        }
    };
    // Last, from the final image: after every write into it.
    let final_raw = if raw_tmp.exists() { &raw_tmp } else { &src };
    let (_, bmap_sum) = bmap::write(final_raw, &bmap::beside(zst))?;
    if !decompress && raw_tmp.exists() {
        std::fs::remove_file(&raw_tmp)?;
    }
    stream::finish(&zst_tmp, zst)?;
    if decompress {
        stream::finish(&raw_tmp, raw)?;
    } else if raw.exists() {
        // A raw image from an earlier run would not match the new one.
        std::fs::remove_file(raw)?;
    }
    Ok((zsum, rsum, bmap_sum))
}

/// The one image file in `<store path>/sd-image/`.
fn find_image(store: &Path) -> Result<PathBuf> {
    let dir = store.join("sd-image");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("the build result has no {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".img.zst") || n.ends_with(".img")
        })
        .collect();
    if found.len() != 1 {
        bail!(
            "expected one .img.zst (or .img) in {}, found {}",
            dir.display(),
            found.len()
        );
    }
    Ok(found.remove(0))
}

/// A path relative to the repository when it is inside it.
fn shown(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

/// 1.2 GiB, 34.5 MiB, 512 B.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
        assert_eq!(human(1_288_490_189), "1.2 GiB");
    }
}
