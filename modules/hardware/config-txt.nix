# config.txt as code: the text lib/config-txt.nix renders for this host (its
# model's part of nixpkgs' sd-image-aarch64.nix config.txt plus
# hosts/<name>/config-txt.toml) as `config.system.build.piConfigTxt`, a
# plain file the FIRMWARE partition's builder copies. The rules
# `cargo xtask check` applies are assertions here too, so a build refuses
# what check refuses.
{
  lib,
  pkgs,
  host,
  ...
}:
let
  configTxt = (import ../../lib/config-txt.nix { root = ../..; }).forHost host;
in
{
  config = {
    assertions =
      map (p: {
        assertion = false;
        message = "${configTxt.file}: ${p.message}: ${p.fix}";
      }) configTxt.problems
      ++ [
        {
          # A generic host's FIRMWARE partition is nixpkgs' (documentation/boot.md).
          assertion = configTxt.deviceTree != "firmware" || (host.profile or "lean") != "generic";
          message = "${configTxt.file}: `device_tree = \"firmware\"` needs the lean profile, whose FIRMWARE partition carries this config.txt: remove `profile = \"generic\"` from host `${host.name}` in hosts/fleet.toml, or the device_tree line";
        }
      ];

    system.build.piConfigTxt = pkgs.writeText "config.txt" configTxt.text;
    # Overlays config.txt loads: the firmware reads overlays/<name>.dtbo from
    # the FIRMWARE partition, so its builder copies these from raspberrypifw.
    system.build.piConfigTxtOverlays = configTxt.overlays;

    # `device_tree = "firmware"`: extlinux.conf names no FDT/FDTDIR, so U-Boot
    # hands Linux the tree the firmware loaded and applied config.txt's
    # dtoverlay/dtparam lines to (its ${fdt_addr}); otherwise U-Boot loads
    # the kernel's own .dtb and those lines never reach Linux.
    boot.loader.generic-extlinux-compatible.useGenerationDeviceTree = lib.mkIf (
      configTxt.deviceTree == "firmware"
    ) false;
  };
}
