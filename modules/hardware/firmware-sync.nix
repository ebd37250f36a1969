# The FAT `FIRMWARE` partition (config.txt, U-Boot, the Pi firmware, device
# trees) kept in step with the system by every deploy.
#
# switch-to-configuration runs the boot loader's installer
# (`system.build.installBootLoader`) with the system it installs, for
# `switch` and `boot` alike (not for `test`): `cargo xtask deploy`, `deploy
# --boot`, `rollback`, the deploy's rollback watchdog and nixos-rebuild all
# go through it. This module wraps that installer (extlinux's): it runs it,
# then that same system's `pi-firmware-sync` on that system's firmware
# folder, so a rollback brings the firmware back too. The program
# (firmware-sync.sh, run by the tests as it is) writes the partition with
# mtools without mounting it, only the files that differ, config.txt last,
# the previous config.txt and U-Boot kept as .bak; it refuses, changing
# nothing, when the partition lacks the space, and the switch then fails
# (a deploy rolls back). A partition mounted by hand is left alone with a
# warning: failing would fail the rollback's switch as well.
#
# The system links `pi-firmware` (config.system.build.piFirmware) and
# `pi-firmware-sync` (the program, with this system's partition), so
# `cargo xtask status` compares the partition with
# /run/current-system/pi-firmware. On a host without piFirmware (`profile =
# "generic"` in hosts/fleet.toml) nothing changes.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  managed = config.system.build ? piFirmware;
  device = config.fileSystems."/boot/firmware".device or "/dev/disk/by-label/FIRMWARE";
  program = pkgs.writeShellApplication {
    name = "pi-firmware-sync";
    runtimeInputs = with pkgs; [
      mtools
      coreutils
      diffutils
      findutils
      gawk
      gnugrep
      gnused
    ];
    text = builtins.readFile ./firmware-sync.sh;
  };
  # The program with this system's partition: what the installer and
  # `status` run as <system>/pi-firmware-sync.
  withDevice = pkgs.writeShellScript "pi-firmware-sync" ''
    exec ${program}/bin/pi-firmware-sync --device ${lib.escapeShellArg device} "$@"
  '';
in
{
  # A second declaration of the option, adding `apply` (nixpkgs declares it
  # in nixos/modules/system/activation/activation-script.nix without one):
  # whatever boot loader defines it, its installer runs first.
  options.system.build.installBootLoader = lib.mkOption {
    apply =
      installer:
      if managed then
        pkgs.writeShellScript "install-bootloader-and-pi-firmware" ''
          set -e
          ${installer} "$@"
          rc=0
          "$1/pi-firmware-sync" "$1/pi-firmware" || rc=$?
          if [ "$rc" = 4 ]; then
            # Mounted by hand: failing here would fail the rollback too.
            echo "warning: the firmware partition was left as it is: unmount it, then run $1/pi-firmware-sync $1/pi-firmware" >&2
            exit 0
          fi
          exit "$rc"
        ''
      else
        installer;
  };

  config = lib.mkIf managed {
    assertions = [
      {
        assertion = config.fileSystems ? "/boot/firmware";
        message = "the firmware partition is managed (system.build.piFirmware) but fileSystems.\"/boot/firmware\" is not set: import the SD card module (modules/hardware/sd-card.nix), or set profile = \"generic\" for this host in hosts/fleet.toml";
      }
      {
        assertion = config.boot.loader.generic-extlinux-compatible.enable;
        message = "the firmware partition is managed (system.build.piFirmware) but boot.loader.generic-extlinux-compatible is off: the Pi firmware starts U-Boot, which reads extlinux.conf; turn it back on";
      }
    ];

    system.extraSystemBuilderCmds = ''
      ln -s ${config.system.build.piFirmware} $out/pi-firmware
      ln -s ${withDevice} $out/pi-firmware-sync
    '';
  };
}
