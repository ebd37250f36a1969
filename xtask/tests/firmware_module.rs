//! modules/hardware/firmware-sync.nix evaluated by real Nix against a stub
//! of the few `lib` and `pkgs` functions it uses (nixpkgs cannot be fetched
//! here): with `system.build.piFirmware` the boot loader's installer is
//! wrapped (the original runs first, then the installed system's sync) and
//! the system links its firmware folder and program; without it nothing
//! changes.

mod common;

const STUB: &str = r#"
let
  lib = {
    mkOption = o: o;
    mkIf = cond: content: { inherit cond content; };
    escapeShellArg = s: "'" + s + "'";
  };
  drv = name: extra: { outPath = "/nix/store/00000000000000000000000000000000-" + name; } // extra;
  pkgs = {
    mtools = drv "mtools" { }; coreutils = drv "coreutils" { }; diffutils = drv "diffutils" { };
    findutils = drv "findutils" { }; gawk = drv "gawk" { }; gnugrep = drv "gnugrep" { }; gnused = drv "gnused" { };
    writeShellApplication = a: drv a.name { inherit (a) text; inputs = map (p: p.outPath) a.runtimeInputs; };
    writeShellScript = name: text: drv name { inherit text; };
  };
  eval = build: import MODULE {
    inherit lib pkgs;
    config = {
      system.build = build;
      fileSystems."/boot/firmware".device = "/dev/disk/by-label/FIRMWARE";
      boot.loader.generic-extlinux-compatible.enable = true;
    };
  };
  on = eval { piFirmware = drv "pi-firmware" { }; };
  off = eval { };
  extlinux = "/nix/store/00000000000000000000000000000000-install-extlinux-conf.sh";
in
{
  installer = (on.options.system.build.installBootLoader.apply extlinux).text;
  unchanged = off.options.system.build.installBootLoader.apply extlinux == extlinux;
  builder = on.config.content.system.extraSystemBuilderCmds;
  managed = on.config.cond;
  unmanaged = off.config.cond;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) on.config.content.assertions);
}
"#;

#[test]
fn the_module_wraps_the_installer_only_when_the_firmware_is_managed() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let module = common::repo_root().join("modules/hardware/firmware-sync.nix");
    let expr = STUB.replace("MODULE", &module.display().to_string());
    let out = common::command("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(["eval", "--json", "--impure", "--expr", &expr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let installer = v["installer"].as_str().unwrap();
    let first = installer
        .find("-install-extlinux-conf.sh \"$@\"")
        .expect(installer);
    let then = installer
        .find("\"$1/pi-firmware-sync\" \"$1/pi-firmware\"")
        .expect(installer);
    assert!(first < then && installer.contains("set -e"), "{installer}");
    // A partition mounted by hand (exit 4) does not fail the switch: the
    // rollback's switch would fail the same way.
    assert!(
        installer.contains("[ \"$rc\" = 4 ]") && installer.contains("exit \"$rc\""),
        "{installer}"
    );
    assert_eq!(v["unchanged"], true);
    assert_eq!(v["managed"], true);
    assert_eq!(v["unmanaged"], false);
    assert_eq!(v["failed"], serde_json::json!([]));
    let builder = v["builder"].as_str().unwrap();
    assert!(
        builder.contains("-pi-firmware $out/pi-firmware"),
        "{builder}"
    );
    assert!(
        builder.contains("-pi-firmware-sync $out/pi-firmware-sync"),
        "{builder}"
    );
}
