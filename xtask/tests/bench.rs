//! `cargo xtask bench flash`: the cached test image is the size asked for.

mod common;

use common::loopdev;

/// Runs `bench flash --size-mib MIB --runs 1 --dir DIR`; its stdout and stderr.
fn bench(dir: &std::path::Path, mib: u64) -> (String, String) {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .args([
            "bench",
            "flash",
            "--runs",
            "1",
            "--size-mib",
            &mib.to_string(),
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
