//! The card-speed mode of `cargo xtask bench flash`: the loop device
//! throttled to an SD card's speeds with the cgroup v1 blkio controller
//! (only the writing processes are moved into a child cgroup the bench
//! creates and removes), the figures against the physical limit, and a
//! verdict per goal.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::cardgoals::{Speeds, against_bmaptool, escaped, verdict};
use crate::image::bmap::Bmap;

const BLKIO: &str = "/sys/fs/cgroup/blkio";

/// A child blkio cgroup throttling one device; removed when dropped.
pub struct Throttle {
    dir: PathBuf,
    dev: (u32, u32),
}

impl Throttle {
    pub fn new(dev: &str, write_bps: u64, read_bps: u64) -> Result<Throttle> {
        if !std::path::Path::new(BLKIO)
            .join("blkio.throttle.write_bps_device")
            .exists()
        {
            bail!(
                "card-speed mode needs the cgroup v1 blkio controller at {BLKIO} (blkio.throttle.*): boot with it mounted, or run `bench flash --mode fast`"
            );
        }
        let rdev = std::fs::metadata(dev)?.rdev();
        let d = (libc::major(rdev), libc::minor(rdev));
        let dir = PathBuf::from(BLKIO).join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .with_context(|| format!("cannot create the cgroup {}", dir.display()))?;
        let t = Throttle { dir, dev: d };
        // Ctrl-C or SIGTERM: its processes stopped and the cgroup removed too.
        let d2 = t.dir.clone();
        crate::interrupt::on_exit(CLEANUP_KEY, move || remove_cgroup(&d2));
        for (file, bps) in [
            ("blkio.throttle.write_bps_device", write_bps),
            ("blkio.throttle.read_bps_device", read_bps),
        ] {
            let p = t.dir.join(file);
            std::fs::write(&p, format!("{}:{} {bps}", d.0, d.1))
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        Ok(t)
    }

    /// `cmd` started inside the cgroup: a shell moves itself in, then
    /// becomes the command, so every byte it writes is throttled.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let procs = self.dir.join("cgroup.procs");
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("echo $$ > '{}' && exec \"$@\"", procs.display()))
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        c
    }

    /// Bytes (read, written) on the device by processes in the cgroup.
    pub fn bytes(&self) -> (u64, u64) {
        let text = std::fs::read_to_string(self.dir.join("blkio.throttle.io_service_bytes"))
            .unwrap_or_default();
        service_bytes(&text, self.dev)
    }
}

const CLEANUP_KEY: &str = "bench-cgroup";

impl Drop for Throttle {
    fn drop(&mut self) {
        remove_cgroup(&self.dir);
        crate::interrupt::forget(CLEANUP_KEY);
    }
}

/// Stops the processes left in the bench's own cgroup (only its commands
/// were moved there), then removes it (rmdir of an empty cgroup).
fn remove_cgroup(dir: &Path) {
    for _ in 0..40 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .lines()
            .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill(2) of a process the bench started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!(
        "warning: cannot remove the cgroup {}: rmdir it",
        dir.display()
    );
}

/// (read, write) bytes of `dev` in a `blkio.throttle.io_service_bytes` text.
pub fn service_bytes(text: &str, dev: (u32, u32)) -> (u64, u64) {
    let key = format!("{}:{}", dev.0, dev.1);
    let mut rw = (0, 0);
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [k, op, n] = f[..]
            && k == key
        {
            let n = n.parse().unwrap_or(0);
            match op {
                "Read" => rw.0 = n,
                "Write" => rw.1 = n,
                _ => {}
            }
        }
    }
    rw
}

/// Bytes written to the block device `dev` (`/dev/loop3`) since boot, all
/// tasks together: the sectors-written field of `/sys/block/<name>/stat`.
pub fn device_written(dev: &str) -> Result<u64> {
    let name = dev.trim_start_matches("/dev/");
    let p = format!("/sys/block/{name}/stat");
    let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {p}"))?;
    stat_written(&text).with_context(|| format!("{p} has no sectors-written field"))
}

/// The bytes written in a `/sys/block/<name>/stat` line (its 7th field
/// counts 512-byte sectors, whatever the device's block size).
pub fn stat_written(text: &str) -> Option<u64> {
    text.split_whitespace()
        .nth(6)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|n| n * 512)
}

