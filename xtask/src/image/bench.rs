//! `cargo xtask bench sd`: what assembling the card image natively saves.
//! Makes an ext4 image from a tree of real files with `mkfs.ext4 -d`, then
//! compresses it with `zstd`, once with this machine's tools and once with
//! Debian's arm64 builds of the same tools under `qemu-aarch64-static` (as
//! an aarch64 image derivation runs them on an x86_64 workstation), and
//! prints both times and the ratio.
//!
//! The arm64 tools come from a Debian root made once with `debootstrap
//! --arch=arm64 --foreign` (its packages unpacked with `dpkg-deb -x`, so
//! nothing runs or is installed in the machine's own dpkg), cached in
//! `<target>/tmp/sd-bench/` under a file lock, like the tests' roots.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

/// Where the tree, the images and the arm64 root live.
pub fn default_dir(root: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("tmp/sd-bench")
}

pub fn run(dir: &Path, tree_mib: u64) -> Result<()> {
    if !crate::flash::sys::is_root() {
        bail!(
            "the benchmark makes a Debian arm64 root with debootstrap: run it as root (sudo -E cargo xtask bench sd)"
        );
    }
    for (p, pkg) in [
        ("mkfs.ext4", "e2fsprogs"),
        ("zstd", "zstd"),
        ("qemu-aarch64-static", "qemu-user-static"),
        ("debootstrap", "debootstrap"),
        ("dpkg-deb", "dpkg"),
        ("unshare", "util-linux"),
    ] {
        if !crate::exec::have(p) {
            bail!("`{p}` is not installed: apt-get install {pkg}");
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = lock(dir)?;
    let arm = arm64_root(dir)?;
    // The tree and the images live inside the arm64 root, so both runs
    // read the same files by the same paths (`qemu -L ROOT` finds them).
    let work = arm.join("bench");
    // One tree per size asked (the 1536 MiB one was made as `tree`).
    let tree = if tree_mib == 1536 {
        work.join("tree")
    } else {
        work.join(format!("tree-{tree_mib}"))
    };
    let size = tree_of_real_files(&tree, tree_mib << 20)?;
    let load_before = loadavg();

    let native = Tools {
        mkfs: vec!["mkfs.ext4".into()],
        zstd: vec!["zstd".into()],
    };
    let qemu = |tool: &str| {
        vec![
            "qemu-aarch64-static".to_string(),
            "-L".into(),
            arm.display().to_string(),
            arm.join(tool).display().to_string(),
        ]
    };
    let emulated = Tools {
        mkfs: qemu("sbin/mkfs.ext4"),
        zstd: qemu("usr/bin/zstd"),
    };
    check_arm64(&emulated)?;
    let c0 = children_cpu();
    let n = time_both(&native, &tree, &work, size, "native x86_64")?;
    let c1 = children_cpu();
    let e = time_both(
        &emulated,
        &tree,
        &work,
        size,
        "aarch64 under qemu-aarch64-static",
    )?;
    let c2 = children_cpu();
    drop(lock);
    println!();
    println!("{}", report(size, n, e, &load_before, &loadavg()));
    let (cn, ce) = ((c1 - c0).as_secs_f64(), (c2 - c1).as_secs_f64());
    println!(
        "cpu time (user+sys, both steps): native {cn:.1} s, under QEMU {ce:.1} s, ratio {:.1}x (wall-clock times move with the load; cpu times hardly do)",
        ce / cn.max(0.001)
    );
    Ok(())
}

struct Tools {
    mkfs: Vec<String>,
    zstd: Vec<String>,
}

/// Times `mkfs.ext4 -d` and `zstd` with `tools`; (mkfs, zstd).
fn time_both(
    tools: &Tools,
    tree: &Path,
    work: &Path,
    size: u64,
    what: &str,
) -> Result<(Duration, Duration)> {
    let img = work.join("root.img");
    let zst = work.join("root.img.zst");
    let _ = std::fs::remove_file(&img);
    let _ = std::fs::remove_file(&zst);
    // Room as make-ext4-fs.nix leaves it before resize2fs -M: the tree
    // plus a fifth, and inodes for many small files.
    let bytes = (size + size / 5 + (64 << 20)) / 4096 * 4096;
    std::fs::File::create(&img)?.set_len(bytes)?;
    eprintln!("{what}:");
    let mkfs = timed(
        Command::new(&tools.mkfs[0])
            .args(&tools.mkfs[1..])
            .args(["-q", "-F", "-t", "ext4", "-T", "default", "-i", "8192"])
            .args(["-L", "NIXOS_SD", "-d"])
            .arg(tree)
            .arg(&img),
    )?;
    let zstd = timed(
        Command::new(&tools.zstd[0])
            .args(&tools.zstd[1..])
            .args(["-q", "-f", "-T0", "-o"])
            .arg(&zst)
            .arg(&img),
    )?;
    let _ = std::fs::remove_file(&img);
    let _ = std::fs::remove_file(&zst);
    Ok((mkfs, zstd))
}

/// Runs a command (echoed before, and again when it fails).
fn run_std(cmd: &mut Command) -> Result<()> {
    timed(cmd).map(|_| ())
}

/// Runs a command (echoed), returns how long it took.
fn timed(cmd: &mut Command) -> Result<Duration> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("$ {shown}");
    let t = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        eprintln!("$ {shown}  # failed ({status})");
        bail!("{shown} failed ({status})");
    }
    let d = t.elapsed();
    eprintln!(
        "  {:.1} s (cpu time of all commands so far {:.1} s)",
        d.as_secs_f64(),
        children_cpu().as_secs_f64()
    );
    Ok(d)
}

