//! config.txt as code: lib/config-txt.nix rendered by real Nix (the tests'
//! private store) gives every card nixpkgs' config.txt (less [cm4]) byte for
//! byte, and a host's additions in their sections; `cargo xtask check` refuses a
//! bad hosts/<name>/config-txt.toml with file:line, and the NixOS module
//! (evaluated against a stub of the two `lib`/`pkgs` functions it uses)
//! refuses the same things with the same words.

mod common;

use std::path::Path;

/// `nix eval --json` of an expression, in the test's private Nix.
fn eval(expr: &str) -> serde_json::Value {
    let out = common::command("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "eval",
            "--json",
            "--impure",
            "--expr",
            expr,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// lib/config-txt.nix's result for one host of the repository at `root`.
fn render(root: &Path, name: &str, model: &str) -> serde_json::Value {
    eval(&format!(
        "(import {}/lib/config-txt.nix {{ root = {}; }}).forHost {{ name = \"{name}\"; model = \"{model}\"; }}",
        root.display(),
        root.display()
    ))
}

/// The part of `text` from the line `[from]` up to the line `[to]` (or the end).
fn section(text: &str, from: &str, to: Option<&str>) -> String {
    let start = text.find(&format!("[{from}]\n")).unwrap();
    let end = to.map_or(text.len(), |t| text.find(&format!("[{t}]\n")).unwrap());
    text[start..end].to_string()
}

#[test]
fn every_card_gets_nixpkgs_config_txt_byte_for_byte_less_cm4() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let nixpkgs = std::fs::read_to_string(
        common::repo_root().join("xtask/tests/fixtures/config-txt/sd-image-aarch64.txt"),
    )
    .unwrap();
    // The one difference: no [cm4] section (no fleet model is a CM4).
    let expected = section(&nixpkgs, "pi3", Some("cm4")) + &section(&nixpkgs, "all", None);
    assert_eq!(
        nixpkgs.replace(&section(&nixpkgs, "cm4", Some("all")), ""),
        expected
    );
    for model in ["pi3", "zero2w", "pi4"] {
        let v = render(&common::repo_root(), "no-such-host", model);
        assert_eq!(v["text"].as_str().unwrap(), expected, "model {model}");
        assert_eq!(v["problems"], serde_json::json!([]));
        assert_eq!(v["overlays"], serde_json::json!([]));
        assert_eq!(v["deviceTree"], "kernel");
    }
}

#[test]
fn a_hosts_additions_land_in_their_sections() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let fleet = common::fixture_fleet();
    std::fs::write(
        fleet.path().join("hosts/rpi-box-01/config-txt.toml"),
        "device_tree = \"firmware\"\n\n[pi4]\narm_boost = false\ngpu_mem = 64\n\n[pi400]\nlines = [\"hdmi_blanking=1\"]\n\n[all]\ndtparam = [\"audio=on\"]\ndtoverlay = [\"disable-bt\", \"gpio-fan,gpiopin=14\"]\nlines = [\"hdmi_force_hotplug=1\"]\n",
    )
    .unwrap();
    let v = render(fleet.path(), "rpi-box-01", "pi4");
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["overlays"], serde_json::json!(["disable-bt", "gpio-fan"]));
    assert_eq!(v["deviceTree"], "firmware");
    let from = "# from hosts/rpi-box-01/config-txt.toml";
    let expected = format!(
        "[pi3]
kernel=u-boot-rpi3.bin

[pi02]
kernel=u-boot-rpi3.bin

[pi4]
kernel=u-boot-rpi4.bin
enable_gic=1
armstub=armstub8-gic.bin

# Otherwise the resolution will be weird in most cases, compared to
# what the pi3 firmware does by default.
disable_overscan=1

# Supported in newer board revisions
arm_boost=0
{from}
gpu_mem=64

[pi400]
{from}
hdmi_blanking=1

[all]
# Boot in 64-bit mode.
arm_64bit=1

# U-Boot needs this to work, regardless of whether UART is actually used or not.
# Look in arch/arm/mach-bcm283x/Kconfig in the U-Boot tree to see if this is still
# a requirement in the future.
enable_uart=1

# Prevent the firmware from smashing the framebuffer setup done by the mainline kernel
# when attempting to show low-voltage or overtemperature warnings.
avoid_warnings=1
{from}
dtparam=audio=on
dtoverlay=disable-bt
dtoverlay=gpio-fan,gpiopin=14
hdmi_force_hotplug=1
"
    );
    assert_eq!(v["text"].as_str().unwrap(), expected);

    // The flake's own output is that text, with builtins only.
    let out = common::command("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--raw",
        ])
        .arg(format!(
            "path:{}#configTxt.rpi-box-01",
            fleet.path().display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn a_zero_2_w_and_a_pi_3_get_their_additions_in_their_sections() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let fleet = common::fixture_fleet();
    std::fs::write(
        fleet.path().join("hosts/rpi-zero-01/config-txt.toml"),
        "[pi0]\nlines = [\"hdmi_blanking=1\"]\n\n[pi02]\ngpu_mem = 16\n\n[all]\nenable_uart = true\n",
    )
    .unwrap();
    std::fs::write(
        fleet.path().join("hosts/rpi-box-03/config-txt.toml"),
        "[\"pi3+\"]\nlines = [\"hdmi_force_hotplug=1\"]\n\n[pi3]\ngpu_mem = 32\n",
    )
    .unwrap();
    let nixpkgs = std::fs::read_to_string(
        common::repo_root().join("xtask/tests/fixtures/config-txt/sd-image-aarch64.txt"),
    )
    .unwrap();
    let pi4 = section(&nixpkgs, "pi4", Some("cm4"));
    let all = section(&nixpkgs, "all", None);
    let zero = render(fleet.path(), "rpi-zero-01", "zero2w");
    assert_eq!(zero["problems"], serde_json::json!([]));
    let from = "# from hosts/rpi-zero-01/config-txt.toml";
    assert_eq!(
        zero["text"].as_str().unwrap(),
        format!(
            "[pi3]\nkernel=u-boot-rpi3.bin\n\n[pi02]\nkernel=u-boot-rpi3.bin\n{from}\ngpu_mem=16\n\n{pi4}[pi0]\n{from}\nhdmi_blanking=1\n\n{all}"
        )
    );
    let pi3 = render(fleet.path(), "rpi-box-03", "pi3");
    assert_eq!(pi3["problems"], serde_json::json!([]));
    let from = "# from hosts/rpi-box-03/config-txt.toml";
    assert_eq!(
        pi3["text"].as_str().unwrap(),
        format!(
            "[pi3]\nkernel=u-boot-rpi3.bin\n{from}\ngpu_mem=32\n\n[pi02]\nkernel=u-boot-rpi3.bin\n\n{pi4}[pi3+]\n{from}\nhdmi_force_hotplug=1\n\n{all}"
        )
    );
}

/// A Zero 2 W file breaking every rule once.
const BAD: &str = r#"device_tree = "fw"

[pi3]
gpu_mem = 64

[pi5]
gpu_mem = 64

[foo]
x = 1

[all]
enable_uart = false
arm_boost = true
gpu_mem = 1000
dtoverlay = ["disable-bt", "no-such-overlay"]
lines = ["gpu_mem=16", "[pi4]", "kernel=other.bin", "hdmi_force_hotplug=1"]
extra = 1
"#;

fn check(fleet: &Path) -> (bool, String) {
    let out = common::xtask(fleet).arg("check").output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_refuses_a_bad_file_with_file_and_line() {
    let fleet = common::fixture_fleet();
    // The fixture's Wi-Fi host needs its Wi-Fi secret for `check` to pass once the file is fixed.
    common::give_wifi_password(fleet.path());
    std::fs::write(fleet.path().join("hosts/rpi-zero-01/config-txt.toml"), BAD).unwrap();
    let (ok, out) = check(fleet.path());
    assert!(!ok, "{out}");
    let f = "hosts/rpi-zero-01/config-txt.toml";
    for expected in [
        format!("{f}:1: `device_tree = \"fw\"` is neither \"kernel\" nor \"firmware\""),
        format!("{f}:3: [pi3] never applies to rpi-zero-01, a zero2w"),
        format!("{f}:6: [pi5] applies to no model of this fleet (pi3, pi4, zero2w)"),
        format!("{f}:9: [foo] is not a model filter of config.txt"),
        format!("{f}:13: [all] `enable_uart = false` stops U-Boot"),
        format!(
            "{f}:14: [all] `arm_boost` is a Raspberry Pi 4 setting and rpi-zero-01 is a zero2w"
        ),
        format!("{f}:15: [all] `gpu_mem = 1000` is outside 16..384, the range for a zero2w"),
        format!("{f}:16: [all] overlay `no-such-overlay` is not one the firmware ships"),
        format!("{f}:16: [all] `dtoverlay` would not reach Linux"),
        format!("{f}:17: [all] the line `gpu_mem=16` sets `gpu_mem`, which is typed"),
        format!("{f}:17: [all] the line `[pi4]` starts a section"),
        format!("{f}:17: [all] the line `kernel=other.bin` changes the boot chain (`kernel`)"),
        format!("{f}:18: [all] `extra` is not a setting this file types"),
    ] {
        assert!(out.contains(&expected), "missing `{expected}` in:\n{out}");
    }
    assert!(!out.contains("disable-bt` is not"), "{out}");
    assert!(!out.contains("hdmi_force_hotplug"), "{out}");

    // Fixed, the same host passes.
    std::fs::write(
        fleet.path().join("hosts/rpi-zero-01/config-txt.toml"),
        "[pi02]\ngpu_mem = 16\n\n[all]\nlines = [\"hdmi_force_hotplug=1\"]\n",
    )
    .unwrap();
    let (ok, out) = check(fleet.path());
    assert!(ok, "{out}");
}

#[test]
fn the_module_refuses_what_check_refuses_in_the_same_words() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let fleet = common::fixture_fleet();
    std::fs::write(fleet.path().join("hosts/rpi-zero-01/config-txt.toml"), BAD).unwrap();
    let module = |name: &str, model: &str| {
        eval(&format!(
            r#"let
  lib.mkIf = condition: content: {{ _type = "if"; inherit condition content; }};
  pkgs.writeText = name: text: {{ inherit name text; }};
  m = import {}/modules/hardware/config-txt.nix {{ inherit lib pkgs; host = {{ name = "{name}"; model = "{model}"; }}; }};
in
{{
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) m.config.assertions);
  file = m.config.system.build.piConfigTxt;
  overlays = m.config.system.build.piConfigTxtOverlays;
  generationTree = m.config.boot.loader.generic-extlinux-compatible.useGenerationDeviceTree;
}}"#,
            fleet.path().display()
        ))
    };
    let v = module("rpi-zero-01", "zero2w");
    let failed: Vec<String> = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert_eq!(failed.len(), 13, "{failed:#?}");
    let (_, out) = check(fleet.path());
    for message in &failed {
        // `<file>: <message>: <fix>`; check prints `<file>:<line>: <message>`
        // and the fix.
        let rest = message
            .strip_prefix("hosts/rpi-zero-01/config-txt.toml: ")
            .unwrap();
        assert!(
            out.lines().any(|l| rest.starts_with(
                l.split_once(".toml:")
                    .and_then(|(_, r)| r.split_once(": "))
                    .map_or("\0", |(_, m)| m)
            )),
            "check does not say `{rest}`:\n{out}"
        );
    }
    assert_eq!(v["file"]["name"], "config.txt");
    assert_eq!(
        v["overlays"],
        serde_json::json!(["disable-bt", "no-such-overlay"])
    );
    assert_eq!(v["generationTree"]["condition"], false);

    // A Pi 4 that asks for the firmware's tree: extlinux names no FDTDIR.
    std::fs::write(
        fleet.path().join("hosts/rpi-box-01/config-txt.toml"),
        "device_tree = \"firmware\"\n[all]\ndtoverlay = [\"disable-bt\"]\n",
    )
    .unwrap();
    let v = module("rpi-box-01", "pi4");
    assert_eq!(v["failed"], serde_json::json!([]));
    assert_eq!(v["generationTree"]["condition"], true);
    assert_eq!(v["generationTree"]["content"], false);
    assert!(v["file"]["text"].as_str().unwrap().ends_with(
        "avoid_warnings=1\n# from hosts/rpi-box-01/config-txt.toml\ndtoverlay=disable-bt\n"
    ));
}
