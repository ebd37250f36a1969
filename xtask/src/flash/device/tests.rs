use super::*;

fn disk(name: &str, path: &str, size: u64) -> Disk {
    Disk {
        name: name.into(),
        dev: (8, 16),
        size: Some(size),
        read_only: false,
        removable: false,
        hotplug: false,
        transport: Transport::from_sysfs_path(name, path),
        model: String::new(),
        loop_backing: None,
        backing_files: vec![],
        members: vec![],
    }
}

fn part(name: &str, dev: (u32, u32)) -> Member {
    Member {
        name: name.into(),
        dev,
        dm_name: None,
        kind: Kind::Partition,
    }
}

const GB: u64 = 1_000_000_000;
const IMAGE: Option<u64> = Some(3 * GB);

// Captured on real machines (sysfs paths and mountinfo lines).
const MOUNTINFO: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
23 22 259:1 / /boot/efi rw,relatime shared:2 - vfat /dev/nvme0n1p1 rw,fmask=0077
24 22 0:5 / /dev rw,nosuid shared:3 - devtmpfs udev rw
40 22 8:17 / /media/alice/FIRMWARE rw,nosuid,nodev,relatime shared:20 - vfat /dev/sdb1 rw
41 22 8:18 / /media/alice/NIXOS\\040SD rw,nosuid,nodev,relatime shared:21 - ext4 /dev/sdb2 rw
42 22 8:33 / /mnt/backup rw,relatime shared:22 - ext4 /dev/sdc1 rw
43 22 253:0 / /home rw,relatime shared:23 - ext4 /dev/mapper/vg0-home rw
";
const SWAPS: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/dm-1                               partition\t8388604\t\t0\t\t-2\n";

#[test]
fn parses_mountinfo_and_swaps() {
    let m = parse_mountinfo(MOUNTINFO);
    assert_eq!(m.len(), 7);
    assert_eq!(
        m[0],
        Mount {
            dev: (259, 2),
            source: "/dev/nvme0n1p2".into(),
            target: "/".into(),
            fstype: "ext4".into()
        }
    );
    assert_eq!(m[4].target, "/media/alice/NIXOS SD");
    assert_eq!(parse_swaps(SWAPS), vec!["/dev/dm-1".to_string()]);
}

#[test]
fn usb_stick_reporting_removable_0_is_accepted() {
    let d = disk(
        "sdb",
        "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
        32 * GB,
    );
    assert_eq!(d.transport, Transport::Usb);
    let a = assess(&d, &[], &[], IMAGE);
    assert_eq!(a.decide(false), Ok(()));
}

#[test]
fn sd_reader_mmcblk_is_accepted() {
    let d = disk(
        "mmcblk0",
        "/sys/devices/pci0000:00/0000:00:1c.0/0000:02:00.0/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
        16 * GB,
    );
    assert_eq!(d.transport, Transport::Mmc);
    assert_eq!(assess(&d, &[], &[], IMAGE).decide(false), Ok(()));
}

#[test]
fn nvme_system_disk_is_refused_even_with_force() {
    let mut d = disk(
        "nvme0n1",
        "/sys/devices/pci0000:00/0000:00:1d.0/0000:03:00.0/nvme/nvme0/nvme0n1",
        512 * GB,
    );
    d.dev = (259, 0);
    d.members = vec![part("nvme0n1p1", (259, 1)), part("nvme0n1p2", (259, 2))];
    assert_eq!(d.transport, Transport::Nvme);
    let a = assess(&d, &parse_mountinfo(MOUNTINFO), &[], IMAGE);
    assert!(a.system);
    let why = a.decide(true).unwrap_err();
    assert!(
        why.iter().any(|w| w.contains("mounted at /boot/efi")),
        "{why:?}"
    );
    assert!(why.iter().any(|w| w.contains("mounted at / ")), "{why:?}");
    // Without the flag it is also not removable and large.
    assert_eq!(a.decide(false).unwrap_err().len(), 4);
}

#[test]
fn virtio_disk_needs_force() {
    let d = disk(
        "vdb",
        "/sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb",
        20 * GB,
    );
    assert_eq!(d.transport, Transport::Virtio);
    let a = assess(&d, &[], &[], IMAGE);
    let why = a.decide(false).unwrap_err();
    assert!(why[0].contains("--force-non-removable"), "{why:?}");
    assert_eq!(a.decide(true), Ok(()));
}

#[test]
fn loop_device_is_accepted_and_size_checked() {
    let mut d = disk("loop3", "/sys/devices/virtual/block/loop3", 4 * GB);
    d.loop_backing = Some("/tmp/card.img".into());
    assert_eq!(d.transport, Transport::Loop);
    assert_eq!(assess(&d, &[], &[], IMAGE).decide(false), Ok(()));
    let why = assess(&d, &[], &[], Some(5 * GB)).decide(true).unwrap_err();
    assert!(why[0].starts_with("too small"), "{why:?}");
    d.size = Some(0);
    assert!(assess(&d, &[], &[], IMAGE).decide(true).unwrap_err()[0].starts_with("size unknown"));
}

