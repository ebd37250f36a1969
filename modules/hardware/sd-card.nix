# What every Pi model shares: aarch64, the NixOS SD card layout (firmware ->
# U-Boot -> extlinux; MBR with a FAT `FIRMWARE` partition and an ext4
# `NIXOS_SD` root that grows to the card on first boot). Imported by
# hardware/<model>.nix. The host's `profile` in hosts/fleet.toml chooses the
# system around it (documentation/boot.md):
#   lean     (default) lean.nix: nixpkgs' sd-image.nix with only what the
#            fleet's Pis use
#   generic  generic.nix: nixpkgs' sd-image-aarch64.nix as it is, the way
#            back if the lean system does not boot on some board revision
{
  config,
  lib,
  pkgs,
  host,
  ...
}:
{
  imports = [
    (if host.profile == "generic" then ./generic.nix else ./lean.nix)
    ./sd-image-native.nix # system.build.sdImageNative: the card assembled with x86_64 tools
  ];

  options.pi-nixos.wifiFirmware = lib.mkOption {
    type = lib.types.bool;
    default = true;
    description = ''
      Install the Wi-Fi and Bluetooth firmware of the Pi 3, Pi 4 and
      Zero 2 W (nixpkgs' raspberrypiWirelessFirmware: brcmfmac and the
      Bluetooth patch files) and nothing else of linux-firmware. The
      generic profile turns it off: it gets the same files with all of
      linux-firmware (hardware.enableRedistributableFirmware).
    '';
  };

  config = {
    # Built natively for aarch64 (under QEMU on an x86_64 workstation, or on
    # a build host), so everything but the host's own files comes from the
    # cache.
    nixpkgs.hostPlatform = "aarch64-linux";

    # The image is named after the host: result/sd-image/<host>.img.zst.
    image.baseName = lib.mkDefault host.name;
    sdImage.compressImage = lib.mkDefault true;

    hardware.firmware = lib.mkIf config.pi-nixos.wifiFirmware [ pkgs.raspberrypiWirelessFirmware ];
  };
}
