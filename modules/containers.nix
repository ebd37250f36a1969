# A host's containers: hosts/<name>/containers.toml, one [[container]] table
# each (name, image, ports, volumes, environment), run by Docker through
# virtualisation.oci-containers. Images are pinned by digest, so every Pi
# runs exactly the image the repository names; `cargo xtask check` reports
# an unpinned image with file:line without needing nixpkgs.
{
  lib,
  config,
  host,
  ...
}:
let
  file = ../hosts + "/${host.name}/containers.toml";
  declared =
    if builtins.pathExists file then
      (builtins.fromTOML (builtins.readFile file)).container or [ ]
    else
      [ ];
  pinned = image: builtins.match ".+@sha256:[0-9a-f]{64}" image != null;
in
{
  assertions =
    map (c: {
      assertion = pinned c.image;
      message = "hosts/${host.name}/containers.toml: the image of container `${c.name}` (${c.image}) is not pinned by digest: write it as <name>[:<tag>]@sha256:<digest> (`cargo xtask check` lists every one)";
    }) declared
    ++ builtins.concatMap (
      c:
      map (n: {
        assertion = config.age.secrets ? ${n};
        message = "hosts/${host.name}/containers.toml: container `${c.name}` uses the secret `${n}`, which ${host.name} does not read: `cargo xtask secret set ${n} --host ${host.name}` (`cargo xtask check` lists every one)";
      }) (c.secrets or [ ])
    ) declared;

  # Containers need Docker (modules/docker.nix); a host without any has none.
  virtualisation.docker.enable = lib.mkIf (declared != [ ]) true;

  virtualisation.oci-containers.containers = builtins.listToAttrs (
    map (c: {
      inherit (c) name;
      value = {
        inherit (c) image;
        ports = c.ports or [ ];
        volumes = c.volumes or [ ];
        environment = c.environment or { };
        # Decrypted by agenix at activation (/run/agenix/<name>), read by
        # Docker when the container starts: never in the Nix store.
        environmentFiles = map (n: config.age.secrets.${n}.path) (c.secrets or [ ]);
      };
    }) declared
  );
}
