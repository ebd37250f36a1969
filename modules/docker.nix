# Docker is the application runtime, on the hosts that run applications:
# containers (hosts/<name>/containers.toml, modules/containers.nix) or
# Compose projects (hosts/<name>/compose/, modules/compose.nix) turn it on.
# A host with neither has no Docker at all (the Zero 2 W has 512 MB);
# `virtualisation.docker.enable = true;` in hosts/<name>/default.nix gives
# one anyway.
{
  config,
  lib,
  host,
  ...
}:
{
  config = lib.mkMerge [
    {
      # nixpkgs defaults to podman since 22.05.
      virtualisation.oci-containers.backend = "docker";
    }
    (lib.mkIf config.virtualisation.docker.enable {
      virtualisation.docker = {
        autoPrune = {
          enable = lib.mkDefault true;
          dates = lib.mkDefault "weekly";
        };
        # Containers log to journald (the default logDriver); the driver also
        # records each one's Compose project, as COM_DOCKER_COMPOSE_PROJECT, so
        # `cargo xtask logs -c PROJECT` finds a project's containers.
        daemon.settings.log-opts.labels = lib.mkDefault "com.docker.compose.project";
      };

      users.users = lib.mkIf (host.user != "root") {
        ${host.user}.extraGroups = [ "docker" ];
      };
    })
  ];
}
