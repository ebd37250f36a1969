# Docker is the application runtime on every Pi. Containers are declared per
# host in hosts/<name>/containers.toml (see modules/containers.nix).
{ lib, host, ... }:
{
  virtualisation.docker = {
    enable = true;
    autoPrune = {
      enable = lib.mkDefault true;
      dates = lib.mkDefault "weekly";
    };
  };

  # nixpkgs defaults to podman since 22.05.
  virtualisation.oci-containers.backend = "docker";

  users.users = lib.mkIf (host.user != "root") {
    ${host.user}.extraGroups = [ "docker" ];
  };
}
