//! `cargo xtask bench flash`: the cached test image is the size asked for;
//! the card-speed mode runs every method through its throttle and leaves
//! no cgroup or loop device behind.

mod common;

use common::loopdev;

/// Runs `bench flash --size-mib MIB --runs 1 --mode fast --dir DIR`; its stdout and stderr.
fn bench(dir: &std::path::Path, mib: u64) -> (String, String) {
    bench_mode(dir, mib, "fast")
}

fn bench_mode(dir: &std::path::Path, mib: u64, mode: &str) -> (String, String) {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .args([
            "bench",
            "flash",
            "--runs",
            "1",
            "--size-mib",
            &mib.to_string(),
            "--mode",
            mode,
            "--dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn flash_bench_caches_one_image_per_size() {
    if !loopdev::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = bench(dir.path(), 56);
    assert!(stdout.contains("\n56 MiB image"), "{stdout}");
    assert!(stderr.contains("building a 56 MiB"), "{stderr}");
    // Another size: a new image, not the cached 56 MiB one.
    let (stdout, stderr) = bench(dir.path(), 64);
    assert!(stdout.contains("\n64 MiB image"), "{stdout}\n{stderr}");
    assert!(stderr.contains("building a 64 MiB"), "{stderr}");
    // The same size again: reused.
    let (stdout, stderr) = bench(dir.path(), 56);
    assert!(stdout.contains("\n56 MiB image"), "{stdout}");
    assert!(stderr.contains("reusing "), "{stderr}");
}

/// The bench's own cgroups and loop devices now.
fn leftovers() -> (Vec<String>, String) {
    let cgroups = std::fs::read_dir("/sys/fs/cgroup/blkio")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with("xtask-bench-"))
                .collect()
        })
        .unwrap_or_default();
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .unwrap();
    (cgroups, String::from_utf8_lossy(&loops.stdout).to_string())
}

#[test]
fn card_speed_mode_checks_every_method_and_cleans_up() {
    let missing = common::need_program("bmaptool", "bmap-tools").or_else(|| {
        (!std::path::Path::new("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device").exists())
            .then(|| "the cgroup v1 blkio controller (/sys/fs/cgroup/blkio)".to_string())
    });
    if !loopdev::available() || !common::prerequisite(missing) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr) = bench_mode(dir.path(), 64, "card");
    for want in [
        "card speed: 25 MB/s write, 80 MB/s read",
        "bmaptool copy --bmap (our map)",
        "cargo xtask flash (verified)",
        "flash (verified) ≤ 1.0× bmaptool --bmap",
        "within 10 % of its limit",
    ] {
        assert!(
            stdout.contains(want),
            "{want:?} missing:\n{stdout}\n{stderr}"
        );
    }
    // Every method left the image's mapped bytes on the card.
    assert_eq!(
        stderr.matches("mapped bytes equal ✓").count(),
        5,
        "{stderr}"
    );
    let (cgroups, loops) = leftovers();
    let mine = "flash-bench-";
    assert!(
        cgroups.iter().all(|c| !stderr.contains(c.as_str())),
        "the bench's cgroup is left: {cgroups:?}"
    );
    let dev = stderr
        .split("card-speed mode: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    assert!(
        !loops
            .lines()
            .any(|l| l.starts_with(&format!("{dev}:")) && l.contains(mine)),
        "{dev} is still attached: {loops}"
    );
}
