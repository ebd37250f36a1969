# What every Pi model shares: aarch64, the NixOS SD card layout (firmware ->
# U-Boot -> extlinux; MBR with a FAT `FIRMWARE` partition and an ext4
# `NIXOS_SD` root that grows to the card on first boot). Imported by
# hardware/<model>.nix.
{
  lib,
  modulesPath,
  host,
  ...
}:
{
  imports = [
    "${modulesPath}/installer/sd-card/sd-image-aarch64.nix"
    ./sd-image-native.nix # system.build.sdImageNative: the card assembled with x86_64 tools
  ];

  # Built natively for aarch64 (under QEMU on an x86_64 workstation, or on a
  # build host), so everything but the host's own files comes from the cache.
  nixpkgs.hostPlatform = "aarch64-linux";

  # The image is named after the host: result/sd-image/<host>.img.zst.
  image.baseName = lib.mkDefault host.name;
  sdImage.compressImage = lib.mkDefault true;

  # Wi-Fi and Bluetooth firmware (brcmfmac) of the Pi 3, Pi 4 and Zero 2 W:
  # hardware.enableRedistributableFirmware is already true here, set by
  # nixpkgs (sd-image-aarch64.nix imports sd-image.nix, which sets
  # hardware.enableAllHardware = true; hardware/all-hardware.nix then sets
  # enableRedistributableFirmware = true, and all-firmware.nix adds
  # raspberrypiWirelessFirmware on aarch64). Turning it off takes
  # `hardware.enableRedistributableFirmware = lib.mkForce false;` and leaves
  # the Pi without Wi-Fi (modules/wifi.nix refuses that for Wi-Fi hosts).
}