/// User plus system CPU time of the finished child processes: unlike the
/// wall-clock time, it hardly moves with the machine's load.
pub fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut r) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(r.ru_utime) + tv(r.ru_stime)
}

/// The arm64 tools run and are aarch64 (`zstd --version` under QEMU).
fn check_arm64(t: &Tools) -> Result<()> {
    let out = Command::new(&t.zstd[0])
        .args(&t.zstd[1..])
        .arg("--version")
        .output()
        .context("cannot run qemu-aarch64-static")?;
    if !out.status.success() {
        bail!(
            "the arm64 zstd does not run under qemu-aarch64-static: {}\nremove the cached root ({}) to make it again",
            String::from_utf8_lossy(&out.stderr).trim(),
            t.zstd[2]
        );
    }
    Ok(())
}

/// Holds an exclusive lock on `dir/.lock` while the value lives.
fn lock(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(dir.join(".lock"))?;
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("cannot lock {}", dir.join(".lock").display());
    }
    Ok(f)
}

/// The cached Debian arm64 root with e2fsprogs and zstd unpacked.
fn arm64_root(dir: &Path) -> Result<PathBuf> {
    let root = dir.join(format!("arm64-{SUITE}"));
    if root.join(".ready").exists() {
        return Ok(root);
    }
    let tmp = dir.join(format!("arm64-{SUITE}.tmp"));
    let mirror = std::env::var("FAKEPI_MIRROR").unwrap_or_else(|_| MIRROR.into());
    // `.stage1`: debootstrap's first stage finished (an interrupted one is redone).
    if !tmp.join(".stage1").exists() {
        let _ = std::fs::remove_dir_all(&tmp);
        eprintln!(
            "making the Debian arm64 root (once, a few minutes) in {}",
            tmp.display()
        );
        run_std(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "debootstrap"])
                .args(["--arch=arm64", "--foreign", "--variant=minbase"])
                .args(["--include=e2fsprogs,zstd", SUITE])
                .arg(&tmp)
                .arg(&mirror),
        )?;
        std::fs::write(tmp.join(".stage1"), "")?;
    }
    // The first stage leaves the packages in the archive folder: unpack
    // them all (files only; nothing is configured, nothing registered).
    let archives = tmp.join("var/cache/apt/archives");
    for e in std::fs::read_dir(&archives)
        .with_context(|| format!("debootstrap left no {}", archives.display()))?
    {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "deb") {
            run_std(Command::new("dpkg-deb").arg("-x").arg(&p).arg(&tmp))?;
        }
    }
    std::fs::write(tmp.join(".ready"), "")?;
    std::fs::rename(&tmp, &root)?;
    Ok(root)
}

