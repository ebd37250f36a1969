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
    # Containers log to journald (the default logDriver); the driver also
    # records each one's Compose project, as COM_DOCKER_COMPOSE_PROJECT, so
    # `cargo xtask logs -c PROJECT` finds a project's containers.
    daemon.settings.log-opts.labels = lib.mkDefault "com.docker.compose.project";
  };

  # nixpkgs defaults to podman since 22.05.
  virtualisation.oci-containers.backend = "docker";

  users.users = lib.mkIf (host.user != "root") {
    ${host.user}.extraGroups = [ "docker" ];
  };
}
