//! `cargo xtask flash` on real loop devices: written bytes, fsck, every
//! refusal leaving the target untouched, corrupt input, read-back checks.

#[path = "flash/bmap.rs"]
mod bmap;
mod common;
#[path = "flash/images.rs"]
mod images;
#[path = "flash/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::loopdev::{self, LoopDev, TestImage};

const IMAGE_MIB: u64 = 64;

fn image() -> Option<TestImage> {
    loopdev::available().then(|| loopdev::nixos_image(IMAGE_MIB))
}

fn flash(args: &[&str]) -> Output {
    let out = common::xtask(&common::repo_root())
        .arg("flash")
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "--- flash {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The sha256 of a file, by `sha256sum`.
fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Asserts the command failed with `why` in its message, never claimed success,
/// and left `dev` as it was.
fn refused(out: &Output, why: &str, dev: &LoopDev, before: &[u8]) {
    let t = text(out);
    assert!(
        !out.status.success(),
        "expected a refusal, got success:\n{t}"
    );
    assert!(t.contains(why), "expected {why:?} in:\n{t}");
    assert!(!t.contains('✓'), "a failure printed a success mark:\n{t}");
    assert!(
        dev.contents() == before,
        "the refused target {} was changed",
        dev.path
    );
}

#[test]
fn flash_and_verify_gives_identical_bytes_and_clean_filesystems() {
    let Some(img) = image() else { return };
    let dev = LoopDev::new(IMAGE_MIB + 16);
    let out = flash(&[s(&img.zst), &dev.path, "--yes"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified"),
        "{}",
        text(&out)
    );
    let raw = std::fs::read(&img.raw).unwrap();
    let got = dev.contents();
    assert!(
        got[..raw.len()] == raw[..],
        "the device differs from the image"
    );
    assert!(
        got[raw.len()..] == loopdev::pattern(16)[..],
        "bytes past the image were touched"
    );
    let parts = dev.partitions();
    assert_eq!(parts.len(), 2, "expected two partitions, found {parts:?}");
    let fat = Command::new("fsck.vfat")
        .args(["-n", &parts[0]])
        .output()
        .unwrap();
    assert!(
        fat.status.success(),
        "fsck.vfat: {}",
        String::from_utf8_lossy(&fat.stdout)
    );
    let ext = Command::new("e2fsck")
        .args(["-fn", &parts[1]])
        .output()
        .unwrap();
    assert!(
        ext.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&ext.stdout)
    );
    let label = Command::new("blkid")
        .args(["-o", "value", "-s", "LABEL", &parts[1]])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "NIXOS_SD");
}

