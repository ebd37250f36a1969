# What every host is made of: one module per concern, plus the hardware
# module of the host's model (from hosts/fleet.toml). Every host's system
# includes the SD image (modules/hardware/*.nix import the aarch64 SD card
# module), so the card boots exactly what `cargo xtask deploy` installs.
{ host, ... }:
{
  imports = [
    ./common.nix
    ./ssh.nix
    ./networking.nix
    ./mdns.nix
    ./wifi.nix
    ./docker.nix
    ./containers.nix
    ./monitoring
    ./secrets.nix
    ./compose.nix
    (./hardware + "/${host.model}.nix")
    ./hardware/config-txt.nix
    ./hardware/firmware-sync.nix
  ];
}
