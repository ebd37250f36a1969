//! `cargo xtask bench flash`: times `flash` against `zstd -dc | dd`, bmaptool
//! and a plain decode, on a loop device, and prints medians, ratios and peak memory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::exec;
use crate::flash::{sys, testimage};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Time writing a NixOS-shaped image onto a loop device (needs root)
    Flash(FlashArgs),
    /// deploy --all versus one host after another, status, an unreachable host, on fake Pis (needs root)
    Deploy {
        /// Number of fake Pis
        #[arg(long, default_value_t = 8)]
        hosts: usize,
    },
    /// mkfs.ext4 -d and zstd of a tree of real files, natively and under qemu-aarch64-static (needs root)
    Sd {
        /// Size of the tree of real files (copies of /usr) in MiB
        #[arg(long, default_value_t = 1536)]
        tree_mib: u64,
        /// Folder for the tree, the images and the cached arm64 root [default: <target>/tmp/sd-bench]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// logs -n 100, exec --all -- true and status across fake Pis (needs root)
    Fleet {
        /// Number of fake Pis
        #[arg(long, default_value_t = 8)]
        hosts: usize,
    },
}

#[derive(clap::Args)]
struct FlashArgs {
    /// Image size in MiB
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Runs of each method (the median is shown)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Folder for the image's .zst, reused by later runs [default: /var/tmp/flash-bench]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Back the loop device with a file on disk (in --dir) instead of tmpfs (/dev/shm)
    #[arg(long)]
    disk_backed: bool,
    /// Only build the NixOS-shaped test image at PATH and stop
    #[arg(long, value_name = "PATH")]
    make_image: Option<PathBuf>,
    /// The share of the ext4 partition filled with files (0..1)
    #[arg(long, default_value_t = 0.85)]
    fill: f64,
    /// fast: the loop device at memory speed; card: throttled to an SD card's speeds (cgroup v1 blkio); both
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    mode: Mode,
    /// Card-speed mode: the card's write speed, MB/s
    #[arg(long, default_value_t = 25)]
    write_mbps: u64,
    /// Card-speed mode: the card's read speed, MB/s
    #[arg(long, default_value_t = 80)]
    read_mbps: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Fast,
    Card,
    Both,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let a = match args.what {
        What::Flash(a) => a,
        What::Deploy { hosts } => return crate::deploy::bench::run(root, hosts),
        What::Sd { tree_mib, dir } => {
            let dir = dir.unwrap_or_else(|| crate::image::bench::default_dir(root));
            return crate::image::bench::run(&dir, tree_mib);
        }
        What::Fleet { hosts } => return crate::fleet_bench::run(root, hosts),
    };
    if let Some(p) = &a.make_image {
        testimage::make(p, a.size_mib, a.fill)?;
        println!("{}", p.display());
        return Ok(());
    }
    if !sys::is_root() {
        bail!("the benchmark uses a loop device: run it as root (sudo -E cargo xtask bench flash)");
    }
    for (p, pkg) in [
        ("zstd", "zstd"),
        ("losetup", "util-linux"),
        ("dd", "coreutils"),
    ] {
        if !exec::have(p) {
            bail!("`{p}` is not installed: apt-get install {pkg}");
        }
    }
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => PathBuf::from("/var/tmp/flash-bench"),
    };
    std::fs::create_dir_all(&dir)?;
    // One cached image per size and fill: another --size-mib never reuses it.
    let name = cached_name(a.size_mib, a.fill);
    let img = dir.join(format!("{name}.img"));
    let zst = dir.join(format!("{name}.img.zst"));
    // Found beside the .zst by `flash` (bmaptool's names), like sd's.
    let bmap_file = dir.join(format!("{name}.img.bmap"));
    let sh = Shell::new()?;
    // A cached file of another size (cut short, or edited) is made again.
    let cached =
        zst.exists() && bmap_file.exists() && zstd_size(&zst).ok() == Some(a.size_mib << 20);
    if !cached {
        eprintln!(
            "building a {} MiB NixOS-shaped image in {}",
            a.size_mib,
            dir.display()
        );
        testimage::make(&img, a.size_mib, a.fill)?;
        crate::image::bmap::write(&img, &bmap_file)?;
        exec::run(cmd!(sh, "zstd -q -f -T0 -3 --rm {img} -o {zst}"))?;
    } else {
        eprintln!("reusing {}", zst.display());
    }
    let raw = zstd_size(&zst)?;
    let comp = std::fs::metadata(&zst)?.len();

    let backing = if a.disk_backed {
        dir.join("card.img")
    } else {
        PathBuf::from(format!("/dev/shm/flash-bench-{}.img", std::process::id()))
    };
    let mut cleanup = Cleanup {
        file: backing.clone(),
        dev: None,
    };
    // Allocated up front, so no method pays for tmpfs or disk allocation.
    let f = File::create(&backing)?;
    f.set_len(raw + (64 << 20))?;
    if unsafe {
        libc::posix_fallocate(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
            (raw + (64 << 20)) as libc::off_t,
        )
    } != 0
    {
        bail!("cannot allocate {}", backing.display());
    }
    drop(f);
    let dev = exec::read(cmd!(sh, "losetup --find --show {backing}"))?;
    cleanup.dev = Some(dev.clone());
    // Ctrl-C or SIGTERM: the loop device detached and its file removed too.
    let (d2, f2) = (dev.clone(), backing.clone());
    crate::interrupt::on_exit("bench-loop", move || {
        // The writing commands (stopped by the interrupt handler) may hold it a moment.
        for _ in 0..40 {
            let ok = Command::new("losetup").arg("-d").arg(&d2).status();
            if ok.is_ok_and(|s| s.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(&f2);
    });
    let exe = std::env::current_exe()?;
    let bmap = exec::have("bmaptool");
    let map = crate::image::bmap::load(&bmap_file)?;
    let root_mapped = mapped_in(&map, testimage::ROOT_START, raw);
    let fw_end = testimage::FIRMWARE_START + testimage::FIRMWARE_SIZE;
    eprintln!(
        "block map {}: {} MiB of {} MiB mapped; the ext4 root is {:.0} % full, the FAT partition {:.0} %",
        bmap_file.display(),
        map.mapped_bytes() >> 20,
        raw >> 20,
        100.0 * root_mapped as f64 / (raw - testimage::ROOT_START) as f64,
        100.0 * mapped_in(&map, testimage::FIRMWARE_START, fw_end) as f64
            / testimage::FIRMWARE_SIZE as f64
    );
    if a.mode != Mode::Fast {
        if !bmap {
            bail!("card-speed mode compares with bmaptool: apt-get install bmap-tools");
        }
        let card = crate::flash::cardbench::Card {
            zst: &zst,
            bmap_file: &bmap_file,
            map: &map,
            dev: &dev,
            exe: &exe,
            runs: a.runs,
            write_mbps: a.write_mbps,
            read_mbps: a.read_mbps,
        };
        card.run()?;
        if a.mode == Mode::Card {
            return Ok(());
        }
    }
    eprintln!(
        "image {} MiB raw, {} MiB zstd ({:.1}×); loop device {dev} backed by {} ({})",
        raw >> 20,
        comp >> 20,
        raw as f64 / comp as f64,
        backing.display(),
        if a.disk_backed {
            "a file on disk"
        } else {
            "tmpfs"
        }
    );

    type Run = Box<dyn Fn() -> Result<(Duration, u64)>>;
    let z = zst.clone();
    let d = dev.clone();
    let mut methods: Vec<(&str, Run)> = vec![(
        "zstd -dc > /dev/null (decode only)",
        Box::new(move || {
            let mut zstd = Command::new("zstd");
            zstd.arg("-dcq").arg(&z);
            time(&mut [zstd], true)
        }),
    )];
    let (z, d2) = (zst.clone(), d.clone());
    methods.push((
        "zstd -dc | dd bs=4M oflag=direct conv=fsync",
        Box::new(move || {
            let mut zstd = Command::new("zstd");
            zstd.arg("-dcq").arg(&z);
            let mut dd = Command::new("dd");
            dd.args([
                "bs=4M",
                "iflag=fullblock",
                "oflag=direct",
                "conv=fsync",
                "status=none",
            ])
            .arg(format!("of={d2}"));
            time(&mut [zstd, dd], false)
        }),
    ));
    if bmap {
        let (z, d2) = (zst.clone(), d.clone());
        methods.push((
            "bmaptool copy --nobmap",
            Box::new(move || {
                let mut b = Command::new("bmaptool");
                b.args(["-q", "copy", "--nobmap"]).arg(&z).arg(&d2);
                time(&mut [b], false)
            }),
        ));
    }
    for (label, extra) in [
        ("cargo xtask flash --no-verify", Some("--no-verify")),
        ("cargo xtask flash (verified)", None),
    ] {
        let (z, d2, e) = (zst.clone(), d.clone(), exe.clone());
        methods.push((
            label,
            Box::new(move || {
                let mut c = Command::new(&e);
                c.arg("flash").arg(&z).arg(&d2).arg("--yes").args(extra);
                time(&mut [c], false)
            }),
        ));
    }

    let mut results: Vec<Vec<(Duration, u64)>> = vec![Vec::new(); methods.len()];
    for r in 0..a.runs {
        for (i, (label, f)) in methods.iter().enumerate() {
            wipe(&dev)?;
            let res = f().with_context(|| format!("{label} failed"))?;
            eprintln!("run {}: {label}: {:.2} s", r + 1, res.0.as_secs_f64());
            results[i].push(res);
        }
    }
    let medians: Vec<(f64, u64)> = results
        .iter()
        .map(|v| {
            let mut t: Vec<f64> = v.iter().map(|x| x.0.as_secs_f64()).collect();
            t.sort_by(|a, b| a.partial_cmp(b).unwrap());
            (t[t.len() / 2], v.iter().map(|x| x.1).max().unwrap_or(0))
        })
        .collect();
    let dd = medians[1].0;
    let decode = medians[0].0;
    println!(
        "\n{} MiB image ({} MiB zstd), median of {} runs, loop device on {}",
        raw >> 20,
        comp >> 20,
        a.runs,
        if a.disk_backed { "disk" } else { "tmpfs" }
    );
    println!(
        "{:<46} {:>8} {:>10} {:>8} {:>9} {:>9}",
        "method", "seconds", "MB/s", "× dd", "× decode", "peak MiB"
    );
    for ((label, _), (t, rss)) in methods.iter().zip(&medians) {
        println!(
            "{label:<46} {t:>8.2} {:>10.0} {:>8.2} {:>9.2} {:>9.1}",
            raw as f64 / t / 1e6,
            t / dd,
            t / decode,
            *rss as f64 / 1024.0
        );
    }
    println!("goals: flash ≤ 0.70× dd, flash+verify ≤ 1.00× dd, peak memory ≤ 64 MiB");
    Ok(())
}

/// Runs the commands as a pipeline; returns the wall time and the largest
/// peak RSS (kB) among them.
pub fn time(cmds: &mut [Command], to_null: bool) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let mut pids = Vec::new();
    let mut prev: Option<std::process::ChildStdout> = None;
    let n = cmds.len();
    for (i, c) in cmds.iter_mut().enumerate() {
        if let Some(out) = prev.take() {
            c.stdin(out);
        }
        if i + 1 < n {
            c.stdout(Stdio::piped());
        } else if to_null {
            c.stdout(File::create("/dev/null")?);
        } else {
            c.stdout(Stdio::null());
        }
        c.stderr(Stdio::null());
        let mut child = c
            .spawn()
            .with_context(|| format!("cannot run {:?}", c.get_program()))?;
        prev = child.stdout.take();
        pids.push(child.id());
    }
    let mut peak = 0;
    let mut ok = true;
    for pid in pids {
        let (good, rss) = sys::wait_with_rusage(pid)?;
        ok &= good;
        peak = peak.max(rss);
    }
    if !ok {
        bail!("a command failed");
    }
    Ok((start.elapsed(), peak))
}