/// Whether the device's mapped ranges hold the image's bytes (their sha256).
pub fn mapped_equal(dev: &str, m: &Bmap) -> Result<bool> {
    let f = File::open(dev)?;
    crate::flash::sys::drop_cache(&f);
    let mut buf = vec![0u8; 4 << 20];
    for r in &m.ranges {
        let (a, b) = m.span(r);
        let mut h = Sha256::new();
        let mut off = a;
        while off < b {
            let n = ((b - off) as usize).min(buf.len());
            f.read_exact_at(&mut buf[..n], off)?;
            h.update(&buf[..n]);
            off += n as u64;
        }
        if format!("{:x}", h.finalize()) != r.sha256 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What the card-speed mode runs on.
pub struct Card<'a> {
    pub zst: &'a Path,
    pub bmap_file: &'a Path,
    pub map: &'a Bmap,
    pub dev: &'a str,
    pub exe: &'a Path,
    pub runs: usize,
    pub write_mbps: u64,
    pub read_mbps: u64,
}

struct Method {
    label: &'static str,
    cmd: Command,
    /// Whether it writes only the mapped bytes, and reads them back.
    mapped: bool,
    reads_back: bool,
}

impl Card<'_> {
    fn methods(&self) -> Vec<Method> {
        let (z, d, b) = (self.zst, self.dev, self.bmap_file);
        let sh = |script: String| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(script);
            c
        };
        let q = |p: &Path| format!("'{}'", p.display());
        let mut bm = Command::new("bmaptool");
        bm.args(["-q", "copy", "--bmap"]).arg(b).arg(z).arg(d);
        let mut nobm = Command::new("bmaptool");
        nobm.args(["-q", "copy", "--nobmap"]).arg(z).arg(d);
        let flash = |extra: &[&str]| {
            let mut c = Command::new(self.exe);
            c.arg("flash").arg(z).arg(d).arg("--yes").args(extra);
            c
        };
        vec![
            Method {
                label: "zstd -dc | dd bs=4M oflag=direct conv=fsync",
                // Both in the cgroup; only dd touches the throttled device.
                cmd: sh(format!(
                    "zstd -dcq {} | dd bs=4M iflag=fullblock oflag=direct conv=fsync status=none of={d}",
                    q(z)
                )),
                mapped: false,
                reads_back: false,
            },
            Method {
                label: "bmaptool copy --bmap (our map)",
                cmd: bm,
                mapped: true,
                reads_back: false,
            },
            Method {
                label: "bmaptool copy --nobmap",
                cmd: nobm,
                mapped: false,
                reads_back: false,
            },
            Method {
                label: "cargo xtask flash --no-verify",
                cmd: flash(&["--no-verify"]),
                mapped: true,
                reads_back: false,
            },
            Method {
                label: "cargo xtask flash (verified)",
                cmd: flash(&[]),
                mapped: true,
                reads_back: true,
            },
        ]
    }

    pub fn run(&self) -> Result<()> {
        let (w, r) = (self.write_mbps as f64 * 1e6, self.read_mbps as f64 * 1e6);
        let throttle = Throttle::new(self.dev, w as u64, r as u64)?;
        let mut methods = self.methods();
        let mapped = self.map.mapped_bytes() as f64;
        let whole = self.map.image_size as f64;
        eprintln!(
            "card-speed mode: {} throttled to {} MB/s write, {} MB/s read (cgroup {})",
            self.dev,
            self.write_mbps,
            self.read_mbps,
            throttle.dir.display()
        );
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); methods.len()];
        // Per method, the most (throttled, reaching the device) bytes of a run.
        let mut written: Vec<(u64, u64)> = vec![(0, 0); methods.len()];
        for run in 0..self.runs {
            for (i, m) in methods.iter_mut().enumerate() {
                blank(self.dev)?;
                let before = throttle.bytes();
                let dev_before = device_written(self.dev)?;
                let mut c = throttle.wrap(&m.cmd);
                let (t, _) = crate::cmd::bench::time(std::slice::from_mut(&mut c), false)
                    .with_context(|| format!("{} failed", m.label))?;
                let after = throttle.bytes();
                let on_device = device_written(self.dev)? - dev_before;
                let throttled = after.1 - before.1;
                written[i] = (written[i].0.max(throttled), written[i].1.max(on_device));
                if !mapped_equal(self.dev, self.map)? {
                    bail!(
                        "after `{}` the card's mapped bytes differ from the image: that method is broken here",
                        m.label
                    );
                }
                eprintln!(
                    "run {}: {}: {:.1} s, {} MB written to the device, {} MB of them through the throttle, {} MB read through it, mapped bytes equal ✓",
                    run + 1,
                    m.label,
                    t.as_secs_f64(),
                    on_device / 1_000_000,
                    throttled / 1_000_000,
                    (after.0 - before.0) / 1_000_000
                );
                times[i].push(t.as_secs_f64());
            }
        }
        let med: Vec<f64> = times
            .iter()
            .map(|v| {
                let mut v = v.clone();
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            })
            .collect();
        let limit = |m: &Method| {
            let bytes = if m.mapped { mapped } else { whole };
            bytes / w + if m.reads_back { mapped / r } else { 0.0 }
        };
        println!(
            "\ncard speed: {} MB/s write, {} MB/s read; image {} MiB, mapped {} MiB ({:.0} %); median of {} runs",
            self.write_mbps,
            self.read_mbps,
            self.map.image_size >> 20,
            self.map.mapped_bytes() >> 20,
            100.0 * mapped / whole,
            self.runs
        );
        println!(
            "{:<46} {:>8} {:>9} {:>8} {:>11} {:>10} {:>10}",
            "method", "seconds", "limit s", "× limit", "× bmaptool", "MB to dev", "throttled"
        );
        let bt = med[1];
        for (i, m) in methods.iter().enumerate() {
            println!(
                "{:<46} {:>8.1} {:>9.1} {:>8.2} {:>11.2} {:>10} {:>10}",
                m.label,
                med[i],
                limit(m),
                med[i] / limit(m),
                med[i] / bt,
                written[i].1 / 1_000_000,
                written[i].0 / 1_000_000
            );
        }
        println!(
            "(MB to dev: written to the device by anyone, /sys/block/<dev>/stat; throttled: by the method's own tasks, through the blkio throttle)"
        );
        for (i, m) in methods.iter().enumerate() {
            let (throttled, on_device) = written[i];
            if let Some(note) = escaped(on_device, throttled, w) {
                println!("  {}: {note}", m.label);
            }
        }
        let (nv, v) = (med[3], med[4]);
        let card = Speeds {
            mapped,
            write: w,
            read: r,
        };
        println!("goals:");
        for (goal, got, limit, ratio, reads) in [
            (
                "flash (verified) ≤ 1.0× bmaptool --bmap",
                v,
                limit(&methods[4]),
                1.0,
                true,
            ),
            (
                "flash --no-verify ≤ 0.8× bmaptool --bmap",
                nv,
                limit(&methods[3]),
                0.8,
                false,
            ),
        ] {
            let (word, why) = against_bmaptool(got, bt, limit, ratio, reads, &card);
            println!("  {goal}: {:.2}× {word}: {why}", got / bt);
        }
        for (goal, got, limit) in [
            ("flash (verified)", v, limit(&methods[4])),
            ("flash --no-verify", nv, limit(&methods[3])),
        ] {
            println!(
                "  {goal} within 10 % of its limit ({limit:.1} s): {:.2}× {}",
                got / limit,
                verdict(got, limit, 1.1)
            );
        }
        Ok(())
    }
}

/// Zeroes the whole device (not throttled), so a method that writes nothing
/// cannot pass the mapped-bytes check on what the previous one wrote.
fn blank(dev: &str) -> Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(dev)?;
    let size = crate::flash::sys::device_size(&f)?;
    let zeros = vec![0u8; 4 << 20];
    let mut off = 0;
    while off < size {
        let n = ((size - off) as usize).min(zeros.len());
        f.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    f.sync_all()?;
    crate::flash::sys::drop_cache(&f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_bytes_of_one_device() {
        let t = "7:3 Read 4096\n7:3 Write 1048576\n7:3 Sync 0\n7:30 Write 9\nTotal 1052672\n";
        assert_eq!(service_bytes(t, (7, 3)), (4096, 1048576));
        assert_eq!(service_bytes(t, (7, 4)), (0, 0));
    }

    #[test]
    fn written_bytes_from_sysfs_stat() {
        let t = "    1234        0    98765      100     4096        0   204800     5000        0     300     5100        0        0        0        0        0        0\n";
        assert_eq!(stat_written(t), Some(204800 * 512));
        assert_eq!(stat_written("1 2 3"), None);
    }
}
