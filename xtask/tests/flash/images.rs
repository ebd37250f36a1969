//! `flash` against images that the first checks missed: a FIFO or another
//! non-regular file, a host image that changed after `sd` recorded it (or
//! whose record is missing or malformed), a truncated .xz, a .gz with
//! trailing garbage (and `--verify-only` on the card it left), problems of
//! other hosts, `--verify-only` without permission.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::common::{self, loopdev::LoopDev};
use super::{IMAGE_MIB, fake_program, flash, image, path_with, refused, s, sha256, text};

/// `flash` that must end within `secs`: a hang fails the test instead of blocking it.
fn flash_within(secs: u64, args: &[&str]) -> Output {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("xtask"))
        .args(["--flake", s(&common::repo_root()), "flash"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flash {args:?} still ran after {secs} s: it hangs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!("--- flash {args:?}: {}\n{}", out.status, text(&out));
    out
}

fn blank_head(dev: &LoopDev) -> bool {
    dev.read_at(0, 1 << 20).iter().all(|b| *b == 0)
}

#[test]
fn non_regular_images_are_refused_without_blocking() {
    let Some(_img) = image() else { return };
    let dev = LoopDev::new(IMAGE_MIB);
    let before = dev.contents();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("nixos.img");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let out = flash_within(30, &[s(&fifo), &dev.path, "--yes"]);
    refused(
        &out,
        &format!("{} is a FIFO (named pipe), not an image file", s(&fifo)),
        &dev,
        &before,
    );
    let out = flash_within(30, &[s(&fifo), &dev.path, "--verify-only"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is a FIFO (named pipe)"),
        "{}",
        text(&out)
    );
    // The target itself given as the image.
    refused(
        &flash_within(30, &[&dev.path, &dev.path, "--yes"]),
        &format!("{} is a block device, not an image file", dev.path),
        &dev,
        &before,
    );
    let folder = dir.path().join("folder.img");
    std::fs::create_dir(&folder).unwrap();
    refused(
        &flash_within(30, &[s(&folder), &dev.path, "--yes"]),
        "is a folder, not an image file",
        &dev,
        &before,
    );
}

/// The fixture fleet with `img` as rpi-box-03's built image; returns the
/// fleet and the paths of the image and its record.
fn fleet_with_image(zst: &Path) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let fleet = common::fixture_fleet();
    let target = fleet.path().join("out/rpi-box-03/rpi-box-03.img.zst");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(zst, &target).unwrap();
    let json = fleet.path().join("out/rpi-box-03/rpi-box-03.img.json");
    (fleet, target, json)
}

fn record(size: u64, sha256: &str) -> String {
    format!(
        r#"{{"host":"rpi-box-03","commit":"0123456789abcdef","dirty":false,"sha256":"{sha256}","size":{size},"raw_sha256":"{raw}","raw_size":1,"built":"2026-05-01T10:00:00Z","store_path":"/nix/store/x","wifi":null}}"#,
        raw = "0".repeat(64)
    )
}

fn xtask_in(fleet: &Path, args: &[&str]) -> Output {
    let out = common::xtask(fleet).args(args).output().unwrap();
    eprintln!("--- {args:?}: {}\n{}", out.status, text(&out));
    out
}

#[test]
fn host_image_is_checked_against_its_recorded_sha256() {
    let Some(img) = image() else { return };
    let (fleet, target, json) = fleet_with_image(&img.zst);
    let size = std::fs::metadata(&target).unwrap().len();
    let good = sha256(&target);
    let dev = LoopDev::new(IMAGE_MIB);

    // A matching record: written and verified.
    std::fs::write(&json, record(size, &good)).unwrap();
    let out = xtask_in(fleet.path(), &["flash", "rpi-box-03", &dev.path, "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("its sha256 is checked"),
        "{}",
        text(&out)
    );

    // The same size, another sha256: the file is not what `sd` built.
    // --verify-only blames the image, also when the card differs from it.
    let other = format!("{:064x}", 0xabcdefu64);
    std::fs::write(&json, record(size, &other)).unwrap();
    dev.poke(1000);
    let out = xtask_in(
        fleet.path(),
        &["flash", "rpi-box-03", &dev.path, "--verify-only"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "its sha256 is {good}, `cargo xtask sd` recorded {other}"
        )),
        "{}",
        text(&out)
    );
    dev.poke(1000);
    let out = xtask_in(
        fleet.path(),
        &["flash", "rpi-box-03", &dev.path, "--verify-only"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "its sha256 is {good}, `cargo xtask sd` recorded {other}"
        )),
        "{}",
        text(&out)
    );
    let out = xtask_in(fleet.path(), &["flash", "rpi-box-03", &dev.path, "--yes"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(!t.contains('✓'), "{t}");
    assert!(
        t.contains(&format!(
            "{} does not match its record: its sha256 is {good}",
            s(&target)
        )),
        "{t}"
    );
    assert!(t.contains("is incomplete and will not boot"), "{t}");
    assert!(blank_head(&dev), "the card's first MiB was written back");

    // A malformed record is said, and nothing is written.
    let before = dev.contents();
    std::fs::write(&json, record(size, "00")).unwrap();
    refused(
        &xtask_in(fleet.path(), &["flash", "rpi-box-03", &dev.path, "--yes"]),
        "rpi-box-03.img.json is malformed: its sha256 \"00\" is not a sha256",
        &dev,
        &before,
    );
    std::fs::write(&json, "{\"host\":").unwrap();
    refused(
        &xtask_in(fleet.path(), &["flash", "rpi-box-03", &dev.path, "--yes"]),
        "rpi-box-03.img.json is malformed",
        &dev,
        &before,
    );
    // A missing one is said (the image is still written).
    std::fs::remove_file(&json).unwrap();
    let out = xtask_in(
        fleet.path(),
        &["flash", "rpi-box-03", &dev.path, "--dry-run"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("warning: {} is missing", s(&json))),
        "{}",
        text(&out)
    );
}

#[test]
fn truncated_xz_is_called_truncated_not_empty() {
    let Some(img) = image() else { return };
    if !common::prerequisite(common::need_program("xz", "xz-utils")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let xz = dir.path().join("nixos.img.xz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("xz -1 -c < '{}' > '{}'", s(&img.raw), s(&xz)))
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(&xz).unwrap();
    std::fs::write(&xz, &bytes[..bytes.len() / 2]).unwrap();
    let dev = LoopDev::new(IMAGE_MIB);
    let before = dev.contents();
    let out = flash(&[s(&xz), &dev.path, "--yes"]);
    refused(&out, "is corrupt or truncated (xz --list:", &dev, &before);
    assert!(!text(&out).contains("is empty"), "{}", text(&out));
    // Trailing garbage: xz's index is not at the end, refused before writing too.
    let mut garbled = bytes.clone();
    garbled.extend_from_slice(b"garbage\n");
    std::fs::write(&xz, &garbled).unwrap();
    refused(
        &flash(&[s(&xz), &dev.path, "--yes"]),
        "is corrupt or truncated (xz --list:",
        &dev,
        &before,
    );
}

#[test]
fn gzip_with_trailing_garbage_is_named_and_the_card_left_unbootable() {
    let Some(img) = image() else { return };
    if !common::prerequisite(common::need_program("gzip", "gzip")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("nixos.img.gz");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -1 -c < '{}' > '{}' && echo garbage >> '{}'",
            s(&img.raw),
            s(&gz),
            s(&gz)
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let dev = LoopDev::new(IMAGE_MIB);
    let out = flash(&[s(&gz), &dev.path, "--yes"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(!t.contains('✓'), "{t}");
    assert!(
        t.contains("the image has trailing garbage after its compressed data"),
        "{t}"
    );
    assert!(
        t.contains(&format!("{} is incomplete and will not boot", dev.path)),
        "{t}"
    );
    assert!(blank_head(&dev), "the card's first MiB was written back");

    // --verify-only then tells the unfinished write from a failing card.
    let out = flash(&[s(&img.zst), &dev.path, "--verify-only"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "{} does not hold the image: its first MiB is blank, the sign of an earlier `cargo xtask flash` that did not finish",
            dev.path
        )),
        "{t}"
    );
    assert!(!t.contains("failing or fake"), "{t}");
}

#[test]
fn problems_of_other_hosts_do_not_block_flashing_a_built_image() {
    let Some(img) = image() else { return };
    let (fleet, _target, _json) = fleet_with_image(&img.zst);
    let dev = LoopDev::new(IMAGE_MIB);
    // Another host's folder is missing: a problem, but not rpi-box-03's.
    std::fs::remove_dir_all(fleet.path().join("hosts/rpi-box-01")).unwrap();
    let out = xtask_in(
        fleet.path(),
        &["flash", "rpi-box-03", &dev.path, "--dry-run"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("warning: the fleet definition has 1 problem(s) elsewhere"),
        "{t}"
    );
    assert!(t.contains("would write"), "{t}");
    // rpi-box-03's own problem (an invalid user in its entry) still refuses.
    let inv = fleet.path().join("hosts/fleet.toml");
    let text_before = std::fs::read_to_string(&inv).unwrap();
    let broken = text_before.replacen(
        "name = \"rpi-box-03\"",
        "name = \"rpi-box-03\"\nuser = \"Not A User\"",
        1,
    );
    assert_ne!(broken, text_before);
    std::fs::write(&inv, broken).unwrap();
    let out = xtask_in(
        fleet.path(),
        &["flash", "rpi-box-03", &dev.path, "--dry-run"],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("is not a valid user name"), "{t}");
}

#[test]
fn verify_only_without_permission_reruns_with_sudo_to_read() {
    let Some(img) = image() else { return };
    if !common::prerequisite(common::need_program("setpriv", "util-linux")) {
        return;
    }
    let bin = fake_program("sudo", "printf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"");
    let dev = LoopDev::new(IMAGE_MIB);
    assert!(
        flash(&[s(&img.zst), &dev.path, "--yes", "--no-verify"])
            .status
            .success()
    );
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
            "--verify-only",
        ])
        .env("PATH", path_with(bin.path()))
        .output()
        .unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "you may not read {}: running the comparison again as root with sudo (it opens the card read-only and writes nothing)",
            dev.path
        )),
        "{t}"
    );
    assert!(!t.contains("to write"), "{t}");
    let args: Vec<String> = std::fs::read_to_string(bin.path().join("args"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(args.iter().any(|a| a == "--verify-only"), "{args:?}");
    let out = Command::new(&args[1]).args(&args[2..]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("✓ verified"), "{}", text(&out));
}