/// Zeroes the device's first MiB, so every method starts from a blank card.
fn wipe(dev: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(dev)?;
    std::io::Write::write_all(&mut f, &vec![0u8; 1 << 20])?;
    f.sync_all()?;
    Ok(())
}

/// The cached image's file name, without extension:
/// `nixos-shaped-1024MiB-fill0.85-fw22`, with the MiB of files in its
/// `FIRMWARE` partition (an image made before they were there is not reused).
fn cached_name(size_mib: u64, fill: f64) -> String {
    format!(
        "nixos-shaped-{size_mib}MiB-fill{fill}-fw{}",
        testimage::FIRMWARE_FILES >> 20
    )
}

fn zstd_size(zst: &Path) -> Result<u64> {
    let f = std::io::BufReader::new(File::open(zst)?);
    let len = std::fs::metadata(zst)?.len();
    crate::flash::image::zstd_content_size(f, len)
        .map_err(anyhow::Error::msg)?
        .context("the .zst does not record its size")
}

/// The mapped bytes of `m` inside `[a, b)`.
fn mapped_in(m: &crate::image::bmap::Bmap, a: u64, b: u64) -> u64 {
    m.ranges
        .iter()
        .map(|r| {
            let (x, y) = m.span(r);
            y.min(b).saturating_sub(x.max(a))
        })
        .sum()
}

/// Detaches the loop device and removes its backing file.
struct Cleanup {
    file: PathBuf,
    dev: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        crate::interrupt::forget("bench-loop");
        if let Some(d) = &self.dev {
            let _ = Command::new("losetup").arg("-d").arg(d).status();
        }
        let _ = std::fs::remove_file(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_keyed_by_size_and_fill() {
        assert_eq!(
            cached_name(1024, 0.85),
            "nixos-shaped-1024MiB-fill0.85-fw22"
        );
        assert_ne!(cached_name(64, 0.85), cached_name(128, 0.85));
        assert_ne!(cached_name(64, 0.85), cached_name(64, 0.5));
    }
}
