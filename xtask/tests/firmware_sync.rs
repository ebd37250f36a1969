//! modules/hardware/firmware-sync.sh, the program every activation of a Pi
//! runs to bring its FAT `FIRMWARE` partition in line with the system, run
//! here the same way (bash, real mtools) on FAT images made by `mkfs.vfat`:
//! an update, an interruption after every single write, a partition too
//! full, a rollback, and the `--check` that `status` reads. shellcheck
//! passes it as nixpkgs' `writeShellApplication` requires.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    common::repo_root().join("modules/hardware/firmware-sync.sh")
}

fn missing() -> Option<String> {
    common::need_program("mkfs.vfat", "dosfstools")
        .or_else(|| common::need_program("mcopy", "mtools"))
        .or_else(|| common::need_program("bash", "bash"))
}

/// A firmware set: relative path → content.
type Set = BTreeMap<String, Vec<u8>>;

/// Deterministic bytes (no two seeds alike).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

const CONFIG: &str = "[pi3]\nkernel=u-boot-rpi3.bin\n\n[pi02]\nkernel=u-boot-rpi3.bin\n\n[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\n\n[all]\narm_64bit=1\nenable_uart=1\navoid_warnings=1\n";

/// The boot files of the fleet's models, as the partition holds them.
const BOOT: [&str; 11] = [
    "bootcode.bin",
    "start.elf",
    "fixup.dat",
    "start4.elf",
    "fixup4.dat",
    "u-boot-rpi3.bin",
    "u-boot-rpi4.bin",
    "armstub8-gic.bin",
    "bcm2711-rpi-4-b.dtb",
    "bcm2710-rpi-3-b.dtb",
    "overlays/disable-bt.dtbo",
];

/// The set flashed with the card (release 1).
fn old_set() -> Set {
    let mut s = Set::new();
    for (i, f) in BOOT.iter().enumerate() {
        s.insert(f.to_string(), bytes(i as u64, 20_000 + 1000 * i));
    }
    s.insert("config.txt".into(), CONFIG.as_bytes().to_vec());
    s.insert(
        "pi-nixos-firmware.txt".into(),
        b"raspberrypifw=1.20250101\nuboot=2025.01\n".to_vec(),
    );
    s
}

/// Release 2: new firmware pair, new U-Boot for both boards, a changed
/// device tree, a new overlay, a config.txt that uses it; the rest as is.
fn new_set() -> Set {
    let mut s = old_set();
    for (i, f) in [
        "start.elf",
        "fixup.dat",
        "start4.elf",
        "fixup4.dat",
        "u-boot-rpi3.bin",
        "u-boot-rpi4.bin",
        "bcm2711-rpi-4-b.dtb",
    ]
    .iter()
    .enumerate()
    {
        s.insert(f.to_string(), bytes(100 + i as u64, 24_000 + 500 * i));
    }
    s.insert("overlays/uart0.dtbo".into(), bytes(200, 3000));
    s.insert(
        "config.txt".into(),
        format!("{CONFIG}dtoverlay=disable-bt\n").into_bytes(),
    );
    s.insert(
        "pi-nixos-firmware.txt".into(),
        b"raspberrypifw=1.20250601\nuboot=2025.04\n".to_vec(),
    );
    s
}

fn write_set(dir: &Path, set: &Set) {
    for (p, c) in set {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, c).unwrap();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            tmp: tempfile::tempdir().unwrap(),
        };
        write_set(&f.old_dir(), &old_set());
        write_set(&f.new_dir(), &new_set());
        f
    }

    fn old_dir(&self) -> PathBuf {
        self.tmp.path().join("old")
    }

    fn new_dir(&self) -> PathBuf {
        self.tmp.path().join("new")
    }

    /// A FAT partition as nixpkgs' sd-image.nix makes it (`mkfs.vfat -n
    /// FIRMWARE` on an image of `mib` MiB).
    fn image(&self, name: &str, mib: u64) -> PathBuf {
        let img = self.tmp.path().join(name);
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(mib << 20).unwrap();
        run(Command::new("mkfs.vfat")
            .args(["-n", "FIRMWARE"])
            .arg(&img)
            .env("PATH", path()));
        img
    }
}

/// mkfs.vfat lives in /usr/sbin.
fn path() -> String {
    format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    )
}

