# What is special about rpi-box-03. Everything every Pi shares comes from
# modules/; its name, model, address and Wi-Fi come from hosts/fleet.toml;
# its Docker containers from hosts/rpi-box-03/containers.toml.
{ ... }:
{
  # Add this Pi's own NixOS settings here, for example:
  # services.prometheus.exporters.node.enable = true;
  # services.journald.extraConfig = "MaxRetentionSec=1month"; # adds to the fleet's journal cap
  # services.avahi.enable = false; # no rpi-box-03.local over mDNS
}
