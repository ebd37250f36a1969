//! The lean profile's NixOS side, evaluated and built by real Nix (the
//! tests' private store) with the few nixpkgs pieces it uses stubbed: the
//! FIRMWARE partition's directory (`config.system.build.piFirmware`) holds
//! exactly the files of the fleet's boards and the versions file, the SD
//! image's FAT copy of it is the same, a firmware file the pinned nixpkgs
//! no longer ships stops the build with the way back, and the inventory's
//! `profile` picks nixpkgs' generic module or the lean one.

mod common;

use std::path::Path;

/// Stand-ins for nixpkgs: `runCommand` as nixpkgs' (name, env, script), run
/// with this machine's tools (the tests' Nix has no sandbox); the firmware
/// packages laid out as nixpkgs' are, each file holding its own name.
const PKGS: &str = r#"
let
  runCommand = name: env: script: derivation (env // {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" ("export PATH=/usr/bin:/bin\n" + script) ];
  });
  files = dir: names: builtins.concatStringsSep "\n" (map (f: "mkdir -p $(dirname ${dir}/${f}); echo ${f} > ${dir}/${f}") names);
in
{
  inherit runCommand;
  writeText = name: text: runCommand name { inherit text; } "printf '%s' \"$text\" > $out";
  raspberrypifw = runCommand "raspberrypi-firmware" { version = "1.20260521"; } (files "$out/share/raspberrypi/boot" FIRMWARE);
  ubootRaspberryPi3_64bit = runCommand "uboot-rpi_3" { version = "2025.07"; } "mkdir $out; echo rpi3 > $out/u-boot.bin";
  ubootRaspberryPi4_64bit = runCommand "uboot-rpi_4" { version = "2025.07"; } "mkdir $out; echo rpi4 > $out/u-boot.bin";
  raspberrypi-armstubs = runCommand "armstubs" { version = "unstable-2022-07-11"; } "mkdir $out; echo gic > $out/armstub8-gic.bin";
}
"#;

/// What raspberrypi/firmware's boot/ folder holds (the files nixpkgs'
/// raspberrypifw installs): the start files of every board, device trees
/// of boards the fleet has and has not, overlays, its own kernels.
const FIRMWARE_FILES: &[&str] = &[
    "bootcode.bin",
    "start.elf",
    "fixup.dat",
    "start_cd.elf",
    "fixup_cd.dat",
    "start_x.elf",
    "fixup_x.dat",
    "start_db.elf",
    "fixup_db.dat",
    "start4.elf",
    "fixup4.dat",
    "start4cd.elf",
    "fixup4cd.dat",
    "start4x.elf",
    "fixup4x.dat",
    "start4db.elf",
    "fixup4db.dat",
    "bcm2710-rpi-3-b.dtb",
    "bcm2710-rpi-zero-2-w.dtb",
    "bcm2711-rpi-4-b.dtb",
    "bcm2711-rpi-400.dtb",
    "bcm2711-rpi-cm4.dtb",
    "bcm2711-rpi-cm4s.dtb",
    "bcm2712-rpi-5-b.dtb",
    "kernel8.img",
    "overlays/disable-bt.dtbo",
    "LICENCE.broadcom",
];

fn pkgs(firmware: &[&str]) -> String {
    let list: Vec<String> = firmware.iter().map(|f| format!("\"{f}\"")).collect();
    PKGS.replace("FIRMWARE", &format!("[ {} ]", list.join(" ")))
}

/// modules/hardware/firmware-partition.nix applied to itself (its
/// `config.system.build` is its own), with the stand-ins above.
fn module_expr(repo: &Path, firmware: &[&str]) -> String {
    format!(
        r#"let
  pkgs = {pkgs};
  lib.mkDefault = v: v;
  m = import {module} {{ inherit lib pkgs; config.system.build = m.system.build; }};
in m"#,
        pkgs = pkgs(firmware),
        module = repo
            .join("modules/hardware/firmware-partition.nix")
            .display(),
    )
}

