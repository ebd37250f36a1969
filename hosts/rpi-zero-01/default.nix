# What is special about rpi-zero-01. Everything every Pi shares comes from
# modules/; its name, model, address and Wi-Fi come from hosts/fleet.toml;
# its Docker containers from hosts/rpi-zero-01/containers.toml.
{ ... }:
{
  # Add this Pi's own NixOS settings here, for example:
  # services.prometheus.exporters.node.enable = true;
  # services.journald.extraConfig = "MaxRetentionSec=1month"; # adds to the fleet's journal cap
  # pi-nixos.zero2w.brcmfmacWorkaround = false; # if Wi-Fi associates without it
  # services.avahi.enable = false; # no rpi-zero-01.local over mDNS
}