/// A tree of about `bytes` of real files: copies of /usr's folders, made
/// once. Returns its size in bytes.
fn tree_of_real_files(tree: &Path, bytes: u64) -> Result<u64> {
    let done = tree.with_extension("ready");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(tree);
        std::fs::create_dir_all(tree)?;
        // Folders whole while they fit, else what is inside them, so the
        // tree ends within a few MiB of the size asked for.
        let mut todo: Vec<PathBuf> = [
            "/usr/sbin",
            "/usr/libexec",
            "/usr/lib",
            "/usr/bin",
            "/usr/share",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let mut size = 0;
        while let Some(s) = todo.pop() {
            if size >= bytes {
                break;
            }
            let meta = std::fs::symlink_metadata(&s)?;
            let need = if meta.is_dir() { du(&s)? } else { meta.len() };
            if size + need > bytes + (16 << 20) {
                if meta.is_dir() {
                    let mut v: Vec<PathBuf> = std::fs::read_dir(&s)?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .collect();
                    v.sort();
                    v.reverse();
                    todo.extend(v);
                }
                continue;
            }
            let to = tree.join(s.strip_prefix("/").unwrap_or(&s));
            std::fs::create_dir_all(to.parent().unwrap())?;
            // -a: links, modes, times as they are; -x: no other file systems.
            run_std(Command::new("cp").arg("-a").arg("-x").arg(&s).arg(&to))?;
            size += need;
        }
        std::fs::write(&done, size.to_string())?;
    }
    du(tree)
}

/// Apparent size of a folder in bytes (`du -sb`).
fn du(dir: &Path) -> Result<u64> {
    let out = Command::new("du").arg("-sb").arg(dir).output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du printed no size")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The figures and the verdict.
fn report(
    size: u64,
    (nm, nz): (Duration, Duration),
    (em, ez): (Duration, Duration),
    load_before: &str,
    load_after: &str,
) -> String {
    let s = |d: Duration| d.as_secs_f64();
    let ratio = |e: Duration, n: Duration| s(e) / s(n).max(0.001);
    let (nt, et) = (nm + nz, em + ez);
    format!(
        "tree: {:.0} MiB of real files; load average {load_before} before, {load_after} after\n\
         step              native x86_64   aarch64 under QEMU   ratio\n\
         mkfs.ext4 -d      {:>10.1} s   {:>15.1} s   {:>5.1}x\n\
         zstd -T0          {:>10.1} s   {:>15.1} s   {:>5.1}x\n\
         both              {:>10.1} s   {:>15.1} s   {:>5.1}x\n\
         verdict: assembling the image natively saves {:.0} s ({:.0}%) of these two steps for this tree",
        size as f64 / (1 << 20) as f64,
        s(nm),
        s(em),
        ratio(em, nm),
        s(nz),
        s(ez),
        ratio(ez, nz),
        s(nt),
        s(et),
        ratio(et, nt),
        s(et) - s(nt),
        100.0 * (s(et) - s(nt)) / s(et).max(0.001)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_gives_times_ratios_and_the_saving() {
        let r = report(
            1536 << 20,
            (Duration::from_secs(10), Duration::from_secs(5)),
            (Duration::from_secs(80), Duration::from_secs(40)),
            "1.00 1.00 1.00",
            "2.00 1.50 1.20",
        );
        assert!(
            r.starts_with("tree: 1536 MiB of real files; load average 1.00 1.00 1.00 before"),
            "{r}"
        );
        assert!(
            r.contains("mkfs.ext4 -d            10.0 s              80.0 s     8.0x"),
            "{r}"
        );
        assert!(
            r.contains("both                    15.0 s             120.0 s     8.0x"),
            "{r}"
        );
        assert!(
            r.ends_with("saves 105 s (88%) of these two steps for this tree"),
            "{r}"
        );
    }
}
