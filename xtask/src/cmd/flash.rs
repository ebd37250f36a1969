//! `cargo xtask flash <host|image> [device]`: write an SD card safely, fast,
//! and verified.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::exec;
use crate::flash::device::{self, Disk, Transport, human};
use crate::flash::image::{self, Image};
use crate::flash::map;
use crate::flash::progress::rate;
use crate::flash::sys;
use crate::flash::verify;
use crate::flash::write::{self, Target};

#[derive(clap::Args)]
pub struct Args {
    /// A host name (its image from `cargo xtask sd`) or a .img / .img.zst / .img.xz / .img.gz file
    image: String,
    /// The card's whole-disk device, like /dev/sdb or /dev/mmcblk0 [default: list the candidates]
    device: Option<PathBuf>,
    /// Do not ask to type the device name (every check still runs)
    #[arg(long, short)]
    yes: bool,
    /// Run every check and print what would be done, without writing
    #[arg(long)]
    dry_run: bool,
    /// Skip reading the card back after writing
    #[arg(long, conflicts_with = "verify_only")]
    no_verify: bool,
    /// Only compare the card with the image; write nothing
    #[arg(long)]
    verify_only: bool,
    /// Accept a disk that does not look removable, or one over 128 GB (never a system disk)
    #[arg(long)]
    force_non_removable: bool,
    /// Power the card off at the end, ready to pull out
    #[arg(long)]
    eject: bool,
    /// Write (and read back) every byte, not only the blocks the image's block map says are used
    #[arg(long, conflicts_with = "bmap")]
    no_bmap: bool,
    /// The block map (bmaptool format) to write by [default: `<host>.bmap` from `sd`, or a .bmap beside the image]
    #[arg(long, value_name = "FILE")]
    bmap: Option<PathBuf>,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let img = image::resolve(root, &args.image)?;
    let size = img
        .size
        .map(|s| format!("{} ({s} bytes)", human(s)))
        .unwrap_or_else(|| "size known after writing".into());
    eprintln!(
        "image: {} ({}, {size})",
        img.path.display(),
        img.format.as_str()
    );
    let map = if args.no_bmap {
        None
    } else {
        map::find(&img, args.bmap.as_deref())?
    };
    if let Some((p, m)) = &map {
        eprintln!(
            "block map: {}: {} of the image's {} are used (the rest is free space of its filesystems): only those are written and read back (--no-bmap: everything)",
            p.display(),
            human(m.mapped_bytes()),
            human(m.image_size)
        );
    }
    let map = map.map(|(_, m)| m);
    let (mounts, swaps) = device::read_mounts()?;

    let (name, chosen_by_typing) = match &args.device {
        Some(p) => (device::resolve_target(p)?, false),
        None => match choose(&img, &args, &mounts, &swaps)? {
            Some(n) => (n, true),
            None => return Ok(()),
        },
    };
    let disk = device::read_disk(&name)?;
    let a = assess(&disk, &mounts, &swaps, &img);
    eprintln!("device: {}", describe(&disk, &a.mountpoints));

    if args.verify_only {
        if disk.size.unwrap_or(0) == 0 {
            bail!(
                "{}: size unknown (no medium?): insert the card",
                disk.path()
            );
        }
        if args.dry_run {
            println!(
                "would compare {} with {} (read only)",
                disk.path(),
                img.path.display()
            );
            return Ok(());
        }
        sys::catch_interrupts();
        let t = open_target(&disk, false, &args, root)?;
        let (bytes, time) = verify::verify_against_image(&t, &img, map.as_ref())?;
        println!(
            "✓ verified: {} matches {} ({})",
            t.path,
            img.path.display(),
            rate(bytes, time)
        );
        return Ok(());
    }

    if let Err(why) = a.decide(args.force_non_removable) {
        let list = why.iter().map(|w| format!("\n  - {w}")).collect::<String>();
        let hint = if a.system {
            "\nit holds the running system: nothing was written; pick the SD card instead"
        } else {
            "\nnothing was written"
        };
        bail!("refusing to write {}:{list}{hint}", disk.path());
    }
    for w in &a.needs_force {
        eprintln!("warning: {w}");
    }

