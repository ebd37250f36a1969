# The FIRMWARE partition of a lean host (documentation/boot.md):
#   config.system.build.piFirmware  a directory with exactly the partition's
#                                   files (pi-firmware.nix); the SD image
#                                   copies it and the firmware sync on
#                                   deploy brings the card in line with it
#   config.system.build.piConfigTxt its config.txt
# Generic hosts have neither (`config.system.build ? piFirmware` is false):
# nixpkgs' sd-image-aarch64.nix fills their partition.
{
  config,
  lib,
  pkgs,
  ...
}:
{
  # config.txt as nixpkgs' sd-image-aarch64.nix writes it, less its [cm4]
  # section (no fleet model): the firmware of each model starts its U-Boot
  # in 64-bit mode with the UART on, which U-Boot needs. A default only:
  # the fleet's config.txt module replaces it.
  system.build.piConfigTxt = lib.mkDefault (
    pkgs.writeText "config.txt" ''
      [pi3]
      kernel=u-boot-rpi3.bin

      [pi02]
      kernel=u-boot-rpi3.bin

      [pi4]
      kernel=u-boot-rpi4.bin
      enable_gic=1
      armstub=armstub8-gic.bin
      # The screen's full area, as the Pi 3 firmware has it by default.
      disable_overscan=1
      # Full clock speed on board revisions that support it.
      arm_boost=1

      [all]
      arm_64bit=1
      # U-Boot needs the UART on, whether or not anything is connected.
      enable_uart=1
      # No firmware warning icons drawn over the kernel's screen.
      avoid_warnings=1
    ''
  );

  system.build.piFirmware = import ./pi-firmware.nix {
    inherit (pkgs)
      runCommand
      raspberrypifw
      ubootRaspberryPi3_64bit
      ubootRaspberryPi4_64bit
      raspberrypi-armstubs
      ;
    configTxt = config.system.build.piConfigTxt;
    # The overlays config.txt loads (modules/hardware/config-txt.nix).
    overlays = config.system.build.piConfigTxtOverlays or [ ];
  };

  # The image's FAT partition is that directory, file for file.
  sdImage.populateFirmwareCommands = ''
    cp -r --no-preserve=mode ${config.system.build.piFirmware}/. firmware/
  '';
}
