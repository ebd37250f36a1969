//! Which block devices may be written: a pure classification of the facts
//! [`super::sysfs`] reads from sysfs, the loop devices, `/proc/self/mountinfo`
//! and `/proc/swaps`.

pub use super::sysfs::{list_disks, read_disk, read_mounts, resolve_target};

/// Disks above this size get a warning and need `--force-non-removable`.
pub const LARGE_DISK: u64 = 128_000_000_000;

/// Mount points (and everything under them) that belong to the running system.
const SYSTEM_MOUNTS: &[&str] = &[
    "/", "/boot", "/usr", "/var", "/home", "/nix", "/etc", "/opt", "/srv", "/root",
];

/// Where desktops (udisks2) mount removable media on their own.
const AUTOMOUNT_ROOTS: &[&str] = &["/media/", "/run/media/"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Usb,
    Mmc,
    Sdio,
    Nvme,
    Sata,
    Virtio,
    Loop,
    Other,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Usb => "usb",
            Transport::Mmc => "mmc",
            Transport::Sdio => "sdio",
            Transport::Nvme => "nvme",
            Transport::Sata => "sata",
            Transport::Virtio => "virtio",
            Transport::Loop => "loop",
            Transport::Other => "other",
        }
    }

    /// The bus from a disk's resolved sysfs path, e.g.
    /// `/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/.../block/sdb`.
    pub fn from_sysfs_path(name: &str, path: &str) -> Transport {
        if name.starts_with("loop") {
            Transport::Loop
        } else if path.contains("/usb") {
            Transport::Usb
        } else if path.contains("sdio") {
            Transport::Sdio
        } else if name.starts_with("mmcblk") || path.contains("/mmc_host/") {
            Transport::Mmc
        } else if path.contains("/nvme") {
            Transport::Nvme
        } else if path.contains("/virtio") {
            Transport::Virtio
        } else if path.contains("/ata") {
            Transport::Sata
        } else {
            Transport::Other
        }
    }
}

/// How a member is tied to the disk.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Partition,
    /// Stacked on it through sysfs `holders/` (LVM, RAID, dm-crypt).
    Holder,
    /// A loop device whose backing is the disk, one of its members, a file on
    /// them, or the disk's own backing file (`over` names which).
    Loop {
        over: String,
    },
    /// A device the disk itself writes through (a loop device's backing
    /// block device, a device-mapper device's `slaves/`).
    Lower,
}

/// A partition of the disk, or a device stacked on it or under it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub dev: (u32, u32),
    /// The device-mapper name (`/dev/mapper/<name>`), for dm devices.
    pub dm_name: Option<String>,
    pub kind: Kind,
}

/// A file by identity: its filesystem's device and its inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileId {
    pub dev: (u32, u32),
    pub ino: u64,
    /// Its name, for messages (may be stale).
    pub path: String,
}

/// A bound loop device and what it is backed by.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopDev {
    pub name: String,
    pub dev: (u32, u32),
    /// `loop/backing_file` as sysfs shows it.
    pub backing: String,
    /// The backing block device, when it is one.
    pub block: Option<(u32, u32)>,
    /// The backing regular file, when it is one.
    pub file: Option<FileId>,
}

/// What `l` is stacked on, if it is stacked on any of `devs` (by device
/// number, or through a backing file on a filesystem of one of them) or on
/// one of `files`.
pub fn loop_over(l: &LoopDev, devs: &[(String, (u32, u32))], files: &[FileId]) -> Option<String> {
    if let Some(b) = l.block
        && let Some((n, _)) = devs.iter().find(|(_, d)| *d == b)
    {
        return Some(format!("/dev/{n}"));
    }
    let f = l.file.as_ref()?;
    if files.iter().any(|x| x.dev == f.dev && x.ino == f.ino) {
        return Some(format!("{} (the same file as this disk)", f.path));
    }
    devs.iter()
        .find(|(_, d)| *d == f.dev)
        .map(|(n, _)| format!("{}, a file on /dev/{n}", f.path))
}

/// Everything known about one whole disk.
#[derive(Clone, Debug, PartialEq)]
pub struct Disk {
    pub name: String,
    pub dev: (u32, u32),
    /// Size in bytes; `None` when the kernel reports none.
    pub size: Option<u64>,
    pub read_only: bool,
    pub removable: bool,
    /// A parent device (USB, card reader) says it can be unplugged.
    pub hotplug: bool,
    pub transport: Transport,
    pub model: String,
    /// For a loop device: the file behind it.
    pub loop_backing: Option<String>,
    /// The regular files the disk writes into (a loop device's backing file,
    /// also through stacked loops and device-mapper), by identity.
    pub backing_files: Vec<FileId>,
    /// Partitions, holders, loop devices stacked on it, devices under it.
    pub members: Vec<Member>,
}

impl Disk {
    pub fn path(&self) -> String {
        format!("/dev/{}", self.name)
    }

    /// Whether `source` (a mount source or swap file name) is this disk or one of its members.
    fn owns(&self, dev: Option<(u32, u32)>, source: &str) -> Option<String> {
        let base = source.strip_prefix("/dev/").unwrap_or("");
        let mapper = source.strip_prefix("/dev/mapper/");
        if dev == Some(self.dev) || base == self.name {
            return Some(self.name.clone());
        }
        self.members
            .iter()
            .find(|m| {
                dev == Some(m.dev)
                    || base == m.name
                    || (mapper.is_some() && mapper == m.dm_name.as_deref())
            })
            .map(|m| m.name.clone())
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub dev: (u32, u32),
    pub source: String,
    pub target: String,
    pub fstype: String,
}

/// Parses `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            let (maj, min) = l.get(2)?.split_once(':')?;
            Some(Mount {
                dev: (maj.parse().ok()?, min.parse().ok()?),
                target: unescape(l.get(4)?),
                fstype: r.first()?.to_string(),
                source: unescape(r.get(1)?),
            })
        })
        .collect()
}