    let verify = if args.no_verify {
        ""
    } else {
        ", then read it back and compare"
    };
    if args.dry_run {
        for (src, target) in &a.unmount {
            println!("would unmount {src} (auto-mounted at {target})");
        }
        let what = match &map {
            Some(m) => format!(
                "the {} its block map says are used",
                human(m.mapped_bytes())
            ),
            None => img.size.map(human).unwrap_or_else(|| "the image".into()),
        };
        println!(
            "would write {what} from {} to {} (streamed, O_DIRECT, first MiB last, fsync){verify}",
            img.path.display(),
            disk.path()
        );
        if args.eject {
            println!("would power {} off", disk.path());
        }
        return Ok(());
    }

    if !args.yes && !chosen_by_typing {
        confirm(&disk)?;
    }
    for (src, target) in &a.unmount {
        eprintln!("unmounting {src} (the desktop mounted it at {target})");
        unmount(src)?;
    }

    sys::catch_interrupts();
    let t = open_target(&disk, true, &args, root)?;
    if let Some(s) = img.size
        && s > t.size
    {
        bail!(
            "{} ({} bytes) is smaller than the image ({s} bytes): use a larger card; nothing was written",
            t.path,
            t.size
        );
    }
    let w = write::write(&t, &img, map.as_ref())?;
    let mut summary = format!("✓ wrote {} to {}", rate(w.mapped, w.time), t.path);
    if w.mapped < w.bytes {
        summary += &format!(" (the used blocks of a {} image)", human(w.bytes));
    }
    if !args.no_verify {
        let vt = verify::verify_written(&t, &img, &w)?;
        summary += &format!(", verified {} ✓", rate(w.mapped, vt));
    }
    sys::reread_partitions(&t.file);
    drop(t);
    println!("{summary}");
    if args.eject {
        eject(&disk)?;
    }
    Ok(())
}

/// The checks of a disk for this image: the disk's own, then whether the
/// image is the disk's backing file or lives on it.
fn assess(
    disk: &Disk,
    mounts: &[device::Mount],
    swaps: &[String],
    img: &Image,
) -> device::Assessment {
    let mut a = device::assess(disk, mounts, swaps, img.size);
    a.refusals
        .extend(device::image_refusals(disk, mounts, &img.file));
    a
}

/// One line about a disk: path, model, size, transport, mounts.
fn describe(d: &Disk, mountpoints: &[String]) -> String {
    let mut s = format!(
        "{}  {}  {}",
        d.path(),
        d.size.map(human).unwrap_or_else(|| "no medium".into()),
        d.transport.as_str()
    );
    if !d.model.is_empty() {
        s += &format!("  {}", d.model);
    }
    if let Some(b) = &d.loop_backing {
        s += &format!("  backed by {b}");
    }
    if !mountpoints.is_empty() {
        s += &format!("  mounted at {}", mountpoints.join(", "));
    }
    s
}

/// Without a device: list the candidates and let the user type one.
fn choose(
    img: &Image,
    args: &Args,
    mounts: &[device::Mount],
    swaps: &[String],
) -> Result<Option<String>> {
    let mut offered = Vec::new();
    let mut others = Vec::new();
    for d in device::list_disks() {
        let a = assess(&d, mounts, swaps, img);
        match a.decide(args.force_non_removable) {
            Ok(()) => offered.push((d, a)),
            Err(why) => others.push((d, why)),
        }
    }
    if !others.is_empty() {
        eprintln!("not offered:");
        for (d, why) in &others {
            eprintln!("  {}  {}", d.path(), why[0]);
        }
    }
    if offered.is_empty() {
        bail!("no card to write: insert an SD card (or a USB card reader) and run again");
    }
    eprintln!("candidates:");
    for (d, a) in &offered {
        eprintln!("  {}", describe(d, &a.mountpoints));
    }
    if args.dry_run || args.yes || args.verify_only || !sys::stdin_is_tty() {
        if args.dry_run {
            return Ok(None);
        }
        bail!(
            "name the card: cargo xtask flash {} /dev/<name>",
            args.image
        );
    }
    eprint!(
        "type the device to erase and write (e.g. {}), or Enter to cancel: ",
        offered[0].0.name
    );
    std::io::stderr().flush()?;
    let answer = read_line()?;
    let answer = answer.trim().trim_start_matches("/dev/");
    if answer.is_empty() {
        bail!("cancelled: nothing was written");
    }
    match offered.iter().find(|(d, _)| d.name == answer) {
        Some((d, _)) => Ok(Some(d.name.clone())),
        None => bail!("{answer} is not one of the candidates: nothing was written"),
    }
}

fn read_line() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut s)
        .context("cannot read the answer")?;
    Ok(s)
}

