//! The firmware partition through a whole deploy cycle on a fake Pi (real
//! systemd, sshd, Nix; tests/common/fakepi.rs): its system links a
//! firmware folder and `pi-firmware-sync` (modules/hardware/firmware-sync.sh
//! on a FAT image inside the Pi, real mtools), and its
//! switch-to-configuration syncs it for `switch` and `boot` as the NixOS
//! module's boot loader installer does. `deploy` writes the new set,
//! `rollback` brings the old one back, `status` says whether the partition
//! matches the running system and which releases it carries, and a host
//! that does not manage its partition says so.

mod common;

use std::path::Path;
use std::process::Command;

use common::fakepi::{self, Fleet, Spec};

fn base() -> Option<std::path::PathBuf> {
    let missing = fakepi::missing()
        .or_else(|| common::need_program("mkfs.vfat", "dosfstools"))
        .or_else(|| common::need_program("mcopy", "mtools"));
    if !common::prerequisite(missing) {
        return None;
    }
    match fakepi::base(Path::new(env!("CARGO_TARGET_TMPDIR"))) {
        Ok(b) => Some(b),
        Err(e) => {
            common::prerequisite(Some(format!("cannot make the fake Pi root: {e}")));
            None
        }
    }
}

fn xtask(f: &Fleet, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = common::xtask(&f.repo());
    for (k, v) in f.env() {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    eprintln!("--- cargo xtask {}\n{o}\n{e}", args.join(" "));
    (out.status.code(), o, e)
}

fn firmware(f: &Fleet, host: &str) -> serde_json::Value {
    let (_, out, _) = xtask(f, &["status", host, "--json", "--no-eval"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["firmware"].clone()
}

fn write_set(dir: &Path, release: &str, uboot: &str) {
    std::fs::create_dir_all(dir.join("overlays")).unwrap();
    let files = [
        (
            "config.txt",
            format!(
                "[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narmstub=armstub8-gic.bin\n\n[all]\narm_64bit=1\n# {release}\n"
            ),
        ),
        ("start4.elf", format!("start4 {release}\n").repeat(2000)),
        ("fixup4.dat", format!("fixup4 {release}\n").repeat(500)),
        ("u-boot-rpi4.bin", format!("u-boot {uboot}\n").repeat(3000)),
        ("armstub8-gic.bin", "armstub\n".repeat(100)),
        ("bcm2711-rpi-4-b.dtb", "dtb\n".repeat(1000)),
        ("overlays/disable-bt.dtbo", "dtbo\n".repeat(50)),
        (
            "pi-nixos-firmware.txt",
            format!("raspberrypifw={release}\nuboot={uboot}\n"),
        ),
    ];
    for (p, c) in files {
        std::fs::write(dir.join(p), c).unwrap();
    }
}

/// What a fake Pi needs for its partition: Debian's mtools (one binary,
/// called by its tool names) and a FAT image labelled FIRMWARE.
fn give_partition(f: &Fleet, host: &str, image: &Path) {
    let mtools = std::fs::read("/usr/bin/mtools").unwrap();
    let mut ssh = Command::new("ssh");
    let p = f.pi(host).port;
    ssh.args(["-F"])
        .arg(f.work().join("ssh_config"))
        .args(["-o", "BatchMode=yes", "-p", &p.to_string(), "root@127.0.0.1"])
        .arg("cat > /usr/local/bin/mtools && chmod +x /usr/local/bin/mtools && cd /usr/local/bin && for t in mcopy mdir minfo mmove mmd mdel mdeltree mtype; do ln -sf mtools $t; done")
        .stdin(std::process::Stdio::piped());
    let mut child = ssh.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &mtools).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let img = std::fs::read(image).unwrap();
    let mut child = Command::new("ssh")
        .args(["-F"])
        .arg(f.work().join("ssh_config"))
        .args([
            "-o",
            "BatchMode=yes",
            "-p",
            &p.to_string(),
            "root@127.0.0.1",
        ])
        .arg("mkdir -p /var/lib/fakepi && cat > /var/lib/fakepi/firmware.img")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &img).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn deploy_writes_the_firmware_rollback_brings_it_back_status_tells() {
    let Some(base) = base() else { return };
    let mut f = Fleet::new(&base, &["pi-fw", "pi-generic"]);
    let repo = f.repo();
    write_set(&repo.join("firmware/1"), "1.20250101", "2025.01");
    write_set(&repo.join("firmware/2"), "1.20250601", "2025.04");
    std::fs::create_dir_all(repo.join("modules/hardware")).unwrap();
    common::copy(
        &common::repo_root().join("modules/hardware/firmware-sync.sh"),
        &repo.join("modules/hardware/firmware-sync.sh"),
    );
    f.set("pi-fw", &Spec::version("1").firmware("1"));
    // An empty FAT partition, as mkfs.vfat leaves it.
    let image = repo.join("firmware.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let ok = Command::new("mkfs.vfat")
        .args(["-n", "FIRMWARE"])
        .arg(&image)
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .status()
        .unwrap();
    assert!(ok.success());
    for n in ["pi-fw", "pi-generic"] {
        f.start(n);
    }
    for n in ["pi-fw", "pi-generic"] {
        f.wait_ssh(n);
    }
    give_partition(&f, "pi-fw", &image);
    // The first install (as the card's first boot) writes release 1.
    f.install("pi-fw");
    f.install("pi-generic");

    let fw = firmware(&f, "pi-fw");
    assert_eq!(fw["state"], "matches", "{fw}");
    assert_eq!(fw["versions"]["raspberrypifw"], "1.20250101");
    assert_eq!(fw["versions"]["uboot"], "2025.01");
    let generic = firmware(&f, "pi-generic");
    assert_eq!(generic["state"], "not managed", "{generic}");
    let (_, table, _) = xtask(&f, &["status", "--no-eval"]);
    assert!(table.contains("FIRMWARE"), "{table}");
    assert!(
        table.contains("yes (raspberrypifw 1.20250101, uboot 2025.01)"),
        "{table}"
    );
    assert!(table.contains("not managed"), "{table}");

    // A deploy carries release 2 onto the partition.
    f.set("pi-fw", &Spec::version("2").firmware("2"));
    let (code, _, err) = xtask(&f, &["deploy", "pi-fw"]);
    assert_eq!(code, Some(0), "{err}");
    let fw = firmware(&f, "pi-fw");
    assert_eq!(fw["state"], "matches", "{fw}");
    assert_eq!(fw["versions"]["uboot"], "2025.04");
    let bak = f.ssh(
        "pi-fw",
        "MTOOLS_SKIP_CHECK=1 mcopy -n -i /var/lib/fakepi/firmware.img ::/config.txt.bak - | tail -n 1",
    );
    assert_eq!(bak, "# 1.20250101", "config.txt.bak is release 1's");

    // A hand edit on the partition: status says which file differs.
    f.ssh(
        "pi-fw",
        "echo 'gpu_mem=16' > /root/config.txt && MTOOLS_SKIP_CHECK=1 mcopy -o -i /var/lib/fakepi/firmware.img /root/config.txt ::/config.txt",
    );
    let fw = firmware(&f, "pi-fw");
    assert_eq!(fw["state"], "differs", "{fw}");
    assert_eq!(fw["differs"], serde_json::json!(["config.txt"]));
    let (code, table, _) = xtask(&f, &["status", "pi-fw", "--no-eval"]);
    assert_eq!(code, Some(3), "a partition that differs is not in sync");
    assert!(
        table.contains("no: 1 file differs (raspberrypifw 1.20250601, uboot 2025.04)"),
        "{table}"
    );
    assert!(
        table.contains("pi-fw: the firmware partition differs from the running system: config.txt"),
        "{table}"
    );

    // The rollback brings release 1 back, config.txt included.
    let (code, _, err) = xtask(&f, &["rollback", "pi-fw"]);
    assert_eq!(code, Some(0), "{err}");
    let fw = firmware(&f, "pi-fw");
    assert_eq!(fw["state"], "matches", "{fw}");
    assert_eq!(fw["versions"]["raspberrypifw"], "1.20250101");
    assert_eq!(fw["versions"]["uboot"], "2025.01");
    let cfg = f.ssh(
        "pi-fw",
        "MTOOLS_SKIP_CHECK=1 mcopy -n -i /var/lib/fakepi/firmware.img ::/config.txt - | tail -n 1",
    );
    assert_eq!(cfg, "# 1.20250101");
}