#[test]
fn automounted_card_is_unmounted_other_mounts_refuse() {
    let mut d = disk(
        "sdb",
        "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
        32 * GB,
    );
    d.members = vec![part("sdb1", (8, 17)), part("sdb2", (8, 18))];
    let a = assess(&d, &parse_mountinfo(MOUNTINFO), &[], IMAGE);
    assert_eq!(a.decide(false), Ok(()));
    assert_eq!(
        a.unmount,
        vec![
            ("/dev/sdb1".to_string(), "/media/alice/FIRMWARE".to_string()),
            ("/dev/sdb2".to_string(), "/media/alice/NIXOS SD".to_string()),
        ]
    );

    let mut c = disk(
        "sdc",
        "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0/block/sdc",
        32 * GB,
    );
    c.dev = (8, 32);
    c.members = vec![part("sdc1", (8, 33))];
    let a = assess(&c, &parse_mountinfo(MOUNTINFO), &[], IMAGE);
    assert!(!a.system);
    let why = a.decide(true).unwrap_err();
    assert_eq!(
        why,
        vec![
            "/dev/sdc1 is mounted at /mnt/backup: unmount it first (umount /mnt/backup)"
                .to_string()
        ]
    );
}

#[test]
fn disk_under_lvm_is_a_system_disk() {
    // sda2 is an LVM physical volume; vg0-home (dm-0) is /home and dm-1 is swap.
    let mut d = disk(
        "sda",
        "/sys/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
        1000 * GB,
    );
    d.dev = (8, 0);
    d.removable = true; // even a removable-looking disk
    d.members = vec![
        part("sda1", (8, 1)),
        part("sda2", (8, 2)),
        Member {
            name: "dm-0".into(),
            dev: (253, 0),
            dm_name: Some("vg0-home".into()),
            kind: Kind::Holder,
        },
        Member {
            name: "dm-1".into(),
            dev: (253, 1),
            dm_name: Some("vg0-swap".into()),
            kind: Kind::Holder,
        },
    ];
    let mut mounts = parse_mountinfo(MOUNTINFO);
    mounts.retain(|m| m.target == "/home");
    mounts[0].dev = (0, 0); // matched by name as well
    let a = assess(&d, &mounts, &parse_swaps(SWAPS), IMAGE);
    assert!(a.system);
    let why = a.decide(true).unwrap_err();
    assert!(
        why.iter()
            .any(|w| w.contains("/dev/dm-0 is mounted at /home")),
        "{why:?}"
    );
    assert!(
        why.iter().any(|w| w.contains("/dev/dm-1 is active swap")),
        "{why:?}"
    );
}

#[test]
fn read_only_and_large_disks() {
    let mut d = disk(
        "sdb",
        "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
        256 * GB,
    );
    let why = assess(&d, &[], &[], IMAGE).decide(false).unwrap_err();
    assert!(why[0].starts_with("large"), "{why:?}");
    assert_eq!(assess(&d, &[], &[], IMAGE).decide(true), Ok(()));
    d.read_only = true;
    assert!(assess(&d, &[], &[], IMAGE).decide(true).unwrap_err()[0].starts_with("read-only"));
}

#[test]
fn system_mount_points() {
    assert!(is_system_mount("/"));
    assert!(is_system_mount("/boot/efi"));
    assert!(is_system_mount("/var/lib/docker"));
    assert!(!is_system_mount("/mnt/x"));
    assert!(!is_system_mount("/nixos"));
    assert!(is_automount("/run/media/bob/NIXOS_SD"));
}

fn loop_dev(
    name: &str,
    dev: (u32, u32),
    block: Option<(u32, u32)>,
    file: Option<FileId>,
) -> LoopDev {
    LoopDev {
        name: name.into(),
        dev,
        backing: String::new(),
        block,
        file,
    }
}

fn file(dev: (u32, u32), ino: u64, path: &str) -> FileId {
    FileId {
        dev,
        ino,
        path: path.into(),
    }
}

