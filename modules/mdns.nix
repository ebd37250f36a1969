# Every Pi publishes `<name>.local` over mDNS (avahi), so the inventory's
# `address = "<name>.local"` works without a DHCP reservation or a DNS
# entry, and Pis resolve each other's `.local` names. Off for one host with
# `services.avahi.enable = false;` in hosts/<name>/default.nix.
{ lib, ... }:
{
  services.avahi = {
    enable = lib.mkDefault true;
    # Resolve other hosts' `.local` names (IPv4) through NSS.
    nssmdns4 = lib.mkDefault true;
    publish = {
      enable = lib.mkDefault true;
      # The A records of `<name>.local`; the host name is networking.hostName.
      addresses = lib.mkDefault true;
    };
    # UDP 5353; avahi's own default, stated because mDNS needs it.
    openFirewall = lib.mkDefault true;
  };
}