/// The user types the device name to confirm.
fn confirm(d: &Disk) -> Result<()> {
    eprint!(
        "everything on {} will be erased. Type {} to go on: ",
        d.path(),
        d.name
    );
    std::io::stderr().flush()?;
    let answer = read_line()?;
    let answer = answer.trim();
    if answer.is_empty() {
        bail!(
            "not confirmed: nothing was written (type the device name, or pass --yes after checking it)"
        );
    }
    if answer != d.name && answer != d.path() {
        bail!("you typed {answer:?}, not {}: nothing was written", d.name);
    }
    Ok(())
}

fn unmount(src: &str) -> Result<()> {
    let sh = Shell::new()?;
    if !sys::is_root() && exec::have("udisksctl") {
        exec::run(cmd!(sh, "udisksctl unmount -b {src}"))
    } else {
        exec::run(cmd!(sh, "umount {src}"))
    }
    .with_context(|| {
        format!("cannot unmount {src}: close what uses it, then run again; nothing was written")
    })
}

/// Opens the disk exclusively; without permission, re-runs the write through sudo.
fn open_target(disk: &Disk, write: bool, args: &Args, root: &Path) -> Result<Target> {
    let path = disk.path();
    let (file, direct) = match sys::open_exclusive(Path::new(&path), write) {
        Ok(x) => x,
        Err(e) => {
            let code = e.raw_os_error().unwrap_or(0);
            if (code == libc::EACCES || code == libc::EPERM) && !sys::is_root() {
                if write {
                    eprintln!(
                        "you may not write to {path}: running this step again as root with sudo"
                    );
                } else {
                    eprintln!(
                        "you may not read {path}: running the comparison again as root with sudo (it opens the card read-only and writes nothing)"
                    );
                }
                rerun_with_sudo(args, root, &path)?;
                std::process::exit(0);
            }
            let what = match code {
                libc::EBUSY => "it is in use (mounted, or held by another program or device-mapper): unmount or close it".into(),
                libc::EROFS => "it is read-only (check the card's lock switch)".into(),
                libc::ENOMEDIUM => "no medium: insert the card".into(),
                _ => format!("{e}"),
            };
            bail!("cannot open {path}: {what}; nothing was written");
        }
    };
    let size =
        sys::device_size(&file).with_context(|| format!("cannot read the size of {path}"))?;
    if size == 0 {
        bail!("{path} has no size (no medium?): insert the card; nothing was written");
    }
    let block = sys::logical_block_size(&file);
    Ok(Target {
        file,
        path,
        size,
        direct,
        block,
    })
}

fn rerun_with_sudo(args: &Args, root: &Path, device: &str) -> Result<()> {
    let sh = Shell::new()?;
    let exe = std::env::current_exe()?;
    let image = args.image.clone();
    let mut flags: Vec<&str> = vec!["--yes"];
    if args.no_verify {
        flags.push("--no-verify");
    }
    if args.verify_only {
        flags.push("--verify-only");
    }
    if args.force_non_removable {
        flags.push("--force-non-removable");
    }
    if args.eject {
        flags.push("--eject");
    }
    if args.no_bmap {
        flags.push("--no-bmap");
    }
    let bmap: Vec<PathBuf> = args
        .bmap
        .iter()
        .flat_map(|b| [PathBuf::from("--bmap"), b.clone()])
        .collect();
    exec::run(cmd!(
        sh,
        "sudo -- {exe} --flake {root} flash {image} {device} {flags...} {bmap...}"
    ))
    .context("the write step under sudo failed")
}

/// Powers the card off so it can be pulled out.
fn eject(d: &Disk) -> Result<()> {
    let sh = Shell::new()?;
    let path = d.path();
    if d.transport == Transport::Loop {
        eprintln!("--eject: {path} is a loop device, nothing to power off");
        return Ok(());
    }
    let delete = format!("/sys/block/{}/device/delete", d.name);
    if exec::have("udisksctl") {
        exec::run(cmd!(sh, "udisksctl power-off -b {path}"))?;
    } else if exec::have("eject") {
        exec::run(cmd!(sh, "eject {path}"))?;
    } else if Path::new(&delete).exists() {
        // A USB/SCSI disk: the kernel lets go of it, like udisks' power-off does first.
        eprintln!("$ echo 1 > {delete}");
        std::fs::write(&delete, "1").with_context(|| {
            format!("cannot eject {path}: the card is written, remove it when idle")
        })?;
    } else {
        bail!(
            "cannot eject {path}: install udisks2 or eject; the card is written and safe to remove"
        );
    }
    eprintln!("{path} is powered off: remove the card");
    Ok(())
}