#[test]
fn raw_image_then_verify_only_catches_a_changed_byte() {
    let Some(img) = image() else { return };
    let dev = LoopDev::new(IMAGE_MIB);
    assert!(
        flash(&[s(&img.raw), &dev.path, "--yes", "--no-verify"])
            .status
            .success()
    );
    assert!(
        flash(&[s(&img.zst), &dev.path, "--verify-only"])
            .status
            .success()
    );
    let at = (IMAGE_MIB << 20) / 2 + 12345;
    dev.poke(at);
    let out = flash(&[s(&img.zst), &dev.path, "--verify-only"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains(&format!("differs from the image at byte {at} ")),
        "{t}"
    );
    assert!(!t.contains('✓'), "{t}");
}

#[test]
fn dry_run_checks_and_writes_nothing() {
    let Some(img) = image() else { return };
    let dev = LoopDev::new(IMAGE_MIB);
    let before = dev.contents();
    let out = flash(&[s(&img.zst), &dev.path, "--dry-run"]);
    assert!(out.status.success());
    assert!(
        text(&out).contains(&format!(
            "would write 67.1 MB from {} to {}",
            s(&img.zst),
            dev.path
        )),
        "{}",
        text(&out)
    );
    assert!(dev.contents() == before);
    // Without a device: our loop device is a candidate, shown with its backing file.
    let out = flash(&[s(&img.zst), "--dry-run"]);
    assert!(out.status.success());
    assert!(
        text(&out).contains(&format!(
            "{}  67.1 MB  loop  backed by {}",
            dev.path,
            s(&dev.backing)
        )),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_targets_are_refused_untouched() {
    let Some(img) = image() else { return };
    let zst = s(&img.zst);
    // A partition.
    let dev = LoopDev::new(IMAGE_MIB);
    assert!(
        flash(&[s(&img.raw), &dev.path, "--yes", "--no-verify"])
            .status
            .success()
    );
    let parts = dev.partitions();
    assert!(!parts.is_empty());
    let before = dev.contents();
    refused(
        &flash(&[zst, &parts[1], "--yes"]),
        "is a partition (loop",
        &dev,
        &before,
    );
    // The regular file behind it.
    refused(
        &flash(&[zst, s(&dev.backing), "--yes"]),
        "is a regular file, not a block device",
        &dev,
        &before,
    );
    // A character device.
    let out = flash(&[zst, "/dev/null", "--yes"]);
    assert!(
        !out.status.success() && text(&out).contains("is a character device"),
        "{}",
        text(&out)
    );
    // A missing device.
    let out = flash(&[zst, "/dev/no-such-disk", "--yes"]);
    assert!(
        !out.status.success() && text(&out).contains("does not exist"),
        "{}",
        text(&out)
    );
    // Mounted somewhere the desktop does not mount: refused, also with every flag.
    let mnt = tempfile::tempdir().unwrap();
    let m = Command::new("mount")
        .args(["-o", "ro", &parts[1]])
        .arg(mnt.path())
        .output()
        .unwrap();
    assert!(
        m.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&m.stderr)
    );
    let out = flash(&[zst, &dev.path, "--yes", "--force-non-removable"]);
    let _ = Command::new("umount").arg(mnt.path()).output();
    refused(
        &out,
        &format!("is mounted at {}: unmount it first", s(mnt.path())),
        &dev,
        &before,
    );
}

#[test]
fn small_and_read_only_devices_are_refused_untouched() {
    let Some(img) = image() else { return };
    let small = LoopDev::new(IMAGE_MIB / 2);
    let before = small.contents();
    refused(
        &flash(&[s(&img.zst), &small.path, "--yes"]),
        "too small: 33.6 MB",
        &small,
        &before,
    );
    let ro = LoopDev::read_only(IMAGE_MIB);
    let before = ro.contents();
    refused(
        &flash(&[s(&img.zst), &ro.path, "--yes"]),
        "read-only",
        &ro,
        &before,
    );
}

#[test]
fn wrong_confirmation_writes_nothing() {
    let Some(img) = image() else { return };
    let dev = LoopDev::new(IMAGE_MIB);
    let before = dev.contents();
    let name = dev.path.trim_start_matches("/dev/").to_string();
    let out = common::xtask(&common::repo_root())
        .args(["flash", s(&img.zst), &dev.path])
        .write_stdin("sda\n")
        .output()
        .unwrap();
    refused(&out, "you typed \"sda\"", &dev, &before);
    let out = common::xtask(&common::repo_root())
        .args(["flash", s(&img.zst), &dev.path])
        .write_stdin("")
        .output()
        .unwrap();
    refused(&out, "not confirmed", &dev, &before);
    let out = common::xtask(&common::repo_root())
        .args(["flash", s(&img.zst), &dev.path, "--no-verify"])
        .write_stdin(format!("{name}\n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn system_disk_is_refused_even_when_forced() {
    if !loopdev::available() {
        return;
    }
    // The disk holding `/`, found like the command does; --dry-run so that a
    // wrong answer could never write to it.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let source = mi
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (left.split(' ').nth(4) == Some("/"))
                .then(|| right.split(' ').nth(1).unwrap_or("").to_string())
        })
        .next_back()
        .unwrap_or_default();
    let Ok(real) = std::fs::canonicalize(&source) else {
        common::prerequisite(Some(format!("/ is not on a block device ({source})")));
        return;
    };
    let name = real.file_name().unwrap().to_string_lossy().into_owned();
    let disk = if Path::new("/sys/block").join(&name).exists() {
        name
    } else {
        let p = std::fs::canonicalize(Path::new("/sys/class/block").join(&name)).unwrap();
        p.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let img = loopdev::nixos_image(IMAGE_MIB);
    let out = flash(&[
        s(&img.zst),
        &format!("/dev/{disk}"),
        "--yes",
        "--force-non-removable",
        "--dry-run",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("system disk:") && text(&out).contains("mounted at / "),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_images_are_refused_untouched() {
    let Some(img) = image() else { return };
    let dev = LoopDev::new(IMAGE_MIB);
    let before = dev.contents();
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&img.zst).unwrap();

    let out = flash(&[s(&dir.path().join("missing.img.zst")), &dev.path, "--yes"]);
    refused(&out, "missing.img.zst does not exist", &dev, &before);

    let tar = dir.path().join("image.tar");
    std::fs::write(&tar, b"not an image").unwrap();
    refused(
        &flash(&[s(&tar), &dev.path, "--yes"]),
        "unsupported format",
        &dev,
        &before,
    );

    let fake = dir.path().join("fake.img.zst");
    std::fs::write(&fake, vec![0u8; 4096]).unwrap();
    refused(
        &flash(&[s(&fake), &dev.path, "--yes"]),
        "is not zstd data",
        &dev,
        &before,
    );

    // Truncated: caught before anything is written.
    let cut = dir.path().join("cut.img.zst");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused(
        &flash(&[s(&cut), &dev.path, "--yes"]),
        "corrupt or truncated",
        &dev,
        &before,
    );
}

#[test]
fn corrupt_data_fails_during_the_write_and_leaves_no_bootable_card() {
    let Some(img) = image() else { return };
    let dev = LoopDev::new(IMAGE_MIB);
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&img.zst).unwrap();
    // Garble compressed data in the middle, keeping the frame structure.
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4096] {
        *b = b.wrapping_mul(7).wrapping_add(1);
    }
    let bad = dir.path().join("bad.img.zst");
    std::fs::write(&bad, &bytes).unwrap();
    let out = flash(&[s(&bad), &dev.path, "--yes"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(!t.contains('✓'), "{t}");
    assert!(t.contains("is incomplete and will not boot"), "{t}");
    assert!(
        dev.contents()[..1 << 20].iter().all(|b| *b == 0),
        "the first MiB is not blank"
    );
}

#[test]
fn image_larger_than_it_said_stops_at_the_end_of_the_device() {
    let Some(img) = image() else { return };
    // A .zst without a recorded size (compressed from a pipe) and a device too small.
    let dir = tempfile::tempdir().unwrap();
    let nosize = dir.path().join("nosize.img.zst");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("zstd -q -c < '{}' > '{}'", s(&img.raw), s(&nosize)))
        .status()
        .unwrap();
    assert!(st.success());
    let dev = LoopDev::new(IMAGE_MIB / 2);
    let out = flash(&[s(&nosize), &dev.path, "--yes"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("the image is larger than"), "{t}");
    assert!(!t.contains('✓'), "{t}");
    assert!(dev.contents()[..1 << 20].iter().all(|b| *b == 0));
}

#[test]
fn host_name_uses_the_image_from_sd() {
    let Some(img) = image() else { return };
    let fleet = common::fixture_fleet();
    let dev = LoopDev::new(IMAGE_MIB);
    let out = common::xtask(fleet.path())
        .args(["flash", "rpi-box-03", &dev.path, "--yes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("build it with `cargo xtask sd rpi-box-03`"),
        "{}",
        text(&out)
    );
    let target: PathBuf = fleet.path().join("out/rpi-box-03/rpi-box-03.img.zst");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(&img.zst, &target).unwrap();
    let out = common::xtask(fleet.path())
        .args(["flash", "rpi-box-03", &dev.path, "--yes", "--eject"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let raw = std::fs::read(&img.raw).unwrap();
    assert!(dev.contents()[..raw.len()] == raw[..]);
    // With the record `sd` writes, the image's origin is shown, and an image
    // that does not match its record is refused.
    let size = std::fs::metadata(&target).unwrap().len();
    let sum = sha256(&target);
    let record = |size: u64| {
        format!(
            r#"{{"host":"rpi-box-03","commit":"0123456789abcdef","dirty":false,"sha256":"{sum}","size":{size},"raw_sha256":"{sum}","raw_size":1,"built":"2026-05-01T10:00:00Z","store_path":"/nix/store/x","wifi":null}}"#
        )
    };
    let json = fleet.path().join("out/rpi-box-03/rpi-box-03.img.json");
    std::fs::write(&json, record(size)).unwrap();
    let out = common::xtask(fleet.path())
        .args(["flash", "rpi-box-03", &dev.path, "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("built 2026-05-01T10:00:00Z from commit 0123456"),
        "{}",
        text(&out)
    );
    std::fs::write(&json, record(size + 1)).unwrap();
    let out = common::xtask(fleet.path())
        .args(["flash", "rpi-box-03", &dev.path, "--yes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("recorded"), "{}", text(&out));
    assert!(dev.contents()[..raw.len()] == raw[..]);
    let out = common::xtask(fleet.path())
        .args(["flash", "no-such-host", &dev.path, "--yes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn auto_mounted_partitions_are_unmounted_after_saying_so() {
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
    dev.poke(100);
    // A private mount namespace with its own /media, so the machine's is not touched:
    // the card's ext4 partition is mounted where a desktop would mount it.
    let xtask = assert_cmd::cargo::cargo_bin("xtask");
    let script = format!(
        "set -e; mount -t tmpfs media /media; mkdir -p /media/alice/NIXOS_SD; mount {p2} /media/alice/NIXOS_SD; \
         exec {x} --flake {root} flash {img} {dev} --yes",
        p2 = parts[1],
        x = s(&xtask),
        root = s(&common::repo_root()),
        img = s(&img.zst),
        dev = dev.path
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "unmounting {} (the desktop mounted it at /media/alice/NIXOS_SD)",
            parts[1]
        )),
        "{t}"
    );
    let raw = std::fs::read(&img.raw).unwrap();
    assert!(dev.contents()[..raw.len()] == raw[..]);
}

#[test]
fn xz_and_gzip_images_are_written() {
    let Some(img) = image() else { return };
    if !common::prerequisite(
        common::need_program("xz", "xz-utils").or(common::need_program("gzip", "gzip")),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(&img.raw).unwrap();
    for (prog, ext) in [("xz", "xz"), ("gzip", "gz")] {
        let out = dir.path().join(format!("nixos.img.{ext}"));
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!("{prog} -1 -c < '{}' > '{}'", s(&img.raw), s(&out)))
            .status()
            .unwrap();
        assert!(st.success());
        let dev = LoopDev::new(IMAGE_MIB);
        let o = flash(&[s(&out), &dev.path, "--yes"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            dev.contents()[..raw.len()] == raw[..],
            "{ext}: the device differs from the image"
        );
    }
}

/// A folder on PATH holding one executable shell script.
fn fake_program(name: &str, script: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn path_with(dir: &Path) -> String {
    format!("{}:{}", s(dir), std::env::var("PATH").unwrap_or_default())
}

#[test]
fn ctrl_c_stops_cleanly_and_says_the_card_is_incomplete() {
    let Some(img) = image() else { return };
    use std::os::unix::process::CommandExt;
    // A .gz whose decompressor hands over 20 MiB of the image, then stalls.
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("nixos.img.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -1 -c < '{}' > '{}'", s(&img.raw), s(&gz)))
        .status()
        .unwrap();
    assert!(st.success());
    let bin = fake_program(
        "gzip",
        &format!("head -c 20971520 '{}'\nexec sleep 60", s(&img.raw)),
    );
    let dev = LoopDev::new(IMAGE_MIB);
    let child = Command::new(assert_cmd::cargo::cargo_bin("xtask"))
        .args([
            "--flake",
            s(&common::repo_root()),
            "flash",
            s(&gz),
            &dev.path,
            "--yes",
        ])
        .env("PATH", path_with(bin.path()))
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the FAT partition (at 8 MiB) is on the device: the write is under way.
    let raw = std::fs::read(&img.raw).unwrap();
    let want = &raw[8 << 20..(8 << 20) + 4096];
    let start = std::time::Instant::now();
    while dev.read_at(8 << 20, 4096) != want {
        assert!(start.elapsed().as_secs() < 30, "the write never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Ctrl-C: SIGINT to the whole foreground process group, like a terminal does.
    let st = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "interrupted: {} is incomplete and will not boot",
            dev.path
        )),
        "{t}"
    );
    assert!(!t.contains('✓'), "{t}");
    assert!(
        dev.read_at(0, 1 << 20).iter().all(|b| *b == 0),
        "the first MiB is not blank"
    );
}

#[test]
fn without_permission_the_write_step_is_rerun_with_sudo() {
    let Some(img) = image() else { return };
    if !common::prerequisite(common::need_program("setpriv", "util-linux")) {
        return;
    }
    // An unprivileged user (nobody) may not open the loop device. A stand-in
    // `sudo` records the command it is given; the test then runs that command as root.
    let bin = fake_program("sudo", "printf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"");
    let dev = LoopDev::new(IMAGE_MIB);
    let before = dev.contents();
    let xtask = assert_cmd::cargo::cargo_bin("xtask");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&xtask)
        .args([
            "--flake",
            s(&common::repo_root()),
            "flash",
            s(&img.zst),
            &dev.path,
            "--yes",
        ])
        .env("PATH", path_with(bin.path()))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "you may not write to {}: running this step again as root with sudo",
            dev.path
        )),
        "{t}"
    );
    assert!(
        t.contains("$ sudo -- "),
        "the sudo command is not printed: {t}"
    );
    assert!(
        dev.contents() == before,
        "the unprivileged run changed the device"
    );
    let args: Vec<String> = std::fs::read_to_string(bin.path().join("args"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(args[0], "--");
    assert_eq!(Path::new(&args[1]), xtask.as_path());
    assert_eq!(&args[4..], &["flash", s(&img.zst), &dev.path, "--yes"]);
    let out = Command::new(&args[1]).args(&args[2..]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let raw = std::fs::read(&img.raw).unwrap();
    assert!(dev.contents()[..raw.len()] == raw[..]);
}