fn sync(img: &Path, dir: &Path, args: &[&str], stop: Option<usize>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg("--device")
        .arg(img)
        .args(args)
        .arg(dir)
        .env("PATH", path())
        .env_remove("PI_FIRMWARE_SYNC_STOP_AFTER");
    if let Some(n) = stop {
        cmd.env("PI_FIRMWARE_SYNC_STOP_AFTER", n.to_string());
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A file of the partition, read with mtools (`None`: not there).
fn read(img: &Path, p: &str) -> Option<Vec<u8>> {
    let out = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-n")
        .arg("-i")
        .arg(img)
        .arg(format!("::/{p}"))
        .arg("-")
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// Every file of the partition (lower-case paths: FAT ignores case).
fn listing(img: &Path) -> Vec<String> {
    let out = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-/", "-b", "-i"])
        .arg(img)
        .arg("::/")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with('/') && !l.is_empty())
        .map(|l| l.trim_start_matches("::/").to_lowercase())
        .collect()
}

fn sha(img: &Path) -> Vec<u8> {
    run(Command::new("sha256sum").arg(img)).stdout
}

/// The partition holds exactly `set` (and maybe extra files).
fn holds(img: &Path, set: &Set) -> bool {
    set.iter().all(|(p, c)| read(img, p).as_ref() == Some(c))
}

/// The values of `key=` lines of a config.txt, every section.
fn named(config: &[u8], key: &str) -> Vec<String> {
    String::from_utf8_lossy(config)
        .lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
        .collect()
}

/// What the firmware needs to boot each model with the partition as it is:
/// config.txt whole (old or new); every file it names (kernel=, armstub=,
/// dtoverlay=) and every firmware and device-tree file there and whole,
/// from the same release as the other files of its folder (start*.elf
/// with its fixup*.dat); with the new config.txt, all of the new set.
fn assert_boots(img: &Path, old: &Set, new: &Set, when: &str) {
    let config = read(img, "config.txt").unwrap_or_else(|| panic!("{when}: no config.txt"));
    let is_new = config == new["config.txt"];
    assert!(
        is_new || config == old["config.txt"],
        "{when}: config.txt is neither the old nor the new one"
    );
    let set = if is_new { new } else { old };
    let mut needed: Vec<String> = BOOT.iter().map(|s| s.to_string()).collect();
    needed.extend(named(&config, "kernel"));
    needed.extend(named(&config, "armstub"));
    needed.extend(
        named(&config, "dtoverlay")
            .iter()
            .map(|o| format!("overlays/{o}.dtbo")),
    );
    for f in &needed {
        let got = read(img, f).unwrap_or_else(|| panic!("{when}: {f} is missing"));
        assert!(
            Some(&got) == old.get(f) || Some(&got) == new.get(f),
            "{when}: {f} is neither the old nor the new file (torn)"
        );
        if is_new {
            assert_eq!(Some(&got), set.get(f), "{when}: new config.txt, old {f}");
        }
    }
    // One release per folder: the firmware files of the top folder all
    // from the same set.
    let from_new = BOOT
        .iter()
        .copied()
        .filter(|f| !f.contains('/') && old[*f] != new[*f])
        .map(|f| read(img, f).as_ref() == new.get(f))
        .collect::<Vec<bool>>();
    assert!(
        from_new.iter().all(|b| *b) || from_new.iter().all(|b| !*b),
        "{when}: the top folder mixes releases (new: {from_new:?})"
    );
    assert!(!is_new || from_new.iter().all(|b| *b));
}

#[test]
fn update_writes_what_differs_keeps_bak_and_checks() {
    if !common::prerequisite(missing()) {
        return;
    }
    let fx = Fixture::new();
    let img = fx.image("fw.img", 32);
    let out = sync(&img, &fx.old_dir(), &[], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(holds(&img, &old_set()));

    // --check: a line per differing file, the versions on the partition.
    let out = sync(&img, &fx.new_dir(), &["--check"], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    for f in [
        "differs=config.txt",
        "differs=start4.elf",
        "differs=u-boot-rpi4.bin",
        "missing=overlays/uart0.dtbo",
        "version=raspberrypifw=1.20250101",
        "version=uboot=2025.01",
        "files=14",
    ] {
        assert!(t.lines().any(|l| l == f), "no line {f} in:\n{t}");
    }
    assert!(!t.contains("=armstub8-gic.bin"), "{t}");
    assert_eq!(t.lines().filter(|l| l.starts_with("differs=")).count(), 9);

    // --dry-run changes nothing.
    let before = sha(&img);
    let out = sync(&img, &fx.new_dir(), &["--dry-run"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("10 of 14 files differ"),
        "{}",
        text(&out)
    );
    assert_eq!(sha(&img), before);

    // The update: only what differs is written, config.txt last.
    let out = sync(&img, &fx.new_dir(), &[], None);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(holds(&img, &new_set()), "{t}");
    let writes: Vec<&str> = t.lines().filter(|l| l.starts_with("+ mcopy")).collect();
    assert_eq!(writes.len(), 13, "10 files and 3 .bak: {t}");
    assert!(
        !t.contains("armstub8-gic.bin"),
        "an unchanged file was written: {t}"
    );
    let last_move = t.lines().rfind(|l| l.starts_with("+ mmove")).unwrap();
    assert!(last_move.contains("/config.txt ::/"), "{last_move}");
    assert_eq!(
        t.lines().filter(|l| l.starts_with("+ mmove")).count(),
        3,
        "one move per folder, then config.txt: {t}"
    );
    // The previous config.txt and U-Boot binaries it names, kept.
    let old = old_set();
    assert_eq!(
        read(&img, "config.txt.bak"),
        Some(old["config.txt"].clone())
    );
    assert_eq!(
        read(&img, "u-boot-rpi4.bin.bak"),
        Some(old["u-boot-rpi4.bin"].clone())
    );
    assert_eq!(
        read(&img, "u-boot-rpi3.bin.bak"),
        Some(old["u-boot-rpi3.bin"].clone())
    );
    assert!(read(&img, "start4.elf.bak").is_none());
    // No staging folder left; names as the system has them.
    let files = listing(&img);
    assert!(
        !files.iter().any(|f| f.starts_with(".pi-nixos-new")),
        "{files:?}"
    );
    let raw = String::from_utf8_lossy(
        &run(Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-/", "-b", "-i"])
            .arg(&img)
            .arg("::/"))
        .stdout,
    )
    .to_string();
    assert!(raw.contains("::/config.txt\n"), "{raw}");

    let out = sync(&img, &fx.new_dir(), &["--check"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("version=raspberrypifw=1.20250601"));
    // In step: a second sync writes nothing.
    let before = sha(&img);
    let out = sync(&img, &fx.new_dir(), &[], None);
    assert!(text(&out).contains("nothing to write"), "{}", text(&out));
    assert_eq!(sha(&img), before);
    // fsck.vfat finds nothing wrong.
    run(Command::new("fsck.vfat")
        .arg("-n")
        .arg(&img)
        .env("PATH", path()));
}

#[test]
fn interrupted_after_every_write_still_boots_and_a_rerun_finishes() {
    if !common::prerequisite(missing()) {
        return;
    }
    let fx = Fixture::new();
    let base = fx.image("base.img", 32);
    assert!(sync(&base, &fx.old_dir(), &[], None).status.success());
    let (old, new) = (old_set(), new_set());
    let mut stopped = 0;
    for n in 1.. {
        let img = fx.tmp.path().join("cut.img");
        std::fs::copy(&base, &img).unwrap();
        let out = sync(&img, &fx.new_dir(), &[], Some(n));
        if out.status.success() {
            assert!(holds(&img, &new));
            break;
        }
        // Killed (SIGKILL, as a power cut): no cleanup ran.
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "step {n}: {}",
            text(&out)
        );
        stopped += 1;
        assert_boots(&img, &old, &new, &format!("after write {n}"));
        run(Command::new("fsck.vfat")
            .arg("-n")
            .arg(&img)
            .env("PATH", path()));
        // The next activation finishes the job.
        let out = sync(&img, &fx.new_dir(), &[], None);
        assert!(out.status.success(), "rerun after {n}: {}", text(&out));
        assert!(holds(&img, &new), "rerun after {n}");
        assert!(!listing(&img).iter().any(|f| f.starts_with(".pi-nixos-new")));
        assert_eq!(
            read(&img, "config.txt.bak"),
            Some(old["config.txt"].clone())
        );
    }
    // mmd ×2, 12 copies, 2 moves, config.txt copy and move, cleanup.
    assert!(stopped >= 18, "only {stopped} steps were interrupted");
    eprintln!("interrupted after each of {stopped} writes: the partition booted every time");
}

#[test]
fn a_full_partition_is_refused_and_left_alone() {
    if !common::prerequisite(missing()) {
        return;
    }
    let fx = Fixture::new();
    let img = fx.image("small.img", 2);
    assert!(sync(&img, &fx.old_dir(), &[], None).status.success());
    // Fill it up to leave less than the update needs (≈250 KiB).
    let free = String::from_utf8_lossy(
        &run(Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&img)
            .arg("::/"))
        .stdout,
    )
    .lines()
    .find(|l| l.contains("bytes free"))
    .unwrap()
    .chars()
    .filter(char::is_ascii_digit)
    .collect::<String>()
    .parse::<u64>()
    .unwrap();
    let filler = fx.tmp.path().join("filler");
    std::fs::write(&filler, bytes(7, (free - 100 * 1024) as usize)).unwrap();
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&img)
        .arg(&filler)
        .arg("::/filler"));
    let before = sha(&img);
    let out = sync(&img, &fx.new_dir(), &[], None);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains("KiB free but this update needs") && t.contains("nothing was changed"),
        "{t}"
    );
    assert_eq!(sha(&img), before, "the image changed");
    // Room made (the filler gone): the same update goes through.
    run(Command::new("mdel")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(&img)
        .arg("::/filler"));
    let out = sync(&img, &fx.new_dir(), &[], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(holds(&img, &new_set()));
}

#[test]
fn rollback_brings_the_old_set_back_and_bak_restores_by_hand() {
    if !common::prerequisite(missing()) {
        return;
    }
    let fx = Fixture::new();
    let img = fx.image("fw.img", 32);
    assert!(sync(&img, &fx.old_dir(), &[], None).status.success());
    assert!(sync(&img, &fx.new_dir(), &[], None).status.success());
    let (old, new) = (old_set(), new_set());

    // By hand, from any computer: config.txt.bak and U-Boot's .bak back.
    let hand = fx.tmp.path().join("hand.img");
    std::fs::copy(&img, &hand).unwrap();
    for f in ["config.txt", "u-boot-rpi4.bin", "u-boot-rpi3.bin"] {
        run(Command::new("mmove")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-D", "o", "-i"])
            .arg(&hand)
            .arg(format!("::/{f}.bak"))
            .arg(format!("::/{f}")));
        assert_eq!(read(&hand, f), Some(old[f].clone()));
    }

    // The rollback: the previous system's sync, back to its folder.
    let out = sync(&img, &fx.old_dir(), &[], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(holds(&img, &old));
    assert_eq!(
        read(&img, "config.txt.bak"),
        Some(new["config.txt"].clone())
    );
    assert_eq!(
        read(&img, "u-boot-rpi4.bin.bak"),
        Some(new["u-boot-rpi4.bin"].clone())
    );
    // The overlay only the new set had is kept (config.txt.bak names it).
    assert_eq!(
        read(&img, "overlays/uart0.dtbo"),
        Some(new["overlays/uart0.dtbo"].clone())
    );
    let out = sync(&img, &fx.old_dir(), &["--check"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn refusals_say_what_to_do() {
    if !common::prerequisite(missing()) {
        return;
    }
    let fx = Fixture::new();
    let gone = fx.tmp.path().join("no-such-device");
    let out = sync(&gone, &fx.new_dir(), &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("label FIRMWARE"), "{}", text(&out));
    let junk = fx.tmp.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let out = sync(&junk, &fx.new_dir(), &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("is it the firmware partition"),
        "{}",
        text(&out)
    );
    let img = fx.image("fw.img", 32);
    let out = sync(&img, &fx.tmp.path().join("nothing"), &[], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("is not a directory"), "{}", text(&out));
}

#[test]
fn shellcheck_passes_as_write_shell_application_requires() {
    if !common::prerequisite(common::need_program("shellcheck", "shellcheck")) {
        return;
    }
    run(Command::new("shellcheck")
        .args(["-s", "bash"])
        .arg(script()));
}

#[test]
fn a_block_device_is_written_as_on_a_pi() {
    if !common::loopdev::available() {
        return;
    }
    let fx = Fixture::new();
    let img = fx.image("fw.img", 32);
    let dev = common::loopdev::LoopDev::over(&img.display().to_string());
    // The block device, as on a Pi (/dev/disk/by-label/FIRMWARE → it).
    let out = sync(Path::new(&dev.path), &fx.old_dir(), &[], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("+ sync {}", dev.path)),
        "{}",
        text(&out)
    );
    let out = sync(Path::new(&dev.path), &fx.new_dir(), &[], None);
    assert!(out.status.success(), "{}", text(&out));
    drop(dev);
    assert!(
        holds(&img, &new_set()),
        "the block device's writes did not reach the image"
    );
}
