# What every host is made of: one module per concern, plus the hardware
# module of the host's model (from hosts/fleet.toml).
{ host, ... }:
{
  imports = [
    ./common.nix
    ./ssh.nix
    ./networking.nix
    ./docker.nix
    (./hardware + "/${host.model}.nix")
  ];
}