fn nix(args: &[&str]) -> std::process::Output {
    common::command("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(args)
        .output()
        .unwrap()
}

fn build(expr: &str) -> std::process::Output {
    nix(&[
        "build",
        "--impure",
        "--no-link",
        "--print-out-paths",
        "--expr",
        expr,
    ])
}

fn eval_json(expr: &str) -> serde_json::Value {
    let out = nix(&["eval", "--json", "--impure", "--expr", expr]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn repo() -> std::path::PathBuf {
    common::repo_root()
}

#[test]
fn firmware_directory_is_exactly_the_partition_and_the_image_copies_it() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let expr = module_expr(&repo(), FIRMWARE_FILES);
    let out = build(&format!("({expr}).system.build.piFirmware"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());

    let mut want: Vec<String> = [
        "bootcode.bin",
        "start.elf",
        "fixup.dat",
        "start_cd.elf",
        "fixup_cd.dat",
        "start4.elf",
        "fixup4.dat",
        "start4cd.elf",
        "fixup4cd.dat",
        "bcm2711-rpi-4-b.dtb",
        "bcm2711-rpi-400.dtb",
        "u-boot-rpi3.bin",
        "u-boot-rpi4.bin",
        "armstub8-gic.bin",
        "config.txt",
        "pi-nixos-firmware.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    // No Compute Module or Pi 5 trees, no overlays, no downstream kernels.
    assert_eq!(listing(&dir), want);

    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    assert_eq!(read("u-boot-rpi3.bin"), "rpi3\n");
    assert_eq!(read("u-boot-rpi4.bin"), "rpi4\n");
    assert_eq!(read("armstub8-gic.bin"), "gic\n");
    assert_eq!(read("bcm2711-rpi-400.dtb"), "bcm2711-rpi-400.dtb\n");
    assert_eq!(
        read("pi-nixos-firmware.txt"),
        "raspberrypifw=1.20260521\nubootRaspberryPi3_64bit=2025.07\nubootRaspberryPi4_64bit=2025.07\nraspberrypi-armstubs=unstable-2022-07-11\n"
    );
    // The default config.txt: each model starts its own U-Boot, in 64-bit
    // mode, with the UART U-Boot needs; no section for a model the fleet
    // does not have.
    let config = read("config.txt");
    let sections: Vec<&str> = config.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(sections, ["[pi3]", "[pi02]", "[pi4]", "[all]"]);
    for line in [
        "kernel=u-boot-rpi3.bin",
        "kernel=u-boot-rpi4.bin",
        "armstub=armstub8-gic.bin",
        "enable_gic=1",
        "arm_64bit=1",
        "enable_uart=1",
    ] {
        assert!(config.lines().any(|l| l == line), "{line} in:\n{config}");
    }
    // Every file config.txt names is on the partition.
    for l in config.lines() {
        if let Some(f) = l
            .strip_prefix("kernel=")
            .or_else(|| l.strip_prefix("armstub="))
        {
            assert!(dir.join(f).is_file(), "{f} named by config.txt is missing");
        }
    }

    // The SD image runs populateFirmwareCommands in its build folder after
    // `mkdir firmware` (nixpkgs' sd-image.nix), then dates and copies every
    // file: the copy is the directory, file for file, and writable.
    let commands = eval_json(&format!("({expr}).sdImage.populateFirmwareCommands"));
    let top = tempfile::tempdir().unwrap();
    std::fs::create_dir(top.path().join("firmware")).unwrap();
    let run = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -e\n{}\nfind firmware -exec touch --date=2000-01-01 {{}} +",
            commands.as_str().unwrap()
        ))
        .current_dir(top.path())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let copy = top.path().join("firmware");
    assert_eq!(listing(&copy), listing(&dir));
    for f in listing(&dir) {
        assert_eq!(
            std::fs::read(copy.join(&f)).unwrap(),
            std::fs::read(dir.join(&f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn a_firmware_file_nixpkgs_no_longer_ships_stops_the_build_with_the_way_back() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let without_400: Vec<&str> = FIRMWARE_FILES
        .iter()
        .copied()
        .filter(|f| *f != "bcm2711-rpi-400.dtb")
        .collect();
    let out = build(&format!(
        "({}).system.build.piFirmware",
        module_expr(&repo(), &without_400)
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("share/raspberrypi/boot/bcm2711-rpi-400.dtb is missing: the pinned nixpkgs no longer ships it; keep this host on profile = \"generic\""),
        "{err}"
    );
}

/// modules/hardware/sd-card.nix and the profile module it picks, applied
/// to stand-in arguments: what each imports and sets.
fn profile_view(repo: &Path, profile: &str) -> serde_json::Value {
    let expr = format!(
        r#"let
  lib = {{
    mkDefault = v: {{ default = v; }};
    mkForce = v: {{ force = v; }};
    mkIf = c: v: if c then v else null;
    mkOption = o: o;
    types.bool = "bool";
  }};
  args = {{
    inherit lib;
    config = {{ pi-nixos.wifiFirmware = true; boot.loader.generic-extlinux-compatible.populateCmd = "populate"; system.build.toplevel = "toplevel"; hardware.enableRedistributableFirmware = false; }};
    pkgs.raspberrypiWirelessFirmware = "raspberrypi-wireless-firmware";
    modulesPath = "/nixpkgs/nixos/modules";
    host = {{ name = "pi"; profile = "{profile}"; }};
  }};
  card = import {card} args;
  chosen = import (builtins.head card.imports) args;
in
{{
  card = map toString card.imports;
  chosen = map toString chosen.imports;
  firmware = card.config.hardware.firmware;
  allHardware = chosen.hardware.enableAllHardware or null;
  initrd = chosen.boot.initrd.availableKernelModules or null;
  wifiFirmware = chosen.pi-nixos.wifiFirmware or null;
  regdb = chosen.hardware.wirelessRegulatoryDatabase or null;
  filesystems = chosen.boot.supportedFilesystems or null;
}}"#,
        card = repo.join("modules/hardware/sd-card.nix").display(),
    );
    eval_json(&expr)
}

#[test]
fn the_profile_chooses_lean_or_nixpkgs_generic_module() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let repo = repo();
    let hw = repo.join("modules/hardware");

    let lean = profile_view(&repo, "lean");
    assert_eq!(
        lean["card"],
        serde_json::json!([
            hw.join("lean.nix").display().to_string(),
            // the card assembled with x86_64 tools, on both profiles
            hw.join("sd-image-native.nix").display().to_string()
        ])
    );
    // nixpkgs' sd-image.nix and our firmware partition: not
    // sd-image-aarch64.nix, profiles/base.nix or an installer profile.
    assert_eq!(
        lean["chosen"],
        serde_json::json!([
            "/nixpkgs/nixos/modules/installer/sd-card/sd-image.nix",
            hw.join("firmware-partition.nix").display().to_string()
        ])
    );
    assert_eq!(lean["allHardware"], serde_json::json!({ "force": false }));
    assert_eq!(
        lean["initrd"],
        serde_json::json!(["vc4", "pcie-brcmstb", "reset-raspberrypi"])
    );
    assert_eq!(
        lean["firmware"],
        serde_json::json!(["raspberrypi-wireless-firmware"])
    );
    assert_eq!(lean["regdb"], serde_json::json!({ "default": true }));
    // Of base.nix's filesystems only the FIRMWARE partition's: no ZFS.
    assert_eq!(lean["filesystems"], serde_json::json!(["vfat"]));

    let generic = profile_view(&repo, "generic");
    assert_eq!(
        generic["card"],
        serde_json::json!([
            hw.join("generic.nix").display().to_string(),
            // the card assembled with x86_64 tools, on both profiles
            hw.join("sd-image-native.nix").display().to_string()
        ])
    );
    assert_eq!(
        generic["chosen"],
        serde_json::json!(["/nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix"])
    );
    // Its linux-firmware already holds the Wi-Fi files: not added twice.
    assert_eq!(
        generic["wifiFirmware"],
        serde_json::json!({ "default": false })
    );
    assert_eq!(generic["initrd"], serde_json::Value::Null);
}
