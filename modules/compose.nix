# A host's Docker Compose projects: hosts/<name>/compose/<project>/compose.yaml,
# run as they are by Docker Compose v2 (nixpkgs' docker-compose), one systemd
# service `compose-<project>` each. The project folder is copied into the
# store on its own, so a deploy that changes any file of it changes the unit
# and restarts it (`down` with the old files, `up` with the new); an
# unchanged project is left alone. Relative bind mounts point into the store
# (read-only configuration); data belongs in named volumes or under /var/lib.
# `cargo xtask check` finds unpinned images, `build:`, clashing ports, unset
# variables with file:line; `cargo xtask pin` pins the images.
{
  lib,
  pkgs,
  host,
  ...
}:
let
  dir = ../hosts + "/${host.name}/compose";
  names =
    if builtins.pathExists dir then
      lib.attrNames (lib.filterAttrs (_: type: type == "directory") (builtins.readDir dir))
    else
      [ ];
  validName = name: builtins.match "[a-z0-9][a-z0-9_-]*" name != null;
  source =
    name:
    builtins.path {
      path = dir + "/${name}";
      name = "compose-${name}";
    };
  compose = "${pkgs.docker-compose}/bin/docker-compose";
  service =
    name:
    let
      src = source name;
      args = "--project-name ${name} --project-directory ${src} --file ${src}/compose.yaml";
    in
    {
      description = "Docker Compose project ${name} (hosts/${host.name}/compose/${name})";
      wantedBy = [ "multi-user.target" ];
      after = [
        "docker.service"
        "network-online.target"
      ];
      wants = [ "network-online.target" ];
      requires = [ "docker.service" ];
      restartTriggers = [ src ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        WorkingDirectory = src;
        # Pulls over a Pi's network can be slow; --wait then waits for every
        # service to run, and to be healthy where it declares a healthcheck.
        ExecStart = "${compose} ${args} up --detach --wait --remove-orphans";
        ExecStop = "${compose} ${args} down --remove-orphans";
        TimeoutStartSec = lib.mkDefault "20min";
        TimeoutStopSec = lib.mkDefault "5min";
      };
    };
in
{
  assertions =
    map (name: {
      assertion = validName name;
      message = "hosts/${host.name}/compose/${name}: `${name}` is not a valid Compose project name: rename the folder (lowercase letters, digits, `-` and `_`)";
    }) names
    ++ map (name: {
      assertion = builtins.pathExists (dir + "/${name}/compose.yaml");
      message = "hosts/${host.name}/compose/${name} has no compose.yaml: add it (or rename compose.yml / docker-compose.yml), or remove the folder";
    }) names;

  # Compose projects need Docker (modules/docker.nix); a host without any
  # project or container has none.
  virtualisation.docker.enable = lib.mkIf (names != [ ]) true;

  systemd.services = lib.listToAttrs (
    map (name: lib.nameValuePair "compose-${name}" (service name)) (lib.filter validName names)
  );
}
