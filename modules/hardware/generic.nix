# The generic profile (`profile = "generic"` in hosts/fleet.toml): the host
# boots nixpkgs' own aarch64 SD image module as it is, with everything it
# brings (profiles/base.nix: ZFS, recovery tools, every filesystem's tools;
# the all-hardware set: every board's initrd drivers and all of
# linux-firmware). The way back when the lean profile does not boot on some
# board revision: documentation/boot.md. The FIRMWARE partition is
# nixpkgs' (its own config.txt); `config.system.build ? piFirmware` is false.
{
  config,
  lib,
  modulesPath,
  ...
}:
{
  imports = [ "${modulesPath}/installer/sd-card/sd-image-aarch64.nix" ];

  # The Pis' Wi-Fi firmware already comes with all of linux-firmware here
  # (sd-image.nix sets hardware.enableAllHardware, which turns on
  # hardware.enableRedistributableFirmware; all-firmware.nix then adds
  # raspberrypiWirelessFirmware on aarch64).
  pi-nixos.wifiFirmware = lib.mkDefault false;
}
