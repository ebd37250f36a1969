# The lean profile (the default): nixpkgs' sd-image.nix (the card layout,
# first-boot resize, store registration) with only what the fleet's Pis use.
# What sd-image-aarch64.nix adds and this leaves out, each read in nixpkgs:
#   profiles/base.nix       recovery and installer tools (testdisk, w3m,
#                           cryptsetup, smartmontools, nvme-cli, vim, ...),
#                           btrfs/cifs/f2fs/ntfs/xfs/bcachefs/ZFS support and
#                           ZFS's shared networking.hostId
#   all-hardware            every board's initrd drivers (SATA, SCSI, NVMe,
#                           virtio, Rockchip, Allwinner, ...) and all of
#                           linux-firmware
# What a Pi needs of them is kept below, each with why. The FIRMWARE
# partition: firmware-partition.nix. The way back: profile = "generic".
{
  config,
  lib,
  modulesPath,
  ...
}:
{
  imports = [
    "${modulesPath}/installer/sd-card/sd-image.nix"
    ./firmware-partition.nix
  ];

  # sd-image.nix turns the all-hardware set on (hardware/all-hardware.nix);
  # a Pi needs three of its drivers, listed below.
  hardware.enableAllHardware = lib.mkForce false;

  # Kept from sd-image-aarch64.nix: the Pi firmware starts U-Boot, which
  # reads /boot/extlinux/extlinux.conf from the root partition.
  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;

  # Kept from sd-image-aarch64.nix as it has them: kernel messages and a
  # login on the serial ports and the screen, for a Pi that does not come up.
  boot.consoleLogLevel = lib.mkDefault 7;
  boot.kernelParams = [
    "console=ttyS0,115200n8"
    "console=ttyAMA0,115200n8"
    "console=tty0"
  ];

  # The Broadcom drivers the all-hardware set gives these SoCs; the SD card
  # reader itself, mmc_block, ext4 and the USB host drivers come from the
  # kernel's defaults (system/boot/kernel.nix, boot.initrd.includeDefaultModules)
  # and the root filesystem's type, as on the generic image.
  boot.initrd.availableKernelModules = [
    "vc4" # the screen from the initrd on (a console to read when boot fails)
    "pcie-brcmstb" # Pi 4: PCIe, behind which its USB controller sits
    "reset-raspberrypi" # Pi 4: has the firmware load the USB controller's firmware
  ];

  # Kept from profiles/base.nix, of its filesystems: vfat, the FIRMWARE
  # partition's (mounted at /boot/firmware to read or update it).
  boot.supportedFilesystems = [ "vfat" ];

  # Wi-Fi's country rules (wireless-regdb), which the generic profile gets
  # with linux-firmware; the Wi-Fi firmware itself: pi-nixos.wifiFirmware.
  hardware.wirelessRegulatoryDatabase = lib.mkDefault true;

  # Kept from sd-image-aarch64.nix: /boot (extlinux.conf, kernels, initrds,
  # device trees) on the root partition of the image.
  sdImage.populateRootCommands = ''
    mkdir -p ./files/boot
    ${config.boot.loader.generic-extlinux-compatible.populateCmd} -c ${config.system.build.toplevel} -d ./files/boot
  '';
}
