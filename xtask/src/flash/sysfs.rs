//! Reading the facts [`super::device`] classifies from this machine: sysfs,
//! the loop devices (`LOOP_GET_STATUS64`), `/proc/self/mountinfo`, `/proc/swaps`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::device::{
    Disk, FileId, Kind, LoopDev, Member, Mount, Transport, loop_over, parse_mountinfo, parse_swaps,
};
use super::sys;

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_dev(dir: &Path) -> Option<(u32, u32)> {
    let s = read_trim(&dir.join("dev"))?;
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The disk named `name` (as under /sys/block) with its members: partitions,
/// holders, the devices it writes through, and the loop devices stacked on
/// any of them.
pub fn read_disk(name: &str) -> Result<Disk> {
    let dir = PathBuf::from("/sys/block").join(name);
    let real = fs::canonicalize(&dir)
        .with_context(|| format!("/dev/{name} is not a disk the kernel knows"))?;
    let path = real.to_string_lossy().into_owned();
    let size = read_trim(&dir.join("size"))
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| s * 512);
    let dev = read_dev(&dir).unwrap_or((0, 0));
    let loops = read_loops();
    let mut members = Vec::new();
    partitions_and_holders(&dir, &mut members, Kind::Partition);
    let mut backing_files = Vec::new();
    lower(name, &loops, &mut members, &mut backing_files);
    stacked_loops(name, dev, &loops, &mut members, &backing_files);
    let model = ["vendor", "model"]
        .iter()
        .filter_map(|f| read_trim(&dir.join("device").join(f)))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Disk {
        name: name.to_string(),
        dev,
        size,
        read_only: read_trim(&dir.join("ro")).as_deref() == Some("1"),
        removable: read_trim(&dir.join("removable")).as_deref() == Some("1"),
        hotplug: hotplug(&real),
        transport: Transport::from_sysfs_path(name, &path),
        model,
        loop_backing: read_trim(&dir.join("loop/backing_file")),
        backing_files,
        members,
    })
}

/// The partitions of the device at `dir` (a /sys/class/block entry) and
/// everything stacked on it through `holders/`. Only the disk's own
/// partitions are `Kind::Partition` (those a desktop may have auto-mounted).
fn partitions_and_holders(dir: &Path, members: &mut Vec<Member>, kind: Kind) {
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.join("partition").exists() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(dev) = read_dev(&p)
                    && !members.iter().any(|m| m.name == n)
                {
                    members.push(Member {
                        name: n,
                        dev,
                        dm_name: None,
                        kind: kind.clone(),
                    });
                }
                holders(&p, members);
            }
        }
    }
    holders(dir, members);
}

