//! `flash` against targets that the first checks missed: the image behind
//! the target, loop devices stacked on the card (also over a deleted file),
//! a loop device over another disk, the image on the card itself, a card
//! that runs out of room.

use std::process::Command;

use super::common::{self, loopdev::LoopDev};
use super::{IMAGE_MIB, flash, image, refused, s, text};

#[test]
fn image_behind_the_target_is_refused() {
    let Some(_img) = image() else { return };
    // The image is the loop device's own backing file (a raw .img).
    let dev = LoopDev::new(IMAGE_MIB);
    let before = dev.contents();
    let out = flash(&[s(&dev.backing), &dev.path, "--yes"]);
    refused(
        &out,
        &format!(
            "the image {} is the file behind {}",
            s(&dev.backing),
            dev.path
        ),
        &dev,
        &before,
    );
    // Also through a second loop device stacked on that one.
    let upper = LoopDev::over(&dev.path);
    let out = flash(&[s(&dev.backing), &upper.path, "--yes"]);
    refused(
        &out,
        &format!(
            "the image {} is the file behind {}",
            s(&dev.backing),
            upper.path
        ),
        &dev,
        &before,
    );
}

#[test]
fn loop_devices_stacked_on_the_card_are_refused() {
    let Some(img) = image() else { return };
    if !common::prerequisite(common::need_program("unshare", "util-linux")) {
        return;
    }
    let card = LoopDev::new(IMAGE_MIB);
    assert!(
        flash(&[s(&img.raw), &card.path, "--yes", "--no-verify"])
            .status
            .success()
    );
    let parts = card.partitions();
    let before = card.contents();
    // A loop device over the card's ext4 partition, mounted (in a private
    // mount namespace, so the machine's mounts are not touched).
    let over_part = LoopDev::over(&parts[1]);
    let mnt = tempfile::tempdir().unwrap();
    let script = format!(
        "set -e; mount -o ro {l} {m}; exec {x} --flake {root} flash {img} {card} --yes --force-non-removable",
        l = over_part.path,
        m = s(mnt.path()),
        x = s(&assert_cmd::cargo::cargo_bin("xtask")),
        root = s(&common::repo_root()),
        img = s(&img.zst),
        card = card.path
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    refused(
        &out,
        &format!("{} is mounted at {}", over_part.path, s(mnt.path())),
        &card,
        &before,
    );
    assert!(
        text(&out).contains(&format!(
            "{} is a loop device over {}: writing the card would change it under it; detach it first (losetup -d {})",
            over_part.path, parts[1], over_part.path
        )),
        "{}",
        text(&out)
    );
    drop(over_part);
    // One over the whole card, not mounted: refused too, saying how to detach it.
    let over_card = LoopDev::over(&card.path);
    refused(
        &flash(&[s(&img.zst), &card.path, "--yes"]),
        &format!(
            "{} is a loop device over {}: writing the card would change it under it; detach it first (losetup -d {})",
            over_card.path, card.path, over_card.path
        ),
        &card,
        &before,
    );
    // And it is not offered in the list of cards.
    let out = flash(&[s(&img.zst), "--dry-run"]);
    let t = text(&out);
    assert!(
        t.contains(&format!(
            "  {}  {} is a loop device over",
            card.path, over_card.path
        )),
        "{t}"
    );
    drop(over_card);
    // One over a file on the card's filesystem that was deleted since: sysfs
    // names no file any more, the kernel's record still says where it is.
    let over_file = LoopDev::over_deleted_file_on(&parts[1]);
    let backing = std::fs::read_to_string(format!(
        "/sys/block/{}/loop/backing_file",
        over_file.path.trim_start_matches("/dev/")
    ))
    .unwrap();
    assert!(backing.trim_end().ends_with("(deleted)"), "{backing}");
    let before = card.contents();
    refused(
        &flash(&[s(&img.zst), &card.path, "--yes"]),
        &format!(
            "{} is a loop device over /stacked.img (deleted), a file on {}: writing the card would change it under it; detach it first (losetup -d {})",
            over_file.path, parts[1], over_file.path
        ),
        &card,
        &before,
    );
}

#[test]
fn a_loop_device_over_a_disk_is_checked_as_that_disk() {
    let Some(img) = image() else { return };
    if !common::prerequisite(common::need_program("unshare", "util-linux")) {
        return;
    }
    let disk = LoopDev::new(IMAGE_MIB);
    assert!(
        flash(&[s(&img.raw), &disk.path, "--yes", "--no-verify"])
            .status
            .success()
    );
    let parts = disk.partitions();
    let before = disk.contents();
    // The target writes through to `disk`, whose partition is mounted where
    // the running system lives (a private namespace with its own /srv).
    let upper = LoopDev::over(&disk.path);
    let script = format!(
        "set -e; mount -t tmpfs srv /srv; mkdir /srv/data; mount -o ro {p2} /srv/data; \
         exec {x} --flake {root} flash {img} {upper} --yes --force-non-removable",
        p2 = parts[1],
        x = s(&assert_cmd::cargo::cargo_bin("xtask")),
        root = s(&common::repo_root()),
        img = s(&img.zst),
        upper = upper.path
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    refused(
        &out,
        &format!("system disk: {} is mounted at /srv/data", parts[1]),
        &disk,
        &before,
    );
}

#[test]
fn image_on_the_card_is_refused_before_anything_is_unmounted() {
    let Some(img) = image() else { return };
    if !common::prerequisite(common::need_program("unshare", "util-linux")) {
        return;
    }
    let dev = LoopDev::new(IMAGE_MIB);
    assert!(
        flash(&[s(&img.raw), &dev.path, "--yes", "--no-verify"])
            .status
            .success()
    );
    let parts = dev.partitions();
    // The desktop mounted the card (private namespace, its own /media) and an
    // image to write (the test image's first 4 MiB, small enough for the
    // card's free space) was put onto it.
    let script = format!(
        "set -e; mount -t tmpfs media /media; mkdir -p /media/alice/NIXOS_SD; mount {p2} /media/alice/NIXOS_SD; \
         head -c 4194304 {img} > /media/small.img; zstd -q /media/small.img -o /media/alice/NIXOS_SD/nixos.img.zst; \
         set +e; {x} --flake {root} flash /media/alice/NIXOS_SD/nixos.img.zst {dev} --yes; rc=$?; \
         mountpoint -q /media/alice/NIXOS_SD && echo still-mounted; exit $rc",
        p2 = parts[1],
        x = s(&assert_cmd::cargo::cargo_bin("xtask")),
        root = s(&common::repo_root()),
        img = s(&img.raw),
        dev = dev.path
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "the image /media/alice/NIXOS_SD/nixos.img.zst is on {}, which this write would erase: copy it elsewhere first",
            parts[1]
        )),
        "{t}"
    );
    assert!(!t.contains("unmounting"), "{t}");
    assert!(t.contains("still-mounted"), "{t}");
    let raw = std::fs::read(&img.raw).unwrap();
    assert!(
        dev.read_at(0, 1 << 20) == raw[..1 << 20],
        "the card was written"
    );
}

#[test]
fn a_full_card_is_called_full() {
    let Some(img) = image() else { return };
    if !common::prerequisite(common::need_program("unshare", "util-linux")) {
        return;
    }
    // The device says 64 MiB but holds only 24.
    let dev = LoopDev::short_of_space(IMAGE_MIB, 24);
    let out = flash(&[s(&img.zst), &dev.path, "--yes"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(!t.contains('✓'), "{t}");
    assert!(
        t.contains("no space left on the device")
            && t.contains("the card is full or smaller than it claims"),
        "{t}"
    );
    assert!(!t.contains("was the card removed"), "{t}");
}
