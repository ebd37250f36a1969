# Raspberry Pi Zero 2 W: RP3A0 (BCM2710A1, as a Pi 3), 512 MB RAM, no
# Ethernet. The firmware starts u-boot-rpi3.bin (config.txt section [pi02]),
# U-Boot boots the mainline kernel with bcm2837-rpi-zero-2-w.dtb. Wi-Fi
# (brcmfmac43430/43436) is the only network, so the host needs `wifi` in the
# inventory (modules/wifi.nix); its password goes on the card at `sd` time.
{
  config,
  lib,
  host,
  ...
}:
{
  imports = [ ./sd-card.nix ];

  options.pi-nixos.zero2w.brcmfmacWorkaround = lib.mkOption {
    type = lib.types.bool;
    default = true;
    description = ''
      Load brcmfmac with `feature_disable=0x2000`: the Zero 2 W's Wi-Fi
      fails to associate with some access points (Mikrotik among them) on
      NixOS 25.05 and later without it (nixpkgs #425395, nixos-hardware
      #1539). Turn it off for one host with
      `pi-nixos.zero2w.brcmfmacWorkaround = false;` in hosts/<name>/default.nix.
    '';
  };

  config = {
    assertions = [
      {
        assertion = host.wifi != null;
        message = "host `${host.name}` is a Zero 2 W, which has no Ethernet: add `wifi = \"<SSID>\"` to its entry in hosts/fleet.toml";
      }
    ];

    boot.extraModprobeConfig = lib.mkIf config.pi-nixos.zero2w.brcmfmacWorkaround ''
      options brcmfmac feature_disable=0x2000
    '';

    # 512 MB: compressed swap as large as the RAM, and never build here
    # (deploys build on the workstation and copy the result).
    zramSwap.memoryPercent = lib.mkDefault 100;
    nix.settings.max-jobs = lib.mkDefault 1;
    documentation.enable = lib.mkDefault false;
  };
}
