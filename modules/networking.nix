# Network: host name from the inventory, firewall on, and the host's
# address. By default every interface asks DHCP (Ethernet, and Wi-Fi where
# modules/wifi.nix joins a network). An inventory entry with
# `address = "a.b.c.d/len"`, `gateway` and `dns` gets that address set here
# instead, on the model's one Ethernet port (Pi 3, Pi 4) or on Wi-Fi (Zero 2
# W); that interface then does no DHCP. The `<name>.local` name comes from
# modules/mdns.nix. SSH's port is opened by modules/ssh.nix.
{ lib, host, ... }:
let
  static = host.static_ipv4;
  # Classic kernel names: each model has at most one Ethernet port (Pi 3:
  # USB smsc95xx/lan78xx, Pi 4: genet) and one Wi-Fi chip (brcmfmac), so
  # eth0 and wlan0 cannot swap. Predictable names would differ by model and
  # by how systemd names device-tree and USB devices (the Pi 4's genet is
  # end0, the Pi 3's USB port a USB path name). Keep in step with
  # Model::static_interface in xtask/src/inventory.rs.
  interface = if host.model == "zero2w" then "wlan0" else "eth0";
in
{
  networking.hostName = host.name;
  networking.useDHCP = lib.mkDefault true;
  networking.firewall.enable = true;
  networking.usePredictableInterfaceNames = lib.mkDefault false;

  networking.interfaces = lib.mkIf (static != null) {
    ${interface}.ipv4.addresses = [
      {
        inherit (static) address;
        prefixLength = static.prefix_length;
      }
    ];
  };
  networking.defaultGateway = lib.mkIf (static != null) {
    address = static.gateway;
    inherit interface;
  };
  networking.nameservers = lib.mkIf (static != null) static.dns;

  assertions = lib.optional (static != null) {
    assertion = static.gateway != null && static.dns != [ ];
    message = "host `${host.name}` has a static address (${static.address}/${toString static.prefix_length}) without `gateway` or `dns` in hosts/fleet.toml: add both (`cargo xtask check` shows where)";
  };
}
