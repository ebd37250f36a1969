# Raspberry Pi 4 B / 400: BCM2711, 1 to 8 GB RAM. The firmware starts
# u-boot-rpi4.bin with armstub8-gic.bin and the bcm2711 device trees
# (config.txt section [pi4]), U-Boot boots the mainline kernel through
# extlinux. Wi-Fi: brcmfmac43455. Ethernet: genet (end0), DHCP.
{ lib, ... }:
{
  imports = [ ./sd-card.nix ];

  # At least 1 GB: a quarter of the RAM as compressed swap is plenty.
  zramSwap.memoryPercent = lib.mkDefault 25;
}