/// Parses `/proc/swaps` into the swap file or device names.
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(unescape))
        .collect()
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo and swaps.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_system_mount(target: &str) -> bool {
    SYSTEM_MOUNTS.iter().any(|m| {
        target == *m || (*m != "/" && target.starts_with(m) && target[m.len()..].starts_with('/'))
    })
}

fn is_automount(target: &str) -> bool {
    AUTOMOUNT_ROOTS.iter().any(|r| target.starts_with(r))
}

/// What the checks found about one disk for one image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assessment {
    /// Reasons the disk can never be written (system disk, read-only, too small, ...).
    pub refusals: Vec<String>,
    /// Reasons that `--force-non-removable` overrides.
    pub needs_force: Vec<String>,
    /// Mounts the desktop made on its own: unmounted before writing (source, target).
    pub unmount: Vec<(String, String)>,
    /// Every mount point on the disk, for display.
    pub mountpoints: Vec<String>,
    pub system: bool,
}

impl Assessment {
    /// `Ok` when the disk may be written with the given flag, else every reason.
    pub fn decide(&self, force_non_removable: bool) -> std::result::Result<(), Vec<String>> {
        let mut why = self.refusals.clone();
        if !force_non_removable {
            why.extend(self.needs_force.iter().cloned());
        }
        if why.is_empty() { Ok(()) } else { Err(why) }
    }
}

/// Classifies `disk` from the captured facts. `image_size` is the exact byte
/// count to write, when known.
pub fn assess(
    disk: &Disk,
    mounts: &[Mount],
    swaps: &[String],
    image_size: Option<u64>,
) -> Assessment {
    let mut a = Assessment::default();
    for m in mounts {
        let dev = (m.dev.0 != 0).then_some(m.dev);
        let Some(member) = disk.owns(dev, &m.source) else {
            continue;
        };
        a.mountpoints.push(m.target.clone());
        if is_system_mount(&m.target) {
            a.system = true;
            a.refusals.push(format!(
                "system disk: /dev/{member} is mounted at {} (the running system uses it)",
                m.target
            ));
        } else if is_automount(&m.target)
            && disk
                .members
                .iter()
                .any(|x| x.name == member && x.kind == Kind::Partition)
        {
            a.unmount.push((format!("/dev/{member}"), m.target.clone()));
        } else {
            a.refusals.push(format!(
                "/dev/{member} is mounted at {}: unmount it first (umount {})",
                m.target, m.target
            ));
        }
    }
    for m in &disk.members {
        if let Kind::Loop { over } = &m.kind {
            a.refusals.push(format!(
                "/dev/{} is a loop device over {over}: writing the card would change it under it; detach it first (losetup -d /dev/{})",
                m.name, m.name
            ));
        }
    }
    for s in swaps {
        if let Some(member) = disk.owns(None, s) {
            a.system = true;
            a.refusals
                .push(format!("system disk: /dev/{member} is active swap"));
        }
    }
    if disk.read_only {
        a.refusals.push(
            "read-only: the kernel reports it write-protected (check the card's lock switch)"
                .into(),
        );
    }
    match (disk.size, image_size) {
        (None | Some(0), _) => a
            .refusals
            .push("size unknown: no medium in the reader?".into()),
        (Some(d), Some(i)) if d < i => a.refusals.push(format!(
            "too small: {} ({d} bytes) < the image's {} ({i} bytes)",
            human(d),
            human(i)
        )),
        _ => {}
    }
    let removable_looking = disk.removable
        || disk.hotplug
        || matches!(
            disk.transport,
            Transport::Usb | Transport::Mmc | Transport::Sdio | Transport::Loop
        );
    if !removable_looking {
        a.needs_force.push(format!(
            "not removable: a fixed {} disk (pass --force-non-removable if you are sure)",
            disk.transport.as_str()
        ));
    }
    if disk.transport != Transport::Loop && disk.size.is_some_and(|s| s > LARGE_DISK) {
        a.needs_force.push(format!(
            "large: {} is bigger than any usual SD card (pass --force-non-removable if you are sure)",
            human(disk.size.unwrap_or(0))
        ));
    }
    a
}

/// Reasons the image itself forbids writing `disk`: the image is the file
/// behind the disk, or lives on a filesystem the write would overwrite.
pub fn image_refusals(disk: &Disk, mounts: &[Mount], image: &FileId) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(f) = disk
        .backing_files
        .iter()
        .find(|f| f.dev == image.dev && f.ino == image.ino)
    {
        why.push(format!(
            "the image {} is the file behind {} ({}): writing would overwrite the image with itself; name the card, not the image's loop device",
            image.path,
            disk.path(),
            f.path
        ));
        return why;
    }
    let source = mounts
        .iter()
        .find(|m| m.dev == image.dev)
        .map(|m| m.source.as_str())
        .unwrap_or("");
    if let Some(member) = disk.owns(Some(image.dev), source) {
        why.push(format!(
            "the image {} is on /dev/{member}, which this write would erase: copy it elsewhere first (cp {} ~/) and flash the copy",
            image.path, image.path
        ));
    }
    why
}

/// Sizes in decimal units like disk vendors use (32.0 GB).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests;