/// What the device `name` writes through: a loop device's backing (a block
/// device, or a regular file recorded in `files`) and a device-mapper
/// device's `slaves/`, recursively.
fn lower(name: &str, loops: &[LoopDev], members: &mut Vec<Member>, files: &mut Vec<FileId>) {
    let mut below: Vec<String> = Vec::new();
    if let Some(l) = loops.iter().find(|l| l.name == name) {
        if let Some(f) = &l.file
            && !files.contains(f)
        {
            files.push(f.clone());
        }
        if let Some((maj, min)) = l.block
            && let Some(n) = name_of(maj, min)
        {
            below.push(n);
        }
    }
    let class = PathBuf::from("/sys/class/block").join(name);
    if let Ok(rd) = fs::read_dir(class.join("slaves")) {
        below.extend(
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    for n in below {
        if members.iter().any(|m| m.name == n) || n == name {
            continue;
        }
        let d = PathBuf::from("/sys/class/block").join(&n);
        let Some(dev) = read_dev(&d) else { continue };
        members.push(Member {
            name: n.clone(),
            dev,
            dm_name: read_trim(&d.join("dm/name")),
            kind: Kind::Lower,
        });
        partitions_and_holders(&d, members, Kind::Lower);
        lower(&n, loops, members, files);
    }
}

/// Adds the loop devices stacked on the disk or any member (and their
/// partitions and holders), until none is left.
fn stacked_loops(
    name: &str,
    dev: (u32, u32),
    loops: &[LoopDev],
    members: &mut Vec<Member>,
    files: &[FileId],
) {
    loop {
        let mut devs: Vec<(String, (u32, u32))> = vec![(name.to_string(), dev)];
        devs.extend(members.iter().map(|m| (m.name.clone(), m.dev)));
        let found = loops.iter().find_map(|l| {
            if l.name == name || members.iter().any(|m| m.name == l.name) {
                return None;
            }
            loop_over(l, &devs, files).map(|over| (l, over))
        });
        let Some((l, over)) = found else { return };
        members.push(Member {
            name: l.name.clone(),
            dev: l.dev,
            dm_name: None,
            kind: Kind::Loop { over },
        });
        partitions_and_holders(
            &PathBuf::from("/sys/block").join(&l.name),
            members,
            Kind::Holder,
        );
    }
}

/// The kernel name of block device `maj:min`.
fn name_of(maj: u32, min: u32) -> Option<String> {
    let real = fs::canonicalize(format!("/sys/dev/block/{maj}:{min}")).ok()?;
    Some(real.file_name()?.to_string_lossy().into_owned())
}

/// Every bound loop device and its backing. The kernel's own record
/// (`LOOP_GET_STATUS64`, root only) is used when it can be read, since
/// `loop/backing_file` may be stale or deleted; else the backing file's path.
pub fn read_loops() -> Vec<LoopDev> {
    let Ok(rd) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Some(backing) = read_trim(&e.path().join("loop/backing_file")) else {
            continue;
        };
        let Some(dev) = read_dev(&e.path()) else {
            continue;
        };
        let facts = sys::loop_status(Path::new(&format!("/dev/{name}")))
            .map(|(d, i, r)| (sys::split_dev(d), i, (r != 0).then(|| sys::split_dev(r))))
            .ok()
            .or_else(|| {
                let shown = backing.strip_suffix(" (deleted)").unwrap_or(&backing);
                let m = fs::metadata(shown).ok()?;
                let block = m.file_type().is_block_device();
                Some((
                    sys::split_dev(m.dev()),
                    m.ino(),
                    block.then(|| sys::split_dev(m.rdev())),
                ))
            });
        let Some((fdev, ino, block)) = facts else {
            continue;
        };
        let file = block.is_none().then(|| FileId {
            dev: fdev,
            ino,
            path: backing.clone(),
        });
        out.push(LoopDev {
            name,
            dev,
            backing,
            block,
            file,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Devices stacked on `dir` (its `holders/`), recursively.
fn holders(dir: &Path, out: &mut Vec<Member>) {
    let Ok(rd) = fs::read_dir(dir.join("holders")) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if out.iter().any(|m| m.name == name) {
            continue;
        }
        let hdir = PathBuf::from("/sys/class/block").join(&name);
        if let Some(dev) = read_dev(&hdir) {
            out.push(Member {
                name: name.clone(),
                dev,
                dm_name: read_trim(&hdir.join("dm/name")),
                kind: Kind::Holder,
            });
            holders(&hdir, out);
        }
    }
}

/// Like lsblk's HOTPLUG: some parent device reports itself removable.
fn hotplug(real: &Path) -> bool {
    let mut p = real.join("device");
    let Ok(start) = fs::canonicalize(&p) else {
        return false;
    };
    p = start;
    while p.starts_with("/sys/devices") {
        if read_trim(&p.join("removable")).as_deref() == Some("removable") {
            return true;
        }
        if !p.pop() {
            break;
        }
    }
    false
}

/// The mounts and swaps of the running system.
pub fn read_mounts() -> Result<(Vec<Mount>, Vec<String>)> {
    let mi =
        fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    let mut mounts = parse_mountinfo(&mi);
    // Mount sources like /dev/disk/by-uuid/... or /dev/mapper/x: resolve to /dev/<kernel name>.
    for m in &mut mounts {
        if m.source.starts_with("/dev/")
            && let Ok(p) = fs::canonicalize(&m.source)
        {
            m.source = p.to_string_lossy().into_owned();
        }
    }
    let swaps = parse_swaps(&swaps)
        .into_iter()
        .map(|s| {
            fs::canonicalize(&s)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or(s)
        })
        .collect();
    Ok((mounts, swaps))
}

/// Every whole disk worth listing (not ram, zram, dm, md, optical or eMMC boot
/// areas; loops only when attached).
pub fn list_disks() -> Vec<Disk> {
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .into_iter()
        .filter(|n| {
            !["ram", "zram", "dm-", "md", "sr", "fd", "nbd"]
                .iter()
                .any(|p| n.starts_with(p))
                // eMMC hardware partitions, not cards
                && !(n.starts_with("mmcblk") && (n.contains("boot") || n.contains("rpmb")))
        })
        .filter_map(|n| read_disk(&n).ok())
        .filter(|d| d.transport != Transport::Loop || d.loop_backing.is_some())
        .collect()
}

/// The whole disk a user-given path names, or a clear refusal (missing,
/// regular file, character device, partition).
pub fn resolve_target(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).with_context(|| {
        format!(
            "{} does not exist: run `cargo xtask flash <image>` without a device to list the cards",
            path.display()
        )
    })?;
    let ft = meta.file_type();
    if ft.is_file() {
        bail!(
            "{} is a regular file, not a block device: name the card's device, like /dev/sdb",
            path.display()
        );
    }
    if ft.is_char_device() {
        bail!(
            "{} is a character device, not a block device: name the card's device, like /dev/sdb",
            path.display()
        );
    }
    if !ft.is_block_device() {
        bail!(
            "{} is not a block device: name the card's device, like /dev/sdb",
            path.display()
        );
    }
    let rdev = meta.rdev();
    let (maj, min) = (libc::major(rdev), libc::minor(rdev));
    let sys = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    let real = fs::canonicalize(&sys)
        .with_context(|| format!("the kernel knows no block device {maj}:{min}"))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if real.join("partition").exists() {
        let parent = real
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        bail!(
            "{} is a partition ({name}) of /dev/{parent}: give the whole disk, /dev/{parent}",
            path.display()
        );
    }
    if !PathBuf::from("/sys/block").join(&name).exists() {
        bail!(
            "{} ({name}) is not a whole disk: give the card's whole disk, like /dev/sdb",
            path.display()
        );
    }
    Ok(name)
}