#[test]
fn loops_over_the_card_its_partitions_files_on_it_or_its_backing_file() {
    let devs = vec![("sdb".to_string(), (8, 16)), ("sdb2".to_string(), (8, 18))];
    let files = vec![file((259, 2), 77, "/srv/card.img")];
    // Over a partition and over the whole card, by device number.
    let l = loop_dev("loop7", (7, 7), Some((8, 18)), None);
    assert_eq!(loop_over(&l, &devs, &files), Some("/dev/sdb2".into()));
    let l = loop_dev("loop7", (7, 7), Some((8, 16)), None);
    assert_eq!(loop_over(&l, &devs, &files), Some("/dev/sdb".into()));
    // Over a file on the card's filesystem.
    let l = loop_dev(
        "loop8",
        (7, 8),
        None,
        Some(file((8, 18), 12, "/media/a/x.img")),
    );
    assert_eq!(
        loop_over(&l, &devs, &files),
        Some("/media/a/x.img, a file on /dev/sdb2".into())
    );
    // Over the same file as the disk itself, even under another name.
    let l = loop_dev(
        "loop9",
        (7, 9),
        None,
        Some(file((259, 2), 77, "/srv/other-name.img")),
    );
    assert_eq!(
        loop_over(&l, &devs, &files),
        Some("/srv/other-name.img (the same file as this disk)".into())
    );
    // Unrelated: another disk, another file on the system disk.
    let l = loop_dev("loop1", (7, 1), Some((8, 1)), None);
    assert_eq!(loop_over(&l, &devs, &files), None);
    let l = loop_dev(
        "loop2",
        (7, 2),
        None,
        Some(file((259, 2), 78, "/var/lib/snapd/x.snap")),
    );
    assert_eq!(loop_over(&l, &devs, &files), None);
}

#[test]
fn stacked_loop_devices_refuse_mounted_or_not() {
    let mut d = disk(
        "sdb",
        "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
        32 * GB,
    );
    d.members = vec![
        part("sdb1", (8, 17)),
        part("sdb2", (8, 18)),
        Member {
            name: "loop7".into(),
            dev: (7, 7),
            dm_name: None,
            kind: Kind::Loop {
                over: "/dev/sdb2".into(),
            },
        },
    ];
    let why = assess(&d, &[], &[], IMAGE).decide(true).unwrap_err();
    assert_eq!(
        why,
        vec![
            "/dev/loop7 is a loop device over /dev/sdb2: writing the card would change it under it; detach it first (losetup -d /dev/loop7)"
                .to_string()
        ]
    );
    // Mounted, even where the desktop mounts: refused, never unmounted for the user.
    let mounts = parse_mountinfo("50 22 7:7 / /media/alice/x rw shared:30 - ext4 /dev/loop7 rw\n");
    let a = assess(&d, &mounts, &[], IMAGE);
    assert!(a.unmount.is_empty(), "{a:?}");
    let why = a.decide(true).unwrap_err();
    assert!(
        why.contains(
            &"/dev/loop7 is mounted at /media/alice/x: unmount it first (umount /media/alice/x)"
                .to_string()
        ),
        "{why:?}"
    );
}

#[test]
fn image_behind_or_on_the_disk_is_refused() {
    let mut d = disk("loop3", "/sys/devices/virtual/block/loop3", 4 * GB);
    d.dev = (7, 3);
    d.backing_files = vec![file((259, 2), 77, "/srv/card.img")];
    d.members = vec![part("loop3p2", (259, 9))];
    let mounts = parse_mountinfo(
        "22 1 259:2 / / rw shared:1 - ext4 /dev/nvme0n1p2 rw\n\
         60 22 259:9 / /media/a/NIXOS_SD rw shared:40 - ext4 /dev/loop3p2 rw\n",
    );
    // The image is the file behind the disk.
    let why = image_refusals(&d, &mounts, &file((259, 2), 77, "/home/a/card.img"));
    assert_eq!(why.len(), 1);
    assert!(
        why[0].starts_with(
            "the image /home/a/card.img is the file behind /dev/loop3 (/srv/card.img)"
        ),
        "{why:?}"
    );
    // Another file on the same filesystem as the backing file: fine.
    assert!(image_refusals(&d, &mounts, &file((259, 2), 78, "/home/a/x.img.zst")).is_empty());
    // The image is on one of the disk's partitions.
    let why = image_refusals(
        &d,
        &mounts,
        &file((259, 9), 12, "/media/a/NIXOS_SD/x.img.zst"),
    );
    assert_eq!(
        why,
        vec![
            "the image /media/a/NIXOS_SD/x.img.zst is on /dev/loop3p2, which this write would erase: copy it elsewhere first (cp /media/a/NIXOS_SD/x.img.zst ~/) and flash the copy"
                .to_string()
        ]
    );
    // A filesystem whose st_dev is not the partition's (btrfs): found by its mount source.
    let btrfs = parse_mountinfo("61 22 0:55 / /media/a/b rw shared:41 - btrfs /dev/loop3p2 rw\n");
    assert_eq!(
        image_refusals(&d, &btrfs, &file((0, 55), 3, "/media/a/b/x.img")).len(),
        1
    );
}
