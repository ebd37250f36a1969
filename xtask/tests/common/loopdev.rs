//! Loop devices made and removed by tests, and NixOS-shaped images to write
//! onto them. Every `LoopDev` is detached when dropped, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::{need_program, need_root, prerequisite};

/// Whether loop-device tests can run here (root and the programs they use);
/// skips with a reason, or fails under CI.
pub fn available() -> bool {
    let missing = need_root().or_else(|| {
        [
            ("losetup", "util-linux"),
            ("partx", "util-linux"),
            ("blockdev", "util-linux"),
            ("blkid", "util-linux"),
            ("mount", "mount"),
            ("zstd", "zstd"),
            ("mkfs.vfat", "dosfstools"),
            ("fsck.vfat", "dosfstools"),
            ("mcopy", "mtools"),
            ("mkfs.ext4", "e2fsprogs"),
            ("e2fsck", "e2fsprogs"),
            ("sfdisk", "fdisk"),
        ]
        .iter()
        .find_map(|(p, pkg)| need_program(p, pkg))
    });
    prerequisite(missing)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A loop device over a sparse file (or another device), with partition
/// scanning on.
pub struct LoopDev {
    pub path: String,
    pub backing: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl LoopDev {
    /// A `mib` MiB device filled with a recognizable pattern.
    pub fn new(mib: u64) -> LoopDev {
        Self::with(mib, &[])
    }

    /// A read-only one (`losetup -r`).
    pub fn read_only(mib: u64) -> LoopDev {
        Self::with(mib, &["--read-only"])
    }

    fn with(mib: u64, flags: &[&str]) -> LoopDev {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("card.img");
        std::fs::write(&backing, pattern(mib)).unwrap();
        let path = run(Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .args(flags)
            .arg(&backing));
        LoopDev {
            path,
            backing,
            _dir: Some(dir),
        }
    }

    /// A loop device stacked on `backing`: a block device (a card, one of
    /// its partitions) or a file.
    pub fn over(backing: &str) -> LoopDev {
        let path = run(Command::new("losetup").args(["--find", "--show", backing]));
        LoopDev {
            path,
            backing: PathBuf::from(backing),
            _dir: None,
        }
    }

    /// A loop device over a 1 MiB file on the filesystem of `partition`,
    /// the file then deleted, so `loop/backing_file` names no file any more
    /// (`... (deleted)`). The filesystem is mounted in a private mount
    /// namespace that ends at once: the loop device alone keeps it alive.
    /// Its writes are synced before this returns; the card changes again
    /// only when the loop device is detached (the file's blocks are freed).
    pub fn over_deleted_file_on(partition: &str) -> LoopDev {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "set -e; mount -o noatime {partition} '{d}'; truncate -s 1M '{d}/stacked.img'; losetup --find --show '{d}/stacked.img'; rm '{d}/stacked.img'; sync -f '{d}'",
            d = dir.path().display()
        );
        let path = run(Command::new("unshare").args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]));
        LoopDev {
            path,
            backing: dir.path().join("stacked.img"),
            _dir: Some(dir),
        }
    }

    /// A `mib` MiB device whose sparse backing file lives on a tmpfs of only
    /// `room_mib` MiB, so writes past that fail with ENOSPC. The tmpfs is
    /// mounted in a private mount namespace that ends at once; the loop device
    /// keeps it alive until it is detached, and nothing is mounted on the machine.
    pub fn short_of_space(mib: u64, room_mib: u64) -> LoopDev {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "set -e; mount -t tmpfs -o size={room_mib}m flash-test '{d}'; truncate -s {mib}M '{d}/card.img'; losetup --find --show '{d}/card.img'",
            d = dir.path().display()
        );
        let path = run(Command::new("unshare").args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]));
        LoopDev {
            path,
            backing: dir.path().join("card.img"),
            _dir: Some(dir),
        }
    }

    /// Every byte of the device, read through the device node.
    pub fn contents(&self) -> Vec<u8> {
        run(Command::new("blockdev").arg("--flushbufs").arg(&self.path));
        std::fs::read(&self.path).unwrap()
    }

    /// `len` bytes at `offset`, read from the device itself.
    pub fn read_at(&self, offset: u64, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        run(Command::new("blockdev").arg("--flushbufs").arg(&self.path));
        let mut buf = vec![0u8; len];
        std::fs::File::open(&self.path)
            .unwrap()
            .read_exact_at(&mut buf, offset)
            .unwrap();
        buf
    }

    /// The partition nodes (`<dev>p1`, ...) after asking the kernel to add them.
    pub fn partitions(&self) -> Vec<String> {
        let _ = Command::new("partx").args(["-u", &self.path]).output();
        let _ = Command::new("partx").args(["-a", &self.path]).output();
        (1..=4)
            .map(|i| format!("{}p{i}", self.path))
            .filter(|p| Path::new(p).exists())
            .collect()
    }

    /// Changes one byte on the device, behind the writer's back.
    pub fn poke(&self, offset: u64) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, offset).unwrap();
        f.write_all_at(&[b[0] ^ 0xff], offset).unwrap();
        f.sync_all().unwrap();
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("partx").args(["-d", &self.path]).output();
        let _ = Command::new("losetup").args(["-d", &self.path]).output();
    }
}

/// `mib` MiB of bytes that no image contains by chance.
pub fn pattern(mib: u64) -> Vec<u8> {
    let block: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8 ^ 0x5a).collect();
    block.repeat(mib as usize)
}

/// A NixOS-shaped test image (MBR, FAT `FIRMWARE` at 8 MiB, ext4 `NIXOS_SD`
/// with real files) of `mib` MiB and its `.zst`, made once per test run by
/// `cargo xtask bench flash --make-image`.
pub struct TestImage {
    pub raw: PathBuf,
    pub zst: PathBuf,
}

pub fn nixos_image(mib: u64) -> TestImage {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("flash-image-fw-{mib}"));
    let raw = dir.join("nixos.img");
    let zst = dir.join("nixos.img.zst");
    if !zst.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = super::xtask(&super::repo_root())
            .args(["bench", "flash", "--make-image"])
            .arg(&raw)
            .args(["--size-mib", &mib.to_string(), "--fill", "0.7"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "making the test image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tmp = dir.join("nixos.img.zst.part");
        run(Command::new("zstd")
            .args(["-q", "-f", "-T0", "-3"])
            .arg(&raw)
            .arg("-o")
            .arg(&tmp));
        std::fs::rename(&tmp, &zst).unwrap();
    }
    TestImage { raw, zst }
}
