//! A NixOS-shaped SD image for tests and the benchmark, laid out like
//! nixpkgs' sd-image.nix: MBR; a 30 MiB FAT `FIRMWARE` partition (type 0x0b)
//! at 8 MiB; an ext4 `NIXOS_SD` partition after it, filled with real files
//! copied from this machine so it compresses like a real image.
//! Built without mounting anything (`mkfs.ext4 -d`, `mcopy`).

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::exec;

const MIB: u64 = 1 << 20;
pub const FIRMWARE_START: u64 = 8 * MIB;
pub const FIRMWARE_SIZE: u64 = 30 * MIB;
pub const ROOT_START: u64 = FIRMWARE_START + FIRMWARE_SIZE;
/// Bytes of files in `FIRMWARE`: nixpkgs' sd-image-aarch64.nix copies
/// the Pi firmware (bootcode.bin, fixup*.dat, start*.elf), two U-Boots, an
/// armstub and four device trees, roughly 22 MiB of the 30.
pub const FIRMWARE_FILES: u64 = 22 * MIB;

/// Makes a `total_mib` MiB image at `out`, its ext4 partition filled with
/// about `fill` (0..1) of real files.
pub fn make(out: &Path, total_mib: u64, fill: f64) -> Result<()> {
    for (p, pkg) in [
        ("mkfs.vfat", "dosfstools"),
        ("mcopy", "mtools"),
        ("mkfs.ext4", "e2fsprogs"),
        ("sfdisk", "fdisk"),
    ] {
        if !exec::have(p) {
            bail!("`{p}` is not installed: apt-get install {pkg}");
        }
    }
    let total = total_mib * MIB;
    if total < ROOT_START + 16 * MIB {
        bail!(
            "a test image needs at least {} MiB",
            (ROOT_START + 16 * MIB) / MIB
        );
    }
    let root_size = total - ROOT_START;
    let work = WorkDir(out.with_extension("parts"));
    let _ = fs::remove_dir_all(work.path());
    fs::create_dir_all(work.path())?;
    let sh = Shell::new()?;

    // FIRMWARE: like sd-image.nix, mkfs.vfat picks the FAT size; MBR type is 0x0b.
    let fw = work.path().join("firmware.img");
    File::create(&fw)?.set_len(FIRMWARE_SIZE)?;
    exec::read(cmd!(sh, "mkfs.vfat -i 2178694e -n FIRMWARE {fw}"))?;
    let fwfiles = work.path().join("fw");
    fs::create_dir(&fwfiles)?;
    fs::write(
        fwfiles.join("config.txt"),
        "[pi3]\nkernel=u-boot-rpi3.bin\n[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\n[all]\narm_64bit=1\nenable_uart=1\navoid_warnings=1\n",
    )?;
    // About what the Pi firmware, U-Boot and device trees take on a real
    // image (`FIRMWARE_FILES`), so its FAT keeps a realistic share free.
    let licenses = copy_files(Path::new("/usr/share/common-licenses"), &fwfiles, MIB)?;
    copy_files(Path::new("/usr/lib"), &fwfiles, FIRMWARE_FILES - licenses)?;
    let fw_entries: Vec<PathBuf> = fs::read_dir(&fwfiles)?
        .flatten()
        .map(|e| e.path())
        .collect();
    // `-D o`: a name that clashes in FAT's case-insensitive folders is overwritten, never asked about.
    exec::read(cmd!(sh, "mcopy -s -D o -i {fw} {fw_entries...} ::"))?;

    // NIXOS_SD: a store-like tree of real files.
    let tree = work.path().join("root");
    let store = tree.join("nix/store");
    fs::create_dir_all(&store)?;
    fs::create_dir_all(tree.join("boot/extlinux"))?;
    fs::write(
        tree.join("boot/extlinux/extlinux.conf"),
        "DEFAULT nixos-default\nLABEL nixos-default\n  LINUX ../nixos/kernel\n",
    )?;
    // Leave room for the journal and metadata.
    let budget = ((root_size as f64 * fill.clamp(0.0, 0.95)) as u64).saturating_sub(8 * MIB);
    let mut used = 0;
    for (i, src) in ["/usr/lib", "/usr/share", "/usr/bin"].iter().enumerate() {
        if used >= budget {
            break;
        }
        let dst = store.join(format!(
            "{i:032x}-{}",
            src.trim_start_matches('/').replace('/', "-")
        ));
        fs::create_dir_all(&dst)?;
        used += copy_files(Path::new(src), &dst, budget - used)?;
    }
    let rootfs = work.path().join("root.img");
    let blocks = (root_size / 4096).to_string();
    exec::read(cmd!(
        sh,
        "mkfs.ext4 -q -F -L NIXOS_SD -U 44444444-4444-4444-8888-888888888888 -b 4096 -d {tree} {rootfs} {blocks}"
    ))?;

    // The whole disk.
    let img = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    img.set_len(total)?;
    drop(img);
    let script = format!(
        "label: dos\nlabel-id: 0x2178694e\nstart={}, size={}, type=b\nstart={}, type=83, bootable\n",
        FIRMWARE_START / 512,
        FIRMWARE_SIZE / 512,
        ROOT_START / 512
    );
    exec::read(cmd!(sh, "sfdisk --quiet {out}").stdin(script))?;
    let mut img = fs::OpenOptions::new().write(true).open(out)?;
    for (part, at) in [(&fw, FIRMWARE_START), (&rootfs, ROOT_START)] {
        img.seek(SeekFrom::Start(at))?;
        std::io::copy(&mut File::open(part)?, &mut img)?;
    }
    img.flush()?;
    Ok(())
}

/// A scratch folder removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Copies regular files from `src` (recursively) into `dst` up to `budget`
/// bytes; returns the bytes copied. Unreadable entries are skipped.
fn copy_files(src: &Path, dst: &Path, budget: u64) -> Result<u64> {
    let mut used = 0;
    let mut stack = vec![(src.to_path_buf(), dst.to_path_buf())];
    while let Some((s, d)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&s) else { continue };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let Ok(ft) = e.file_type() else { continue };
            let to = d.join(e.file_name());
            if ft.is_dir() {
                if used + 4096 <= budget && fs::create_dir(&to).is_ok() {
                    used += 4096;
                    stack.push((e.path(), to));
                }
            } else if ft.is_file() {
                // What it takes on a 4 KiB-block filesystem.
                let len = e.metadata().map(|m| m.len()).unwrap_or(0).div_ceil(4096) * 4096;
                if used + len > budget {
                    continue;
                }
                if fs::copy(e.path(), &to).is_ok() {
                    used += len;
                }
            }
            if used >= budget {
                return Ok(used);
            }
        }
    }
    Ok(used)
}
