# Raspberry Pi Zero 2 W: RP3A0 (BCM2710A1, as a Pi 3), 512 MB RAM, no
# Ethernet. The firmware starts u-boot-rpi3.bin (config.txt section [pi02]),
# U-Boot boots the mainline kernel with bcm2837-rpi-zero-2-w.dtb. Wi-Fi
# (brcmfmac43436) is the only network, so the host needs `wifi` in the
# inventory (modules/wifi.nix); its password goes on the card at `sd` time.
{ lib, host, ... }:
{
  imports = [ ./sd-card.nix ];

  assertions = [
    {
      assertion = host.wifi != null;
      message = "host `${host.name}` is a Zero 2 W, which has no Ethernet: add `wifi = \"<SSID>\"` to its entry in hosts/fleet.toml";
    }
  ];

  # 512 MB: compressed swap as large as the RAM, and never build here
  # (deploys build on the workstation and copy the result).
  zramSwap.memoryPercent = lib.mkDefault 100;
  nix.settings.max-jobs = lib.mkDefault 1;
  documentation.enable = lib.mkDefault false;
}
