# Raspberry Pi 3 (B/B+): BCM2837, 1 GB RAM. The firmware starts
# u-boot-rpi3.bin (config.txt section [pi3]), U-Boot boots the mainline
# kernel with the bcm2837-rpi-3-b*.dtb device tree through extlinux.
# Wi-Fi: brcmfmac43430/43455. Ethernet: USB (smsc95xx/lan78xx), DHCP.
{ lib, ... }:
{
  imports = [ ./sd-card.nix ];

  # 1 GB: compressed swap up to half the RAM.
  zramSwap.memoryPercent = lib.mkDefault 50;
}
