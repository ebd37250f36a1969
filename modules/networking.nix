# Network: host name from the inventory, DHCP on every interface (Ethernet,
# and Wi-Fi where modules/wifi.nix joins a network), firewall on. SSH's port
# is opened by modules/ssh.nix.
{ lib, host, ... }:
{
  networking.hostName = host.name;
  networking.useDHCP = lib.mkDefault true;
  networking.firewall.enable = true;
}
